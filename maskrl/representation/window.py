"""A wrapper that shows the agent its last ``K`` (observation, previous action) pairs, for trajectory encoders.

:class:`TrajectoryWindow` replaces the ``"observation"`` key of a maskrl ``Dict`` observation by a window over the
last ``K`` steps, keeping every other key (``"action_mask"`` above all) at the top level, so the masked policies
take the mask out as before:

======================  =====================================  ===================================================
key                     space                                  content (slot ``K - 1`` is the current step ``t``)
======================  =====================================  ===================================================
``window_observations`` ``Box((K, obs_dim))``                  slot ``i``: ``o(t - K + 1 + i)``
``window_actions``      ``Box(0, n - 1, (K,), int64)``         slot ``i``: the action taken just *before*
                        (``Discrete(n)``) or ``Box((K, d))``   ``o(t - K + 1 + i)``, i.e. ``a(t - K + i)``
``window_valid``        ``MultiBinary(K)``                     1 where slot ``i`` holds a real observation of the
                                                               current episode
======================  =====================================  ===================================================

At an episode's start the missing slots are zeros with ``window_valid`` 0 (padding at the front). The previous
action of slot ``i`` is real exactly when slot ``i - 1`` is valid (the first observation of an episode has none).
A trajectory encoder lays the window out as ``o1 a1 o2 ... oK`` by pairing slot ``i``'s observation with slot
``i + 1``'s previous action (see :class:`maskrl.policies.trajectory_extractor.TrajectoryExtractor`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from maskrl.checks import check_int
from maskrl.masks import WINDOW_ACTIONS_KEY, WINDOW_OBSERVATIONS_KEY, WINDOW_VALID_KEY

__all__ = ["TrajectoryWindow"]


class TrajectoryWindow(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Replace ``obs["observation"]`` by the last ``window`` (observation, previous action) pairs (module docstring).

    :param env: env with a ``Dict`` observation holding a flat ``Box`` under ``"observation"`` and a ``Discrete`` or
        flat ``Box`` action space
    :param window: ``K``, the number of steps shown (>= 1)
    :raises ValueError: for an unsuitable env or window
    """

    def __init__(self, env: gym.Env, window: int = 4) -> None:
        # RecordConstructorArgs lets gymnasium rebuild the wrapped env from its spec (its env checker does).
        gym.utils.RecordConstructorArgs.__init__(self, window=window)
        gym.Wrapper.__init__(self, env)
        check_int("window", window, 1)
        inner = env.observation_space
        obs_space = inner.spaces.get("observation") if isinstance(inner, spaces.Dict) else None
        if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
            raise ValueError(f"TrajectoryWindow needs a Dict observation with a flat Box 'observation', got {inner}")
        for key in (WINDOW_OBSERVATIONS_KEY, WINDOW_ACTIONS_KEY, WINDOW_VALID_KEY):
            if key in inner.spaces:
                raise ValueError(f"the observation already has a {key!r} key")
        self.window = window
        action_space = env.action_space
        self._discrete = isinstance(action_space, spaces.Discrete)
        if self._discrete:
            self._action_shape: tuple[int, ...] = ()
            self._action_start = int(action_space.start)
            actions_space = spaces.Box(0, int(action_space.n) - 1, shape=(window,), dtype=np.int64)
        elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
            self._action_shape = action_space.shape
            # Zero padding must lie inside the space.
            low = np.minimum(action_space.low, 0).astype(np.float32)
            high = np.maximum(action_space.high, 0).astype(np.float32)
            actions_space = spaces.Box(np.tile(low, (window, 1)), np.tile(high, (window, 1)), dtype=np.float32)
        else:
            raise ValueError(f"TrajectoryWindow needs a Discrete or flat Box action space, got {action_space}")
        obs_low = np.minimum(obs_space.low, 0).astype(np.float32)
        obs_high = np.maximum(obs_space.high, 0).astype(np.float32)
        others = {key: space for key, space in inner.spaces.items() if key != "observation"}
        self.observation_space = spaces.Dict(
            {
                **others,
                WINDOW_OBSERVATIONS_KEY: spaces.Box(np.tile(obs_low, (window, 1)), np.tile(obs_high, (window, 1))),
                WINDOW_ACTIONS_KEY: actions_space,
                WINDOW_VALID_KEY: spaces.MultiBinary(window),
            }
        )
        self._observations = np.zeros((window, obs_space.shape[0]), dtype=np.float32)
        self._actions = np.zeros((window, *self._action_shape), dtype=actions_space.dtype)
        self._valid = np.zeros(window, dtype=np.int8)

    def _push(self, observation: np.ndarray, previous_action: Any | None) -> None:
        # Shift the window one step back in time and write the newest pair into the last slot.
        self._observations[:-1] = self._observations[1:]
        self._actions[:-1] = self._actions[1:]
        self._valid[:-1] = self._valid[1:]
        self._observations[-1] = observation
        if previous_action is None:
            self._actions[-1] = 0
        elif self._discrete:
            self._actions[-1] = int(previous_action) - self._action_start
        else:
            self._actions[-1] = np.asarray(previous_action, dtype=np.float32)
        self._valid[-1] = 1

    def _observation(self, obs: dict[str, Any]) -> dict[str, Any]:
        result = {key: value for key, value in obs.items() if key != "observation"}
        result[WINDOW_OBSERVATIONS_KEY] = self._observations.copy()
        result[WINDOW_ACTIONS_KEY] = self._actions.copy()
        result[WINDOW_VALID_KEY] = self._valid.copy()
        return result

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._observations[:] = 0
        self._actions[:] = 0
        self._valid[:] = 0
        self._push(obs["observation"], None)
        return self._observation(obs), info

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._push(obs["observation"], action)
        return self._observation(obs), reward, terminated, truncated, info
