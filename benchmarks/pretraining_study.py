"""Does masked trajectory pretraining on reward-free data help masked PPO on ``maskrl/Kart-v0``?

1. **Data**: reward-free trajectories of a uniformly random policy over the *valid* actions
   (:func:`maskrl.agents.collect_trajectories.collect`).
2. **Pretraining** (:func:`maskrl.agents.pretrain.pretrain`) of a tiny trajectory transformer (d_model 32, 2 layers,
   2 heads, window K = 4) with every objective subset of the ablation: ``all`` (forward + inverse + masked),
   each objective removed in turn (``no_forward``, ``no_inverse``, ``no_masked``) and each alone (``forward_only``,
   ``inverse_only``, ``masked_only``). One pretraining per subset (seed 0).
3. **Fine-tuning** with masked PPO (``MaskedMultiInputPolicy`` + :class:`~maskrl.policies.trajectory_extractor.
   TrajectoryExtractor` over :class:`~maskrl.envs.trajectory_window.TrajectoryWindow`), the same PPO
   hyperparameters and budget for every arm, several seeds:

   - ``scratch``: the same network, randomly initialised, trained end to end (the baseline);
   - ``random_frozen``: the same network, randomly initialised and frozen (what frozen features give for free);
   - ``all_finetuned``: pretrained with all objectives, trained end to end;
   - ``<subset>_frozen``: pretrained with each objective subset, frozen (isolates what the representation holds);
   - ``mlp_obs``: reference, the repo's default masked PPO MLP on the current observation only (no window).

Measured: the mean training episode return (last 100 episodes) after every PPO rollout, its mean over the run (a
sample-efficiency summary), and a final evaluation on fixed seeds, stochastic (sampled actions) and deterministic
(the mode: on Kart a half-trained policy's mode is often "always accelerate", which scores about 4.4 whatever the
rest of the policy is, so the stochastic one says more). CPU times are per process. Writes ``results.json``
(after every run, so an interrupted study keeps its finished runs: ``--report`` redoes plots and tables from it),
``finetune_curves.png`` and ``pretraining_curves.png``, and prints markdown tables.

Run: ``nice -n 5 python benchmarks/pretraining_study.py --out docs/trajectory_pretraining`` (``--quick`` for a smoke
run; ``--jobs`` runs in parallel, one torch thread each).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from maskrl.agents.collect_trajectories import collect
from maskrl.agents.env_setup import make_masked_env
from maskrl.agents.pretrain import PretrainSettings, pretrain
from maskrl.agents.trajectory_dataset import WindowSampler, load_dataset, save_dataset
from maskrl.envs.trajectory_window import TrajectoryWindow
from maskrl.policies import MaskedActorCriticPolicy, MaskedMultiInputPolicy
from maskrl.policies.attention_masks import causal_mask
from maskrl.policies.trajectory_extractor import TrajectoryExtractor
from maskrl.policies.trajectory_transformer import TrajectoryConfig, TrajectoryTransformer, load_encoder

ENV = "maskrl/Kart-v0"
WINDOW = 4
SUBSETS: dict[str, tuple[str, ...]] = {
    "all": ("forward", "inverse", "masked"),
    "no_forward": ("inverse", "masked"),
    "no_inverse": ("forward", "masked"),
    "no_masked": ("forward", "inverse"),
    "forward_only": ("forward",),
    "inverse_only": ("inverse",),
    "masked_only": ("masked",),
}
#: arm -> (pretraining subset or None, frozen, uses the window)
ARMS: dict[str, tuple[str | None, bool, bool]] = {
    "scratch": (None, False, True),
    "random_frozen": (None, True, True),
    "all_finetuned": ("all", False, True),
    **{f"{subset}_frozen": (subset, True, True) for subset in SUBSETS},
    "mlp_obs": (None, False, False),
}
PPO_KWARGS: dict[str, Any] = dict(
    n_steps=256,
    batch_size=256,
    n_epochs=4,
    gamma=0.995,
    gae_lambda=0.95,
    learning_rate=3e-4,
    ent_coef=0.01,
    clip_range=0.2,
)
N_ENVS = 8
NET_ARCH = [64, 64]


class TrainingCurves(BaseCallback):
    """After each rollout: env steps and the mean return of the last 100 training episodes."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.model.ep_info_buffer:
            self.rows.append(
                {
                    "steps": float(self.num_timesteps),
                    "return": float(np.mean([info["r"] for info in self.model.ep_info_buffer])),
                }
            )


def _make_env(window: bool) -> Any:
    env = make_masked_env(ENV)
    return TrajectoryWindow(env, WINDOW) if window else env


def run_pretraining(subset: str, data_path: str, out: str, steps: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    settings = PretrainSettings(objectives=SUBSETS[subset], window=WINDOW, steps=steps, seed=0)
    logger = configure(str(Path(out) / "tb"), ["tensorboard", "csv"])
    cpu_start = time.process_time()
    result = pretrain(load_dataset(data_path), Path(out), settings, logger=logger, data_path=data_path)
    return {"subset": subset, **result, "cpu_seconds": time.process_time() - cpu_start}


def run_finetune(arm: str, seed: int, timesteps: int, eval_episodes: int, encoders: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    subset, frozen, window = ARMS[arm]
    venv = DummyVecEnv([lambda: _make_env(window)] * N_ENVS)
    venv.seed(seed)
    if window:
        extractor_kwargs = dict(frozen=frozen, pretrained=None if subset is None else str(Path(encoders) / subset))
        policy_kwargs = dict(
            net_arch=NET_ARCH, features_extractor_class=TrajectoryExtractor, features_extractor_kwargs=extractor_kwargs
        )
        policy: type = MaskedMultiInputPolicy
    else:
        policy_kwargs, policy = dict(net_arch=NET_ARCH), MaskedActorCriticPolicy
    model = PPO(policy, venv, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **PPO_KWARGS)
    trainable = sum(p.numel() for p in model.policy.parameters() if p.requires_grad)
    curves = TrainingCurves()
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(timesteps, callback=curves)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    venv.close()
    evaluations = {}
    for mode, deterministic in (("deterministic", True), ("stochastic", False)):
        eval_env = DummyVecEnv([lambda: _make_env(window)] * N_ENVS)
        eval_env.seed(10_000)
        returns, _ = evaluate_policy(
            model, eval_env, eval_episodes, deterministic=deterministic, return_episode_rewards=True, warn=False
        )
        eval_env.close()
        evaluations[mode] = [float(r) for r in returns]
    curve = [row["return"] for row in curves.rows]
    return {
        "arm": arm,
        "seed": seed,
        "timesteps": timesteps,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "trainable_parameters": int(trainable),
        "curves": curves.rows,
        # Mean of the training-return curve over the run: the area under it, a sample-efficiency summary.
        "mean_training_return": float(np.mean(curve)) if curve else float("nan"),
        "eval_return": float(np.mean(evaluations["deterministic"])),
        "eval_return_stochastic": float(np.mean(evaluations["stochastic"])),
        "eval_returns": evaluations,
    }


@torch.no_grad()
def representation_probe(encoder: TrajectoryTransformer, data_path: str, n_windows: int = 4000) -> dict[str, float]:
    """What the features the policy would get (the output at the last token) hold, on windows of the data.

    - ``state_r2``: R² of a (ridge) linear probe from the features to the current observation ``oK``
      (fitted on half of the windows, scored on the other half): how much of the state survives;
    - ``feature_std``: per-dimension standard deviation across windows, averaged over dimensions;
    - ``participation_ratio``: ``(sum λ)² / sum λ²`` of the features' covariance eigenvalues, an effective number
      of dimensions (out of ``d_model``).
    """
    obs, actions, valid = WindowSampler(load_dataset(data_path), WINDOW, seed=1).all_windows(n_windows)
    token_valid = valid.repeat_interleave(2, dim=1)[:, :-1]
    features = encoder(obs, actions, causal_mask(2 * WINDOW - 1), token_valid)[:, -1]
    eigenvalues = torch.linalg.eigvalsh(torch.cov(features.T)).clamp_min(0)
    inputs = torch.cat([features, torch.ones(len(features), 1)], dim=1)
    target = obs[:, -1]
    # Alternate windows go to the fit and the score halves (the windows are in time order).
    fit, score = slice(0, None, 2), slice(1, None, 2)
    # Ridge (a tiny one): the features are nearly low-rank, and plain least squares on them is numerically fragile.
    gram = inputs[fit].T @ inputs[fit]
    ridge = 1e-4 * gram.diagonal().mean() * torch.eye(len(gram))
    weights = torch.linalg.solve(gram + ridge, inputs[fit].T @ target[fit])
    residual = (inputs[score] @ weights - target[score]).pow(2).sum()
    total = (target[score] - target[score].mean(0)).pow(2).sum()
    return {
        "state_r2": float(1 - residual / total),
        "feature_std": float(features.std(0).mean()),
        "participation_ratio": float(eigenvalues.sum() ** 2 / eigenvalues.pow(2).sum()),
    }


def probe_all(work_dir: Path, subsets: list[str]) -> dict[str, dict[str, float]]:
    """:func:`representation_probe` of a randomly initialised encoder (seed 0) and of every pretrained one."""
    data_path = str(work_dir / "kart_random.npz")
    torch.manual_seed(0)
    dataset = load_dataset(data_path)
    config = TrajectoryConfig(dataset.obs_dim, dataset.action_dim, dataset.discrete, max_window=WINDOW)
    probes = {"random init": representation_probe(TrajectoryTransformer(config), data_path)}
    for subset in subsets:
        probes[subset] = representation_probe(load_encoder(work_dir / "encoders" / subset)[0], data_path)
    return probes


def probe_table(probes: dict[str, dict[str, float]]) -> str:
    lines = [
        "| encoder | linear-probe R² of the current observation | feature std | participation ratio (of 32) |",
        "|---|---:|---:|---:|",
    ]
    for name, probe in probes.items():
        lines.append(
            f"| {name} | {probe['state_r2']:.3f} | {probe['feature_std']:.3f} | {probe['participation_ratio']:.2f} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- reporting


def _mean_curve(runs: list[dict[str, Any]], key: str = "return") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    end = min(r["curves"][-1]["steps"] for r in runs)
    grid = np.linspace(min(r["curves"][0]["steps"] for r in runs), end, 60)
    ys = np.array([np.interp(grid, [c["steps"] for c in r["curves"]], [c[key] for c in r["curves"]]) for r in runs])
    return grid, ys.mean(0), ys.std(0)


def plot_finetune(runs: list[dict[str, Any]], path: Path) -> None:
    fig = Figure(figsize=(12, 4.2), dpi=100)
    groups = [
        ("pretrained vs scratch", ["scratch", "random_frozen", "all_finetuned", "all_frozen", "mlp_obs"]),
        ("ablation (frozen encoders)", ["random_frozen", *[f"{s}_frozen" for s in SUBSETS]]),
    ]
    for index, (title, arms) in enumerate(groups):
        ax = fig.add_subplot(1, 2, index + 1)
        for arm in arms:
            arm_runs = [r for r in runs if r["arm"] == arm and r["curves"]]
            if not arm_runs:
                continue
            grid, mean, std = _mean_curve(arm_runs)
            # One colour per arm in both panels.
            color = f"C{list(ARMS).index(arm) % 10}" if arm != "mlp_obs" else "black"
            ax.plot(grid, mean, label=arm, color=color)
            ax.fill_between(grid, mean - std, mean + std, alpha=0.12, color=color)
        ax.set_xlabel("env steps")
        ax.set_ylabel("training episode return (last 100)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def plot_pretraining(pretrained: list[dict[str, Any]], path: Path) -> None:
    fig = Figure(figsize=(12, 3.6), dpi=100)
    panels = [
        ("forward_r2", "held-out forward-dynamics R²"),
        ("inverse_accuracy", "held-out inverse-dynamics accuracy"),
        ("masked_accuracy", "held-out masked-action accuracy"),
    ]
    for index, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, index + 1)
        for result in pretrained:
            points = [(h["step"], h[key]) for h in result["history"] if key in h]
            if points:
                ax.plot(*zip(*points, strict=True), label=result["subset"], marker=".")
        ax.set_xlabel("pretraining step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def finetune_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| arm | seeds | mean training return over the run | last training return "
        "| eval return, stochastic | eval return, deterministic | trainable params | CPU minutes per run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in ARMS:
        arm_runs = [r for r in runs if r["arm"] == arm]
        if not arm_runs:
            continue
        last = [r["curves"][-1]["return"] for r in arm_runs if r["curves"]]
        cells = [
            _mean_std([r["mean_training_return"] for r in arm_runs]),
            _mean_std(last),
            _mean_std([r["eval_return_stochastic"] for r in arm_runs]),
            _mean_std([r["eval_return"] for r in arm_runs]),
        ]
        lines.append(
            f"| {arm} | {len(arm_runs)} | {' | '.join(cells)} | {arm_runs[0]['trainable_parameters']} "
            f"| {np.mean([r['cpu_seconds'] for r in arm_runs]) / 60:.2f} |"
        )
    return "\n".join(lines)


def pretraining_table(pretrained: list[dict[str, Any]]) -> str:
    keys = ["loss_forward", "forward_r2", "loss_inverse", "inverse_accuracy", "loss_masked", "masked_accuracy"]
    lines = ["| subset | " + " | ".join(keys) + " | CPU minutes |", "|---|" + "---:|" * (len(keys) + 1)]
    for result in pretrained:
        final = result["final_validation"]
        cells = [f"{final[key]:.3f}" if key in final else "-" for key in keys]
        lines.append(f"| {result['subset']} | " + " | ".join(cells) + f" | {result['cpu_seconds'] / 60:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/trajectory_pretraining"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/pretraining_study"), help="data and encoders")
    parser.add_argument("--data-steps", type=int, default=100_000, help="random-policy env steps to collect")
    parser.add_argument("--pretrain-steps", type=int, default=1000, help="gradient steps per pretraining")
    parser.add_argument("--timesteps", type=int, default=100_000, help="PPO env steps per fine-tuning run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--eval-episodes", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, budgets and one seed")
    parser.add_argument("--report", action="store_true", help="only redo the plots and tables of --out's results")
    args = parser.parse_args()
    if args.report:
        results = json.loads((args.out / "results.json").read_text())
        if "representation_probes" not in results:
            torch.set_num_threads(1)
            results["representation_probes"] = probe_all(args.work_dir, [r["subset"] for r in results["pretraining"]])
            (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        report(results, args.out)
        return
    if args.quick:
        args.data_steps, args.pretrain_steps, args.timesteps, args.seeds, args.eval_episodes = 4000, 30, 4096, [0], 8
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    encoders = args.work_dir / "encoders"
    start = time.perf_counter()

    data_path = args.work_dir / "kart_random.npz"
    dataset = collect(ENV, args.data_steps, seed=0)
    save_dataset(dataset, data_path)
    print(f"collected {len(dataset)} steps, {dataset.n_episodes} episodes -> {data_path}", flush=True)

    subsets = sorted({ARMS[arm][0] for arm in args.arms if ARMS[arm][0] is not None}, key=list(SUBSETS).index)
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(run_pretraining, s, str(data_path), str(encoders / s), args.pretrain_steps) for s in subsets
        ]
        pretrained = [f.result() for f in futures]
    print(f"pretrained {len(pretrained)} encoders ({(time.perf_counter() - start) / 60:.1f} min)", flush=True)
    print(pretraining_table(pretrained), flush=True)
    probes = probe_all(args.work_dir, subsets)
    print(probe_table(probes), flush=True)

    results: dict[str, Any] = {
        "command": shlex.join(["python", *sys.argv]),
        "complete": False,
        "env": ENV,
        "window": WINDOW,
        "data": {"steps": len(dataset), "episodes": dataset.n_episodes, "policy": "random over valid actions"},
        "pretrain_settings": {**asdict(PretrainSettings(window=WINDOW, steps=args.pretrain_steps)), "objectives": None},
        "ppo": {**PPO_KWARGS, "n_envs": N_ENVS, "net_arch": NET_ARCH, "timesteps": args.timesteps},
        "pretraining": pretrained,
        "representation_probes": probes,
        "finetune": [],
    }
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(run_finetune, arm, seed, args.timesteps, args.eval_episodes, str(encoders))
            for arm, seed in jobs
        ]
        for future in futures:
            run = future.result()
            results["finetune"].append(run)
            # Written after every run, so that an interrupted study still leaves its finished runs (--report).
            (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
            print(
                f"  {run['arm']} seed {run['seed']}: mean training return {run['mean_training_return']:.3f}, "
                f"eval stochastic {run['eval_return_stochastic']:.3f}, deterministic {run['eval_return']:.3f}, "
                f"{run['cpu_seconds'] / 60:.2f} CPU min",
                flush=True,
            )
    results["complete"] = True
    results["wall_minutes"] = (time.perf_counter() - start) / 60
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    report(results, args.out)


def report(results: dict[str, Any], out: Path) -> None:
    """Plots and tables from ``results.json``'s content."""
    plot_finetune(results["finetune"], out / "finetune_curves.png")
    plot_pretraining(results["pretraining"], out / "pretraining_curves.png")
    wall = f", {results['wall_minutes']:.1f} min wall" if "wall_minutes" in results else ""
    cpu = sum(r["cpu_seconds"] for r in results["pretraining"] + results["finetune"]) / 60
    print(f"command: `{results['command']}` ({cpu:.1f} CPU min in pretraining and PPO{wall})\n")
    print(pretraining_table(results["pretraining"]))
    print()
    if "representation_probes" in results:
        print(probe_table(results["representation_probes"]))
        print()
    print(finetune_table(results["finetune"]))


if __name__ == "__main__":
    main()
