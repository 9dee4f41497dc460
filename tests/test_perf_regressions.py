"""Behaviour of the speed-ups in the rollout path (no timing asserts: see benchmarks/ and docs/benchmarks.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution

from maskrl.policies import GridNetPolicy, MaskedActorCriticPolicy
from maskrl.policies.sb3_distributions import MaskedCategoricalDistribution, own_actions_log_prob


def _constant_schedule(_: float) -> float:
    return 3e-4


def test_own_actions_log_prob_matches_log_prob_and_restores_validation() -> None:
    dist = MaskedCategoricalDistribution(4).proba_distribution(
        torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]]), torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]])
    )
    actions = torch.tensor([2, 3])
    assert torch.equal(own_actions_log_prob(dist, actions), dist.log_prob(actions))
    # log(e^2 / (e^0 + e^2)) for row 0; the only valid action of row 1 has probability 1.
    expected = torch.tensor([2.0 - float(np.log(1.0 + np.exp(2.0))), 0.0])
    torch.testing.assert_close(own_actions_log_prob(dist, actions), expected)
    assert dist.distribution._validate_args
    with pytest.raises(ValueError):
        dist.log_prob(torch.tensor([7, 0]))  # validation is still on for other callers


def test_own_actions_log_prob_leaves_unvalidated_and_foreign_distributions_alone() -> None:
    plain = CategoricalDistribution(3).proba_distribution(torch.zeros(2, 3))
    actions = torch.tensor([0, 2])
    torch.testing.assert_close(own_actions_log_prob(plain, actions), torch.full((2,), -float(np.log(3.0))))
    assert plain.distribution._validate_args
    quiet = MaskedCategoricalDistribution(3)
    quiet.distribution = torch.distributions.Categorical(logits=torch.zeros(2, 3), validate_args=False)
    own_actions_log_prob(quiet, actions)
    assert not quiet.distribution._validate_args


def test_masked_policy_forward_log_prob_is_the_masked_log_prob_and_validation_stays_on() -> None:
    torch.manual_seed(0)
    obs_space = spaces.Dict({"observation": spaces.Box(-1, 1, (3,)), "action_mask": spaces.MultiBinary(4)})
    policy = MaskedActorCriticPolicy(obs_space, spaces.Discrete(4), _constant_schedule)
    obs = {
        "observation": torch.randn(5, 3),
        "action_mask": torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1], [1, 0, 0, 1]]).to(
            torch.int8
        ),
    }
    with torch.no_grad():
        actions, _, log_prob = policy(obs)
        assert bool(obs["action_mask"].gather(1, actions.long().unsqueeze(1)).all())
        _, expected, _ = policy.evaluate_actions(obs, actions)
    torch.testing.assert_close(log_prob, expected)
    assert policy.action_dist.distribution._validate_args
    with pytest.raises(ValueError):
        policy.action_dist.log_prob(torch.full((5,), 9))


def test_gridnet_forward_log_prob_equals_evaluate_actions() -> None:
    torch.manual_seed(0)
    obs_space = spaces.Dict(
        {
            "grid": spaces.Box(0, 1, (2, 3, 3), np.float32),
            "agent_mask": spaces.Box(0, 1, (3, 3), np.int8),
            "action_mask": spaces.Box(0, 1, (5, 3, 3), np.int8),
        }
    )
    policy = GridNetPolicy(obs_space, spaces.MultiDiscrete([5] * 9), _constant_schedule, channels=(4, 8))
    agent = torch.zeros(2, 3, 3, dtype=torch.int8)
    agent[0, 1, 1] = agent[1, 0, 2] = agent[1, 2, 0] = 1
    action_mask = torch.zeros(2, 5, 3, 3, dtype=torch.int8)
    action_mask[:, 0] = 1
    action_mask[:, 3] = 1
    obs = {"grid": torch.rand(2, 2, 3, 3), "agent_mask": agent, "action_mask": action_mask}
    with torch.no_grad():
        actions, _, log_prob = policy(obs)
        _, expected, _ = policy.evaluate_actions(obs, actions.float())
    torch.testing.assert_close(log_prob, expected)
    assert set(actions.unique().tolist()) <= {0, 3}
    assert policy.action_dist.distribution._validate_args
