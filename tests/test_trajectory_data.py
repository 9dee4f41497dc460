"""Tests for reward-free trajectory data (collection, file format, windows), the pretraining command, the
trajectory-window wrapper and the pretrained features extractor."""

from __future__ import annotations

import csv
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv

from maskrl.masks import WINDOW_ACTIONS_KEY, WINDOW_OBSERVATIONS_KEY, WINDOW_VALID_KEY
from maskrl.policies import MaskedMultiInputPolicy
from maskrl.policies.attention_masks import causal_mask
from maskrl.policies.trajectory_extractor import TrajectoryExtractor
from maskrl.policies.trajectory_transformer import TrajectoryConfig, TrajectoryTransformer, save_encoder
from maskrl.representation import collect as collect_cli
from maskrl.representation import pretrain as pretrain_cli
from maskrl.representation.collect import collect
from maskrl.representation.dataset import (
    TrajectoryDataset,
    WindowSampler,
    load_dataset,
    save_dataset,
    window_indices,
)
from maskrl.representation.window import TrajectoryWindow

KART = "maskrl/Kart-v0"


@pytest.fixture(scope="module")
def kart_data() -> TrajectoryDataset:
    # max_steps=60: several short episodes in few steps.
    return collect(KART, 400, env_kwargs={"max_steps": 60}, seed=3)


# --------------------------------------------------------------------------------------------- data


def test_random_collection_respects_the_mask_and_marks_episodes(kart_data: TrajectoryDataset) -> None:
    data = kart_data
    assert data.observations.shape == (400, 57) and data.actions.shape == (400,) and data.actions.dtype == np.int64
    assert data.action_masks.shape == (400, 9)
    assert data.action_masks[np.arange(400), data.actions].all()  # every action was valid where it was taken
    assert np.flatnonzero(data.episode_starts).tolist() == [0, 60, 120, 180, 240, 300, 360]
    assert data.metadata["policy"] == "random" and data.metadata["n_actions"] == 9
    assert "rewards" not in data.metadata
    # Same seed, same data.
    again = collect(KART, 400, env_kwargs={"max_steps": 60}, seed=3)
    assert np.array_equal(again.actions, data.actions) and np.array_equal(again.observations, data.observations)


def test_collection_with_a_model_plays_its_actions() -> None:
    env = DummyVecEnv([lambda: gym.make(KART, max_steps=30)])
    model = PPO(MaskedMultiInputPolicy, env, n_steps=32, batch_size=32, seed=0, device="cpu")
    data = collect(KART, 60, env_kwargs={"max_steps": 30}, model=model, deterministic=True)
    assert data.metadata["policy"] == "PPO"
    expected, _ = model.predict(
        {"observation": data.observations, "action_mask": data.action_masks.astype(np.int8)}, deterministic=True
    )
    assert np.array_equal(expected, data.actions)
    assert data.action_masks[np.arange(60), data.actions].all()


def test_dataset_round_trip(tmp_path, kart_data: TrajectoryDataset) -> None:
    path = tmp_path / "data.npz"
    save_dataset(kart_data, path)
    loaded = load_dataset(path)
    for key in ("observations", "actions", "action_masks", "episode_starts"):
        assert np.array_equal(getattr(loaded, key), getattr(kart_data, key)), key
        assert getattr(loaded, key).dtype == getattr(kart_data, key).dtype
    assert loaded.metadata == {"format": "maskrl-trajectories-v1", **kart_data.metadata}
    with np.load(path, allow_pickle=False) as raw:  # no pickles inside
        assert sorted(raw.files) == ["action_masks", "actions", "episode_starts", "metadata", "observations"]


def test_bad_dataset_files_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="dataset file not found"):
        load_dataset(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match=r"not an \.npz file"):
        load_dataset(tmp_path / "text.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a trajectory dataset"):
        load_dataset(tmp_path / "other.npz")


def test_windows_are_padded_at_episode_starts() -> None:
    starts = np.array([1, 0, 0, 1, 0], dtype=bool)
    index, valid = window_indices(starts, np.array([0, 2, 3, 4]), 3)
    assert valid.tolist() == [[0, 0, 1], [1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert index[valid].tolist() == [0, 0, 1, 2, 3, 3, 4]
    obs = np.arange(5, dtype=np.float32)[:, None] + 1
    data = TrajectoryDataset(obs, np.array([0, 1, 2, 0, 1]), np.ones((5, 3), bool), starts, {"n_actions": 3})
    w_obs, w_actions, w_valid = WindowSampler(data, 3).windows(np.array([4, 2]))
    assert w_obs[..., 0].tolist() == [[0, 4, 5], [1, 2, 3]]
    assert w_actions.tolist() == [[0, 0], [0, 1]]  # a(t) taken at o(t); padding actions are 0
    assert w_valid.tolist() == [[False, True, True], [True, True, True]]


def test_collect_cli_errors_are_one_line(tmp_path, capsys) -> None:
    (tmp_path / "file").write_text("")
    cases = [
        (["--env", "NoSuchEnv-v0", "--out", str(tmp_path / "a.npz")], "unknown env 'NoSuchEnv-v0'"),
        (["--env", "maskrl/PandaGrid-v0", "--out", str(tmp_path / "a.npz")], "need a flat Box under the 'observation'"),
        (["--out", str(tmp_path / "file" / "a.npz")], "is not a folder"),
        (["--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "a.npz")], "no such model file or run folder"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            collect_cli.main(["-n", "5", *argv])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_console_entry_points_import_in_a_fresh_interpreter() -> None:
    # Each command imports its own module first: an import cycle only shows when nothing else was imported before.
    for module in (
        "maskrl.representation.collect",
        "maskrl.representation.pretrain",
        "maskrl.train",
        "maskrl.evaluate",
    ):
        result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (module, result.stderr)


def test_collect_and_pretrain_commands(tmp_path, capsys) -> None:
    data = tmp_path / "new_folder" / "data.npz"  # the command creates the folder
    collect_cli.main(["--env-kwargs", "max_steps=50", "-n", "300", "--out", str(data), "--seed", "1"])
    assert "300 steps, 6 episodes" in capsys.readouterr().out
    out = tmp_path / "pre"
    pretrain_cli.main(
        ["--data", str(data), "--out", str(out), "--steps", "4", "--save-interval", "2", "--val-fraction", "0.2"]
    )
    assert (out / "encoder.pt").is_file() and (out / "encoder.json").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["pretrain_2.pt", "pretrain_4.pt"]
    assert not list(out.rglob(".*tmp*"))  # atomic writes leave no temp file
    state = torch.load(out / "encoder.pt", weights_only=True)
    assert "obs_encoder.0.weight" in state
    with open(out / "tb" / "progress.csv") as file:
        columns = next(csv.reader(file))
    for name in (
        "pretrain/loss_forward",
        "pretrain/loss_inverse",
        "pretrain/loss_masked",
        "pretrain/inverse_accuracy",
        "pretrain_val/masked_accuracy",
        "pretrain/mask_ratio",
    ):
        assert name in columns, name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    for argv, message in [
        (["--data", str(tmp_path / "none.npz")], "dataset file not found"),
        (["--data", str(data), "--objectives", "reward"], "invalid choice"),
        (["--data", str(data), "--d-model", "30", "--n-heads", "4"], "multiple of n_heads"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            pretrain_cli.main([*argv, "--out", str(tmp_path / "x"), "--steps", "1"])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- wrapper


def test_window_wrapper_contract() -> None:
    env = TrajectoryWindow(gym.make(KART), window=3)
    assert set(env.observation_space.spaces) == {
        "action_mask",
        WINDOW_OBSERVATIONS_KEY,
        WINDOW_ACTIONS_KEY,
        WINDOW_VALID_KEY,
    }
    obs, _ = env.reset(seed=0)
    inner = env.unwrapped._get_obs()
    assert np.array_equal(obs["action_mask"], inner["action_mask"])
    assert obs[WINDOW_VALID_KEY].tolist() == [0, 0, 1]
    assert np.array_equal(obs[WINDOW_OBSERVATIONS_KEY][2], inner["observation"])
    assert not obs[WINDOW_OBSERVATIONS_KEY][:2].any() and not obs[WINDOW_ACTIONS_KEY].any()
    history = [inner["observation"]]
    for action in (1, 3, 0):
        obs, *_ = env.step(action)
        history.append(env.unwrapped._get_obs()["observation"])
        assert obs in env.observation_space
    # After 3 steps: slots hold o1, o2, o3 and the actions taken just before each (1 -> o1, 3 -> o2, 0 -> o3).
    assert obs[WINDOW_VALID_KEY].tolist() == [1, 1, 1]
    assert np.array_equal(obs[WINDOW_OBSERVATIONS_KEY], np.stack(history[1:]))
    assert obs[WINDOW_ACTIONS_KEY].tolist() == [1, 3, 0]
    obs, _ = env.reset(seed=1)
    assert obs[WINDOW_VALID_KEY].tolist() == [0, 0, 1] and not obs[WINDOW_ACTIONS_KEY].any()
    with pytest.raises(ValueError, match="flat Box 'observation'"):
        TrajectoryWindow(gym.make("maskrl/PandaGrid-v0"))
    with pytest.raises(ValueError, match="window must be >= 1"):
        TrajectoryWindow(gym.make(KART), window=0)


def test_window_wrapper_passes_the_env_checkers() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checkers' advice about 2-D observations and wrapped envs
        gym_check_env(TrajectoryWindow(gym.make(KART, max_steps=20), window=4), skip_render_check=True)
        sb3_check_env(TrajectoryWindow(gym.make(KART, max_steps=20), window=4))


# --------------------------------------------------------------------------------------------- extractor


def _ppo(pretrained=None, frozen=False) -> tuple[PPO, DummyVecEnv]:
    env = DummyVecEnv([lambda: TrajectoryWindow(gym.make(KART, max_steps=30), 4)] * 2)
    kwargs = dict(
        features_extractor_class=TrajectoryExtractor,
        features_extractor_kwargs=dict(pretrained=pretrained, frozen=frozen, d_model=16),
    )
    model = PPO(
        MaskedMultiInputPolicy, env, n_steps=16, batch_size=32, n_epochs=1, policy_kwargs=kwargs, seed=0, device="cpu"
    )
    return model, env


def _ppo_loss_backward(model: PPO, env: DummyVecEnv) -> None:
    obs = env.reset()
    for _ in range(3):
        obs, *_ = env.step(model.predict(obs)[0])
    tensors, _ = model.policy.obs_to_tensor(obs)
    values, log_prob, entropy = model.policy.evaluate_actions(tensors, torch.tensor([0, 1]))
    (values.sum() + log_prob.sum() + entropy.sum()).backward()


def test_frozen_extractor_gets_no_gradient(tmp_path) -> None:
    torch.manual_seed(0)
    save_encoder(TrajectoryTransformer(TrajectoryConfig(57, 9, max_window=4, d_model=16)), tmp_path)
    model, env = _ppo(str(tmp_path), frozen=True)
    encoder = model.policy.features_extractor.encoder
    assert not any(p.requires_grad for p in encoder.parameters())
    _ppo_loss_backward(model, env)
    assert all(p.grad is None for p in encoder.parameters())
    assert model.policy.action_net.weight.grad is not None  # the rest still learns
    model, env = _ppo(None, frozen=False)
    _ppo_loss_backward(model, env)
    grads = [p.grad for p in model.policy.features_extractor.encoder.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_pretrained_weights_load_into_the_extractor_exactly(tmp_path) -> None:
    torch.manual_seed(1)
    encoder = TrajectoryTransformer(TrajectoryConfig(57, 9, max_window=4, d_model=16))
    save_encoder(encoder, tmp_path)
    model, env = _ppo(str(tmp_path), frozen=False)
    extractor = model.policy.features_extractor
    for name, value in encoder.state_dict().items():
        assert torch.equal(extractor.encoder.state_dict()[name], value), name
    # The features are the encoder's output at the last token of the window o1 a1 ... o4.
    obs = env.reset()
    for action in ([1, 1], [3, 0], [1, 2]):
        obs, *_ = env.step(np.array(action))
    tensors, _ = model.policy.obs_to_tensor(obs)
    features = model.policy.extract_features(tensors)
    window_actions = tensors[WINDOW_ACTIONS_KEY].long()[:, 1:]
    expected = encoder(tensors[WINDOW_OBSERVATIONS_KEY], window_actions, causal_mask(7))[:, -1]
    assert torch.allclose(features, expected, atol=1e-6)
    with pytest.raises(ValueError, match="windows up to 2"):
        save_encoder(TrajectoryTransformer(TrajectoryConfig(57, 9, max_window=2, d_model=16)), tmp_path / "small")
        _ppo(str(tmp_path / "small"))


class _ContinuousEnv(gym.Env):
    """Dict observation with a flat Box and a 2-D continuous action that moves it: o(t+1) = o(t) + a(t)."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Dict({"observation": gym.spaces.Box(-10, 10, (2,), np.float32)})
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._x = np.zeros(2, np.float32)
        return {"observation": self._x.copy()}, {}

    def step(self, action):
        self._x = self._x + np.asarray(action, np.float32)
        return {"observation": self._x.copy()}, 0.0, False, False, {}


def test_window_wrapper_and_extractor_with_continuous_actions() -> None:
    env = TrajectoryWindow(_ContinuousEnv(), window=3)
    assert env.observation_space[WINDOW_ACTIONS_KEY].shape == (3, 2)
    env.reset(seed=0)
    for action in ([0.5, -0.5], [1.0, 0.0]):
        obs, *_ = env.step(np.array(action, np.float32))
    assert obs[WINDOW_ACTIONS_KEY].tolist() == [[0.0, 0.0], [0.5, -0.5], [1.0, 0.0]]
    assert obs[WINDOW_OBSERVATIONS_KEY].tolist() == [[0.0, 0.0], [0.5, -0.5], [1.5, -0.5]]
    assert obs[WINDOW_VALID_KEY].tolist() == [1, 1, 1] and obs in env.observation_space
    extractor = TrajectoryExtractor(env.observation_space, d_model=8)
    assert not extractor.encoder.config.discrete and extractor.encoder.config.action_dim == 2
    batch = {key: torch.as_tensor(value, dtype=torch.float32)[None] for key, value in obs.items()}
    assert extractor(batch).shape == (1, 8)


def test_split_episodes_keeps_at_least_one_validation_episode() -> None:
    starts = np.zeros(10, dtype=bool)
    starts[[0, 2, 4, 6, 8]] = True  # 5 episodes of 2 steps
    data = TrajectoryDataset(
        observations=np.arange(10, dtype=np.float32)[:, None],
        actions=np.zeros(10, dtype=np.int64),
        action_masks=np.ones((10, 2), dtype=bool),
        episode_starts=starts,
        metadata={},
    )
    train, val = data.split_episodes(0.1)  # round(0.5) would be 0 episodes
    assert (train.n_episodes, val.n_episodes) == (4, 1)
    assert val.observations[:, 0].tolist() == [8, 9]
    one_episode = TrajectoryDataset(data.observations[:2], data.actions[:2], data.action_masks[:2], starts[:2], {})
    with pytest.raises(ValueError, match="cannot split 1 episodes"):
        one_episode.split_episodes(0.5)
