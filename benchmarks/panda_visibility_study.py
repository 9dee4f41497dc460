"""Does the visibility mask help? PPO on ``maskrl/PandaGrid-v0`` with three features extractors.

- ``masked``: :class:`~maskrl.policies.EntityAttentionExtractor`, hidden and padding entities masked out
  of the attention and the pooling (what maskrl proposes);
- ``unmasked``: the same extractor with ``use_visibility=False``: hidden slots are fed as their zero rows
  and attended to like any other entity;
- ``flat``: an MLP over the concatenated entity rows (SB3's ``CombinedExtractor`` through
  ``MaskedMultiInputPolicy``).

Everything else is the same: PPO hyperparameters from ``maskrl/agents/hyperparams/PandaGrid-v0.yml``,
the action mask, the seeds. For each run it records the mean training episode return after every PPO
iteration and a final deterministic evaluation; it writes ``results.json``, ``curves.png`` and prints
a markdown table.

Run: ``python benchmarks/panda_visibility_study.py --out docs/panda_visibility`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import CombinedExtractor

from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.agents.hyperparams import load_hyperparams, resolve_algo_kwargs
from maskrl.evaluate import evaluate_model
from maskrl.policies import EntityAttentionExtractor, MaskedActorCriticPolicy, MaskedMultiInputPolicy

ENV = "maskrl/PandaGrid-v0"
VARIANTS = ("masked", "unmasked", "flat")


class ReturnCurve(BaseCallback):
    """Mean return of the last 100 training episodes after every rollout, against env steps."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []
        self.returns: list[float] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.model.ep_info_buffer:
            self.steps.append(self.num_timesteps)
            self.returns.append(float(np.mean([info["r"] for info in self.model.ep_info_buffer])))


def run(variant: str, seed: int, timesteps: int, eval_episodes: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    hyperparams = load_hyperparams(ENV, "ppo")
    kwargs = resolve_algo_kwargs(hyperparams)
    policy_kwargs = dict(kwargs.pop("policy_kwargs"))
    policy: type = MaskedActorCriticPolicy
    if variant == "unmasked":
        policy_kwargs["features_extractor_kwargs"] = {
            **policy_kwargs.get("features_extractor_kwargs", {}),
            "use_visibility": False,
        }
    elif variant == "flat":
        policy = MaskedMultiInputPolicy
        policy_kwargs["features_extractor_class"] = CombinedExtractor
        policy_kwargs.pop("features_extractor_kwargs", None)
    else:
        assert policy_kwargs.get("features_extractor_class") is EntityAttentionExtractor
    env = make_masked_vec_env(ENV, int(hyperparams.get("n_envs", 8)), seed, env_kwargs=hyperparams.get("env_kwargs"))
    model = PPO(policy, env, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **kwargs)
    curve = ReturnCurve()
    start = time.perf_counter()
    model.learn(timesteps, callback=curve)
    seconds = time.perf_counter() - start
    env.close()
    final = evaluate_model(model, "ppo", ENV, hyperparams.get("env_kwargs"), eval_episodes, seed=10_000 + seed)
    return {
        "variant": variant,
        "seed": seed,
        "timesteps": timesteps,
        "seconds": seconds,
        "curve_steps": curve.steps,
        "curve_returns": curve.returns,
        "eval_return_mean": final["return_mean"],
        "eval_return_std": final["return_std"],
        "eval_stats": {key: value["mean"] for key, value in final["env_stats"].items()},
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.add_subplot()
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        if not runs:
            continue
        grid = np.linspace(0, min(r["curve_steps"][-1] for r in runs), 60)
        curves = np.array([np.interp(grid, r["curve_steps"], r["curve_returns"]) for r in runs])
        mean, std = curves.mean(0), curves.std(0)
        ax.plot(grid, mean, label=f"{variant} ({len(runs)} seeds)")
        ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("training episode return (mean of last 100)")
    ax.set_title("PPO on maskrl/PandaGrid-v0: visibility mask vs none vs flat MLP")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | seeds | final eval return (mean ± std over seeds) | last training return | "
        "watermelons eaten | caught | minutes per run |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        if not runs:
            continue
        evals = [r["eval_return_mean"] for r in runs]
        last = [r["curve_returns"][-1] for r in runs]
        eaten = np.mean([r["eval_stats"].get("watermelons_eaten", np.nan) for r in runs])
        caught = np.mean([r["eval_stats"].get("caught", np.nan) for r in runs])
        minutes = np.mean([r["seconds"] for r in runs]) / 60
        lines.append(
            f"| {variant} | {len(runs)} | {np.mean(evals):.2f} ± {np.std(evals):.2f} | {np.mean(last):.2f} "
            f"| {eaten:.2f} | {caught:.2f} | {minutes:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=150_000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("--out", type=Path, default=Path("docs/panda_visibility"))
    parser.add_argument("--quick", action="store_true", help="one seed, 8k steps")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.timesteps, args.eval_episodes = [0], 8_000, 3
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(variant, seed) for seed in args.seeds for variant in args.variants]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run, v, s, args.timesteps, args.eval_episodes) for v, s in jobs]
        results = [future.result() for future in futures]
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "curves.png")
    print(f"command: `{shlex.join(['python', *sys.argv])}`\n")
    print(table(results))


if __name__ == "__main__":
    main()
