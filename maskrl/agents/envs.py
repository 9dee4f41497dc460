"""Build the (vectorised) envs an algorithm trains and is evaluated on."""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
from gymnasium import spaces
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

import maskrl  # noqa: F401 - registers the maskrl/ envs, also inside SubprocVecEnv workers
from maskrl.envs.wrappers import ACTION_MASK_KEY, ActionMasksToObservation, DropMasks

VEC_ENVS: dict[str, type[VecEnv]] = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}


def make_env(
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    sees_mask: bool = True,
    render_mode: str | None = None,
) -> gym.Env:
    """Make one env in the form an algorithm needs.

    The mask goes into the observation (``ActionMasksToObservation``) for envs that only have
    ``action_masks()``; algorithms that must not see it get it dropped (``DropMasks``), while
    ``action_masks()`` stays reachable for MaskablePPO.

    :param env_id: gymnasium id, e.g. ``maskrl/Kart-v0``
    :param env_kwargs: keyword arguments of the env's constructor
    :param sees_mask: keep the mask in the observation
    :param render_mode: passed to ``gym.make``
    :raises ValueError: unknown env id or bad env kwargs, in one line
    """
    try:
        env = gym.make(env_id, render_mode=render_mode, **(env_kwargs or {}))
    except gym.error.Error as error:
        raise ValueError(f"unknown env '{env_id}': {error}") from None
    except TypeError as error:
        # gymnasium appends the whole kwargs dict to the message; the first clause says it all.
        raise ValueError(f"bad env kwargs for {env_id}: {str(error).split(' was raised from')[0]}") from None
    env = Monitor(env)
    has_mask_key = isinstance(env.observation_space, spaces.Dict) and ACTION_MASK_KEY in env.observation_space.spaces
    if not has_mask_key:
        try:
            env.get_wrapper_attr("action_masks")
        except AttributeError:
            raise ValueError(
                f"{env_id} has neither an '{ACTION_MASK_KEY}' observation key nor an action_masks() method"
            ) from None
        env = ActionMasksToObservation(env)
    if not sees_mask:
        env = DropMasks(env)
    return env


def make_vec_env(
    env_id: str,
    n_envs: int = 1,
    seed: int | None = None,
    vec_env: str = "dummy",
    env_kwargs: dict[str, Any] | None = None,
    sees_mask: bool = True,
    render_mode: str | None = None,
) -> VecEnv:
    """Make ``n_envs`` copies of :func:`make_env` in a ``DummyVecEnv`` or ``SubprocVecEnv``.

    One env is built in this process first, so a bad id or kwarg fails here with a clear message
    rather than inside a worker process.

    :param seed: env ``i`` is seeded with ``seed + i`` at its first reset
    :param vec_env: ``"dummy"`` or ``"subproc"``
    """
    if vec_env not in VEC_ENVS:
        raise ValueError(f"unknown vec env '{vec_env}'; known: {', '.join(VEC_ENVS)}")
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    make_env(env_id, env_kwargs, sees_mask).close()
    # functools.partial of a module-level function pickles by reference: workers import maskrl.
    env_fn = functools.partial(make_env, env_id, env_kwargs, sees_mask, render_mode)
    venv = VEC_ENVS[vec_env]([env_fn] * n_envs)
    if seed is not None:
        venv.seed(seed)
        venv.action_space.seed(seed)
    return venv
