"""Hypothesis fuzzing of maskrl's envs: random kwargs within the documented bounds, random valid and invalid actions.

Every env is checked for the same contract (see each module's docstring): observations lie in the observation
space, ``action_masks()`` equals the mask in the observation, every action the mask allows is accepted as valid,
every action it forbids is reported as invalid (and counted in the episode stats), and episodes end within
``max_steps``. Kwargs outside the documented bounds raise a one-line ``ValueError`` naming the kwarg.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import maskrl  # noqa: F401 - registers the maskrl/ envs
from maskrl.envs.panda_herd import N_ACTIONS, STAY, PandaHerdGridEnv, parallel_env

FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
MARGIN = 2  # extra steps allowed past max_steps before we call an episode endless
# How each step's action is picked: an allowed one, a forbidden one (when the state has any), or anything.
MODES = st.sampled_from(["valid", "invalid", "any"])


def pick_action(data: st.DataObject, mask: np.ndarray) -> int:
    """One action index drawn by hypothesis: valid, invalid (if any is) or unconstrained."""
    allowed = np.flatnonzero(mask).tolist()
    forbidden = np.flatnonzero(~mask).tolist()
    assert allowed, f"no valid action in mask {mask}"
    mode = data.draw(MODES)
    if mode == "invalid" and forbidden:
        return data.draw(st.sampled_from(forbidden))
    if mode == "any":
        return data.draw(st.integers(0, len(mask) - 1))
    return data.draw(st.sampled_from(allowed))


def check_discrete_env(env: gym.Env, data: st.DataObject, max_steps: int, n_episodes: int = 2) -> None:
    """Play ``n_episodes`` of a single-agent env with a ``Discrete`` action space and a flat mask key."""
    n = int(env.action_space.n)
    for episode in range(n_episodes):
        obs, info = env.reset(seed=data.draw(st.integers(0, 2**31 - 1), label=f"seed{episode}"))
        assert info["invalid_action"] is False
        n_invalid = 0
        for t in range(1, max_steps + MARGIN + 1):
            assert env.observation_space.contains(obs), obs
            mask = env.unwrapped.action_masks()
            assert mask.dtype == bool and mask.shape == (n,)
            np.testing.assert_array_equal(mask, obs["action_mask"].astype(bool))
            a = pick_action(data, mask)
            obs, reward, terminated, truncated, info = env.step(a)
            assert np.isfinite(reward)
            assert info["invalid_action"] is (not mask[a]), (a, mask, info)
            n_invalid += not mask[a]
            if terminated or truncated:
                assert env.observation_space.contains(obs), obs
                np.testing.assert_array_equal(env.unwrapped.action_masks(), obs["action_mask"].astype(bool))
                assert info["episode_stats"]["invalid_actions"] == n_invalid
                assert info["episode_stats"]["steps"] == t
                assert truncated is (not terminated and t == max_steps)
                break
            assert t < max_steps, "an episode must be truncated at max_steps"
        else:
            pytest.fail(f"episode did not end within max_steps={max_steps} + {MARGIN}")
        # Out-of-space actions and stepping a finished episode are errors, not silent no-ops.
        with pytest.raises(RuntimeError, match="reset"):
            env.unwrapped.step(0)
    env.reset(seed=0)
    for bad in (-1, n):
        with pytest.raises(ValueError, match="action must be in"):
            env.unwrapped.step(bad)


# ---------------------------------------------------------------------------------------------------------------------
# Kart
# ---------------------------------------------------------------------------------------------------------------------
KART_KWARGS = st.fixed_dictionaries(
    {
        "n_opponents": st.integers(0, 7),
        "n_laps": st.integers(1, 10),
        "n_item_types": st.one_of(st.integers(1, 12), st.sampled_from([64, 4096])),
        "inventory_size": st.integers(1, 8),
        "n_lanes": st.integers(1, 5),
        "max_steps": st.integers(1, 40),
        "invalid_action_penalty": st.floats(-1.0, 0.0),
    }
)


@FUZZ
@given(kwargs=KART_KWARGS, data=st.data())
def test_kart_fuzz(kwargs, data) -> None:
    env = gym.make("maskrl/Kart-v0", **kwargs)
    assert env.action_space.n == 5 + kwargs["n_item_types"]
    check_discrete_env(env, data, kwargs["max_steps"])


def test_kart_with_long_horizon_terminates_by_finishing() -> None:
    """With a generous max_steps, accelerating always finishes the race (terminated, not truncated)."""
    env = gym.make("maskrl/Kart-v0", n_laps=1, max_steps=1000)
    env.reset(seed=0)
    for _ in range(1000):
        _, _, terminated, truncated, info = env.step(1)
        if terminated or truncated:
            break
    assert terminated and not truncated and info["episode_stats"]["finished"] == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# PandaGrid
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


@FUZZ
@given(kwargs=panda_grid_kwargs(), data=st.data())
def test_panda_grid_fuzz(kwargs, data) -> None:
    env = gym.make("maskrl/PandaGrid-v0", **kwargs)
    check_discrete_env(env, data, kwargs["max_steps"])


def test_panda_grid_largest_size_and_tree_count() -> None:
    env = gym.make("maskrl/PandaGrid-v0", size=16, max_trees=64, min_trees=64, max_steps=5)
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert int(obs["entities"][:, -1].sum()) <= 64


# ---------------------------------------------------------------------------------------------------------------------
# PandaHerd: the centralised grid view and the PettingZoo parallel env
# ---------------------------------------------------------------------------------------------------------------------
@st.composite
def herd_kwargs(draw: st.DrawFn) -> dict:
    size = draw(st.integers(5, 9))
    budget = size * size // 2  # the documented crowding limit
    n_pandas = draw(st.integers(1, min(16, budget - 2)))
    n_dragons = draw(st.integers(1, min(4, budget - n_pandas - 1)))
    n_watermelons = draw(st.integers(1, min(8, budget - n_pandas - n_dragons)))
    room = min(size * size // 4, budget - n_pandas - n_dragons - n_watermelons)
    n_trees = draw(st.integers(0, room))
    return {
        "n_pandas": n_pandas,
        "size": size,
        "n_dragons": n_dragons,
        "n_watermelons": n_watermelons,
        "n_trees": n_trees,
        "view_size": draw(st.sampled_from([3, 5, 7, 9, 11, 13, 15])),
        "dragon_chase_prob": draw(st.floats(0.0, 1.0)),
        "max_steps": draw(st.integers(1, 30)),
        "caught_penalty": draw(st.floats(-5.0, 0.0)),
        "invalid_action_penalty": draw(st.floats(-1.0, 0.0)),
    }


@FUZZ
@given(kwargs=herd_kwargs(), flat=st.booleans(), data=st.data())
def test_panda_herd_grid_fuzz(kwargs, flat, data) -> None:
    env = gym.make("maskrl/PandaHerd-v0", flat_action_mask=flat, **kwargs)
    herd = env.unwrapped.herd
    n_cells, max_steps = kwargs["size"] ** 2, kwargs["max_steps"]
    obs, info = env.reset(seed=data.draw(st.integers(0, 2**31 - 1), label="seed"))
    assert info["invalid_actions"] == 0 and info["pandas_alive"] == kwargs["n_pandas"]
    total_invalid = 0
    for t in range(1, max_steps + MARGIN + 1):
        assert env.observation_space.contains(obs), obs
        flat_mask = env.unwrapped.action_masks()
        assert flat_mask.dtype == bool and flat_mask.shape == (n_cells * N_ACTIONS,)
        obs_mask = obs["action_mask"] if flat else obs["action_mask"].reshape(N_ACTIONS, n_cells).T.ravel()
        np.testing.assert_array_equal(flat_mask, obs_mask.astype(bool))
        cell_mask = flat_mask.reshape(n_cells, N_ACTIONS)
        occupied = sorted({p for p in herd._pos if p >= 0})
        np.testing.assert_array_equal(np.flatnonzero(obs["agent_mask"].ravel()), occupied)
        empty = np.setdiff1d(np.arange(n_cells), occupied)
        assert cell_mask[empty, STAY].all() and not cell_mask[empty, STAY + 1 :].any()
        # Occupied cells: one hypothesis draw each; empty cells: any action (it is ignored).
        action = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).integers(0, N_ACTIONS, n_cells)
        for cell in occupied:
            action[cell] = pick_action(data, cell_mask[cell])
        expected_invalid = sum(not cell_mask[p, action[p]] for p in herd._pos if p >= 0)
        obs, reward, terminated, truncated, info = env.step(action)
        assert np.isfinite(reward)
        assert info["invalid_actions"] == expected_invalid, (action, info)
        assert info["pandas_alive"] == len(herd.agents)
        total_invalid += expected_invalid
        if terminated or truncated:
            assert env.observation_space.contains(obs)
            stats = info["episode_stats"]
            assert stats["invalid_actions"] == total_invalid and stats["steps"] == t
            assert terminated is (stats["pandas_alive"] == 0)
            assert truncated is (not terminated and t == max_steps)
            break
        assert t < max_steps
    else:
        pytest.fail("the herd episode did not end within max_steps")
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step(np.zeros(n_cells, dtype=np.int64))
    env.reset(seed=0)
    for bad in (np.full(n_cells, N_ACTIONS), np.full(n_cells, -1), np.zeros(n_cells + 1, dtype=np.int64)):
        with pytest.raises(ValueError, match="action"):
            env.unwrapped.step(bad)


@FUZZ
@given(kwargs=herd_kwargs(), shared=st.booleans(), data=st.data())
def test_panda_herd_parallel_fuzz(kwargs, shared, data) -> None:
    env = parallel_env(shared_reward=shared, **kwargs)
    max_steps = kwargs["max_steps"]
    obs, infos = env.reset(seed=data.draw(st.integers(0, 2**31 - 1), label="seed"))
    assert set(obs) == set(env.agents) == set(env.possible_agents)
    invalid_counts = dict.fromkeys(env.possible_agents, 0)
    for t in range(1, max_steps + MARGIN + 1):
        actions: dict[str, int | None] = {}
        masks = {}
        for agent in env.agents:
            assert env.observation_space(agent).contains(obs[agent]), obs[agent]
            masks[agent] = mask = env.action_mask(agent).astype(bool)
            np.testing.assert_array_equal(mask, obs[agent]["action_mask"].astype(bool))
            kind = data.draw(st.sampled_from(["act", "act", "act", "none", "missing"]))
            if kind == "act":
                actions[agent] = pick_action(data, mask)
            elif kind == "none":
                actions[agent] = None  # documented: STAY, not counted as invalid
        live = list(env.agents)
        obs, rewards, terms, truncs, infos = env.step(actions)
        assert set(obs) == set(rewards) == set(terms) == set(truncs) == set(infos) == set(live)
        for agent in live:
            a = actions.get(agent)
            expected = a is not None and not masks[agent][a]
            assert infos[agent]["invalid_action"] is expected, (agent, a, masks[agent], infos[agent])
            invalid_counts[agent] += expected
            assert np.isfinite(rewards[agent])
            assert env.observation_space(agent).contains(obs[agent])
            assert not (terms[agent] and truncs[agent])
            if terms[agent] or truncs[agent]:
                assert agent not in env.agents
                assert infos[agent]["episode_stats"]["invalid_actions"] == invalid_counts[agent]
                assert truncs[agent] is (t == max_steps and not terms[agent])
            else:
                assert agent in env.agents
        if not env.agents:
            break
        assert t < max_steps
    else:
        pytest.fail("the parallel herd episode did not end within max_steps")
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="panda_0"):
        env.step({"panda_0": N_ACTIONS})


# ---------------------------------------------------------------------------------------------------------------------
# Kwargs outside the documented bounds
# ---------------------------------------------------------------------------------------------------------------------
BAD_KWARGS = [
    ("maskrl/Kart-v0", {"n_opponents": -1}, "n_opponents"),
    ("maskrl/Kart-v0", {"n_opponents": 8}, "n_opponents"),
    ("maskrl/Kart-v0", {"n_laps": 0}, "n_laps"),
    ("maskrl/Kart-v0", {"n_laps": 11}, "n_laps"),
    ("maskrl/Kart-v0", {"n_item_types": 0}, "n_item_types"),
    ("maskrl/Kart-v0", {"n_item_types": 4097}, "n_item_types"),
    ("maskrl/Kart-v0", {"inventory_size": 0}, "inventory_size"),
    ("maskrl/Kart-v0", {"inventory_size": 9}, "inventory_size"),
    ("maskrl/Kart-v0", {"n_lanes": 0}, "n_lanes"),
    ("maskrl/Kart-v0", {"n_lanes": 6}, "n_lanes"),
    ("maskrl/Kart-v0", {"max_steps": 0}, "max_steps"),
    ("maskrl/Kart-v0", {"max_steps": 2.5}, "max_steps"),
    ("maskrl/Kart-v0", {"n_laps": True}, "n_laps"),
    ("maskrl/Kart-v0", {"invalid_action_penalty": float("nan")}, "invalid_action_penalty"),
    ("maskrl/Kart-v0", {"invalid_action_penalty": "-1"}, "invalid_action_penalty"),
    ("maskrl/Kart-v0", {"render_mode": "text"}, "render_mode"),
    ("maskrl/PandaGrid-v0", {"size": 4}, "size"),
    ("maskrl/PandaGrid-v0", {"size": 17}, "size"),
    ("maskrl/PandaGrid-v0", {"n_watermelons": 0}, "n_watermelons"),
    ("maskrl/PandaGrid-v0", {"n_watermelons": 5}, "n_watermelons"),
    ("maskrl/PandaGrid-v0", {"max_trees": -1}, "max_trees"),
    ("maskrl/PandaGrid-v0", {"size": 8, "max_trees": 17}, "max_trees"),
    ("maskrl/PandaGrid-v0", {"max_trees": 4, "min_trees": 5}, "min_trees"),
    ("maskrl/PandaGrid-v0", {"min_trees": -1}, "min_trees"),
    ("maskrl/PandaGrid-v0", {"view_radius": 0.5}, "view_radius"),
    ("maskrl/PandaGrid-v0", {"view_radius": float("inf")}, "view_radius"),
    ("maskrl/PandaGrid-v0", {"dragon_chase_prob": -0.1}, "dragon_chase_prob"),
    ("maskrl/PandaGrid-v0", {"dragon_chase_prob": 1.5}, "dragon_chase_prob"),
    ("maskrl/PandaGrid-v0", {"max_steps": 0}, "max_steps"),
    ("maskrl/PandaGrid-v0", {"caught_penalty": float("-inf")}, "caught_penalty"),
    ("maskrl/PandaGrid-v0", {"invalid_action_penalty": None}, "invalid_action_penalty"),
    ("maskrl/PandaHerd-v0", {"n_pandas": 0}, "n_pandas"),
    ("maskrl/PandaHerd-v0", {"n_pandas": 17}, "n_pandas"),
    ("maskrl/PandaHerd-v0", {"size": 4}, "size"),
    ("maskrl/PandaHerd-v0", {"size": 17}, "size"),
    ("maskrl/PandaHerd-v0", {"n_dragons": 0}, "n_dragons"),
    ("maskrl/PandaHerd-v0", {"n_dragons": 5}, "n_dragons"),
    ("maskrl/PandaHerd-v0", {"n_watermelons": 0}, "n_watermelons"),
    ("maskrl/PandaHerd-v0", {"n_watermelons": 9}, "n_watermelons"),
    ("maskrl/PandaHerd-v0", {"n_trees": -1}, "n_trees"),
    ("maskrl/PandaHerd-v0", {"size": 8, "n_trees": 17}, "n_trees"),
    ("maskrl/PandaHerd-v0", {"view_size": 1}, "view_size"),
    ("maskrl/PandaHerd-v0", {"view_size": 4}, "view_size"),
    ("maskrl/PandaHerd-v0", {"view_size": 17}, "view_size"),
    ("maskrl/PandaHerd-v0", {"dragon_chase_prob": 2.0}, "dragon_chase_prob"),
    ("maskrl/PandaHerd-v0", {"max_steps": 0}, "max_steps"),
    ("maskrl/PandaHerd-v0", {"caught_penalty": float("nan")}, "caught_penalty"),
    ("maskrl/PandaHerd-v0", {"invalid_action_penalty": "x"}, "invalid_action_penalty"),
    ("maskrl/PandaHerd-v0", {"shared_reward": True}, "shared_reward"),
    ("maskrl/PandaHerd-v0", {"size": 5, "n_pandas": 8, "n_dragons": 2, "n_watermelons": 3}, "n_pandas"),
    ("maskrl/PandaHerd-v0", {"render_mode": "text"}, "render_mode"),
]


@pytest.mark.filterwarnings("ignore:.*not in the possible render_modes")
@pytest.mark.parametrize(("env_id", "kwargs", "name"), BAD_KWARGS, ids=[f"{e[7:]}-{k}" for e, k, _ in BAD_KWARGS])
def test_out_of_bounds_kwargs_raise_one_line_value_error(env_id, kwargs, name) -> None:
    with pytest.raises(ValueError) as error:
        gym.make(env_id, **kwargs)
    message = str(error.value)
    assert name in message and "\n" not in message, message


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"shared_reward": 1}, "shared_reward"),
        ({"n_pandas": 1.0}, "n_pandas"),
        ({"view_size": 6}, "view_size"),
        ({"size": 5, "n_pandas": 8, "n_dragons": 4, "n_watermelons": 1}, "n_pandas"),
    ],
)
def test_parallel_env_out_of_bounds_kwargs_raise_one_line_value_error(kwargs, name) -> None:
    with pytest.raises(ValueError) as error:
        parallel_env(**kwargs)
    assert name in str(error.value) and "\n" not in str(error.value)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), env_id=st.sampled_from(["maskrl/Kart-v0", "maskrl/PandaGrid-v0", "maskrl/PandaHerd-v0"]))
def test_fuzzed_out_of_range_ints_raise(data, env_id) -> None:
    """``max_steps`` < 1 everywhere and a grid ``size`` outside 5-16 are refused, whatever the value."""
    names = ["max_steps"] if env_id == "maskrl/Kart-v0" else ["max_steps", "size"]
    name = data.draw(st.sampled_from(names))
    low = st.integers(-(10**9), 0 if name == "max_steps" else 4)
    value = data.draw(low if name == "max_steps" else st.one_of(low, st.integers(17, 10**9)))
    with pytest.raises(ValueError, match=name):
        gym.make(env_id, **{name: value})


def test_herd_grid_env_direct_construction_checks_kwargs_too() -> None:
    with pytest.raises(ValueError, match="view_size"):
        PandaHerdGridEnv(view_size=2)
