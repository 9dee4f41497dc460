"""Tests of the panda herd: hand-made scenarios, the centralised view and the herd through PettingZooVecEnv.

The env contract (PettingZoo's api, seed and state tests, checkers, kwargs errors, masks, invalid actions,
determinism) is checked for the parallel env and the centralised view in test_env_contract.py.
"""

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_env_contract import herd_kwargs

from maskrl.envs.panda_herd import (
    DOWN,
    LEFT,
    N_ACTIONS,
    PETTINGZOO_ID,
    RIGHT,
    STAY,
    UP,
    VIEW_CHANNELS,
    PandaHerdGridEnv,
    PandaHerdParallelEnv,
    env,
    parallel_env,
    raw_env,
)
from maskrl.envs.pettingzoo_vec_env import PettingZooVecEnv

SMALL = {"size": 5, "n_dragons": 1, "n_watermelons": 1, "dragon_chase_prob": 0.0}


def _herd(layout: list[str], n_pandas: int, **kwargs):
    e = PandaHerdParallelEnv(n_pandas=n_pandas, **{**SMALL, **kwargs})
    obs, infos = e.reset(seed=0, options={"layout": layout})
    return e, obs, infos


def _cell(e: PandaHerdParallelEnv, i: int) -> tuple[int, int]:
    return divmod(e.panda_cells()[i], e.size)


# ---------------------------------------------------------------------- PettingZoo registration
def test_metadata_and_registry():
    import pettingzoo

    assert PandaHerdParallelEnv.metadata["name"] == "panda_herd_v0"
    assert PandaHerdParallelEnv.metadata["is_parallelizable"] is True
    assert isinstance(pettingzoo.make("parallel", PETTINGZOO_ID, n_pandas=3), PandaHerdParallelEnv)
    for aec in (pettingzoo.make("aec", PETTINGZOO_ID, n_pandas=3), env(n_pandas=3), raw_env(n_pandas=3)):
        aec.reset(seed=0)
        assert aec.agents == ["panda_0", "panda_1", "panda_2"]
    assert isinstance(gym.make("maskrl/PandaHerd-v0").unwrapped, PandaHerdGridEnv)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (["P...."] * 5, "layout must be 8 strings of 8 characters"),
        (["P......."] * 8, "layout needs exactly n_pandas=4 P, got 8"),
        (["PPPPD..x"] + ["........"] * 7, "layout has unknown character 'x' at row 0, column 7; use P D W T ."),
        (["PPPPD..."] + ["........"] * 7, "layout needs exactly n_dragons=2 D, got 1"),
        (["PPPPDD.."] + ["........"] * 7, "layout needs exactly n_watermelons=3 W, got 0"),
    ],
)
def test_bad_layouts_raise_clear_value_errors(layout: list[str], message: str):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        PandaHerdParallelEnv().reset(options={"layout": layout})


def test_none_and_missing_actions_are_stay_and_not_invalid():
    e, _, _ = _herd([".....", ".P...", "..W..", "...P.", "....D"], n_pandas=2, invalid_action_penalty=-0.5)
    before = e.panda_cells()
    for actions in ({"panda_0": None, "panda_1": None}, {}, {"panda_0": None}, None):
        _, rewards, _, _, infos = e.step(actions)
        assert e.panda_cells() == before
        assert all(info["invalid_action"] is False for info in infos.values()) and set(rewards.values()) == {0.0}
    _, _, _, _, infos = e.step({"panda_0": UP, "panda_1": None})
    assert infos["panda_0"]["invalid_action"] is False and infos["panda_1"]["invalid_action"] is False
    assert e.panda_cells() == [before[0] - 5, before[1]]


# ---------------------------------------------------------------------- hand-made scenarios
def test_caught_panda_leaves_agents():
    e, _, _ = _herd(["PD...", ".....", "..W..", ".....", "....P"], n_pandas=2)
    obs, rew, term, trunc, infos = e.step({"panda_0": RIGHT, "panda_1": STAY})
    assert term == {"panda_0": True, "panda_1": False}
    assert trunc == {"panda_0": False, "panda_1": False}
    assert rew["panda_0"] == -1.0 and rew["panda_1"] == 0.0
    assert e.agents == ["panda_1"]
    assert infos["panda_0"]["episode_stats"]["caught"] == 1.0
    assert "episode_stats" not in infos["panda_1"]
    assert "panda_0" in obs
    # the rest of the episode involves only panda_1; it ends when panda_1 is caught too
    for _ in range(3):
        obs, rew, term, *_ = e.step({"panda_1": UP})
        assert set(obs) == {"panda_1"}
    obs, rew, term, *_ = e.step({"panda_1": LEFT})  # (1, 4) -> ... walk to the dragon at (0, 1)
    while e.agents:
        r, _ = _cell(e, 1)
        obs, rew, term, *_ = e.step({"panda_1": UP if r > 0 else LEFT})
    assert term == {"panda_1": True} and rew["panda_1"] == -1.0


def test_dragon_catches_panda_and_truncation_ends_the_rest():
    e, _, _ = _herd(["P.D..", ".....", "..W..", ".....", "....P"], n_pandas=2, dragon_chase_prob=1.0, max_steps=3)
    _, rew, term, trunc, _ = e.step({"panda_0": STAY, "panda_1": STAY})  # the dragon steps next to panda_0
    assert not any(term.values())
    _, rew, term, trunc, infos = e.step({"panda_0": STAY, "panda_1": STAY})  # and onto it
    assert term == {"panda_0": True, "panda_1": False} and rew["panda_0"] == -1.0
    _, rew, term, trunc, infos = e.step({"panda_1": STAY})
    assert trunc == {"panda_1": True} and term == {"panda_1": False}
    assert infos["panda_1"]["episode_stats"]["caught"] == 0.0 and infos["panda_1"]["episode_stats"]["steps"] == 3.0
    assert e.agents == []


def test_masks_block_trees_and_walls_and_invalid_action_is_noop():
    e, obs, _ = _herd(["P....", "T....", "..W..", ".....", "....D"], n_pandas=1, invalid_action_penalty=-0.5)
    np.testing.assert_array_equal(obs["panda_0"]["action_mask"], [1, 0, 0, 0, 1])
    np.testing.assert_array_equal(e.action_mask("panda_0"), [1, 0, 0, 0, 1])
    for a in (UP, DOWN, LEFT):
        obs, rew, _, _, infos = e.step({"panda_0": a})
        assert infos["panda_0"]["invalid_action"] is True
        assert rew["panda_0"] == -0.5
        assert _cell(e, 0) == (0, 0)
    obs, rew, _, _, infos = e.step({"panda_0": RIGHT})
    assert infos["panda_0"]["invalid_action"] is False and _cell(e, 0) == (0, 1)
    np.testing.assert_array_equal(obs["panda_0"]["action_mask"], [1, 0, 1, 1, 1])
    assert e._stats[0]["invalid_actions"] == 3


def test_egocentric_view_channels():
    _, obs, _ = _herd(["P.D..", "T....", "..W..", ".....", "....P"], n_pandas=2)
    assert obs["panda_0"]["observation"].shape == (len(VIEW_CHANNELS) * 25 + 2,)
    view = obs["panda_0"]["observation"][:-2].reshape(len(VIEW_CHANNELS), 5, 5)
    blocked, melon, other, dragon = view
    assert blocked[:2].all() and blocked[:, :2].all()  # off the grid above and to the left
    assert blocked[3, 2] == 1.0 and blocked[2, 3] == 0.0  # the tree below the panda
    assert dragon[2, 4] == 1.0 and dragon.sum() == 1.0
    assert melon[4, 4] == 1.0 and melon.sum() == 1.0
    assert other.sum() == 0.0  # panda_1 at (4, 4) is outside the 5x5 window
    np.testing.assert_array_equal(obs["panda_0"]["observation"][-2:], [0.0, 0.0])
    np.testing.assert_array_equal(obs["panda_1"]["observation"][-2:], [1.0, 1.0])


def test_eating_gives_plus_one_and_respawns():
    e, _, _ = _herd([".....", ".....", "..PW.", ".....", "P...D"], n_pandas=2)
    _, rew, *_ = e.step({"panda_0": RIGHT, "panda_1": STAY})
    assert rew == {"panda_0": 1.0, "panda_1": 0.0}
    assert len(e._wm) == 1 and e._wm[0] != 2 * 5 + 3
    assert e._wm[0] not in (*e.panda_cells(), *e._dragons, *e._world.trees)
    assert e._stats[0]["watermelons_eaten"] == 1


def test_shared_reward_and_first_in_order_eats():
    e, _, _ = _herd([".....", ".....", ".PWP.", ".....", "....D"], n_pandas=2, shared_reward=True)
    _, rew, *_ = e.step({"panda_0": RIGHT, "panda_1": LEFT})  # both land on the watermelon
    assert rew == {"panda_0": 1.0, "panda_1": 1.0}  # one watermelon eaten, the team reward shared
    assert e._stats[0]["watermelons_eaten"] == 1 and e._stats[1]["watermelons_eaten"] == 0


def test_dragon_walks_around_trees_toward_nearest_panda():
    e, _, _ = _herd(["..P..", "TTT..", ".....", ".....", "D...W"], n_pandas=1, dragon_chase_prob=1.0)
    dist = [e._world.distances(e.panda_cells()[0])[e._dragons[0]]]
    for _ in range(3):
        e.step({"panda_0": STAY})
        dist.append(e._world.distances(e.panda_cells()[0])[e._dragons[0]])
        assert not e._world.blocked[e._dragons[0]]
    assert dist == [dist[0] - k for k in range(4)]


def test_renders():
    e = parallel_env(render_mode="ansi", size=6, n_pandas=2)
    e.reset(seed=1)
    text = e.render()
    lines = text.splitlines()
    assert len(lines) == 7 and all(len(line) == 6 for line in lines[1:])
    assert "0" in text and "1" in text and "D" in text and "W" in text
    e = parallel_env(render_mode="rgb_array", size=6)
    e.reset(seed=1)
    img = e.render()
    assert img.dtype == np.uint8 and img.shape == (6 * 32, 6 * 32, 3)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 5
    assert parallel_env().render() is None


# ---------------------------------------------------------------------- centralised view
def _occupied(g: PandaHerdGridEnv) -> list[int]:
    return sorted({p for p in g.herd.panda_cells() if p >= 0})


def _random_cell_actions(obs: dict, rng: np.random.Generator) -> np.ndarray:
    m = obs["action_mask"]
    cells = m.reshape(5, -1).T
    return np.array([rng.choice(np.flatnonzero(c)) for c in cells], dtype=np.int64)


def test_grid_env_agent_mask_and_action_mask_layouts():
    g = PandaHerdGridEnv(max_steps=40)
    obs, _ = g.reset(seed=2)
    rng = np.random.default_rng(0)
    done = False
    while not done:
        expected = np.zeros(g.n_cells, dtype=np.int8)
        expected[_occupied(g)] = 1
        np.testing.assert_array_equal(obs["agent_mask"].ravel(), expected)
        np.testing.assert_array_equal(obs["grid"][2].ravel(), expected)
        flat = g.action_masks()
        empty = expected == 0
        np.testing.assert_array_equal(flat.reshape(g.n_cells, 5)[empty], np.eye(5, dtype=bool)[[STAY] * empty.sum()])
        for agent, p in zip(g.herd.possible_agents, g.herd.panda_cells(), strict=True):
            if p >= 0:
                np.testing.assert_array_equal(flat.reshape(g.n_cells, 5)[p], g.herd.action_mask(agent).astype(bool))
        obs, _, term, trunc, info = g.step(_random_cell_actions(obs, rng))
        done = term or trunc
    assert set(info["episode_stats"]) == {
        "watermelons_eaten",
        "pandas_caught",
        "pandas_alive",
        "steps",
        "invalid_actions",
    }
    flat_env = PandaHerdGridEnv(flat_action_mask=True)
    obs, _ = flat_env.reset(seed=2)
    assert obs["action_mask"].shape == (flat_env.n_cells * 5,)


def test_grid_env_empty_cell_actions_have_no_effect():
    a, b = PandaHerdGridEnv(max_steps=30), PandaHerdGridEnv(max_steps=30)
    obs_a, _ = a.reset(seed=7)
    obs_b, _ = b.reset(seed=7)
    rng = np.random.default_rng(1)
    done = False
    while not done:
        act = _random_cell_actions(obs_a, rng)
        other = rng.integers(0, 5, size=act.shape)
        act_b = np.where(obs_a["agent_mask"].ravel() == 1, act, other)
        assert (act_b != act).any()
        obs_a, ra, ta, tra, ia = a.step(act)
        obs_b, rb, tb, trb, ib = b.step(act_b)
        for key in obs_a:
            np.testing.assert_array_equal(obs_a[key], obs_b[key])
        assert (ra, ta, tra, ia) == (rb, tb, trb, ib)
        done = ta or tra


def test_grid_env_team_reward_is_sum_of_panda_rewards():
    g = PandaHerdGridEnv(max_steps=60, dragon_chase_prob=1.0)
    p = PandaHerdParallelEnv(max_steps=60, dragon_chase_prob=1.0)
    g.reset(seed=11)
    p.reset(seed=11)
    rng = np.random.default_rng(2)
    done, rewards_seen = False, set()
    while not done:
        act = rng.integers(0, 5, size=g.n_cells)  # random, including invalid ones
        cells = p.panda_cells()
        per_agent = {agent: int(act[cells[p.agent_name_mapping[agent]]]) for agent in p.agents}
        _, rew, *_ = p.step(per_agent)
        _, r, term, trunc, info = g.step(act)
        assert r == pytest.approx(sum(rew.values()))
        rewards_seen.add(r)
        done = term or trunc
    assert term == (info["episode_stats"]["pandas_alive"] == 0)
    assert len(rewards_seen) > 1


def test_grid_env_terminates_when_all_caught():
    g = PandaHerdGridEnv(n_pandas=1, **SMALL)
    g.reset(seed=0, options={"layout": ["PD...", ".....", "..W..", ".....", "....."]})
    act = np.zeros(25, dtype=np.int64)
    act[0] = RIGHT
    obs, r, term, trunc, info = g.step(act)
    assert term and not trunc and r == -1.0
    assert info["episode_stats"]["pandas_caught"] == 1.0 and obs["agent_mask"].sum() == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(kwargs=herd_kwargs(), flat=st.booleans(), data=st.data())
def test_grid_env_cells_masks_and_invalid_counts_follow_the_pandas(kwargs, flat, data):
    """Fuzzed: agent_mask is the pandas' cells, empty cells allow only STAY, each invalid panda action counts once."""
    g = PandaHerdGridEnv(flat_action_mask=flat, **kwargs)
    n_cells, herd = kwargs["size"] ** 2, g.herd
    obs, info = g.reset(seed=data.draw(st.integers(0, 2**31 - 1), label="seed"))
    assert info["invalid_actions"] == 0 and info["pandas_alive"] == kwargs["n_pandas"]
    done = False
    while not done:
        cell_mask = g.action_masks().reshape(n_cells, N_ACTIONS)
        occupied = _occupied(g)
        np.testing.assert_array_equal(np.flatnonzero(obs["agent_mask"].ravel()), occupied)
        empty = np.setdiff1d(np.arange(n_cells), occupied)
        assert cell_mask[empty, STAY].all() and not cell_mask[empty, STAY + 1 :].any()
        # Occupied cells: one hypothesis draw each (valid, invalid or any); empty cells: anything (it is ignored).
        action = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).integers(0, N_ACTIONS, n_cells)
        for cell in occupied:
            allowed, forbidden = np.flatnonzero(cell_mask[cell]), np.flatnonzero(~cell_mask[cell])
            mode = data.draw(st.sampled_from(["valid", "invalid", "any"]))
            pool = forbidden if mode == "invalid" and len(forbidden) else allowed if mode != "any" else range(5)
            action[cell] = data.draw(st.sampled_from(list(pool)))
        expected_invalid = sum(not cell_mask[p, action[p]] for p in herd.panda_cells() if p >= 0)
        obs, _, terminated, truncated, info = g.step(action)
        assert info["invalid_actions"] == expected_invalid, (action, info)
        assert info["pandas_alive"] == len(herd.agents)
        done = terminated or truncated
    assert terminated is (info["episode_stats"]["pandas_alive"] == 0)


# ---------------------------------------------------------------------- the herd through PettingZooVecEnv
def test_herd_vec_env_contract():
    v = PettingZooVecEnv(parallel_env, 2, dict(n_pandas=3, max_steps=25, dragon_chase_prob=1.0))
    assert v.num_envs == 6
    v.seed(0)
    obs = v.reset()
    rng = np.random.default_rng(0)
    dead = np.zeros(v.num_envs, dtype=bool)
    n_done = n_resets = n_dead_steps = 0
    for _ in range(120):
        assert obs["observation"].shape == (6, v.observation_space["observation"].shape[0])
        assert obs["observation"].dtype == np.float32 and obs["action_mask"].dtype == np.int8
        assert obs["action_mask"].shape == (6, 5) and (obs["action_mask"][:, STAY] == 1).all()
        actions = np.array([rng.choice(np.flatnonzero(m)) for m in obs["action_mask"]])
        obs, rewards, dones, infos = v.step(actions)
        assert rewards.shape == (6,) and dones.shape == (6,) and dones.dtype == bool and len(infos) == 6
        for k in range(6):
            if dead[k]:
                assert not dones[k] and rewards[k] == 0.0 and infos[k] == {"dead_slot": True}
            if dones[k]:
                n_done += 1
                assert v.observation_space.contains(infos[k]["terminal_observation"])
                assert set(infos[k]["episode"]) == {"r", "l", "t"}
                assert "episode_stats" in infos[k] and infos[k]["invalid_action"] is False
        for e, herd in enumerate(v.envs):
            slots = list(range(e * 3, e * 3 + 3))
            if herd.step_count == 0:  # every agent of env e left in this step: it auto-reset, all slots live again
                n_resets += 1
                assert len(herd.agents) == 3 and (dones[slots] | dead[slots]).all()
                dead[slots] = False
            else:
                dead[slots] |= dones[slots]
                assert len(herd.agents) == 3 - dead[slots].sum()
        for k in np.flatnonzero(dead):
            n_dead_steps += 1
            np.testing.assert_array_equal(obs["action_mask"][k], [1, 0, 0, 0, 0])
            assert not obs["observation"][k].any()
        assert v.observation_space.contains({key: val[0] for key, val in obs.items()})
    assert n_done > 6 and n_resets >= 2 and n_dead_steps > 0


def test_herd_vec_env_seeding_and_helpers():
    def first_obs(seed: int) -> np.ndarray:
        v = PettingZooVecEnv(parallel_env, n_envs=2)
        v.seed(seed)
        return v.reset()["observation"]

    np.testing.assert_array_equal(first_obs(3), first_obs(3))
    assert not np.array_equal(first_obs(3), first_obs(4))
    v = PettingZooVecEnv(parallel_env, 2, dict(render_mode="rgb_array", size=6))
    v.reset()
    assert v.get_attr("size") == [6] * 8
    assert v.get_attr("n_pandas", indices=[0, 7]) == [4, 4]
    v.set_attr("dragon_chase_prob", 0.5, indices=[4])
    assert v.envs[1].dragon_chase_prob == 0.5 and v.envs[0].dragon_chase_prob == 0.75
    assert v.env_method("action_mask", "panda_0", indices=[0])[0].shape == (5,)
    assert v.env_is_wrapped(gym.Wrapper) == [False] * 8
    assert v.render().dtype == np.uint8
    assert v.slot(1, "panda_2") == 6
    v.close()


def test_ppo_trains_on_herd_vec_env():
    from stable_baselines3 import PPO

    from maskrl.policies import MaskedActorCriticPolicy

    v = PettingZooVecEnv(parallel_env, 1, dict(max_steps=20, dragon_chase_prob=1.0))
    model = PPO(MaskedActorCriticPolicy, v, n_steps=32, batch_size=64, n_epochs=2, seed=0, device="cpu")
    model.learn(512)
    assert model.num_timesteps >= 512
    assert len(model.ep_info_buffer) > 0
    obs = v.reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert all(obs["action_mask"][k, a] == 1 for k, a in enumerate(actions))


def test_ppo_trains_on_centralised_view_with_flat_mask():
    from stable_baselines3 import PPO

    from maskrl.policies import MaskedMultiInputPolicy

    g = PandaHerdGridEnv(flat_action_mask=True, max_steps=20)
    model = PPO(MaskedMultiInputPolicy, g, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    obs, _ = g.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert g.action_masks().reshape(g.n_cells, 5)[np.arange(g.n_cells), action].all()
