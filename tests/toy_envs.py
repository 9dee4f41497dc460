"""Tiny masked envs for the tests: the package's :mod:`maskrl.envs.toy`, wrapped the ways the tests need.

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

from maskrl.envs.toy import InvalidActionError, ToyMaskedEnv, TwoKeyToyEnv
from maskrl.envs.wrappers import ActionMasksToObservation

__all__ = [
    "InvalidActionError",
    "ToyMaskedEnv",
    "TwoKeyToyEnv",
    "make_dict_toy_env",
    "make_two_key_toy_env",
    "random_return",
]


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
