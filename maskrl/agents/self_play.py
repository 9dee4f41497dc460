"""Self-play for turn-based games: opponents, the opponent pool and the callback that grows it.

The learner plays a PettingZoo AEC game through :class:`~maskrl.envs.pettingzoo_aec.PettingZooAECEnv`, which asks
an opponent for every move of the other seats. An opponent is anything with a ``name`` and an
``act(observation, rng) -> action`` method, where ``observation`` is the acting player's own PettingZoo
observation (``{"observation", "action_mask"}``, seen from its side of the board) and ``rng`` the env's generator.

- :class:`RandomOpponent`: a random valid move (the mask's uniform distribution);
- :class:`LookaheadOpponent`: one-step look-ahead for connect four and tic-tac-toe: wins if it can, blocks the
  other player's winning move if it must, else moves at random;
- :class:`PolicyOpponent`: a frozen snapshot of a trained policy, sampling its (masked) distribution with the
  env's generator, so that the learner's own random generators are never touched;
- :class:`OpponentPool`: the opponents a training env draws from, one per episode: the random player first,
  then the snapshots (at most ``max_snapshots``, the oldest dropped first);
- :class:`SelfPlayCallback`: an SB3 callback that watches the training episodes' outcomes and, when the learner's
  win rate against the pool over the last ``window`` games reaches ``threshold``, adds a snapshot of its policy to
  the pool of every training env (``env_method("add_opponent", ...)``, so ``SubprocVecEnv`` workers get it too).

:func:`make_opponent` turns the names ``evaluate.py --opponent`` takes (:data:`OPPONENT_NAMES`) into opponents.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecEnv

from maskrl.masks import ACTION_MASK_KEY

__all__ = [
    "EVALUATION_OPPONENTS",
    "OPPONENT_NAMES",
    "LookaheadOpponent",
    "Opponent",
    "OpponentPool",
    "PolicyOpponent",
    "RandomOpponent",
    "SelfPlayCallback",
    "make_opponent",
    "training_callbacks",
]

#: The opponents known by name: ``pool`` is the training pool (the random player until snapshots join it).
OPPONENT_NAMES = ("random", "lookahead", "pool")
#: The fixed opponents a model is evaluated against (``evaluate.py --opponent``).
EVALUATION_OPPONENTS = ("random", "lookahead")


@runtime_checkable
class Opponent(Protocol):
    """What the AEC view asks for the moves of the seats the learner does not play."""

    name: str

    def act(self, observation: dict[str, np.ndarray], rng: np.random.Generator) -> int:
        """A move for the player whose observation (its own view, with its ``"action_mask"``) this is."""
        ...


def _valid_actions(observation: dict[str, np.ndarray]) -> np.ndarray:
    valid = np.flatnonzero(np.asarray(observation[ACTION_MASK_KEY]))
    if valid.size == 0:
        raise ValueError("the observation's action mask allows no action: it is not this player's turn")
    return valid


class RandomOpponent:
    """A uniformly random valid move."""

    name = "random"

    def act(self, observation: dict[str, np.ndarray], rng: np.random.Generator) -> int:
        """A random action among those the mask allows."""
        valid = _valid_actions(observation)
        return int(valid[rng.integers(valid.size)])


class LookaheadOpponent:
    """One-step look-ahead for connect four (``(6, 7, 2)`` boards) and tic-tac-toe (``(3, 3, 2)``).

    Among the valid moves: one that wins at once if there is one; else one that takes the cell where the other
    player would win at once (a block); else a random one. Ties are broken at random. The board is read from the
    observation alone (channel 0: the acting player's pieces, channel 1: the other player's, PettingZoo's layout):
    in connect four a move is a column and the piece falls to its lowest empty cell; in tic-tac-toe a move is the
    cell ``(action // 3, action % 3)`` of the observation.
    """

    name = "lookahead"

    #: board shape -> (pieces in a row that win, whether pieces fall down the column)
    GAMES: dict[tuple[int, int], tuple[int, bool]] = {(6, 7): (4, True), (3, 3): (3, False)}

    @classmethod
    def supports(cls, observation_space: Any) -> bool:
        """Whether the player knows the game of ``observation_space`` (a ``Dict`` with an ``"observation"`` board)."""
        board = getattr(observation_space, "spaces", {}).get("observation")
        shape = getattr(board, "shape", None)
        return shape is not None and len(shape) == 3 and shape[2] == 2 and tuple(shape[:2]) in cls.GAMES

    def act(self, observation: dict[str, np.ndarray], rng: np.random.Generator) -> int:
        """Win, else block, else a random valid move."""
        board = np.asarray(observation["observation"])
        shape = board.shape[:2]
        if board.ndim != 3 or board.shape[2] != 2 or shape not in self.GAMES:
            raise ValueError(
                "the look-ahead player knows connect four (6, 7, 2) and tic-tac-toe (3, 3, 2) boards, "
                f"got {board.shape}"
            )
        valid = _valid_actions(observation)
        for player in (0, 1):  # 0: a move of ours that wins; 1: a cell where the other player would win
            moves = [int(a) for a in valid if self.wins_after(board, int(a), player)]
            if moves:
                return moves[int(rng.integers(len(moves)))]
        return int(valid[rng.integers(valid.size)])

    def wins_after(self, board: np.ndarray, action: int, player: int) -> bool:
        """Whether ``player`` (0: the one to move, 1: the other) has a line after putting a piece at ``action``."""
        need, falls = self.GAMES[board.shape[:2]]
        cell = self.landing_cell(board, action, falls)
        if cell is None:
            return False
        occupied = board[:, :, player].astype(bool).copy()
        occupied[cell] = True
        return _line_through(occupied, cell, need)

    @staticmethod
    def landing_cell(board: np.ndarray, action: int, falls: bool) -> tuple[int, int] | None:
        """The cell a piece played at ``action`` lands on, or ``None`` when it has no room there."""
        taken = board.any(axis=2)
        if falls:
            empty = np.flatnonzero(~taken[:, action])
            return (int(empty[-1]), action) if empty.size else None
        row, col = divmod(action, board.shape[1])
        return None if taken[row, col] else (row, col)


def _line_through(occupied: np.ndarray, cell: tuple[int, int], need: int) -> bool:
    """Whether ``need`` occupied cells in a row (any of the 4 directions) pass through ``cell``."""
    rows, cols = occupied.shape
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        count = 1
        for sign in (1, -1):
            r, c = cell[0] + sign * dr, cell[1] + sign * dc
            while 0 <= r < rows and 0 <= c < cols and occupied[r, c]:
                count += 1
                r, c = r + sign * dr, c + sign * dc
        if count >= need:
            return True
    return False


class PolicyOpponent:
    """A frozen copy of a policy that samples its masked action distribution (or acts greedily, ``deterministic``).

    The copy lives on the CPU without its optimizer; it is picklable, so ``SubprocVecEnv`` workers can receive it.
    Sampling uses the env's generator (the probabilities come from torch, the draw from numpy), so playing against
    a snapshot never moves the learner's torch random state.

    :param policy: the policy to copy (an SB3 ``ActorCriticPolicy``, maskrl's masked one or sb3-contrib's maskable
        one; a policy without a distribution, DQN's, acts greedily)
    :param name: how the opponent is reported (``info["opponent"]``)
    :param deterministic: take the most likely valid action instead of sampling
    """

    def __init__(self, policy: BasePolicy, name: str = "snapshot", deterministic: bool = False) -> None:
        # Deep-copy the networks only: the optimizer's state is twice the weights and never used here.
        optimizer = getattr(policy, "optimizer", None)
        policy.optimizer = None
        try:
            frozen = copy.deepcopy(policy)
        finally:
            policy.optimizer = optimizer
        self.policy = frozen.to("cpu").eval()
        for parameter in self.policy.parameters():
            parameter.requires_grad_(False)
        self.name = name
        self.deterministic = deterministic
        space = self.policy.observation_space
        self._keys = list(space.spaces) if hasattr(space, "spaces") else None

    def act(self, observation: dict[str, np.ndarray], rng: np.random.Generator) -> int:
        """The snapshot's move (sampled with ``rng``), always a valid one."""
        mask = np.asarray(observation[ACTION_MASK_KEY]).astype(bool)
        # The policy sees what it saw in training: the mask key only if its observation space has one.
        if self._keys is None:
            seen: Any = np.asarray(observation["observation"])
        else:
            seen = {key: np.asarray(observation[key]) for key in self._keys}
        with torch.no_grad():
            obs_tensor, _ = self.policy.obs_to_tensor(seen)
            if not hasattr(self.policy, "get_distribution"):
                action, _ = self.policy.predict(seen, deterministic=True)
                action = int(np.asarray(action).reshape(-1)[0])
                return action if mask[action] else RandomOpponent().act(observation, rng)
            if isinstance(self.policy, MaskableActorCriticPolicy):  # it takes the mask as an argument
                distribution = self.policy.get_distribution(obs_tensor, action_masks=mask)
            else:
                distribution = self.policy.get_distribution(obs_tensor)
            probs = distribution.distribution.probs[0].double().cpu().numpy()
        # Invalid actions have probability 0 under a masked policy; for one that sees no mask they are removed here.
        probs = np.where(mask, probs, 0.0)
        if probs.sum() <= 0:
            return RandomOpponent().act(observation, rng)
        if self.deterministic:
            return int(np.argmax(probs))
        return int(rng.choice(probs.size, p=probs / probs.sum()))


class OpponentPool:
    """The opponents a training env draws from: one, uniformly at random, per episode.

    :param opponents: the fixed members (default: a :class:`RandomOpponent`), never dropped
    :param max_snapshots: how many added opponents (snapshots) are kept; the oldest goes first
    """

    name = "pool"

    def __init__(self, opponents: list[Opponent] | None = None, max_snapshots: int = 10) -> None:
        self.fixed: list[Opponent] = list(opponents) if opponents else [RandomOpponent()]
        self.snapshots: deque[Opponent] = deque(maxlen=max_snapshots)

    @property
    def members(self) -> list[Opponent]:
        """The fixed opponents, then the snapshots from the oldest to the newest."""
        return [*self.fixed, *self.snapshots]

    def add(self, opponent: Opponent) -> None:
        """Add a snapshot (dropping the oldest when the pool is full)."""
        self.snapshots.append(opponent)

    def sample(self, rng: np.random.Generator) -> Opponent:
        """The opponent of the next episode."""
        members = self.members
        return members[int(rng.integers(len(members)))] if len(members) > 1 else members[0]


def make_opponent(name: str) -> Opponent | OpponentPool:
    """The opponent called ``name`` (one of :data:`OPPONENT_NAMES`).

    :raises ValueError: in one line, for another name
    """
    if name == "random":
        return RandomOpponent()
    if name == "lookahead":
        return LookaheadOpponent()
    if name == "pool":
        return OpponentPool()
    raise ValueError(f"unknown opponent {name!r}; known: {', '.join(OPPONENT_NAMES)}")


class SelfPlayCallback(BaseCallback):
    """Snapshot the learner into the training envs' opponent pools whenever it beats the pool often enough.

    It reads the outcome of every finished training game (``info["outcome"]``: ``win``, ``draw`` or ``loss``, as
    :class:`~maskrl.envs.pettingzoo_aec.PettingZooAECEnv` reports it). Once ``window`` games have ended since the
    last snapshot and the learner won at least ``threshold`` of the last ``window``, a :class:`PolicyOpponent` copy
    of its policy joins every training env's pool (``env_method("add_opponent", ...)``) and the count starts again.
    Logs ``self_play/win_rate`` (over the last ``window`` games) and ``self_play/snapshots``.

    :param threshold: the win rate against the pool that earns a snapshot (0-1)
    :param window: how many recent games the win rate is taken over
    :param verbose: 1 prints a line per snapshot
    """

    def __init__(self, threshold: float = 0.75, window: int = 200, verbose: int = 0) -> None:
        super().__init__(verbose)
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.threshold = threshold
        self.window = window
        self.outcomes: deque[bool] = deque(maxlen=window)
        self.games_since_snapshot = 0
        self.snapshots: list[int] = []  # the step of each snapshot

    @property
    def win_rate(self) -> float | None:
        """The learner's win rate over the last ``window`` games (``None`` before any)."""
        return float(np.mean(self.outcomes)) if self.outcomes else None

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            outcome = info.get("outcome")
            if outcome is not None:
                self.outcomes.append(outcome == "win")
                self.games_since_snapshot += 1
        if self.games_since_snapshot >= self.window and (self.win_rate or 0.0) >= self.threshold:
            self.add_snapshot()
        return True

    def add_snapshot(self) -> None:
        """Add a frozen copy of the learner's policy to every training env's pool."""
        name = f"snapshot_{len(self.snapshots) + 1}@{self.num_timesteps}"
        self.training_env.env_method("add_opponent", PolicyOpponent(self.model.policy, name=name))
        self.snapshots.append(self.num_timesteps)
        if self.verbose:
            print(f"self-play: win rate {self.win_rate:.2f} over {len(self.outcomes)} games, added {name} to the pool")
        self.outcomes.clear()
        self.games_since_snapshot = 0

    def _on_rollout_end(self) -> None:
        if self.win_rate is not None:
            self.logger.record("self_play/win_rate", self.win_rate)
        self.logger.record("self_play/snapshots", len(self.snapshots))


def training_callbacks(env: VecEnv) -> list[BaseCallback]:
    """The self-play callback when ``env`` (a training ``VecEnv``) plays against an opponent pool, else nothing.

    Asked through ``has_attr``/``get_attr`` of the view's ``opponent_name``, which any ``VecEnv`` answers safely.
    """
    if not env.has_attr("opponent_name"):
        return []
    return [SelfPlayCallback()] if env.get_attr("opponent_name", indices=0)[0] == OpponentPool.name else []
