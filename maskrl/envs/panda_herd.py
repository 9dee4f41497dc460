"""A herd of pandas eats watermelons on a grid while dragons hunt them; caught pandas leave the game.

.. list-table::
   :header-rows: 0

   * - Import
     - ``from maskrl.envs.panda_herd import env, parallel_env, raw_env, PandaHerdGridEnv``;
       ``gymnasium.make("maskrl/PandaHerd-v0")`` (centralised view) after ``import maskrl``;
       ``pettingzoo.make("parallel", "maskrl/panda_herd_v0")`` / ``pettingzoo.make("aec", "maskrl/panda_herd_v0")``
       after importing this module
   * - Actions
     - ``Discrete(5)`` per panda (stay, up, down, left, right)
   * - Parallel API
     - Yes (:class:`PandaHerdParallelEnv`, a PettingZoo ``ParallelEnv``)
   * - Agents
     - ``agents = ["panda_0", ..., f"panda_{n_pandas - 1}"]`` (4 by default); caught pandas leave ``env.agents``
   * - Action shape
     - ``(1,)``
   * - Action values
     - ``Discrete(5)``
   * - Observation shape
     - ``{"observation": (4 * view_size**2 + 2,), "action_mask": (5,)}`` (102 with the defaults)
   * - Observation values
     - ``observation`` in [0, 1] (float32), ``action_mask`` int8 0/1

Description
-----------
A ``size`` x ``size`` grid holds ``n_pandas`` pandas (the agents), ``n_watermelons`` watermelons, ``n_dragons``
scripted dragons and ``n_trees`` trees (a new layout every episode). Cells are ``(row, col)``, row 0 at the top.
The grid itself (moves, trees, layouts, shortest paths, rendering) is :mod:`maskrl.envs.grid_world`, shared with
PandaGrid.

Trees and the grid's edge block movement (of pandas and dragons). Pandas may share a cell; dragons may not share a
cell with each other. Each step, every dragon (in order) looks for the nearest panda (shortest path around the
trees, ties broken at random) and, with probability ``dragon_chase_prob``, steps one cell along a shortest path to
it (ties broken at random; never onto another dragon); otherwise it stays. A panda is *caught* when it shares a
cell with a dragon, by walking into one or by one walking into it. Caught pandas are removed from the grid and
from ``env.agents`` (PettingZoo's convention for agents that leave: their last step reports
``terminations[agent] = True``, after which they get no observations, rewards or actions). The number of agents
therefore shrinks during an episode. The episode ends when every panda has been caught or, for the remaining
pandas (``truncations[agent] = True``), after ``max_steps`` steps.

Observation
-----------
Each panda's ``observation`` is a flat float32 vector: an egocentric ``view_size`` x ``view_size`` window centred
on the panda with ``4`` channels (``VIEW_CHANNELS``, channel-major: ``blocked`` = tree or off the grid,
``watermelon``, ``other_panda``, ``dragon``; 0/1 each), flattened as ``(channel, row, col)``, followed by the
panda's own ``row / (size - 1)`` and ``col / (size - 1)``. ``action_mask`` is int8 (5,), PettingZoo's convention:
``STAY`` is always valid, a move is valid when the target cell is on the grid and holds no tree (other pandas,
dragons and watermelons do not block; walking into a dragon is legal and gets the panda caught).

Actions
-------
======  ===========  ==================================================
Action  Name         Valid when
======  ===========  ==================================================
0       ``STAY``     always
1       ``UP``       the cell above (row - 1) is on the grid, no tree
2       ``DOWN``     the cell below (row + 1) is on the grid, no tree
3       ``LEFT``     the cell to the left is on the grid, no tree
4       ``RIGHT``    the cell to the right is on the grid, no tree
======  ===========  ==================================================

An invalid action is executed as ``STAY``; ``infos[agent]["invalid_action"]`` is True for it and
``invalid_action_penalty`` is added to that panda's reward. A missing or ``None`` action for a live panda is
``STAY`` (not counted as invalid); actions for agents not in ``env.agents`` are ignored. An action outside
``Discrete(5)`` raises ``ValueError``.

Rewards
-------
Individual by default: +1 to the panda that eats a watermelon (it moves onto it; the watermelon respawns at once
on a random free cell reachable by the herd), ``caught_penalty`` (-1) to the panda that is caught, plus
``invalid_action_penalty`` for an invalid action. When several pandas land on the same watermelon in one step,
the first in agent order eats it. With ``shared_reward=True`` every panda that acted in a step receives the team
reward (the sum of all the pandas' individual rewards of that step) instead. The centralised view
:class:`PandaHerdGridEnv` always uses the team reward.

Step order
----------
All live pandas move at once; pandas that walked onto a dragon are caught; the others eat watermelons (agent
order); then each dragon moves, and pandas that a dragon lands on are caught.

Infos
-----
``infos[agent]`` holds ``invalid_action`` (bool) every step (False at reset). In the step where a panda leaves
(caught, or truncated at ``max_steps``) it also holds ``episode_stats``, a flat dict of floats for that panda:
``watermelons_eaten``, ``caught`` (0/1), ``steps`` (steps it took part in), ``invalid_actions`` and ``return``.

Layouts
-------
Random layouts: the trees first; the pandas (on distinct cells), the dragons and the watermelons are then placed
on free cells of the largest tree-free connected region, dragons at Chebyshev distance >= 2 from every panda.
``reset(options={"layout": rows})`` builds a hand-made layout: ``size`` strings of ``size`` characters (or one
string of such lines), ``P`` panda (exactly ``n_pandas``, numbered in row-major order), ``D`` dragon (exactly
``n_dragons``), ``W`` watermelon (exactly ``n_watermelons``), ``T`` tree (any number), ``.`` empty. Watermelons
respawn in the tree-free region connected to the pandas. The seed still drives the dynamics.

Arguments
---------
``n_pandas=4`` (1-16), ``size=8`` (5-16), ``n_dragons=2`` (1-4), ``n_watermelons=3`` (1-8), ``n_trees=None``
(0 to ``size**2 // 4``; ``None``: ``size**2 // 8``, 8 at size 8), ``view_size=5`` (odd, 3-15),
``dragon_chase_prob=0.75`` (0-1), ``max_steps=100`` (>= 1), ``caught_penalty=-1.0``,
``invalid_action_penalty=0.0``, ``shared_reward=False``, ``render_mode=None`` (``"ansi"``: a header line and one
text row per grid row, ``0-9`` a panda by index (``P`` from index 10, ``*`` several pandas), ``D`` dragon, ``W``
watermelon, ``T`` tree, ``.`` empty; ``"rgb_array"``: a uint8 picture of 32 x 32 pixels per cell).

``reset(seed=...)`` fully determines the episode: the same seed and actions give the same trajectory.

Centralised view
----------------
:class:`PandaHerdGridEnv` (``maskrl/PandaHerd-v0``) is a single-agent gymnasium view of the same game for a
centralised controller; see its docstring. It reads the herd through :class:`PandaHerdParallelEnv`'s public
interface, which other centralised views can use too: :meth:`~PandaHerdParallelEnv.panda_cells`,
:meth:`~PandaHerdParallelEnv.action_mask`, :meth:`~PandaHerdParallelEnv.grid_channels` and the episode counters
``step_count``, ``watermelons_eaten`` and ``pandas_caught``.

Version history
---------------
* v0: initial version.
"""

import functools
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv
from pettingzoo.utils import wrappers
from pettingzoo.utils.conversions import parallel_to_aec

from maskrl.checks import check_bool, check_int, check_number
from maskrl.envs.grid_world import (
    ACTION_NAMES,
    DOWN,
    DRAGON,
    LEFT,
    N_ACTIONS,
    PANDA,
    RIGHT,
    STAY,
    TREE,
    UP,
    WATERMELON,
    GridWorld,
    chebyshev,
    parse_layout,
    random_trees,
    render_rgb,
    render_text,
)
from maskrl.masks import ACTION_MASK_KEY, AGENT_MASK_KEY, GRID_KEY

__all__ = [
    "ACTION_NAMES",
    "DOWN",
    "LEFT",
    "N_ACTIONS",
    "PETTINGZOO_ID",
    "RIGHT",
    "STAY",
    "UP",
    "VIEW_CHANNELS",
    "PandaHerdGridEnv",
    "PandaHerdParallelEnv",
    "env",
    "parallel_env",
    "raw_env",
]

# Actions (STAY .. RIGHT) are the grid world's (maskrl.envs.grid_world).
VIEW_CHANNELS = ("blocked", "watermelon", "other_panda", "dragon")
GRID_CHANNELS = ("tree", "watermelon", "panda", "dragon")
#: id in PettingZoo's registries ("aec" and "parallel")
PETTINGZOO_ID = "maskrl/panda_herd_v0"

_WATERMELON_REWARD = 1.0
_PLACEMENT_ATTEMPTS = 100


class PandaHerdParallelEnv(ParallelEnv):
    """PettingZoo ``ParallelEnv`` of a panda herd hunted by dragons; see the module docstring.

    :param n_pandas: number of pandas (agents), 1-16.
    :param size: side of the square grid (5-16).
    :param n_dragons: number of dragons (1-4).
    :param n_watermelons: watermelons on the grid at any time (1-8).
    :param n_trees: trees per episode (0 to ``size**2 // 4``); ``None``: ``size**2 // 8``.
    :param view_size: side of each panda's egocentric view (odd, 3-15).
    :param dragon_chase_prob: probability that a dragon steps toward the nearest panda (0-1).
    :param max_steps: truncation horizon (>= 1).
    :param caught_penalty: reward of the step in which a panda is caught.
    :param invalid_action_penalty: added to a panda's reward when its action was invalid.
    :param shared_reward: give every panda the team reward (sum over pandas) instead of its own.
    :param render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.
    """

    metadata = {
        "name": "panda_herd_v0",
        "render_modes": ["ansi", "rgb_array"],
        "is_parallelizable": True,
        "render_fps": 4,
    }

    def __init__(
        self,
        n_pandas: int = 4,
        size: int = 8,
        n_dragons: int = 2,
        n_watermelons: int = 3,
        n_trees: int | None = None,
        view_size: int = 5,
        dragon_chase_prob: float = 0.75,
        max_steps: int = 100,
        caught_penalty: float = -1.0,
        invalid_action_penalty: float = 0.0,
        shared_reward: bool = False,
        render_mode: str | None = None,
    ) -> None:
        check_int("n_pandas", n_pandas, 1, 16)
        check_int("size", size, 5, 16)
        check_int("n_dragons", n_dragons, 1, 4)
        check_int("n_watermelons", n_watermelons, 1, 8)
        if n_trees is None:
            n_trees = size * size // 8
        check_int("n_trees", n_trees, 0, size * size // 4)
        check_int("view_size", view_size, 3, 15)
        if view_size % 2 == 0:
            raise ValueError(f"view_size must be odd, got {view_size}")
        check_number("dragon_chase_prob", dragon_chase_prob)
        if not 0.0 <= dragon_chase_prob <= 1.0:
            raise ValueError(f"dragon_chase_prob must be in [0, 1], got {dragon_chase_prob}")
        check_int("max_steps", max_steps, 1, None)
        check_number("caught_penalty", caught_penalty)
        check_number("invalid_action_penalty", invalid_action_penalty)
        check_bool("shared_reward", shared_reward)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        if n_pandas + n_dragons + n_watermelons + n_trees > size * size // 2:
            raise ValueError(
                f"too crowded: n_pandas + n_dragons + n_watermelons + n_trees must be <= size**2 // 2 = "
                f"{size * size // 2}, got {n_pandas + n_dragons + n_watermelons + n_trees}"
            )

        self.n_pandas = n_pandas
        self.size = size
        self.n_dragons = n_dragons
        self.n_watermelons = n_watermelons
        self.n_trees = n_trees
        self.view_size = view_size
        self.dragon_chase_prob = float(dragon_chase_prob)
        self.max_steps = max_steps
        self.caught_penalty = float(caught_penalty)
        self.invalid_action_penalty = float(invalid_action_penalty)
        self.shared_reward = bool(shared_reward)
        self.render_mode = render_mode

        self.n_cells = size * size
        self.possible_agents = [f"panda_{i}" for i in range(n_pandas)]
        self.agent_name_mapping = {agent: i for i, agent in enumerate(self.possible_agents)}
        self.agents: list[str] = []
        self.obs_size = len(VIEW_CHANNELS) * view_size * view_size + 2
        self.state_space = spaces.Box(0.0, 1.0, (len(GRID_CHANNELS), size, size), dtype=np.float32)
        self.np_random, _ = seeding.np_random(None)
        self._init_state()

    # ------------------------------------------------------------------ spaces
    # One space object per agent (PettingZoo's api test checks identity; action-space seeding relies on it).
    @functools.cache  # noqa: B019 - the env lives as long as its cache entries
    def observation_space(self, agent: str) -> spaces.Dict:
        """``Dict({"observation": Box(0, 1, (obs_size,), float32), "action_mask": Box(0, 1, (5,), int8)})``."""
        if agent not in self.agent_name_mapping:
            raise KeyError(f"unknown agent {agent!r}; possible agents are {self.possible_agents}")
        return spaces.Dict(
            {
                "observation": spaces.Box(0.0, 1.0, shape=(self.obs_size,), dtype=np.float32),
                ACTION_MASK_KEY: spaces.Box(0, 1, shape=(N_ACTIONS,), dtype=np.int8),
            }
        )

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Discrete:
        """``Discrete(5)``: stay, up, down, left, right."""
        if agent not in self.agent_name_mapping:
            raise KeyError(f"unknown agent {agent!r}; possible agents are {self.possible_agents}")
        return spaces.Discrete(N_ACTIONS)

    # ------------------------------------------------------------------ state
    def _init_state(self) -> None:
        self._t = 0
        self._pos = [-1] * self.n_pandas  # flat cell of every panda, -1 once caught
        self._last_pos = [0] * self.n_pandas  # where it was last (for the final observation of a caught panda)
        self._alive = [False] * self.n_pandas
        self._dragons: list[int] = []
        self._wm: list[int] = []
        self._world = GridWorld(self.size)  # the trees, the moves around them, the herd's region, distances
        self._stats = [dict.fromkeys(("watermelons_eaten", "caught", "steps", "invalid_actions", "return"), 0.0)]
        self._stats = [dict(self._stats[0]) for _ in range(self.n_pandas)]
        self._last_rewards: dict[str, float] = {}
        self._team_return = 0.0
        self._caught_total = 0
        self._eaten_total = 0
        self._invalid_total = 0

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
        """Start a new episode on a random layout or on ``options["layout"]``; see the module docstring."""
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        self._init_state()
        layout = (options or {}).get("layout")
        if layout is not None:
            self._load_layout(layout)
        else:
            self._random_layout()
        self._last_pos = list(self._pos)
        self.agents = self.possible_agents[:]
        self._alive = [True] * self.n_pandas
        observations = {agent: self._observe(i) for i, agent in enumerate(self.agents)}
        return observations, {agent: {"invalid_action": False} for agent in self.agents}

    def _random_layout(self) -> None:
        rng, s = self.np_random, self.size
        need = self.n_pandas + self.n_dragons + self.n_watermelons
        for _ in range(_PLACEMENT_ATTEMPTS):
            trees, region = random_trees(rng, s, self.n_trees)
            if len(region) < need:
                continue
            pandas = [region[i] for i in rng.choice(len(region), size=self.n_pandas, replace=False)]
            far = [c for c in region if all(chebyshev(c, p, s) >= 2 for p in pandas)]
            if len(far) < self.n_dragons:
                continue
            dragons = [far[i] for i in rng.choice(len(far), size=self.n_dragons, replace=False)]
            rest = [c for c in region if c not in pandas and c not in dragons]
            wm = [rest[i] for i in rng.choice(len(rest), size=self.n_watermelons, replace=False)]
            self._pos, self._dragons, self._wm = pandas, dragons, wm
            self._world.plant(trees, reachable_from=pandas)
            return
        raise RuntimeError("could not place the entities on a random layout; lower n_trees or n_pandas")

    def _load_layout(self, layout: str | Sequence[str]) -> None:
        exact = {
            ch: (want, f"{name}={want}")
            for ch, want, name in (
                ("P", self.n_pandas, "n_pandas"),
                ("D", self.n_dragons, "n_dragons"),
                ("W", self.n_watermelons, "n_watermelons"),
            )
        }
        found = parse_layout(layout, self.size, "PDWT", exact)
        self._pos, self._dragons, self._wm = found["P"], found["D"], found["W"]
        self._world.plant(found["T"], reachable_from=self._pos)

    # ------------------------------------------------------------------ step
    def step(
        self, actions: dict[str, Any]
    ) -> tuple[
        dict[str, dict[str, np.ndarray]],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        """Advance by one step: every live panda acts, then the dragons; see the module docstring."""
        if not self.agents:
            raise RuntimeError("PandaHerdParallelEnv.step() called with no live agents; call reset()")
        acting = [self.agent_name_mapping[agent] for agent in self.agents]
        rewards = dict.fromkeys(acting, 0.0)
        invalid = dict.fromkeys(acting, False)
        for i in acting:
            a = actions.get(self.possible_agents[i]) if actions else None
            if a is None:
                continue
            a = int(a)
            if not 0 <= a < N_ACTIONS:
                raise ValueError(f"action of {self.possible_agents[i]} must be in [0, {N_ACTIONS}), got {a!r}")
            if a == STAY:
                continue
            nxt = self._world.neighbours[self._pos[i]][a - 1]
            if nxt < 0:
                invalid[i] = True
                rewards[i] += self.invalid_action_penalty
            else:
                self._pos[i] = nxt
        caught = {i for i in acting if self._pos[i] in self._dragons}
        for i in acting:
            if i in caught:
                continue
            p = self._pos[i]
            if p in self._wm:
                rewards[i] += _WATERMELON_REWARD
                self._stats[i]["watermelons_eaten"] += 1
                self._eaten_total += 1
                self._respawn(self._wm.index(p))
        alive_cells = [self._pos[i] for i in acting if i not in caught]
        if alive_cells:
            for k in range(self.n_dragons):
                self._move_dragon(k, alive_cells)
        caught |= {i for i in acting if self._pos[i] in self._dragons}
        for i in caught:
            rewards[i] += self.caught_penalty
            self._last_pos[i] = self._pos[i]
            self._pos[i] = -1
            self._alive[i] = False
        self._caught_total += len(caught)
        self._t += 1
        truncate = self._t >= self.max_steps
        team = sum(rewards.values())
        self._team_return += team
        if self.shared_reward:
            rewards = dict.fromkeys(acting, team)

        obs, rew, term, trunc, infos = {}, {}, {}, {}, {}
        for i in acting:
            agent = self.possible_agents[i]
            st = self._stats[i]
            st["steps"] += 1
            st["invalid_actions"] += invalid[i]
            st["return"] += rewards[i]
            self._invalid_total += invalid[i]
            if i not in caught:
                self._last_pos[i] = self._pos[i]
            obs[agent] = self._observe(i)
            rew[agent] = float(rewards[i])
            term[agent] = i in caught
            trunc[agent] = truncate and i not in caught
            info: dict[str, Any] = {"invalid_action": bool(invalid[i])}
            if term[agent] or trunc[agent]:
                st["caught"] = float(i in caught)
                info["episode_stats"] = {k: float(v) for k, v in st.items()}
            infos[agent] = info
        self.agents = [agent for agent in self.agents if not (term[agent] or trunc[agent])]
        self._last_rewards = rew
        return obs, rew, term, trunc, infos

    def _respawn(self, k: int) -> None:
        """Watermelon ``k`` (just eaten) reappears on a random free cell of the herd's region."""
        free = self._world.free_cells(set(self._wm) | set(self._dragons) | {p for p in self._pos if p >= 0})
        if free:  # otherwise (a tiny hand-made region) it stays where it was eaten
            self._wm[k] = free[int(self.np_random.integers(len(free)))]

    def _move_dragon(self, k: int, panda_cells: list[int]) -> None:
        rng = self.np_random
        d = self._dragons[k]
        if rng.random() >= self.dragon_chase_prob:
            return
        dist = self._world.distances(d)
        reachable = sorted({p for p in panda_cells if dist[p] > 0})
        if not reachable:
            return
        best = min(dist[p] for p in reachable)
        nearest = [p for p in reachable if dist[p] == best]
        target = nearest[int(rng.integers(len(nearest)))] if len(nearest) > 1 else nearest[0]
        to_target = self._world.distances(target)
        others = set(self._dragons[:k] + self._dragons[k + 1 :])
        nbr = self._world.neighbours[d]
        options = [c for c in nbr if c >= 0 and to_target[c] == to_target[d] - 1 and c not in others]
        if options:
            self._dragons[k] = options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]

    # ------------------------------------------------------------------ observations
    def action_mask(self, agent: str) -> np.ndarray:
        """int8 (5,) validity of ``agent``'s actions in the current state (the same as in its observation)."""
        i = self.agent_name_mapping[agent]
        return self._world.move_mask(self._pos[i] if self._pos[i] >= 0 else self._last_pos[i])

    # ------------------------------------------------------------------ the herd, for centralised views
    def panda_cells(self) -> list[int]:
        """Flat cell (``row * size + col``) of every possible agent's panda, in ``possible_agents`` order; -1 once
        caught. Pandas truncated at ``max_steps`` keep their cell."""
        return list(self._pos)

    @property
    def step_count(self) -> int:
        """Steps taken since the last reset."""
        return self._t

    @property
    def watermelons_eaten(self) -> int:
        """Watermelons eaten by the whole herd since the last reset."""
        return self._eaten_total

    @property
    def pandas_caught(self) -> int:
        """Pandas caught since the last reset."""
        return self._caught_total

    def _observe(self, i: int) -> dict[str, np.ndarray]:
        s, k = self.size, self.view_size
        h = k // 2
        cell = self._pos[i] if self._pos[i] >= 0 else self._last_pos[i]
        r, c = divmod(cell, s)
        view = np.zeros((len(VIEW_CHANNELS), k, k), dtype=np.float32)
        view[0] = 1.0  # off the grid is blocked
        r0, r1, c0, c1 = max(0, r - h), min(s, r + h + 1), max(0, c - h), min(s, c + h + 1)
        win = (slice(r0 - r + h, r1 - r + h), slice(c0 - c + h, c1 - c + h))
        view[0][win] = self._world.blocked.reshape(s, s)[r0:r1, c0:c1]
        layers = np.zeros((3, self.n_cells), dtype=np.float32)
        layers[0, self._wm] = 1.0
        layers[1, [p for j, p in enumerate(self._pos) if p >= 0 and j != i]] = 1.0
        layers[2, self._dragons] = 1.0
        view[1:][(slice(None), *win)] = layers.reshape(3, s, s)[:, r0:r1, c0:c1]
        pos = np.array([r, c], dtype=np.float32) / (s - 1)
        return {"observation": np.concatenate([view.ravel(), pos]), ACTION_MASK_KEY: self._world.move_mask(cell)}

    def grid_channels(self) -> np.ndarray:
        """float32 ``(4, size, size)`` global picture, channels ``GRID_CHANNELS`` (tree, watermelon, panda, dragon)."""
        g = np.zeros((len(GRID_CHANNELS), self.n_cells), dtype=np.float32)
        g[0, self._world.trees] = 1.0
        g[1, self._wm] = 1.0
        g[2, [p for p in self._pos if p >= 0]] = 1.0
        g[3, self._dragons] = 1.0
        return g.reshape(len(GRID_CHANNELS), self.size, self.size)

    def state(self) -> np.ndarray:
        """Global state for centralised critics: :meth:`grid_channels` (float32 ``(4, size, size)``)."""
        return self.grid_channels()

    # ------------------------------------------------------------------ rendering
    def render(self) -> str | np.ndarray | None:
        """Render the current state: a text block (``"ansi"``) or a uint8 (H, W, 3) image (``"rgb_array"``)."""
        if self.render_mode == "ansi":
            return self._render_ansi()
        if self.render_mode == "rgb_array":
            return self._render_rgb()
        return None

    def _render_ansi(self) -> str:
        cells = ["."] * self.n_cells
        for c in self._world.trees:
            cells[c] = "T"
        for c in self._wm:
            cells[c] = "W"
        for i, p in enumerate(self._pos):
            if p >= 0:
                cells[p] = "*" if cells[p] in "0123456789P*" else (str(i) if i < 10 else "P")
        for c in self._dragons:
            cells[c] = "D"
        header = (
            f"t={self._t} alive={len(self.agents)}/{self.n_pandas} eaten={self._eaten_total} "
            f"caught={self._caught_total} team_return={self._team_return:+.2f}"
        )
        return render_text(header, cells, self.size)

    def _render_rgb(self) -> np.ndarray:
        occupants = [(c, TREE) for c in self._world.trees] + [(c, WATERMELON) for c in self._wm]
        occupants += [(p, PANDA) for p in self._pos if p >= 0] + [(c, DRAGON) for c in self._dragons]
        return render_rgb(self.size, occupants)

    def close(self) -> None:
        """Nothing to release."""


def parallel_env(**kwargs: Any) -> PandaHerdParallelEnv:
    """The herd as a PettingZoo ``ParallelEnv``; ``kwargs`` as in :class:`PandaHerdParallelEnv`."""
    return PandaHerdParallelEnv(**kwargs)


def raw_env(**kwargs: Any) -> Any:
    """The herd as a PettingZoo ``AECEnv`` (``parallel_to_aec``), without the extra wrappers of :func:`env`."""
    return parallel_to_aec(parallel_env(**kwargs))


def env(**kwargs: Any) -> Any:
    """The herd as a PettingZoo ``AECEnv`` with PettingZoo's usual wrappers (out-of-bounds assertion, order)."""
    aec = raw_env(**kwargs)
    aec = wrappers.AssertOutOfBoundsWrapper(aec)
    return wrappers.OrderEnforcingWrapper(aec)


# ---------------------------------------------------------------------- centralised gymnasium view
class PandaHerdGridEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Centralised single-agent view of the panda herd: one action per grid cell (``maskrl/PandaHerd-v0``).

    Observation ``Dict``:

    * ``"grid"``: ``Box(0, 1, (4, size, size), float32)``, channels ``GRID_CHANNELS`` = tree, watermelon, panda
      (1 where at least one live panda stands), dragon.
    * ``"agent_mask"``: ``Box(0, 1, (size, size), int8)``, 1 on the cells of live pandas.
    * ``"action_mask"``: ``Box(0, 1, (5, size, size), int8)``: ``action_mask[a, r, c]`` is the validity of action
      ``a`` for the panda(s) on cell ``(r, c)``. Cells without a panda allow only ``STAY`` (their action is
      ignored, so a policy loses nothing by being forced to ``STAY`` there, and the masked entropy of those cells
      is 0). With ``flat_action_mask=True`` the key is instead the flat ``(size * size * 5,)`` int8 vector in
      :meth:`action_masks` order (what maskrl's masked policies and sb3-contrib's ``MultiDiscrete`` masking use).

    Action ``MultiDiscrete([5] * size**2)``: one action per cell, row-major; every live panda takes the action of
    its cell (pandas sharing a cell move together); the actions of cells without a panda have no effect. An
    invalid action of an occupied cell is executed as ``STAY`` and counted once per panda in
    ``info["invalid_actions"]``. Reward: the team reward, i.e. the sum of the pandas' individual rewards (+1 per
    watermelon eaten, ``caught_penalty`` per panda caught, ``invalid_action_penalty`` per invalid panda action).
    Terminated when every panda has been caught, truncated after ``max_steps`` steps.

    ``info`` holds ``invalid_actions`` (this step), ``pandas_alive`` and, at the last step, ``episode_stats``:
    ``watermelons_eaten``, ``pandas_caught``, ``pandas_alive``, ``steps``, ``invalid_actions`` (floats).

    :param flat_action_mask: put the flat cell-major mask in ``obs["action_mask"]`` instead of ``(5, H, W)``.
    :param kwargs: as in :class:`PandaHerdParallelEnv` (``shared_reward`` is not accepted: the reward is the team's).
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, flat_action_mask: bool = False, render_mode: str | None = None, **kwargs: Any) -> None:
        if "shared_reward" in kwargs:
            raise ValueError("PandaHerdGridEnv always uses the team reward; do not pass shared_reward")
        self.herd = PandaHerdParallelEnv(render_mode=render_mode, **kwargs)
        self.render_mode = render_mode
        self.flat_action_mask = bool(flat_action_mask)
        s = self.herd.size
        self.size = s
        self.n_cells = s * s
        mask_space = (
            spaces.Box(0, 1, (self.n_cells * N_ACTIONS,), np.int8)
            if self.flat_action_mask
            else spaces.Box(0, 1, (N_ACTIONS, s, s), np.int8)
        )
        self.observation_space = spaces.Dict(
            {
                GRID_KEY: spaces.Box(0.0, 1.0, (len(GRID_CHANNELS), s, s), np.float32),
                AGENT_MASK_KEY: spaces.Box(0, 1, (s, s), np.int8),
                ACTION_MASK_KEY: mask_space,
            }
        )
        self.action_space = spaces.MultiDiscrete(np.full(self.n_cells, N_ACTIONS, dtype=np.int64))
        self._needs_reset = True
        self._herd_seeded = False

    @property
    def max_steps(self) -> int:
        """Truncation horizon: the herd's ``max_steps``."""
        return self.herd.max_steps

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start a new episode (``options["layout"]`` as in the module docstring)."""
        super().reset(seed=seed)
        if seed is not None:
            self.herd.np_random, _ = seeding.np_random(seed)
        elif not self._herd_seeded:
            # Tie the herd's stream to gymnasium's np_random so that an unseeded first reset is still random.
            self.herd.np_random, _ = seeding.np_random(int(self.np_random.integers(2**31)))
        self._herd_seeded = True
        self.herd.reset(options=options)
        self._invalid = 0
        self._needs_reset = False
        return self._get_obs(), {"invalid_actions": 0, "pandas_alive": len(self.herd.agents)}

    def _cell_masks(self) -> np.ndarray:
        """int8 ``(size * size, 5)``: per cell the validity of its actions (only ``STAY`` on empty cells)."""
        m = np.zeros((self.n_cells, N_ACTIONS), dtype=np.int8)
        m[:, STAY] = 1
        herd = self.herd
        for agent, cell in zip(herd.possible_agents, herd.panda_cells(), strict=True):
            if cell >= 0:
                m[cell] = herd.action_mask(agent)
        return m

    def action_masks(self) -> np.ndarray:
        """Flat bool ``(size * size * 5,)`` mask, cell-major (cell 0's 5 actions, then cell 1's, ...)."""
        return self._cell_masks().ravel().astype(bool)

    def _get_obs(self) -> dict[str, np.ndarray]:
        s = self.size
        grid = self.herd.grid_channels()
        cm = self._cell_masks()
        mask = cm.ravel() if self.flat_action_mask else np.ascontiguousarray(cm.T.reshape(N_ACTIONS, s, s))
        return {GRID_KEY: grid, AGENT_MASK_KEY: grid[2].astype(np.int8), ACTION_MASK_KEY: mask}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Every live panda takes the action of its cell; returns the team reward."""
        if self._needs_reset:
            raise RuntimeError("PandaHerdGridEnv.step() called before reset() or after the episode ended; call reset()")
        a = np.asarray(action)
        if a.shape != (self.n_cells,) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"action must be an int array of shape ({self.n_cells},), got {action!r}")
        if a.min() < 0 or a.max() >= N_ACTIONS:
            raise ValueError(f"actions must be in [0, {N_ACTIONS}), got {action!r}")
        herd = self.herd
        cells = herd.panda_cells()
        actions = {agent: int(a[cells[herd.agent_name_mapping[agent]]]) for agent in herd.agents}
        _, rewards, _, _, infos = herd.step(actions)
        n_invalid = sum(int(info["invalid_action"]) for info in infos.values())
        self._invalid += n_invalid
        terminated = herd.pandas_caught == herd.n_pandas
        truncated = not terminated and herd.step_count >= herd.max_steps
        info: dict[str, Any] = {"invalid_actions": n_invalid, "pandas_alive": len(herd.agents)}
        if terminated or truncated:
            self._needs_reset = True
            info["episode_stats"] = {
                "watermelons_eaten": float(herd.watermelons_eaten),
                "pandas_caught": float(herd.pandas_caught),
                "pandas_alive": float(herd.n_pandas - herd.pandas_caught),
                "steps": float(herd.step_count),
                "invalid_actions": float(self._invalid),
            }
        return self._get_obs(), float(sum(rewards.values())), bool(terminated), bool(truncated), info

    def render(self) -> str | np.ndarray | None:
        """As :meth:`PandaHerdParallelEnv.render`."""
        return self.herd.render()


def _register_pettingzoo() -> None:
    """Register ``PETTINGZOO_ID`` in PettingZoo's AEC and parallel registries (PettingZoo >= 1.27)."""
    try:
        from pettingzoo import aec_registry, parallel_registry, register
    except ImportError:  # older PettingZoo: no public registry
        return
    if PETTINGZOO_ID not in aec_registry:
        register("aec", PETTINGZOO_ID, entry_point=f"{__name__}:env")
    if PETTINGZOO_ID not in parallel_registry:
        register("parallel", PETTINGZOO_ID, entry_point=f"{__name__}:parallel_env")


_register_pettingzoo()
