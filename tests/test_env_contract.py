"""The env contract, checked on every env registered under ``maskrl/`` (in the style of PettingZoo's ``api_test``).

Every id under ``maskrl/`` in gymnasium's registry, and in PettingZoo's parallel registry, is found at collection
time and checked here with its registered defaults, so a new env gets the whole suite for free. The tables below
only add what the suite cannot guess: kwargs variants for the checkers (``VARIANTS``), kwargs to fuzz
(``FUZZ_KWARGS``), kwargs outside the documented bounds with the error they must raise (``BAD_KWARGS``).

The contract (maskrl/masks.py and each env's docstring):

- gymnasium's and SB3's env checkers pass, with no warning but SB3's advice on image-like or multi-dimensional
  observation keys (``ALLOWED_CHECKER_WARNINGS``);
- a kwarg outside its documented bounds raises a one-line ``ValueError`` naming it, through ``gym.make`` and
  the class alike; an unknown kwarg is a ``TypeError``;
- observations lie in the observation space; every mask key is int8 0/1 with the shape maskrl/masks.py gives
  (``"visibility"`` one per entity row, slot 0 visible; ``"agent_mask"`` one per grid cell; ``"action_mask"``
  flat, or ``(A, H, W)`` over a grid);
- ``action_masks()`` is a flat bool array of ``action_mask_size(action_space)`` entries, allows at least one choice
  per sub-action and equals the observation's action mask;
- ``info`` reports invalid actions (the ``invalid_action`` flag, or the ``invalid_actions`` count of a
  centralised multi-agent view), already at reset: never for an action the mask allows, always for a single
  action it forbids; ``episode_stats`` come at an episode's last step only and count its steps and invalid
  actions;
- episodes end by ``max_steps``: truncated exactly there unless terminated, never both;
- an action outside the action space raises ``ValueError``; ``step()`` before ``reset()`` or after the episode's
  end raises ``RuntimeError`` (saying to call reset);
- an invalid action is a no-op: it is executed as action 0 (``COAST``, ``STAY``; per sub-action), flagged, and
  ``invalid_action_penalty`` (for the envs that take it) is added to the reward once per invalid action;
- the same seed and actions give the same trajectory (unseeded resets included), a seeded reset replays it
  whatever came before, and different seeds differ.

PettingZoo envs also pass PettingZoo's ``api_test``, ``parallel_api_test``, ``seed_test``, ``parallel_seed_test``
and ``state_test``, and the parallel version of the rules above.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pettingzoo
import pytest
from gymnasium import spaces
from gymnasium.envs.registration import load_env_creator
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test
from pettingzoo.test.state_test import state_test
from pettingzoo.utils.conversions import parallel_to_aec
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import maskrl  # noqa: F401 - registers the maskrl/ envs
from maskrl.masks import (
    ACTION_MASK_KEY,
    AGENT_MASK_KEY,
    ENTITIES_KEY,
    GRID_KEY,
    MASK_KEYS,
    VISIBILITY_KEY,
    action_mask_size,
)

GYM_IDS = sorted(env_id for env_id in gym.registry if env_id.startswith("maskrl/"))
PZ_IDS = sorted(env_id for env_id in pettingzoo.parallel_registry if env_id.startswith("maskrl/"))
HERD_PZ_ID = "maskrl/panda_herd-v0"  # PettingZoo normalises maskrl/panda_herd_v0 to this


def test_the_registries_hold_every_maskrl_env() -> None:
    # Guards the discovery above: an empty list would silently skip the whole suite.
    expected = {"maskrl/Kart-v0", "maskrl/Kart-v1", "maskrl/PandaGrid-v0", "maskrl/PandaHerd-v0", "maskrl/ToyMasked-v0"}
    assert expected <= set(GYM_IDS)
    assert HERD_PZ_ID in PZ_IDS


# ---------------------------------------------------------------------------------------------------------------------
# Per-env data: what the suite cannot guess. Envs not listed run with their registered defaults.
# ---------------------------------------------------------------------------------------------------------------------
@st.composite
def panda_grid_kwargs(draw: st.DrawFn) -> dict:
    size = draw(st.integers(5, 10))
    max_trees = draw(st.one_of(st.none(), st.integers(0, size * size // 4)))
    resolved_max = size * size // 6 if max_trees is None else max_trees
    return {
        "size": size,
        "n_watermelons": draw(st.integers(1, 4)),
        "max_trees": max_trees,
        "min_trees": draw(st.one_of(st.none(), st.integers(0, resolved_max))),
        "view_radius": draw(st.one_of(st.none(), st.floats(1.0, 20.0))),
        "dragon_chase_prob": draw(st.floats(0.0, 1.0)),
        "max_steps": draw(st.integers(1, 40)),
        "caught_penalty": draw(st.floats(-5.0, 0.0)),
        "invalid_action_penalty": draw(st.floats(-1.0, 0.0)),
    }


@st.composite
def herd_kwargs(draw: st.DrawFn) -> dict:
    """Valid kwargs of the panda herd (``PandaHerdParallelEnv``), within its documented crowding limit."""
    size = draw(st.integers(5, 9))
    budget = size * size // 2
    n_pandas = draw(st.integers(1, min(16, budget - 2)))
    n_dragons = draw(st.integers(1, min(4, budget - n_pandas - 1)))
    n_watermelons = draw(st.integers(1, min(8, budget - n_pandas - n_dragons)))
    room = min(size * size // 4, budget - n_pandas - n_dragons - n_watermelons)
    return {
        "n_pandas": n_pandas,
        "size": size,
        "n_dragons": n_dragons,
        "n_watermelons": n_watermelons,
        "n_trees": draw(st.integers(0, room)),
        "view_size": draw(st.sampled_from([3, 5, 7, 9, 11, 13, 15])),
        "dragon_chase_prob": draw(st.floats(0.0, 1.0)),
        "max_steps": draw(st.integers(1, 30)),
        "caught_penalty": draw(st.floats(-5.0, 0.0)),
        "invalid_action_penalty": draw(st.floats(-1.0, 0.0)),
    }


#: kwargs to fuzz (hypothesis strategies of valid kwargs)
FUZZ_KWARGS: dict[str, st.SearchStrategy[dict]] = {
    "maskrl/Kart-v1": st.fixed_dictionaries(
        {
            "n_opponents": st.integers(0, 7),
            "n_laps": st.integers(1, 10),
            "n_item_types": st.one_of(st.integers(1, 12), st.sampled_from([64, 4096])),
            "inventory_size": st.integers(1, 8),
            "n_lanes": st.integers(1, 5),
            "max_steps": st.integers(1, 40),
            "invalid_action_penalty": st.floats(-1.0, 0.0),
            "skid_warnings": st.booleans(),
        }
    ),
    "maskrl/PandaGrid-v0": panda_grid_kwargs(),
    "maskrl/PandaGridImage-v0": st.fixed_dictionaries(
        {
            "size": st.integers(5, 8),
            "image_cell_px": st.integers(1, 6),
            "image_view": st.sampled_from(["global", "egocentric"]),
            "view_radius": st.one_of(st.none(), st.floats(1.0, 6.0)),
            "blink_prob": st.sampled_from([0.0, 0.5]),
            "max_steps": st.integers(1, 30),
        }
    ),
    "maskrl/PandaHerd-v0": st.builds(lambda kw, flat: {**kw, "flat_action_mask": flat}, herd_kwargs(), st.booleans()),
    "maskrl/ToyMasked-v0": st.fixed_dictionaries(
        {
            "n": st.integers(3, 8),
            "action_type": st.sampled_from(["discrete", "multidiscrete", "multibinary"]),
            "n_sub": st.integers(1, 4),
            "episode_length": st.integers(1, 12),
        }
    ),
}
PZ_FUZZ_KWARGS: dict[str, st.SearchStrategy[dict]] = {
    HERD_PZ_ID: st.builds(lambda kw, shared: {**kw, "shared_reward": shared}, herd_kwargs(), st.booleans()),
}

#: kwargs the checkers also run on, besides the registered defaults
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "maskrl/Kart-v1": [{"n_item_types": 64}],
    "maskrl/PandaGrid-v0": [
        {"size": 5, "n_watermelons": 1, "view_radius": 2.5},
        {"size": 16},
        {"size": 16, "max_trees": 64, "min_trees": 64, "max_steps": 5},
        {"obs_mode": "image"},
        {"obs_mode": "image", "image_view": "egocentric", "size": 7, "image_cell_px": 2},
    ],
    "maskrl/PandaHerd-v0": [{"max_steps": 20}, {"max_steps": 20, "flat_action_mask": True}],
}
PZ_VARIANTS: dict[str, list[dict[str, Any]]] = {
    HERD_PZ_ID: [{"max_steps": 60}, {"n_pandas": 2, "max_steps": 30}, {"n_pandas": 1, "dragon_chase_prob": 1.0}],
}

# (env id, kwargs, the kwarg the message must name, and optionally the message's exact beginning)
BAD_KWARGS: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("maskrl/Kart-v1", {"n_opponents": -1}, "n_opponents", None),
    ("maskrl/Kart-v1", {"n_opponents": 8}, "n_opponents", "n_opponents must be <= 7, got 8"),
    ("maskrl/Kart-v1", {"n_laps": 0}, "n_laps", "n_laps must be >= 1, got 0"),
    ("maskrl/Kart-v1", {"n_laps": 11}, "n_laps", None),
    ("maskrl/Kart-v1", {"n_laps": True}, "n_laps", None),
    ("maskrl/Kart-v1", {"n_item_types": 0}, "n_item_types", "n_item_types must be >= 1, got 0"),
    ("maskrl/Kart-v1", {"n_item_types": 4097}, "n_item_types", None),
    ("maskrl/Kart-v1", {"n_item_types": 2.5}, "n_item_types", "n_item_types must be an int, got 2.5"),
    ("maskrl/Kart-v1", {"inventory_size": 0}, "inventory_size", "inventory_size must be >= 1, got 0"),
    ("maskrl/Kart-v1", {"inventory_size": 9}, "inventory_size", None),
    ("maskrl/Kart-v1", {"n_lanes": 0}, "n_lanes", None),
    ("maskrl/Kart-v1", {"n_lanes": 6}, "n_lanes", "n_lanes must be <= 5, got 6"),
    ("maskrl/Kart-v1", {"max_steps": 0}, "max_steps", "max_steps must be >= 1, got 0"),
    ("maskrl/Kart-v1", {"max_steps": 2.5}, "max_steps", None),
    (
        "maskrl/Kart-v1",
        {"invalid_action_penalty": float("nan")},
        "invalid_action_penalty",
        "invalid_action_penalty must be a finite number",
    ),
    ("maskrl/Kart-v1", {"invalid_action_penalty": "-1"}, "invalid_action_penalty", None),
    ("maskrl/Kart-v1", {"render_mode": "human"}, "render_mode", "render_mode must be None or one of"),
    ("maskrl/Kart-v1", {"render_mode": "text"}, "render_mode", None),
    ("maskrl/Kart-v1", {"skid_warnings": 1}, "skid_warnings", "skid_warnings must be a bool, got 1"),
    ("maskrl/PandaGrid-v0", {"size": 4}, "size", "size must be >= 5, got 4"),
    ("maskrl/PandaGrid-v0", {"size": 17}, "size", "size must be <= 16, got 17"),
    ("maskrl/PandaGrid-v0", {"size": 8.0}, "size", "size must be an int, got 8.0"),
    ("maskrl/PandaGrid-v0", {"n_watermelons": 0}, "n_watermelons", "n_watermelons must be >= 1, got 0"),
    ("maskrl/PandaGrid-v0", {"n_watermelons": 5}, "n_watermelons", None),
    ("maskrl/PandaGrid-v0", {"max_trees": -1}, "max_trees", None),
    ("maskrl/PandaGrid-v0", {"size": 8, "max_trees": 17}, "max_trees", "max_trees must be <= 16, got 17"),
    ("maskrl/PandaGrid-v0", {"max_trees": 4, "min_trees": 5}, "min_trees", "min_trees must be <= 4, got 5"),
    ("maskrl/PandaGrid-v0", {"min_trees": -1}, "min_trees", None),
    ("maskrl/PandaGrid-v0", {"view_radius": 0.5}, "view_radius", "view_radius must be None or >= 1, got 0.5"),
    ("maskrl/PandaGrid-v0", {"view_radius": float("inf")}, "view_radius", "view_radius must be a finite number"),
    ("maskrl/PandaGrid-v0", {"dragon_chase_prob": -0.1}, "dragon_chase_prob", None),
    (
        "maskrl/PandaGrid-v0",
        {"dragon_chase_prob": 1.5},
        "dragon_chase_prob",
        "dragon_chase_prob must be in [0, 1], got 1.5",
    ),
    ("maskrl/PandaGrid-v0", {"max_steps": 0}, "max_steps", "max_steps must be >= 1, got 0"),
    ("maskrl/PandaGrid-v0", {"caught_penalty": float("-inf")}, "caught_penalty", None),
    ("maskrl/PandaGrid-v0", {"caught_penalty": "-1"}, "caught_penalty", "caught_penalty must be a finite number"),
    ("maskrl/PandaGrid-v0", {"invalid_action_penalty": None}, "invalid_action_penalty", None),
    (
        "maskrl/PandaGrid-v0",
        {"invalid_action_penalty": float("nan")},
        "invalid_action_penalty",
        "invalid_action_penalty must be a finite number",
    ),
    ("maskrl/PandaGrid-v0", {"obs_mode": "pixels"}, "obs_mode", None),
    ("maskrl/PandaGrid-v0", {"image_cell_px": 0}, "image_cell_px", None),
    ("maskrl/PandaGrid-v0", {"image_cell_px": 33}, "image_cell_px", None),
    ("maskrl/PandaGrid-v0", {"image_view": "top"}, "image_view", None),
    ("maskrl/PandaGrid-v0", {"blink_prob": 1.0}, "blink_prob", None),
    ("maskrl/PandaGrid-v0", {"render_mode": "human"}, "render_mode", "render_mode must be None or one of"),
    ("maskrl/PandaHerd-v0", {"n_pandas": 0}, "n_pandas", None),
    ("maskrl/PandaHerd-v0", {"n_pandas": 17}, "n_pandas", None),
    ("maskrl/PandaHerd-v0", {"size": 4}, "size", None),
    ("maskrl/PandaHerd-v0", {"size": 17}, "size", None),
    ("maskrl/PandaHerd-v0", {"n_dragons": 0}, "n_dragons", None),
    ("maskrl/PandaHerd-v0", {"n_dragons": 5}, "n_dragons", None),
    ("maskrl/PandaHerd-v0", {"n_watermelons": 0}, "n_watermelons", None),
    ("maskrl/PandaHerd-v0", {"n_watermelons": 9}, "n_watermelons", None),
    ("maskrl/PandaHerd-v0", {"n_trees": -1}, "n_trees", None),
    ("maskrl/PandaHerd-v0", {"size": 8, "n_trees": 17}, "n_trees", None),
    ("maskrl/PandaHerd-v0", {"view_size": 1}, "view_size", None),
    ("maskrl/PandaHerd-v0", {"view_size": 2}, "view_size", None),
    ("maskrl/PandaHerd-v0", {"view_size": 4}, "view_size", None),
    ("maskrl/PandaHerd-v0", {"view_size": 17}, "view_size", None),
    ("maskrl/PandaHerd-v0", {"dragon_chase_prob": 2.0}, "dragon_chase_prob", None),
    ("maskrl/PandaHerd-v0", {"max_steps": 0}, "max_steps", None),
    ("maskrl/PandaHerd-v0", {"caught_penalty": float("nan")}, "caught_penalty", None),
    ("maskrl/PandaHerd-v0", {"invalid_action_penalty": "x"}, "invalid_action_penalty", None),
    ("maskrl/PandaHerd-v0", {"shared_reward": True}, "shared_reward", None),
    ("maskrl/PandaHerd-v0", {"size": 5, "n_pandas": 8, "n_dragons": 2, "n_watermelons": 3}, "n_pandas", None),
    ("maskrl/PandaHerd-v0", {"render_mode": "text"}, "render_mode", None),
    ("maskrl/ToyMasked-v0", {"n": 2}, "n", "n must be >= 3, got 2"),
    ("maskrl/ToyMasked-v0", {"n_sub": 0}, "n_sub", "n_sub must be >= 1, got 0"),
    ("maskrl/ToyMasked-v0", {"episode_length": 0}, "episode_length", "episode_length must be >= 1, got 0"),
    ("maskrl/ToyMasked-v0", {"action_type": "box"}, "action_type", "action_type must be one of"),
    ("maskrl/ToyMasked-v0", {"render_mode": "human"}, "render_mode", None),
]
PZ_BAD_KWARGS: list[tuple[str, dict[str, Any], str]] = [
    (HERD_PZ_ID, {"n_pandas": 0}, "n_pandas"),
    (HERD_PZ_ID, {"n_pandas": 1.0}, "n_pandas"),
    (HERD_PZ_ID, {"size": 4}, "size"),
    (HERD_PZ_ID, {"view_size": 4}, "view_size"),
    (HERD_PZ_ID, {"view_size": 6}, "view_size"),
    (HERD_PZ_ID, {"dragon_chase_prob": 2.0}, "dragon_chase_prob"),
    (HERD_PZ_ID, {"shared_reward": 1}, "shared_reward"),
    (HERD_PZ_ID, {"size": 5, "n_pandas": 8, "n_dragons": 4, "n_watermelons": 1}, "n_pandas"),
    (HERD_PZ_ID, {"render_mode": "x"}, "render_mode"),
]
#: integer kwargs whose whole out-of-range is fuzzed: name -> (lowest, highest or None) valid value
INT_RANGES: dict[str, dict[str, tuple[int, int | None]]] = {
    "maskrl/Kart-v1": {"max_steps": (1, None)},
    "maskrl/PandaGrid-v0": {"max_steps": (1, None), "size": (5, 16)},
    "maskrl/PandaHerd-v0": {"max_steps": (1, None), "size": (5, 16)},
    "maskrl/ToyMasked-v0": {"episode_length": (1, None), "n": (3, None)},
}

#: SB3's advice that does not apply to maskrl's documented observations: entity sets (N, F), grids (C, H, W) and
#: their per-cell masks look like images or unconventional shapes to it; fogged pictures are a few pixels per cell.
ALLOWED_CHECKER_WARNINGS = ("unconventional shape", "is an image but", "minimal resolution for an image")

FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
MARGIN = 2  # extra steps allowed past max_steps before an episode counts as endless
NO_OP = 0  # the action (per sub-action) an invalid one is executed as: COAST, STAY


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------
def env_class(env_id: str) -> Any:
    return load_env_creator(gym.spec(env_id).entry_point)


def direct(env_id: str, **kwargs: Any) -> gym.Env:
    """The env built by its class (no gymnasium wrappers), with the registered default kwargs."""
    return env_class(env_id)(**{**gym.spec(env_id).kwargs, **kwargs})


def sub_action_sizes(space: spaces.Space) -> list[int]:
    """Choices of every sub-action, in the flat mask's order (sb3-contrib's layout)."""
    if isinstance(space, spaces.Discrete):
        return [int(space.n)]
    if isinstance(space, spaces.MultiDiscrete):
        return [int(n) for n in space.nvec.ravel()]
    if isinstance(space, spaces.MultiBinary):
        return [2] * int(space.n)
    raise TypeError(f"no masks for {space}")


def segments(mask: np.ndarray, space: spaces.Space) -> list[np.ndarray]:
    sizes = sub_action_sizes(space)
    return np.split(mask, np.cumsum(sizes)[:-1])


def to_action(space: spaces.Space, choices: list[int]) -> Any:
    if isinstance(space, spaces.Discrete):
        return int(choices[0])
    dtype = np.int8 if isinstance(space, spaces.MultiBinary) else np.int64
    return np.array(choices, dtype=dtype).reshape(space.shape)


def draw_action(rng: np.random.Generator, mask: np.ndarray, space: spaces.Space, mode: str) -> tuple[Any, bool]:
    """An action: every sub-action valid (``"valid"``), one forbidden where possible (``"invalid"``) or uniform
    (``"any"``); and whether the mask forbids any of its sub-actions."""
    segs = segments(mask, space)
    choices = [int(rng.choice(np.flatnonzero(seg))) if mode != "any" else int(rng.integers(len(seg))) for seg in segs]
    with_forbidden = [k for k, seg in enumerate(segs) if not seg.all()]
    if mode == "invalid" and with_forbidden:
        k = with_forbidden[int(rng.integers(len(with_forbidden)))]
        choices[k] = int(rng.choice(np.flatnonzero(~segs[k])))
    forbidden = any(not seg[c] for seg, c in zip(segs, choices, strict=True))
    return to_action(space, choices), forbidden


def out_of_space_actions(space: spaces.Space) -> list[Any]:
    """Actions outside ``space``: each choice one too many, each one below 0, and (multi-dimensional) a wrong shape."""
    if isinstance(space, spaces.Discrete):
        return [-1, int(space.n)]
    sizes = np.array(sub_action_sizes(space))
    return [sizes, np.full(len(sizes), -1), np.zeros(len(sizes) + 1, dtype=np.int64)]


def flat_obs_mask(obs: dict[str, np.ndarray]) -> np.ndarray:
    """The observation's action mask in ``action_masks()`` order (a grid's ``(A, H, W)`` mask is cell-major)."""
    mask = obs[ACTION_MASK_KEY]
    if mask.ndim == 3:
        mask = mask.reshape(mask.shape[0], -1).T
    return mask.ravel().astype(bool)


def n_invalid(info: dict[str, Any]) -> int:
    """Invalid actions an ``info`` reports: its ``invalid_action`` flag, or its ``invalid_actions`` count."""
    if "invalid_action" in info:
        assert isinstance(info["invalid_action"], bool), info
        return int(info["invalid_action"])
    assert isinstance(info["invalid_actions"], int | np.integer), info
    return int(info["invalid_actions"])


def horizon(env: gym.Env) -> int | None:
    """The truncation horizon (``max_steps``, or a toy's ``episode_length``), if the env has one."""
    for name in ("max_steps", "episode_length"):
        value = getattr(env.unwrapped, name, None)
        if isinstance(value, int):
            return value
    return None


def check_masks(env: gym.Env, obs: Any) -> np.ndarray:
    """The mask contract of one observation; returns ``action_masks()``."""
    assert env.observation_space.contains(obs), obs
    masks = env.unwrapped.action_masks()
    size = action_mask_size(env.action_space)
    assert masks.dtype == np.bool_ and masks.shape == (size,), (masks.dtype, masks.shape)
    assert all(seg.any() for seg in segments(masks, env.action_space)), masks
    if not isinstance(obs, dict):
        return masks
    for key in MASK_KEYS:
        if key in obs:
            assert env.observation_space[key].dtype == np.int8 and obs[key].dtype == np.int8, key
            assert np.isin(obs[key], (0, 1)).all(), key
    if VISIBILITY_KEY in obs:
        assert obs[VISIBILITY_KEY].shape == (obs[ENTITIES_KEY].shape[0],) and obs[VISIBILITY_KEY][0] == 1
    if AGENT_MASK_KEY in obs:
        assert obs[AGENT_MASK_KEY].shape == obs[GRID_KEY].shape[1:]
    if ACTION_MASK_KEY in obs:
        mask = obs[ACTION_MASK_KEY]
        if mask.ndim == 3:  # a grid's per-cell mask (A, H, W)
            assert mask.shape[1:] == obs[GRID_KEY].shape[1:]
            assert set(sub_action_sizes(env.action_space)) == {mask.shape[0]} and mask.size == size
        else:
            assert mask.shape == (size,)
        np.testing.assert_array_equal(flat_obs_mask(obs), masks)
    return masks


def play(env: gym.Env, rng: np.random.Generator, seed: int, n_episodes: int = 2) -> int:
    """Play ``n_episodes`` with valid, invalid and arbitrary actions, checking the contract at every step.

    :return: the number of steps played
    """
    max_steps = horizon(env)
    limit = (max_steps or 500) + MARGIN
    has_stats = set()
    played = 0
    for episode in range(n_episodes):
        obs, info = env.reset(seed=seed + episode)
        assert n_invalid(info) == 0, info
        total_invalid = 0
        for t in range(1, limit + 1):
            masks = check_masks(env, obs)
            action, forbidden = draw_action(rng, masks, env.action_space, str(rng.choice(["valid", "invalid", "any"])))
            obs, reward, terminated, truncated, info = env.step(action)
            assert np.isfinite(reward) and type(terminated) is bool and type(truncated) is bool
            assert not (terminated and truncated)
            invalid = n_invalid(info)
            if not forbidden:
                assert invalid == 0, (action, masks, info)
            elif len(sub_action_sizes(env.action_space)) == 1 or "invalid_action" in info:
                assert invalid == 1, (action, masks, info)
            total_invalid += invalid
            played += 1
            done = terminated or truncated
            assert "episode_stats" not in info or done, info
            if max_steps is not None:
                assert truncated is (not terminated and t == max_steps), (t, max_steps, terminated, truncated)
            if done:
                check_masks(env, obs)
                has_stats.add("episode_stats" in info)
                if "episode_stats" in info:
                    assert info["episode_stats"]["invalid_actions"] == total_invalid
                    assert info["episode_stats"]["steps"] == t
                break
        else:
            pytest.fail(f"episode did not end within {limit} steps")
        with pytest.raises(RuntimeError, match="reset"):
            env.unwrapped.step(action)  # after the end
    assert len(has_stats) == 1, "episode_stats must come at every episode's end or never"
    env.reset(seed=seed)
    for action in out_of_space_actions(env.action_space):
        with pytest.raises(ValueError, match=r"actions? must be"):
            env.unwrapped.step(action)
    return played


def canonical(value: Any) -> Any:
    """A comparable form of observations, rewards and infos (arrays by dtype, shape and bytes)."""
    if isinstance(value, np.ndarray):
        return (str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, dict):
        return tuple((k, canonical(v)) for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return tuple(canonical(v) for v in value)
    if isinstance(value, float | np.floating):
        return np.float64(value).tobytes()
    return value


def trajectory(env: gym.Env, seed: int, n_steps: int = 150, action_seed: int = 7) -> list:
    """``n_steps`` of arbitrary actions from ``reset(seed=seed)``, with unseeded resets after each episode."""
    rng = np.random.default_rng(action_seed)
    obs, info = env.reset(seed=seed)
    out = [canonical((obs, info))]
    for _ in range(n_steps):
        action = to_action(env.action_space, [int(rng.integers(n)) for n in sub_action_sizes(env.action_space)])
        obs, reward, terminated, truncated, info = env.step(action)
        out.append(canonical((obs, reward, terminated, truncated, info)))
        if terminated or truncated:
            obs, info = env.reset()
            out.append(canonical((obs, info)))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# gymnasium envs
# ---------------------------------------------------------------------------------------------------------------------
def _variants() -> list[tuple[str, dict[str, Any]]]:
    return [(env_id, kwargs) for env_id in GYM_IDS for kwargs in [{}, *VARIANTS.get(env_id, [])]]


@pytest.mark.parametrize(("env_id", "kwargs"), _variants(), ids=[f"{e[7:]}-{k}" for e, k in _variants()])
def test_gymnasium_and_sb3_checkers_pass(env_id: str, kwargs: dict) -> None:
    env = gym.make(env_id, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)
        sb3_check_env(env)
    relevant = [
        str(w.message)
        for w in caught
        if not issubclass(w.category, DeprecationWarning)
        and not any(allowed in str(w.message) for allowed in ALLOWED_CHECKER_WARNINGS)
    ]
    assert not relevant, relevant


@pytest.mark.parametrize("env_id", GYM_IDS)
@FUZZ
@given(data=st.data())
def test_random_play_keeps_the_contract(env_id: str, data: st.DataObject) -> None:
    kwargs = data.draw(FUZZ_KWARGS.get(env_id, st.just({})), label="kwargs")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    assert play(gym.make(env_id, **kwargs), np.random.default_rng(seed), seed) >= 2  # two episodes, each >= 1 step


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_out_of_space_actions_and_steps_outside_an_episode_raise(env_id: str) -> None:
    env = direct(env_id)
    space = env.action_space
    with pytest.raises(RuntimeError, match="reset"):
        env.step(to_action(space, [0] * len(sub_action_sizes(space))))  # before reset
    env.reset(seed=0)
    for action in out_of_space_actions(space):
        with pytest.raises(ValueError, match=r"actions? must be"):
            env.step(action)


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_invalid_action_is_a_flagged_no_op_with_the_penalty(env_id: str) -> None:
    try:
        penalised = gym.make(env_id, invalid_action_penalty=-0.25)
    except TypeError:
        pytest.skip(f"{env_id} takes no invalid_action_penalty (it has no no-op action)")
    plain, replaced = gym.make(env_id, invalid_action_penalty=0.0), gym.make(env_id, invalid_action_penalty=0.0)
    rng = np.random.default_rng(3)
    obs_a, _ = plain.reset(seed=7)
    obs_b, _ = penalised.reset(seed=7)
    obs_c, _ = replaced.reset(seed=7)
    flags = []
    for _ in range(150):
        masks = plain.unwrapped.action_masks()
        action, _ = draw_action(rng, masks, plain.action_space, "any")
        # The same action with every forbidden sub-action replaced by the no-op.
        choices = [
            c if seg[c] else NO_OP for seg, c in zip(segments(masks, plain.action_space), np.ravel(action), strict=True)
        ]
        obs_a, rew_a, term_a, trunc_a, info_a = plain.step(action)
        obs_b, rew_b, term_b, trunc_b, info_b = penalised.step(action)
        obs_c, rew_c, term_c, trunc_c, info_c = replaced.step(to_action(plain.action_space, choices))
        invalid = n_invalid(info_a)
        flags.append(invalid)
        assert n_invalid(info_b) == invalid and n_invalid(info_c) == 0
        assert rew_b - rew_a == pytest.approx(-0.25 * invalid, abs=1e-12)
        assert rew_c == rew_a and (term_a, trunc_a) == (term_b, trunc_b) == (term_c, trunc_c)
        assert canonical(obs_a) == canonical(obs_b) == canonical(obs_c)
        if term_a or trunc_a:
            obs_a, _ = plain.reset()
            obs_b, _ = penalised.reset()
            obs_c, _ = replaced.reset()
    assert any(flags) and not all(flags), flags


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_same_seed_same_trajectory_and_seeds_differ(env_id: str) -> None:
    first = trajectory(gym.make(env_id), seed=11)
    assert trajectory(gym.make(env_id), seed=11) == first
    reused = gym.make(env_id)
    trajectory(reused, seed=5, n_steps=77)
    assert trajectory(reused, seed=11) == first  # a seeded reset replays the episode whatever happened before
    assert trajectory(gym.make(env_id), seed=12) != first


@pytest.mark.filterwarnings("ignore:.*not in the possible render_modes")
@pytest.mark.parametrize(
    ("env_id", "kwargs", "name", "prefix"), BAD_KWARGS, ids=[f"{e[7:]}-{k}" for e, k, _, _ in BAD_KWARGS]
)
def test_kwargs_out_of_bounds_raise_a_one_line_value_error(env_id: str, kwargs: dict, name: str, prefix) -> None:
    makers = [functools.partial(gym.make, env_id), functools.partial(direct, env_id)]
    if kwargs.get("render_mode") == "human":
        makers = makers[1:]  # gym.make renders "human" itself from "rgb_array" (its HumanRendering wrapper)
    for make in makers:
        with pytest.raises(ValueError) as error:
            make(**kwargs)
        message = str(error.value)
        assert name in message and "\n" not in message, message
        if prefix is not None:
            assert message.startswith(prefix), message


@pytest.mark.filterwarnings("ignore:.*not in the possible render_modes")
@pytest.mark.parametrize("env_id", GYM_IDS)
def test_any_env_refuses_bad_render_modes_unknown_kwargs_and_words_for_numbers(env_id: str) -> None:
    with pytest.raises(ValueError, match="render_mode") as error:
        gym.make(env_id, render_mode="no-such-mode")
    assert "\n" not in str(error.value)
    with pytest.raises(TypeError):
        direct(env_id, no_such_kwarg=1)
    # Every kwarg whose default is a number or None refuses a word, naming the kwarg.
    parameters = inspect.signature(env_class(env_id)).parameters.values()
    for p in parameters:
        if p.name == "render_mode" or isinstance(p.default, bool):
            continue
        if p.default is None or isinstance(p.default, int | float):
            with pytest.raises(ValueError, match=p.name) as error:
                direct(env_id, **{p.name: "many"})
            assert "\n" not in str(error.value)


@pytest.mark.parametrize("env_id", sorted(INT_RANGES))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_fuzzed_out_of_range_ints_raise(env_id: str, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(INT_RANGES[env_id])), label="kwarg")
    low, high = INT_RANGES[env_id][name]
    below = st.integers(-(10**9), low - 1)
    value = data.draw(below if high is None else st.one_of(below, st.integers(high + 1, 10**9)), label="value")
    with pytest.raises(ValueError, match=name):
        gym.make(env_id, **{name: value})


# ---------------------------------------------------------------------------------------------------------------------
# PettingZoo envs
# ---------------------------------------------------------------------------------------------------------------------
def make_parallel(pz_id: str, **kwargs: Any) -> Any:
    return pettingzoo.make("parallel", pz_id, **kwargs)


def _pz_variants() -> list[tuple[str, dict[str, Any]]]:
    return [(pz_id, kwargs) for pz_id in PZ_IDS for kwargs in [{}, *PZ_VARIANTS.get(pz_id, [])]]


@pytest.mark.parametrize(("pz_id", "kwargs"), _pz_variants(), ids=[f"{e[7:]}-{k}" for e, k in _pz_variants()])
def test_pettingzoo_api_tests(pz_id: str, kwargs: dict) -> None:
    api_test(pettingzoo.make("aec", pz_id, **kwargs), num_cycles=100)  # with the registered wrappers
    api_test(parallel_to_aec(make_parallel(pz_id, **kwargs)), num_cycles=100)  # raw
    parallel_api_test(make_parallel(pz_id, **kwargs), num_cycles=200)


@pytest.mark.parametrize("pz_id", PZ_IDS)
def test_pettingzoo_seed_and_state_tests(pz_id: str) -> None:
    seed_test(functools.partial(pettingzoo.make, "aec", pz_id), num_cycles=50)
    parallel_seed_test(functools.partial(make_parallel, pz_id), num_cycles=50)
    state_test(pettingzoo.make("aec", pz_id), make_parallel(pz_id))


@pytest.mark.parametrize("pz_id", PZ_IDS)
def test_parallel_spaces_are_stable_objects_that_cover_the_observations(pz_id: str) -> None:
    env = make_parallel(pz_id)
    obs, _ = env.reset(seed=3)
    for agent in env.possible_agents:
        # One object per agent: PettingZoo's api test checks identity, and action-space seeding relies on it.
        assert env.observation_space(agent) is env.observation_space(agent)
        assert env.action_space(agent) is env.action_space(agent)
        assert env.observation_space(agent).contains(obs[agent])
        assert obs[agent][ACTION_MASK_KEY].dtype == np.int8
    a, b = env.possible_agents[:2] if len(env.possible_agents) > 1 else (None, None)
    if a is not None:
        assert env.observation_space(a) is not env.observation_space(b)


@pytest.mark.parametrize("pz_id", PZ_IDS)
@FUZZ
@given(data=st.data())
def test_parallel_random_play_keeps_the_contract(pz_id: str, data: st.DataObject) -> None:
    kwargs = data.draw(PZ_FUZZ_KWARGS.get(pz_id, st.just({})), label="kwargs")
    env = make_parallel(pz_id, **kwargs)
    max_steps = kwargs.get("max_steps", getattr(env, "max_steps", None))
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    rng = np.random.default_rng(seed)
    obs, infos = env.reset(seed=seed)
    assert set(obs) == set(infos) == set(env.agents) == set(env.possible_agents)
    assert not any(n_invalid(info) for info in infos.values())
    invalid_counts = dict.fromkeys(env.possible_agents, 0)
    for t in range(1, (max_steps or 500) + MARGIN + 1):
        actions, forbidden = {}, {}
        for agent in env.agents:
            assert env.observation_space(agent).contains(obs[agent]), obs[agent]
            mask = obs[agent][ACTION_MASK_KEY].astype(bool)
            if hasattr(env, "action_mask"):
                np.testing.assert_array_equal(env.action_mask(agent).astype(bool), mask)
            mode = str(rng.choice(["valid", "invalid", "any"]))
            actions[agent], forbidden[agent] = draw_action(rng, mask, env.action_space(agent), mode)
        live = list(env.agents)
        obs, rewards, terms, truncs, infos = env.step(actions)
        assert set(obs) == set(rewards) == set(terms) == set(truncs) == set(infos) == set(live)
        for agent in live:
            assert n_invalid(infos[agent]) == int(forbidden[agent]), (agent, actions[agent], infos[agent])
            invalid_counts[agent] += forbidden[agent]
            assert np.isfinite(rewards[agent]) and env.observation_space(agent).contains(obs[agent])
            assert not (terms[agent] and truncs[agent])
            if terms[agent] or truncs[agent]:
                assert agent not in env.agents
                if "episode_stats" in infos[agent]:
                    assert infos[agent]["episode_stats"]["invalid_actions"] == invalid_counts[agent]
                if max_steps is not None:
                    assert truncs[agent] is (t == max_steps and not terms[agent])
            else:
                assert agent in env.agents and "episode_stats" not in infos[agent]
        if not env.agents:
            break
        if max_steps is not None:
            assert t < max_steps
    else:
        pytest.fail("the parallel episode did not end")
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})
    env.reset(seed=0)
    agent = env.agents[0]
    with pytest.raises(ValueError, match=agent):
        env.step({agent: int(env.action_space(agent).n)})


@pytest.mark.parametrize("pz_id", PZ_IDS)
def test_parallel_same_seed_same_trajectory_and_seeds_differ(pz_id: str) -> None:
    def state(env: Any) -> Any:
        try:
            return canonical(env.state())
        except NotImplementedError:
            return None

    def run(seed: int) -> list:
        env = make_parallel(pz_id)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        out = [canonical(obs), state(env)]
        while env.agents:
            acts = {a: int(rng.choice(np.flatnonzero(obs[a][ACTION_MASK_KEY]))) for a in env.agents}
            obs, *rest = env.step(acts)
            out.append((canonical((obs, *rest)), state(env)))
        return out

    assert run(5) == run(5)
    assert run(5) != run(6)


@pytest.mark.filterwarnings("ignore:.*not in the possible render_modes")
@pytest.mark.parametrize(("pz_id", "kwargs", "name"), PZ_BAD_KWARGS, ids=[f"{k}" for _, k, _ in PZ_BAD_KWARGS])
def test_parallel_kwargs_out_of_bounds_raise_a_one_line_value_error(pz_id: str, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError) as error:
        make_parallel(pz_id, **kwargs)
    assert name in str(error.value) and "\n" not in str(error.value)
