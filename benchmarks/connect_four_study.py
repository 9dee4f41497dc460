"""Connect four: masked PPO by self-play against PettingZoo's tutorial approach, at the same budget.

Two ways to train one connect-four player with PPO, the same PPO hyperparameters and the same number of the
learner's moves (``--timesteps``):

- ``selfplay``: maskrl. SB3's ``PPO`` with ``MaskedActorCriticPolicy`` on
  :class:`~maskrl.envs.pettingzoo_aec.PettingZooAECEnv` (the mask in the observation), the learner's seat
  alternating, its opponent drawn per game from an opponent pool: the random valid player, joined by a frozen
  snapshot of the learner each time it wins ``SNAPSHOT_THRESHOLD`` of its last ``SNAPSHOT_WINDOW`` games against the
  pool (:class:`~maskrl.agents.self_play.SelfPlayCallback`);
- ``tutorial``: PettingZoo's tutorial approach: sb3-contrib's ``MaskablePPO`` on a single-agent view of the game
  written by hand for it (:class:`RandomOpponentView` below: the board as the observation, the mask through
  ``action_masks()``, a random valid opponent, the seat drawn per game).

Both are evaluated the same way, against fixed opponents: the random valid player and the one-step look-ahead player
(wins if it can, blocks if it must; :class:`~maskrl.agents.self_play.LookaheadOpponent`), ``--eval-games`` games
each with the seat alternating, the trained policy's most likely valid move. Training speed is the learner's moves
per second of wall-clock (rollouts and updates, one torch thread). Writes ``results.json`` (after every run;
``--continue`` skips the runs already there) and prints a markdown table.

Run: ``python -m benchmarks.connect_four_study --out docs/connect_four`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from benchmarks.common import command_line, learn
from maskrl.agents.hyperparams import load_hyperparams, resolve_algo_kwargs
from maskrl.agents.self_play import SelfPlayCallback
from maskrl.envs.pettingzoo_aec import PettingZooAECEnv

VARIANTS = ("selfplay", "tutorial")
OPPONENTS = ("random", "lookahead")
ENV = "pettingzoo:classic/connect_four_v3"
#: The same PPO for both: the ppo section of maskrl/agents/hyperparams/connect_four_v3.yml, 8 games in parallel.
HYPERPARAMS = load_hyperparams(ENV, "ppo")
PPO_KWARGS: dict[str, Any] = resolve_algo_kwargs(HYPERPARAMS)
N_ENVS: int = HYPERPARAMS["n_envs"]
SNAPSHOT_THRESHOLD = 0.75
SNAPSHOT_WINDOW = 200
EVAL_SEED = 10_000


def make_game(render_mode: str | None = None) -> Any:
    """PettingZoo's connect four (AEC, with its usual wrappers), from its registry."""
    import pettingzoo

    return pettingzoo.make("aec", "classic/connect_four-v3", render_mode=render_mode)


class RandomOpponentView(gym.Env):
    """The tutorial's way, written for this study: one player's view of connect four for sb3-contrib's MaskablePPO.

    The observation is the board from the learner's side (``(6, 7, 2)`` int8), the mask comes through
    ``action_masks()``; the other player makes random valid moves inside ``step()``; the learner's seat is drawn per
    game; the reward is +1 / -1 / 0 at the end of the game.
    """

    def __init__(self) -> None:
        self.game = make_game()
        self.observation_space = spaces.Box(0, 1, (6, 7, 2), np.int8)
        self.action_space = spaces.Discrete(7)

    def _board(self) -> np.ndarray:
        return np.asarray(self.game.observe(self.me)["observation"], dtype=np.int8)

    def _opponent_moves(self) -> None:
        while not self.game.terminations[self.me] and self.game.agent_selection != self.me:
            mask = self.game.observe(self.game.agent_selection)["action_mask"]
            self.game.step(int(self.np_random.choice(np.flatnonzero(mask))))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.game.reset(seed=seed)
        self.me = self.game.possible_agents[int(self.np_random.integers(2))]
        self._opponent_moves()
        return self._board(), {}

    def action_masks(self) -> np.ndarray:
        return np.asarray(self.game.observe(self.me)["action_mask"], dtype=bool)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.game.step(int(action))
        self._opponent_moves()
        done = bool(self.game.terminations[self.me] or self.game.truncations[self.me])
        reward = float(self.game.rewards[self.me]) if done else 0.0
        return self._board(), reward, done, False, {}


class Outcomes(BaseCallback):
    """Counts the training games (episode ends) and, for self-play, when each snapshot joined the pool."""

    def __init__(self) -> None:
        super().__init__()
        self.games = 0

    def _on_step(self) -> bool:
        self.games += int(np.sum(self.locals["dones"]))
        return True


def build(variant: str, seed: int) -> tuple[BaseAlgorithm, list[BaseCallback]]:
    if variant == "selfplay":
        # The mask travels in the observation; the pool starts with the random player.
        env = DummyVecEnv([lambda: PettingZooAECEnv(make_game, opponent="pool") for _ in range(N_ENVS)])
        env.seed(seed)
        from maskrl.policies import MaskedActorCriticPolicy

        model = PPO(MaskedActorCriticPolicy, env, seed=seed, device="cpu", **PPO_KWARGS)
        return model, [SelfPlayCallback(SNAPSHOT_THRESHOLD, SNAPSHOT_WINDOW)]
    env = DummyVecEnv([RandomOpponentView for _ in range(N_ENVS)])
    env.seed(seed)
    return MaskablePPO("MlpPolicy", env, seed=seed, device="cpu", **PPO_KWARGS), []


def act_function(model: BaseAlgorithm, variant: str) -> Any:
    """The trained player's move for an observation ``{"observation", "action_mask"}``: its most likely valid one."""
    if variant == "selfplay":
        return lambda obs: int(model.predict(obs, deterministic=True)[0])
    return lambda obs: int(
        model.predict(obs["observation"], action_masks=obs["action_mask"].astype(bool), deterministic=True)[0]
    )


def play(act: Any, opponent: str, n_games: int) -> dict[str, float]:
    """Win, draw and loss rates of ``act`` over ``n_games`` against ``opponent``, seats alternating."""
    env = PettingZooAECEnv(make_game, opponent=opponent)
    counts = {"win": 0, "draw": 0, "loss": 0}
    invalid = moves = 0
    obs, _ = env.reset(seed=EVAL_SEED)
    for _ in range(n_games):
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(act(obs))
            invalid += info["invalid_action"]
            moves += 1
            done = terminated or truncated
        counts[info["outcome"]] += 1
        obs, _ = env.reset()
    return {**{k: v / n_games for k, v in counts.items()}, "invalid_rate": invalid / moves}


def run(variant: str, seed: int, timesteps: int, eval_games: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    model, callbacks = build(variant, seed)
    outcomes = Outcomes()
    wall, cpu = learn(model, timesteps, [*callbacks, outcomes])
    act = act_function(model, variant)
    results = {name: play(act, name, eval_games) for name in OPPONENTS}
    snapshots = callbacks[0].snapshots if callbacks else []
    model.get_env().close()
    return {
        "variant": variant,
        "seed": seed,
        "timesteps": int(model.num_timesteps),
        "training_games": outcomes.games,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "steps_per_second": model.num_timesteps / wall,
        "snapshots": snapshots,
        "eval": results,
        "eval_games": eval_games,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | seed | vs random: win / draw / loss | vs look-ahead: win / draw / loss | learner moves "
        "| wall-clock | CPU | moves/s | snapshots |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (VARIANTS.index(r["variant"]), r["seed"])):
        cells = [" / ".join(f"{r['eval'][name][k]:.2f}" for k in ("win", "draw", "loss")) for name in OPPONENTS]
        lines.append(
            f"| {r['variant']} | {r['seed']} | {cells[0]} | {cells[1]} | {r['timesteps']:,} "
            f"| {r['wall_seconds'] / 60:.1f} min | {r['cpu_seconds'] / 60:.1f} min | {r['steps_per_second']:,.0f} "
            f"| {len(r['snapshots'])} |"
        )
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        if len(runs) > 1:
            means = [
                " / ".join(f"{np.mean([r['eval'][name][k] for r in runs]):.2f}" for k in ("win", "draw", "loss"))
                for name in OPPONENTS
            ]
            lines.append(
                f"| **{variant}** (mean) | {len(runs)} | {means[0]} | {means[1]} | "
                f"{np.mean([r['timesteps'] for r in runs]):,.0f} | "
                f"{np.mean([r['wall_seconds'] for r in runs]) / 60:.1f} min | "
                f"{np.mean([r['cpu_seconds'] for r in runs]) / 60:.1f} min | "
                f"{np.mean([r['steps_per_second'] for r in runs]):,.0f} | "
                f"{np.mean([len(r['snapshots']) for r in runs]):.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--timesteps", type=int, default=150_000, help="learner moves per run (default: 150000)")
    parser.add_argument("--eval-games", type=int, default=200, help="games per evaluation opponent (default: 200)")
    parser.add_argument("--out", type=Path, default=Path("docs/connect_four"))
    parser.add_argument("--continue", dest="resume", action="store_true", help="skip the runs in results.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: seed 0, 4096 moves, 10 games")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.timesteps, args.eval_games = [0], 4096, 10
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results: list[dict[str, Any]] = json.loads(path.read_text())["runs"] if args.resume and path.exists() else []
    done = {(r["variant"], r["seed"]) for r in results}
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{command_line(__spec__.name, argv)}  ({load})", flush=True)
    # One run at a time, seeds outermost, so that a stopped study has both variants of its first seeds.
    for seed in args.seeds:
        for variant in args.variants:
            if (variant, seed) in done:
                continue
            start = time.time()
            record = run(variant, seed, args.timesteps, args.eval_games)
            results.append(record)
            path.write_text(
                json.dumps({"command": command_line(__spec__.name, argv), "runs": results}, indent=1) + "\n"
            )
            rates = ", ".join(
                f"vs {name} {record['eval'][name]['win']:.2f}/{record['eval'][name]['draw']:.2f}/"
                f"{record['eval'][name]['loss']:.2f}"
                for name in OPPONENTS
            )
            print(
                f"{variant} seed {seed}: {rates} (win/draw/loss); {record['steps_per_second']:,.0f} moves/s, "
                f"{(time.time() - start) / 60:.1f} min",
                flush=True,
            )
    print(table(results))


if __name__ == "__main__":
    main()
