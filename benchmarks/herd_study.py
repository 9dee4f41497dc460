"""Grid-wise control on the panda herd: does counting only the agents' cells matter?

Three ways to train PPO (unchanged SB3) on the panda herd, same PPO hyperparameters:

- ``gridnet``: ``GridNetPolicy`` on the centralised view ``maskrl/PandaHerd-v0``; ``CategoricalMap`` sums the
  log-probs and averages the entropy over the cells that hold a panda only;
- ``gridnet_nomask``: the same network with ``use_agent_mask=False``: every cell counts, as in GridNet
  implementations that sum over empty cells;
- ``shared``: decentralised, one ``MaskedActorCriticPolicy`` shared by all pandas, each acting on its own
  egocentric view through ``HerdVecEnv`` (one VecEnv slot per panda).

Every variant is evaluated on the same thing: the team return (all pandas' rewards) of whole herd episodes,
deterministic actions, the same evaluation seeds. The training curves record PPO's ``approx_kl`` and
``clip_fraction`` after every update. Writes ``results.json`` and ``curves.png``; prints a markdown table.

Run: ``python benchmarks/herd_study.py --out docs/herd_study`` (``--quick`` for a smoke run).
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

from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.envs import panda_herd_v0
from maskrl.envs.herd_vec_env import HerdVecEnv
from maskrl.evaluate import evaluate_model
from maskrl.policies import GridNetPolicy, MaskedActorCriticPolicy

ENV = "maskrl/PandaHerd-v0"
VARIANTS = ("gridnet", "gridnet_nomask", "shared")
PPO_KWARGS: dict[str, Any] = dict(
    n_steps=128, batch_size=256, n_epochs=4, gamma=0.99, learning_rate=3e-4, ent_coef=0.01, clip_range=0.2
)
N_HERDS = 8  # parallel herd episodes per rollout, for every variant


class TrainingCurves(BaseCallback):
    """After each PPO update: env steps, mean training episode return, approx_kl and clip_fraction."""

    def __init__(self, steps_per_herd_step: int = 1) -> None:
        super().__init__()
        self.steps_per_herd_step = steps_per_herd_step
        self.rows: list[dict[str, float]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        # PPO.train() recorded its stats into the logger; they are dumped only after the next rollout.
        values = self.logger.name_to_value
        if "train/approx_kl" in values and self.model.ep_info_buffer:
            self.rows.append(
                {
                    "steps": float(self.num_timesteps / self.steps_per_herd_step),
                    "return": float(np.mean([info["r"] for info in self.model.ep_info_buffer])),
                    "approx_kl": float(values["train/approx_kl"]),
                    "clip_fraction": float(values["train/clip_fraction"]),
                }
            )


def team_return_shared(model: PPO, n_episodes: int, seed: int) -> float:
    """Deterministic team return of whole herd episodes when every panda acts with the shared policy."""
    returns = []
    for episode in range(n_episodes):
        env = panda_herd_v0.parallel_env()
        observations, _ = env.reset(seed=seed + episode)
        total = 0.0
        while env.agents:
            agents = list(observations)
            batch = {key: np.stack([observations[a][key] for a in agents]) for key in ("observation", "action_mask")}
            actions, _ = model.predict(batch, deterministic=True)
            observations, rewards, _, _, _ = env.step(dict(zip(agents, actions.tolist(), strict=True)))
            total += sum(rewards.values())
        returns.append(total)
    return float(np.mean(returns))


def run(variant: str, seed: int, timesteps: int, eval_episodes: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    # The budget is counted in herd steps for everyone; the shared policy makes one VecEnv step per panda.
    steps_per_herd_step = 1
    if variant == "shared":
        env = HerdVecEnv(n_envs=N_HERDS)  # reports SB3-style info["episode"] per panda slot itself
        env.seed(seed)
        steps_per_herd_step = env.num_envs // N_HERDS
        model = PPO(MaskedActorCriticPolicy, env, seed=seed, device="cpu", **PPO_KWARGS)
    else:
        env = make_masked_vec_env(ENV, N_HERDS, seed)
        policy_kwargs = dict(channels=(32, 64), use_agent_mask=variant == "gridnet")
        model = PPO(GridNetPolicy, env, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **PPO_KWARGS)
    curves = TrainingCurves(steps_per_herd_step)
    start = time.perf_counter()
    model.learn(timesteps * steps_per_herd_step, callback=curves)
    seconds = time.perf_counter() - start
    env.close()
    if variant == "shared":
        final = team_return_shared(model, eval_episodes, seed=10_000)
    else:
        final = evaluate_model(model, "ppo", ENV, {}, eval_episodes, seed=10_000)["return_mean"]
    return {
        "variant": variant,
        "seed": seed,
        "herd_steps": timesteps,
        "seconds": seconds,
        "curves": curves.rows,
        "eval_team_return": final,
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    fig = Figure(figsize=(12, 3.6), dpi=100)
    for index, (key, label) in enumerate(
        [("return", "training episode return*"), ("approx_kl", "approx_kl"), ("clip_fraction", "clip fraction")]
    ):
        ax = fig.add_subplot(1, 3, index + 1)
        for variant in VARIANTS:
            runs = [r for r in results if r["variant"] == variant and r["curves"]]
            if not runs:
                continue
            end = min(r["curves"][-1]["steps"] for r in runs)
            grid = np.linspace(0, end, 50)
            ys = np.array(
                [np.interp(grid, [c["steps"] for c in r["curves"]], [c[key] for c in r["curves"]]) for r in runs]
            )
            ax.plot(grid, ys.mean(0), label=variant)
            ax.fill_between(grid, ys.mean(0) - ys.std(0), ys.mean(0) + ys.std(0), alpha=0.2)
        ax.set_xlabel("herd steps")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.axes[0].legend()
    fig.tight_layout()
    fig.savefig(path)


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | seeds | eval team return (mean ± std over seeds) | approx_kl (mean over updates) "
        "| clip fraction (mean over updates) | minutes per run |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        if not runs:
            continue
        evals = [r["eval_team_return"] for r in runs]
        kl = np.mean([np.mean([c["approx_kl"] for c in r["curves"]]) for r in runs if r["curves"]])
        clip = np.mean([np.mean([c["clip_fraction"] for c in r["curves"]]) for r in runs if r["curves"]])
        minutes = np.mean([r["seconds"] for r in runs]) / 60
        lines.append(
            f"| {variant} | {len(runs)} | {np.mean(evals):.2f} ± {np.std(evals):.2f} | {kl:.4f} | {clip:.3f} "
            f"| {minutes:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=100_000, help="herd steps per run")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("--out", type=Path, default=Path("docs/herd_study"))
    parser.add_argument("--quick", action="store_true", help="one seed, 4k steps")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.timesteps, args.eval_episodes = [0], 4_096, 2
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(variant, seed) for seed in args.seeds for variant in args.variants]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = [f.result() for f in [pool.submit(run, v, s, args.timesteps, args.eval_episodes) for v, s in jobs]]
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "curves.png")
    print(f"command: `{shlex.join(['python', *sys.argv])}`\n")
    print(table(results))


if __name__ == "__main__":
    main()
