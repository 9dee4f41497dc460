"""Behaviour cloning (``maskrl.agents.imitation``): demonstrations, the masked clone, the ``behaviour_cloning`` key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.env_util import make_vec_env

from maskrl.agents import training
from maskrl.agents.env_setup import make_masked_env
from maskrl.agents.hyperparams import check_our_keys, import_object
from maskrl.agents.imitation import behaviour_clone, clone, collect_demonstrations, load_demonstrator
from maskrl.agents.training import RunWarning, TrainingError, make_config, resume, train
from maskrl.envs.toy import ToyMaskedEnv
from maskrl.envs.wrappers import ActionMasksToObservation
from maskrl.policies import MaskedActorCriticPolicy

TOY = "maskrl/ToyMasked-v0"
SETTINGS = {"demonstrator": "test_imitation:good_choice", "steps": 64, "epochs": 2}


def good_choice(env: gym.Env) -> int:
    """The toy's rewarded choice: always valid (the masked one is another)."""
    return int(env.unwrapped._good[0])


def masked_choice(env: gym.Env) -> int:
    return int(env.unwrapped._masked[0])


def count_clones(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[tuple[Any, ...]]:
    """Make ``module.behaviour_clone`` record each call's arguments in the list returned, and still clone."""
    calls: list[tuple[Any, ...]] = []
    clone_once = module.behaviour_clone

    def counting(*args: Any, **kwargs: Any) -> dict[str, float]:
        calls.append(args)
        return clone_once(*args, **kwargs)

    monkeypatch.setattr(module, "behaviour_clone", counting)
    return calls


def toy_ppo(seed: int = 0) -> PPO:
    env = make_vec_env(lambda: ActionMasksToObservation(ToyMaskedEnv()), n_envs=1, seed=seed)
    return PPO(MaskedActorCriticPolicy, env, n_steps=64, batch_size=64, seed=seed, device="cpu")


def test_demonstrations_hold_whole_episodes_and_their_discounted_returns() -> None:
    env = make_masked_env(TOY, {"episode_length": 3})
    demonstrations = collect_demonstrations(env, good_choice, steps=4, gamma=0.5, seed=0)
    # 4 steps ask for a second episode, played to its end: 2 episodes of 3 steps, reward 1 at every step.
    assert len(demonstrations) == 6 and demonstrations.episodes == 2
    # G_t = 1 + 0.5 G_{t+1} from the end: 1, 1.5, 1.75.
    np.testing.assert_allclose(demonstrations.returns, [1.75, 1.5, 1.0, 1.75, 1.5, 1.0])
    assert set(demonstrations.observations) == {"observation", "action_mask"}
    observations = demonstrations.observations["observation"]
    # What was seen is what the demonstrator answered: the one-hot good choice.
    np.testing.assert_array_equal(observations.argmax(axis=1), demonstrations.actions)
    masks = demonstrations.observations["action_mask"]
    assert masks.dtype == np.int8 and masks[np.arange(6), demonstrations.actions].all()


def test_a_demonstrator_choosing_a_masked_action_is_an_error() -> None:
    env = make_masked_env(TOY)
    with pytest.raises(ValueError, match="which the action mask forbids"):
        collect_demonstrations(env, masked_choice, steps=10, gamma=0.99, seed=0)


def test_the_clone_learns_the_demonstrator_and_never_the_masked_actions() -> None:
    model = toy_ppo()
    env = make_masked_env(TOY)
    demonstrations = collect_demonstrations(env, good_choice, steps=2048, gamma=0.9, seed=1)
    metrics = clone(model.policy, demonstrations, epochs=10, seed=0)
    # Random init: about 1/3 of the greedy actions match (3 valid choices) and the NLL is about log 3 = 1.10;
    # after 80 minibatches every greedy action matches and the NLL is well under half of that (0.2 measured).
    assert metrics["accuracy"] == 1.0 and metrics["nll"] < 0.5
    # Every step is worth 1, so the critic's target is 1 + 0.9 + ... over what remains of the 8 steps (1 to 5.7). The
    # observation does not say the step, so the best critic predicts the mean target: its error is their variance.
    variance = float(np.var(demonstrations.returns))
    assert variance == pytest.approx(2.4, abs=0.1) and metrics["value_mse"] == pytest.approx(variance, rel=0.1)
    observations = {key: torch.as_tensor(value[:256]) for key, value in demonstrations.observations.items()}
    with torch.no_grad():
        probs = model.policy.get_distribution(observations).distribution.probs
    masks = torch.as_tensor(demonstrations.observations["action_mask"][:256]).bool()
    assert (probs[~masks] == 0).all()


def test_cloning_is_reproducible_from_the_seed() -> None:
    env = make_masked_env(TOY)
    demonstrations = collect_demonstrations(env, good_choice, steps=256, gamma=0.9, seed=1)
    weights = []
    threads = torch.get_num_threads()
    for _ in range(2):
        model = toy_ppo(seed=3)
        clone(model.policy, demonstrations, epochs=1, seed=3)
        weights.append(torch.cat([p.detach().flatten() for p in model.policy.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
    # It clones on one thread and gives torch its threads back.
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"demonstrator": "x:y", "steps": 10}, "exactly the keys demonstrator, steps, epochs"),
        ("x:y", "must be a mapping"),
        ({**SETTINGS, "demonstrator": 3}, "demonstrator must be an import path"),
        ({**SETTINGS, "steps": 0}, "steps must be a positive integer"),
        ({**SETTINGS, "epochs": 1.5}, "epochs must be a positive integer"),
        ({**SETTINGS, "epochs": True}, "epochs must be a positive integer"),
    ],
)
def test_bad_settings_are_named_in_one_line(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        check_our_keys({"behaviour_cloning": value})
    assert "\n" not in str(error.value)


def test_only_feed_forward_actor_critics_are_cloned_into() -> None:
    env = make_vec_env(lambda: ToyMaskedEnv(), n_envs=1)
    with pytest.raises(ValueError, match="needs a feed-forward actor-critic policy"):
        load_demonstrator(DQN("MlpPolicy", env, device="cpu"), SETTINGS, import_object)
    with pytest.raises(ValueError, match="cannot import"):
        load_demonstrator(toy_ppo(), {**SETTINGS, "demonstrator": "test_imitation:nobody"}, import_object)
    with pytest.raises(ValueError, match="is not a function"):
        load_demonstrator(toy_ppo(), {**SETTINGS, "demonstrator": "test_imitation:TOY"}, import_object)


def test_behaviour_clone_plays_the_runs_env() -> None:
    model = toy_ppo()
    metrics = behaviour_clone(model, good_choice, TOY, {"episode_length": 4}, SETTINGS, seed=0)
    assert metrics["steps"] == 64 and metrics["episodes"] == 16


def test_a_run_clones_once_logs_it_and_a_resume_does_not_clone_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = count_clones(monkeypatch, training)
    hyperparams = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "behaviour_cloning": SETTINGS}
    config = make_config("ppo", TOY, hyperparams, n_timesteps=64, eval_freq=0, save_freq=32, device="cpu")
    result = train(config, tmp_path)
    assert len(calls) == 1
    printed = capsys.readouterr().out
    assert "behaviour cloning: 64 steps of test_imitation:good_choice (8 episodes), 2 epochs in" in printed
    progress = (result.run.tensorboard / "progress.csv").read_text()
    assert "imitation/accuracy" in progress.splitlines()[0]
    with pytest.warns(RunWarning, match="unpickles the checkpoints"):
        resume(result.run.path, n_timesteps=128, verbose=0)
    assert len(calls) == 1


def test_a_refused_demonstrator_leaves_no_run_folder(tmp_path: Path) -> None:
    hyperparams = {"behaviour_cloning": {**SETTINGS, "demonstrator": "test_imitation:nobody"}}
    config = make_config("ppo", TOY, hyperparams, n_timesteps=64, device="cpu")
    with pytest.raises(TrainingError, match="cannot import 'test_imitation:nobody'"):
        train(config, tmp_path)
    assert not any(tmp_path.iterdir())


def test_each_tuning_trial_starts_from_its_own_clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tuning_worker import parse  # tests/ is on the path of its tests

    from maskrl.agents import tuning

    calls = count_clones(monkeypatch, tuning)
    argv = ["--env", TOY, "-n", "64", "--n-envs", "1", "--log-folder", str(tmp_path), "-optimize", "--n-trials", "2"]
    argv += ["--sampler", "random", "--n-evaluations", "1", "--eval-episodes", "1"]
    cloning = "behaviour_cloning={demonstrator: 'test_imitation:good_choice', steps: 16, epochs: 1}"
    argv += ["--hyperparams", "n_steps=32", "batch_size=32", cloning]
    study_folder = tuning.run_tuning(parse(argv))
    assert len(calls) == 2
    assert "2 trials (2 COMPLETE)" in (study_folder / "report.md").read_text()
