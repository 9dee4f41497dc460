"""The grid world of PandaGrid and the panda herd: cells, moves, trees, layouts, shortest paths and pictures.

Both envs play on a ``size`` x ``size`` grid of cells addressed by flat index ``row * size + col`` (row 0 at the
top). Trees block movement; the grid's edge too. What the envs share lives here:

- the five actions (``STAY``, ``UP``, ``DOWN``, ``LEFT``, ``RIGHT``) and the entity kinds (``PANDA`` ..
  ``TREE``);
- :class:`GridWorld`, the static map of one episode: its trees, the move table around them, the region reachable
  from the agents (where eaten watermelons respawn), shortest-path distances (cached per target) and the action
  mask of a cell;
- :func:`random_trees` (a random forest and its largest open region), :func:`parse_layout` (hand-made layouts
  such as ``["P.T..", ...]``), :func:`chebyshev`;
- rendering: :func:`render_text` (one character per cell) and :func:`render_rgb` (32 x 32 pixel sprites per
  cell, optionally shading the cells an agent does not see).

The envs keep what differs: who stands where, how the creatures move, what the agents observe.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ACTION_NAMES",
    "CELL_PX",
    "DOWN",
    "DRAGON",
    "ENTITY_TYPE_NAMES",
    "LEFT",
    "MOVES",
    "N_ACTIONS",
    "PANDA",
    "RIGHT",
    "SCORPION",
    "STAY",
    "TREE",
    "UP",
    "WATERMELON",
    "GridWorld",
    "bfs_distances",
    "chebyshev",
    "connected_components",
    "entity_sprites",
    "grid_neighbours",
    "parse_layout",
    "random_trees",
    "render_rgb",
    "render_text",
]

# Actions: action k >= 1 moves by MOVES[k - 1].
STAY, UP, DOWN, LEFT, RIGHT = range(5)
N_ACTIONS = 5
ACTION_NAMES = ("stay", "up", "down", "left", "right")
#: (row, col) offsets of the up, down, left and right moves
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))

# Entity kinds (PandaGrid's one-hot features follow this order; rendering draws their sprites).
PANDA, WATERMELON, SCORPION, DRAGON, TREE = range(5)
ENTITY_TYPE_NAMES = ("panda", "watermelon", "scorpion", "dragon", "tree")


# ---------------------------------------------------------------------- graph helpers
@functools.lru_cache(maxsize=8)
def grid_neighbours(size: int) -> tuple[tuple[int, ...], ...]:
    """Flat index of the up, down, left and right neighbour of every cell, -1 off the grid."""
    out = []
    for cell in range(size * size):
        r, c = divmod(cell, size)
        out.append(
            tuple((r + dr) * size + (c + dc) if 0 <= r + dr < size and 0 <= c + dc < size else -1 for dr, dc in MOVES)
        )
    return tuple(out)


def connected_components(blocked: np.ndarray, neighbours: Sequence[Sequence[int]]) -> list[list[int]]:
    """Connected regions (4-neighbourhood) of the cells that are not ``blocked``, largest first.

    :param blocked: flat bool array, one entry per cell
    :param neighbours: per cell, its neighbours' indices (-1 for none), e.g. :func:`grid_neighbours`
    """
    seen = blocked.copy()
    components = []
    for start in range(len(neighbours)):
        if seen[start]:
            continue
        seen[start] = True
        component = [start]
        for cell in component:  # the list grows while we walk it: a breadth-first search
            for nxt in neighbours[cell]:
                if nxt >= 0 and not seen[nxt]:
                    seen[nxt] = True
                    component.append(nxt)
        components.append(component)
    components.sort(key=len, reverse=True)
    return components


def bfs_distances(source: int, neighbours: Sequence[Sequence[int]]) -> list[int]:
    """Shortest-path distances from ``source`` to every cell, -1 where unreachable (symmetric moves).

    :param source: the start cell
    :param neighbours: per cell, the cells one move away (-1 for none); blocked cells must not appear
    """
    dist = [-1] * len(neighbours)
    dist[source] = 0
    queue = [source]
    for cell in queue:
        d = dist[cell] + 1
        for nxt in neighbours[cell]:
            if nxt >= 0 and dist[nxt] < 0:
                dist[nxt] = d
                queue.append(nxt)
    return dist


def chebyshev(a: int, b: int, size: int) -> int:
    """Chebyshev distance (king moves) between the flat cells ``a`` and ``b`` of a ``size`` grid."""
    return max(abs(a // size - b // size), abs(a % size - b % size))


# ---------------------------------------------------------------------- the map of one episode
class GridWorld:
    """The static map of one episode on a ``size`` x ``size`` grid: trees, moves, reachable region, distances.

    Until :meth:`plant` is called every cell is a dead end (``neighbours`` all -1, only ``STAY`` valid).

    :param size: side of the square grid.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.n_cells = size * size
        #: flat cells of the trees
        self.trees: list[int] = []
        #: flat bool array, True on the trees
        self.blocked = np.zeros(self.n_cells, dtype=bool)
        #: per cell, the cell that each move (up, down, left, right) leads to, -1 when a tree or the edge is there
        self.neighbours: list[list[int]] = [[-1] * 4 for _ in range(self.n_cells)]
        #: flat bool array, True on the cells reachable from the cells given to :meth:`plant`
        self.region = np.zeros(self.n_cells, dtype=bool)
        self._distances: dict[int, list[int]] = {}
        self._move_masks = np.zeros((self.n_cells, N_ACTIONS), dtype=np.int8)
        self._move_masks[:, STAY] = 1

    def plant(self, trees: list[int], reachable_from: Iterable[int]) -> None:
        """Set the trees, the moves around them and the region reachable from the cells ``reachable_from``."""
        self.trees = trees
        self.blocked[:] = False
        self.blocked[trees] = True
        blocked, open_moves = self.blocked, grid_neighbours(self.size)
        self.neighbours = [[-1 if nxt < 0 or blocked[nxt] else nxt for nxt in row] for row in open_moves]
        self._move_masks[:, 1:] = np.array(self.neighbours) >= 0
        region = self.region
        region[:] = False
        queue = list(dict.fromkeys(reachable_from))
        region[queue] = True
        for cell in queue:  # breadth-first flood fill
            for nxt in self.neighbours[cell]:
                if nxt >= 0 and not region[nxt]:
                    region[nxt] = True
                    queue.append(nxt)
        self._distances = {}

    def distances(self, target: int) -> list[int]:
        """Shortest-path distances (around trees) between every cell and ``target``; -1 where unreachable. Cached."""
        dist = self._distances.get(target)
        if dist is None:
            dist = self._distances[target] = bfs_distances(target, self.neighbours)
        return dist

    def move_mask(self, cell: int) -> np.ndarray:
        """int8 ``(5,)`` validity of the actions on ``cell``: ``STAY`` always, a move when it stays on open ground."""
        return self._move_masks[cell].copy()

    def free_cells(self, taken: set[int]) -> list[int]:
        """The cells of the reachable region not in ``taken``, in increasing order."""
        return [c for c in np.flatnonzero(self.region).tolist() if c not in taken]


def random_trees(rng: np.random.Generator, size: int, n_trees: int) -> tuple[list[int], list[int]]:
    """``n_trees`` trees on distinct random cells, and the largest tree-free connected region.

    :return: the trees' cells and the region's cells, both in increasing order.
    """
    n = size * size
    trees = np.sort(rng.choice(n, size=n_trees, replace=False)).tolist()
    blocked = np.zeros(n, dtype=bool)
    blocked[trees] = True
    return trees, sorted(connected_components(blocked, grid_neighbours(size))[0])


def parse_layout(
    layout: str | Sequence[str], size: int, chars: str, exact: Mapping[str, tuple[int, str]]
) -> dict[str, list[int]]:
    """The cells of every character of a hand-made layout; a one-line ``ValueError`` for a malformed one.

    :param layout: ``size`` strings of ``size`` characters, or one string of such lines; ``.`` is an empty cell.
    :param size: side of the grid.
    :param chars: the characters allowed besides ``.``, in the order the error message lists them.
    :param exact: for some characters, how many the layout must hold and how the error message names that number
        (e.g. ``{"P": (1, "one")}``), checked in this order.
    :return: per character of ``chars``, its flat cells in row-major order.
    """
    rows = layout.strip().splitlines() if isinstance(layout, str) else list(layout)
    if len(rows) != size or any(not isinstance(row, str) or len(row) != size for row in rows):
        raise ValueError(f"layout must be {size} strings of {size} characters (size={size}), got {layout!r}")
    found: dict[str, list[int]] = {ch: [] for ch in chars}
    for r, row in enumerate(rows):
        for c, ch in enumerate(row):
            if ch == ".":
                continue
            if ch not in found:
                raise ValueError(f"layout has unknown character {ch!r} at row {r}, column {c}; use {' '.join(chars)} .")
            found[ch].append(r * size + c)
    for ch, (want, name) in exact.items():
        if len(found[ch]) != want:
            raise ValueError(f"layout needs exactly {name} {ch}, got {len(found[ch])}")
    return found


# ---------------------------------------------------------------------- rendering
#: pixels per cell side of :func:`render_rgb`
CELL_PX = 32
_SEEN = np.array([150, 200, 110], dtype=np.uint8)
_UNSEEN = np.array([60, 75, 55], dtype=np.uint8)
_GRID_LINE = np.array([110, 150, 85], dtype=np.uint8)
_CROSS = (20, 20, 20)


def render_text(header: str, cells: Sequence[str], size: int) -> str:
    """``header``, then one line of ``size`` characters per grid row (``cells``: one character per flat cell)."""
    return "\n".join([header] + ["".join(cells[r * size : (r + 1) * size]) for r in range(size)])


def render_rgb(size: int, occupants: Iterable[tuple[int, int]], seen: np.ndarray | None = None) -> np.ndarray:
    """A uint8 ``(size * 32, size * 32, 3)`` picture: ground, grid lines and one sprite per occupant.

    :param size: side of the grid.
    :param occupants: ``(cell, entity kind)`` pairs, drawn in this order (later on top).
    :param seen: flat bool array of the cells an agent sees, or ``None`` (everything seen). Unseen cells are
        shaded, and entities on them greyed and crossed out.
    """
    px = CELL_PX
    if seen is None:
        seen = np.ones(size * size, dtype=bool)
    cell_colour = np.where(seen[:, None], _SEEN, _UNSEEN).reshape(size, size, 3)
    img = np.repeat(np.repeat(cell_colour, px, axis=0), px, axis=1)
    img[::px, :] = _GRID_LINE
    img[:, ::px] = _GRID_LINE
    sprites = entity_sprites(px)
    for cell, kind in occupants:
        r, c = divmod(cell, size)
        block = img[r * px : (r + 1) * px, c * px : (c + 1) * px]
        shape, colour, dim = sprites[kind]
        if seen[cell]:
            block[shape] = colour[shape]
        else:
            block[shape] = dim[shape]
            block[sprites["cross"]] = _CROSS
    return img


@functools.lru_cache(maxsize=4)
def entity_sprites(px: int) -> dict[Any, Any]:
    """Per entity kind: (shape mask, colour image, dimmed colour image) of one ``px`` x ``px`` cell; and a cross.

    Cached (built once per cell size, not once per rendered frame); the arrays are shared, so read them only.
    """
    yy, xx = np.mgrid[0:px, 0:px].astype(float)
    u, v = (yy + 0.5) / px - 0.5, (xx + 0.5) / px - 0.5  # cell coordinates in [-0.5, 0.5]
    r2 = u**2 + v**2

    def image(parts: list[tuple[np.ndarray, tuple[int, int, int]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shape = np.zeros((px, px), dtype=bool)
        colour = np.zeros((px, px, 3), dtype=np.uint8)
        for m, col in parts:
            shape |= m
            colour[m] = col
        dim = (0.35 * colour + 0.65 * 120).astype(np.uint8)
        return shape, colour, dim

    eyes = ((u + 0.08) ** 2 + (np.abs(v) - 0.13) ** 2) < 0.07**2
    ears = ((u + 0.3) ** 2 + (np.abs(v) - 0.27) ** 2) < 0.1**2
    triangle = (u > -0.4) & (u < 0.3) & (np.abs(v) < (u + 0.4) * 0.55)
    out: dict[Any, Any] = {
        PANDA: image([(r2 < 0.36**2, (250, 250, 250)), (ears, (20, 20, 20)), (eyes, (20, 20, 20))]),
        WATERMELON: image([(r2 < 0.36**2, (30, 130, 40)), (r2 < 0.27**2, (230, 50, 70))]),
        SCORPION: image([(np.abs(u) + np.abs(v) < 0.38, (235, 150, 30)), (np.abs(u) + np.abs(v) < 0.12, (120, 60, 0))]),
        DRAGON: image(
            [(triangle | ((np.abs(u - 0.3) < 0.1) & (np.abs(v) < 0.38)), (200, 30, 30)), (eyes, (255, 220, 0))]
        ),
        TREE: image([((np.abs(v) < 0.07) & (u > 0.1) & (u < 0.42), (110, 70, 30)), (triangle, (20, 90, 35))]),
    }
    out["cross"] = (np.abs(np.abs(u) - np.abs(v)) < 0.04) & (np.abs(u) < 0.45)
    return out
