"""A small kart race with items, lanes and curves, where most actions are only sometimes possible.

.. list-table::
   :header-rows: 0

   * - Import
     - ``from maskrl.envs.kart import KartEnv`` or ``gymnasium.make("maskrl/Kart-v1")`` after ``import maskrl``
   * - Actions
     - ``Discrete(5 + n_item_types)``
   * - Observations
     - ``Dict({"observation": Box(-1, 1, (obs_size,), float32), "action_mask": MultiBinary(5 + n_item_types)})``
   * - Observation size
     - ``25 + 2 * n_lanes + 8 * n_opponents + n_item_types`` (59 with the defaults; 2 less in v0)
   * - Agents
     - 1 learning kart (kart 0) against ``n_opponents`` scripted karts

Description
-----------
A Mario-Kart-like race reduced to what matters for decision making. Karts drive along a looped track of
length 100 (position is 1-D, modulo the track length) in one of ``n_lanes`` discrete lanes. The track has three
curves with a speed limit each: a kart that is inside a curve faster than its limit *skids* (its speed drops to
half the limit and any boost ends), so a good driver brakes before curves. Three rows of item boxes
(at 10: every lane, at 40: the outer lanes, at 68: the middle lane) hand out a random item to a kart that drives
through them with room in its inventory; a taken box respawns after 25 steps. Items slow the others down (banana
traps, shells) or speed the user up (boosts, stars).

The opponents drive with a noisy rule-based policy (per-episode top speed and care in curves drawn from the
environment's RNG) and pick up and use items too, so the race is a contest: a driver that ignores its items
finishes clearly behind one that uses them well (see ``benchmarks/kart_baselines.py``).

The masking motivation: with an empty inventory every "use item" action is impossible, steering is impossible
at the edge of the road or while spinning, braking is impossible when standing still. The mask tells the agent so,
which matters most for large ``n_item_types``, where nearly all actions are invalid at any time.

Observation
-----------
``obs["observation"]`` is a float32 vector, every entry clipped to [-1, 1]. Distances are measured forward along
the track from the agent, in track lengths unless said otherwise. Layout (``KartEnv.obs_layout`` maps the block
names below to slices):

==========  =============================  =====================================================================
Block       Size                           Content
==========  =============================  =====================================================================
``self``    15                             race progress (fraction of the race, negative on the starting grid),
                                           position within the lap, laps completed / ``n_laps``, speed / 2,
                                           lane / (``n_lanes`` - 1), boost, star and spin timers (/ their
                                           longest duration), rank ((rank - 1) / ``n_opponents``), elapsed steps /
                                           ``max_steps``, speed limit here (1 on a straight), distance to the next
                                           curve, that curve's limit, distance to the end of the current curve
                                           (0 on a straight), free inventory slots / ``inventory_size``
``skid``    2 (0 in v0)                    skid warnings: 1 if accelerating (first entry), coasting (second
                                           entry; steering and using items coast too) this step still leaves a
                                           skid-free way through the curves ahead with full braking from the next
                                           step, else 0; 1 while starred or spinning; during a boost both say
                                           whether the boost's speed is safe this step
``lanes``   2 * ``n_lanes``                per lane: distance to the next available item box (1 if none), distance
                                           to the next trap / 20 (1 if none within 20)
``opps``    8 * ``n_opponents``            per opponent (fixed order): race progress difference, signed distance
                                           along the track / 50, lane difference / (``n_lanes`` - 1),
                                           speed / 2, spinning, starred, items held / ``inventory_size``, finished
``held``    8                              per base effect (boost, banana, shell, star): items held /
                                           ``inventory_size``, best strength held / 1.5
``inv``     ``n_item_types``               per item type: items held / ``inventory_size``
==========  =============================  =====================================================================

``obs["action_mask"]`` is the int8 0/1 validity of every action (the same as ``env.action_masks()``).

Actions
-------
=================  ==================  ====================================================================
Action             Name                Valid when
=================  ==================  ====================================================================
0                  ``COAST``           always (speed decays by 0.02)
1                  ``ACCELERATE``      always (+0.08 up to the kart's top speed)
2                  ``BRAKE``           the kart moves (-0.2)
3                  ``STEER_LEFT``      not in lane 0 and not spinning (the kart keeps coasting)
4                  ``STEER_RIGHT``     not in the last lane and not spinning (the kart keeps coasting)
5 + k              use item type k     an item of type k is held (the kart keeps coasting)
=================  ==================  ====================================================================

An invalid action is executed as ``COAST``; ``info["invalid_action"]`` says whether the action was invalid and
``invalid_action_penalty`` is added to that step's reward. An action outside the action space raises ``ValueError``.

Items
-----
Item type ``k`` has base effect ``k % 4`` and strength ``s(k) = 0.5 + ((k // 4) * 0.618... + 0.5) % 1`` in
[0.5, 1.5) (1 for types 0-3), which scales the item's duration ``round(base_duration * s(k))``. Boxes draw the type
uniformly from ``range(n_item_types)``.

====  ===========  =============  ==========================================================================
k%4   Effect       Base duration  What it does
====  ===========  =============  ==========================================================================
0     boost        8              top speed x1.5 for the duration (ends on a skid)
1     banana       8              trap dropped 1.5 behind the user in its lane; the next kart driving
                                  over it (the user included) spins for the duration (speed <= 0.25,
                                  no accelerating or steering); traps vanish after 150 steps
2     shell        10             hits the nearest kart ahead on the track within 30, which spins for the
                                  duration; wasted if there is none
3     star         15             immune to traps, shells and skids, top speed x1.15, for the duration
====  ===========  =============  ==========================================================================

Rewards
-------
Each step: ``3 * (distance driven / distance from the agent's grid slot to the finish)`` (a whole race sums to
3), plus, when the agent finishes,
``1 + 2 * (n_opponents + 1 - rank) / n_opponents`` (3 for a win, 1 for last place; 3 without opponents), plus
``invalid_action_penalty`` when the action was invalid.

Episode end
-----------
Terminated when the agent has driven ``n_laps`` laps. Truncated after ``max_steps`` steps.
``info`` always holds ``invalid_action`` (bool), ``rank`` (int, 1 = first) and ``lap`` (int, laps completed); at
the last step it also holds ``episode_stats``, a flat dict of floats: ``final_rank``, ``finished`` (0/1),
``items_collected``, ``items_used``, ``invalid_actions``, ``hits_taken`` (spins caused by traps or shells),
``hits_dealt`` (spins the agent's items caused to others), ``skids``, ``race_progress`` (fraction of the race
driven) and ``steps``. If the agent is not finished at truncation its rank is computed from race progress.
Calling ``step()`` again before ``reset()`` raises ``RuntimeError``.

Arguments
---------
``n_opponents=3`` (0-7), ``n_laps=2`` (1-10), ``n_item_types=4`` (1-4096), ``inventory_size=2`` (1-8),
``n_lanes=3`` (1-5), ``max_steps=400`` (>= 1), ``invalid_action_penalty=0.0``, ``skid_warnings=True`` (the ``skid``
block; ``False`` is v0), ``render_mode=None``
(``"ansi"``: one line of text per call; ``"rgb_array"``: a fixed-size top-down picture).

``reset(seed=...)`` fully determines the episode (grid order, opponents, item draws): the same seed and actions
give the same trajectory.

Version history
---------------
* v1: the ``skid`` block. Agents trained on v0 skid about 20 times a race, reading the next curve's distance and
  limit alone; on v1 the default agent skids 4-6 times and scores about half a point more (README, "The default
  Kart agent against the scripted drivers"). Everything else is unchanged: v0 is ``KartEnv(skid_warnings=False)``,
  step for step.
* v0: initial version; kept for the studies measured on it and the agents trained on it.
"""

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from maskrl.checks import check_bool, check_int, check_number
from maskrl.masks import ACTION_MASK_KEY

__all__ = [
    "ACCELERATE",
    "BANANA",
    "BOOST",
    "BRAKE",
    "COAST",
    "DRIVE_ACTION_NAMES",
    "EFFECT_NAMES",
    "N_BASE_EFFECTS",
    "N_DRIVE",
    "SHELL",
    "STAR",
    "STEER_LEFT",
    "STEER_RIGHT",
    "KartEnv",
    "item_duration",
    "item_strength",
    "scripted_action",
]

# Action indices; "use item k" is N_DRIVE + k.
COAST, ACCELERATE, BRAKE, STEER_LEFT, STEER_RIGHT = range(5)
N_DRIVE = 5
DRIVE_ACTION_NAMES = ("coast", "accelerate", "brake", "left", "right")

# Base effects of item types (item type k has base effect k % N_BASE_EFFECTS).
BOOST, BANANA, SHELL, STAR = range(4)
N_BASE_EFFECTS = 4
EFFECT_NAMES = ("boost", "banana", "shell", "star")
_BASE_DURATION = (8, 8, 10, 15)
_GOLDEN = 0.6180339887498949

# Track. Curves and box rows sit on integer positions so that "is position p in a curve" is a table lookup.
TRACK_LENGTH = 100
_L = float(TRACK_LENGTH)
_CURVES = ((22, 32, 0.70), (50, 58, 0.55), (78, 90, 0.80))  # (start, end, speed limit)
_BOX_ROWS = ((10, "all"), (40, "edges"), (68, "middle"))
_BOX_RESPAWN = 25
_GRID_GAP = 1.5

# Driving.
_MAX_SPEED = 1.0
_ACCEL = 0.08
_BRAKE = 0.2
_DRAG = 0.02
_OVERSPEED_DECAY = 0.1  # how fast a kart falls back to its top speed after a boost
_BOOST_FACTOR = 1.5
_STAR_FACTOR = 1.15
_SPIN_SPEED = 0.25
_HIT_SPEED = 0.1
_SKID_FACTOR = 0.5
_SPEED_NORM = 2.0

# Items in the world.
_TRAP_BACK = 1.5
_TRAP_LIFETIME = 150
_MAX_TRAPS = 16
_SHELL_RANGE = 30.0
_TRAP_LOOKAHEAD = 20.0

# Rewards.
_PROGRESS_REWARD = 3.0
_FINISH_BONUS = 1.0
_RANK_BONUS = 2.0

_RAND_BUFFER = 2048
_N_SELF = 15
_N_SKID = 2
_N_OPP = 8
_N_HELD = 2 * N_BASE_EFFECTS

# Lookup tables over the integer cells of the track.
_LIMIT_AT = [0.0] * TRACK_LENGTH  # speed limit of the curve covering the cell, 0.0 on straights
_CURVE_END_AT = [0] * TRACK_LENGTH
_NEXT_CURVE = [0] * TRACK_LENGTH  # index of the first curve starting strictly after the cell's start
for _start, _end, _limit in _CURVES:
    for _x in range(_start, _end):
        _LIMIT_AT[_x] = _limit
        _CURVE_END_AT[_x] = _end
for _x in range(TRACK_LENGTH):
    _NEXT_CURVE[_x] = min(range(len(_CURVES)), key=lambda c, x=_x: (_CURVES[c][0] - x - 1) % TRACK_LENGTH)
_MIN_LIMIT = min(c[2] for c in _CURVES)


def item_strength(k: int) -> float:
    """Strength of item type ``k`` in [0.5, 1.5): 1 for the first four types, then spread by the golden ratio.

    :param k: item type.
    :return: the factor that scales the base duration of the item's effect.
    """
    return 0.5 + ((k // N_BASE_EFFECTS) * _GOLDEN + 0.5) % 1.0


def item_duration(k: int) -> int:
    """Duration in steps of item type ``k``'s effect (for bananas and shells: how long the victim spins).

    :param k: item type.
    :return: ``round(base_duration * item_strength(k))``, at least 1.
    """
    return max(1, round(_BASE_DURATION[k % N_BASE_EFFECTS] * item_strength(k)))


def _speed_after(v: float, top: float, throttle: int) -> float:
    """Speed after one step of ``throttle`` (accelerate, brake, else coasting) from ``v`` with top speed ``top``,
    outside boosts and spins; above ``top`` (after a boost) the speed falls back by ``_OVERSPEED_DECAY`` a step."""
    if throttle == ACCELERATE:
        return v + _ACCEL if v + _ACCEL < top else max(top, v - _OVERSPEED_DECAY) if v > top else top
    v = max(0.0, v - (_BRAKE if throttle == BRAKE else _DRAG))
    return max(top, v - _OVERSPEED_DECAY) if v > top else v


def _fwd(target: float, pos: float) -> float:
    """Distance from ``pos`` forward along the track to ``target``, in [0, L)."""
    d = (target - pos) % _L
    return d if d < _L else 0.0


class KartEnv(gym.Env[dict[str, np.ndarray], np.int64]):
    """Kart race with items against scripted opponents; see the module docstring for the full specification.

    :param n_opponents: number of scripted opponents (0-7).
    :param n_laps: laps to drive (1-10).
    :param n_item_types: number of item types (>= 1); adds one "use item" action and one observation entry each.
    :param inventory_size: how many items a kart can hold (1-8).
    :param n_lanes: number of lanes (1-5).
    :param max_steps: truncation horizon (>= 1).
    :param invalid_action_penalty: added to the reward of every step whose action was invalid (pass e.g. -0.1).
    :param skid_warnings: whether the observation has the ``skid`` block (v1); ``False`` is v0.
    :param render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 20}

    def __init__(
        self,
        n_opponents: int = 3,
        n_laps: int = 2,
        n_item_types: int = 4,
        inventory_size: int = 2,
        n_lanes: int = 3,
        max_steps: int = 400,
        invalid_action_penalty: float = 0.0,
        skid_warnings: bool = True,
        render_mode: str | None = None,
    ) -> None:
        check_int("n_opponents", n_opponents, 0, 7)
        check_int("n_laps", n_laps, 1, 10)
        check_int("n_item_types", n_item_types, 1, 4096)
        check_int("inventory_size", inventory_size, 1, 8)
        check_int("n_lanes", n_lanes, 1, 5)
        check_int("max_steps", max_steps, 1, None)
        check_number("invalid_action_penalty", invalid_action_penalty)
        check_bool("skid_warnings", skid_warnings)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")

        self.n_opponents = n_opponents
        self.n_laps = n_laps
        self.n_item_types = n_item_types
        self.inventory_size = inventory_size
        self.n_lanes = n_lanes
        self.max_steps = max_steps
        self.invalid_action_penalty = float(invalid_action_penalty)
        self.skid_warnings = bool(skid_warnings)
        self.render_mode = render_mode

        self.n_karts = n_opponents + 1
        self.n_actions = N_DRIVE + n_item_types
        self.race_length = _L * n_laps

        # Per item type constants as plain lists: per-step code indexes them with Python ints.
        self._effect = [k % N_BASE_EFFECTS for k in range(n_item_types)]
        self._strength = [item_strength(k) for k in range(n_item_types)]
        self._duration = [item_duration(k) for k in range(n_item_types)]
        self._timer_norm = [_BASE_DURATION[e] * 1.5 for e in range(N_BASE_EFFECTS)]

        # Boxes: flat index row * n_lanes + lane; _box_exists marks the lanes a row covers.
        self._box_x = [float(x) for x, _ in _BOX_ROWS]
        self._box_exists = []
        for _, pattern in _BOX_ROWS:
            for lane in range(n_lanes):
                if pattern == "all":
                    self._box_exists.append(True)
                elif pattern == "edges":
                    self._box_exists.append(lane in (0, n_lanes - 1))
                else:
                    self._box_exists.append(lane == n_lanes // 2)

        self._lane_boxes = [
            [
                (r * n_lanes + lane, self._box_x[r])
                for r in range(len(_BOX_ROWS))
                if self._box_exists[r * n_lanes + lane]
            ]
            for lane in range(n_lanes)
        ]

        o = 0
        self.obs_layout: dict[str, slice] = {}
        for name, size in (
            ("self", _N_SELF),
            ("skid", _N_SKID if self.skid_warnings else 0),
            ("lanes", 2 * n_lanes),
            ("opps", _N_OPP * n_opponents),
            ("held", _N_HELD),
            ("inv", n_item_types),
        ):
            self.obs_layout[name] = slice(o, o + size)
            o += size
        self.obs_size = o
        self._n_dyn = self.obs_layout["inv"].start  # everything before the inventory is rebuilt every step

        self.action_space = spaces.Discrete(self.n_actions)
        self.observation_space = spaces.Dict(
            {
                "observation": spaces.Box(-1.0, 1.0, shape=(self.obs_size,), dtype=np.float32),
                ACTION_MASK_KEY: spaces.MultiBinary(self.n_actions),
            }
        )

        self._obs_buf = np.zeros(self.obs_size, dtype=np.float32)
        self._dyn_view = self._obs_buf[: self._n_dyn]
        self._inv_view = self._obs_buf[self._n_dyn :]
        self._mask = np.zeros(self.n_actions, dtype=np.int8)
        self._counts = np.zeros(n_item_types, dtype=np.int64)
        self._bg: np.ndarray | None = None
        self._needs_reset = True
        self._init_state()

    # ------------------------------------------------------------------ state
    def _init_state(self) -> None:
        n = self.n_karts
        self._t = 0
        self._d = [0.0] * n  # distance driven since the start line (negative on the grid)
        self._lane = [0] * n
        self._v = [0.0] * n
        self._vmax = [_MAX_SPEED] * n
        self._care = [1.0] * n  # probability that an opponent brakes properly for a curve
        self._boost = [0] * n
        self._star = [0] * n
        self._spin = [0] * n
        self._inv: list[list[int]] = [[] for _ in range(n)]
        self._finish = [-1.0] * n  # fractional finishing time, -1 while racing
        self._box_timer = [0] * len(self._box_exists)  # 0 = available
        self._traps: list[list[float]] = []  # [position, lane, spin duration, steps left, owner]
        self._counts[:] = 0
        self._inv_view[:] = 0.0
        self._mask[N_DRIVE:] = 0
        self._rank = self.n_karts
        self._last_action = -1
        self._last_invalid = False
        self._last_reward = 0.0
        self._stats = dict.fromkeys(
            ("items_collected", "items_used", "invalid_actions", "hits_taken", "hits_dealt", "skids"), 0
        )

    def _rand(self) -> float:
        # Uniforms are drawn in blocks (one numpy call per block); the stream is still fully set by self.np_random.
        i = self._ri
        if i == _RAND_BUFFER:
            self._rbuf = self.np_random.random(_RAND_BUFFER).tolist()
            i = 0
        self._ri = i + 1
        return self._rbuf[i]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start a new race; ``seed`` determines the whole episode given the actions. ``options`` is unused."""
        super().reset(seed=seed)
        self._init_state()
        self._rbuf = self.np_random.random(_RAND_BUFFER).tolist()
        self._ri = 0
        n = self.n_karts
        grid = self.np_random.permutation(n).tolist()
        for i in range(n):
            slot = grid[i]
            self._d[i] = -_GRID_GAP * slot
            self._lane[i] = slot % self.n_lanes
            if i > 0:
                # Opponents differ in top speed and in how carefully they take curves.
                self._vmax[i] = _MAX_SPEED * (0.95 + 0.1 * self._rand())
                self._care[i] = 0.75 + 0.25 * self._rand()
        # Normalise progress by the agent's own distance (grid slot included) so that every race sums to exactly 3.
        self._agent_distance = self.race_length - self._d[0]
        self._needs_reset = False
        self._update_rank()
        self._update_mask()
        return self._get_obs(), {"invalid_action": False, "rank": self._rank, "lap": 0}

    # ------------------------------------------------------------------ step
    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Advance the race by one step; an invalid action is executed as ``COAST``."""
        if self._needs_reset:
            raise RuntimeError("KartEnv.step() called before reset() or after the episode ended; call reset()")
        a = int(action)
        if not 0 <= a < self.n_actions:
            raise ValueError(f"action must be in [0, {self.n_actions}), got {action!r}")
        invalid = not self._mask[a]
        n = self.n_karts
        throttle = [COAST] * n
        if invalid:
            self._stats["invalid_actions"] += 1
        elif a in (ACCELERATE, BRAKE):
            throttle[0] = a
        elif a == STEER_LEFT:
            self._lane[0] -= 1
        elif a == STEER_RIGHT:
            self._lane[0] += 1
        elif a >= N_DRIVE:
            self._use_item(0, a - N_DRIVE)

        for i in range(1, n):
            if self._finish[i] < 0.0:
                throttle[i] = self._opponent_act(i)

        d_agent_before = self._d[0]
        for i in range(n):
            if self._finish[i] < 0.0:
                self._drive(i, throttle[i])

        self._t += 1
        if self._box_timer:
            self._box_timer = [b - 1 if b > 0 else 0 for b in self._box_timer]
        if self._traps:
            for trap in self._traps:
                trap[3] -= 1
            self._traps = [trap for trap in self._traps if trap[3] > 0]

        progress = min(self._d[0], self.race_length) - d_agent_before
        reward = _PROGRESS_REWARD * progress / self._agent_distance
        terminated = self._finish[0] >= 0.0
        self._update_rank()
        if terminated:
            reward += _FINISH_BONUS + _RANK_BONUS * ((n - self._rank) / (n - 1) if n > 1 else 1.0)
        if invalid:
            reward += self.invalid_action_penalty
        truncated = not terminated and self._t >= self.max_steps
        self._update_mask()
        self._last_action = a
        self._last_invalid = invalid
        self._last_reward = reward
        info: dict[str, Any] = {
            "invalid_action": invalid,
            "rank": self._rank,
            "lap": min(self.n_laps, int(max(self._d[0], 0.0) // _L)),
        }
        if terminated or truncated:
            self._needs_reset = True
            stats = {k: float(v) for k, v in self._stats.items()}
            stats["final_rank"] = float(self._rank)
            stats["finished"] = float(terminated)
            stats["race_progress"] = max(0.0, min(1.0, self._d[0] / self.race_length))
            stats["steps"] = float(self._t)
            info["episode_stats"] = stats
        return self._get_obs(), reward, terminated, truncated, info

    def _drive(self, i: int, throttle: int) -> None:
        """Update kart ``i``'s speed, move it and resolve curves, traps, boxes and the finish line."""
        v = self._v[i]
        if self._spin[i] > 0:
            v = min(v, _SPIN_SPEED)
            if throttle == BRAKE:
                v = max(0.0, v - _BRAKE)
            self._spin[i] -= 1
        else:
            top = self._vmax[i]
            if self._star[i] > 0:
                top *= _STAR_FACTOR
            if self._boost[i] > 0:
                top *= _BOOST_FACTOR
                v = top
                self._boost[i] -= 1
            else:
                v = _speed_after(v, top, throttle)
        if self._star[i] > 0:
            self._star[i] -= 1

        d0 = self._d[i]
        moved = v  # crossings and the finishing time use the distance actually driven, not the speed after a skid
        d = d0 + moved
        self._d[i] = d
        pos = d % _L
        cell = int(pos)
        if cell >= TRACK_LENGTH:  # d % L can round up to L for tiny negative d
            cell = 0
        limit = _LIMIT_AT[cell]
        if limit and v > limit and self._star[i] == 0:
            v = _SKID_FACTOR * limit
            self._boost[i] = 0
            if i == 0:
                self._stats["skids"] += 1
        if moved > 0.0:
            reach = moved + 1e-9
            lane = self._lane[i]
            if self._traps:
                for trap in self._traps:
                    if trap[1] == lane and trap[3] > 0 and 0.0 < _fwd(trap[0], d0) <= reach:
                        trap[3] = 0  # consumed: removed at the end of the step
                        if self._star[i] == 0:
                            v = min(v, _HIT_SPEED)
                            self._hit(i, int(trap[2]), int(trap[4]))
                        break
            if len(self._inv[i]) < self.inventory_size:
                for b, x in self._lane_boxes[lane]:
                    if self._box_timer[b] == 0 and 0.0 < _fwd(x, d0) <= reach:
                        self._box_timer[b] = _BOX_RESPAWN
                        k = int(self._rand() * self.n_item_types)
                        self._give_item(i, min(k, self.n_item_types - 1))
                        if i == 0:
                            self._stats["items_collected"] += 1
                        break
            if d >= self.race_length:
                self._finish[i] = self._t + 1.0 - (d - self.race_length) / moved
        self._v[i] = v

    def _hit(self, i: int, duration: int, owner: int) -> None:
        """Kart ``i`` spins for ``duration`` steps because of an item of kart ``owner``."""
        self._spin[i] = max(self._spin[i], duration)
        self._boost[i] = 0
        self._v[i] = min(self._v[i], _HIT_SPEED)
        if i == 0:
            self._stats["hits_taken"] += 1
        elif owner == 0:
            self._stats["hits_dealt"] += 1

    def _give_item(self, i: int, k: int) -> None:
        """Put item type ``k`` into kart ``i``'s inventory (the caller checks that there is room)."""
        self._inv[i].append(k)
        if i == 0:
            c = self._counts[k] + 1
            self._counts[k] = c
            self._inv_view[k] = c / self.inventory_size
            self._mask[N_DRIVE + k] = 1

    def _use_item(self, i: int, k: int) -> None:
        """Kart ``i`` uses one held item of type ``k``."""
        self._inv[i].remove(k)
        if i == 0:
            c = self._counts[k] - 1
            self._counts[k] = c
            self._inv_view[k] = c / self.inventory_size
            self._mask[N_DRIVE + k] = c > 0
            self._stats["items_used"] += 1
        effect = self._effect[k]
        duration = self._duration[k]
        if effect == BOOST:
            self._boost[i] = duration
        elif effect == STAR:
            self._star[i] = duration
        elif effect == BANANA:
            if len(self._traps) >= _MAX_TRAPS:
                self._traps.pop(0)  # the oldest trap disappears first
            self._traps.append([(self._d[i] - _TRAP_BACK) % _L, self._lane[i], duration, _TRAP_LIFETIME, i])
        else:
            j = self._shell_target(i)
            if j >= 0 and self._star[j] == 0:
                self._hit(j, duration, i)

    def _shell_target(self, i: int) -> int:
        """Nearest racing kart ahead of kart ``i`` on the track within shell range, or -1."""
        best, best_j = _SHELL_RANGE, -1
        d = self._d[i]
        for j in range(self.n_karts):
            if j != i and self._finish[j] < 0.0:
                ahead = _fwd(self._d[j], d)
                if 0.0 < ahead <= best:
                    best, best_j = ahead, j
        return best_j

    def _opponent_act(self, i: int) -> int:
        """Noisy rule-based opponent: may use its oldest item, may change lanes, returns its throttle."""
        d = self._d[i]
        pos = d % _L
        cell = int(pos) % TRACK_LENGTH
        v = self._v[i]
        spinning = self._spin[i] > 0
        inv = self._inv[i]
        if inv and not spinning:
            k = inv[0]
            effect = self._effect[k]
            u = self._rand()
            if effect == BOOST:
                use = u < 0.3 and _LIMIT_AT[cell] == 0.0 and _fwd(_CURVES[_NEXT_CURVE[cell]][0], pos) > 14.0
            elif effect == SHELL:
                use = u < 0.3 and self._shell_target(i) >= 0
            elif effect == BANANA:
                use = u < 0.06
            else:
                use = u < 0.1
            if use:
                self._use_item(i, k)
                return COAST
        if not spinning and self.n_lanes > 1:
            lane = self._lane[i]
            u = self._rand()
            steer = 0
            if self._traps:
                for trap in self._traps:
                    if trap[1] == lane and _fwd(trap[0], pos) < 3.0 + 3.0 * v:
                        steer = -1 if lane == self.n_lanes - 1 or (lane > 0 and u < 0.5) else 1
                        break
            if steer == 0 and u < 0.03:
                steer = -1 if lane > 0 and (u < 0.015 or lane == self.n_lanes - 1) else 1
            if steer:
                self._lane[i] = max(0, min(self.n_lanes - 1, lane + steer))
                return COAST
        if spinning:
            return ACCELERATE
        limit = _LIMIT_AT[cell]
        if limit == 0.0:
            c = _CURVES[_NEXT_CURVE[cell]]
            limit = c[2]
            dist = _fwd(c[0], pos)
            # Distance covered while braking from v down to the limit, plus one step of reaction.
            needed = v + (v * v - limit * limit) / (2.0 * _BRAKE) if v > limit else 0.0
            if dist > needed + v + _ACCEL:
                return ACCELERATE
        if self._star[i] > 0 or v + _ACCEL <= limit:
            return ACCELERATE
        if self._rand() > self._care[i]:
            return ACCELERATE  # careless: this kart will probably skid
        return BRAKE if v > limit else COAST

    # ------------------------------------------------------------------ observation & mask
    def _update_rank(self) -> None:
        # Finished karts rank by finishing time, the others by distance driven.
        f0 = self._finish[0]
        rank = 1
        if f0 >= 0.0:
            for j in range(1, self.n_karts):
                fj = self._finish[j]
                if 0.0 <= fj < f0:
                    rank += 1
        else:
            d0 = self._d[0]
            for j in range(1, self.n_karts):
                if self._finish[j] >= 0.0 or self._d[j] > d0:
                    rank += 1
        self._rank = rank

    def _update_mask(self) -> None:
        # Only the drive entries: the item entries are maintained by _give_item/_use_item.
        m = self._mask
        m[COAST] = 1
        m[ACCELERATE] = 1
        m[BRAKE] = self._v[0] > 0.0
        free = self._spin[0] == 0
        m[STEER_LEFT] = free and self._lane[0] > 0
        m[STEER_RIGHT] = free and self._lane[0] < self.n_lanes - 1

    def action_masks(self) -> np.ndarray:
        """Validity of every action as a bool array of shape ``(n_actions,)`` (MaskablePPO's convention)."""
        return self._mask.astype(bool)

    def _skid_warnings(self) -> list[float]:
        """The ``skid`` block: whether accelerating, and whether coasting, this step still leaves a skid-free way
        through the curves ahead (1.0) or makes a skid unavoidable even with full braking from the next step (0.0)."""
        if self._star[0] > 0 or self._spin[0] > 0:
            return [1.0, 1.0]  # starred karts cannot skid; spinning ones are slower than every curve's limit
        pos = self._d[0] % _L
        top = self._vmax[0]
        if self._boost[0] > 0:
            # The boost sets the speed whatever the driver does.
            safe = 1.0 if _safe(pos, top * _BOOST_FACTOR, top) else 0.0
            return [safe, safe]
        v = self._v[0]
        return [
            1.0 if _safe(pos, _speed_after(v, top, ACCELERATE), top) else 0.0,
            1.0 if _safe(pos, _speed_after(v, top, COAST), top) else 0.0,
        ]

    def _get_obs(self) -> dict[str, np.ndarray]:
        d = self._d[0]
        pos = d % _L
        cell = int(pos) % TRACK_LENGTH
        lane = self._lane[0]
        lane_norm = 1.0 / max(1, self.n_lanes - 1)
        limit = _LIMIT_AT[cell]
        nxt = _CURVES[_NEXT_CURVE[cell]]
        isz = self.inventory_size
        inv = self._inv[0]
        tn = self._timer_norm
        vals = [
            d / self.race_length,
            pos / _L,
            min(self.n_laps, max(d, 0.0) // _L) / self.n_laps,
            self._v[0] / _SPEED_NORM,
            lane * lane_norm,
            self._boost[0] / tn[BOOST],
            self._star[0] / tn[STAR],
            self._spin[0] / tn[SHELL],
            (self._rank - 1) / max(1, self.n_karts - 1),
            self._t / self.max_steps,
            limit / _MAX_SPEED if limit else 1.0,
            _fwd(nxt[0], pos) / _L,
            nxt[2] / _MAX_SPEED,
            _fwd(_CURVE_END_AT[cell], pos) / _L if limit else 0.0,
            (isz - len(inv)) / isz,
        ]
        if self.skid_warnings:
            vals += self._skid_warnings()
        nl = self.n_lanes
        timer = self._box_timer
        for ln in range(nl):
            box = 1.0
            for b, x in self._lane_boxes[ln]:
                if timer[b] == 0:
                    ahead = ((x - pos) % _L) / _L
                    if ahead < box:
                        box = ahead
            trap_dist = 1.0
            for trap in self._traps:
                if trap[1] == ln and trap[3] > 0:
                    ahead = ((trap[0] - pos) % _L) / _TRAP_LOOKAHEAD
                    if ahead < trap_dist:
                        trap_dist = ahead
            vals.append(box)
            vals.append(trap_dist)
        half = _L / 2.0
        ds, lanes, vs, spin, star, invs, finish = (
            self._d,
            self._lane,
            self._v,
            self._spin,
            self._star,
            self._inv,
            self._finish,
        )
        for j in range(1, self.n_karts):
            dj = ds[j]
            vals += [
                (dj - d) / _L,
                ((dj - d + half) % _L - half) / half,
                (lanes[j] - lane) * lane_norm,
                vs[j] / _SPEED_NORM,
                1.0 if spin[j] > 0 else 0.0,
                1.0 if star[j] > 0 else 0.0,
                len(invs[j]) / isz,
                1.0 if finish[j] >= 0.0 else 0.0,
            ]
        held = [0.0] * _N_HELD
        for k in inv:
            e = self._effect[k]
            held[2 * e] += 1.0 / isz
            s = self._strength[k] / 1.5
            if s > held[2 * e + 1]:
                held[2 * e + 1] = s
        vals += held
        dyn = self._dyn_view
        dyn[:] = vals
        # Clip to the observation space's [-1, 1], in place.
        np.minimum(dyn, 1.0, out=dyn)
        np.maximum(dyn, -1.0, out=dyn)
        return {"observation": self._obs_buf.copy(), ACTION_MASK_KEY: self._mask.copy()}

    # ------------------------------------------------------------------ rendering
    def render(self) -> str | np.ndarray | None:
        """Render the current state: one line of text (``"ansi"``) or a uint8 (H, W, 3) image (``"rgb_array"``)."""
        if self.render_mode == "ansi":
            return self._render_ansi()
        if self.render_mode == "rgb_array":
            return self._render_rgb()
        return None

    def _render_ansi(self) -> str:
        width = 50
        scale = width / _L
        bar = ["~" if _LIMIT_AT[int(x / scale)] else "-" for x in range(width)]
        for r, x in enumerate(self._box_x):
            if any(
                self._box_exists[r * self.n_lanes + ln] and self._box_timer[r * self.n_lanes + ln] == 0
                for ln in range(self.n_lanes)
            ):
                bar[int(x * scale)] = "?"
        for trap in self._traps:
            bar[min(width - 1, int(trap[0] * scale))] = "*"
        for j in range(self.n_karts - 1, -1, -1):  # the agent is drawn last so it is always visible
            if self._finish[j] < 0.0 or j == 0:
                bar[min(width - 1, int((self._d[j] % _L) * scale))] = "A" if j == 0 else str(j)
        inv = ",".join(f"{EFFECT_NAMES[self._effect[k]]}{k}" for k in self._inv[0]) or "-"
        a = self._last_action
        act = "-" if a < 0 else DRIVE_ACTION_NAMES[a] if a < N_DRIVE else f"use{a - N_DRIVE}"
        effects = "".join(c for c, t in (("B", self._boost[0]), ("S", self._star[0]), ("X", self._spin[0])) if t > 0)
        lap = min(self.n_laps, int(max(self._d[0], 0.0) // _L) + 1)
        return (
            f"t={self._t:4d} lap {lap}/{self.n_laps} |{''.join(bar)}| lane {self._lane[0]} v={self._v[0]:.2f} "
            f"{effects or '.':3s} inv[{inv}] rank {self._rank}/{self.n_karts} act={act}"
            f"{'(invalid)' if self._last_invalid else ''} r={self._last_reward:+.3f}"
        )

    _PX = 4  # pixels per track unit
    _LANE_H = 16
    _HUD_H = 20
    _KART_COLORS = np.array(
        [
            [230, 40, 40],
            [40, 90, 230],
            [40, 180, 60],
            [170, 60, 200],
            [240, 140, 20],
            [20, 190, 190],
            [120, 80, 40],
            [250, 120, 180],
        ],
        dtype=np.uint8,
    )
    _EFFECT_COLORS = np.array([[255, 140, 0], [240, 220, 40], [40, 200, 70], [255, 255, 255]], dtype=np.uint8)

    def _background(self) -> np.ndarray:
        w = TRACK_LENGTH * self._PX
        h = self._HUD_H + self.n_lanes * self._LANE_H
        bg = np.zeros((h, w, 3), dtype=np.uint8)
        bg[: self._HUD_H] = (30, 30, 30)
        road = bg[self._HUD_H :]
        road[:] = (90, 90, 90)
        for start, end, limit in _CURVES:
            # Sharper curves are drawn darker and redder.
            shade = int(60 + 60 * limit)
            road[:, start * self._PX : end * self._PX] = (shade + 40, shade, shade)
        for ln in range(1, self.n_lanes):
            road[ln * self._LANE_H, ::6] = (220, 220, 220)
        road[:, 0:2] = (255, 255, 255)  # start/finish line
        return bg

    def _render_rgb(self) -> np.ndarray:
        if self._bg is None:
            self._bg = self._background()
        img = self._bg.copy()
        px, lh, top = self._PX, self._LANE_H, self._HUD_H
        for b, exists in enumerate(self._box_exists):
            if exists and self._box_timer[b] == 0:
                r, ln = divmod(b, self.n_lanes)
                x = int(self._box_x[r]) * px
                y = top + ln * lh + lh // 2
                img[y - 3 : y + 4, x - 3 : x + 4] = (250, 200, 0)
        for trap in self._traps:
            x = int(trap[0] * px)
            y = top + int(trap[1]) * lh + lh // 2
            img[y - 2 : y + 3, max(0, x - 2) : x + 3] = (250, 240, 60)
        w = img.shape[1]
        for j in range(self.n_karts - 1, -1, -1):
            if self._finish[j] >= 0.0 and j != 0:
                continue
            x = int((self._d[j] % _L) * px)
            y = top + self._lane[j] * lh + 3
            x0, x1 = max(0, x - 8), min(w, x + 1)
            color = self._KART_COLORS[j % len(self._KART_COLORS)]
            if self._spin[j] > 0:
                color = color // 2
            img[y : y + lh - 6, x0:x1] = color
            if self._star[j] > 0:
                img[y : y + 2, x0:x1] = 255
            if self._boost[j] > 0:
                img[y + lh - 8 : y + lh - 6, x0:x1] = (255, 140, 0)
        # HUD: inventory slots, speed bar, race progress bar, rank pips.
        for s in range(self.inventory_size):
            x = 4 + s * 18
            img[3:17, x : x + 14] = (70, 70, 70)
            if s < len(self._inv[0]):
                img[5:15, x + 2 : x + 12] = self._EFFECT_COLORS[self._effect[self._inv[0][s]]]
        x0 = 8 + self.inventory_size * 18
        speed_px = int(min(1.0, self._v[0] / _SPEED_NORM) * 100)
        img[4:9, x0 : x0 + speed_px] = (80, 200, 255)
        prog_px = int(max(0.0, min(1.0, self._d[0] / self.race_length)) * 100)
        img[11:16, x0 : x0 + prog_px] = (230, 40, 40)
        x1 = x0 + 110
        for r in range(self.n_karts - self._rank + 1):
            img[5:15, x1 + r * 8 : x1 + r * 8 + 6] = (255, 215, 0)
        return img


# ---------------------------------------------------------------------- scripted driver
def _safe(pos: float, v: float, top: float = math.inf) -> bool:
    """Whether a kart at track position ``pos`` that moves at speed ``v`` this step can still avoid every skid.

    Simulates this step at ``v`` and then full braking until the speed is below every curve's limit. Above the top
    speed ``top`` (after a boost) braking also loses the overspeed decay; the scripted driver leaves ``top`` out
    and so brakes a little early after boosts, which keeps its published scores.
    """
    while True:
        pos += v
        limit = _LIMIT_AT[int(pos % _L) % TRACK_LENGTH]
        if limit and v > limit:
            return False
        if v <= _MIN_LIMIT:
            return True
        v = _speed_after(v, top, BRAKE)


def _throttle(env: KartEnv, i: int) -> int:
    """The fastest of accelerate / coast / brake after which kart ``i`` can still take the next curves cleanly."""
    v = env._v[i]
    if env._spin[i] > 0:
        return ACCELERATE  # ignored while spinning, and always valid
    if env._star[i] > 0 or env._boost[i] > 0:
        return ACCELERATE
    top = env._vmax[i]
    pos = env._d[i] % _L
    if _safe(pos, _speed_after(v, top, ACCELERATE)):
        return ACCELERATE
    if _safe(pos, _speed_after(v, top, COAST)) or v == 0.0:
        return COAST
    return BRAKE


def _traps_ahead(env: KartEnv, pos: float, lane: int, horizon: float) -> bool:
    return any(t[1] == lane and t[3] > 0 and 0.0 < _fwd(t[0], pos) <= horizon for t in env._traps)


def scripted_action(env: KartEnv | gym.Env, use_items: bool = True) -> int:
    """A reasonable heuristic driver for the agent's kart, reading the environment's internal state.

    It brakes just enough to take curves without skidding, steers around traps ahead and towards item boxes while
    it has room, and (with ``use_items``) uses items: boosts on long straights, shells when a kart is close ahead,
    bananas when a kart is close behind in the same lane (or to make room before a box), stars before curves and
    traps. Without ``use_items`` it drives the same way and collects items but never uses them.

    :param env: a :class:`KartEnv`, possibly wrapped.
    :param use_items: whether the driver may use items.
    :return: an action that is valid in the current state.
    """
    e: KartEnv = env.unwrapped  # type: ignore[assignment]
    mask = e._mask
    d = e._d[0]
    pos = d % _L
    cell = int(pos) % TRACK_LENGTH
    lane = e._lane[0]
    v = e._v[0]
    spinning = e._spin[0] > 0
    inv = e._inv[0]
    nxt = _CURVES[_NEXT_CURVE[cell]]
    dist_curve = _fwd(nxt[0], pos)

    if use_items and inv and not spinning:
        for k in sorted(set(inv), key=lambda k: -e._strength[k]):
            effect = e._effect[k]
            duration = e._duration[k]
            if effect == BOOST:
                top = e._vmax[0] * _BOOST_FACTOR
                # Only boost when the whole boost plus braking back down fits before the next curve.
                if e._boost[0] == 0 and _LIMIT_AT[cell] == 0.0 and dist_curve > top * (duration + 3):
                    return N_DRIVE + k
            elif effect == SHELL:
                j = e._shell_target(0)
                if j >= 0 and e._star[j] == 0 and e._spin[j] == 0 and _fwd(e._d[j], d) < 20.0:
                    return N_DRIVE + k
            elif effect == BANANA:
                behind = any(
                    j != 0 and e._finish[j] < 0.0 and e._lane[j] == lane and 0.0 < _fwd(d, e._d[j]) < 8.0
                    for j in range(e.n_karts)
                )
                box_soon = len(inv) == e.inventory_size and any(
                    e._box_exists[r * e.n_lanes + lane] and 0.0 < _fwd(x, pos) < 4.0 for r, x in enumerate(e._box_x)
                )
                if behind or box_soon:
                    return N_DRIVE + k
            elif (
                e._star[0] == 0
                and e._boost[0] == 0
                and ((dist_curve < 2.0 * v + 1.0 and _LIMIT_AT[cell] == 0.0) or _traps_ahead(e, pos, lane, 4.0))
            ):
                return N_DRIVE + k

    throttle = _throttle(e, 0)
    if not spinning and e.n_lanes > 1:
        horizon = 3.0 + 4.0 * v
        target = lane
        if e._star[0] == 0 and _traps_ahead(e, pos, lane, horizon):
            for cand in (lane - 1, lane + 1):
                if 0 <= cand < e.n_lanes and not _traps_ahead(e, pos, cand, horizon):
                    target = cand
                    break
        elif len(inv) < e.inventory_size:
            best = (25.0, 0)
            for r, x in enumerate(e._box_x):
                ahead = _fwd(x, pos)
                for ln in range(e.n_lanes):
                    b = r * e.n_lanes + ln
                    key = (ahead, abs(ln - lane))
                    # Reachable: one lane change per step, and the box must be back when we arrive.
                    if (
                        e._box_exists[b]
                        and key < best
                        and ahead > abs(ln - lane) * max(v, 0.3)
                        and e._box_timer[b] * max(v, 0.3) < ahead
                        and not _traps_ahead(e, pos, ln, ahead)
                    ):
                        best, target = key, ln
        if target != lane and throttle != BRAKE:
            action = STEER_LEFT if target < lane else STEER_RIGHT
            if mask[action]:
                return action
    if not mask[throttle]:
        throttle = COAST
    return throttle
