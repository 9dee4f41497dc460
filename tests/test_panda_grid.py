"""Tests of the panda grid world (maskrl/PandaGrid-v0): line of sight, no leaks, masks, dynamics, layouts.

The env contract (checkers, kwargs errors, out-of-space actions, masks, invalid actions, determinism) is checked for
every registered env in test_env_contract.py.
"""

from fractions import Fraction

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import maskrl  # noqa: F401  (registers maskrl/PandaGrid-v0)
from maskrl.envs import panda_grid
from maskrl.envs.panda_grid import (
    DOWN,
    DRAGON,
    ENTITY_FEATURES,
    LEFT,
    PANDA,
    RIGHT,
    SCORPION,
    STAY,
    TREE,
    UP,
    WATERMELON,
    PandaGridEnv,
    line_of_sight,
    scripted_action,
)

STATS_KEYS = {"watermelons_eaten", "caught", "steps", "invalid_actions", "hidden_fraction", "dragon_sight_fraction"}
TYPE = {name: ENTITY_FEATURES.index(f"is_{name}") for name in ("panda", "watermelon", "scorpion", "dragon", "tree")}

# The seed scene: the panda (row 2, col 0) faces a wall of three trees; behind it the scorpion and a watermelon are
# hidden. The dragon (row 6, col 0) and the other watermelon see the panda over open ground.
SEED_SCENE = [
    ".W......",
    "..T.....",
    "P.T...SW",
    "..T.....",
    "........",
    "........",
    "D.......",
    "........",
]

# Both creatures boxed into corners by trees: they can never move, and they see nothing at distance >= 2.
BOXED = [
    "ST......",
    "T.......",
    "........",
    "...P.W..",
    "..W.....",
    "........",
    ".......T",
    "......TD",
]


def _cell(env: PandaGridEnv, cell: int) -> tuple[int, int]:
    return divmod(cell, env.size)


def _seen(env: PandaGridEnv) -> np.ndarray:
    """Bool ``(size, size)``: the cells the panda currently sees."""
    return env._vis[env._panda].reshape(env.size, env.size)


def _random_valid(env: PandaGridEnv, rng: np.random.Generator) -> int:
    return int(rng.choice(np.flatnonzero(env.action_masks())))


def _bfs(env: PandaGridEnv, target: int) -> dict[int, int]:
    """Shortest-path distances to ``target`` around trees, computed independently of the env's own BFS."""
    s = env.size
    trees = set(env._world.trees)
    dist = {target: 0}
    queue = [target]
    for cell in queue:
        r, c = divmod(cell, s)
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            nr, nc = r + dr, c + dc
            nxt = nr * s + nc
            if 0 <= nr < s and 0 <= nc < s and nxt not in trees and nxt not in dist:
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    return dist


def _check_obs(env: PandaGridEnv, obs: dict[str, np.ndarray]) -> None:
    """Invariants of every observation: in the space, panda in slot 0, nothing about hidden or padding slots."""
    assert env.observation_space.contains(obs)
    ent, vis = obs["entities"], obs["visibility"]
    assert vis.dtype == np.int8 and obs["action_mask"].dtype == np.int8
    assert vis[0] == 1 and ent[0, TYPE["panda"]] == 1.0 and np.all(ent[0, 2:4] == 0.0)
    hidden = ent[vis == 0]
    assert hidden.tobytes() == bytes(hidden.nbytes)  # exactly +0.0: not even a sign bit survives
    assert np.all(ent[vis == 1, 4:].sum(axis=1) == 1.0)
    np.testing.assert_array_equal(obs["action_mask"], env.action_masks().astype(np.int8))
    seen = _seen(env).ravel()
    n_present = env.tree_slot + len(env._world.trees)
    np.testing.assert_array_equal(vis[:n_present], seen[env._ent[:n_present]])
    assert not vis[n_present:].any()


# ---------------------------------------------------------------------------- construction and layouts
def test_make_after_import_maskrl_passes_kwargs() -> None:
    env = gym.make("maskrl/PandaGrid-v0", size=6, n_watermelons=3, max_trees=5, render_mode="ansi")
    assert isinstance(env.unwrapped, PandaGridEnv)
    assert env.action_space == gym.spaces.Discrete(5)
    obs, info = env.reset(seed=0)
    assert set(obs) == {"entities", "visibility", "action_mask"} and info == {"invalid_action": False}
    assert obs["entities"].shape == (1 + 3 + 2 + 5, len(ENTITY_FEATURES)) == (11, 9)
    assert env.unwrapped.entity_slots["trees"] == slice(6, 11)
    assert env.observation_space.contains(obs)
    default = PandaGridEnv()
    assert (default.size, default.max_trees, default.min_trees, default.max_entities) == (8, 10, 5, 15)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (SEED_SCENE[:-1], "layout must be 8 strings of 8 characters"),
        ([*SEED_SCENE[:-1], "......."], "layout must be 8 strings of 8 characters"),
        ([*SEED_SCENE[:-1], ".......x"], "layout has unknown character 'x' at row 7, column 7"),
        ([*SEED_SCENE[:-1], ".......P"], "layout needs exactly one P, got 2"),
        ([*SEED_SCENE[:-1], ".......W"], "layout needs exactly n_watermelons=2 W, got 3"),
        ([*SEED_SCENE[:-2], ".......", "........"], "layout must be 8 strings"),
        (["TWTTTTTT", "TTTT....", *SEED_SCENE[2:]], "layout has 13 trees, more than max_trees=10"),
    ],
)
def test_invalid_layouts_raise_clear_value_errors(layout: list[str], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message):
        PandaGridEnv().reset(options={"layout": layout})


def test_layout_may_be_one_string() -> None:
    env = PandaGridEnv()
    a, _ = env.reset(seed=3, options={"layout": "\n".join(SEED_SCENE)})
    b, _ = env.reset(seed=3, options={"layout": SEED_SCENE})
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert env._panda == 2 * 8 and env._world.trees == [10, 18, 26]


def test_largest_size_and_tree_count() -> None:
    env = gym.make("maskrl/PandaGrid-v0", size=16, max_trees=64, min_trees=64, max_steps=5)
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert int(obs["entities"][:, -1].sum()) <= 64


# ---------------------------------------------------------------------------- line of sight
def _oracle(dr: int, dc: int) -> tuple[set[tuple[int, int]], set[frozenset]]:
    """Exact geometry with fractions: cells whose open square the segment (0,0)-(dr,dc) meets, and corners hit."""
    cells, corners = set(), set()
    half = Fraction(1, 2)
    for r in range(min(0, dr), max(0, dr) + 1):
        for c in range(min(0, dc), max(0, dc) + 1):
            lo, hi = Fraction(0), Fraction(1)
            for d, k in ((dr, r), (dc, c)):
                if d == 0:
                    if abs(k) >= half:
                        lo, hi = Fraction(1), Fraction(0)
                    continue
                a, b = sorted(((k - half) / d, (k + half) / d))
                lo, hi = max(lo, a), min(hi, b)
            if lo < hi and (r, c) not in ((0, 0), (dr, dc)):
                cells.add((r, c))
            # Corner (r + 1/2, c + 1/2) (any sign): on the segment when both coordinates give the same t.
            for cr in (r - half, r + half):
                for cc in (c - half, c + half):
                    if dr and dc and Fraction(cr, 1) / dr == Fraction(cc, 1) / dc and 0 < cr / dr < 1:
                        corners.add((cr, cc))
    pairs = set()
    for cr, cc in corners:
        around = {(int(cr + sr * half), int(cc + sc * half)) for sr in (-1, 1) for sc in (-1, 1)}
        on_path = {cell for cell in around if cell in cells or cell in ((0, 0), (dr, dc))}
        pairs.add(frozenset(around - on_path))
    return cells, pairs


def test_crossings_match_exact_geometry() -> None:
    for dr in range(-6, 7):
        for dc in range(-6, 7):
            if max(abs(dr), abs(dc)) <= 1:
                continue
            cells, corners = panda_grid._crossings(dr, dc)
            want_cells, want_corners = _oracle(dr, dc)
            assert set(cells) == want_cells, (dr, dc)
            assert {frozenset(pair) for pair in corners} == want_corners, (dr, dc)


def test_line_of_sight_hand_cases() -> None:
    grid = np.zeros((5, 5), dtype=bool)
    assert line_of_sight(grid, (0, 0), (4, 4)) and line_of_sight(grid, (0, 0), (1, 3))
    grid[2, 2] = True  # on the diagonal
    assert not line_of_sight(grid, (0, 0), (4, 4)) and not line_of_sight(grid, (4, 4), (0, 0))
    assert line_of_sight(grid, (0, 0), (2, 2)) and line_of_sight(grid, (2, 2), (0, 0))  # end cells never block
    # (0,0)-(1,3) crosses (0,1) and (1,2) and passes the corner between (0,2) and (1,1).
    for trees, visible in [
        ([(0, 1)], False),
        ([(1, 2)], False),
        ([(1, 1)], True),
        ([(0, 2)], True),
        ([(1, 1), (0, 2)], False),  # a diagonal wall is opaque
        ([(0, 3), (1, 0), (2, 3)], True),
    ]:
        grid = np.zeros((5, 5), dtype=bool)
        for cell in trees:
            grid[cell] = True
        assert line_of_sight(grid, (0, 0), (1, 3)) is visible, trees
        assert line_of_sight(grid, (1, 3), (0, 0)) is visible, trees
    # Neighbours always see each other, even across a diagonal wall.
    grid = np.zeros((5, 5), dtype=bool)
    grid[2, 3] = grid[3, 2] = True
    assert line_of_sight(grid, (2, 2), (3, 3)) and line_of_sight(grid, (3, 3), (2, 2))
    assert not line_of_sight(grid, (1, 1), (4, 4))
    with pytest.raises(ValueError, match="cells must lie on the 5x5 grid"):
        line_of_sight(grid, (0, 0), (5, 0))


def test_line_of_sight_is_symmetric_and_the_env_sight_table_matches_it() -> None:
    rng = np.random.default_rng(0)
    for size in (5, 8, 11):
        env = PandaGridEnv(size=size, min_trees=size * size // 4, max_trees=size * size // 4)
        for seed in range(2):
            env.reset(seed=seed)
            grid = env._world.blocked.reshape(size, size)
            n = size * size
            expected = np.array(
                [[line_of_sight(grid, divmod(p, size), divmod(q, size)) for q in range(n)] for p in range(n)]
            )
            np.testing.assert_array_equal(expected, expected.T)
            np.testing.assert_array_equal(env._vis, expected)
            assert 0.1 < expected.mean() < 0.95  # the trees do hide things, but not everything
    grid = rng.random((9, 9)) < 0.3
    for _ in range(300):
        a, b = tuple(rng.integers(9, size=2)), tuple(rng.integers(9, size=2))
        assert line_of_sight(grid, a, b) == line_of_sight(grid, b, a)


def test_seed_scene_scorpion_hidden_behind_three_trees() -> None:
    env = PandaGridEnv(render_mode="ansi")
    obs, _ = env.reset(seed=0, options={"layout": SEED_SCENE})
    _check_obs(env, obs)
    vis, ent = obs["visibility"], obs["entities"]
    assert env.entity_slots == {
        "panda": slice(0, 1),
        "watermelons": slice(1, 3),
        "scorpion": slice(3, 4),
        "dragon": slice(4, 5),
        "trees": slice(5, 15),
    }
    #                  panda  W(0,1) W(2,7) scorpion dragon 3 trees  7 padding slots
    np.testing.assert_array_equal(vis, [1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    assert not ent[2].any() and not ent[3].any() and not ent[8:].any()
    s7 = 1.0 / 7.0
    np.testing.assert_allclose(ent[0, :4], [0.0, 2 * s7, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(ent[1, :4], [s7, 0.0, s7, -2 * s7], atol=1e-6)
    np.testing.assert_allclose(ent[4, :4], [0.0, 6 * s7, 0.0, 4 * s7], atol=1e-6)
    for slot, row in zip((5, 6, 7), (1, 2, 3), strict=True):
        np.testing.assert_allclose(ent[slot, :4], [2 * s7, row * s7, 2 * s7, (row - 2) * s7], atol=1e-6)
    for slot, kind in ((0, "panda"), (1, "watermelon"), (4, "dragon"), (5, "tree"), (6, "tree"), (7, "tree")):
        onehot = np.zeros(5, dtype=np.float32)
        onehot[TYPE[kind] - 4] = 1.0
        np.testing.assert_array_equal(ent[slot, 4:], onehot)
    # Without the wall the scorpion and the second watermelon are seen.
    open_scene = [row.replace("T", ".") for row in SEED_SCENE]
    open_scene[7] = "TTT....."
    obs, _ = env.reset(seed=0, options={"layout": open_scene})
    assert obs["visibility"][:5].all()
    assert obs["entities"][3, TYPE["scorpion"]] == 1.0
    np.testing.assert_allclose(obs["entities"][3, :4], [6 * s7, 2 * s7, 6 * s7, 0.0], atol=1e-6)


def test_moving_a_hidden_entity_between_hidden_cells_changes_nothing() -> None:
    base = PandaGridEnv()
    # Hidden on the right of the panda (positive dx) ...
    moved = [row for row in SEED_SCENE]
    moved[2] = "P.T.S..W"
    # ... and hidden on its left and above (negative dx, dy): a -0.0 in a hidden row would tell them apart.
    mirror = ["W.......", "....T...", "S...T.P.", "....T...", "........", "........", ".......D", ".W......"]
    mirror_moved = [row for row in mirror]
    mirror_moved[0], mirror_moved[2] = "W.S.....", "....T.P."
    for first, second in ((SEED_SCENE, moved), (mirror, mirror_moved)):
        a, _ = base.reset(seed=5, options={"layout": first})
        _check_obs(base, a)
        b, _ = base.reset(seed=5, options={"layout": second})
        _check_obs(base, b)
        assert a["visibility"][base.scorpion_slot] == 0
        for key in a:
            assert a[key].tobytes() == b[key].tobytes(), key


def test_view_radius_is_euclidean_and_neighbours_are_always_seen() -> None:
    layout = [
        "........",
        "........",
        "...W....",
        "...P....",
        "....S...",
        "....W...",
        "........",
        "...D....",
    ]
    #            radius: W(2,3) d=1, W(5,4) d=sqrt(5), S(4,4) diagonal neighbour, D(7,3) d=4
    for radius, expected in ((None, [1, 1, 1, 1]), (1, [1, 0, 1, 0]), (2, [1, 0, 1, 0]), (2.3, [1, 1, 1, 0])):
        env = PandaGridEnv(view_radius=radius, max_trees=0)
        obs, _ = env.reset(seed=0, options={"layout": layout})
        _check_obs(env, obs)
        np.testing.assert_array_equal(obs["visibility"][1:5], expected, err_msg=str(radius))
        cells = _seen(env)
        assert cells[3, 3] and cells[2, 2] and cells[4, 4] and cells[2, 4]  # self and 8 neighbours
        assert cells.sum() == {None: 64, 1: 9, 2: 13, 2.3: 21}[radius]


# ---------------------------------------------------------------------------- masks
def test_action_mask_forbids_walls_and_trees() -> None:
    layout = ["P.T.....", "T.......", "........", "........", "....W...", "........", ".W.....S", "......TD"]
    env = PandaGridEnv(invalid_action_penalty=-0.25)
    obs, _ = env.reset(seed=0, options={"layout": layout})
    np.testing.assert_array_equal(obs["action_mask"], [1, 0, 0, 0, 1])
    np.testing.assert_array_equal(env.action_masks(), [True, False, False, False, True])
    assert env.action_masks().dtype == bool
    obs, reward, terminated, truncated, info = env.step(RIGHT)
    assert info["invalid_action"] is False and reward == 0.0
    np.testing.assert_array_equal(obs["action_mask"], [1, 0, 1, 1, 0])  # up: wall, right: tree
    for action in (UP, RIGHT):
        before = env._panda
        obs, reward, terminated, truncated, info = env.step(action)
        assert info["invalid_action"] is True and reward == -0.25 and env._panda == before
        assert not (terminated or truncated)
    env.step(DOWN)
    np.testing.assert_array_equal(env.action_masks(), [True, True, True, False, True])
    obs, *_ = env.step(RIGHT)
    np.testing.assert_array_equal(obs["action_mask"], [1, 0, 1, 1, 1])
    assert env._stats["invalid_actions"] == 2


# ---------------------------------------------------------------------------- dynamics
def test_eating_a_watermelon_rewards_and_respawns_it() -> None:
    layout = ["PW......", "........", "........", "........", "........", "........", "T......T", "ST....TD"]
    env = PandaGridEnv(n_watermelons=1)
    spots = set()
    for seed in range(6):
        obs, _ = env.reset(seed=seed, options={"layout": layout})
        obs, reward, terminated, _, info = env.step(RIGHT)
        assert reward == 1.0 and not terminated and not info["invalid_action"]
        w = env._wm[0]
        assert w not in (env._panda, env._dragon, env._scorpion, *env._world.trees) and env._world.region[w]
        spots.add(w)
        row = obs["entities"][1]
        if obs["visibility"][1]:
            r, c = _cell(env, w)
            np.testing.assert_allclose(row[:2], [c / 7, r / 7], atol=1e-6)
    assert len(spots) >= 3  # respawns at random


def test_dragon_chases_the_panda_it_sees_and_catches_it() -> None:
    layout = ["P.......", "........", "........", "........", "....W...", ".W......", "T.......", "ST....D."]
    env = PandaGridEnv(dragon_chase_prob=1.0, caught_penalty=-2.0)
    env.reset(seed=0, options={"layout": layout})
    panda = env._panda
    dist = _bfs(env, panda)
    assert dist[env._dragon] == 13
    for k in range(12):
        assert _seen(env).ravel()[env._dragon]
        _, reward, terminated, _, _ = env.step(STAY)
        assert dist[env._dragon] == 12 - k and not terminated and reward == 0.0
    _, reward, terminated, truncated, info = env.step(STAY)
    assert terminated and not truncated and reward == -2.0 and env._dragon == panda
    assert info["episode_stats"]["caught"] == 1.0 and info["episode_stats"]["dragon_sight_fraction"] == 1.0


def test_hesitant_dragon_stays_and_walking_into_a_creature_is_caught() -> None:
    layout = ["PD......", "........", "........", "........", "....W...", ".W......", "T.......", "ST......"]
    env = PandaGridEnv(dragon_chase_prob=0.0)
    env.reset(seed=0, options={"layout": layout})
    for _ in range(5):
        env.step(STAY)
        assert env._dragon == 1  # sees the panda but never dares
    _, reward, terminated, _, info = env.step(RIGHT)
    assert terminated and reward == -1.0 and info["episode_stats"]["caught"] == 1.0


def test_dragon_steps_along_shortest_paths_around_trees() -> None:
    env = PandaGridEnv(dragon_chase_prob=1.0, min_trees=12, max_trees=16)
    rng = np.random.default_rng(0)
    checked = 0
    for seed in range(40):
        env.reset(seed=seed)
        done = False
        grid = env._world.blocked.reshape(8, 8)
        while not done:
            action = scripted_action(env) if rng.random() < 0.7 else _random_valid(env, rng)
            dragon, scorpion = env._dragon, env._scorpion
            _, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            panda = env._panda
            if panda in (dragon, scorpion) or not line_of_sight(grid, _cell(env, panda), _cell(env, dragon)):
                continue  # walked into a creature (nobody moves after that), or out of the dragon's sight
            dist = _bfs(env, panda)
            r, c = _cell(env, dragon)
            closer = [
                nr * 8 + nc
                for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
                if 0 <= nr < 8 and 0 <= nc < 8 and dist.get(nr * 8 + nc) == dist[dragon] - 1
            ]
            options = [cell for cell in closer if cell != scorpion]
            assert env._dragon in options if options else env._dragon == dragon
            checked += 1
    assert checked > 100


def test_truncation_at_max_steps_with_stats() -> None:
    env = PandaGridEnv(max_steps=7)
    obs, _ = env.reset(seed=0, options={"layout": BOXED})
    # Present non-panda entities: 2 watermelons (seen), 2 creatures (hidden in their boxes), 5 trees: (0,2) and
    # (1,0) seen, (6,7) and (7,6) seen, all in the open: only the boxed creatures are hidden.
    assert obs["visibility"][: env.tree_slot + 4].tolist() == [1, 1, 1, 0, 0, 1, 1, 1, 1]
    for t in range(7):
        obs, reward, terminated, truncated, info = env.step(RIGHT if t % 2 else LEFT)
        assert obs["visibility"][env.scorpion_slot : env.tree_slot].tolist() == [0, 0]
        assert reward == 0.0 and not terminated
        assert truncated == (t == 6) and ("episode_stats" in info) == (t == 6)
    stats = info["episode_stats"]
    assert set(stats) == STATS_KEYS and all(isinstance(v, float) for v in stats.values())
    assert stats["steps"] == 7.0 and stats["caught"] == 0.0 and stats["watermelons_eaten"] == 0.0
    assert stats["invalid_actions"] == 0.0 and stats["dragon_sight_fraction"] == 0.0
    assert stats["hidden_fraction"] == pytest.approx(2 / 8)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(5, 10),
    n_watermelons=st.integers(1, 4),
    tree_frac=st.floats(0.0, 1.0),
    view_radius=st.one_of(st.none(), st.floats(1.0, 6.0)),
    chase=st.floats(0.0, 1.0),
    max_steps=st.integers(1, 60),
    seed=st.integers(0, 2**16),
)
def test_observations_always_in_space(
    size: int, n_watermelons: int, tree_frac: float, view_radius, chase: float, max_steps: int, seed: int
) -> None:
    max_trees = int(tree_frac * (size * size // 4))
    env = PandaGridEnv(
        size=size,
        n_watermelons=n_watermelons,
        max_trees=max_trees,
        view_radius=view_radius,
        dragon_chase_prob=chase,
        max_steps=max_steps,
    )
    rng = np.random.default_rng(seed)
    for episode in range(3):
        obs, _ = env.reset(seed=seed + episode)
        _check_obs(env, obs)
        trees = env._world.trees
        cells = {env._panda, env._dragon, env._scorpion, *env._wm, *trees}
        assert len(cells) == 3 + n_watermelons + len(trees) and env.min_trees <= len(trees) <= max_trees
        assert max(abs(a - b) for a, b in zip(_cell(env, env._panda), _cell(env, env._dragon), strict=True)) >= 2
        steps, terminated, truncated = 0, False, False
        while not (terminated or truncated) and steps <= max_steps:
            action = int(rng.integers(5)) if rng.random() < 0.3 else _random_valid(env, rng)
            obs, _, terminated, truncated, info = env.step(action)
            _check_obs(env, obs)
            steps += 1
        assert steps <= max_steps
        assert truncated == (not terminated and steps == max_steps)
        assert 0.0 <= info["episode_stats"]["hidden_fraction"] <= 1.0
        assert info["episode_stats"]["steps"] == steps


# ---------------------------------------------------------------------------- rendering
def test_ansi_render_marks_hidden_entities() -> None:
    env = PandaGridEnv(render_mode="ansi")
    env.reset(seed=0, options={"layout": SEED_SCENE})
    lines = env.render().split("\n")
    assert len(lines) == 9 and lines[0].startswith("t=0 ")
    grid = lines[1:]
    assert all(len(row) == 8 for row in grid)
    assert grid[2] == "P.T:::sw" and grid[6][0] == "D" and grid[0][1] == "W"
    assert ":" in "".join(grid) and grid[5][0] == "."
    env.step(DOWN)
    text = env.render()
    assert text.startswith("t=1 act=down") and text.split("\n")[4][0] == "P"
    assert PandaGridEnv().render() is None


def test_rgb_render_fixed_shape_shows_what_is_hidden() -> None:
    env = PandaGridEnv(render_mode="rgb_array")
    env.reset(seed=0, options={"layout": SEED_SCENE})
    hidden = env.render()
    assert hidden.dtype == np.uint8 and hidden.shape == (256, 256, 3)
    open_scene = [row.replace("T", ".") for row in SEED_SCENE]
    open_scene[7] = "TTT....."
    env.reset(seed=0, options={"layout": open_scene})
    seen = env.render()
    assert seen.shape == hidden.shape

    def block(img: np.ndarray, r: int, c: int) -> np.ndarray:
        return img[r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32].astype(int)

    scorpion_hidden, scorpion_seen = block(hidden, 2, 6), block(seen, 2, 6)
    assert not np.array_equal(scorpion_hidden, scorpion_seen)
    assert scorpion_hidden.mean() < scorpion_seen.mean()  # greyed on a shaded cell
    assert block(hidden, 2, 4).mean() < block(hidden, 5, 0).mean() - 40  # unseen empty cell vs seen empty cell
    np.testing.assert_array_equal(block(hidden, 2, 0), block(seen, 2, 0))  # the panda looks the same
    for _ in range(10):
        env.step(RIGHT)
        if env._needs_reset:
            break
        assert env.render().shape == (256, 256, 3)


# ---------------------------------------------------------------------------- learnability
def _evaluate(policy, episodes: int = 20) -> tuple[float, float]:
    env = PandaGridEnv()
    rng = np.random.default_rng(0)
    returns, eaten = [], []
    for ep in range(episodes):
        env.reset(seed=1000 + ep)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, info = env.step(policy(env, rng))
            total += reward
            done = terminated or truncated
        returns.append(total)
        eaten.append(info["episode_stats"]["watermelons_eaten"])
    return float(np.mean(returns)), float(np.mean(eaten))


def test_scripted_panda_beats_random() -> None:
    ret_scripted, eaten_scripted = _evaluate(lambda env, rng: scripted_action(env))
    ret_random, eaten_random = _evaluate(_random_valid)
    assert ret_scripted > ret_random + 4.0
    assert eaten_scripted > 3.0 * max(eaten_random, 1.0)


def test_module_exports_constants() -> None:
    assert (STAY, UP, DOWN, LEFT, RIGHT) == (0, 1, 2, 3, 4)
    assert (PANDA, WATERMELON, SCORPION, DRAGON, TREE) == (0, 1, 2, 3, 4)
    assert ENTITY_FEATURES[:4] == ("x", "y", "dx", "dy") and len(ENTITY_FEATURES) == 9
    assert set(panda_grid.__all__) >= {"PandaGridEnv", "scripted_action", "line_of_sight", "ENTITY_FEATURES"}
