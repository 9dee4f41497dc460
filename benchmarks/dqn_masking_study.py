"""The value-based masking study: masked DQN vs DQN with invalid-action penalties vs DQN without a mask, on Kart.

The DQN counterpart of ``benchmarks/masking_study.py`` (the PPO study): the same env (``maskrl/Kart-v0``, defaults
but ``n_item_types``), the same evaluation (deterministic, 10 episodes on the fixed seeds 1000000-1000009, in a
separate env *without* penalty, played in lock step), the same summary (final return, steps to 90% of the best
final return, invalid-action rates) and the same plots. Every variant trains with the ``dqn`` hyperparameters of
``maskrl/agents/hyperparams/Kart-v0.yml`` (only ``n_timesteps`` is ours):

- ``masked``: ``--algo dqn``, :class:`maskrl.agents.dqn.MaskedDQN` (masked greedy action, exploration and target);
- ``penalty_-0.1``: ``--algo dqn_nomask`` (plain DQN that never sees a mask; invalid actions execute as COAST)
  with ``invalid_action_penalty=-0.1``, as ``dqn_nomask`` trains by default;
- ``penalty_0``: the same with no penalty: DQN that knows nothing of the mask.

Per run it records, every ``--eval-freq`` env steps (and at step 0 and the end), the evaluation return and
invalid-action rate; and per window of ``--window`` env steps, the training invalid-action rate (exploration
included) and the mean task return (penalty removed) of the training episodes that ended in it. The training
return is smoothed over 3 windows, as the PPO study smooths over 3 rollouts.

``--taxi`` runs the external-env comparison instead: masked DQN vs plain DQN on gymnasium's ``Taxi-v4``, whose mask
comes in ``info["action_mask"]`` (``maskrl.agents.env_setup`` puts it into the observation), with the
``dqn`` settings of ``maskrl/agents/hyperparams/Taxi-v4.yml`` (those of the Taxi learning check in
``tests/test_dqn.py``); the evaluation is 20 deterministic episodes.

Runs go one at a time (one torch thread): the machine is shared. ``results.json`` is updated after every run. Run::

    nice -n 5 python benchmarks/dqn_masking_study.py --out docs/dqn_masking_study            # Kart grid
    nice -n 5 python benchmarks/dqn_masking_study.py --taxi --out docs/dqn_masking_study     # Taxi
    python benchmarks/dqn_masking_study.py --plot-only --out docs/dqn_masking_study          # tables, plot

``--quick`` is a smoke run (1 seed, 4k steps, 3 evaluation episodes).
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from masking_study import evaluate, format_steps, mean_curve, mean_training_curve
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from PIL import Image
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy

from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.agents.hyperparams import load_hyperparams, resolve_algo_kwargs
from maskrl.agents.registry import get_algo

ENV = "maskrl/Kart-v0"
TAXI = "Taxi-v4"
SIZES = (4, 16, 64)
#: trained variant -> (--algo, invalid_action_penalty)
VARIANTS: dict[str, tuple[str, float]] = {
    "masked": ("dqn", 0.0),
    "penalty_-0.1": ("dqn_nomask", -0.1),
    "penalty_0": ("dqn_nomask", 0.0),
}
TAXI_VARIANTS = {"masked": "dqn", "no_mask": "dqn_nomask"}
THRESHOLD = 0.9
COLORS = {"masked": "C0", "penalty_-0.1": "C4", "penalty_0": "C2", "no_mask": "C2"}


# ---------------------------------------------------------------------------------------------- summary
def steps_to_stay(steps: Sequence[float], values: Sequence[float], threshold: float) -> float | None:
    """The first step after 0 from which ``values`` stays at or above ``threshold`` to the end (``None``: never).

    The PPO study takes the first crossing; here the untrained point (step 0) must not count: an untrained
    Q-network's greedy action is nearly one constant action, and on Kart "always accelerate" alone scores about
    4.4, above most thresholds. DQN's evaluation curves also dip and recover, so a crossing must hold to count.

    :raises ValueError: if the two sequences differ in length
    """
    if len(steps) != len(values):
        raise ValueError(f"steps and values differ in length ({len(steps)} vs {len(values)})")
    found = None
    for step, value in zip(steps, values, strict=True):
        if value < threshold:
            found = None
        elif found is None and step > 0:
            found = float(step)
    return found


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _tail(rows: Sequence[dict[str, Any]], key: str, fraction: float = 0.2) -> float | None:
    """Mean of ``key`` over the last ``fraction`` of ``rows`` (``None`` if there are none)."""
    tail = rows[len(rows) - max(1, round(fraction * len(rows))) :] if rows else []
    return _mean_or_none([row[key] for row in tail])


def summarise(
    results: Sequence[dict[str, Any]], variants: Sequence[str], fraction: float = THRESHOLD
) -> dict[int, dict[str, dict[str, Any]]]:
    """Per size and variant: final return (mean and std over seeds), steps to ``fraction`` of the best, rates.

    As the PPO study: the best final return of a size is the largest seed-mean final evaluation return of any
    variant at that size, and the threshold ``fraction`` times it; unlike it, steps to threshold is where a
    variant's seed-mean curve reaches the threshold *and stays* there (:func:`steps_to_stay`). The same on the
    training return (``train_*``).

    :param results: run records as :func:`run` returns them
    :param variants: the variants, in table order
    :return: ``{size: {variant: stats}}`` (Taxi's records have size 0)
    """
    summary: dict[int, dict[str, dict[str, Any]]] = {}
    for size in sorted({r["n_item_types"] for r in results}):
        cells: dict[str, dict[str, Any]] = {}
        for variant in variants:
            runs = [r for r in results if r["n_item_types"] == size and r["variant"] == variant]
            if not runs:
                continue
            finals = [r["eval"][-1]["return"] for r in runs]
            steps, values = mean_curve([r["eval"] for r in runs], "return")
            cells[variant] = {
                "seeds": len(runs),
                "final_mean": float(np.mean(finals)),
                "final_std": float(np.std(finals)),
                "curve": (steps, values),
                "train_curve": mean_training_curve(runs),
                "train_return_final": _mean_or_none([_tail(r["rollouts"], "train_return") for r in runs]),
                "train_invalid_rate": _mean_or_none(
                    [_mean_or_none([row["invalid_rate"] for row in r["rollouts"]]) for r in runs]
                ),
                "train_invalid_rate_final": _mean_or_none([_tail(r["rollouts"], "invalid_rate") for r in runs]),
                "eval_invalid_rate": float(np.mean([r["eval"][-1]["invalid_rate"] for r in runs])),
                "cpu_minutes": float(np.mean([r["cpu_seconds"] for r in runs])) / 60,
            }
        best = max(cell["final_mean"] for cell in cells.values())
        best_train = max(
            (c["train_return_final"] for c in cells.values() if c["train_return_final"] is not None), default=0.0
        )
        for cell in cells.values():
            cell["threshold"] = fraction * best if best > 0 else best / fraction  # Taxi's returns can be negative
            cell["steps_to_threshold"] = steps_to_stay(*cell.pop("curve"), cell["threshold"])
            cell["train_threshold"] = fraction * best_train if best_train > 0 else best_train / fraction
            cell["train_steps_to_threshold"] = steps_to_stay(*cell.pop("train_curve"), cell["train_threshold"])
        summary[size] = cells
    return summary


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def paper_table(summary: dict[int, dict[str, dict[str, Any]]], variants: Sequence[str], training: bool = False) -> str:
    """One row per variant, one column per size: final return (± std over seeds) and steps to 90% of the best."""
    sizes = list(summary)
    names = [f"{s} item types ({5 + s} actions)" if s else "Taxi-v4" for s in sizes]
    lines = ["| variant | " + " | ".join(names) + " |", "|---|" + "---:|" * len(sizes)]
    for variant in variants:
        row = []
        for size in sizes:
            c = summary[size].get(variant)
            if c is None or (training and c["train_return_final"] is None):
                row.append("—")
            elif training:
                row.append(f"{c['train_return_final']:.2f} ({format_steps(c['train_steps_to_threshold'])})")
            else:
                row.append(f"{c['final_mean']:.2f} ± {c['final_std']:.2f} ({format_steps(c['steps_to_threshold'])})")
        lines.append(f"| {variant} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def long_table(summary: dict[int, dict[str, dict[str, Any]]]) -> str:
    """One row per size and variant with every reported metric."""
    lines = [
        "| item types | variant | seeds | final eval return | steps to 90% of best | final training return (steps) "
        "| train invalid-action rate (all / last 20%) | final eval invalid-action rate | CPU minutes per run |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, cells in summary.items():
        for variant, c in cells.items():
            train = (
                "—"
                if c["train_return_final"] is None
                else f"{c['train_return_final']:.2f} ({format_steps(c['train_steps_to_threshold'])})"
            )
            lines.append(
                f"| {size or 'Taxi'} | {variant} | {c['seeds']} | {c['final_mean']:.2f} ± {c['final_std']:.2f} "
                f"| {format_steps(c['steps_to_threshold'])} (≥ {c['threshold']:.2f}) | {train} "
                f"| {_fmt(c['train_invalid_rate'], '.1%')} / {_fmt(c['train_invalid_rate_final'], '.1%')} "
                f"| {c['eval_invalid_rate']:.1%} | {c['cpu_minutes']:.1f} |"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- training
class StudyCurves(BaseCallback):
    """Evaluation curve, and per window of env steps the training invalid-action rate and task return.

    :param evaluate_fn: ``model -> (mean return, invalid-action rate)``, the deterministic evaluation
    :param penalty: the training env's invalid-action penalty, removed from the training returns
    :param eval_freq: evaluate every this many env steps (and at the start and the end)
    :param window: env steps per training window
    """

    def __init__(self, evaluate_fn: Any, penalty: float, eval_freq: int, window: int) -> None:
        super().__init__()
        self.evaluate_fn, self.penalty, self.eval_freq, self.window = evaluate_fn, penalty, eval_freq, window
        self.eval: list[dict[str, float]] = []
        self.rollouts: list[dict[str, float | None]] = []  # one row per window (the PPO study's name)
        self._next_eval = self._next_window = 0
        self._steps = self._invalid = 0
        self._returns: list[float] = []

    def _evaluate(self) -> None:
        ret, rate = self.evaluate_fn(self.model)
        self.eval.append({"steps": float(self.num_timesteps), "return": ret, "invalid_rate": rate})

    def _on_training_start(self) -> None:
        self._evaluate()
        self._next_eval, self._next_window = self.eval_freq, self.window

    def _close_window(self) -> None:
        self.rollouts.append(
            {
                "steps": float(self.num_timesteps),
                "invalid_rate": self._invalid / max(self._steps, 1),
                "train_return": float(np.mean(self._returns)) if self._returns else None,
            }
        )
        self._steps = self._invalid = 0
        self._returns = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            self._steps += 1
            self._invalid += bool(info.get("invalid_action", False))
            if "episode" in info:
                # Monitor's return includes the penalty; the task return does not.
                invalid = info.get("episode_stats", {}).get("invalid_actions", 0)
                self._returns.append(float(info["episode"]["r"]) - self.penalty * invalid)
        if self.num_timesteps >= self._next_window:
            self._close_window()
            self._next_window += self.window
        if self.num_timesteps >= self._next_eval:
            self._evaluate()
            self._next_eval += self.eval_freq
        return True

    def _on_training_end(self) -> None:
        if self._steps:
            self._close_window()
        if not self.eval or self.eval[-1]["steps"] < self.num_timesteps:
            self._evaluate()


def dqn_settings() -> tuple[dict[str, Any], int]:
    """DQN's constructor arguments and ``n_envs`` from the ``dqn`` section of ``Kart-v0.yml``."""
    hyperparams = load_hyperparams(ENV, "dqn")
    return resolve_algo_kwargs(hyperparams), int(hyperparams.get("n_envs", 1))


def evaluate_taxi(model: BaseAlgorithm, n_episodes: int, sees_mask: bool) -> tuple[float, float]:
    """Deterministic mean return and invalid-action rate over ``n_episodes`` Taxi episodes (env seeded 100)."""
    env = make_masked_vec_env(TAXI, 1, 100, sees_mask=sees_mask)
    steps = invalid = 0

    def count(local_vars: dict[str, Any], _globals: dict[str, Any]) -> None:
        nonlocal steps, invalid
        steps += 1
        invalid += bool(local_vars["info"].get("invalid_action", False))

    returns, _ = evaluate_policy(
        model, env, n_episodes, deterministic=True, return_episode_rewards=True, callback=count, warn=False
    )
    env.close()
    return float(np.mean(returns)), invalid / max(steps, 1)


def run(variant: str, size: int, seed: int, timesteps: int, eval_freq: int, eval_episodes: int, window: int) -> dict:
    """Train one variant on one Kart size (``size`` 0: Taxi) with one seed and return its record."""
    torch.set_num_threads(1)
    if size == 0:
        algo, penalty = TAXI_VARIANTS[variant], 0.0
        spec = get_algo(algo)
        hyperparams = load_hyperparams(TAXI, "dqn")
        kwargs, n_envs = resolve_algo_kwargs(hyperparams), int(hyperparams["n_envs"])
        env = make_masked_vec_env(TAXI, n_envs, seed, sees_mask=spec.sees_mask)

        def evaluate_fn(model: BaseAlgorithm) -> tuple[float, float]:
            return evaluate_taxi(model, eval_episodes, spec.sees_mask)
    else:
        algo, penalty = VARIANTS[variant]
        spec = get_algo(algo)
        kwargs, n_envs = dqn_settings()
        env_kwargs = {"n_item_types": size, "invalid_action_penalty": penalty}
        env = make_masked_vec_env(ENV, n_envs, seed, env_kwargs=env_kwargs, sees_mask=spec.sees_mask)

        def evaluate_fn(model: BaseAlgorithm) -> tuple[float, float]:
            return evaluate(model, size, eval_episodes, spec.sees_mask)

    model = spec.algo_class(spec.policy_for(False), env, seed=seed, device="cpu", **kwargs)
    curves = StudyCurves(evaluate_fn, penalty, eval_freq, window)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(timesteps, callback=curves)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    env.close()
    return {
        "variant": variant,
        "algo": algo,
        "n_item_types": size,
        "penalty": penalty,
        "seed": seed,
        "timesteps": int(model.num_timesteps),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "eval": curves.eval,
        "rollouts": curves.rollouts,
    }


# ---------------------------------------------------------------------------------------------- plots
_THOUSANDS = FuncFormatter(lambda x, _: f"{x / 1000:.0f}k")


def _band(ax: Any, runs: Sequence[dict[str, Any]], section: str, key: str, label: str, smooth: int = 1) -> None:
    """Seed mean ± std of ``run[section][i][key]`` against steps (a running mean over ``smooth`` points)."""
    curves = []
    for r in runs:
        rows = [row for row in r[section] if row.get(key) is not None]
        if len(rows) >= smooth + 1:  # at least two points once smoothed
            values = np.convolve([row[key] for row in rows], np.ones(smooth) / smooth, mode="valid")
            curves.append(([row["steps"] for row in rows][smooth - 1 :], values))
    if not curves:
        return
    grid = np.linspace(max(c[0][0] for c in curves), min(c[0][-1] for c in curves), 60)
    ys = np.array([np.interp(grid, steps, values) for steps, values in curves])
    ax.xaxis.set_major_formatter(_THOUSANDS)
    ax.plot(grid, ys.mean(0), label=label, color=COLORS[label])
    ax.fill_between(grid, ys.mean(0) - ys.std(0), ys.mean(0) + ys.std(0), alpha=0.15, color=COLORS[label])


def plot(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Rows: evaluation return, training return (no penalty), training invalid-action rate; one column per size."""
    sizes = sorted({r["n_item_types"] for r in results}, key=lambda size: (size == 0, size))  # Taxi (0) last
    rows = [
        ("eval", "return", "deterministic eval return", 1),
        ("rollouts", "train_return", "training return", 3),
        ("rollouts", "invalid_rate", "train invalid-action rate", 1),
    ]
    fig = Figure(figsize=(3.6 * len(sizes), 2.6 * len(rows)), dpi=80)
    for row, (section, key, label, smooth) in enumerate(rows):
        for col, size in enumerate(sizes):
            ax = fig.add_subplot(len(rows), len(sizes), row * len(sizes) + col + 1)
            variants = list(TAXI_VARIANTS) if size == 0 else list(VARIANTS)
            for variant in variants:
                runs = [r for r in results if r["n_item_types"] == size and r["variant"] == variant]
                _band(ax, runs, section, key, variant, smooth)
            if row == 0:
                ax.set_title("Taxi-v4 (6 actions)" if size == 0 else f"{size} item types ({5 + size} actions)")
                ax.legend(fontsize=7)
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
            if row == len(rows) - 1:
                ax.set_xlabel("env steps")
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    # A palette PNG: the plot has a few dozen colours, and the docs keep their pictures small.
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    Image.open(buffer).convert("RGB").quantize(colors=64).save(path, optimize=True)


def report(results: Sequence[dict[str, Any]], out: Path) -> str:
    """Draw the plot into ``out`` and return the markdown tables."""
    plot(results, out / "curves.png")
    kart = [r for r in results if r["n_item_types"] > 0]
    taxi = [r for r in results if r["n_item_types"] == 0]
    parts = []
    if kart:
        summary = summarise(kart, list(VARIANTS))
        parts += [
            f"Deterministic evaluation return:\n\n{paper_table(summary, list(VARIANTS))}",
            f"Training return (no penalty):\n\n{paper_table(summary, list(VARIANTS), training=True)}",
            long_table(summary),
        ]
    if taxi:
        summary = summarise(taxi, list(TAXI_VARIANTS))
        parts.append(f"Taxi-v4:\n\n{long_table(summary)}")
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", help="variants to train (default: all of the study's)")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="n_item_types values")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--timesteps", type=int, default=30_000, help="env steps per run")
    parser.add_argument("--eval-freq", type=int, default=5_000, help="env steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    parser.add_argument("--window", type=int, default=1_000, help="env steps per training-curve window")
    parser.add_argument("--taxi", action="store_true", help="masked DQN vs plain DQN on Taxi-v4 instead of Kart")
    parser.add_argument("--out", type=Path, default=Path("docs/dqn_masking_study"))
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 4k steps, 3 eval episodes")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot and tables from OUT/results.json")
    args = parser.parse_args(argv)
    results_path = args.out / "results.json"
    saved = json.loads(results_path.read_text()) if results_path.is_file() else {"settings": {}, "runs": []}
    if args.plot_only:
        if not saved["runs"]:
            parser.error(f"no results to plot in {results_path}")
        print(report(saved["runs"], args.out))
        return
    if args.quick:
        args.seeds, args.timesteps, args.eval_freq, args.eval_episodes, args.window = [0], 4_000, 2_000, 3, 500
    variants = args.variants or list(TAXI_VARIANTS if args.taxi else VARIANTS)
    sizes = [0] if args.taxi else args.sizes
    if args.taxi:
        args.eval_episodes = 20 if args.eval_episodes == 10 else args.eval_episodes
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/dqn_masking_study.py", *(sys.argv[1:] if argv is None else argv)])
    key = "taxi" if args.taxi else "kart"
    settings = saved["settings"]
    settings[key] = {
        "command": command,
        "hyperparams": load_hyperparams(TAXI if args.taxi else ENV, "dqn"),
        "timesteps": args.timesteps,
        "eval_freq": args.eval_freq,
        "eval_episodes": args.eval_episodes,
        "window": args.window,
        "seeds": args.seeds,
        "sizes": sizes,
    }
    # Runs of other settings (the other env) are kept; those this command redoes are replaced.
    planned = {(v, n, s) for n in sizes for s in args.seeds for v in variants}
    results = [r for r in saved["runs"] if (r["variant"], r["n_item_types"], r["seed"]) not in planned]
    jobs = [(v, n, s) for n in sizes for s in args.seeds for v in variants]
    for done, (v, n, s) in enumerate(jobs, 1):
        results.append(run(v, n, s, args.timesteps, args.eval_freq, args.eval_episodes, args.window))
        record = results[-1]
        print(
            f"[{done}/{len(jobs)}] {v} size={n} seed={s}: final {record['eval'][-1]['return']:.2f}, "
            f"{record['cpu_seconds']:.0f} CPU-s",
            flush=True,
        )
        # Written after every run, so an interrupted study still leaves its finished runs.
        results_path.write_text(json.dumps({"settings": settings, "runs": results}, indent=1) + "\n")
    print(f"command: `{command}`\n")
    print(report(results, args.out))


if __name__ == "__main__":
    main()
