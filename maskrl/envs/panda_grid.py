"""A panda on a grid eats watermelons and flees a dragon and a scorpion, while trees hide things from its view.

.. list-table::
   :header-rows: 0

   * - Import
     - ``from maskrl.envs.panda_grid import PandaGridEnv`` or ``gymnasium.make("maskrl/PandaGrid-v0")`` after
       ``import maskrl``
   * - Actions
     - ``Discrete(5)``
   * - Observations
     - ``Dict({"entities": Box(-1, 1, (max_entities, 9), float32), "visibility": MultiBinary(max_entities),
       "action_mask": MultiBinary(5)})``; with ``obs_mode="image"`` (``maskrl/PandaGridImage-v0``):
       ``Dict({"observation": Box(0, 255, (side, side, 3), uint8), "action_mask": MultiBinary(5)})``, ``side =
       size * image_cell_px`` (``(2 * size - 1) * image_cell_px`` with ``image_view="egocentric"``)
   * - Entity slots
     - ``max_entities = 1 + n_watermelons + 2 + max_trees`` (15 with the defaults)
   * - Agents
     - 1 learning panda; a scripted dragon and a scripted scorpion

Description
-----------
A ``size`` x ``size`` grid holds the panda (the agent), ``n_watermelons`` watermelons, one scorpion, one dragon
and between ``min_trees`` and ``max_trees`` trees (a new count and layout every episode). Cells are addressed
as ``(row, col)``, row 0 at the top; in the observation ``x`` is the column and ``y`` the row. The grid itself
(moves, trees, layouts, shortest paths, rendering) is :mod:`maskrl.envs.grid_world`, shared with the panda herd.

Trees block movement (of everybody) and sight. The panda sees an entity when the line of sight between the two
cells is clear (:func:`line_of_sight`) and, with ``view_radius``, when the Euclidean distance between the cell
centres is at most ``view_radius``; cells at Chebyshev distance 1 (the 8 neighbours) are always seen. Sight is
symmetric: the dragon sees the panda exactly when the panda sees the dragon.

The dragon chases the panda while it sees it: each step it moves, with probability ``dragon_chase_prob``, one
step along a shortest path around the trees to the panda (ties broken at random), and otherwise hesitates (stays).
When it does not see the panda it wanders like the scorpion, which always wanders: it draws one of the five
moves (stay, up, down, left, right) uniformly and stays if that move leads into a wall, a tree or the other
creature. Creatures may stand on watermelons (they do not eat them). The panda is *caught* when it shares a cell
with the dragon or the scorpion, by walking into one or by one walking into it.

The masking motivation is at the feature level: the policy attends over the set of entities, and the
``visibility`` mask removes what the panda cannot see from that attention (OpenAI hide-and-seek's masked residual
self-attention). The action mask forbids walking into walls and trees.

Line of sight
-------------
Cell ``(r, c)`` is the square ``[r - 1/2, r + 1/2] x [c - 1/2, c + 1/2]``; the sight line is the segment between
the two cell centres. It is blocked by a tree on any cell whose *interior* the segment crosses (the two end cells
excluded), and, where the segment passes exactly through a grid corner, by trees on *both* other cells meeting at
that corner (a diagonal wall of trees is opaque; a single tree touched only at its corner is not). The test is
exact (integer arithmetic) and depends only on the segment, so it is symmetric. Neighbouring cells (Chebyshev
distance 1) always see each other.

Observation
-----------
``obs["entities"]`` has one row per entity slot, in this order: slot 0 the panda (always), slots
``1 .. n_watermelons`` the watermelons, then the scorpion, the dragon, and ``max_trees`` tree slots (the present
trees in row-major order, then padding). ``PandaGridEnv.entity_slots`` maps ``"panda"``, ``"watermelons"``,
``"scorpion"``, ``"dragon"`` and ``"trees"`` to slices. Features (``ENTITY_FEATURES``):

==================  ===========================================================================================
Feature             Value
==================  ===========================================================================================
``x``, ``y``        column / (``size`` - 1), row / (``size`` - 1), in [0, 1]
``dx``, ``dy``      (column - panda's column) / (``size`` - 1), (row - panda's row) / (``size`` - 1), in [-1, 1]
``is_panda``        one-hot entity type: panda, watermelon, scorpion, dragon, tree
``is_watermelon``
``is_scorpion``
``is_dragon``
``is_tree``
==================  ===========================================================================================

``obs["visibility"]`` is int8: 1 for the panda's slot and for every present entity the panda sees, 0 for hidden
entities and padding slots. The rows of hidden entities and of padding slots are all zeros, so the observation
carries no information about what the panda cannot see. ``obs["action_mask"]`` is the int8 0/1 validity of every
action (the same as ``env.action_masks()``).

Blinking: a scene that needs memory
-----------------------------------
With ``blink_prob > 0`` the panda blinks: after each step, with probability ``blink_prob``, it sees nothing but
itself. Every other slot of that observation is hidden (visibility 0, a row of zeros), trees included; in image
mode every cell but the panda's is fog. The action mask is unchanged (it is about walls and trees next to the
panda, which it can always feel). The first observation of an episode is never blinked.

This is the "flickering" partial observability of Hausknecht & Stone (2015): the current observation alone no longer
says where the watermelons are (they stay put until eaten) or where the dragon was last seen, while a policy with
memory can carry them over the blinks, since the panda's own position is always observed. ``blink_prob=0.5`` blinds
half the steps. Blinks change only what the panda sees, never the world: the dragon still sees the panda by line of
sight, and blinks are drawn from their own generator (spawned from the env's), so the same seed and actions give the
same trajectory as with ``blink_prob=0``. ``hidden_fraction`` counts the blinked steps' hidden entities; the
``ansi`` render marks a blinked step with ``(blink)`` in its header but, like the ``rgb_array`` one, still draws the
panda's line of sight; :func:`scripted_action` ignores blinks (it reads the line of sight).

Image observations
------------------
With ``obs_mode="image"`` (registered as ``maskrl/PandaGridImage-v0``) ``obs["observation"]`` is a small uint8
picture, channel-last ``(H, W, 3)`` with ``H = W = size * image_cell_px`` (24 x 24 with the constructor's
defaults; the registered ``maskrl/PandaGridImage-v0`` draws 5 px per cell, 40 x 40, so that SB3's default
``NatureCNN``, which needs at least 36 x 36, works with ``"MultiInputPolicy"``), for pixel
policies (SB3 sees an image space and transposes it to channel-first, also inside the ``Dict``). Every cell is a
flat ``image_cell_px`` x ``image_cell_px`` square of one colour (``IMAGE_COLOURS``):

- a cell the panda does not see is **fog**, whatever is on it, so the picture carries exactly the information of
  the entity observation: visibility is drawn, hidden entities are not;
- a seen cell shows its top occupant (panda over dragon over scorpion over watermelon over tree), else the
  ground colour.

``image_view="global"`` (the default) draws the grid as it is. ``image_view="egocentric"`` draws a
``(2 * size - 1)``-cell square window centred on the panda (the panda is always the centre cell), with the cells
beyond the grid's edge drawn in the ``"wall"`` colour: the same information, but a convolution sees every object
at its offset from the panda, which is much easier to learn from.

``obs["action_mask"]`` is unchanged, as is everything else (dynamics, rewards, ``info``, ``action_masks()``,
rendering); there is no ``"entities"`` or ``"visibility"`` key in this mode. The default ``obs_mode="entities"``
is the observation described above.

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

An invalid action is executed as ``STAY``; ``info["invalid_action"]`` says whether the action was invalid and
``invalid_action_penalty`` is added to that step's reward. An action outside the action space raises ``ValueError``.

Rewards
-------
+1 for each watermelon eaten (the panda moves onto it; it respawns at once on a random free cell reachable by the
panda), ``caught_penalty`` (-1 by default) when the panda is caught, plus ``invalid_action_penalty`` when the
action was invalid. No other shaping.

Episode end
-----------
Each step: the panda moves; if it walked into a creature it is caught, else it eats a watermelon it stands on;
then the dragon moves, then the scorpion, and the panda is caught if one of them lands on it. Terminated when the
panda is caught, truncated after ``max_steps`` steps. ``info`` always holds ``invalid_action`` (bool); at the last
step it also holds ``episode_stats``, a flat dict of floats: ``watermelons_eaten``, ``caught`` (0/1), ``steps``,
``invalid_actions``, ``hidden_fraction`` (mean over the steps of the fraction of present non-panda entities the
panda does not see) and ``dragon_sight_fraction`` (fraction of steps in which the dragon saw the panda before it
moved). Calling ``step()`` again before ``reset()`` raises ``RuntimeError``.

Layouts
-------
Random layouts: trees first; the panda, the creatures and the watermelons are then placed on distinct free cells
of the largest tree-free connected region (so everything is reachable), the dragon and the scorpion at Chebyshev
distance >= 2 from the panda. ``reset(options={"layout": rows})`` builds a hand-made layout instead: ``rows`` is
a list of ``size`` strings of ``size`` characters (or one string of such lines), ``P`` panda (exactly one), ``W``
watermelon (exactly ``n_watermelons``), ``S`` scorpion and ``D`` dragon (exactly one each), ``T`` tree (at most
``max_trees``), ``.`` empty. Watermelons respawn in the tree-free region connected to the panda. The seed still
drives the dynamics.

Arguments
---------
``size=8`` (5-16), ``n_watermelons=2`` (1-4), ``max_trees=None`` (0 to ``size**2 // 4``; ``None``:
``size**2 // 6``, 10 at size 8), ``min_trees=None`` (0 to ``max_trees``; ``None``: ``max_trees // 2``),
``view_radius=None`` (``None`` = unlimited, or a number >= 1), ``dragon_chase_prob=0.75`` (0-1),
``max_steps=100`` (>= 1), ``caught_penalty=-1.0``, ``invalid_action_penalty=0.0``, ``obs_mode="entities"``
(or ``"image"``), ``image_cell_px=3`` (1-32, pixels per cell in image mode), ``image_view="global"`` (or
``"egocentric"``), ``blink_prob=0.0`` (0 to < 1, see "Blinking"), ``render_mode=None``
(``"ansi"``: a header line and one text row per grid row, ``P W S D T`` for what the panda sees, lower case for
hidden entities, ``.`` for seen empty cells and ``:`` for unseen ones; ``"rgb_array"``: a uint8 picture of
32 x 32 pixels per cell, unseen cells shaded, hidden entities greyed and crossed out).

``reset(seed=...)`` fully determines the episode: the same seed and actions give the same trajectory.

Version history
---------------
* v0: initial version; the ``obs_mode="image"`` option (``maskrl/PandaGridImage-v0``) was added later and does not
  change the default observation. ``maskrl/PandaGridImage-v0`` first drew 3 px per cell (24 x 24), too small for
  SB3's ``NatureCNN``; it now registers ``image_cell_px=5`` (runs made with its YAML, which sets the size, load
  unchanged).
* v0: the ``blink_prob`` option (default 0, which changes nothing) was added for memory studies.
"""

import functools
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from maskrl.checks import check_int, check_number
from maskrl.envs.grid_world import (
    ACTION_NAMES,
    DOWN,
    DRAGON,
    ENTITY_TYPE_NAMES,
    LEFT,
    N_ACTIONS,
    PANDA,
    RIGHT,
    SCORPION,
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
from maskrl.masks import ACTION_MASK_KEY, ENTITIES_KEY, VISIBILITY_KEY

__all__ = [
    "ACTION_NAMES",
    "DOWN",
    "DRAGON",
    "ENTITY_FEATURES",
    "ENTITY_TYPE_NAMES",
    "IMAGE_COLOURS",
    "IMAGE_VIEWS",
    "LEFT",
    "N_ACTIONS",
    "OBS_MODES",
    "PANDA",
    "RIGHT",
    "SCORPION",
    "STAY",
    "TREE",
    "UP",
    "WATERMELON",
    "PandaGridEnv",
    "line_of_sight",
    "scripted_action",
]

# Actions (STAY .. RIGHT) and entity types (PANDA .. TREE) are the grid world's (maskrl.envs.grid_world).
# The one-hot part of the features follows the order of the entity types.
ENTITY_FEATURES = ("x", "y", "dx", "dy", "is_panda", "is_watermelon", "is_scorpion", "is_dragon", "is_tree")
_N_FEATURES = len(ENTITY_FEATURES)
_TYPE_COL = 4  # first one-hot column

_WATERMELON_REWARD = 1.0
OBS_MODES = ("entities", "image")
IMAGE_VIEWS = ("global", "egocentric")
# Flat cell colours of the image observation: distinct, and none equal to the fog, so that a cell is fog exactly
# when the panda does not see it.
IMAGE_COLOURS: dict[str, tuple[int, int, int]] = {
    "fog": (60, 75, 55),
    "ground": (150, 200, 110),
    "panda": (255, 255, 255),
    "watermelon": (255, 70, 110),
    "scorpion": (255, 170, 0),
    "dragon": (130, 0, 200),
    "tree": (20, 90, 35),
    "wall": (0, 0, 90),
}
_RAND_BUFFER = 1024
_PLACEMENT_ATTEMPTS = 100


# ---------------------------------------------------------------------- line of sight
@functools.cache
def _crossings(dr: int, dc: int) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[tuple[int, int], ...], ...]]:
    """Cells and corners on the segment from the centre of cell (0, 0) to the centre of cell (dr, dc).

    :return: the cells whose interior the segment crosses (end cells excluded), and for every grid corner the
        segment passes through exactly, the two other cells meeting at that corner.
    """
    nr, nc = abs(dr), abs(dc)
    sr, sc = (1 if dr > 0 else -1), (1 if dc > 0 else -1)
    r = c = ir = ic = 0
    cells: list[tuple[int, int]] = []
    corners: list[tuple[tuple[int, int], ...]] = []
    while ir < nr or ic < nc:
        # The segment reaches the next column boundary at t = (ic + 1/2) / nc and the next row boundary at
        # t = (ir + 1/2) / nr; compare the two without division.
        col_t, row_t = (1 + 2 * ic) * nr, (1 + 2 * ir) * nc
        if col_t == row_t:
            corners.append(((r + sr, c), (r, c + sc)))
            r, c, ir, ic = r + sr, c + sc, ir + 1, ic + 1
        elif col_t < row_t:
            c, ic = c + sc, ic + 1
        else:
            r, ir = r + sr, ir + 1
        cells.append((r, c))
    cells.pop()  # the end cell
    return tuple(cells), tuple(corners)


def line_of_sight(grid_blocked: np.ndarray, a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether cells ``a`` and ``b`` see each other on a grid whose blocked cells (trees) are ``grid_blocked``.

    The segment between the cell centres is blocked by a blocked cell whose interior it crosses (``a`` and ``b``
    themselves excluded), or, where it passes exactly through a grid corner, by the two other cells at that corner
    being both blocked. Cells at Chebyshev distance <= 1 always see each other. Symmetric in ``a`` and ``b``.

    :param grid_blocked: bool array of shape ``(rows, cols)``, True where sight is blocked.
    :param a: ``(row, col)`` of one cell.
    :param b: ``(row, col)`` of the other cell.
    :return: True when the line of sight is clear.
    """
    rows, cols = grid_blocked.shape
    (ra, ca), (rb, cb) = a, b
    if not (0 <= ra < rows and 0 <= ca < cols and 0 <= rb < rows and 0 <= cb < cols):
        raise ValueError(f"cells must lie on the {rows}x{cols} grid, got {a!r} and {b!r}")
    if max(abs(rb - ra), abs(cb - ca)) <= 1:
        return True
    cells, corners = _crossings(rb - ra, cb - ca)
    for dr, dc in cells:
        if grid_blocked[ra + dr, ca + dc]:
            return False
    for (r1, c1), (r2, c2) in corners:
        if grid_blocked[ra + r1, ca + c1] and grid_blocked[ra + r2, ca + c2]:
            return False
    return True


@functools.lru_cache(maxsize=4)
def _sight_tables(size: int) -> tuple[np.ndarray, ...]:
    """Index tables that evaluate :func:`line_of_sight` for all pairs of cells of a ``size`` grid at once.

    Pair ``p * n + q`` (flat cell indices, ``n = size**2``) is blocked if ``blocked[cell_idx[i]]`` for some ``i`` with
    ``cell_pair[i] == p * n + q``, or ``blocked[corner_a[j]] & blocked[corner_b[j]]`` for some ``j`` with
    ``corner_pair[j] == p * n + q``.

    :return: ``cell_idx, cell_pair, corner_a, corner_b, corner_pair, near`` (``near``: (n, n) bool, Chebyshev
        distance <= 1) and ``dist2`` ((n, n) squared Euclidean distances).
    """
    n = size * size
    cell_idx, cell_pair, corner_a, corner_b, corner_pair = [], [], [], [], []
    for dr in range(-(size - 1), size):
        rs = np.arange(max(0, -dr), size - max(0, dr))
        for dc in range(-(size - 1), size):
            if max(abs(dr), abs(dc)) <= 1:
                continue
            cs = np.arange(max(0, -dc), size - max(0, dc))
            src = (rs[:, None] * size + cs[None, :]).ravel()
            pair = src * n + src + dr * size + dc
            cells, corners = _crossings(dr, dc)
            if cells:
                off = np.array([r * size + c for r, c in cells])
                cell_idx.append((src[:, None] + off[None, :]).ravel())
                cell_pair.append(np.repeat(pair, len(off)))
            if corners:
                off_a = np.array([r * size + c for (r, c), _ in corners])
                off_b = np.array([r * size + c for _, (r, c) in corners])
                corner_a.append((src[:, None] + off_a[None, :]).ravel())
                corner_b.append((src[:, None] + off_b[None, :]).ravel())
                corner_pair.append(np.repeat(pair, len(off_a)))
    rows, cols = np.divmod(np.arange(n), size)
    drow = np.abs(rows[:, None] - rows[None, :])
    dcol = np.abs(cols[:, None] - cols[None, :])
    near = np.maximum(drow, dcol) <= 1
    dist2 = drow**2 + dcol**2

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    return cat(cell_idx), cat(cell_pair), cat(corner_a), cat(corner_b), cat(corner_pair), near, dist2


class PandaGridEnv(gym.Env[dict[str, np.ndarray], np.int64]):
    """Grid world of a panda, watermelons, a dragon, a scorpion and trees that hide things; see the module docstring.

    :param size: side of the square grid (5-16).
    :param n_watermelons: watermelons on the grid at any time (1-4).
    :param max_trees: most trees per episode, and the number of tree slots in the observation (0 to
        ``size**2 // 4``); ``None``: ``size**2 // 6``.
    :param min_trees: fewest trees per episode (0 to ``max_trees``); ``None``: ``max_trees // 2``.
    :param view_radius: ``None`` (unlimited) or the largest Euclidean distance between cell centres at which the
        panda sees (>= 1).
    :param dragon_chase_prob: probability that a dragon that sees the panda steps toward it (0-1).
    :param max_steps: truncation horizon (>= 1).
    :param caught_penalty: added to the reward of the step in which the panda is caught.
    :param invalid_action_penalty: added to the reward of every step whose action was invalid (pass e.g. -0.1).
    :param obs_mode: ``"entities"`` (the entity rows and their visibility) or ``"image"`` (a small fogged picture
        under ``"observation"``); see the module docstring.
    :param image_cell_px: pixels per cell side of the image observation (1-32).
    :param image_view: ``"global"`` (the grid as it is) or ``"egocentric"`` (a window centred on the panda).
    :param blink_prob: probability that the panda sees nothing but itself in the observation after a step (0 to
        < 1); see the module docstring's "Blinking".
    :param render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        size: int = 8,
        n_watermelons: int = 2,
        max_trees: int | None = None,
        min_trees: int | None = None,
        view_radius: float | None = None,
        dragon_chase_prob: float = 0.75,
        max_steps: int = 100,
        caught_penalty: float = -1.0,
        invalid_action_penalty: float = 0.0,
        obs_mode: str = "entities",
        image_cell_px: int = 3,
        image_view: str = "global",
        blink_prob: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        check_int("size", size, 5, 16)
        check_int("n_watermelons", n_watermelons, 1, 4)
        if max_trees is None:
            max_trees = size * size // 6
        check_int("max_trees", max_trees, 0, size * size // 4)
        if min_trees is None:
            min_trees = max_trees // 2
        check_int("min_trees", min_trees, 0, max_trees)
        if view_radius is not None:
            check_number("view_radius", view_radius)
            if view_radius < 1:
                raise ValueError(f"view_radius must be None or >= 1, got {view_radius}")
        check_number("dragon_chase_prob", dragon_chase_prob)
        if not 0.0 <= dragon_chase_prob <= 1.0:
            raise ValueError(f"dragon_chase_prob must be in [0, 1], got {dragon_chase_prob}")
        check_int("max_steps", max_steps, 1, None)
        check_number("caught_penalty", caught_penalty)
        check_number("invalid_action_penalty", invalid_action_penalty)
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        check_int("image_cell_px", image_cell_px, 1, 32)
        if image_view not in IMAGE_VIEWS:
            raise ValueError(f"image_view must be one of {IMAGE_VIEWS}, got {image_view!r}")
        check_number("blink_prob", blink_prob)
        if not 0.0 <= blink_prob < 1.0:
            raise ValueError(f"blink_prob must be in [0, 1), got {blink_prob}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")

        self.size = size
        self.n_watermelons = n_watermelons
        self.max_trees = max_trees
        self.min_trees = min_trees
        self.view_radius = None if view_radius is None else float(view_radius)
        self.dragon_chase_prob = float(dragon_chase_prob)
        self.max_steps = max_steps
        self.caught_penalty = float(caught_penalty)
        self.invalid_action_penalty = float(invalid_action_penalty)
        self.obs_mode = obs_mode
        self.image_cell_px = image_cell_px
        self.image_view = image_view
        self.blink_prob = float(blink_prob)
        self.render_mode = render_mode

        self.n_cells = size * size
        self.max_entities = 1 + n_watermelons + 2 + max_trees
        self.scorpion_slot = 1 + n_watermelons
        self.dragon_slot = 2 + n_watermelons
        self.tree_slot = 3 + n_watermelons
        self.entity_slots: dict[str, slice] = {
            "panda": slice(0, 1),
            "watermelons": slice(1, 1 + n_watermelons),
            "scorpion": slice(self.scorpion_slot, self.scorpion_slot + 1),
            "dragon": slice(self.dragon_slot, self.dragon_slot + 1),
            "trees": slice(self.tree_slot, self.max_entities),
        }

        self.action_space = spaces.Discrete(N_ACTIONS)
        if obs_mode == "image":
            side = (size if image_view == "global" else 2 * size - 1) * image_cell_px
            self.observation_space = spaces.Dict(
                {
                    "observation": spaces.Box(0, 255, shape=(side, side, 3), dtype=np.uint8),
                    ACTION_MASK_KEY: spaces.MultiBinary(N_ACTIONS),
                }
            )
        else:
            self.observation_space = spaces.Dict(
                {
                    ENTITIES_KEY: spaces.Box(-1.0, 1.0, shape=(self.max_entities, _N_FEATURES), dtype=np.float32),
                    VISIBILITY_KEY: spaces.MultiBinary(self.max_entities),
                    ACTION_MASK_KEY: spaces.MultiBinary(N_ACTIONS),
                }
            )
        # Row k: the colour of entity type k (PANDA .. TREE), then ground, fog and wall.
        self._palette = np.array(
            [IMAGE_COLOURS[name] for name in (*ENTITY_TYPE_NAMES, "ground", "fog", "wall")], dtype=np.uint8
        )

        self._tables = _sight_tables(size)
        self._feat = np.zeros((self.max_entities, _N_FEATURES), dtype=np.float32)
        self._onehot = np.zeros((self.max_entities, len(ENTITY_TYPE_NAMES)), dtype=np.float32)
        self._ent = np.zeros(self.max_entities, dtype=np.int64)  # flat cell of every slot (0 for padding)
        self._present = np.zeros(self.max_entities, dtype=bool)
        self._visible = np.zeros(self.max_entities, dtype=np.int8)
        self._mask = np.ones(N_ACTIONS, dtype=np.int8)
        self._needs_reset = True
        self._init_state()

    # ------------------------------------------------------------------ state
    def _init_state(self) -> None:
        n = self.n_cells
        self._t = 0
        self._panda = 0
        self._dragon = 0
        self._scorpion = 0
        self._wm: list[int] = [0] * self.n_watermelons
        self._world = GridWorld(self.size)  # the trees, the moves around them, the panda's region, distances
        self._vis = np.eye(n, dtype=bool)
        self._last_action = -1
        self._last_invalid = False
        self._last_reward = 0.0
        self._return = 0.0
        self._caught = False
        self._blinking = False
        self._hidden_sum = 0.0
        self._stats = dict.fromkeys(("watermelons_eaten", "invalid_actions", "dragon_sight_steps"), 0)

    @property
    def _trees(self) -> list[int]:
        # The episode's trees, for tests/test_recurrent.py's world snapshots (elsewhere: self._world.trees).
        return self._world.trees

    def _rand(self) -> float:
        # Uniforms are drawn in blocks (one numpy call per block); the stream is still fully set by self.np_random.
        i = self._ri
        if i == _RAND_BUFFER:
            self._rbuf = self.np_random.random(_RAND_BUFFER).tolist()
            i = 0
        self._ri = i + 1
        return self._rbuf[i]

    def _pick(self, seq: Sequence[int]) -> int:
        return seq[min(len(seq) - 1, int(self._rand() * len(seq)))]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start a new episode on a random layout, or on ``options["layout"]`` (see the module docstring)."""
        super().reset(seed=seed)
        self._init_state()
        layout = (options or {}).get("layout")
        if layout is not None:
            self._load_layout(layout)
        else:
            self._random_layout()
        self._rbuf = self.np_random.random(_RAND_BUFFER).tolist()
        self._ri = 0
        if self.blink_prob > 0:
            # A child generator: blinks draw nothing from the world's random stream (spawning consumes none of it).
            self._blink_rng = self.np_random.spawn(1)[0]
        self._setup_episode()
        self._needs_reset = False
        self._update_view()
        return self._get_obs(), {"invalid_action": False}

    def _random_layout(self) -> None:
        rng, s = self.np_random, self.size
        for _ in range(_PLACEMENT_ATTEMPTS):
            n_trees = int(rng.integers(self.min_trees, self.max_trees + 1))
            trees, region = random_trees(rng, s, n_trees)
            panda = region[int(rng.integers(len(region)))]
            far = [c for c in region if chebyshev(c, panda, s) >= 2]
            if len(far) < 2 or len(region) < 3 + self.n_watermelons:
                continue
            dragon, scorpion = (far[i] for i in rng.choice(len(far), size=2, replace=False))
            rest = [c for c in region if c not in (panda, dragon, scorpion)]
            wm = [rest[i] for i in rng.choice(len(rest), size=self.n_watermelons, replace=False)]
            self._panda, self._dragon, self._scorpion, self._wm = panda, dragon, scorpion, wm
            self._world.plant(trees, reachable_from=[panda])
            return
        raise RuntimeError("could not place the entities on a random layout; lower max_trees")  # pragma: no cover

    def _load_layout(self, layout: str | Sequence[str]) -> None:
        one = (1, "one")
        exact = {"P": one, "S": one, "D": one, "W": (self.n_watermelons, f"n_watermelons={self.n_watermelons}")}
        found = parse_layout(layout, self.size, "PWSDT", exact)
        if len(found["T"]) > self.max_trees:
            raise ValueError(f"layout has {len(found['T'])} trees, more than max_trees={self.max_trees}")
        self._panda, self._scorpion, self._dragon = found["P"][0], found["S"][0], found["D"][0]
        self._wm = found["W"]
        self._world.plant(found["T"], reachable_from=[self._panda])

    def _setup_episode(self) -> None:
        """Per-episode tables that depend on the (static) trees: sight and entity slots."""
        n = self.n_cells
        trees, blocked = self._world.trees, self._world.blocked
        cell_idx, cell_pair, corner_a, corner_b, corner_pair, near, dist2 = self._tables
        hit = np.zeros(n * n, dtype=bool)
        if trees:
            hit[cell_pair[blocked[cell_idx]]] = True
            hit[corner_pair[blocked[corner_a] & blocked[corner_b]]] = True
        vis = ~hit.reshape(n, n)
        if self.view_radius is not None:
            vis &= (dist2 <= self.view_radius**2 + 1e-9) | near
        self._vis = vis

        self._present[:] = False
        self._present[: self.tree_slot + len(trees)] = True
        self._onehot[:] = 0.0
        self._onehot[0, PANDA] = 1.0
        self._onehot[1 : self.scorpion_slot, WATERMELON] = 1.0
        self._onehot[self.scorpion_slot, SCORPION] = 1.0
        self._onehot[self.dragon_slot, DRAGON] = 1.0
        self._onehot[self.tree_slot : self.tree_slot + len(trees), TREE] = 1.0
        self._ent[:] = 0
        self._ent[self.tree_slot : self.tree_slot + len(trees)] = trees

    # ------------------------------------------------------------------ step
    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Advance by one step; an invalid action is executed as ``STAY``."""
        if self._needs_reset:
            raise RuntimeError("PandaGridEnv.step() called before reset() or after the episode ended; call reset()")
        a = int(action)
        if not 0 <= a < N_ACTIONS:
            raise ValueError(f"action must be in [0, {N_ACTIONS}), got {action!r}")
        invalid = not self._mask[a]
        reward = 0.0
        if invalid:
            self._stats["invalid_actions"] += 1
            reward += self.invalid_action_penalty
        elif a != STAY:
            self._panda = self._world.neighbours[self._panda][a - 1]
        p = self._panda
        caught = p in (self._dragon, self._scorpion)
        if not caught:
            if p in self._wm:
                reward += _WATERMELON_REWARD
                self._stats["watermelons_eaten"] += 1
                self._respawn(self._wm.index(p))
            self._move_dragon()
            if self._dragon != p:
                self._scorpion = self._wander(self._scorpion, self._dragon)
            caught = p in (self._dragon, self._scorpion)
        if caught:
            reward += self.caught_penalty
        self._t += 1
        self._caught = caught
        terminated = caught
        truncated = not terminated and self._t >= self.max_steps
        if self.blink_prob > 0:
            self._blinking = bool(self._blink_rng.random() < self.blink_prob)
        self._update_view()
        obs = self._get_obs()
        n_other = self.tree_slot + len(self._world.trees) - 1
        self._hidden_sum += (n_other - (int(self._visible.sum()) - 1)) / n_other
        self._last_action = a
        self._last_invalid = invalid
        self._last_reward = reward
        self._return += reward
        info: dict[str, Any] = {"invalid_action": invalid}
        if terminated or truncated:
            self._needs_reset = True
            info["episode_stats"] = {
                "watermelons_eaten": float(self._stats["watermelons_eaten"]),
                "caught": float(caught),
                "steps": float(self._t),
                "invalid_actions": float(self._stats["invalid_actions"]),
                "hidden_fraction": self._hidden_sum / self._t,
                "dragon_sight_fraction": self._stats["dragon_sight_steps"] / self._t,
            }
        return obs, reward, terminated, truncated, info

    def _respawn(self, i: int) -> None:
        """Watermelon ``i`` (just eaten) reappears on a random free cell reachable by the panda."""
        free = self._world.free_cells({self._panda, self._dragon, self._scorpion, *self._wm})
        if free:  # otherwise (a tiny hand-made region) it stays where it was eaten
            self._wm[i] = self._pick(free)

    def _move_dragon(self) -> None:
        d, p = self._dragon, self._panda
        if self._vis[p, d]:
            self._stats["dragon_sight_steps"] += 1
            if self._rand() < self.dragon_chase_prob:
                dist = self._world.distances(p)
                if dist[d] > 0:
                    nbr = self._world.neighbours[d]
                    options = [c for c in nbr if c >= 0 and dist[c] == dist[d] - 1 and c != self._scorpion]
                    if options:
                        self._dragon = self._pick(options)
            return
        self._dragon = self._wander(d, self._scorpion)

    def _wander(self, cell: int, other: int) -> int:
        """One random move among stay/up/down/left/right; blocked moves (walls, trees, ``other``) stay."""
        k = min(4, int(self._rand() * 5))
        if k == STAY:
            return cell
        nxt = self._world.neighbours[cell][k - 1]
        return nxt if nxt >= 0 and nxt != other else cell

    # ------------------------------------------------------------------ observation & mask
    def _update_view(self) -> None:
        p = self._panda
        self._mask[:] = self._world.move_mask(p)
        ent = self._ent
        ent[0] = p
        ent[1 : self.scorpion_slot] = self._wm
        ent[self.scorpion_slot] = self._scorpion
        ent[self.dragon_slot] = self._dragon
        vis = self._vis[p][ent] & self._present
        vis[0] = True
        if self._blinking:
            vis[1:] = False
        self._visible[:] = vis

    def action_masks(self) -> np.ndarray:
        """Validity of every action as a bool array of shape ``(5,)`` (MaskablePPO's convention)."""
        return self._mask.astype(bool)

    def _get_obs(self) -> dict[str, np.ndarray]:
        if self.obs_mode == "image":
            return {"observation": self._render_image(), ACTION_MASK_KEY: self._mask.copy()}
        f = self._feat
        rows, cols = np.divmod(self._ent, self.size)
        f[:, 0] = cols
        f[:, 1] = rows
        f[:, 0:2] /= self.size - 1
        f[:, 2:4] = f[:, 0:2] - f[0, 0:2]
        f[:, _TYPE_COL:] = self._onehot
        f[self._visible == 0] = 0.0  # assignment, not multiplication: no -0.0 (whose sign would leak dx/dy)
        return {ENTITIES_KEY: f.copy(), VISIBILITY_KEY: self._visible.copy(), ACTION_MASK_KEY: self._mask.copy()}

    def _render_image(self) -> np.ndarray:
        """The image observation: one flat colour per cell, fog on every cell the panda does not see."""
        s, px = self.size, self.image_cell_px
        vis = self._vis[self._panda]
        if self._blinking:
            vis = np.arange(self.n_cells) == self._panda
        kind = np.where(vis, len(ENTITY_TYPE_NAMES), len(ENTITY_TYPE_NAMES) + 1)  # ground or fog
        for cell, k in self._occupants():  # later occupants are drawn on top
            if vis[cell]:
                kind[cell] = k
        kind = kind.reshape(s, s)
        if self.image_view == "egocentric":
            # Window of 2s-1 cells centred on the panda; off-grid cells are wall.
            pr, pc = divmod(self._panda, s)
            window = np.full((2 * s - 1, 2 * s - 1), len(ENTITY_TYPE_NAMES) + 2)
            window[s - 1 - pr : 2 * s - 1 - pr, s - 1 - pc : 2 * s - 1 - pc] = kind
            kind = window
        n = kind.shape[0]
        cells = self._palette[kind].reshape(n, 1, n, 1, 3)
        return np.ascontiguousarray(np.broadcast_to(cells, (n, px, n, px, 3)).reshape(n * px, n * px, 3))

    # ------------------------------------------------------------------ rendering
    def render(self) -> str | np.ndarray | None:
        """Render the current state: a text block (``"ansi"``) or a uint8 (H, W, 3) image (``"rgb_array"``)."""
        if self.render_mode == "ansi":
            return self._render_ansi()
        if self.render_mode == "rgb_array":
            return self._render_rgb()
        return None

    def _occupants(self) -> list[tuple[int, int]]:
        """(cell, entity type) of everything on the grid, drawn in this order (later on top)."""
        out = [(c, TREE) for c in self._world.trees]
        out += [(c, WATERMELON) for c in self._wm]
        out += [(self._scorpion, SCORPION), (self._dragon, DRAGON), (self._panda, PANDA)]
        return out

    def _render_ansi(self) -> str:
        vis = self._vis[self._panda]
        cells = ["." if vis[c] else ":" for c in range(self.n_cells)]
        for cell, kind in self._occupants():
            ch = "PWSDT"[kind]
            cells[cell] = ch if vis[cell] else ch.lower()
        a = self._last_action
        header = (
            f"t={self._t} act={'-' if a < 0 else ACTION_NAMES[a]}{'(invalid)' if self._last_invalid else ''} "
            f"r={self._last_reward:+.2f} return={self._return:+.2f} eaten={self._stats['watermelons_eaten']}"
            f"{' CAUGHT' if self._caught else ''}{' (blink)' if self._blinking else ''}"
        )
        return render_text(header, cells, self.size)

    def _render_rgb(self) -> np.ndarray:
        return render_rgb(self.size, self._occupants(), seen=self._vis[self._panda])


# ---------------------------------------------------------------------- scripted panda
def scripted_action(env: PandaGridEnv | gym.Env) -> int:
    """A greedy heuristic panda that uses only what the panda sees (plus the tree map, to plan paths).

    It walks a shortest path (around trees) to the nearest visible watermelon, never entering a cell that a visible
    dragon or scorpion occupies or could reach in its next move. Without such a path it walks toward the nearest
    cell it does not see (to explore), and failing that takes the valid move farthest from the visible creatures.

    :param env: a :class:`PandaGridEnv`, possibly wrapped.
    :return: an action that is valid in the current state.
    """
    e: PandaGridEnv = env.unwrapped  # type: ignore[assignment]
    p, nbr, s = e._panda, e._world.neighbours, e.size
    vis = e._vis[p]
    threats = [c for c in (e._dragon, e._scorpion) if vis[c]]
    danger = set(threats)
    for t in threats:
        danger.update(c for c in nbr[t] if c >= 0)
    targets = {w for w in e._wm if vis[w]}
    first = {p: STAY}
    queue = [p]
    explore = -1
    for cell in queue:
        if cell in targets:
            return first[cell]
        if explore < 0 and not vis[cell]:
            explore = first[cell]
        for k, nxt in enumerate(nbr[cell]):
            if nxt >= 0 and nxt not in first and nxt not in danger:
                first[nxt] = k + 1 if cell == p else first[cell]
                queue.append(nxt)
    if explore >= 0:
        return explore

    def safety(cell: int) -> tuple[bool, int]:
        gap = min((abs(cell // s - t // s) + abs(cell % s - t % s) for t in threats), default=2 * s)
        return cell not in danger, gap

    moves = [(STAY, p)] + [(k + 1, c) for k, c in enumerate(nbr[p]) if c >= 0]
    return max(moves, key=lambda m: safety(m[1]))[0]
