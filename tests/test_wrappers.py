"""ActionMasksToObservation, DropMasks and action_mask_size."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from maskrl.envs import ActionMasksToObservation, DropMasks
from maskrl.envs.toy import ToyMaskedEnv, TwoKeyToyEnv, make_dict_toy_env
from maskrl.masks import action_mask_size

ACTION_TYPES = ["discrete", "multidiscrete"]


class ShortMaskEnv(ToyMaskedEnv):
    """ToyMaskedEnv whose action_masks() is one entry short."""

    def action_masks(self) -> np.ndarray:
        return super().action_masks()[:-1]


class SpaceEnv(gym.Env):
    """Env that samples observations from a given space (for DropMasks' key handling)."""

    def __init__(self, observation_space: spaces.Space):
        self.observation_space = observation_space
        self.action_space = spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}

    def action_masks(self) -> np.ndarray:
        return np.array([True, False, True])


def roll(env: gym.Env, steps: int = 20, seed: int = 0):
    """Yield (observation, unwrapped mask) after reset and after each of ``steps`` valid random steps."""
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    base = env.unwrapped
    yield obs, base.action_masks()
    for _ in range(steps):
        mask = base.action_masks().reshape(len(base.nvec), base.n)
        choices = [rng.choice(np.flatnonzero(row)) for row in mask]
        action = choices[0] if isinstance(env.action_space, spaces.Discrete) else np.array(choices)
        obs, _, terminated, truncated, _ = env.step(action)
        yield obs, base.action_masks()
        if terminated or truncated:
            obs, _ = env.reset()
            yield obs, base.action_masks()


# --------------------------------------------------------------------------------------------------
# ActionMasksToObservation


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_box_observation_becomes_dict_with_mask(action_type):
    inner = ToyMaskedEnv(action_type=action_type, n=4, n_sub=3)
    env = ActionMasksToObservation(inner)
    size = 4 if action_type == "discrete" else 12
    assert env.observation_space == spaces.Dict(
        {"observation": inner.observation_space, "action_mask": spaces.MultiBinary(size)}
    )
    assert env.observation_space["action_mask"].dtype == np.int8
    n_obs = 0
    for obs, mask in roll(env, steps=30):
        assert set(obs) == {"observation", "action_mask"}
        assert obs["action_mask"].dtype == np.int8
        assert obs["action_mask"].shape == (size,)
        np.testing.assert_array_equal(obs["action_mask"], mask.astype(np.int8))
        np.testing.assert_array_equal(obs["observation"], inner._obs())
        assert obs in env.observation_space
        n_obs += 1
    assert n_obs > 30  # resets included


def test_dict_observation_gets_an_extra_key():
    inner = TwoKeyToyEnv(action_type="multidiscrete", n=5, n_sub=2)
    env = ActionMasksToObservation(inner)
    assert set(env.observation_space.spaces) == {"observation", "time", "action_mask"}
    for key in ("observation", "time"):
        assert env.observation_space[key] == inner.observation_space[key]
    assert env.observation_space["action_mask"] == spaces.MultiBinary(10)
    for obs, mask in roll(env, steps=12):
        assert set(obs) == {"observation", "time", "action_mask"}
        assert obs["action_mask"].dtype == np.int8
        np.testing.assert_array_equal(obs["action_mask"], mask.astype(np.int8))
        np.testing.assert_array_equal(obs["time"], inner._obs()["time"])
        assert obs in env.observation_space


def test_dict_observation_that_already_has_a_mask_is_refused():
    inner = SpaceEnv(spaces.Dict({"observation": spaces.Box(0, 1, (2,)), "action_mask": spaces.MultiBinary(3)}))
    with pytest.raises(ValueError, match="action_mask"):
        ActionMasksToObservation(inner)


# Any checker warning fails the test, except gymnasium's note that the env is wrapped.
@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")
@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_wrapped_env_passes_env_checkers(action_type):
    gym_check_env(ActionMasksToObservation(ToyMaskedEnv(action_type=action_type)), skip_render_check=True)
    sb3_check_env(ActionMasksToObservation(ToyMaskedEnv(action_type=action_type)), warn=True)
    gym_check_env(ActionMasksToObservation(TwoKeyToyEnv(action_type=action_type)), skip_render_check=True)
    sb3_check_env(ActionMasksToObservation(TwoKeyToyEnv(action_type=action_type)), warn=True)


def test_mask_found_below_other_wrappers():
    env = ActionMasksToObservation(gym.wrappers.TimeLimit(ToyMaskedEnv(), max_episode_steps=3))
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["action_mask"], env.unwrapped.action_masks())


def test_env_without_action_masks_is_a_type_error():
    with pytest.raises(TypeError, match="action_masks"):
        ActionMasksToObservation(gym.make("CartPole-v1"))


def test_mask_of_wrong_length_is_a_value_error():
    env = ActionMasksToObservation(ShortMaskEnv(n=4))
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        env.reset(seed=0)


def test_box_action_space_is_a_type_error():
    inner = ToyMaskedEnv()
    inner.action_space = spaces.Box(-1, 1, (2,))
    with pytest.raises(TypeError, match="Discrete, MultiDiscrete or 1-D MultiBinary"):
        ActionMasksToObservation(inner)


# --------------------------------------------------------------------------------------------------
# DropMasks


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_drop_masks_gives_the_plain_observation(action_type):
    inner = ToyMaskedEnv(action_type=action_type)
    env = DropMasks(ActionMasksToObservation(inner))
    assert env.observation_space == inner.observation_space
    get_masks = env.get_wrapper_attr("action_masks")
    for obs, mask in roll(env, steps=12):
        assert isinstance(obs, np.ndarray)
        assert obs in env.observation_space
        np.testing.assert_array_equal(obs, inner._obs())
        np.testing.assert_array_equal(get_masks(), mask)
    sb3_check_env(env, warn=True)


def test_drop_masks_keeps_the_other_keys_of_a_dict():
    inner = TwoKeyToyEnv()
    env = DropMasks(ActionMasksToObservation(inner))
    assert env.observation_space == inner.observation_space
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"observation", "time"}
    np.testing.assert_array_equal(env.get_wrapper_attr("action_masks")(), inner.action_masks())


def test_drop_masks_removes_every_mask_key():
    box = spaces.Box(0, 1, (2,))
    observation_space = spaces.Dict(
        {
            "observation": box,
            "extra": box,
            "action_mask": spaces.MultiBinary(3),
            "agent_mask": spaces.MultiBinary(2),
            "visibility": spaces.MultiBinary(4),
        }
    )
    env = DropMasks(SpaceEnv(observation_space))
    assert env.observation_space == spaces.Dict({"observation": box, "extra": box})
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"observation", "extra"}
    obs, *_ = env.step(0)
    assert set(obs) == {"observation", "extra"}
    assert obs in env.observation_space

    only_masks = DropMasks(SpaceEnv(spaces.Dict({"observation": box, "visibility": spaces.MultiBinary(4)})))
    assert only_masks.observation_space == box


def test_drop_masks_needs_a_dict():
    with pytest.raises(TypeError, match="Dict"):
        DropMasks(ToyMaskedEnv())


# --------------------------------------------------------------------------------------------------
# action_mask_size


@pytest.mark.parametrize(
    ("action_space", "size"),
    [
        (spaces.Discrete(1), 1),
        (spaces.Discrete(7), 7),
        (spaces.MultiDiscrete([3]), 3),
        (spaces.MultiDiscrete([3, 4, 2]), 9),
    ],
)
def test_action_mask_size(action_space, size):
    assert action_mask_size(action_space) == size
    assert isinstance(action_mask_size(action_space), int)


@pytest.mark.parametrize(
    "action_space", [spaces.Box(-1, 1, (3,)), spaces.MultiBinary([2, 3])], ids=["box", "2-D multibinary"]
)
def test_action_mask_size_refuses_other_spaces(action_space):
    with pytest.raises(TypeError, match="Discrete, MultiDiscrete or 1-D MultiBinary"):
        action_mask_size(action_space)


def test_masked_frame_stack_stacks_features_and_keeps_the_newest_mask() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    from maskrl.envs.frame_stack import MaskedVecFrameStack
    from maskrl.policies import MaskedActorCriticPolicy

    venv = DummyVecEnv([lambda: make_dict_toy_env(episode_length=3)] * 2)
    with pytest.raises(TypeError):
        VecFrameStack(venv, 2)  # SB3's refuses the int8 MultiBinary mask key: why this wrapper exists
    stacked = MaskedVecFrameStack(venv, n_stack=2)
    assert stacked.observation_space["observation"].shape == (8,)
    assert stacked.observation_space["action_mask"] == venv.observation_space["action_mask"]
    first = stacked.reset()
    assert np.array_equal(first["observation"][:, :4], np.zeros((2, 4)))  # nothing stacked yet
    for _ in range(3):
        previous = first["observation"][:, 4:].copy()
        obs, _, dones, infos = stacked.step(np.array([0, 0]))
        masks = np.array([env.action_masks() for env in venv.get_attr("unwrapped")], dtype=np.int8)
        if not dones.any():
            assert np.array_equal(obs["observation"][:, :4], previous)
            assert np.array_equal(obs["action_mask"], masks)  # the newest frame's mask, not stacked
        first = obs
    assert dones.all() and infos[0]["terminal_observation"]["observation"].shape == (8,)
    assert infos[0]["terminal_observation"]["action_mask"].shape == (4,)
    PPO(MaskedActorCriticPolicy, stacked, n_steps=16, batch_size=16).learn(32)
    with pytest.raises(TypeError, match="mask key"):
        MaskedVecFrameStack(DummyVecEnv([lambda: ToyMaskedEnv()]), 2)
