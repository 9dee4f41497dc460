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
return is smoothed over 3 windows, as the PPO study smooths over 3 rollouts. Unlike the PPO study, the steps to
the threshold are where the seed-mean curve reaches it *and stays* (:func:`benchmarks.common.steps_to_stay`).

The report sums up each cell's final returns over seeds by their interquartile mean with its 95% stratified bootstrap
interval (:mod:`benchmarks.statistics`) next to their mean ± std, and gives one line per size and baseline: the IQM
difference between the masked variant and that baseline, with its own interval, and whether it excludes 0.

``--taxi`` runs the external-env comparison instead: masked DQN vs plain DQN on gymnasium's ``Taxi-v4``, whose mask
comes in ``info["action_mask"]`` (``maskrl.agents.env_setup`` puts it into the observation), with the
``dqn`` settings of ``maskrl/agents/hyperparams/Taxi-v4.yml`` (those of the Taxi learning check in
``tests/test_dqn.py``); the evaluation is 20 deterministic episodes.

``results.json`` holds the runs of both (each command redoes its own runs and keeps the others'). Run::

    nice -n 5 python -m benchmarks.dqn_masking_study --out docs/dqn_masking_study            # Kart grid
    nice -n 5 python -m benchmarks.dqn_masking_study --taxi --out docs/dqn_masking_study     # Taxi
    python -m benchmarks.dqn_masking_study --plot-only --out docs/dqn_masking_study          # tables, plot

``--quick`` is a smoke run (1 seed, 4k steps, 3 evaluation episodes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

from stable_baselines3.common.base_class import BaseAlgorithm

from benchmarks.common import (
    CurveRow,
    Record,
    ResultsFile,
    StudyParser,
    TrainingCurves,
    by_variant,
    command_line,
    evaluate,
    evaluate_kart,
    learn,
    long_table,
    mean_or_none,
    mean_std,
    plot_sizes,
    size_name,
    steps_to_stay,
    study_runs,
    summarise,
)
from benchmarks.statistics import gap, iqm_intervals
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
COLORS = {"masked": "C0", "penalty_-0.1": "C4", "penalty_0": "C2", "no_mask": "C2"}
#: the share of a run's last training windows its final training return is the mean of (as in the summary tables)
TAIL = 0.2


def evaluate_taxi(model: BaseAlgorithm, n_episodes: int, sees_mask: bool) -> dict[str, float]:
    """Deterministic mean ``return`` and ``invalid_rate`` over ``n_episodes`` Taxi episodes (env seeded 100)."""
    result = evaluate(model, make_masked_vec_env(TAXI, 1, 100, sees_mask=sees_mask), n_episodes)
    return {"return": result["return_mean"], "invalid_rate": result["invalid_action_rate"]}


def run(variant: str, size: int, seed: int, timesteps: int, eval_freq: int, eval_episodes: int, window: int) -> dict:
    """Train one variant on one Kart size (``size`` 0: Taxi) with one seed and return its record."""
    if size == 0:
        algo, penalty = TAXI_VARIANTS[variant], 0.0
        spec = get_algo(algo)
        hyperparams = load_hyperparams(TAXI, "dqn")
        env = make_masked_vec_env(TAXI, int(hyperparams["n_envs"]), seed, sees_mask=spec.sees_mask)
        evaluate_fn = functools.partial(evaluate_taxi, n_episodes=eval_episodes, sees_mask=spec.sees_mask)
    else:
        algo, penalty = VARIANTS[variant]
        spec = get_algo(algo)
        hyperparams = load_hyperparams(ENV, "dqn")
        env_kwargs = {"n_item_types": size, "invalid_action_penalty": penalty}
        env = make_masked_vec_env(
            ENV, int(hyperparams.get("n_envs", 1)), seed, env_kwargs=env_kwargs, sees_mask=spec.sees_mask
        )
        evaluate_fn = functools.partial(
            evaluate_kart, n_item_types=size, n_episodes=eval_episodes, sees_mask=spec.sees_mask
        )
    model = spec.algo_class(spec.policy_for(False), env, seed=seed, device="cpu", **resolve_algo_kwargs(hyperparams))
    curves = TrainingCurves(evaluate_fn, eval_freq, window=window, penalty=penalty)
    seconds, cpu_seconds = learn(model, timesteps, curves)
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
        "eval": curves.evals,
        # one row per window (the PPO study's name)
        "rollouts": [{k: row[k] for k in ("steps", "invalid_rate", "train_return")} for row in curves.rollouts],
    }


def final_eval_return(run: Record) -> float:
    """The run's last deterministic evaluation return."""
    return run["eval"][-1]["return"]


def final_training_return(run: Record) -> float:
    """The run's training return (penalty removed) averaged over the last ``TAIL`` of its windows, as the summary's
    "final training return" (NaN if none of these windows saw an episode end)."""
    rows = run["rollouts"]
    value = mean_or_none([row["train_return"] for row in rows[len(rows) - max(1, round(TAIL * len(rows))) :]])
    return float("nan") if value is None else value


#: the measures the report sums up with IQMs: (name, a run's score)
MEASURES: tuple[tuple[str, Callable[[Record], float]], ...] = (
    ("final eval return", final_eval_return),
    ("final training return", final_training_return),
)


def iqm_table(results: Sequence[Record], variants: Sequence[str]) -> str:
    """One row per size and variant: per measure of ``MEASURES``, the IQM over seeds with its 95% interval and the
    mean ± std; then, per size and variant other than the first (masked), one line per measure with the IQM
    difference between the first variant and it (:func:`benchmarks.statistics.gap`).

    :param results: run records of one env (Kart sizes, or Taxi: size 0)
    :param variants: the variants in table order, the masked one first
    """
    header = "".join(f" {name}: IQM [95% CI] | mean ± std |" for name, _ in MEASURES)
    lines = ["| item types | variant | seeds |" + header, "|---:|---|---:|" + "---:|---:|" * len(MEASURES)]
    differences: dict[str, list[str]] = {name: [] for name, _ in MEASURES}
    for size in sorted({r["n_item_types"] for r in results}):
        groups = dict(by_variant([r for r in results if r["n_item_types"] == size], variants))
        columns = {
            name: (iqm_intervals({v: [score(r) for r in runs] for v, runs in groups.items()}), score)
            for name, score in MEASURES
        }
        for variant, runs in groups.items():
            cells = "".join(
                f" {intervals[variant].text()} | {mean_std([score(r) for r in runs])} |"
                for intervals, score in columns.values()
            )
            lines.append(f"| {size or 'Taxi'} | {variant} | {len(runs)} |{cells}")
        for baseline in variants[1:]:
            for name, (intervals, score) in columns.items():
                line = gap(groups, score, size_name(size), variants[0], baseline, intervals)
                differences[name].append(f"- {line}")
    parts = ["\n".join(lines)]
    for name, found in differences.items():
        parts.append(f"{name.capitalize()}, {variants[0]} against each baseline:\n\n" + "\n".join(found))
    return "\n\n".join(parts)


def report(results: Sequence[Record], out: Path) -> str:
    """Draw the plot into ``out`` and return the markdown tables and the IQM differences."""
    rows = [
        CurveRow("eval", "return", "deterministic eval return"),
        CurveRow("rollouts", "train_return", "training return", smooth=3),
        CurveRow("rollouts", "invalid_rate", "train invalid-action rate"),
    ]
    plot_sizes(results, out / "curves.png", rows, lambda size: list(TAXI_VARIANTS if size == 0 else VARIANTS), COLORS)
    kart = [r for r in results if r["n_item_types"] > 0]
    taxi = [r for r in results if r["n_item_types"] == 0]
    parts = []
    if kart:
        summary = summarise(kart, list(VARIANTS), steps_to_stay)
        parts += [iqm_table(kart, list(VARIANTS)), long_table(summary, with_kl=False)]
    if taxi:
        summary = summarise(taxi, list(TAXI_VARIANTS), steps_to_stay)
        parts += ["Taxi-v4:", iqm_table(taxi, list(TAXI_VARIANTS)), long_table(summary, with_kl=False)]
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = StudyParser(
        __doc__,
        list(dict.fromkeys([*VARIANTS, *TAXI_VARIANTS])),
        None,
        seeds=(0, 1, 2, 3, 4),
        timesteps=30_000,
        eval_episodes=10,  # Taxi: 20
        out=Path("docs/dqn_masking_study"),
        quick={"seeds": [0], "timesteps": 4_000, "eval_freq": 2_000, "eval_episodes": 3, "window": 500},
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="n_item_types values")
    parser.add_argument("--eval-freq", type=int, default=5_000, help="env steps between evaluations")
    parser.add_argument("--window", type=int, default=1_000, help="env steps per training-curve window")
    parser.add_argument("--taxi", action="store_true", help="masked DQN vs plain DQN on Taxi-v4 instead of Kart")
    args = parser.parse_args(argv)
    args.variants = args.variants or list(TAXI_VARIANTS if args.taxi else VARIANTS)
    unknown = set(args.variants) - set(TAXI_VARIANTS if args.taxi else VARIANTS)
    if unknown:
        parser.error(f"not a variant of the {'Taxi' if args.taxi else 'Kart'} study: {', '.join(sorted(unknown))}")
    sizes = [0] if args.taxi else args.sizes
    if args.taxi and args.eval_episodes == 10:
        args.eval_episodes = 20
    command = command_line(__spec__.name, argv)
    results = ResultsFile(args.out / "results.json", runs_key="runs")
    settings = results.load()[0].get("settings", {})
    settings["taxi" if args.taxi else "kart"] = {
        "command": command,
        "hyperparams": load_hyperparams(TAXI if args.taxi else ENV, "dqn"),
        "timesteps": args.timesteps,
        "eval_freq": args.eval_freq,
        "eval_episodes": args.eval_episodes,
        "window": args.window,
        "seeds": args.seeds,
        "sizes": sizes,
    }
    runs = study_runs(
        parser,
        args,
        command,
        functools.partial(
            run,
            timesteps=args.timesteps,
            eval_freq=args.eval_freq,
            eval_episodes=args.eval_episodes,
            window=args.window,
        ),
        lambda r: (
            f"{r['variant']} size={r['n_item_types']} seed={r['seed']}: final {r['eval'][-1]['return']:.2f}, "
            f"{r['cpu_seconds']:.0f} CPU-s"
        ),
        results,
        {"settings": settings},
        [(v, n, s) for n in sizes for s in args.seeds for v in args.variants],
        lambda r: (r["variant"], r["n_item_types"], r["seed"]),
    )
    print(report(runs, args.out))


if __name__ == "__main__":
    main()
