"""Wrappers that move masks between an env's ``action_masks()`` method, its ``info`` and its observation."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from maskrl.masks import ACTION_MASK_KEY, MASK_KEYS, action_mask_size


class ActionMasksToObservation(gym.ObservationWrapper):
    """Put ``env.action_masks()`` into the observation under ``"action_mask"``.

    For any env that follows sb3-contrib's convention (a method ``action_masks()`` returning a
    boolean array), so it works with maskrl's policies and unchanged SB3 algorithms. A ``Box``
    observation becomes ``Dict(observation=..., action_mask=MultiBinary(n))``; a ``Dict``
    observation gets the extra key. The mask is stored as int8 0/1.

    :param env: env whose (unwrapped chain) has an ``action_masks()`` method
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        if not _has_method(env, "action_masks"):
            raise TypeError(f"{env} has no action_masks() method to read masks from")
        self._mask_size = action_mask_size(env.action_space)
        mask_space = spaces.MultiBinary(self._mask_size)
        inner = env.observation_space
        if isinstance(inner, spaces.Dict):
            if ACTION_MASK_KEY in inner.spaces:
                raise ValueError(f"the observation of {env} already has an '{ACTION_MASK_KEY}' key")
            self._is_dict = True
            self.observation_space = spaces.Dict({**inner.spaces, ACTION_MASK_KEY: mask_space})
        else:
            self._is_dict = False
            self.observation_space = spaces.Dict({"observation": inner, ACTION_MASK_KEY: mask_space})

    def observation(self, observation: Any) -> dict[str, Any]:
        mask = _checked_mask(
            self.env.get_wrapper_attr("action_masks")(), self._mask_size, self.env.action_space, "action_masks()"
        )
        if self._is_dict:
            return {**observation, ACTION_MASK_KEY: mask}
        return {"observation": observation, ACTION_MASK_KEY: mask}


class DropMasks(gym.ObservationWrapper):
    """Remove the mask keys from a maskrl observation: what an agent that sees no mask gets.

    ``Dict(observation=..., action_mask=...)`` becomes the plain ``observation`` space; with other
    feature keys left, the result stays a ``Dict``. ``action_masks()`` still works on the env below,
    so the masking study can count invalid actions.

    :param env: env with a ``Dict`` observation space holding mask keys
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        inner = env.observation_space
        if not isinstance(inner, spaces.Dict):
            raise TypeError(f"DropMasks needs a Dict observation space, got {inner}")
        self._keep = [key for key in inner.spaces if key not in MASK_KEYS]
        if self._keep == ["observation"]:
            self.observation_space = inner["observation"]
        else:
            self.observation_space = spaces.Dict({key: inner[key] for key in self._keep})

    def observation(self, observation: dict[str, Any]) -> Any:
        if self._keep == ["observation"]:
            return observation["observation"]
        return {key: observation[key] for key in self._keep}


class InfoActionMaskToObservation(gym.Wrapper):
    """Put the mask an env gives in ``info["action_mask"]`` into the observation, and offer ``action_masks()``.

    For envs that report their mask in ``info`` rather than through a method, like gymnasium's ``Taxi``: the mask
    of the first observation comes from ``reset``'s info, that of every next observation from ``step``'s. The
    observation becomes ``Dict(observation=..., action_mask=MultiBinary(n))`` (a ``Dict`` observation gets the extra
    key), with the mask as int8 0/1, as :class:`ActionMasksToObservation` makes it; ``action_masks()`` returns the
    current mask as booleans, for sb3-contrib's ``MaskablePPO``.

    :param env: env whose ``reset`` and ``step`` put a flat 0/1 or boolean mask in ``info[info_key]``
    :param info_key: the ``info`` key holding the mask
    :raises TypeError: for an action space masks do not apply to
    """

    def __init__(self, env: gym.Env, info_key: str = ACTION_MASK_KEY):
        super().__init__(env)
        self.info_key = info_key
        self._mask_size = action_mask_size(env.action_space)
        mask_space = spaces.MultiBinary(self._mask_size)
        inner = env.observation_space
        self._is_dict = isinstance(inner, spaces.Dict)
        if self._is_dict:
            if ACTION_MASK_KEY in inner.spaces:
                raise ValueError(f"the observation of {env} already has an '{ACTION_MASK_KEY}' key")
            self.observation_space = spaces.Dict({**inner.spaces, ACTION_MASK_KEY: mask_space})
        else:
            self.observation_space = spaces.Dict({"observation": inner, ACTION_MASK_KEY: mask_space})
        self._mask: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(seed=seed, options=options)
        return self._with_mask(observation, info, "reset"), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        return self._with_mask(observation, info, "step"), reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """The current observation's mask as booleans (sb3-contrib's convention)."""
        if self._mask is None:
            raise RuntimeError("action_masks() called before reset()")
        return self._mask.astype(bool)

    def _with_mask(self, observation: Any, info: dict[str, Any], where: str) -> dict[str, Any]:
        if self.info_key not in info:
            raise ValueError(f"{where}() returned an info without '{self.info_key}': no action mask to read")
        self._mask = _checked_mask(
            info[self.info_key], self._mask_size, self.env.action_space, f"info['{self.info_key}']"
        )
        if self._is_dict:
            return {**observation, ACTION_MASK_KEY: self._mask}
        return {"observation": observation, ACTION_MASK_KEY: self._mask}


def _checked_mask(raw: Any, size: int, action_space: spaces.Space, source: str) -> np.ndarray:
    """``raw`` as a flat int8 0/1 mask of ``size`` entries; a one-line ``ValueError`` naming ``source`` otherwise."""
    raw = np.asarray(raw)
    if raw.dtype != np.bool_ and not np.isin(raw, (0, 1)).all():
        verb = "must return" if source.endswith("()") else "must hold"
        raise ValueError(f"{source} {verb} booleans or 0/1, got values {np.unique(raw)[:5].tolist()}")
    mask = raw.astype(np.int8)
    if mask.shape != (size,):
        hint = ""
        if isinstance(action_space, spaces.MultiBinary):
            hint = ": two entries per bit, [bit 0 may be 0, bit 0 may be 1, bit 1 may be 0, ...]"
        verb = "returned" if source.endswith("()") else "has"
        raise ValueError(f"{source} {verb} shape {mask.shape}, expected ({size},) for {action_space}{hint}")
    return mask


def _has_method(env: gym.Env, name: str) -> bool:
    try:
        return callable(env.get_wrapper_attr(name))
    except AttributeError:
        return False
