"""NaiveMaskedPolicy: masked sampling, unmasked log-probs and entropy in the update; ``--algo ppo_naive``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from maskrl.agents.registry import get_algo
from maskrl.evaluate import main as evaluate_main
from maskrl.policies import MaskedActorCriticPolicy
from maskrl.policies.naive_masking import NaiveMaskedMultiInputPolicy, NaiveMaskedPolicy
from maskrl.train import main as train_main

N_ACTIONS = 4
OBS_SPACE = spaces.Dict(
    {
        "observation": spaces.Box(-1.0, 1.0, (3,), np.float32),
        "action_mask": spaces.MultiBinary(N_ACTIONS),
    }
)
# Probabilities 0.1, 0.2, 0.3, 0.4 over all actions; the mask keeps actions 0 and 2 (renormalised: 0.25, 0.75).
PROBS = [0.1, 0.2, 0.3, 0.4]
MASK = [1, 0, 1, 0]


def make_policy(policy_class: type, fixed_logits: bool = True) -> MaskedActorCriticPolicy:
    torch.manual_seed(0)
    policy = policy_class(OBS_SPACE, spaces.Discrete(N_ACTIONS), lambda _: 3e-4, net_arch=[8])
    if fixed_logits:
        # Zero weights: the logits are the bias whatever the observation, so every number below is exact.
        nn.init.zeros_(policy.action_net.weight)
        with torch.no_grad():
            policy.action_net.bias.copy_(torch.log(torch.tensor(PROBS)))
    return policy


def batch(masks: list[list[int]]) -> dict[str, torch.Tensor]:
    return {
        "observation": torch.linspace(-1, 1, 3 * len(masks)).reshape(len(masks), 3),
        "action_mask": torch.tensor(masks, dtype=torch.int8),
    }


def test_sampled_and_predicted_actions_are_always_valid() -> None:
    policy = make_policy(NaiveMaskedPolicy, fixed_logits=False)
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 2, size=(500, N_ACTIONS))
    masks[np.arange(500), rng.integers(0, N_ACTIONS, 500)] = 1  # at least one valid action per row
    obs = batch(masks.tolist())
    with torch.no_grad():
        actions, _, _ = policy(obs)
        modes, _, _ = policy(obs, deterministic=True)
    for chosen in (actions, modes):
        assert masks[np.arange(500), chosen.numpy()].all()
    # Several different valid actions were sampled: the check above is not passed by a constant.
    assert len(set(actions.tolist())) == N_ACTIONS


def test_update_uses_unmasked_log_probs_and_entropy() -> None:
    obs = batch([MASK, MASK, MASK])
    actions = torch.tensor([0, 2, 2])
    with torch.no_grad():
        _, naive_log_prob, naive_entropy = make_policy(NaiveMaskedPolicy).evaluate_actions(obs, actions)
        _, masked_log_prob, masked_entropy = make_policy(MaskedActorCriticPolicy).evaluate_actions(obs, actions)
    # Naive: log_softmax of the unmasked logits, entropy over all four actions.
    expected_entropy = -sum(p * math.log(p) for p in PROBS)
    torch.testing.assert_close(naive_log_prob, torch.log(torch.tensor([0.1, 0.3, 0.3])))
    torch.testing.assert_close(naive_entropy, torch.full((3,), expected_entropy))
    # Masked: renormalised over the two valid actions.
    torch.testing.assert_close(masked_log_prob, torch.log(torch.tensor([0.25, 0.75, 0.75])))
    torch.testing.assert_close(masked_entropy, torch.full((3,), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))))


def test_rollout_log_prob_is_the_unmasked_one_so_the_first_ratio_is_one() -> None:
    policy = make_policy(NaiveMaskedPolicy)
    obs = batch([MASK] * 200)
    with torch.no_grad():
        actions, _, rollout_log_prob = policy(obs)
        _, update_log_prob, _ = policy.evaluate_actions(obs, actions)
    assert set(actions.tolist()) == {0, 2}
    torch.testing.assert_close(rollout_log_prob, update_log_prob)
    torch.testing.assert_close(rollout_log_prob, torch.log(torch.tensor(PROBS))[actions])


def test_naive_update_moves_the_logits_of_invalid_actions_the_masked_one_does_not() -> None:
    obs = batch([MASK])
    grads = {}
    for policy_class in (NaiveMaskedPolicy, MaskedActorCriticPolicy):
        policy = make_policy(policy_class)
        _, log_prob, entropy = policy.evaluate_actions(obs, torch.tensor([2]))
        (log_prob + entropy).sum().backward()
        grads[policy_class] = policy.action_net.bias.grad
    invalid = torch.tensor(MASK) == 0
    assert (grads[NaiveMaskedPolicy][invalid].abs() > 1e-3).all()
    assert (grads[MaskedActorCriticPolicy][invalid] == 0).all()


def test_predict_stays_masked() -> None:
    # Action 3 has the largest logit but is invalid: the deterministic choice must be action 2.
    policy = make_policy(NaiveMaskedPolicy)
    obs = {"observation": np.zeros((2, 3), np.float32), "action_mask": np.array([MASK, [1, 1, 1, 1]], np.int8)}
    actions, _ = policy.predict(obs, deterministic=True)
    assert actions.tolist() == [2, 3]


def test_registry_and_multi_input_variant() -> None:
    spec = get_algo("ppo_naive")
    assert spec.sees_mask
    assert spec.policy_for(False) is NaiveMaskedPolicy and spec.policy_for(True) is NaiveMaskedMultiInputPolicy
    policy = make_policy(NaiveMaskedMultiInputPolicy, fixed_logits=False)
    # The multi-input variant keeps the Dict for its CombinedExtractor and is still naive.
    assert isinstance(policy.features_space, spaces.Dict)
    obs = batch([MASK])
    with torch.no_grad():
        _, log_prob, _ = policy.evaluate_actions(obs, torch.tensor([1]))  # invalid action: finite, unmasked
    assert torch.isfinite(log_prob).all()


def test_ppo_naive_trains_and_evaluates_through_the_cli(tmp_path: Path, capsys) -> None:
    argv = ["--algo", "ppo_naive", "--log-folder", str(tmp_path), "-v", "0", "-n", "512", "--n-envs", "2"]
    argv += ["--env-kwargs", "n_laps=1", "max_steps=100", "n_item_types=8"]
    argv += ["--hyperparams", "n_steps=128", "batch_size=64", "n_epochs=1", "--eval-freq", "256"]
    argv += ["--eval-episodes", "1", "--save-freq", "0"]
    train_main(argv)
    (run_dir,) = (tmp_path / "ppo_naive").iterdir()
    final = json.loads((run_dir / "final_eval.json").read_text())
    assert final["algo"] == "ppo_naive" and final["invalid_action_rate"] == 0.0
    # Safe loading rebuilds the model from config.yml through the registry.
    evaluate_main([str(run_dir), "-n", "1", "--model", "final"])
    assert "invalid-action rate" in capsys.readouterr().out
