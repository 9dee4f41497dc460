"""Grid-world helpers shared by PandaGrid and the panda herd. Cells are flat indices ``row * size + col``."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

#: (row, col) offsets of the up, down, left and right moves
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))


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
