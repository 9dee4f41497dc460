"""Masked DQN and QR-DQN (:mod:`maskrl.agents.dqn`, :mod:`maskrl.policies.q_policies`).

Exact small examples first (greedy action, TD target, double-DQN target, empty terminal masks, exploration), then
the command line (train, evaluate, safe loading, resume, TensorBoard), then the learning checks.

The learning checks' thresholds come from a measured spread: ``python tests/test_dqn.py --spread`` trains each
check's configuration with several seeds on torch's default kernels and with ``ATEN_CPU_CAPABILITY=default`` (the
scalar kernels another CPU might run), plus the variant with the masking broken, each in a fresh process with one
torch thread, and prints one JSON line per run. The numbers are quoted next to each threshold.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.vec_env import DummyVecEnv

from maskrl.agents.callbacks import MaskStatsCallback
from maskrl.agents.dqn import MaskedDQN, MaskedQRDQN, random_valid_actions
from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.agents.evaluation import evaluate_model
from maskrl.agents.hyperparams import load_hyperparams, resolve_algo_kwargs
from maskrl.agents.registry import build_model, get_algo
from maskrl.agents.safe_load import load_model_safely
from maskrl.envs.toy import make_two_key_toy_env
from maskrl.evaluate import main as evaluate_main
from maskrl.masks import ACTION_MASK_KEY
from maskrl.policies import MaskedDQNMultiInputPolicy, MaskedDQNPolicy, MaskedQRDQNPolicy
from maskrl.policies.q_policies import (
    UnsupportedActionSpaceError,
    masked_greedy_actions,
    masked_greedy_quantiles,
    masked_greedy_values,
)
from maskrl.train import main as train_main

INF = float("inf")


# --------------------------------------------------------------------------------------------- a two-state MDP
class TwoStateEnv(gym.Env):
    """Two states (one-hot observation), three actions; action 1 is invalid in both states.

    Any action in state 0 gives reward 1 and leads to state 1, which ends the episode. The Q-networks of the tests
    get hand-set weights in which the invalid action has the highest value.
    """

    observation_space = spaces.Dict(
        {"observation": spaces.Box(0.0, 1.0, (2,), np.float32), ACTION_MASK_KEY: spaces.MultiBinary(3)}
    )
    action_space = spaces.Discrete(3)
    MASK = np.array([1, 0, 1], dtype=np.int8)

    def __init__(self) -> None:
        self.state = 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {"observation": np.eye(2, dtype=np.float32)[self.state], ACTION_MASK_KEY: self.MASK.copy()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state = 0
        return self._obs(), {}

    def step(self, action):
        self.state = 1
        return self._obs(), 1.0, True, False, {"invalid_action": not self.MASK[int(action)]}


def batch_obs(state: int, mask: list[int]) -> dict[str, np.ndarray]:
    return {"observation": np.eye(2, dtype=np.float32)[[state]], ACTION_MASK_KEY: np.array([mask], dtype=np.int8)}


def set_q(network: torch.nn.Module, q_state0: list[float], q_state1: list[float]) -> None:
    """Make a linear Q-network (``net_arch=[]``) output ``q_state0`` for state 0 and ``q_state1`` for state 1."""
    (linear,) = [m for m in network.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([q_state0, q_state1]).T)
        linear.bias.zero_()


def two_state_dqn(double_q: bool = False, algo: type = MaskedDQN, **kwargs: Any) -> MaskedDQN:
    policy = MaskedQRDQNPolicy if algo is MaskedQRDQN else MaskedDQNPolicy
    model = algo(
        policy,
        DummyVecEnv([TwoStateEnv]),
        learning_rate=0.0,  # the train step below must leave the hand-set weights alone
        gamma=0.9,
        batch_size=1,
        learning_starts=0,
        double_q=double_q,
        policy_kwargs=dict(net_arch=[], **kwargs),
        seed=0,
        device="cpu",
    )
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def add_transition(model: MaskedDQN, next_mask: list[int], done: bool) -> None:
    """Fill the replay buffer with one transition: state 0, action 0, reward 1, to state 1 with ``next_mask``."""
    model.replay_buffer.add(
        batch_obs(0, [1, 0, 1]), batch_obs(1, next_mask), np.array([0]), np.array([1.0]), np.array([done]), [{}]
    )


def one_train_step_loss(model: MaskedDQN) -> float:
    model.train(gradient_steps=1, batch_size=1)
    return float(model.logger.name_to_value["train/loss"])


def huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def test_greedy_action_ignores_the_invalid_action_with_the_highest_q_value() -> None:
    model = two_state_dqn()
    set_q(model.q_net, [1.0, 5.0, 2.0], [3.0, 10.0, 4.0])  # action 1 is the best, and invalid
    for state, expected in ((0, 2), (1, 2)):
        action, _ = model.predict(batch_obs(state, [1, 0, 1]), deterministic=True)
        assert action.tolist() == [expected]
    # Single (not batched) observations too, and a mask that leaves only action 0.
    single = {"observation": np.array([1, 0], dtype=np.float32), ACTION_MASK_KEY: np.array([1, 0, 0], np.int8)}
    assert int(model.predict(single, deterministic=True)[0]) == 0
    # Unmasked, the same network would pick the invalid action: the mask is what changes the choice.
    assert int(model.q_net(model.policy.obs_to_tensor(batch_obs(0, [1, 0, 1]))[0]).argmax()) == 1


def test_td_target_is_the_max_over_valid_next_actions() -> None:
    model = two_state_dqn()
    set_q(model.q_net, [1.0, 5.0, 2.0], [3.0, 10.0, 4.0])
    set_q(model.q_net_target, [1.0, 5.0, 2.0], [6.0, 10.0, 4.0])
    add_transition(model, [1, 0, 1], done=False)
    # target = r + gamma * max(Q_target(s1, 0), Q_target(s1, 2)) = 1 + 0.9 * 6 = 6.4 (not 1 + 0.9 * 10 = 10);
    # Q(s0, 0) = 1, so the Huber loss is |1 - 6.4| - 0.5 = 4.9.
    assert one_train_step_loss(model) == pytest.approx(huber(1 - 6.4)) == pytest.approx(4.9)
    next_obs = model.policy.obs_to_tensor(batch_obs(1, [1, 0, 1]))[0]
    assert model.next_values(next_obs).tolist() == [[6.0]]


def test_double_dqn_target_takes_the_online_networks_valid_argmax_and_the_target_networks_value() -> None:
    model = two_state_dqn(double_q=True)
    set_q(model.q_net, [1.0, 5.0, 2.0], [3.0, 10.0, 4.0])  # online: best valid next action is 2 (4 > 3)
    set_q(model.q_net_target, [1.0, 5.0, 2.0], [6.0, 10.0, 4.0])  # target: values action 2 at 4
    add_transition(model, [1, 0, 1], done=False)
    # target = 1 + 0.9 * Q_target(s1, 2) = 1 + 0.9 * 4 = 4.6; loss = |1 - 4.6| - 0.5 = 3.1.
    assert one_train_step_loss(model) == pytest.approx(3.1)
    assert not MaskedDQN.__init__.__kwdefaults__["double_q"], "off by default, as in SB3"


def test_empty_next_mask_at_a_terminal_gives_a_finite_target() -> None:
    model = two_state_dqn()
    set_q(model.q_net, [1.0, 5.0, 2.0], [3.0, 10.0, 4.0])
    set_q(model.q_net_target, [1.0, 5.0, 2.0], [6.0, 10.0, 4.0])
    add_transition(model, [0, 0, 0], done=True)
    # target = r = 1 (a terminal), Q(s0, 0) = 1: the loss is exactly 0, not NaN (0 * -inf).
    assert one_train_step_loss(model) == 0.0
    next_obs = model.policy.obs_to_tensor(batch_obs(1, [0, 0, 0]))[0]
    assert model.next_values(next_obs).tolist() == [[0.0]]
    # Not a terminal (a truncation with an empty mask): still finite, bootstrapping from 0.
    model.replay_buffer.reset()
    add_transition(model, [0, 0, 0], done=False)
    assert one_train_step_loss(model) == 0.0


def test_masked_greedy_functions_by_hand() -> None:
    q = torch.tensor([[5.0, 1.0, 2.0], [-INF, 3.0, 9.0], [1.0, 2.0, 3.0], [float("nan"), 7.0, 1.0]])
    mask = torch.tensor([[0, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 0]]).bool()
    # Row 1: the only valid value is -inf (an overflow): still the valid action. Row 2: no valid action -> 0.
    # Row 3: a valid NaN wins argmax (as torch's own argmax would), and it is at a valid index.
    assert masked_greedy_actions(q, mask).tolist() == [2, 0, 0, 0]
    # Targets: row 1's only valid value is -inf and row 2 has no valid action: both bootstrap from 0, never -inf.
    assert masked_greedy_values(q[:3], mask[:3]).tolist() == [2.0, 0.0, 0.0]
    online = torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert masked_greedy_values(q[:3], mask[:3], online).tolist()[0] == 1.0  # online picks 1, target says 1
    # QR-DQN: action 0 has the highest quantile (9) but the lowest mean (3); action 1 the best mean (4), invalid.
    quantiles = torch.tensor([[[-3.0, 5.0, 0.0], [9.0, 3.0, 3.5]]])  # (batch 1, 2 quantiles, 3 actions)
    chosen = masked_greedy_quantiles(quantiles, torch.tensor([[1, 0, 1]]).bool())
    assert chosen.tolist() == [[-3.0, 9.0]]  # mean 3 > mean 1.75 of action 2
    assert masked_greedy_quantiles(quantiles, torch.tensor([[0, 0, 0]]).bool()).tolist() == [[0.0, 0.0]]
    online_quantiles = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
    assert masked_greedy_quantiles(quantiles, torch.tensor([[1, 0, 1]]).bool(), online_quantiles).tolist() == [
        [0.0, 3.5]
    ]


def test_qrdqn_greedy_and_target_use_the_mean_of_the_quantiles_over_valid_actions() -> None:
    model = two_state_dqn(algo=MaskedQRDQN, n_quantiles=2)
    net, target = model.quantile_net, model.quantile_net_target
    (linear,) = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    # Output layout (quantile, action): row q * 3 + a. State 1's quantiles per action: a0 (-3, 9) mean 3,
    # a1 (5, 3) mean 4 (invalid), a2 (0, 3.5) mean 1.75; state 0 likewise but a2 best among the valid.
    s0 = torch.tensor([[0.0, 9.0, 2.0], [0.0, 9.0, 2.0]]).reshape(-1)
    s1 = torch.tensor([[-3.0, 5.0, 0.0], [9.0, 3.0, 3.5]]).reshape(-1)
    with torch.no_grad():
        linear.weight.copy_(torch.stack([s0, s1], dim=1))
        linear.bias.zero_()
    target.load_state_dict(net.state_dict())
    assert model.predict(batch_obs(0, [1, 0, 1]), deterministic=True)[0].tolist() == [2]
    assert model.predict(batch_obs(1, [1, 0, 1]), deterministic=True)[0].tolist() == [0]
    next_obs = model.policy.obs_to_tensor(batch_obs(1, [1, 0, 1]))[0]
    assert model.next_quantiles(next_obs).tolist() == [[-3.0, 9.0]]
    add_transition(model, [0, 0, 0], done=True)
    model.train(gradient_steps=1, batch_size=1)
    assert np.isfinite(model.logger.name_to_value["train/loss"])


# --------------------------------------------------------------------------------------------- exploration
def random_masks(rng: np.random.Generator, n_rows: int, n: int) -> np.ndarray:
    masks = (rng.random((n_rows, n)) < 0.3).astype(np.int8)
    masks[np.arange(n_rows), rng.integers(n, size=n_rows)] = 1  # at least one valid action per row
    return masks


def test_random_valid_actions_are_valid_and_uniform_over_thousands_of_draws() -> None:
    rng = np.random.default_rng(0)
    masks = random_masks(rng, 5000, 7)
    actions = random_valid_actions(masks, rng)
    assert masks[np.arange(5000), actions].all()
    # Uniform over the valid actions: with 3 valid of 5, each gets 1/3 (20,000 draws: std of a share ~0.0033).
    mask = np.array([[1, 0, 1, 0, 1]] * 20_000, dtype=np.int8)
    shares = np.bincount(random_valid_actions(mask, rng), minlength=5) / 20_000
    np.testing.assert_allclose(shares, [1 / 3, 0, 1 / 3, 0, 1 / 3], atol=0.015)
    with pytest.raises(ValueError, match="no valid action in batch row 1"):
        random_valid_actions(np.array([[1, 0], [0, 0]]), rng)


@pytest.mark.parametrize("algo", [MaskedDQN, MaskedQRDQN])
def test_exploration_and_warm_up_never_take_an_invalid_action(algo: type) -> None:
    env = make_masked_vec_env("maskrl/ToyMasked-v0", 2, seed=0, env_kwargs={"n": 6})
    model = algo("MultiInputPolicy", env, learning_starts=10**9, buffer_size=1000, seed=0, device="cpu")
    rng = np.random.default_rng(1)
    obs = {"observation": np.zeros((4000, 6), np.float32), ACTION_MASK_KEY: random_masks(rng, 4000, 6)}
    # Epsilon = 1: every action is the random exploration one.
    model.exploration_rate = 1.0
    actions, _ = model.predict(obs, deterministic=False)
    assert obs[ACTION_MASK_KEY][np.arange(4000), actions].all()
    assert len(np.unique(actions)) == 6, "random, not greedy"
    # The warm-up before learning_starts (SB3 samples action_space.sample() there, ignoring the mask).
    model._last_obs = obs
    actions, buffer_actions = model._sample_action(learning_starts=10**9, n_envs=4000)
    assert obs[ACTION_MASK_KEY][np.arange(4000), actions].all() and actions is buffer_actions
    # And through training: a strict env raises on any masked action, with eps = 1 then decaying.
    strict = make_masked_vec_env("maskrl/ToyMasked-v0", 2, seed=0, env_kwargs={"n": 6, "strict": True})
    algo("MultiInputPolicy", strict, learning_starts=500, exploration_fraction=0.5, buffer_size=2000, seed=0).learn(
        2000
    )
    assert sum(strict.get_attr("invalid_actions")) == 0


def test_predict_refuses_an_observation_without_valid_actions() -> None:
    model = two_state_dqn()
    with pytest.raises(ValueError, match="no valid action in batch row 0"):
        model.predict(batch_obs(0, [0, 0, 0]), deterministic=True)
    model.exploration_rate = 1.0
    with pytest.raises(ValueError, match="no valid action"):
        model.predict(batch_obs(0, [0, 0, 0]), deterministic=False)


# --------------------------------------------------------------------------------------------- spaces, policies
def test_multidiscrete_is_refused_in_one_line() -> None:
    env = make_masked_vec_env("maskrl/ToyMasked-v0", 1, env_kwargs={"action_type": "multidiscrete"})
    for algo in (MaskedDQN, MaskedQRDQN):
        with pytest.raises(UnsupportedActionSpaceError, match="supports only Discrete action spaces") as info:
            algo("MultiInputPolicy", env)
        assert "\n" not in str(info.value)
    with pytest.raises(UnsupportedActionSpaceError):
        MaskedDQNPolicy(env.observation_space, env.action_space, lambda _: 1e-3)


def test_masked_algorithms_refuse_an_unmasked_policy() -> None:
    env = make_masked_vec_env("maskrl/ToyMasked-v0", 1)
    with pytest.raises(ValueError, match="needs a masked policy"):
        MaskedDQN(DQN.policy_aliases["MultiInputPolicy"], env)


def test_features_extractor_never_sees_the_mask_and_two_feature_keys_work() -> None:
    env = make_masked_vec_env("maskrl/ToyMasked-v0", 1)
    model = MaskedDQN(MaskedDQNPolicy, env, learning_starts=0, seed=0)
    # The MLP's input is the 4 features of the observation, not 4 + 4 mask entries.
    assert model.q_net.features_extractor.features_dim == 4
    assert model.q_net_target.features_extractor is not model.q_net.features_extractor
    two_keys = DummyVecEnv([make_two_key_toy_env])
    with pytest.raises(ValueError, match="use MaskedDQNMultiInputPolicy"):
        MaskedDQN(MaskedDQNPolicy, two_keys)
    model = MaskedDQN(MaskedDQNMultiInputPolicy, two_keys, learning_starts=0, train_freq=1, seed=0)
    assert set(model.q_net.features_extractor.extractors) == {"observation", "time"}
    model.learn(64)


# --------------------------------------------------------------------------------------------- command line
TOY_TINY = [
    "--env",
    "maskrl/ToyMasked-v0",
    "-n",
    "1200",
    "--n-envs",
    "2",
    "--eval-freq",
    "600",
    "--eval-episodes",
    "2",
    "--save-freq",
    "400",
    "--hyperparams",
    "learning_starts=200",
    "-v",
    "0",
]


@pytest.fixture(scope="module")
def dqn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    log_folder = tmp_path_factory.mktemp("runs")
    train_main(["--algo", "dqn", "--log-folder", str(log_folder), "--seed", "2", *TOY_TINY])
    (run_dir,) = (log_folder / "dqn").iterdir()
    return run_dir


def test_train_writes_a_dqn_run_and_evaluate_loads_it_safely(dqn_run: Path, capsys, tmp_path: Path) -> None:
    for name in ("config.yml", "best_model.zip", "final_model.zip", "evaluations.npz", "final_eval.json"):
        assert (dqn_run / name).is_file(), name
    config = yaml.safe_load((dqn_run / "config.yml").read_text())
    assert config["algo"] == "dqn" and config["hyperparams"]["learning_starts"] == 200
    assert json.loads((dqn_run / "final_eval.json").read_text())["invalid_action_rate"] == 0.0
    safe = load_model_safely(dqn_run / "final_model.zip")
    unsafe = MaskedDQN.load(dqn_run / "final_model.zip", device="cpu")
    assert type(safe) is MaskedDQN and type(safe.policy) is MaskedDQNPolicy
    for key, value in unsafe.policy.state_dict().items():
        assert torch.equal(safe.policy.state_dict()[key], value), key
    evaluate_main([str(dqn_run), "-n", "2", "--json", str(tmp_path / "eval.json")])
    assert "invalid-action rate" in capsys.readouterr().out
    assert json.loads((tmp_path / "eval.json").read_text())["invalid_action_rate"] == 0.0


class _Capture(KVWriter):
    """A log output that keeps every write (and the ground truth at that moment)."""

    def __init__(self, truth: _InvalidCounter) -> None:
        self.truth = truth
        self.writes: list[tuple[dict[str, Any], tuple[int, int]]] = []

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        self.writes.append((dict(key_values), (len(self.truth.flags), sum(self.truth.flags))))


class _InvalidCounter(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.flags: list[bool] = []

    def _on_step(self) -> bool:
        self.flags += [bool(info["invalid_action"]) for info in self.locals["infos"]]
        return True


def test_the_invalid_action_rate_of_dqn_covers_every_step_between_two_log_writes() -> None:
    # Plain DQN exploring uniformly (eps = 1) over 4 actions, one masked per step: about 1/4 invalid. SB3 writes
    # the logs every 4 episodes, in the middle of a one-step rollout (2 envs: 2 transitions), before that
    # rollout's end is recorded: each written rate must cover exactly the transitions from the previous written
    # window's end to the rollout before the write, not just the last rollout's 2 (0, 0.5 or 1).
    n_envs = 2
    env = make_masked_vec_env("maskrl/ToyMasked-v0", n_envs, seed=0, sees_mask=False)
    model = DQN(
        "MlpPolicy",
        env,
        learning_starts=10**9,
        train_freq=1,  # one-step rollouts
        exploration_initial_eps=1.0,
        exploration_final_eps=1.0,
        buffer_size=1000,
        seed=0,
    )
    counter = _InvalidCounter()
    capture = _Capture(counter)
    model.set_logger(Logger(folder=None, output_formats=[capture]))
    model.learn(600, callback=[MaskStatsCallback(), counter])
    written = [(values["rollout/invalid_action_rate"], truth) for values, truth in capture.writes[1:]]
    assert len(written) > 5
    previous_end = capture.writes[0][1][0] - n_envs
    previous_invalid = sum(counter.flags[:previous_end])
    for rate, (steps, _) in written:
        end = steps - n_envs  # the rollout in which the write happens is not recorded yet
        invalid = sum(counter.flags[:end])
        assert rate == pytest.approx((invalid - previous_invalid) / (end - previous_end))
        previous_end, previous_invalid = end, invalid
    rates = [rate for rate, _ in written]
    assert 0.15 < np.mean(rates) < 0.35 and sum(rate not in (0.0, 0.5, 1.0) for rate in rates) > len(rates) // 2


def test_a_masked_dqn_on_multidiscrete_actions_exits_2_in_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as excinfo:
        train_main(
            [
                "--algo",
                "dqn",
                "--env",
                "maskrl/ToyMasked-v0",
                "--env-kwargs",
                "action_type=multidiscrete",
                "--log-folder",
                str(tmp_path),
            ]
        )
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Discrete action space" in err and "hyperparameters" not in err
    assert not list(tmp_path.iterdir())


def test_resume_refills_the_replay_buffer_before_training_again(dqn_run: Path, tmp_path: Path) -> None:
    # The API first: a model loaded from a checkpoint has an empty buffer and trains only once it holds
    # learning_starts (200) transitions again. 2 envs, one gradient step per env step: after 150 more steps
    # (75 calls, buffer 150 < 200) nothing has trained; after 300 (buffer 200, 202, ..., 300) 51 steps have.
    env = make_masked_vec_env("maskrl/ToyMasked-v0", 2, seed=0)
    checkpoint = sorted((dqn_run / "checkpoints").glob("model_*_steps.zip"))[-1]
    model = MaskedDQN.load(checkpoint, env=env, device="cpu")
    updates = model._n_updates
    model.learn(150, reset_num_timesteps=False)
    assert model._n_updates == updates and model.replay_buffer.size() * 2 == 150
    model.learn(150, reset_num_timesteps=False)
    assert model._n_updates == updates + 51
    # The command line: an interrupted run (its final model gone) resumes from its last checkpoint to the end.
    run_dir = tmp_path / "run"
    shutil.copytree(dqn_run, run_dir)
    for name in ("final_model.zip", "final_eval.json"):
        (run_dir / name).unlink()
    for path in (run_dir / "checkpoints").glob("model_1200_steps.*"):
        path.unlink()  # a run that completes also checkpoints its end: drop it, as if interrupted before
    train_main(["--resume", str(run_dir), "-v", "0"])
    assert MaskedDQN.load(run_dir / "final_model.zip").num_timesteps == 1200


def test_every_value_based_algo_builds_from_the_yaml_files() -> None:
    value_based = ("dqn", "qrdqn", "dqn_nomask", "qrdqn_nomask")
    for env_id, algos in (
        ("maskrl/Kart-v0", value_based),
        ("maskrl/ToyMasked-v0", value_based),
        ("Taxi-v4", ("dqn", "dqn_nomask")),
    ):
        for algo in algos:
            hyperparams = load_hyperparams(env_id, algo)
            assert hyperparams, (env_id, algo)
            spec = get_algo(algo)
            env = make_masked_vec_env(env_id, 1, env_kwargs=hyperparams.get("env_kwargs"), sees_mask=spec.sees_mask)
            model = build_model(algo, env, hyperparams)
            assert model.learning_starts > 0 and model.policy.net_arch == [64, 64], (env_id, algo)
    assert load_hyperparams("maskrl/Kart-v0", "dqn_nomask")["env_kwargs"]["invalid_action_penalty"] < 0


def test_study_steps_to_stay_skips_step_0_and_needs_the_curve_to_hold() -> None:
    from benchmarks import dqn_masking_study as study

    steps = [0, 5, 10, 15, 20]
    # Step 0 above the threshold (the untrained greedy net's constant action) does not count; the dip at 10 resets.
    assert study.steps_to_stay(steps, [4.5, 4.2, 1.0, 4.3, 4.6], 4.0) == 15.0
    assert study.steps_to_stay(steps, [0.0, 4.0, 4.0, 4.0, 4.0], 4.0) == 5.0  # reaching counts, >=
    assert study.steps_to_stay(steps, [0.0, 4.5, 4.5, 4.5, 3.9], 4.0) is None  # must hold to the end
    assert study.steps_to_stay([0], [9.0], 1.0) is None
    with pytest.raises(ValueError, match="differ in length"):
        study.steps_to_stay([0, 1], [0.0], 1.0)


# --------------------------------------------------------------------------------------------- learning checks
KART = "maskrl/Kart-v0"
KART_CHECK = {"n_laps": 1, "n_item_types": 16}
KART_STEPS = 15_000
TAXI = "Taxi-v4"
#: the seed the tests train with (--spread varies it)
SEED = 0


def kart_random_valid_return(n_episodes: int = 10, seed: int = 100) -> float:
    """Mean return of uniformly random valid actions on the check's evaluation episodes."""
    env = make_masked_vec_env(KART, 1, seed, env_kwargs=KART_CHECK)
    rng = np.random.default_rng(seed)
    returns, total = [], 0.0
    obs = env.reset()
    while len(returns) < n_episodes:
        obs, reward, done, _ = env.step(random_valid_actions(obs[ACTION_MASK_KEY], rng))
        total += float(reward[0])
        if done[0]:
            returns.append(total)
            total = 0.0
    env.close()
    return float(np.mean(returns))


def train_kart_dqn(seed: int = SEED, broken: bool = False) -> dict[str, Any]:
    """Masked DQN with Kart-v0.yml's ``dqn`` settings on one lap with 16 item types (21 actions).

    Broken: the same DQN without the mask (invalid actions execute as "coast", no penalty).
    """
    kwargs = resolve_algo_kwargs(load_hyperparams(KART, "dqn"))
    env = make_masked_vec_env(KART, 4, seed=seed, env_kwargs=KART_CHECK, sees_mask=not broken)
    algo, policy = (DQN, "MlpPolicy") if broken else (MaskedDQN, MaskedDQNPolicy)
    model = algo(policy, env, seed=seed, device="cpu", **kwargs)
    model.learn(KART_STEPS)
    return evaluate_model(model, "dqn_nomask" if broken else "dqn", KART, KART_CHECK, n_episodes=10, seed=100)


def train_taxi_dqn(seed: int = SEED, broken: bool = False) -> dict[str, Any]:
    """Masked DQN with Taxi-v4.yml's ``dqn`` settings on gymnasium's Taxi (mask from ``info["action_mask"]``).

    Broken: the same DQN without the mask.
    """
    hyperparams = load_hyperparams(TAXI, "dqn")
    env = make_masked_vec_env(TAXI, hyperparams["n_envs"], seed=seed, sees_mask=not broken)
    algo, policy = (DQN, "MlpPolicy") if broken else (MaskedDQN, MaskedDQNPolicy)
    model = algo(policy, env, seed=seed, device="cpu", **resolve_algo_kwargs(hyperparams))
    model.learn(hyperparams["n_timesteps"])
    return evaluate_model(model, "dqn_nomask" if broken else "dqn", TAXI, {}, n_episodes=20, seed=100)


def test_masked_dqn_learns_kart() -> None:
    results = train_kart_dqn()
    random_return = kart_random_valid_return()
    # Measured (python tests/test_dqn.py --spread --checks kart; 15k steps): random valid driving 0.86. Masked DQN,
    # seeds 0-4: 4.93, 4.47, 4.53, 5.13, 4.93 (AVX512 kernels); seeds 0-1 with
    # ATEN_CPU_CAPABILITY=default: 4.87, 4.73. Broken (plain DQN without the mask), seeds 0-2: 3.49, 4.27, 4.00
    # with 73%, 22%, 28% invalid actions. The threshold, 3.5 x random = 3.0, sits 1.4 below the weakest correct run;
    # the broken runs learn to drive too (this Kart's invalid actions are mere no-ops), and the invalid-action rate
    # is what rejects them.
    assert results["return_mean"] > 3.5 * random_return, (results["return_mean"], random_return)
    assert results["invalid_action_rate"] == 0.0


@pytest.mark.slow
def test_masked_dqn_learns_taxi() -> None:
    results = train_taxi_dqn()
    # Measured (python tests/test_dqn.py --spread --checks taxi; 40k steps), mean return over the
    # 20 evaluation episodes: masked DQN, seeds 0-4: 8.05, -12.65, 8.05, 8.05, 8.05 (AVX512 kernels; seed 1 has two
    # episodes of 20 going round in circles until the 200-step limit); seeds 0-1 with ATEN_CPU_CAPABILITY=default:
    # 8.05, 8.05. Broken (plain DQN without the mask), seeds 0-2: -200, -200, -200 (94-100% invalid actions). The
    # threshold, -50, is 37 below the weakest correct run (up to 5 failed episodes of 20 pass, 6 do not) and 150
    # above the broken ones.
    assert results["return_mean"] > -50.0, results["return_mean"]
    assert results["invalid_action_rate"] == 0.0


# --------------------------------------------------------------------------------------------- measuring the spread
_CHILD = """
import json, sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
import test_dqn
start = time.process_time()
results = getattr(test_dqn, {function!r})(seed={seed}, broken={broken})
print(json.dumps({{"return_mean": results["return_mean"], "invalid_action_rate": results["invalid_action_rate"],
                  "cpu_seconds": time.process_time() - start, "capability": torch.backends.cpu.get_cpu_capability()}}))
"""


def spread(checks: list[str], seeds: list[int], scalar_seeds: list[int], broken_seeds: list[int]) -> None:
    """Train each check in fresh processes, one at a time, and print one JSON line per run."""
    runs = [(seed, "native", False) for seed in seeds]
    runs += [(seed, "scalar", False) for seed in scalar_seeds]
    runs += [(seed, "native", True) for seed in broken_seeds]
    for check in checks:
        for seed, path, broken in runs:
            code = _CHILD.format(
                tests=str(Path(__file__).parent), function=f"train_{check}_dqn", seed=seed, broken=broken
            )
            env = {**os.environ, **({"ATEN_CPU_CAPABILITY": "default"} if path == "scalar" else {})}
            done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps({"check": check, "seed": seed, "path": "broken" if broken else path, **row}), flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="measure the learning checks' spread (see the module docstring)")
    parser.add_argument("--spread", action="store_true", required=True)
    parser.add_argument("--checks", nargs="+", default=["kart", "taxi"], choices=["kart", "taxi"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--scalar-seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--broken-seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    spread(args.checks, args.seeds, args.scalar_seeds, args.broken_seeds)
