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

Per variant and size it reports the final evaluation return and the final training return over seeds as their
interquartile mean with its 95% stratified bootstrap interval, next to their mean ± std (:mod:`benchmarks.statistics`),
and one line per size and baseline: the IQM difference between ``masked`` and that baseline, with its own interval,
and whether it excludes 0. Then every metric: the env steps the seed-mean evaluation curve needs to reach 90% of the
best final return of any variant at that size ("never"), the same for the training return, the invalid-action rates
and the mean approx_kl. Writes ``results.json`` (after every run; ``--continue`` skips the runs already there),
``curves.png`` (evaluation return, one panel per size, seed bands) and ``training.png`` (training return, approx_kl,
invalid-action rate), and prints the markdown tables. Run the whole study (120 runs of 65,536 env steps: 6 trained
variants x 4 sizes x 5 seeds, 32 PPO updates each, evaluated every 8,192 steps on 10 episodes)::

    nice -n 5 python -m benchmarks.masking_study --out docs/masking_study

``--quick`` is a smoke run (1 seed, 8k steps); ``--plot-only`` redraws the plots and tables from ``results.json``
(about a minute, most of it in the bootstraps).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stable_baselines3 import PPO

from benchmarks.common import (
    EVAL_SEED,
    CurveRow,
    Record,
    ResultsFile,
    StudyParser,
    TrainingCurves,
    by_variant,
    command_line,
    evaluate_kart,
    learn,
    long_table,
    mean_or_none,
    mean_std,
    plot_sizes,
    size_name,
    study_runs,
    summarise,
)
from benchmarks.statistics import gap, iqm_intervals
from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.agents.hyperparams import load_hyperparams, resolve_algo_kwargs
from maskrl.agents.registry import get_algo

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
COLORS = {variant: f"C{index}" for index, variant in enumerate(VARIANTS)}  # the same in every plot
#: the share of a run's last rollouts its final training return is the mean of (as in the summary tables)
TAIL = 0.2


def _evaluations(model: Any, n_item_types: int, n_episodes: int, sees_mask: bool, without_mask: bool) -> dict:
    """The evaluation, and for the masked runs also the one without the mask (keys prefixed ``nomask_``)."""
    result = evaluate_kart(model, n_item_types, n_episodes, sees_mask)
    if without_mask:
        nomask = evaluate_kart(model, n_item_types, n_episodes, sees_mask, without_mask=True)
        result.update({f"nomask_{key}": value for key, value in nomask.items()})
    return result


def run(variant: str, n_item_types: int, seed: int, timesteps: int, eval_freq: int, eval_episodes: int) -> list:
    """Train one variant on one size with one seed; return its record (and, for ``masked``, the no-mask one)."""
    algo, penalty = TRAINED[variant]
    spec = get_algo(algo)
    hyperparams = load_hyperparams(ENV, "ppo")
    env_kwargs = {"n_item_types": n_item_types, "invalid_action_penalty": penalty}
    n_envs = int(hyperparams.get("n_envs", 1))
    env = make_masked_vec_env(ENV, n_envs, seed, env_kwargs=env_kwargs, sees_mask=spec.sees_mask)
    model = PPO(spec.policy_for(False), env, seed=seed, device="cpu", **resolve_algo_kwargs(hyperparams))
    evaluations = functools.partial(
        _evaluations,
        n_item_types=n_item_types,
        n_episodes=eval_episodes,
        sees_mask=spec.sees_mask,
        without_mask=variant == "masked",
    )
    curves = TrainingCurves(
        evaluations, eval_freq, penalty=penalty, update_keys=("approx_kl", "clip_fraction", "entropy_loss")
    )
    seconds, cpu_seconds = learn(model, timesteps, curves)
    env.close()
    evals = [{"steps": e["steps"], "return": e["return"], "invalid_rate": e["invalid_rate"]} for e in curves.evals]
    record = {
        "variant": variant,
        "algo": algo,
        "n_item_types": n_item_types,
        "penalty": penalty,
        "seed": seed,
        "timesteps": int(model.num_timesteps),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "eval": evals,
        "rollouts": [{k: row[k] for k in ("steps", "invalid_rate", "train_return")} for row in curves.rollouts],
        "updates": [
            {
                "steps": row["steps"],
                "approx_kl": row["approx_kl"],
                "clip_fraction": row["clip_fraction"],
                "entropy": -row["entropy_loss"],
            }
            for row in curves.updates
        ],
        "final_return": evals[-1]["return"],
        "final_invalid_rate": evals[-1]["invalid_rate"],
    }
    if variant != "masked":
        return [record]
    # The same training run: its rollouts and updates are the masked record's, so they are not repeated.
    nomask = [
        {"steps": e["steps"], "return": e["nomask_return"], "invalid_rate": e["nomask_invalid_rate"]}
        for e in curves.evals
    ]
    return [
        record,
        {
            **record,
            "variant": NO_MASK_EVAL,
            "eval": nomask,
            "rollouts": [],
            "updates": [],
            "final_return": nomask[-1]["return"],
            "final_invalid_rate": nomask[-1]["invalid_rate"],
        },
    ]


def final_eval_return(run: Record) -> float:
    """The run's last deterministic evaluation return."""
    return run["eval"][-1]["return"]


def final_training_return(run: Record) -> float:
    """The run's training return (penalty removed) averaged over the last ``TAIL`` of its rollouts, as the summary's
    "final training return" (NaN if no episode ended in these rollouts, or the record has none)."""
    rows = run["rollouts"]
    value = mean_or_none([row["train_return"] for row in rows[len(rows) - max(1, round(TAIL * len(rows))) :]])
    return float("nan") if value is None else value


#: the measures the report sums up with IQMs: (name, a run's score, the variants that have it)
MEASURES: tuple[tuple[str, Callable[[Record], float], tuple[str, ...]], ...] = (
    ("final eval return", final_eval_return, VARIANTS),
    # masked_eval_nomask trains nothing: its rollouts are the masked run's
    ("final training return", final_training_return, tuple(TRAINED)),
)


def iqm_table(results: Sequence[Record], variants: Sequence[str] = VARIANTS) -> str:
    """One row per size and variant: per measure of ``MEASURES``, the IQM over seeds with its 95% interval and the
    mean ± std ("—" where the measure does not apply); then, per measure, one line per size and variant other than the
    first (``masked``) that the measure applies to: the IQM difference between the first variant and it
    (:func:`benchmarks.statistics.gap`).

    :param results: run records
    :param variants: the variants in table order, the masked one first
    """
    header = "".join(f" {name}: IQM [95% CI] | mean ± std |" for name, _, _ in MEASURES)
    lines = ["| item types | variant | seeds |" + header, "|---:|---|---:|" + "---:|---:|" * len(MEASURES)]
    differences: dict[str, list[str]] = {name: [] for name, _, _ in MEASURES}
    for size in sorted({r["n_item_types"] for r in results}):
        groups = dict(by_variant([r for r in results if r["n_item_types"] == size], variants))
        columns = []
        for name, score, applies in MEASURES:
            scored = {variant: runs for variant, runs in groups.items() if variant in applies}
            intervals = iqm_intervals({variant: [score(r) for r in runs] for variant, runs in scored.items()})
            columns.append((name, score, applies, scored, intervals))
        for variant, runs in groups.items():
            cells = "".join(
                f" {intervals[variant].text()} | {mean_std([score(r) for r in runs])} |"
                if variant in intervals
                else " — | — |"
                for _, score, _, _, intervals in columns
            )
            lines.append(f"| {size} | {variant} | {len(runs)} |{cells}")
        for name, score, applies, scored, intervals in columns:
            for baseline in (v for v in variants[1:] if v in applies):
                differences[name].append(f"- {gap(scored, score, size_name(size), variants[0], baseline, intervals)}")
    parts = ["\n".join(lines)]
    for name, found in differences.items():
        parts.append(f"{name.capitalize()}, {variants[0]} against each baseline:\n\n" + "\n".join(found))
    return "\n\n".join(parts)


def report(results: Sequence[Record], out: Path) -> str:
    """Draw the plots into ``out`` and return the markdown tables: the IQMs and their differences (:func:`iqm_table`),
    then every metric of the summary."""
    evaluation = [CurveRow("eval", "return", "deterministic eval return")]
    plot_sizes(results, out / "curves.png", evaluation, lambda size: VARIANTS, COLORS)
    training = [
        CurveRow("rollouts", "train_return", "training return (no penalty)"),
        CurveRow("updates", "approx_kl", "approx_kl", log=True),
        CurveRow("rollouts", "invalid_rate", "train invalid-action rate"),
    ]
    plot_sizes(results, out / "training.png", training, lambda size: list(TRAINED), COLORS)
    return f"{iqm_table(results)}\n\n{long_table(summarise(results, VARIANTS))}"


def main(argv: list[str] | None = None) -> None:
    parser = StudyParser(
        __doc__,
        TRAINED,
        TRAINED,
        seeds=(0, 1, 2, 3, 4),
        timesteps=65_536,  # 32 PPO updates
        eval_episodes=10,
        out=Path("docs/masking_study"),
        quick={"seeds": [0], "timesteps": 8_192, "eval_freq": 4_096, "eval_episodes": 3},
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="n_item_types values")
    parser.add_argument("--eval-freq", type=int, default=8_192, help="env steps between evaluations")
    args = parser.parse_args(argv)
    for name in ("timesteps", "eval_freq", "eval_episodes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if any(size < 1 for size in args.sizes):
        parser.error(f"--sizes must be positive, got {args.sizes}")
    command = command_line(__spec__.name, argv)
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
    runs = study_runs(
        parser,
        args,
        command,
        functools.partial(run, timesteps=args.timesteps, eval_freq=args.eval_freq, eval_episodes=args.eval_episodes),
        lambda r: (
            f"{r['variant']} n_item_types={r['n_item_types']} seed={r['seed']}: "
            f"final {r['final_return']:.2f}, {r['cpu_seconds']:.0f} CPU-s"
        ),
        ResultsFile(args.out / "results.json", runs_key="runs"),
        {"settings": settings},
        # Largest sizes first: they are the slowest runs.
        [(v, n, s) for n in sorted(args.sizes, reverse=True) for s in args.seeds for v in args.variants],
        lambda r: ("masked" if r["variant"] == NO_MASK_EVAL else r["variant"], r["n_item_types"], r["seed"]),
    )
    print(report(runs, args.out))


if __name__ == "__main__":
    main()
