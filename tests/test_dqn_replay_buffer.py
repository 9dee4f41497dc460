"""The masked DQN's replay buffer (:class:`maskrl.agents.replay_buffers.MaskedReplayBuffer`) and the fast path of the
masked Q-policies' ``predict``: exact small examples, the same minibatches and actions as SB3's generic paths, and
saving and loading."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import QRDQN
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.common.vec_env import DummyVecEnv

from maskrl.agents.dqn import MaskedDQN, MaskedQRDQN
from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.agents.replay_buffers import MaskedReplayBuffer, lone_feature_key
from maskrl.envs.toy import make_two_key_toy_env
from maskrl.masks import ACTION_MASK_KEY
from maskrl.policies import MaskedDQNMultiInputPolicy, MaskedDQNPolicy, MaskedQRDQNPolicy

N_ACTIONS = 3
SPACE = spaces.Dict(
    {"observation": spaces.Box(-10.0, 10.0, (2,), np.float32), ACTION_MASK_KEY: spaces.MultiBinary(N_ACTIONS)}
)


def step_obs(step: int, n_envs: int) -> dict[str, np.ndarray]:
    """Observations that name their step and env: features ``[step, env]``, a mask that differs by step and env."""
    features = np.array([[step, env] for env in range(n_envs)], dtype=np.float32)
    masks = np.array([[(step + env + a) % 2 for a in range(N_ACTIONS)] for env in range(n_envs)], dtype=np.int8)
    return {"observation": features, ACTION_MASK_KEY: masks}


def fill(buffer: DictReplayBuffer, steps: int, n_envs: int) -> None:
    """Step ``t`` of env ``e``: obs ``[t, e]``, next obs ``[t + 100, e]``, action ``(t + e) % 3``, reward
    ``t + e / 10``, done where ``t + e`` is a multiple of 3, truncated (a timeout) where it is a multiple of 5."""
    for t in range(steps):
        envs = np.arange(n_envs)
        infos = [{"TimeLimit.truncated": bool((t + e) % 5 == 0)} for e in envs]
        buffer.add(
            step_obs(t, n_envs),
            step_obs(t + 100, n_envs),
            (t + envs) % N_ACTIONS,
            (t + envs / 10).astype(np.float32),
            (t + envs) % 3 == 0,
            infos,
        )


def test_the_buffer_returns_exactly_the_stored_obs_masks_and_next_masks() -> None:
    buffer = MaskedReplayBuffer(10, SPACE, spaces.Discrete(N_ACTIONS), device="cpu", n_envs=1)
    assert buffer.feature_key == "observation" and buffer.masks.dtype == bool
    fill(buffer, 4, 1)
    sample = buffer._get_samples(np.array([2, 0, 3, 2]))
    obs, next_obs = sample.observations, sample.next_observations
    assert obs["observation"].tolist() == [[2, 0], [0, 0], [3, 0], [2, 0]]
    assert next_obs["observation"].tolist() == [[102, 0], [100, 0], [103, 0], [102, 0]]
    # Step t's mask is [t % 2, (t + 1) % 2, t % 2], as bool; the next obs (step t + 100) has the same parity.
    assert obs[ACTION_MASK_KEY].dtype == torch.bool
    assert obs[ACTION_MASK_KEY].int().tolist() == [[0, 1, 0], [0, 1, 0], [1, 0, 1], [0, 1, 0]]
    assert next_obs[ACTION_MASK_KEY].int().tolist() == obs[ACTION_MASK_KEY].int().tolist()
    assert sample.actions.tolist() == [[2], [0], [0], [2]]
    assert sample.rewards.tolist() == [[2.0], [0.0], [3.0], [2.0]]
    # Step 0 is done but a timeout (0 % 5 == 0): it bootstraps; step 3 is done.
    assert sample.dones.tolist() == [[0.0], [0.0], [1.0], [0.0]]
    # The per-key dicts are views of the two arrays: DictReplayBuffer's attributes, written where sample reads.
    assert buffer.observations["observation"][3, 0].tolist() == [3, 0]
    assert buffer.next_observations[ACTION_MASK_KEY][3, 0].tolist() == [True, False, True]
    buffer.next_observations["observation"][3, 0] = [7.0, 7.0]
    assert buffer._get_samples(np.array([3])).next_observations["observation"].tolist() == [[7.0, 7.0]]


@pytest.mark.parametrize("n_envs", [1, 3])
def test_the_minibatches_are_dict_replay_buffers_with_the_same_seed(n_envs: int) -> None:
    # 7 steps in a buffer of 5 per env: it wrapped around, as a full buffer does.
    buffers = [
        cls(5 * n_envs, SPACE, spaces.Discrete(N_ACTIONS), device="cpu", n_envs=n_envs)
        for cls in (MaskedReplayBuffer, DictReplayBuffer)
    ]
    for buffer in buffers:
        fill(buffer, 7, n_envs)
    assert buffers[0].full and buffers[0].pos == 2
    for seed in range(3):
        samples = []
        for buffer in buffers:
            np.random.seed(seed)
            samples.append(buffer.sample(16))
        ours, sb3 = samples
        for key in ("observation", ACTION_MASK_KEY):
            assert torch.equal(ours.observations[key], sb3.observations[key].to(ours.observations[key].dtype))
            assert torch.equal(
                ours.next_observations[key], sb3.next_observations[key].to(ours.next_observations[key].dtype)
            )
        for field in ("actions", "rewards", "dones"):
            assert torch.equal(getattr(ours, field), getattr(sb3, field)), field


def test_other_observation_spaces_are_stored_and_sampled_as_dict_replay_buffer_does() -> None:
    two_keys = spaces.Dict({**SPACE.spaces, "time": spaces.Box(0.0, 1.0, (1,), np.float32)})
    discrete = spaces.Dict({"observation": spaces.Discrete(4), ACTION_MASK_KEY: spaces.MultiBinary(N_ACTIONS)})
    no_mask = spaces.Dict({"observation": SPACE["observation"]})
    assert lone_feature_key(SPACE) == "observation"
    for space in (two_keys, discrete, no_mask, SPACE["observation"]):
        assert lone_feature_key(space) is None
    buffer = MaskedReplayBuffer(8, two_keys, spaces.Discrete(N_ACTIONS), device="cpu")
    assert buffer.feature_key is None and buffer.observations[ACTION_MASK_KEY].dtype == np.int8
    obs = {**step_obs(1, 1), "time": np.array([[0.5]], np.float32)}
    buffer.add(obs, obs, np.array([2]), np.array([1.0]), np.array([False]), [{}])
    sample = buffer.sample(2)
    assert sample.observations["time"].tolist() == [[0.5], [0.5]]
    assert sample.next_observations[ACTION_MASK_KEY].tolist() == [[1, 0, 1]] * 2
    with pytest.raises(AssertionError, match="optimize_memory_usage"):
        MaskedReplayBuffer(8, SPACE, spaces.Discrete(N_ACTIONS), optimize_memory_usage=True)


class HalveRewards:
    """A stand-in for ``VecNormalize`` in ``sample(env=...)``: normalises features and rewards."""

    def normalize_obs(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**obs, "observation": obs["observation"] * 0.0}

    def normalize_reward(self, reward: np.ndarray) -> np.ndarray:
        return reward / 2


def test_a_normalising_env_takes_dict_replay_buffers_path() -> None:
    buffer = MaskedReplayBuffer(4, SPACE, spaces.Discrete(N_ACTIONS), device="cpu")
    fill(buffer, 2, 1)
    sample = buffer._get_samples(np.array([1, 0]), env=HalveRewards())  # type: ignore[arg-type]
    assert sample.observations["observation"].tolist() == [[0.0, 0.0]] * 2
    assert sample.next_observations[ACTION_MASK_KEY].int().tolist() == [[1, 0, 1], [0, 1, 0]]
    assert sample.rewards.tolist() == [[0.5], [0.0]]


def test_masked_dqn_and_qrdqn_use_the_buffer_by_default_and_keep_a_given_one() -> None:
    env = make_masked_vec_env("maskrl/ToyMasked-v0", 2, seed=0)
    for algo, policy in ((MaskedDQN, MaskedDQNPolicy), (MaskedQRDQN, MaskedQRDQNPolicy)):
        model = algo(policy, env, buffer_size=100, seed=0, device="cpu")
        assert model.replay_buffer_class is MaskedReplayBuffer
        assert type(model.replay_buffer) is MaskedReplayBuffer and model.replay_buffer.feature_key == "observation"
        given = algo(policy, env, buffer_size=100, replay_buffer_class=DictReplayBuffer, device="cpu")
        assert type(given.replay_buffer) is DictReplayBuffer
    # Unmasked SB3 algorithms are untouched.
    assert type(DQN("MultiInputPolicy", env, buffer_size=100).replay_buffer) is DictReplayBuffer
    assert type(QRDQN("MultiInputPolicy", env, buffer_size=100).replay_buffer) is DictReplayBuffer
    # Several feature keys: the same class, storing and sampling per key.
    model = MaskedDQN(MaskedDQNMultiInputPolicy, DummyVecEnv([make_two_key_toy_env]), buffer_size=100, device="cpu")
    assert type(model.replay_buffer) is MaskedReplayBuffer and model.replay_buffer.feature_key is None


def test_save_and_load_the_buffer_and_the_model(tmp_path: Path) -> None:
    env = make_masked_vec_env("maskrl/ToyMasked-v0", 2, seed=0)
    model = MaskedDQN(MaskedDQNPolicy, env, buffer_size=500, learning_starts=50, seed=0, device="cpu")
    model.learn(200)
    buffer = model.replay_buffer
    assert isinstance(buffer, MaskedReplayBuffer) and buffer.size() == 100
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    # The views are not pickled as arrays of their own: the file holds each transition once.
    stored = buffer.features.nbytes + buffer.masks.nbytes
    assert (tmp_path / "buffer.pkl").stat().st_size < 1.5 * stored + 3 * buffer.actions.nbytes
    model.save(tmp_path / "model.zip")

    loaded = MaskedDQN.load(tmp_path / "model.zip", env=env, device="cpu")
    assert type(loaded.replay_buffer) is MaskedReplayBuffer and loaded.replay_buffer.size() == 0
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    copy = loaded.replay_buffer
    assert isinstance(copy, MaskedReplayBuffer) and copy.size() == 100 and copy.pos == buffer.pos
    np.testing.assert_array_equal(copy.features, buffer.features)
    np.testing.assert_array_equal(copy.masks, buffer.masks)
    np.testing.assert_array_equal(copy.actions, buffer.actions)
    # The per-key dicts are views of the loaded arrays again.
    for side in (copy.observations, copy.next_observations):
        assert np.shares_memory(side["observation"], copy.features)
        assert np.shares_memory(side[ACTION_MASK_KEY], copy.masks)
    np.random.seed(0)
    expected = buffer.sample(8)
    np.random.seed(0)
    got = copy.sample(8)
    assert torch.equal(got.next_observations[ACTION_MASK_KEY], expected.next_observations[ACTION_MASK_KEY])
    assert torch.equal(got.observations["observation"], expected.observations["observation"])
    loaded.learn(100, reset_num_timesteps=False)  # and training goes on from it
    assert copy.size() > 100 and loaded.replay_buffer is copy
    assert pickle.loads(pickle.dumps(copy)).observations.keys() == copy.observations.keys()


def test_the_fast_predict_gives_the_generic_paths_actions_without_touching_the_observation() -> None:
    env = make_masked_vec_env("maskrl/ToyMasked-v0", 1, seed=0)
    policy = MaskedDQN(MaskedDQNPolicy, env, seed=0, device="cpu").policy
    rng = np.random.default_rng(0)
    n = policy.action_space.n
    features = rng.normal(size=(64, *policy.features_space.shape)).astype(np.float32)
    masks = (rng.random((64, n)) < 0.3).astype(np.int8)
    masks[np.arange(64), rng.integers(0, n, 64)] = 1  # every row has a valid action
    obs = {"observation": features, ACTION_MASK_KEY: masks}
    before = {key: value.copy() for key, value in obs.items()}
    fast = policy._predict_batch(obs, masks != 0, deterministic=True)
    assert fast is not None and fast.dtype == np.int64 and fast.shape == (64,)
    # SB3's generic path: obs_to_tensor, then the same network.
    generic = policy._predict(policy.obs_to_tensor(obs)[0], deterministic=True).numpy()
    np.testing.assert_array_equal(fast, generic)
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], generic)
    assert masks[np.arange(64), fast].all()
    for key, value in obs.items():
        np.testing.assert_array_equal(value, before[key])
    assert not policy.training
    # Not a batch, or not the two numpy arrays: the generic path answers.
    single = {key: value[0] for key, value in obs.items()}
    assert policy._predict_batch(single, masks[0] != 0, True) is None
    assert int(policy.predict(single, deterministic=True)[0]) == generic[0]
    as_lists = {key: value.tolist() for key, value in obs.items()}
    assert policy._predict_batch(as_lists, masks != 0, True) is None
    np.testing.assert_array_equal(policy.predict(as_lists, deterministic=True)[0], generic)


def test_storing_a_step_writes_the_terminal_observations_and_leaves_the_new_ones_alone() -> None:
    env = make_masked_vec_env("maskrl/ToyMasked-v0", 2, seed=0)
    n_features = env.observation_space["observation"].shape[0]
    n = env.action_space.n

    def obs(value: float, mask: list[int]) -> dict[str, np.ndarray]:
        return {
            "observation": np.full((2, n_features), value, np.float32),
            ACTION_MASK_KEY: np.array([mask, mask[::-1]], np.int8),
        }

    mask = [1] + [0] * (n - 1)
    terminal = {"observation": np.full(n_features, 9.0, np.float32), ACTION_MASK_KEY: np.zeros(n, np.int8)}
    buffers = []
    for buffer_class in (MaskedReplayBuffer, DictReplayBuffer):
        model = MaskedDQN(MaskedDQNPolicy, env, buffer_size=10, replay_buffer_class=buffer_class, device="cpu")
        model._last_obs = obs(1.0, mask)
        new_obs = obs(2.0, mask)  # env 0's episode ended: its new observation is the next episode's first
        infos = [{"terminal_observation": terminal}, {}]
        model._store_transition(
            model.replay_buffer, np.array([0, 0]), new_obs, np.array([1.0, 0.0]), np.array([True, False]), infos
        )
        assert model._last_obs is new_obs and model._last_original_obs["observation"][0, 0] == 1.0
        np.testing.assert_array_equal(new_obs["observation"], np.full((2, n_features), 2.0))  # untouched
        buffers.append(model.replay_buffer)
    ours, sb3 = buffers
    for side in ("observations", "next_observations"):
        for key in ("observation", ACTION_MASK_KEY):
            expected = getattr(sb3, side)[key][0].astype(getattr(ours, side)[key].dtype)
            np.testing.assert_array_equal(getattr(ours, side)[key][0], expected, f"{side}/{key}")
    assert ours.next_observations["observation"][0].tolist() == [[9.0] * n_features, [2.0] * n_features]
    assert ours.next_observations[ACTION_MASK_KEY][0, 0].sum() == 0
