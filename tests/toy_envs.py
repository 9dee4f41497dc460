"""Tiny masked envs for the tests.

:class:`ToyMaskedEnv` is a contextual bandit played for a few steps per episode. Each step one
choice per sub-action is "good" (shown one-hot in the ``Box`` observation, reward for picking it)
and one other choice is masked out. It follows sb3-contrib's convention: ``action_masks()`` returns
the flat boolean mask. Taking a masked choice is recorded in :attr:`ToyMaskedEnv.invalid_actions`
(read it through a VecEnv with ``vec_env.get_attr("invalid_actions")``) and, with ``strict=True``,
raises :class:`InvalidActionError`.

A policy that ignores the mask picks a masked choice with probability ``1/n`` per sub-action; an
agent picking uniformly among the valid choices scores ``1/(n-1)`` per step (:func:`random_return`);
the optimum is ``episode_length`` per episode. PPO learns it in a few thousand steps.

:func:`make_dict_toy_env` gives the maskrl-style variant, whose observation is the ``Dict``
``{"observation": ..., "action_mask": int8}`` that maskrl's policies read; :func:`make_two_key_toy_env`
the same with a second feature key (``"time"``), for ``Dict`` features extractors.

Test modules import it as ``from toy_envs import ...`` (pytest's default import mode puts ``tests/`` on
``sys.path``). The factories are module-level functions, so they pickle for ``SubprocVecEnv``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from maskrl.envs.wrappers import ActionMasksToObservation


class InvalidActionError(RuntimeError):
    """A strict :class:`ToyMaskedEnv` was given a masked action."""


class ToyMaskedEnv(gym.Env):
    """Contextual bandit with one masked choice per sub-action and step.

    :param n: choices per sub-action (at least 3, so a masked choice and a wrong valid choice exist)
    :param action_type: ``"discrete"`` (``Discrete(n)``) or ``"multidiscrete"`` (``MultiDiscrete([n] * n_sub)``)
    :param n_sub: number of sub-actions for ``"multidiscrete"``
    :param episode_length: steps per episode (the episode is truncated after them)
    :param strict: raise :class:`InvalidActionError` on a masked action (it is recorded either way)
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        n: int = 4,
        action_type: str = "discrete",
        n_sub: int = 2,
        episode_length: int = 8,
        strict: bool = False,
    ):
        if n < 3:
            raise ValueError("n must be at least 3")
        if action_type == "discrete":
            self.nvec = np.array([n])
            self.action_space = spaces.Discrete(n)
        elif action_type == "multidiscrete":
            self.nvec = np.full(n_sub, n)
            self.action_space = spaces.MultiDiscrete(self.nvec)
        else:
            raise ValueError(f"unknown action_type {action_type!r}")
        self.action_type = action_type
        self.n = n
        self.episode_length = episode_length
        self.strict = strict
        self.observation_space = spaces.Box(0.0, 1.0, shape=(int(self.nvec.sum()),), dtype=np.float32)
        #: number of steps that took a masked choice, over the env's lifetime
        self.invalid_actions = 0
        #: number of steps taken, over the env's lifetime
        self.total_steps = 0
        self._good = np.zeros(len(self.nvec), dtype=np.int64)
        self._masked = np.zeros(len(self.nvec), dtype=np.int64)
        self._t = 0

    def _new_context(self) -> None:
        self._good = self.np_random.integers(self.n, size=len(self.nvec))
        # The masked choice is uniform among the other choices, so it is never the good one.
        self._masked = (self._good + self.np_random.integers(1, self.n, size=len(self.nvec))) % self.n

    def _obs(self) -> np.ndarray:
        obs = np.zeros(int(self.nvec.sum()), dtype=np.float32)
        obs[np.arange(len(self.nvec)) * self.n + self._good] = 1.0
        return obs

    def action_masks(self) -> np.ndarray:
        """Flat boolean mask, ``sum(nvec)`` long (sb3-contrib's convention): ``False`` for masked choices."""
        mask = np.ones(int(self.nvec.sum()), dtype=bool)
        mask[np.arange(len(self.nvec)) * self.n + self._masked] = False
        return mask

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._new_context()
        return self._obs(), {}

    def step(self, action):
        choices = np.asarray(action, dtype=np.int64).reshape(len(self.nvec))
        self.total_steps += 1
        invalid = bool(np.any(choices == self._masked))
        if invalid:
            self.invalid_actions += 1
            if self.strict:
                raise InvalidActionError(f"masked action {choices} taken (masked choices {self._masked})")
        reward = float(np.mean(choices == self._good))
        self._t += 1
        self._new_context()
        truncated = self._t >= self.episode_length
        return self._obs(), reward, False, truncated, {"invalid_action": invalid}


class TwoKeyToyEnv(ToyMaskedEnv):
    """:class:`ToyMaskedEnv` with a ``Dict`` observation of two feature keys.

    ``"observation"`` is the one-hot of the good choices, ``"time"`` the fraction of the episode
    played. Wrapped in ``ActionMasksToObservation`` it has two feature keys plus ``"action_mask"``.
    Takes the arguments of :class:`ToyMaskedEnv`.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.observation_space = spaces.Dict(
            {
                "observation": spaces.Box(0.0, 1.0, shape=(int(self.nvec.sum()),), dtype=np.float32),
                "time": spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32),
            }
        )

    def _obs(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        return {
            "observation": super()._obs(),
            "time": np.array([self._t / self.episode_length], dtype=np.float32),
        }


def random_return(n: int = 4, episode_length: int = 8) -> float:
    """Expected episode return of an agent picking uniformly among the valid choices."""
    return episode_length / (n - 1)


def make_dict_toy_env(**kwargs: Any) -> gym.Env:
    """maskrl-style :class:`ToyMaskedEnv`: ``Dict(observation=Box, action_mask=MultiBinary)`` observations.

    :param kwargs: passed to :class:`ToyMaskedEnv`
    """
    return ActionMasksToObservation(ToyMaskedEnv(**kwargs))


def make_two_key_toy_env(**kwargs: Any) -> gym.Env:
    """:class:`TwoKeyToyEnv` with ``"action_mask"`` added: ``Dict(action_mask, observation, time)`` observations.

    :param kwargs: passed to :class:`TwoKeyToyEnv`
    """
    return ActionMasksToObservation(TwoKeyToyEnv(**kwargs))
