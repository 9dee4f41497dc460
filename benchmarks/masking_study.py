"""Invalid action masking vs its alternatives on ``maskrl/Kart-v0``, as the action space grows.

In the style of Huang & Ontañón, "A Closer Look at Invalid Action Masking in Policy Gradient Algorithms" (2020).
Unchanged SB3 PPO with the ``ppo`` hyperparameters of ``maskrl/agents/hyperparams/Kart-v0.yml`` for every
variant (only ``n_timesteps`` is ours), on Kart with ``n_item_types`` in 4, 16, 64, 256 (5 + n actions; with an
inventory of 2, at most 2 of the n "use item" actions are ever valid):

- ``masked``: ``--algo ppo``, maskrl's masked policy;
- ``naive``: ``--algo ppo_naive``: masked sampling, but log-probs and entropy of the unmasked distribution in
  the PPO update (:mod:`maskrl.policies.naive_masking`);
- ``penalty_<p>``: ``--algo ppo_nomask`` (never sees a mask; invalid actions execute as COAST) with
  ``invalid_action_penalty`` p in 0, -0.01, -0.1, -1;
- ``masked_eval_nomask``: each ``masked`` run's model evaluated with its mask replaced by all ones (no extra
  training), so it may choose invalid actions, which then execute as COAST.

Per run it records, every ``--eval-freq`` env steps (and at steps 0 and the end), the deterministic evaluation
return on fixed seeds in a separate env *without* penalty (so all variants are scored on the same task), the
evaluation invalid-action rate; per rollout the training invalid-action rate and the mean task return (penalty
removed) of the episodes that ended; per PPO update ``approx_kl``, ``clip_fraction`` and the entropy.

Per variant and size it reports the final evaluation return (mean ± std over seeds), the env steps the
seed-mean evaluation curve needs to reach 90% of the best final return of any variant at that size ("never"),
the same two numbers for the training return, the invalid-action rates and the mean approx_kl. Writes
``results.json`` (updated after every run), ``curves.png`` (evaluation return, one panel per size, seed bands)
and ``training.png`` (training return, approx_kl, invalid-action rate), and prints the markdown tables.

Run the whole study (72 runs of 65,536 env steps, 32 PPO updates each, evaluated every 8,192 steps on 10
episodes; about 30 CPU minutes)::

    nice -n 5 python benchmarks/masking_study.py --out docs/masking_study

``--quick`` is a smoke run (1 seed, 8k steps, a couple of minutes on 2 cores); ``--plot-only`` redraws the plots
and tables from an existing ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.agents.hyperparams import load_hyperparams, resolve_algo_kwargs
from maskrl.agents.registry import get_algo
from maskrl.masks import ACTION_MASK_KEY

ENV = "maskrl/Kart-v0"
SIZES = (4, 16, 64, 256)
#: trained variant -> (--algo, invalid_action_penalty)
TRAINED: dict[str, tuple[str, float]] = {
    "masked": ("ppo", 0.0),
    "naive": ("ppo_naive", 0.0),
    "penalty_0": ("ppo_nomask", 0.0),
    "penalty_-0.01": ("ppo_nomask", -0.01),
    "penalty_-0.1": ("ppo_nomask", -0.1),
    "penalty_-1": ("ppo_nomask", -1.0),
}
#: evaluated, not trained: the masked runs' models without their mask
NO_MASK_EVAL = "masked_eval_nomask"
VARIANTS = (*TRAINED, NO_MASK_EVAL)
EVAL_SEED = 1_000_000  # evaluation episode i is seeded EVAL_SEED + i, the same for every run and evaluation
THRESHOLD = 0.9
COLORS = {variant: f"C{index}" for index, variant in enumerate(VARIANTS)}  # the same in every plot


# ---------------------------------------------------------------------------------------------- pure helpers
def steps_to_threshold(steps: Sequence[float], values: Sequence[float], threshold: float) -> float | None:
    """The first step at which ``values`` reaches ``threshold``, or ``None`` if it never does.

    :param steps: increasing env steps of the curve's points
    :param values: the curve's value at each step
    :param threshold: the level to reach (``>=``)
    :raises ValueError: if the two sequences differ in length
    """
    if len(steps) != len(values):
        raise ValueError(f"steps and values differ in length ({len(steps)} vs {len(values)})")
    for step, value in zip(steps, values, strict=True):
        if value >= threshold:
            return float(step)
    return None


def mean_curve(curves: Sequence[Sequence[dict[str, float]]], key: str) -> tuple[list[float], list[float]]:
    """Seed-mean of curves evaluated at the same steps, cut to the shortest one.

    :param curves: per seed, a list of points ``{"steps": ..., key: ...}``
    :param key: the value to average
    :return: steps and mean values
    :raises ValueError: if the seeds' steps differ
    """
    if not curves:
        return [], []
    length = min(len(curve) for curve in curves)
    steps = [point["steps"] for point in curves[0][:length]]
    for curve in curves[1:]:
        if [point["steps"] for point in curve[:length]] != steps:
            raise ValueError("the seeds' curves are evaluated at different steps")
    values = [float(np.mean([curve[i][key] for curve in curves])) for i in range(length)]
    return steps, values


def training_curve(rollouts: Sequence[dict[str, Any]], window: int = 3) -> list[dict[str, float | None]]:
    """Per rollout, the mean task return of the episodes that ended in it and the ``window - 1`` rollouts before.

    A rollout of 8 envs x 256 steps ends only a handful of Kart episodes, so single rollouts are noisy.

    :param rollouts: the run's ``rollouts`` rows (``train_return`` is ``None`` when no episode ended)
    :param window: rollouts averaged
    :return: points ``{"steps", "return"}``, ``return`` ``None`` while no episode has ended in the window
    """
    points: list[dict[str, float | None]] = []
    for index, row in enumerate(rollouts):
        recent = rollouts[max(0, index - window + 1) : index + 1]
        points.append({"steps": row["steps"], "return": _mean_or_none([r["train_return"] for r in recent])})
    return points


def mean_training_curve(runs: Sequence[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Seed-mean of :func:`training_curve`, at the rollouts where every seed has a value."""
    curves = [training_curve(r["rollouts"]) for r in runs]
    if not curves or not all(curves):
        return [], []
    steps, values = [], []
    for points in zip(*curves, strict=False):
        if all(p["return"] is not None for p in points):
            steps.append(points[0]["steps"])
            values.append(float(np.mean([p["return"] for p in points])))
    return steps, values


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else None


def _last_rollouts(run: dict[str, Any], key: str, fraction: float = 0.2) -> float | None:
    """Mean of ``key`` over the last ``fraction`` of the run's rollouts (``None`` if it has none)."""
    rollouts = run["rollouts"]
    tail = rollouts[len(rollouts) - max(1, round(fraction * len(rollouts))) :] if rollouts else []
    return _mean_or_none([row[key] for row in tail])


def summarise(results: Sequence[dict[str, Any]], fraction: float = THRESHOLD) -> dict[int, dict[str, dict[str, Any]]]:
    """Per size and variant: final return, steps to ``fraction`` of the size's best final return, rates, KL.

    The best final return of a size is the largest seed-mean final return of any variant at that size; a
    variant's steps to threshold is the first evaluation step at which its seed-mean evaluation curve reaches
    ``fraction`` times it (``None``: never). ``train_steps_to_threshold`` is the same on the seed mean of
    :func:`training_curve`, against the best final training return (``train_return_final``).

    :param results: run records as :func:`run` returns them
    :param fraction: of the best final return
    :return: ``{n_item_types: {variant: stats}}``, sizes and variants in study order
    """
    summary: dict[int, dict[str, dict[str, Any]]] = {}
    for size in sorted({r["n_item_types"] for r in results}):
        cells: dict[str, dict[str, Any]] = {}
        for variant in VARIANTS:
            runs = [r for r in results if r["n_item_types"] == size and r["variant"] == variant]
            if not runs:
                continue
            finals = [r["final_return"] for r in runs]
            steps, values = mean_curve([r["eval"] for r in runs], "return")
            cells[variant] = {
                "seeds": len(runs),
                "final_mean": float(np.mean(finals)),
                "final_std": float(np.std(finals)),
                "curve_steps": steps,
                "curve_mean": values,
                "train_curve": mean_training_curve(runs),
                "train_invalid_rate": _mean_or_none(
                    [_mean_or_none([row["invalid_rate"] for row in r["rollouts"]]) for r in runs]
                ),
                "eval_invalid_rate": float(np.mean([r["final_invalid_rate"] for r in runs])),
                "train_invalid_rate_final": _mean_or_none([_last_rollouts(r, "invalid_rate") for r in runs]),
                "train_return_final": _mean_or_none([_last_rollouts(r, "train_return") for r in runs]),
                "approx_kl": _mean_or_none([_mean_or_none([row["approx_kl"] for row in r["updates"]]) for r in runs]),
                # CPU time: on a shared machine the wall time says more about the neighbours than about the variant.
                "cpu_minutes": float(np.mean([r.get("cpu_seconds", r["seconds"]) for r in runs])) / 60,
            }
        best = max(cell["final_mean"] for cell in cells.values())
        for cell in cells.values():
            cell["threshold"] = fraction * best
            cell["steps_to_threshold"] = steps_to_threshold(cell["curve_steps"], cell["curve_mean"], fraction * best)
        # The same on the training (stochastic, penalty-free) return, which also pays for sampled invalid actions.
        best_train = max(
            (c["train_return_final"] for c in cells.values() if c["train_return_final"] is not None), default=0
        )
        for cell in cells.values():
            train_steps, train_values = cell.pop("train_curve")
            cell["train_threshold"] = fraction * best_train
            cell["train_steps_to_threshold"] = steps_to_threshold(train_steps, train_values, fraction * best_train)
        summary[size] = cells
    return summary


def format_steps(steps: float | None) -> str:
    """``12345`` -> ``"12k"``, ``None`` -> ``"never"``."""
    if steps is None:
        return "never"
    return f"{steps / 1000:.0f}k" if steps >= 1000 else f"{steps:.0f}"


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _paper_cell(cell: dict[str, Any] | None, training: bool) -> str:
    if cell is None or (training and cell["train_return_final"] is None):
        return "—"
    if training:
        return f"{cell['train_return_final']:.2f} ({format_steps(cell['train_steps_to_threshold'])})"
    return f"{cell['final_mean']:.2f} ± {cell['final_std']:.2f} ({format_steps(cell['steps_to_threshold'])})"


def paper_table(summary: dict[int, dict[str, dict[str, Any]]], training: bool = False) -> str:
    """One row per variant, one column per size: final return (± std over seeds), and steps to the 90% threshold.

    :param training: the training return instead of the evaluation return
    """
    sizes = list(summary)
    header = "| variant | " + " | ".join(f"{s} item types ({5 + s} actions)" for s in sizes) + " |"
    lines = [header, "|---|" + "---:|" * len(sizes)]
    for variant in VARIANTS:
        cells = [summary[s].get(variant) for s in sizes]
        if all(cell is None for cell in cells):
            continue
        row = [_paper_cell(c, training) for c in cells]
        lines.append(f"| {variant} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def long_table(summary: dict[int, dict[str, dict[str, Any]]]) -> str:
    """One row per size and variant with every reported metric."""
    lines = [
        "| item types | variant | seeds | final eval return | steps to 90% of best | final training return (steps) "
        "| train invalid-action rate (all / last 20%) | final eval invalid-action rate | approx_kl (mean over updates) "
        "| CPU minutes per run |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, cells in summary.items():
        for variant, c in cells.items():
            lines.append(
                f"| {size} | {variant} | {c['seeds']} | {c['final_mean']:.2f} ± {c['final_std']:.2f} "
                f"| {format_steps(c['steps_to_threshold'])} (≥ {c['threshold']:.2f}) "
                f"| {_paper_cell(c, training=True)} "
                f"| {_fmt(c['train_invalid_rate'], '.1%')} / {_fmt(c['train_invalid_rate_final'], '.1%')} "
                f"| {c['eval_invalid_rate']:.1%} "
                f"| {_fmt(c['approx_kl'], '.4f')} | {c['cpu_minutes']:.1f} |"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- training
def ppo_settings() -> tuple[dict[str, Any], int]:
    """PPO's constructor arguments and ``n_envs`` from the ``ppo`` section of ``Kart-v0.yml``."""
    hyperparams = load_hyperparams(ENV, "ppo")
    return resolve_algo_kwargs(hyperparams), int(hyperparams.get("n_envs", 1))


def evaluate(
    model: BaseAlgorithm, n_item_types: int, n_episodes: int, sees_mask: bool, drop_mask: bool = False
) -> tuple[float, float]:
    """Deterministic mean return and invalid-action rate over episodes seeded ``EVAL_SEED + i``, no penalty.

    :param model: the model to evaluate
    :param n_item_types: env size
    :param n_episodes: episodes (one per env of a vec env, played in lock step)
    :param sees_mask: whether the model's observation holds the mask
    :param drop_mask: replace the mask in the observation by all ones (the masked agent "without its mask")
    """
    env = make_masked_vec_env(
        ENV, n_episodes, EVAL_SEED, env_kwargs={"n_item_types": n_item_types}, sees_mask=sees_mask
    )
    obs = env.reset()
    returns = np.zeros(n_episodes)
    running = np.ones(n_episodes, dtype=bool)
    steps = invalid = 0
    while running.any():
        if drop_mask:
            obs[ACTION_MASK_KEY][:] = 1
        actions, _ = model.predict(obs, deterministic=True)
        obs, rewards, dones, infos = env.step(actions)
        returns += rewards * running
        steps += int(running.sum())
        invalid += sum(bool(info["invalid_action"]) for info, r in zip(infos, running, strict=True) if r)
        running &= ~dones  # each env plays exactly its first episode
    env.close()
    return float(returns.mean()), invalid / max(steps, 1)


class StudyCurves(BaseCallback):
    """Evaluation curve, per-rollout invalid-action rate and task return, per-update PPO statistics.

    :param n_item_types: env size (for the evaluations)
    :param penalty: the training env's invalid-action penalty, removed from the training returns
    :param eval_freq: evaluate every this many env steps (and at the start and the end)
    :param eval_episodes: episodes per evaluation
    :param sees_mask: whether the model's observation holds the mask
    :param also_without_mask: also evaluate with the mask replaced by all ones, into ``eval_nomask``
    """

    def __init__(
        self,
        n_item_types: int,
        penalty: float,
        eval_freq: int,
        eval_episodes: int,
        sees_mask: bool,
        also_without_mask: bool = False,
    ) -> None:
        super().__init__()
        self.n_item_types, self.penalty = n_item_types, penalty
        self.eval_freq, self.eval_episodes = eval_freq, eval_episodes
        self.sees_mask, self.also_without_mask = sees_mask, also_without_mask
        self.eval: list[dict[str, float]] = []
        self.eval_nomask: list[dict[str, float]] = []
        self.rollouts: list[dict[str, float | None]] = []
        self.updates: list[dict[str, float]] = []
        self._next_eval = 0
        self._steps = self._invalid = 0
        self._returns: list[float] = []

    def _evaluate(self) -> None:
        ret, rate = evaluate(self.model, self.n_item_types, self.eval_episodes, self.sees_mask)
        self.eval.append({"steps": float(self.num_timesteps), "return": ret, "invalid_rate": rate})
        if self.also_without_mask:
            ret, rate = evaluate(self.model, self.n_item_types, self.eval_episodes, self.sees_mask, drop_mask=True)
            self.eval_nomask.append({"steps": float(self.num_timesteps), "return": ret, "invalid_rate": rate})

    def _record_update(self) -> None:
        # PPO.train() records into the logger, which is dumped (and cleared) only after the next rollout.
        values = self.model.logger.name_to_value
        if "train/approx_kl" in values:
            self.updates.append(
                {
                    "steps": float(self.num_timesteps),
                    "approx_kl": float(values["train/approx_kl"]),
                    "clip_fraction": float(values["train/clip_fraction"]),
                    "entropy": -float(values["train/entropy_loss"]),
                }
            )

    def _on_training_start(self) -> None:
        self._evaluate()
        self._next_eval = self.eval_freq

    def _on_rollout_start(self) -> None:
        self._record_update()
        self._steps = self._invalid = 0
        self._returns = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            self._steps += 1
            self._invalid += bool(info["invalid_action"])
            if "episode" in info:
                # Monitor's return includes the penalty; the task return does not.
                invalid = info["episode_stats"]["invalid_actions"]
                self._returns.append(float(info["episode"]["r"]) - self.penalty * invalid)
        if self.num_timesteps >= self._next_eval:
            self._evaluate()
            self._next_eval += self.eval_freq
        return True

    def _on_rollout_end(self) -> None:
        self.rollouts.append(
            {
                "steps": float(self.num_timesteps),
                "invalid_rate": self._invalid / max(self._steps, 1),
                "train_return": float(np.mean(self._returns)) if self._returns else None,
            }
        )

    def _on_training_end(self) -> None:
        self._record_update()
        if not self.eval or self.eval[-1]["steps"] < self.num_timesteps:
            self._evaluate()


def run(variant: str, n_item_types: int, seed: int, timesteps: int, eval_freq: int, eval_episodes: int) -> list[dict]:
    """Train one variant on one size with one seed; return its record (and, for ``masked``, the no-mask one).

    :param variant: a key of :data:`TRAINED`
    :param n_item_types: env size
    :param seed: seed of PPO and of the training envs
    :param timesteps: env steps to train for
    :param eval_freq: env steps between evaluations
    :param eval_episodes: episodes per evaluation
    """
    torch.set_num_threads(1)
    algo, penalty = TRAINED[variant]
    spec = get_algo(algo)
    kwargs, n_envs = ppo_settings()
    env_kwargs = {"n_item_types": n_item_types, "invalid_action_penalty": penalty}
    env = make_masked_vec_env(ENV, n_envs, seed, env_kwargs=env_kwargs, sees_mask=spec.sees_mask)
    model = PPO(spec.policy_for(False), env, seed=seed, device="cpu", **kwargs)
    curves = StudyCurves(n_item_types, penalty, eval_freq, eval_episodes, spec.sees_mask, variant == "masked")
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(timesteps, callback=curves)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    env.close()
    record = {
        "variant": variant,
        "algo": algo,
        "n_item_types": n_item_types,
        "penalty": penalty,
        "seed": seed,
        "timesteps": int(model.num_timesteps),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "eval": curves.eval,
        "rollouts": curves.rollouts,
        "updates": curves.updates,
        "final_return": curves.eval[-1]["return"],
        "final_invalid_rate": curves.eval[-1]["invalid_rate"],
    }
    records = [record]
    if variant == "masked":
        # The same training run: its rollouts and updates are the masked record's, so they are not repeated.
        records.append(
            {
                **record,
                "variant": NO_MASK_EVAL,
                "eval": curves.eval_nomask,
                "rollouts": [],
                "updates": [],
                "final_return": curves.eval_nomask[-1]["return"],
                "final_invalid_rate": curves.eval_nomask[-1]["invalid_rate"],
            }
        )
    return records


# ---------------------------------------------------------------------------------------------- plots
_THOUSANDS = FuncFormatter(lambda x, _: f"{x / 1000:.0f}k")


def _band(ax: Any, runs: Sequence[dict[str, Any]], section: str, key: str, label: str) -> None:
    """Seed mean ± std of ``run[section][i][key]`` against steps, interpolated on a common grid.

    :param label: the variant (also picks its colour)
    """
    curves = [[row for row in r[section] if row.get(key) is not None] for r in runs]
    curves = [c for c in curves if len(c) >= 2]
    if not curves:
        return
    end = min(c[-1]["steps"] for c in curves)
    grid = np.linspace(max(c[0]["steps"] for c in curves), end, 60)
    ys = np.array([np.interp(grid, [p["steps"] for p in c], [p[key] for p in c]) for c in curves])
    ax.xaxis.set_major_formatter(_THOUSANDS)
    ax.plot(grid, ys.mean(0), label=label, color=COLORS[label])
    ax.fill_between(grid, ys.mean(0) - ys.std(0), ys.mean(0) + ys.std(0), alpha=0.15, color=COLORS[label])


def plot_curves(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Evaluation return against env steps, one panel per size, seed bands."""
    sizes = sorted({r["n_item_types"] for r in results})
    fig = Figure(figsize=(4 * len(sizes), 3.6), dpi=100)
    for index, size in enumerate(sizes):
        ax = fig.add_subplot(1, len(sizes), index + 1)
        for variant in VARIANTS:
            runs = [r for r in results if r["n_item_types"] == size and r["variant"] == variant]
            _band(ax, runs, "eval", "return", variant)
        ax.set_title(f"{size} item types ({5 + size} actions)")
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylabel("deterministic eval return")
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def plot_training(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Rows: training task return, approx_kl (log scale), training invalid-action rate; one column per size."""
    sizes = sorted({r["n_item_types"] for r in results})
    rows = [
        ("rollouts", "train_return", "training return (no penalty)"),
        ("updates", "approx_kl", "approx_kl"),
        ("rollouts", "invalid_rate", "train invalid-action rate"),
    ]
    fig = Figure(figsize=(4 * len(sizes), 3.2 * len(rows)), dpi=100)
    for row, (section, key, label) in enumerate(rows):
        for col, size in enumerate(sizes):
            ax = fig.add_subplot(len(rows), len(sizes), row * len(sizes) + col + 1)
            for variant in TRAINED:
                runs = [r for r in results if r["n_item_types"] == size and r["variant"] == variant]
                _band(ax, runs, section, key, variant)
            if key == "approx_kl":
                ax.set_yscale("log")
            if row == 0:
                ax.set_title(f"{size} item types ({5 + size} actions)")
            if col == 0:
                ax.set_ylabel(label)
            if row == len(rows) - 1:
                ax.set_xlabel("env steps")
            ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def report(results: Sequence[dict[str, Any]], out: Path) -> str:
    """Draw the plots into ``out`` and return the markdown tables."""
    plot_curves(results, out / "curves.png")
    plot_training(results, out / "training.png")
    summary = summarise(results)
    return (
        f"Deterministic evaluation return:\n\n{paper_table(summary)}\n\n"
        f"Training return (no penalty):\n\n{paper_table(summary, training=True)}\n\n{long_table(summary)}"
    )


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(TRAINED), choices=list(TRAINED), help="to train")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="n_item_types values")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=65_536, help="env steps per run (32 PPO updates)")
    parser.add_argument("--eval-freq", type=int, default=8_192, help="env steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    parser.add_argument("--jobs", type=int, default=2, choices=[1, 2], help="runs in parallel (one torch thread each)")
    parser.add_argument("--out", type=Path, default=Path("docs/masking_study"))
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 8k steps, 3 eval episodes")
    parser.add_argument("--plot-only", action="store_true", help="redraw plots and tables from OUT/results.json")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    results_path = args.out / "results.json"
    if args.plot_only:
        if not results_path.is_file():
            parser.error(f"no results to plot: {results_path} does not exist")
        print(report(json.loads(results_path.read_text())["runs"], args.out))
        return
    if args.quick:
        args.seeds, args.timesteps, args.eval_freq, args.eval_episodes = [0], 8_192, 4_096, 3
    for name in ("timesteps", "eval_freq", "eval_episodes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if any(size < 1 for size in args.sizes):
        parser.error(f"--sizes must be positive, got {args.sizes}")
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/masking_study.py", *(sys.argv[1:] if argv is None else argv)])
    settings = {
        "command": command,
        "env": ENV,
        "ppo": {k: v for k, v in load_hyperparams(ENV, "ppo").items() if k != "n_timesteps"},
        "timesteps": args.timesteps,
        "eval_freq": args.eval_freq,
        "eval_episodes": args.eval_episodes,
        "eval_seeds": f"{EVAL_SEED}..{EVAL_SEED + args.eval_episodes - 1}",
        "seeds": args.seeds,
        "sizes": args.sizes,
    }
    # Largest sizes first: they are the slowest runs, and the pool finishes with the short ones.
    jobs = [(v, n, s) for n in sorted(args.sizes, reverse=True) for s in args.seeds for v in args.variants]
    results: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {
            pool.submit(run, v, n, s, args.timesteps, args.eval_freq, args.eval_episodes): (v, n, s) for v, n, s in jobs
        }
        for done, future in enumerate(as_completed(futures), 1):
            results += future.result()
            v, n, s = futures[future]
            print(f"[{done}/{len(jobs)}] {v} n_item_types={n} seed={s}: {results[-1]['seconds']:.0f}s", flush=True)
            # Written after every run, so an interrupted study still leaves its finished runs.
            results_path.write_text(json.dumps({"settings": settings, "runs": results}, indent=1) + "\n")
    print(f"command: `{command}`\n")
    print(report(results, args.out))


if __name__ == "__main__":
    main()
