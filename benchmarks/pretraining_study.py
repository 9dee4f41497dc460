"""Does masked trajectory pretraining on reward-free data help masked PPO on ``maskrl/Kart-v0``?

1. **Data**: reward-free trajectories of a uniformly random policy over the *valid* actions
   (:func:`maskrl.representation.collect.collect`).
2. **Pretraining** (:func:`maskrl.representation.pretrain.pretrain`) of a tiny trajectory transformer (d_model 32,
   2 layers, 2 heads, window K = 4) with every objective subset of the ablation: ``all`` (forward + inverse + masked),
   each objective removed in turn (``no_forward``, ``no_inverse``, ``no_masked``) and each alone (``forward_only``,
   ``inverse_only``, ``masked_only``). One pretraining per subset (seed 0).
3. **Fine-tuning** with masked PPO (``MaskedMultiInputPolicy`` + :class:`~maskrl.policies.trajectory_extractor.
   TrajectoryExtractor` over :class:`~maskrl.representation.window.TrajectoryWindow`), the same PPO
   hyperparameters and budget for every arm, several seeds:

   - ``scratch``: the same network, randomly initialised, trained end to end (the baseline);
   - ``random_frozen``: the same network, randomly initialised and frozen (what frozen features give for free);
   - ``all_finetuned``: pretrained with all objectives, trained end to end;
   - ``<subset>_frozen``: pretrained with each objective subset, frozen (isolates what the representation holds);
   - ``mlp_obs``: reference, the repo's default masked PPO MLP on the current observation only (no window).

Measured: the mean training episode return (last 100 episodes) after every PPO rollout, its mean over the run (a
sample-efficiency summary), and a final evaluation on fixed seeds, stochastic (sampled actions) and deterministic
(the mode: on Kart a half-trained policy's mode is often "always accelerate", which scores about 4.4 whatever the
rest of the policy is, so the stochastic one says more). The table gives the mean over the run and the two final
evaluations over seeds as interquartile means with 95% stratified bootstrap intervals (:mod:`benchmarks.statistics`,
rliable) next to the mean ± std, then the IQM differences the page reads, each with its own interval
(:func:`benchmarks.statistics.gap`). CPU times are per process. Writes ``results.json``
(after every fine-tuning run, so an interrupted study keeps its finished runs: ``--continue`` skips them and reuses
the encoders, ``--plot-only`` (or ``--report``) redoes plots and tables from it), ``finetune_curves.png`` and
``pretraining_curves.png``, and prints markdown tables.

Run: ``nice -n 5 python -m benchmarks.pretraining_study --out docs/trajectory_pretraining`` (``--quick`` for a smoke
run).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from benchmarks.common import (
    Record,
    ResultsFile,
    StudyParser,
    TrainingCurves,
    by_variant,
    command_line,
    curve,
    evaluate,
    label_axes,
    learn,
    mean_std,
    save_figure,
    study_runs,
    variant_bands,
)
from benchmarks.statistics import Interval, gap, iqm_intervals
from maskrl.agents.env_setup import make_masked_env
from maskrl.policies import MaskedActorCriticPolicy, MaskedMultiInputPolicy
from maskrl.policies.attention_masks import causal_mask
from maskrl.policies.trajectory_extractor import TrajectoryExtractor
from maskrl.policies.trajectory_transformer import TrajectoryConfig, TrajectoryTransformer, load_encoder
from maskrl.representation.collect import collect
from maskrl.representation.dataset import WindowSampler, load_dataset, save_dataset
from maskrl.representation.pretrain import PretrainSettings, pretrain
from maskrl.representation.window import TrajectoryWindow

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
EVAL_SEED = 10_000
#: the arm every other one is compared with
BASELINE = "scratch"
#: the arms of the ablation: a pretrained encoder, frozen
FROZEN_PRETRAINED = tuple(f"{subset}_frozen" for subset in SUBSETS)
#: the measures of a fine-tuning run the table sums up with IQMs: (name, a run's score)
MEASURES: tuple[tuple[str, Callable[[Record], float]], ...] = (
    ("mean training return over the run", itemgetter("mean_training_return")),
    ("eval return, stochastic", itemgetter("eval_return_stochastic")),
    ("eval return, deterministic", itemgetter("eval_return")),
)


def _make_env(window: bool) -> Any:
    env = make_masked_env(ENV)
    return TrajectoryWindow(env, WINDOW) if window else env


def _vec_env(window: bool, seed: int) -> VecEnv:
    venv = DummyVecEnv([functools.partial(_make_env, window)] * N_ENVS)
    venv.seed(seed)
    return venv


def run_pretraining(subset: str, data_path: str, out: str, steps: int) -> dict[str, Any]:
    settings = PretrainSettings(objectives=SUBSETS[subset], window=WINDOW, steps=steps, seed=0)
    logger = configure(str(Path(out) / "tb"), ["tensorboard", "csv"])
    cpu_start = time.process_time()
    result = pretrain(load_dataset(data_path), Path(out), settings, logger=logger, data_path=data_path)
    return {"subset": subset, **result, "cpu_seconds": time.process_time() - cpu_start}


def run_finetune(arm: str, seed: int, timesteps: int, eval_episodes: int, encoders: str) -> dict[str, Any]:
    subset, frozen, window = ARMS[arm]
    venv = _vec_env(window, seed)
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
    seconds, cpu_seconds = learn(model, timesteps, curves)
    venv.close()
    evaluations = {
        mode: evaluate(model, _vec_env(window, EVAL_SEED), eval_episodes, deterministic=mode == "deterministic")[
            "returns"
        ]
        for mode in ("deterministic", "stochastic")
    }
    rows = [{"steps": row["steps"], "return": row["recent_return"]} for row in curves.rollouts]
    rows = [row for row in rows if row["return"] is not None]
    returns = [row["return"] for row in rows]
    return {
        "arm": arm,
        "seed": seed,
        "timesteps": timesteps,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "trainable_parameters": int(trainable),
        "curves": rows,
        # Mean of the training-return curve over the run: the area under it, a sample-efficiency summary.
        "mean_training_return": float(np.mean(returns)) if returns else float("nan"),
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
def plot_finetune(runs: list[Record], path: Path) -> None:
    fig = Figure(figsize=(12, 4.2), dpi=100)
    groups = [
        ("pretrained vs scratch", ["scratch", "random_frozen", "all_finetuned", "all_frozen", "mlp_obs"]),
        ("ablation (frozen encoders)", ["random_frozen", *[f"{s}_frozen" for s in SUBSETS]]),
    ]
    for index, (title, arms) in enumerate(groups):
        ax = fig.add_subplot(1, 2, index + 1)
        # One colour per arm in both panels.
        colors = {arm: f"C{index % 10}" for index, arm in enumerate(ARMS)} | {"mlp_obs": "black"}
        variant_bands(ax, runs, arms, lambda r: curve(r["curves"], "return"), lambda arm, _: arm, colors, key="arm")
        label_axes(ax, "env steps", "training episode return (last 100)", title, size=8)
    save_figure(fig, path)


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
        label_axes(ax, "pretraining step", title=title, size=8)
    save_figure(fig, path)


def comparisons(arms: Collection[str], intervals: Mapping[str, Interval]) -> list[tuple[str, str, str]]:
    """The IQM differences the page reads on one measure, as ``(what is compared, arm, baseline)``: every other arm
    against :data:`BASELINE`; among the frozen pretrained encoders (:data:`FROZEN_PRETRAINED`), the best by IQM
    against the worst (the ablation's widest gap: chosen from the same runs, so rather too likely to separate) and
    against ``random_frozen``.

    :param arms: the arms that have runs
    :param intervals: their :func:`~benchmarks.statistics.iqm_intervals` on the measure
    """
    pairs = [(f"against {BASELINE}", arm, BASELINE) for arm in ARMS if arm != BASELINE and arm in arms]
    frozen = sorted((a for a in FROZEN_PRETRAINED if a in arms), key=lambda a: intervals[a].value, reverse=True)
    if len(frozen) > 1:
        pairs.append(("frozen encoders, the best pretrained one against the worst", frozen[0], frozen[-1]))
    if frozen:
        pairs.append(("frozen encoders, the best pretrained one against a random one", frozen[0], "random_frozen"))
    return pairs


def finetune_table(runs: list[Record]) -> str:
    """Per arm, each of :data:`MEASURES` over seeds (IQM with its 95% stratified bootstrap interval, and mean ± std),
    the last training return (mean ± std), the trainable parameters and the CPU minutes per run; then, per measure,
    one line per comparison of :func:`comparisons` (:func:`benchmarks.statistics.gap`)."""
    groups = dict(by_variant(runs, ARMS, key="arm"))
    columns = {
        name: (iqm_intervals({arm: [score(r) for r in arm_runs] for arm, arm_runs in groups.items()}), score)
        for name, score in MEASURES
    }
    header = "".join(f" {name}: IQM [95% CI] | mean ± std |" for name, _ in MEASURES)
    lines = [
        f"| arm | seeds |{header} last training return | trainable params | CPU minutes per run |",
        "|---|---:|" + "---:|---:|" * len(MEASURES) + "---:|---:|---:|",
    ]
    for arm, arm_runs in groups.items():
        cells = "".join(
            f" {intervals[arm].text()} | {mean_std([score(r) for r in arm_runs])} |"
            for intervals, score in columns.values()
        )
        last = [r["curves"][-1]["return"] for r in arm_runs if r["curves"]]
        lines.append(
            f"| {arm} | {len(arm_runs)} |{cells} {mean_std(last) if last else '-'} "
            f"| {arm_runs[0]['trainable_parameters']} | {np.mean([r['cpu_seconds'] for r in arm_runs]) / 60:.2f} |"
        )
    parts = ["\n".join(lines)]
    for name, (intervals, score) in columns.items():
        found = [
            f"- {gap(groups, score, what, arm, baseline, intervals)}"
            for what, arm, baseline in comparisons(groups, intervals)
        ]
        parts.append(f"{name.capitalize()}, IQM differences (arm - baseline):\n\n" + "\n".join(found))
    return "\n\n".join(parts)


def pretraining_table(pretrained: list[dict[str, Any]]) -> str:
    keys = ["loss_forward", "forward_r2", "loss_inverse", "inverse_accuracy", "loss_masked", "masked_accuracy"]
    lines = ["| subset | " + " | ".join(keys) + " | CPU minutes |", "|---|" + "---:|" * (len(keys) + 1)]
    for result in pretrained:
        final = result["final_validation"]
        cells = [f"{final[key]:.3f}" if key in final else "-" for key in keys]
        lines.append(f"| {result['subset']} | " + " | ".join(cells) + f" | {result['cpu_seconds'] / 60:.2f} |")
    return "\n".join(lines)


def pretrain_encoders(args: Any, header: dict[str, Any]) -> dict[str, Any]:
    """Collect the data, pretrain an encoder per objective subset the arms need and probe them; with ``--continue``,
    reuse those of the saved study when they cover the arms. Returns the study's header."""
    data_path = args.work_dir / "kart_random.npz"
    encoders = args.work_dir / "encoders"
    subsets = sorted({ARMS[arm][0] for arm in args.variants if ARMS[arm][0] is not None}, key=list(SUBSETS).index)
    done = {result["subset"] for result in header.get("pretraining", [])}
    if args.resume and data_path.is_file() and set(subsets) <= done and all((encoders / s).is_dir() for s in subsets):
        print(f"reusing the data and the encoders of {args.work_dir}", flush=True)
        return header
    dataset = collect(ENV, args.data_steps, seed=0)
    save_dataset(dataset, data_path)
    print(f"collected {len(dataset)} steps, {dataset.n_episodes} episodes -> {data_path}", flush=True)
    pretrained = [run_pretraining(s, str(data_path), str(encoders / s), args.pretrain_steps) for s in subsets]
    print(pretraining_table(pretrained), flush=True)
    probes = probe_all(args.work_dir, subsets)
    print(probe_table(probes), flush=True)
    return {
        "command": command_line(__spec__.name, args.argv),
        "complete": False,
        "env": ENV,
        "window": WINDOW,
        "data": {"steps": len(dataset), "episodes": dataset.n_episodes, "policy": "random over valid actions"},
        "pretrain_settings": {**asdict(PretrainSettings(window=WINDOW, steps=args.pretrain_steps)), "objectives": None},
        "ppo": {**PPO_KWARGS, "n_envs": N_ENVS, "net_arch": NET_ARCH, "timesteps": args.timesteps},
        "pretraining": pretrained,
        "representation_probes": probes,
    }


def main(argv: list[str] | None = None) -> None:
    parser = StudyParser(
        __doc__,
        ARMS,
        ARMS,
        seeds=(0, 1, 2, 3, 4),
        timesteps=100_000,
        eval_episodes=16,
        out=Path("docs/trajectory_pretraining"),
        quick={"data_steps": 4000, "pretrain_steps": 30, "timesteps": 4096, "seeds": [0], "eval_episodes": 8},
        plot_only_aliases=("--report",),
        variants_flags=("--arms", "--variants"),
        timesteps_help="PPO env steps per fine-tuning run",
    )
    parser.add_argument("--work-dir", type=Path, default=Path("runs/pretraining_study"), help="data and encoders")
    parser.add_argument("--data-steps", type=int, default=100_000, help="random-policy env steps to collect")
    parser.add_argument("--pretrain-steps", type=int, default=1000, help="gradient steps per pretraining")
    args = parser.parse_args(argv)
    args.argv = argv
    results = ResultsFile(args.out / "results.json", runs_key="finetune")
    header, runs = results.load()
    torch.set_num_threads(1)
    if args.plot_only:
        if not header:
            parser.error(f"no results in {results.path}")
        if "representation_probes" not in header:
            header["representation_probes"] = probe_all(args.work_dir, [r["subset"] for r in header["pretraining"]])
            results.save(header, runs)
        report(header, runs, args.out)
        return
    args.work_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    header = pretrain_encoders(args, header)
    header["complete"] = False
    header.pop("wall_minutes", None)
    runs = study_runs(
        parser,
        args,
        command_line(__spec__.name, argv),
        functools.partial(
            run_finetune,
            timesteps=args.timesteps,
            eval_episodes=args.eval_episodes,
            encoders=str(args.work_dir / "encoders"),
        ),
        lambda r: (
            f"{r['arm']} seed {r['seed']}: mean training return {r['mean_training_return']:.3f}, "
            f"eval stochastic {r['eval_return_stochastic']:.3f}, deterministic {r['eval_return']:.3f}, "
            f"{r['cpu_seconds'] / 60:.2f} CPU min"
        ),
        results,
        header,
        job_of=lambda r: (r["arm"], r["seed"]),
    )
    header.update(complete=True, wall_minutes=(time.perf_counter() - start) / 60)
    results.save(header, runs)
    report(header, runs, args.out)


def report(header: dict[str, Any], runs: list[Record], out: Path) -> None:
    """Plots and tables from ``results.json``'s content."""
    plot_finetune(runs, out / "finetune_curves.png")
    plot_pretraining(header["pretraining"], out / "pretraining_curves.png")
    wall = f", {header['wall_minutes']:.1f} min wall" if "wall_minutes" in header else ""
    cpu = sum(r["cpu_seconds"] for r in header["pretraining"] + runs) / 60
    print(f"command: `{header['command']}` ({cpu:.1f} CPU min in pretraining and PPO{wall})\n")
    print(pretraining_table(header["pretraining"]))
    print()
    if "representation_probes" in header:
        print(probe_table(header["representation_probes"]))
        print()
    print(finetune_table(runs))


if __name__ == "__main__":
    main()
