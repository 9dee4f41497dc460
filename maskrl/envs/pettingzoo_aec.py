"""A turn-based PettingZoo game seen by one player: a single-agent gymnasium env for self-play with masks.

.. list-table::
   :header-rows: 0

   * - Import
     - ``from maskrl.envs.pettingzoo_aec import PettingZooAECEnv``; ``train.py --env
       pettingzoo:classic/connect_four_v3`` (any AEC game of PettingZoo's registry or of a
       ``pettingzoo.<family>.<name>`` module)
   * - Wraps
     - a PettingZoo ``AECEnv`` whose players share one ``Dict`` observation space holding ``"action_mask"`` and
       one ``Discrete`` action space (connect four, tic-tac-toe, chess, go, ...)
   * - Actions
     - the game's ``Discrete`` action space, for the learner's seat
   * - Observation
     - the learner's own PettingZoo observation ``{"observation", "action_mask"}`` (the mask as int8)
   * - Reward
     - the learner's rewards between two of its moves (connect four: +1 win, -1 loss, 0 otherwise)

Description
-----------
The learner plays one seat of the game; every other seat is played by an opponent (see
:mod:`maskrl.agents.self_play`), whose moves are made inside :meth:`PettingZooAECEnv.step` (and inside
:meth:`~PettingZooAECEnv.reset` when the opponent moves first). A step is therefore one move of the learner and the
replies up to its next turn; the episode is one game. The opponent is drawn per game from an opponent pool
(``opponent="pool"``, the default: a random valid player, which a :class:`~maskrl.agents.self_play.SelfPlayCallback`
joins with frozen snapshots of the learner as it improves) or fixed (``"random"``, ``"lookahead"``, or any object
with ``name`` and ``act(observation, rng)``). Opponents see their own observation (PettingZoo gives each player the
board from its side), so a snapshot of the learner can play either seat.

Seats: ``seat="alternate"`` (default) gives the learner the first seat in even games and the second in odd ones
(``possible_agents`` order; with more players it cycles; a seeded reset starts again from the first seat),
``"random"`` draws it, an int fixes it; ``reset(options={"seat": k})`` fixes it for one game.

Episode end
-----------
The game's end (the learner terminated or truncated) ends the episode. The last step's ``info`` holds
``outcome`` (``"win"``, ``"draw"`` or ``"loss"``, from the sign of the learner's return), ``opponent`` (the
opponent's name) and ``episode_stats`` (floats: ``win``, ``draw``, ``loss``, ``seat``, ``moves``), which
``evaluate.py`` turns into win/draw/loss rates. Every step's ``info`` holds ``invalid_action``: an invalid move
is passed on to the game, whose own rule decides (PettingZoo's classic games end the game with -1 for the player
who made it). The observation that ends a game allows every move when the game masks them all (it is never acted
on), so no distribution is built on an empty mask.

Seeding: ``reset(seed=...)`` seeds the view's generator (the seats, the opponents' draws and random moves) and the
game; the same seed and moves give the same game. :meth:`PettingZooAECEnv.action_masks` gives the learner's mask
as booleans (sb3-contrib's convention). ``render()`` is the game's (``render_mode="rgb_array"`` for videos); a
frame after a step shows the opponent's reply too.

Arguments
---------
``env_fn`` (builds the ``AECEnv`` from ``game_kwargs``, and from ``render_mode`` when one is given),
``opponent="pool"``, ``seat="alternate"``, ``render_mode=None``, ``**game_kwargs``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from pettingzoo import AECEnv

from maskrl.envs.pettingzoo_vec_env import check_agent_spaces
from maskrl.masks import ACTION_MASK_KEY

__all__ = ["SEATS", "PettingZooAECEnv"]

#: The seat rules besides a fixed seat index.
SEATS = ("alternate", "random")


class PettingZooAECEnv(gym.Env[dict[str, np.ndarray], int]):
    """One seat of a turn-based PettingZoo game against opponents; see the module docstring.

    :param env_fn: builds the ``AECEnv`` (e.g. ``pettingzoo.classic.connect_four_v3.env``)
    :param opponent: ``"pool"``, ``"random"``, ``"lookahead"``, an opponent object or an
        :class:`~maskrl.agents.self_play.OpponentPool`
    :param seat: ``"alternate"``, ``"random"`` or a seat index
    :param render_mode: passed to ``env_fn`` when given
    :param game_kwargs: passed to ``env_fn``
    :raises ValueError: in one line, for a game whose spaces do not fit
        (:func:`~maskrl.envs.pettingzoo_vec_env.check_agent_spaces`), an unknown opponent or seat
    """

    def __init__(
        self,
        env_fn: Callable[..., AECEnv],
        opponent: Any = "pool",
        seat: str | int = "alternate",
        render_mode: str | None = None,
        **game_kwargs: Any,
    ) -> None:
        from maskrl.agents.self_play import OpponentPool, make_opponent  # the agents' side: torch, SB3

        extra = {"render_mode": render_mode} if render_mode is not None else {}
        self.game: AECEnv = env_fn(**game_kwargs, **extra)
        self.observation_space, self.action_space = check_agent_spaces(self.game)
        self.players: list[Any] = list(self.game.possible_agents)
        if isinstance(seat, bool) or not (seat in SEATS or isinstance(seat, int | np.integer)):
            raise ValueError(f"seat must be {', '.join(SEATS)} or a seat index, got {seat!r}")
        if isinstance(seat, int | np.integer) and not 0 <= seat < len(self.players):
            raise ValueError(f"seat must be in [0, {len(self.players)}) for {len(self.players)} players, got {seat}")
        self.seat_rule = seat
        self.opponent = make_opponent(opponent) if isinstance(opponent, str) else opponent
        self._pool_class = OpponentPool
        self.render_mode = render_mode
        game_meta = getattr(self.game, "metadata", {}) or {}
        self.metadata = {
            "render_modes": list(game_meta.get("render_modes", [])),
            "render_fps": game_meta.get("render_fps", 4),
            "name": game_meta.get("name"),
        }
        self._games = 0
        self._game_seeded = False
        self._needs_reset = True
        self.learner: Any = self.players[0]
        self._current: Any = self.opponent

    @property
    def opponent_name(self) -> str:
        """The opponent's (or the pool's) name: ``"pool"`` tells the self-play callback that this env trains."""
        return str(self.opponent.name)

    def add_opponent(self, opponent: Any) -> None:
        """Add an opponent (a snapshot of the learner) to the pool; refused when the opponent is fixed."""
        if not isinstance(self.opponent, self._pool_class):
            raise ValueError(f"the opponent is fixed ({self.opponent_name}): only a pool takes new opponents")
        self.opponent.add(opponent)

    # ------------------------------------------------------------------ the game
    def _observe(self, agent: Any) -> dict[str, np.ndarray]:
        obs = self.game.observe(agent)
        seen = {key: np.asarray(obs[key], dtype=self.observation_space[key].dtype) for key in self.observation_space}
        if not seen[ACTION_MASK_KEY].any():
            # A game over (games mask every move of a player whose turn it is not): allow every move, so that no
            # distribution is ever built on an empty mask. Nothing acts on this observation.
            seen[ACTION_MASK_KEY] = np.ones_like(seen[ACTION_MASK_KEY])
        self._last_obs = seen
        return seen

    def _over(self) -> bool:
        return bool(self.game.terminations.get(self.learner, True) or self.game.truncations.get(self.learner, True))

    def _play(self, action: int | None) -> None:
        """One ``game.step``; the learner's reward of it is added to the step's."""
        self.game.step(action)
        self._reward += float(self.game.rewards.get(self.learner, 0.0))

    def _reply(self) -> None:
        """The other seats move until it is the learner's turn again or the game is over."""
        while not self._over() and self.game.agent_selection != self.learner:
            agent = self.game.agent_selection
            if self.game.terminations.get(agent) or self.game.truncations.get(agent):
                self._play(None)  # a player that is out (games of more than two) only leaves
                continue
            self._play(int(self._current.act(self.game.observe(agent), self.np_random)))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start a game: the learner's seat and opponent are drawn, the opponent moves first when it should."""
        super().reset(seed=seed)
        if seed is not None:
            self._games = 0  # a seeded reset starts the alternation again: the same seed, the same game
            self.game.reset(seed=seed)
        elif not self._game_seeded:
            # An unseeded first reset still gives a game tied to the view's generator.
            self.game.reset(seed=int(self.np_random.integers(2**31)))
        else:
            self.game.reset()
        self._game_seeded = True
        seat = (options or {}).get("seat", self.seat_rule)
        if seat == "alternate":
            seat = self._games % len(self.players)
        elif seat == "random":
            seat = int(self.np_random.integers(len(self.players)))
        self.learner = self.players[int(seat)]
        self._games += 1
        self._current = (
            self.opponent.sample(self.np_random) if isinstance(self.opponent, self._pool_class) else self.opponent
        )
        self._reward = 0.0
        self._return = 0.0
        self._moves = 0
        self._needs_reset = False
        self._reply()
        return self._observe(self.learner), {"seat": int(seat), "opponent": str(self._current.name)}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """The learner's move, then the others' until its next turn; returns the learner's reward in between."""
        if self._needs_reset:
            raise RuntimeError("PettingZooAECEnv.step() called before reset() or after the game ended; call reset()")
        action = int(np.asarray(action).reshape(-1)[0])
        if not 0 <= action < int(self.action_space.n):
            raise ValueError(f"action must be in [0, {int(self.action_space.n)}), got {action}")
        mask = self._last_obs[ACTION_MASK_KEY]
        self._reward = 0.0
        self._play(action)
        self._moves += 1
        self._reply()
        reward = self._reward
        self._return += reward
        terminated = bool(self.game.terminations.get(self.learner, True))
        truncated = not terminated and bool(self.game.truncations.get(self.learner, False))
        info: dict[str, Any] = {"invalid_action": not bool(mask[action])}
        if terminated or truncated:
            self._needs_reset = True
            outcome = "win" if self._return > 0 else "loss" if self._return < 0 else "draw"
            info["outcome"] = outcome
            info["opponent"] = str(self._current.name)
            info["episode_stats"] = {
                "win": float(outcome == "win"),
                "draw": float(outcome == "draw"),
                "loss": float(outcome == "loss"),
                "seat": float(self.players.index(self.learner)),
                "moves": float(self._moves),
            }
        return self._observe(self.learner), reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """The learner's current mask as booleans (sb3-contrib's ``MaskablePPO`` convention)."""
        return self._last_obs[ACTION_MASK_KEY].astype(bool)

    def render(self) -> Any:
        """The game's render (an ``rgb_array`` frame, a text, or ``None``)."""
        return self.game.render()

    def close(self) -> None:
        """Close the game."""
        self.game.close()
