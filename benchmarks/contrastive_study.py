"""Does a masked contrastive auxiliary loss (M-CURL) help masked PPO learn from pixels? PandaGrid image observations.

Two variants, everything else equal (PPO hyperparameters of ``maskrl/agents/hyperparams/PandaGrid-v0.yml``'s
``ppo`` section, the policy, the seeds):

- ``ppo``: masked PPO (``MaskedMultiInputPolicy``, the action mask read from the observation) with the tiny
  :class:`~maskrl.policies.small_cnn.SmallCNN` over the fogged image of ``maskrl/PandaGridImage-v0`` (``--env-kwargs``
  choose e.g. the egocentric view). Trained by :class:`~maskrl.agents.contrastive.ContrastivePPO` with
  ``contrastive_coef=0``, which is bit for bit SB3's ``PPO`` (``tests/test_contrastive.py``);
- ``ppo_contrastive``: the same plus ``contrastive_coef`` x the masked contrastive loss in every minibatch: windows
  of consecutive frames from the rollout, a quarter of the frames zeroed, the policy's CNN encodes them, a small
  transformer rebuilds the masked positions, InfoNCE against a momentum key encoder of the original frames.

Every ``--eval-every`` env steps each run is evaluated deterministically on the same ``--eval-episodes`` episodes
(a fresh env seeded 10000), which gives the curves; the final evaluation uses twice as many episodes. The
contrastive runs also record the auxiliary loss and accuracy. Writes ``results.json`` (``results_partial.json``
while runs finish), ``curves.png`` and ``observation.png`` into ``--out`` and prints a markdown table with the env
steps per CPU-second of each variant.

Run (the study of ``docs/masked_contrastive.md``)::

    nice -n 5 python benchmarks/contrastive_study.py --out docs/masked_contrastive --timesteps 200000 \\
        --eval-every 10000 --eval-episodes 10 \\
        --env-kwargs '{"n_watermelons": 4, "dragon_chase_prob": 0.25, "image_view": "egocentric", "image_cell_px": 2}'

``--quick`` for a one-seed 8k-step smoke run; ``--replot`` redraws the plots and table from the saved results.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy

from maskrl.agents.contrastive import ContrastivePPO
from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.policies import MaskedMultiInputPolicy
from maskrl.policies.small_cnn import SmallCNN

ENV = "maskrl/PandaGridImage-v0"
VARIANTS = ("ppo", "ppo_contrastive")
N_ENVS = 8
PPO_KWARGS: dict[str, Any] = dict(
    n_steps=64, batch_size=256, n_epochs=4, gamma=0.99, gae_lambda=0.95, learning_rate=3e-4, ent_coef=0.01,
    clip_range=0.2,
)  # fmt: skip


def policy_kwargs(env_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """SmallCNN matched to the image: first kernel = pixels per cell; stride 2 next for the larger egocentric view."""
    env_kwargs = env_kwargs or {}
    cnn = {
        "features_dim": 64,
        "cell_px": env_kwargs.get("image_cell_px", 3),
        "second_stride": 2 if env_kwargs.get("image_view") == "egocentric" else 1,
    }
    return {"features_extractor_class": SmallCNN, "features_extractor_kwargs": cnn, "net_arch": [64]}


CONTRASTIVE_KWARGS: dict[str, Any] = dict(
    contrastive_coef=0.05, sequence_length=8, sequences_per_batch=16, mask_ratio=0.25, mask_mode="zeros",
    temperature=0.1, momentum=0.95,
)  # fmt: skip
EVAL_SEED = 10_000


def evaluate(model: ContrastivePPO, episodes: int, env_kwargs: dict[str, Any] | None) -> tuple[float, float]:
    """Deterministic mean and std return over ``episodes`` episodes of a fresh env (same episodes every call)."""
    env = make_masked_vec_env(ENV, 1, seed=EVAL_SEED, env_kwargs=env_kwargs)
    returns, _ = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True, return_episode_rewards=True)
    env.close()
    return float(np.mean(returns)), float(np.std(returns))


class StudyCurves(BaseCallback):
    """Deterministic evaluations every ``eval_every`` steps; training return and auxiliary loss every rollout.

    Evaluation time is measured apart, so that steps per second count training only.
    """

    def __init__(self, eval_every: int, eval_episodes: int, env_kwargs: dict[str, Any] | None) -> None:
        super().__init__()
        self.env_kwargs = env_kwargs
        self.eval_every = eval_every
        self.eval_episodes = eval_episodes
        self.next_eval = 0
        self.evals: list[dict[str, float]] = []
        self.train: list[dict[str, float]] = []
        self.eval_seconds = 0.0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        # The previous train()'s values are still in the logger (SB3 dumps them after the next rollout).
        values = self.model.logger.name_to_value
        row = {"steps": float(self.num_timesteps)}
        if self.model.ep_info_buffer:
            row["train_return"] = float(np.mean([info["r"] for info in self.model.ep_info_buffer]))
        for key in ("contrastive_loss", "contrastive_accuracy"):
            if f"train/{key}" in values:
                row[key] = float(values[f"train/{key}"])
        self.train.append(row)
        if self.num_timesteps >= self.next_eval:
            start = time.perf_counter()
            mean, std = evaluate(self.model, self.eval_episodes, self.env_kwargs)  # type: ignore[arg-type]
            self.eval_seconds += time.perf_counter() - start
            self.evals.append({"steps": float(self.num_timesteps), "return_mean": mean, "return_std": std})
            self.next_eval += self.eval_every


def run(
    variant: str, seed: int, timesteps: int, eval_every: int, eval_episodes: int, env_kwargs: dict[str, Any] | None
) -> dict[str, Any]:
    torch.set_num_threads(1)
    env = make_masked_vec_env(ENV, N_ENVS, seed, env_kwargs=env_kwargs)
    aux = CONTRASTIVE_KWARGS if variant == "ppo_contrastive" else {"contrastive_coef": 0.0}
    model = ContrastivePPO(
        MaskedMultiInputPolicy,
        env,
        seed=seed,
        device="cpu",
        policy_kwargs=policy_kwargs(env_kwargs),
        **PPO_KWARGS,
        **aux,
    )
    curves = StudyCurves(eval_every, eval_episodes, env_kwargs)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(timesteps, callback=curves)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    env.close()
    final_mean, final_std = evaluate(model, 2 * eval_episodes, env_kwargs)
    return {
        "variant": variant,
        "seed": seed,
        "env_kwargs": env_kwargs or {},
        "timesteps": timesteps,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "eval_seconds": curves.eval_seconds,
        "evals": curves.evals,
        "train": curves.train,
        "final_eval_return_mean": final_mean,
        "final_eval_return_std": final_std,
        "final_eval_episodes": 2 * eval_episodes,
    }


def _band(runs: list[dict[str, Any]], key: str, field: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    steps = np.array([row["steps"] for row in runs[0][key] if field in row])
    values = np.array([[row[field] for row in r[key] if field in row][: len(steps)] for r in runs])
    return steps, values.mean(0), values.std(0)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    fig = Figure(figsize=(11, 4.2), dpi=110)
    ax_eval, ax_aux = fig.subplots(1, 2)
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        if not runs:
            continue
        steps, mean, std = _band(runs, "evals", "return_mean")
        ax_eval.plot(steps, mean, label=f"{variant} ({len(runs)} seeds)")
        ax_eval.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax_eval.set_xlabel("env steps")
    ax_eval.set_ylabel("deterministic eval return (mean ± std over seeds)")
    ax_eval.set_title(f"masked PPO on {ENV}")
    ax_eval.legend()
    ax_eval.grid(alpha=0.3)
    runs = [r for r in results if r["variant"] == "ppo_contrastive"]
    if runs:
        steps, mean, std = _band(runs, "train", "contrastive_loss")
        ax_aux.plot(steps, mean, color="C1", label="InfoNCE loss")
        ax_aux.fill_between(steps, mean - std, mean + std, color="C1", alpha=0.2)
        ax_aux.set_ylabel("InfoNCE loss")
        ax_acc = ax_aux.twinx()
        steps, mean, std = _band(runs, "train", "contrastive_accuracy")
        ax_acc.plot(steps, mean, color="C2", label="accuracy")
        ax_acc.fill_between(steps, mean - std, mean + std, color="C2", alpha=0.2)
        ax_acc.set_ylabel("contrastive accuracy")
        ax_acc.set_ylim(0, 1)
        ax_aux.legend(handles=ax_aux.get_lines() + ax_acc.get_lines(), loc="center right")
    ax_aux.set_xlabel("env steps")
    ax_aux.set_title("auxiliary task (ppo_contrastive)")
    ax_aux.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def draw_observation(path: Path, env_kwargs: dict[str, Any] | None, seed: int = 3) -> None:
    """The env's full render next to the image observation the policy gets (fog = unseen cells)."""
    env = make_masked_vec_env(ENV, 1, seed=seed, env_kwargs=env_kwargs, render_mode="rgb_array").envs[0]
    obs, _ = env.reset(seed=seed)
    fig = Figure(figsize=(8, 4), dpi=100)
    for ax, image, title in zip(
        fig.subplots(1, 2),
        (env.render(), obs["observation"]),
        ("render (rgb_array, 32 px per cell)", f"observation {obs['observation'].shape} uint8"),
        strict=True,
    ):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    env.close()


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | seeds | final eval return (mean ± std over seeds) | per seed | mean eval return over the "
        "last 3 evaluations | last contrastive accuracy | env steps per CPU-second |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        runs = sorted((r for r in results if r["variant"] == variant), key=lambda r: r["seed"])
        if not runs:
            continue
        finals = [r["final_eval_return_mean"] for r in runs]
        late = [np.mean([e["return_mean"] for e in r["evals"][-3:]]) for r in runs]
        accuracy = [r["train"][-1].get("contrastive_accuracy", np.nan) for r in runs]
        # Per CPU-second (evaluations included), not per wall-second: the machine is shared.
        speed = np.mean([r["timesteps"] / r["cpu_seconds"] for r in runs])
        acc = "-" if np.isnan(accuracy).all() else f"{np.nanmean(accuracy):.2f}"
        lines.append(
            f"| {variant} | {len(runs)} | {np.mean(finals):.2f} ± {np.std(finals):.2f} | "
            f"{', '.join(f'{x:.2f}' for x in finals)} | {np.mean(late):.2f} ± {np.std(late):.2f} | {acc} | "
            f"{speed:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=200_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--env-kwargs", type=json.loads, default=None, help="JSON, e.g. '{\"n_watermelons\": 4}'")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("--out", type=Path, default=Path("docs/masked_contrastive"))
    parser.add_argument("--quick", action="store_true", help="one seed, 8k steps")
    parser.add_argument("--replot", action="store_true", help="redraw the plot and table from --out/results.json")
    args = parser.parse_args()
    if args.replot:
        # results_partial.json holds the finished runs of a study that was stopped early.
        path = args.out / "results.json"
        results = json.loads((path if path.exists() else args.out / "results_partial.json").read_text())
        plot(results, args.out / "curves.png")
        draw_observation(args.out / "observation.png", results[0].get("env_kwargs"))
        print(table(results))
        return
    if args.quick:
        args.seeds, args.timesteps, args.eval_every, args.eval_episodes = [0], 8_192, 4_096, 3
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(variant, seed) for seed in args.seeds for variant in args.variants]
    results: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(run, v, s, args.timesteps, args.eval_every, args.eval_episodes, args.env_kwargs)
            for v, s in jobs
        ]
        for future in as_completed(futures):
            results.append(future.result())
            # Finished runs are kept even if a later one fails or the study is stopped.
            (args.out / "results_partial.json").write_text(json.dumps(results, indent=1) + "\n")
    results.sort(key=lambda r: (r["seed"], VARIANTS.index(r["variant"])))
    (args.out / "results_partial.json").unlink()
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "curves.png")
    draw_observation(args.out / "observation.png", args.env_kwargs)
    print(f"command: `{shlex.join(['python', *sys.argv])}`\n")
    print(table(results))


if __name__ == "__main__":
    main()
