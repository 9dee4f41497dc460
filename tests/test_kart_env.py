"""Tests of the kart race environment (maskrl/Kart-v1; v0 is v1 without the skid warnings): masks, items, races.

The env contract (checkers, kwargs errors, out-of-space actions, masks, invalid actions, determinism) is checked for
every registered env in test_env_contract.py.
"""

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import maskrl  # noqa: F401  (registers maskrl/Kart-v0 and -v1)
from maskrl.envs import kart
from maskrl.envs.kart import (
    ACCELERATE,
    BANANA,
    BOOST,
    BRAKE,
    COAST,
    N_DRIVE,
    SHELL,
    STAR,
    STEER_LEFT,
    STEER_RIGHT,
    KartEnv,
    item_duration,
    item_strength,
    scripted_action,
)

STATS_KEYS = {"final_rank", "items_used", "items_collected", "invalid_actions", "finished"}


def _random_valid(env: KartEnv, rng: np.random.Generator) -> int:
    return int(rng.choice(np.flatnonzero(env.action_masks())))


def _quiet_opponents(env: KartEnv, positions: tuple[float, ...] = ()) -> None:
    """Park the opponents far from the agent (or at ``positions``), standing still and without items."""
    for j in range(1, env.n_karts):
        env._d[j] = positions[j - 1] if j - 1 < len(positions) else env._d[0] + 50.0 + j
        env._v[j] = 0.0
        env._vmax[j] = 0.0  # cannot move: keeps the scenario exact
        env._inv[j] = []
        env._lane[j] = 0


def _place_agent(env: KartEnv, d: float, lane: int, v: float) -> None:
    env._d[0], env._lane[0], env._v[0] = d, lane, v
    env._update_mask()


def _item_of(env: KartEnv, effect: int, tier: int = 0) -> int:
    k = tier * 4 + effect
    assert k < env.n_item_types
    return k


# ---------------------------------------------------------------------------- construction
def test_make_after_import_maskrl_passes_kwargs() -> None:
    env = gym.make("maskrl/Kart-v0", n_item_types=16, n_opponents=2, n_lanes=4)
    assert isinstance(env.unwrapped, KartEnv)
    assert env.action_space == gym.spaces.Discrete(N_DRIVE + 16)
    obs, _ = env.reset(seed=0)
    assert obs["observation"].shape == (23 + 2 * 4 + 8 * 2 + 16,)
    assert env.observation_space.contains(obs)
    obs, reward, terminated, truncated, info = env.step(ACCELERATE)
    assert reward > 0.0 and not terminated and not truncated and info["invalid_action"] is False


# ---------------------------------------------------------------------------- masks
def test_item_actions_masked_until_collected_then_exactly_that_one_until_used() -> None:
    env = KartEnv(n_item_types=16, inventory_size=2)
    obs, _ = env.reset(seed=1)
    assert not obs["action_mask"][N_DRIVE:].any()
    _quiet_opponents(env)
    # Just before the first row of boxes (at 10, every lane), in lane 0.
    _place_agent(env, 9.5, 0, 1.0)
    obs, _, _, _, info = env.step(ACCELERATE)
    assert info["invalid_action"] is False
    assert len(env._inv[0]) == 1
    k = env._inv[0][0]
    expected = np.zeros(16, dtype=np.int8)
    expected[k] = 1
    np.testing.assert_array_equal(obs["action_mask"][N_DRIVE:], expected)
    np.testing.assert_array_equal(env.action_masks()[N_DRIVE:], expected.astype(bool))
    inv_obs = obs["observation"][env.obs_layout["inv"]]
    assert inv_obs[k] == pytest.approx(0.5) and inv_obs.sum() == pytest.approx(0.5)
    assert obs["observation"][env.obs_layout["self"]][14] == pytest.approx(0.5)  # one free slot of two

    obs, _, _, _, info = env.step(N_DRIVE + k)
    assert info["invalid_action"] is False
    assert env._inv[0] == []
    assert not obs["action_mask"][N_DRIVE:].any()
    assert not obs["observation"][env.obs_layout["inv"]].any()
    assert env._stats["items_collected"] == 1 and env._stats["items_used"] == 1


def test_box_gives_no_item_when_inventory_full_and_respawns() -> None:
    env = KartEnv(inventory_size=1)
    env.reset(seed=0)
    _quiet_opponents(env)
    env._give_item(0, 0)
    _place_agent(env, 9.5, 1, 1.0)
    env.step(ACCELERATE)
    assert env._inv[0] == [0]  # full: nothing new, and the box stays
    assert env._box_timer[0 * 3 + 1] == 0
    env._inv[0].clear()
    env._counts[:] = 0
    env._mask[N_DRIVE:] = 0
    _place_agent(env, 109.5, 1, 1.0)  # same box one lap later
    env.step(ACCELERATE)
    assert len(env._inv[0]) == 1
    assert env._box_timer[1] == 25 - 1  # taken: respawns after 25 steps
    for _ in range(24):
        env.step(COAST)
    assert env._box_timer[1] == 0


def test_situational_drive_masks() -> None:
    env = KartEnv(n_lanes=3)
    obs, _ = env.reset(seed=0)
    _quiet_opponents(env)
    mask = obs["action_mask"]
    assert mask[COAST] == 1 and mask[ACCELERATE] == 1
    assert mask[BRAKE] == 0  # standing on the grid
    _place_agent(env, 5.0, 0, 0.5)
    m = env.action_masks()
    assert m[BRAKE] and not m[STEER_LEFT] and m[STEER_RIGHT]
    _place_agent(env, 5.0, 2, 0.5)
    m = env.action_masks()
    assert m[STEER_LEFT] and not m[STEER_RIGHT]
    _place_agent(env, 5.0, 1, 0.5)
    env._spin[0] = 3
    env._update_mask()
    m = env.action_masks()
    assert not m[STEER_LEFT] and not m[STEER_RIGHT]  # a spinning kart cannot steer
    single = KartEnv(n_lanes=1)
    single.reset(seed=0)
    assert not single.action_masks()[STEER_LEFT] and not single.action_masks()[STEER_RIGHT]


# ---------------------------------------------------------------------------- invalid actions
def test_each_kind_of_invalid_action_is_flagged() -> None:
    env = KartEnv()
    env.reset(seed=0)
    _quiet_opponents(env)
    _place_agent(env, 5.0, 0, 0.0)
    for action in (BRAKE, STEER_LEFT, N_DRIVE + 0, N_DRIVE + 3):
        _place_agent(env, env._d[0], 0, 0.0)
        lane_before = env._lane[0]
        _, reward, _, _, info = env.step(action)
        assert info["invalid_action"] is True, action
        assert env._lane[0] == lane_before and env._v[0] == 0.0 and reward == 0.0
    _, _, _, _, info = env.step(STEER_RIGHT)
    assert info["invalid_action"] is False and env._lane[0] == 1
    assert env._stats["invalid_actions"] == 4


# ---------------------------------------------------------------------------- spaces, episode end
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_opponents=st.integers(0, 7),
    n_laps=st.integers(1, 3),
    n_item_types=st.integers(1, 300),
    inventory_size=st.integers(1, 8),
    n_lanes=st.integers(1, 5),
    max_steps=st.integers(1, 300),
    seed=st.integers(0, 2**31 - 1),
    scripted=st.booleans(),
    render_mode=st.sampled_from([None, "ansi", "rgb_array"]),
)
def test_observations_always_in_space(
    n_opponents: int,
    n_laps: int,
    n_item_types: int,
    inventory_size: int,
    n_lanes: int,
    max_steps: int,
    seed: int,
    scripted: bool,
    render_mode: str | None,
) -> None:
    env = KartEnv(
        n_opponents=n_opponents,
        n_laps=n_laps,
        n_item_types=n_item_types,
        inventory_size=inventory_size,
        n_lanes=n_lanes,
        max_steps=max_steps,
        render_mode=render_mode,
    )
    assert env.obs_size == 25 + 2 * n_lanes + 8 * n_opponents + n_item_types
    assert env.action_space.n == N_DRIVE + n_item_types
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    assert env.observation_space.contains(obs)
    for t in range(1, max_steps + 1):
        action = scripted_action(env) if scripted else _random_valid(env, rng)
        obs, _, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs), t
        assert info["invalid_action"] is False
        if terminated or truncated:
            break
    assert terminated or truncated
    assert t <= max_steps
    assert truncated == (not terminated and t == max_steps)
    stats = info["episode_stats"]
    assert stats.keys() >= STATS_KEYS
    assert all(type(v) is float for v in stats.values())
    assert 1 <= stats["final_rank"] <= n_opponents + 1
    assert stats["finished"] == float(terminated)
    frame = env.render()
    if render_mode == "ansi":
        assert isinstance(frame, str) and "\n" not in frame
    elif render_mode == "rgb_array":
        assert frame.dtype == np.uint8 and frame.shape == (20 + 16 * n_lanes, 400, 3)


def test_scripted_episode_terminates_with_stats_and_finishing_bonus() -> None:
    env = KartEnv()
    env.reset(seed=2)
    total, steps = 0.0, 0
    while True:
        _, reward, terminated, truncated, info = env.step(scripted_action(env))
        total += reward
        steps += 1
        assert info["invalid_action"] is False
        if terminated or truncated:
            break
        assert "episode_stats" not in info
    assert terminated and not truncated and 100 <= steps <= 300
    stats = info["episode_stats"]
    assert stats.keys() >= STATS_KEYS
    assert stats["finished"] == 1.0 and stats["race_progress"] == 1.0 and stats["steps"] == steps
    assert stats["final_rank"] == info["rank"]
    # Progress sums to 3 over the race; the finishing bonus is 1 + 2 * (4 - rank) / 3.
    assert total == pytest.approx(3.0 + 1.0 + 2.0 * (4 - stats["final_rank"]) / 3.0, abs=1e-6)
    assert info["lap"] == 2


def test_with_a_long_horizon_accelerating_terminates_by_finishing() -> None:
    env = gym.make("maskrl/Kart-v0", n_laps=1, max_steps=1000)
    env.reset(seed=0)
    for _ in range(1000):
        _, _, terminated, truncated, info = env.step(ACCELERATE)
        if terminated or truncated:
            break
    assert terminated and not truncated and info["episode_stats"]["finished"] == 1.0


def test_finishing_rank_uses_finishing_times_and_sets_the_bonus() -> None:
    env = KartEnv()
    env.reset(seed=0)
    _quiet_opponents(env, positions=(150.0, 120.0, 199.9))
    env._finish[1] = 100.5  # opponent 1 already finished
    env._d[3], env._v[3], env._vmax[3], env._lane[3] = 199.9, 1.0, 1.0, 2
    _place_agent(env, 199.5, 1, 1.0)
    env._t = 150
    _, reward, terminated, truncated, info = env.step(ACCELERATE)
    # The agent crosses the line at t = 150.5, opponent 3 at about 150.1: the agent is third.
    assert terminated and not truncated
    assert info["rank"] == 3 and info["episode_stats"]["final_rank"] == 3.0
    assert info["episode_stats"]["finished"] == 1.0
    progress = 3.0 * 0.5 / env._agent_distance
    assert reward == pytest.approx(progress + 1.0 + 2.0 * (4 - 3) / 3)


def test_truncated_rank_comes_from_race_progress() -> None:
    env = KartEnv(max_steps=1)
    env.reset(seed=0)
    _quiet_opponents(env, positions=(50.0, 10.0, 30.0))
    _place_agent(env, 20.0, 1, 1.0)
    _, _, terminated, truncated, info = env.step(ACCELERATE)
    assert truncated and not terminated
    assert info["episode_stats"]["final_rank"] == 3.0 and info["episode_stats"]["finished"] == 0.0


def test_opponents_collect_and_use_items_and_differ_by_seed() -> None:
    env = KartEnv()
    opponent_traps = hits_taken = 0
    top_speeds = set()
    for seed in range(8):
        env.reset(seed=seed)
        top_speeds.add(tuple(env._vmax[1:]))
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(ACCELERATE)
            opponent_traps += sum(1 for trap in env._traps if trap[4] != 0 and trap[3] == 150 - 1)
            done = terminated or truncated
        hits_taken += info["episode_stats"]["hits_taken"]
    assert opponent_traps > 0 and hits_taken > 0
    assert len(top_speeds) == 8


def test_observation_describes_the_surroundings() -> None:
    env = KartEnv(n_opponents=1, n_item_types=4, n_lanes=3)
    env.reset(seed=0)
    _quiet_opponents(env, positions=(15.0,))
    env._traps = [[9.0, 2, 8, 100, 1]]
    _place_agent(env, 5.0, 1, 1.0)
    obs = env._get_obs()["observation"]
    own = obs[env.obs_layout["self"]]
    assert own[3] == pytest.approx(0.5)  # speed / 2
    assert own[4] == pytest.approx(0.5)  # middle lane
    assert own[10] == 1.0  # on a straight
    assert own[11] == pytest.approx(0.17) and own[12] == pytest.approx(0.7)  # next curve at 22, limit 0.7
    lanes = obs[env.obs_layout["lanes"]].reshape(3, 2)
    np.testing.assert_allclose(lanes[:, 0], [0.05, 0.05, 0.05], rtol=1e-5)  # boxes at 10 in every lane
    np.testing.assert_allclose(lanes[:, 1], [1.0, 1.0, 0.2], rtol=1e-5)  # trap 4 ahead in lane 2, / 20
    opp = obs[env.obs_layout["opps"]]
    np.testing.assert_allclose(opp[:4], [0.1, 0.2, -0.5, 0.0], atol=1e-6)
    _place_agent(env, 23.0, 1, 0.5)
    own = env._get_obs()["observation"][env.obs_layout["self"]]
    assert own[10] == pytest.approx(0.7) and own[13] == pytest.approx(0.09)  # in curve 1, which ends at 32
    # Lapped and lapping opponents are clipped into the space.
    for d_opp in (-150.0, 180.0):
        env._d[1] = d_opp
        obs = env._get_obs()
        assert env.observation_space.contains(obs)
        assert obs["observation"][env.obs_layout["opps"]][0] == (-1.0 if d_opp < 0 else 1.0)


def _warnings(env: KartEnv) -> list[float]:
    return env._get_obs()["observation"][env.obs_layout["skid"]].tolist()


def test_skid_warnings_exact_cases() -> None:
    env = KartEnv(n_opponents=0)
    env.reset(seed=0)
    _place_agent(env, 5.0, 0, 0.0)
    assert _warnings(env) == [1.0, 1.0]  # standing on a straight
    # Curve 2 starts at 50 with limit 0.55. From 49.6 at 0.5: accelerating moves at 0.58 into it (a skid),
    # coasting at 0.48 is under every limit.
    _place_agent(env, 49.6, 0, 0.5)
    assert _warnings(env) == [0.0, 1.0]
    # At 1.0 from 47.5: coasting moves to 48.48, braking then gives 0.78 -> 49.26 and 0.58 -> 49.84, then
    # 0.38 into the curve: safe. Accelerating stays at 1.0 (the top) -> 48.5, 0.8 -> 49.3, 0.6 -> 49.9,
    # then 0.4 -> 50.3 under the limit: safe too. From 48.5 at 1.0 both run into the curve at 0.58 and 0.6.
    _place_agent(env, 47.5, 0, 1.0)
    assert _warnings(env) == [1.0, 1.0]
    _place_agent(env, 48.5, 0, 1.0)
    assert _warnings(env) == [0.0, 0.0]
    env._star[0] = 5  # starred karts do not skid
    assert _warnings(env) == [1.0, 1.0]
    env._star[0] = 0
    env._spin[0] = 3  # a spinning kart is held at 0.25, under every limit
    assert _warnings(env) == [1.0, 1.0]


@pytest.mark.parametrize("throttle", [ACCELERATE, COAST])
def test_skid_warnings_tell_whether_full_braking_afterwards_avoids_the_skid(throttle: int) -> None:
    """Over the states of random and scripted races (no opponents: nothing else changes the agent's speed), the
    warning for ``throttle`` is 1 exactly when ``throttle`` now, then braking until the speed is under every
    curve's limit, drives through without a skid."""
    import copy

    index = 0 if throttle == ACCELERATE else 1
    seen = {0.0: 0, 1.0: 0}
    for seed in range(6):
        env = KartEnv(n_opponents=0, n_laps=1)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        done = False
        while not done:
            if env._boost[0] == 0:
                warning = float(obs["observation"][env.obs_layout["skid"]][index])
                trial = copy.deepcopy(env)
                skids = trial._stats["skids"]
                trial.step(throttle)
                while trial._v[0] > min(limit for _, _, limit in kart._CURVES) and not trial._needs_reset:
                    trial.step(BRAKE)
                trial_ok = trial._stats["skids"] == skids or trial._star[0] > 0
                assert warning == float(trial_ok), (seed, env._d[0], env._v[0])
                seen[warning] += 1
            action = scripted_action(env) if seed % 2 else _random_valid(env, rng)
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    assert seen[0.0] >= 5 and seen[1.0] >= 500  # both answers occur (67 and 10 unsafe states with these seeds)


def test_v0_is_v1_without_the_skid_block() -> None:
    v0, v1 = gym.make("maskrl/Kart-v0").unwrapped, gym.make("maskrl/Kart-v1").unwrapped
    assert v0.obs_size == 57 and v1.obs_size == 59 and v0.obs_layout["skid"] == slice(15, 15)
    obs0, _ = v0.reset(seed=4)
    obs1, _ = v1.reset(seed=4)
    for _ in range(120):
        keep = np.ones(59, dtype=bool)
        keep[v1.obs_layout["skid"]] = False
        np.testing.assert_array_equal(obs0["observation"], obs1["observation"][keep])
        np.testing.assert_array_equal(obs0["action_mask"], obs1["action_mask"])
        action = scripted_action(v0)
        obs0, r0, *_ = v0.step(action)
        obs1, r1, *_ = v1.step(action)
        assert r0 == r1


def test_reset_clears_the_inventory_and_its_mask() -> None:
    env = KartEnv(n_item_types=16)
    env.reset(seed=0)
    env._give_item(0, 9)
    env._give_item(0, 3)
    env._update_mask()
    assert env.action_masks()[N_DRIVE + 9] and env.action_masks()[N_DRIVE + 3]
    obs, _ = env.reset(seed=0)
    assert not obs["action_mask"][N_DRIVE:].any() and not env.action_masks()[N_DRIVE:].any()
    assert not obs["observation"][env.obs_layout["inv"]].any()
    assert env._inv[0] == []


# ---------------------------------------------------------------------------- item effects
def test_item_strength_and_duration_depend_on_type() -> None:
    assert [item_strength(k) for k in range(4)] == [1.0] * 4
    assert [item_duration(k) for k in range(4)] == [8, 8, 10, 15]
    strengths = [item_strength(k) for k in range(256)]
    assert all(0.5 <= s < 1.5 for s in strengths)
    assert len({round(s, 9) for s in strengths}) == 64  # one strength per tier of 4 types
    assert item_duration(4) != item_duration(0)
    env = KartEnv(n_item_types=8)
    assert env._effect == [0, 1, 2, 3, 0, 1, 2, 3]


def test_boost_raises_speed_for_its_duration() -> None:
    env = KartEnv(n_item_types=8)
    env.reset(seed=0)
    _quiet_opponents(env)
    for k in (_item_of(env, BOOST, 0), _item_of(env, BOOST, 1)):
        _place_agent(env, 0.0, 1, 1.0)
        env._vmax[0] = 1.0
        env._give_item(0, k)
        env.step(N_DRIVE + k)
        speeds = [env._v[0]]
        while env._boost[0] > 0:
            env.step(ACCELERATE)
            speeds.append(env._v[0])
        assert speeds == [pytest.approx(1.5)] * item_duration(k)
        env.step(ACCELERATE)
        assert env._v[0] == pytest.approx(1.4)  # decays back towards the top speed
        env._boost[0] = 0


def test_banana_is_dropped_behind_and_spins_the_kart_driving_into_it() -> None:
    # One lane: the opponent cannot swerve around the trap.
    env = KartEnv(n_item_types=8, n_lanes=1)
    env.reset(seed=0)
    _quiet_opponents(env, positions=(0.0, 60.0, 70.0))
    k = _item_of(env, BANANA, 1)
    _place_agent(env, 5.0, 0, 0.0)
    env._give_item(0, k)
    env.step(N_DRIVE + k)
    assert len(env._traps) == 1
    pos, lane, duration = env._traps[0][:3]
    assert pos == pytest.approx(3.5) and lane == 0 and duration == item_duration(k)

    # Opponent 1 drives into it from behind.
    env._d[1], env._v[1], env._vmax[1] = 3.0, 1.0, 1.0
    env.step(COAST)
    assert env._spin[1] == item_duration(k) and env._v[1] == pytest.approx(0.1)
    assert env._traps == []
    assert env._stats["hits_dealt"] == 1
    env.step(COAST)
    assert env._spin[1] == item_duration(k) - 1 and env._v[1] <= 0.25

    # A trap in another lane is harmless; one in the agent's lane spins the agent.
    env = KartEnv(n_item_types=8, n_lanes=3)
    env.reset(seed=0)
    _quiet_opponents(env)
    env._traps = [[7.0, 0, 8, 100, 1], [7.0, 1, 8, 100, 1]]
    _place_agent(env, 6.5, 2, 1.0)
    env.step(ACCELERATE)
    assert env._spin[0] == 0 and env._v[0] == pytest.approx(1.0) and len(env._traps) == 2
    _place_agent(env, 6.5, 1, 1.0)
    env.step(ACCELERATE)
    assert env._spin[0] == 8 and env._v[0] == pytest.approx(0.1) and env._stats["hits_taken"] == 1
    assert len(env._traps) == 1 and env._traps[0][1] == 0
    obs, *_ = env.step(ACCELERATE)
    assert env._v[0] == pytest.approx(0.1)  # spinning: accelerating does nothing
    assert obs["observation"][env.obs_layout["self"]][7] > 0.0


def test_shell_spins_the_nearest_kart_ahead_only() -> None:
    env = KartEnv(n_item_types=4)
    env.reset(seed=0)
    _quiet_opponents(env, positions=(30.0, 12.0, 8.0))
    env._lane[3] = 2
    _place_agent(env, 5.0, 0, 1.0)
    env._give_item(0, SHELL)
    env.step(N_DRIVE + SHELL)
    # Kart 3 is nearest ahead (3 units, another lane): hit. Karts 1 and 2 are untouched.
    assert env._spin[3] == item_duration(SHELL) - 1  # one spinning step already elapsed
    assert env._spin[1] == 0 and env._spin[2] == 0
    assert env._stats["hits_dealt"] == 1

    # Nothing within range ahead: the shell is wasted.
    _quiet_opponents(env, positions=(0.0, 1.0, 2.0))
    _place_agent(env, 5.0, 0, 1.0)
    env._spin = [0] * 4
    env._give_item(0, SHELL)
    env.step(N_DRIVE + SHELL)
    assert env._spin == [0, 0, 0, 0] and env._inv[0] == []


def test_star_makes_immune_and_faster() -> None:
    env = KartEnv(n_item_types=4)
    env.reset(seed=0)
    _quiet_opponents(env)
    _place_agent(env, 5.0, 1, 1.0)
    env._vmax[0] = 1.0
    env._give_item(0, STAR)
    env._traps = [[7.5, 1, 8, 100, 1]]
    env.step(N_DRIVE + STAR)
    for _ in range(5):
        env.step(ACCELERATE)
    assert env._spin[0] == 0 and env._traps == []  # drove through the trap and destroyed it
    assert env._v[0] == pytest.approx(1.15)
    # A shell fired from behind does nothing.
    env._d[1], env._lane[1], env._vmax[1] = env._d[0] - 5.0, 0, 0.0
    env._give_item(1, SHELL)
    env._use_item(1, SHELL)
    assert env._spin[0] == 0
    # No skid in a curve at full speed (curve 1 starts at 22 with limit 0.7).
    _place_agent(env, 21.5, 1, 1.15)
    env.step(ACCELERATE)
    assert env._v[0] == pytest.approx(1.15) and env._stats["skids"] == 0
    # Without the star the same move skids to half the curve's limit.
    env._star[0] = 0
    _place_agent(env, 21.5, 1, 1.0)
    env.step(ACCELERATE)
    assert env._v[0] == pytest.approx(0.35) and env._stats["skids"] == 1


# ---------------------------------------------------------------------------- rendering
def test_ansi_render_is_one_line() -> None:
    env = KartEnv(render_mode="ansi")
    env.reset(seed=0)
    lines = set()
    for _ in range(20):
        env.step(ACCELERATE)
        text = env.render()
        assert isinstance(text, str) and "\n" not in text
        assert "rank" in text and "A" in text and "act=accelerate" in text
        lines.add(text)
    assert len(lines) == 20
    assert KartEnv().render() is None


def test_rgb_render_fixed_shape_and_changes_with_state() -> None:
    env = KartEnv(render_mode="rgb_array")
    env.reset(seed=0)
    first = env.render()
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    for _ in range(15):
        env.step(ACCELERATE)
    second = env.render()
    assert second.shape == first.shape
    assert not np.array_equal(first, second)
    env.reset(seed=0)
    np.testing.assert_array_equal(env.render(), first)


# ---------------------------------------------------------------------------- items matter
def _evaluate(policy, episodes: int = 30) -> tuple[float, float, float]:
    env = KartEnv()
    rng = np.random.default_rng(0)
    returns, ranks, used = [], [], []
    for ep in range(episodes):
        env.reset(seed=1000 + ep)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, info = env.step(policy(env, rng))
            total += reward
            done = terminated or truncated
        returns.append(total)
        ranks.append(info["episode_stats"]["final_rank"])
        used.append(info["episode_stats"]["items_used"])
    return float(np.mean(returns)), float(np.mean(ranks)), float(np.mean(used))


def test_items_matter_and_heuristics_beat_random() -> None:
    ret_items, rank_items, used_items = _evaluate(lambda env, rng: scripted_action(env, use_items=True))
    ret_plain, rank_plain, used_plain = _evaluate(lambda env, rng: scripted_action(env, use_items=False))
    ret_random, _, _ = _evaluate(_random_valid)
    ret_accel, _, _ = _evaluate(lambda env, rng: ACCELERATE)
    assert used_plain == 0.0 and used_items >= 2.0
    assert rank_items <= rank_plain - 0.5
    assert ret_items > ret_plain
    assert min(ret_plain, ret_accel) > ret_random + 2.0


def test_module_exports_action_constants() -> None:
    assert (COAST, ACCELERATE, BRAKE, STEER_LEFT, STEER_RIGHT, N_DRIVE) == (0, 1, 2, 3, 4, 5)
    assert (BOOST, BANANA, SHELL, STAR) == (0, 1, 2, 3)
    assert set(kart.__all__) >= {"KartEnv", "scripted_action", "N_DRIVE"}
