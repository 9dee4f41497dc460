"""A tiny masked env to test masked policies on, as sb3-contrib ships ``InvalidActionEnv*``.

:class:`ToyMaskedEnv` (``maskrl/ToyMasked-v0``) is a contextual bandit played for a few steps per episode. Each
step every sub-action has a "good" choice, shown one-hot in the ``Box`` observation (reward: the fraction of
sub-actions that picked it), and masked choices. It follows sb3-contrib's convention: ``action_masks()`` returns
the flat boolean mask (``train.py`` and :class:`~maskrl.envs.ActionMasksToObservation` move it into the
observation; :func:`make_dict_toy_env` gives the env so wrapped). Taking a masked choice is reported in
``info["invalid_action"]``, counted in :attr:`ToyMaskedEnv.invalid_actions` (through a VecEnv:
``vec_env.get_attr("invalid_actions")``) and, with ``strict=True``, raises :class:`InvalidActionError`.

==================  ==========================================  ============================================
``action_type``     action space                                masked each step
==================  ==========================================  ============================================
``"discrete"``      ``Discrete(n)``                             one choice other than the good one
``"multidiscrete"`` ``MultiDiscrete([n] * n_sub)``              one non-good choice per sub-action
``"multibinary"``   ``MultiBinary(n_sub)``                      one value of about half the bits, either one
==================  ==========================================  ============================================

With ``Discrete``/``MultiDiscrete`` a policy that ignores the mask picks a masked choice with probability ``1/n``
per sub-action, an agent picking uniformly among the valid choices scores ``1/(n-1)`` per step
(:func:`random_return` per episode), and the optimum is 1 per step. With ``MultiBinary`` the mask has
sb3-contrib's two entries per bit ("may be 0", "may be 1"); a bit with one value masked is forced, and its good
value may be the masked one, so even a trained agent that ignores the mask takes invalid actions. Uniformly
random valid bits score 1/2 per step, the optimum about 3/4.

Testing your own policy
-----------------------
Use it the way sb3-contrib's tests use ``InvalidActionEnvDiscrete``, ``InvalidActionEnvMultiDiscrete`` and
``InvalidActionEnvMultiBinary``: train your masked policy (or a maskrl policy with your own features extractor)
on it with ``strict=True``, so that a single masked action fails loudly, then check that it beats the uniform
valid agent::

    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from maskrl.envs.toy import make_dict_toy_env, random_return
    from maskrl.policies import MaskedActorCriticPolicy

    env = make_vec_env(make_dict_toy_env, n_envs=4, env_kwargs={"action_type": "multidiscrete", "strict": True})
    model = PPO(MaskedActorCriticPolicy, env).learn(20_000)  # InvalidActionError if it ever takes a masked action
    # evaluate: the mean return per episode should be well above random_return(n=4, episode_length=8)

:func:`make_two_key_toy_env` gives a ``Dict`` observation with two feature keys, for ``Dict`` features
extractors. The factories are module-level functions, so they pickle for ``SubprocVecEnv``.

Like maskrl's other envs, stepping before ``reset()`` or after the episode's end raises ``RuntimeError``, and an
action outside the action space raises ``ValueError``. There is no invalid-action penalty and no no-op action: a
masked choice simply earns no reward for its sub-action.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from maskrl.checks import check_int
from maskrl.envs.wrappers import ActionMasksToObservation

__all__ = [
    "ACTION_TYPES",
    "InvalidActionError",
    "ToyMaskedEnv",
    "TwoKeyToyEnv",
    "make_dict_toy_env",
    "make_two_key_toy_env",
    "random_return",
]

ACTION_TYPES = ("discrete", "multidiscrete", "multibinary")


class InvalidActionError(RuntimeError):
    """A strict :class:`ToyMaskedEnv` was given a masked action."""


class ToyMaskedEnv(gym.Env):
    """Contextual bandit with one masked choice per sub-action and step.

    :param n: choices per sub-action (at least 3, so a masked choice and a wrong valid choice exist)
    :param action_type: ``"discrete"``, ``"multidiscrete"`` or ``"multibinary"`` (see the module docstring)
    :param n_sub: number of sub-actions (bits) for ``"multidiscrete"`` and ``"multibinary"`` (>= 1)
    :param episode_length: steps per episode (the episode is truncated after them; >= 1)
    :param strict: raise :class:`InvalidActionError` on a masked action (it is recorded either way)
    :param render_mode: only ``None``: there is nothing to render
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        n: int = 4,
        action_type: str = "discrete",
        n_sub: int = 2,
        episode_length: int = 8,
        strict: bool = False,
        render_mode: str | None = None,
    ):
        if render_mode is not None:
            raise ValueError(f"ToyMaskedEnv has no render modes, got render_mode={render_mode!r}")
        check_int("n", n, 3)
        check_int("n_sub", n_sub, 1)
        check_int("episode_length", episode_length, 1)
        if action_type == "discrete":
            self.nvec = np.array([n])
            self.action_space = spaces.Discrete(n)
        elif action_type == "multidiscrete":
            self.nvec = np.full(n_sub, n)
            self.action_space = spaces.MultiDiscrete(self.nvec)
        elif action_type == "multibinary":
            self.nvec = np.full(n_sub, 2)
            self.action_space = spaces.MultiBinary(n_sub)
        else:
            raise ValueError(f"action_type must be one of {ACTION_TYPES}, got {action_type!r}")
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
        self._needs_reset = True

    def _new_context(self) -> None:
        size = len(self.nvec)
        if self.action_type == "multibinary":
            self._good = self.np_random.integers(2, size=size)
            # About half the bits have one value masked (-1: none), either value, so the good one may be masked.
            self._masked = np.where(self.np_random.random(size) < 0.5, self.np_random.integers(2, size=size), -1)
            return
        self._good = self.np_random.integers(self.n, size=size)
        # The masked choice is uniform among the other choices, so it is never the good one.
        self._masked = (self._good + self.np_random.integers(1, self.n, size=size)) % self.n

    def _obs(self) -> np.ndarray:
        obs = np.zeros(int(self.nvec.sum()), dtype=np.float32)
        obs[np.arange(len(self.nvec)) * self.nvec + self._good] = 1.0
        return obs

    def action_masks(self) -> np.ndarray:
        """Flat boolean mask, ``sum(nvec)`` long (sb3-contrib's convention): ``False`` for masked choices."""
        mask = np.ones(int(self.nvec.sum()), dtype=bool)
        has_masked = self._masked >= 0
        mask[(np.arange(len(self.nvec)) * self.nvec + self._masked)[has_masked]] = False
        return mask

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._needs_reset = False
        self._new_context()
        return self._obs(), {"invalid_action": False}

    def step(self, action):
        if self._needs_reset:
            raise RuntimeError("ToyMaskedEnv.step() called before reset() or after the episode ended; call reset()")
        try:
            choices = np.asarray(action, dtype=np.int64).reshape(len(self.nvec))
        except (TypeError, ValueError):
            raise ValueError(f"action must be in {self.action_space}, got {action!r}") from None
        if ((choices < 0) | (choices >= self.nvec)).any():
            raise ValueError(f"action must be in {self.action_space}, got {action!r}")
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
        self._needs_reset = truncated
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
    """Expected episode return of an agent picking uniformly among the valid choices (``Discrete``/``MultiDiscrete``).

    :param n: choices per sub-action, as given to :class:`ToyMaskedEnv`
    :param episode_length: steps per episode, as given to :class:`ToyMaskedEnv`
    """
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
