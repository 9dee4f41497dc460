"""Does memory help when the panda blinks? Masked recurrent PPO on PandaGrid's memory setting, against two baselines.

The memory setting is ``maskrl/PandaGrid-v0`` with ``blink_prob`` (0.5 by default): after each step, with that
probability, the panda sees nothing but itself (see the module docstring of ``maskrl/envs/panda_grid.py``).
Three variants, with the same features extractor (``EntityAttentionExtractor``, 32-dim, 2 heads, 2 blocks, with the
visibility mask), head (``[64]``) and PPO hyperparameters (the ``ppo`` / ``ppo_lstm`` sections of
``maskrl/agents/hyperparams/PandaGrid-v0.yml``: 8 envs, ``n_steps=64``, ``batch_size=256``, 4 epochs, lr 3e-4):

- ``lstm_masked``: sb3-contrib ``RecurrentPPO`` + :class:`~maskrl.policies.MaskedRecurrentActorCriticPolicy`
  (LSTM of 64 units for the actor and for the critic), action mask applied (``--algo ppo_lstm``);
- ``ff_masked``: SB3 ``PPO`` + :class:`~maskrl.policies.MaskedActorCriticPolicy`, no memory (``--algo ppo``);
- ``lstm_nomask``: ``RecurrentPPO`` + sb3-contrib's own ``MultiInputLstmPolicy`` with the same extractor and LSTM,
  on the observation without the action mask (it keeps the visibility key, so only the action mask differs); in
  training an invalid move is a no-op costing ``invalid_action_penalty=-0.1`` (as ``ppo_nomask``'s YAML).

``--variants ff_masked_open`` adds a reference run: masked feed-forward PPO trained and evaluated without blinks
(``blink_prob=0``), what the memoryless agent reaches when it sees everything.

Every variant is evaluated on the memory setting without any penalty, so returns compare: +1 per watermelon, -1 when
caught. For each run the script records the training curve (mean "world return" of the last 100 training episodes,
i.e. without invalid-action penalties, after each rollout) and the training invalid-action rate, then evaluates the
final model over ``--eval-episodes`` episodes deterministically and stochastically (seeds 10000+), counting invalid
actions. Runs go one at a time (one torch thread), seed by seed; each finished run is appended to
``results.json`` at once, and ``--continue`` skips the runs already there, so an interrupted study loses one run at
most. Writes ``results.json`` and ``curves.png`` to ``--out`` and prints markdown tables.

Run: ``python benchmarks/recurrent_study.py --out docs/recurrent_study`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from matplotlib.figure import Figure
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from maskrl.agents.env_setup import make_masked_env
from maskrl.agents.hyperparams import load_hyperparams, resolve_algo_kwargs
from maskrl.masks import ACTION_MASK_KEY
from maskrl.policies import MaskedActorCriticPolicy, MaskedRecurrentActorCriticPolicy

ENV = "maskrl/PandaGrid-v0"
VARIANTS = ("lstm_masked", "ff_masked", "lstm_nomask")
#: Not run by default: masked feed-forward PPO without blinks (trained and evaluated with blink_prob=0), what the
#: memoryless agent reaches when it sees everything.
REFERENCES = ("ff_masked_open",)
ALL_VARIANTS = VARIANTS + REFERENCES
LABELS = {
    "lstm_masked": "masked recurrent PPO",
    "ff_masked": "masked feed-forward PPO",
    "lstm_nomask": "recurrent PPO, no action mask",
    "ff_masked_open": "masked feed-forward PPO, no blinks (reference)",
}
NOMASK_PENALTY = -0.1


class DropActionMask(gym.ObservationWrapper):
    """Remove only ``"action_mask"`` from the observation (the ``"visibility"`` key stays for the extractor)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Dict(
            {key: space for key, space in env.observation_space.spaces.items() if key != ACTION_MASK_KEY}
        )

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in observation.items() if key != ACTION_MASK_KEY}


def _one_env(env_kwargs: dict[str, Any], drop_action_mask: bool) -> gym.Env:
    env = make_masked_env(ENV, env_kwargs)
    return DropActionMask(env) if drop_action_mask else env


def make_venv(variant: str, n_envs: int, seed: int, env_kwargs: dict[str, Any], training: bool) -> VecEnv:
    """The variant's vec env: the memory setting, without the action mask (and penalised in training) for nomask."""
    drop = variant == "lstm_nomask"
    kwargs = {**env_kwargs, "invalid_action_penalty": NOMASK_PENALTY} if drop and training else dict(env_kwargs)
    venv = DummyVecEnv([functools.partial(_one_env, kwargs, drop)] * n_envs)
    venv.seed(seed)
    venv.action_space.seed(seed)
    return venv


def build(variant: str, env: VecEnv, seed: int) -> BaseAlgorithm:
    """The variant's model, with the hyperparameters of PandaGrid-v0.yml (``ppo`` or ``ppo_lstm``)."""
    variant = variant.removesuffix("_open")
    section = "ppo" if variant == "ff_masked" else "ppo_lstm"
    kwargs = resolve_algo_kwargs(load_hyperparams(ENV, section))
    kwargs.pop("env_kwargs", None)
    if variant == "ff_masked":
        return PPO(MaskedActorCriticPolicy, env, seed=seed, device="cpu", **kwargs)
    policy = MaskedRecurrentActorCriticPolicy if variant == "lstm_masked" else "MultiInputLstmPolicy"
    return RecurrentPPO(policy, env, seed=seed, device="cpu", **kwargs)


class TrainingLog(BaseCallback):
    """After each rollout: mean world return (no penalties) of the last 100 episodes, and the invalid-action rate."""

    def __init__(self, caught_penalty: float = -1.0, print_every: int = 0) -> None:
        super().__init__()
        self.caught_penalty = caught_penalty
        self.print_every = print_every
        self._next_print = print_every
        self.recent: deque[float] = deque(maxlen=100)
        self.steps: list[int] = []
        self.returns: list[float] = []
        self.invalid_rates: list[float] = []
        self._invalid = self._count = 0

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            self._count += 1
            self._invalid += bool(info.get("invalid_action", False))
            stats = info.get("episode_stats")
            if stats:
                self.recent.append(stats["watermelons_eaten"] + self.caught_penalty * stats["caught"])
        return True

    def _on_rollout_end(self) -> None:
        if self.recent:
            self.steps.append(self.num_timesteps)
            self.returns.append(float(np.mean(self.recent)))
            self.invalid_rates.append(self._invalid / max(self._count, 1))
        self._invalid = self._count = 0
        if self.print_every and self.num_timesteps >= self._next_print and self.returns:
            print(f"  step {self.num_timesteps:,}: training return {self.returns[-1]:+.2f}", flush=True)
            self._next_print += self.print_every


def evaluate(model: BaseAlgorithm, variant: str, env_kwargs: dict[str, Any], episodes: int, seed: int) -> dict:
    """Deterministic and stochastic evaluation on the memory setting without penalties (LSTM states carried)."""
    out: dict[str, Any] = {}
    for mode in ("deterministic", "stochastic"):
        env = make_venv(variant, 1, seed, env_kwargs, training=False)
        counts = {"steps": 0, "invalid": 0}
        stats: list[dict[str, float]] = []

        def count(local_vars: dict[str, Any], _globals: dict[str, Any], stats=stats, counts=counts) -> None:
            info = local_vars["info"]
            counts["steps"] += 1
            counts["invalid"] += bool(info.get("invalid_action", False))
            if local_vars["done"] and "episode_stats" in info:
                stats.append(info["episode_stats"])

        returns, lengths = evaluate_policy(
            model,
            env,
            n_eval_episodes=episodes,
            deterministic=mode == "deterministic",
            return_episode_rewards=True,
            callback=count,
            warn=False,
        )
        env.close()
        out[mode] = {
            "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)),
            "length_mean": float(np.mean(lengths)),
            "invalid_action_rate": counts["invalid"] / max(counts["steps"], 1),
            "watermelons_eaten": float(np.mean([s["watermelons_eaten"] for s in stats])),
            "caught": float(np.mean([s["caught"] for s in stats])),
            "hidden_fraction": float(np.mean([s["hidden_fraction"] for s in stats])),
        }
    return out


def run(variant: str, seed: int, timesteps: int, env_kwargs: dict[str, Any], eval_episodes: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    if variant.endswith("_open"):
        env_kwargs = {**env_kwargs, "blink_prob": 0.0}
    hyperparams = load_hyperparams(ENV, "ppo" if variant.startswith("ff_masked") else "ppo_lstm")
    env = make_venv(variant, int(hyperparams["n_envs"]), seed, env_kwargs, training=True)
    model = build(variant, env, seed)
    log = TrainingLog(print_every=max(timesteps // 10, 1))
    start = time.perf_counter()
    model.learn(timesteps, callback=log)
    seconds = time.perf_counter() - start
    env.close()
    return {
        "variant": variant,
        "seed": seed,
        "timesteps": timesteps,
        "env_kwargs": env_kwargs,
        "seconds": seconds,
        "curve_steps": log.steps,
        "curve_returns": log.returns,
        "curve_invalid_rates": log.invalid_rates,
        "train_invalid_action_rate_last10": float(np.mean(log.invalid_rates[-10:])),
        "eval": evaluate(model, variant, env_kwargs, eval_episodes, 10_000 + seed),
    }


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    fig = Figure(figsize=(6.4, 3.8), dpi=90)
    ax = fig.add_subplot()
    for variant in ALL_VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        if not runs:
            continue
        grid = np.linspace(0, min(r["curve_steps"][-1] for r in runs), 60)
        curves = np.array([np.interp(grid, r["curve_steps"], r["curve_returns"]) for r in runs])
        mean, std = curves.mean(0), curves.std(0)
        style = ":" if variant in REFERENCES else "-"
        ax.plot(grid, mean, style, label=f"{LABELS[variant]} ({len(runs)} seeds)")
        ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("training return, no penalties (last 100 ep.)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def tables(results: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | seeds | eval return, deterministic | eval return, stochastic | last training return | "
        "watermelons | caught | invalid actions (eval, det. / stoch.) | invalid actions (training, last 10 rollouts) "
        "| minutes per run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in ALL_VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        if not runs:
            continue
        det = [r["eval"]["deterministic"] for r in runs]
        sto = [r["eval"]["stochastic"] for r in runs]
        lines.append(
            f"| {LABELS[variant]} | {len(runs)} | {_mean_std([e['return_mean'] for e in det])} "
            f"| {_mean_std([e['return_mean'] for e in sto])} | {_mean_std([r['curve_returns'][-1] for r in runs])} "
            f"| {np.mean([e['watermelons_eaten'] for e in det]):.2f} | {np.mean([e['caught'] for e in det]):.2f} "
            f"| {100 * np.mean([e['invalid_action_rate'] for e in det]):.1f}% / "
            f"{100 * np.mean([e['invalid_action_rate'] for e in sto]):.1f}% "
            f"| {100 * np.mean([r['train_invalid_action_rate_last10'] for r in runs]):.1f}% "
            f"| {np.mean([r['seconds'] for r in runs]) / 60:.1f} |"
        )
    lines += [
        "",
        "| variant | seed | eval return det. (± over episodes) | eval return stoch. | last training return "
        "| watermelons (det.) | caught (det.) | invalid (det.) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in ALL_VARIANTS:
        for r in sorted((r for r in results if r["variant"] == variant), key=lambda r: r["seed"]):
            det, sto = r["eval"]["deterministic"], r["eval"]["stochastic"]
            lines.append(
                f"| {LABELS[variant]} | {r['seed']} | {det['return_mean']:.2f} ± {det['return_std']:.2f} "
                f"| {sto['return_mean']:.2f} | {r['curve_returns'][-1]:.2f} | {det['watermelons_eaten']:.2f} "
                f"| {det['caught']:.2f} | {100 * det['invalid_action_rate']:.1f}% |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=ALL_VARIANTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--timesteps", type=int, default=200_000)
    parser.add_argument("--blink-prob", type=float, default=0.5)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("docs/recurrent_study"))
    parser.add_argument("--continue", dest="resume", action="store_true", help="skip the runs in results.json")
    parser.add_argument("--tables-only", action="store_true", help="print the tables and plot of results.json")
    parser.add_argument("--quick", action="store_true", help="one seed, 4k steps, 3 episodes")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.timesteps, args.eval_episodes = [0], 4_096, 3
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results: list[dict[str, Any]] = json.loads(path.read_text()) if (args.resume or args.tables_only) else []
    env_kwargs = {"blink_prob": args.blink_prob}
    if not args.tables_only:
        print(f"command: `{shlex.join(['python', *sys.argv])}`", flush=True)
        done = {(r["variant"], r["seed"]) for r in results}
        for seed in args.seeds:
            for variant in args.variants:
                if (variant, seed) in done:
                    continue
                load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
                result = run(variant, seed, args.timesteps, env_kwargs, args.eval_episodes)
                result["uptime_before"] = load
                results.append(result)
                path.write_text(json.dumps(results, indent=1) + "\n")
                print(
                    f"{variant} seed {seed}: eval {result['eval']['deterministic']['return_mean']:+.2f} (det.) "
                    f"{result['eval']['stochastic']['return_mean']:+.2f} (stoch.), "
                    f"last training {result['curve_returns'][-1]:+.2f}, {result['seconds'] / 60:.1f} min",
                    flush=True,
                )
    blinking = [r for r in results if r["variant"] in VARIANTS]
    blink = blinking[0]["env_kwargs"]["blink_prob"] if blinking else args.blink_prob
    plot(results, args.out / "curves.png", f"{ENV}, blink_prob={blink}")
    print(tables(results))


if __name__ == "__main__":
    main()
