"""Frame stacking for envs whose observations carry masks.

SB3's ``VecFrameStack`` stacks every key of a ``Dict`` observation and refuses the masks' ``MultiBinary`` spaces.
A mask is not a feature to remember: the one that applies is the newest frame's. :class:`MaskedVecFrameStack`
stacks the feature keys with SB3's own ``StackedObservations`` and passes the mask keys through unchanged::

    venv = MaskedVecFrameStack(make_vec_env("maskrl/PandaGridImage-v0", 8), n_stack=4)
    model = PPO(MaskedMultiInputPolicy, venv)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.stacked_observations import StackedObservations

from maskrl.masks import MASK_KEYS


class MaskedVecFrameStack(VecEnvWrapper):
    """``VecFrameStack`` that stacks the feature keys of a ``Dict`` observation and keeps the newest masks.

    :param venv: vectorised env with a ``Dict`` observation space holding one or more mask keys
    :param n_stack: number of frames to stack
    :param channels_order: as for SB3's ``VecFrameStack`` (``"first"``/``"last"``, a dict per feature key, or
        ``None`` to detect images)
    :raises TypeError: if the observation space is not a ``Dict`` with a mask key
    """

    def __init__(self, venv: VecEnv, n_stack: int, channels_order: str | Mapping[str, str] | None = None) -> None:
        space = venv.observation_space
        if not isinstance(space, spaces.Dict) or not any(key in space.spaces for key in MASK_KEYS):
            raise TypeError(f"MaskedVecFrameStack needs a Dict observation space with a mask key, got {space}")
        self.feature_keys = [key for key in space.spaces if key not in MASK_KEYS]
        self.mask_keys = [key for key in space.spaces if key in MASK_KEYS]
        features = spaces.Dict({key: space[key] for key in self.feature_keys})
        self.stacked_obs = StackedObservations(venv.num_envs, n_stack, features, channels_order)
        stacked = self.stacked_obs.stacked_observation_space
        super().__init__(
            venv, observation_space=spaces.Dict({**stacked.spaces, **{k: space[k] for k in self.mask_keys}})
        )

    def _split(self, observations: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return {k: observations[k] for k in self.feature_keys}, {k: observations[k] for k in self.mask_keys}

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        observations, rewards, dones, infos = self.venv.step_wait()
        features, masks = self._split(observations)  # type: ignore[arg-type]
        # Terminal observations in infos keep their own (terminal) masks; only their feature keys get stacked.
        stacked, infos = self.stacked_obs.update(features, dones, infos)  # type: ignore[arg-type]
        return {**stacked, **masks}, rewards, dones, infos

    def reset(self) -> dict[str, np.ndarray]:
        features, masks = self._split(self.venv.reset())  # type: ignore[arg-type]
        return {**self.stacked_obs.reset(features), **masks}  # type: ignore[dict-item]
