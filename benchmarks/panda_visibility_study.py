"""Does the visibility mask help? PPO on ``maskrl/PandaGrid-v0`` with three features extractors.

- ``masked``: :class:`~maskrl.policies.EntityAttentionExtractor`, hidden and padding entities masked out
  of the attention and the pooling (what maskrl proposes);
- ``unmasked``: the same extractor with ``use_visibility=False``: hidden slots are fed as their zero rows
  and attended to like any other entity;
- ``flat``: an MLP over the concatenated entity rows (SB3's ``CombinedExtractor`` through
  ``MaskedMultiInputPolicy``).

Everything else is the same: PPO hyperparameters from ``maskrl/agents/hyperparams/PandaGrid-v0.yml``,
the action mask, the seeds. For each run it records the mean training episode return after every PPO
iteration and a final deterministic evaluation. The runs are the cells of a study (:func:`benchmarks.common.run_grid`:
``OUT/study.log``, or ``--storage`` for many workers); it writes ``results.json`` (after every run; ``--continue`` skips
the runs done), ``curves.png`` and prints markdown tables: per variant the interquartile mean of the final evaluation
returns over seeds with its 95% stratified bootstrap interval (:mod:`benchmarks.statistics`), and the gap between the
masked and the unmasked extractor.

Run: ``python -m benchmarks.panda_visibility_study --out docs/panda_visibility`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from stable_baselines3 import PPO
from stable_baselines3.common.torch_layers import CombinedExtractor

from benchmarks.common import (
    Record,
    StudyParser,
    TrainingCurves,
    by_variant,
    command_line,
    evaluate,
    label_axes,
    learn,
    mean_std,
    save_figure,
    study_runs,
    variant_bands,
)
from benchmarks.statistics import gap, iqm_intervals
from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.agents.hyperparams import load_hyperparams, resolve_algo_kwargs
from maskrl.policies import EntityAttentionExtractor, MaskedActorCriticPolicy, MaskedMultiInputPolicy

ENV = "maskrl/PandaGrid-v0"
VARIANTS = ("masked", "unmasked", "flat")


def run(variant: str, seed: int, timesteps: int, eval_episodes: int) -> dict[str, Any]:
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
    env_kwargs = hyperparams.get("env_kwargs")
    env = make_masked_vec_env(ENV, int(hyperparams.get("n_envs", 8)), seed, env_kwargs=env_kwargs)
    model = PPO(policy, env, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **kwargs)
    curves = TrainingCurves()
    seconds, cpu_seconds = learn(model, timesteps, curves)
    env.close()
    final = evaluate(model, make_masked_vec_env(ENV, 1, 10_000 + seed, env_kwargs=env_kwargs), eval_episodes)
    rows = [row for row in curves.rollouts if row["recent_return"] is not None]
    return {
        "variant": variant,
        "seed": seed,
        "timesteps": timesteps,
        "seconds": seconds,
        # The process's CPU time: on a shared machine the wall time says more about the neighbours than about the run.
        "cpu_seconds": cpu_seconds,
        "curve_steps": [int(row["steps"]) for row in rows],
        "curve_returns": [row["recent_return"] for row in rows],
        "eval_return_mean": final["return_mean"],
        "eval_return_std": final["return_std"],
        "eval_stats": final["env_stats"],
    }


def plot(results: list[Record], path: Path) -> None:
    fig = Figure(figsize=(7, 4.2), dpi=100)
    ax = fig.add_subplot()
    variant_bands(ax, results, VARIANTS, lambda r: (r["curve_steps"], r["curve_returns"]))
    title = "PPO on maskrl/PandaGrid-v0: visibility mask vs none vs flat MLP"
    label_axes(ax, "env steps", "training episode return (mean of last 100)", title, size=11)
    save_figure(fig, path)


def table(results: list[Record]) -> str:
    """Per variant: the final evaluation returns over seeds (IQM with its 95% interval, mean ± std), the last training
    return, the evaluation's watermelons and catches, the CPU minutes of training per run; then the masked - unmasked
    gap."""
    groups = dict(by_variant(results, VARIANTS))
    intervals = iqm_intervals({variant: [r["eval_return_mean"] for r in runs] for variant, runs in groups.items()})
    lines = [
        "| variant | seeds | final eval return: IQM [95% CI] | mean ± std | last training return (mean) | "
        "watermelons eaten | caught | CPU minutes per run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, runs in groups.items():
        last = [r["curve_returns"][-1] for r in runs]
        eaten = np.mean([r["eval_stats"].get("watermelons_eaten", np.nan) for r in runs])
        caught = np.mean([r["eval_stats"].get("caught", np.nan) for r in runs])
        minutes = np.mean([r.get("cpu_seconds", r["seconds"]) for r in runs]) / 60
        returns = [r["eval_return_mean"] for r in runs]
        lines.append(
            f"| {variant} | {len(runs)} | {intervals[variant].text()} | {mean_std(returns)} | {np.mean(last):.2f} "
            f"| {eaten:.2f} | {caught:.2f} | {minutes:.1f} |"
        )
    final = gap(groups, lambda r: r["eval_return_mean"], "final eval return")
    training = gap(groups, lambda r: r["curve_returns"][-1], "last training return")
    return "\n".join([*lines, "", f"- {final}", f"- {training}"])


def main(argv: list[str] | None = None) -> None:
    parser = StudyParser(
        __doc__,
        VARIANTS,
        VARIANTS,
        seeds=(0, 1, 2),
        timesteps=150_000,
        eval_episodes=20,
        out=Path("docs/panda_visibility"),
        quick={"seeds": [0], "timesteps": 8_000, "eval_episodes": 3},
    )
    args = parser.parse_args(argv)
    runs = study_runs(
        parser,
        args,
        command_line(__spec__.name, argv),
        functools.partial(run, timesteps=args.timesteps, eval_episodes=args.eval_episodes),
        lambda r: (
            f"{r['variant']} seed {r['seed']}: eval {r['eval_return_mean']:.2f}, {r['seconds'] / 60:.1f} min "
            f"({r['cpu_seconds'] / 60:.1f} CPU min)"
        ),
    )
    plot(runs, args.out / "curves.png")
    print(table(runs))


if __name__ == "__main__":
    main()
