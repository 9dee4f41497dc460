"""Grid-wise control on the panda herd: does counting only the agents' cells matter?

Three ways to train PPO (unchanged SB3) on the panda herd, same PPO hyperparameters:

- ``gridnet``: ``GridNetPolicy`` on the centralised view ``maskrl/PandaHerd-v0``; ``CategoricalMap`` sums the
  log-probs and averages the entropy over the cells that hold a panda only;
- ``gridnet_nomask``: the same network with ``use_agent_mask=False``: every cell counts, as in GridNet
  implementations that sum over empty cells;
- ``shared``: decentralised, one ``MaskedActorCriticPolicy`` shared by all pandas, each acting on its own
  egocentric view through ``PettingZooVecEnv``, maskrl's adapter for any masked PettingZoo parallel env (one
  VecEnv slot per panda).

Every variant is evaluated on the same thing: the team return (all pandas' rewards) of whole herd episodes,
deterministic actions, the same evaluation seeds. The training curves record PPO's ``approx_kl`` and
``clip_fraction`` after every update. Writes ``results.json`` (after every run; ``--continue`` skips the runs
already there) and ``curves.png``; prints markdown tables: per variant the interquartile mean of the final evaluation
team returns over seeds with its 95% stratified bootstrap interval (:mod:`benchmarks.statistics`) and their mean ±
std, one line per comparison of :data:`COMPARISONS`, then every run.

Run: ``python -m benchmarks.herd_study --out docs/herd_study --timesteps 80000 --seeds 0 1 2 3 4`` (the defaults;
``--quick`` for a smoke run).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from matplotlib.figure import Figure
from stable_baselines3 import PPO

from benchmarks.common import (
    Record,
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
from benchmarks.statistics import gap, iqm_intervals
from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.envs import panda_herd_v0
from maskrl.envs.pettingzoo_vec_env import PettingZooVecEnv
from maskrl.policies import GridNetPolicy, MaskedActorCriticPolicy

ENV = "maskrl/PandaHerd-v0"
VARIANTS = ("gridnet", "gridnet_nomask", "shared")
PPO_KWARGS: dict[str, Any] = dict(
    n_steps=128, batch_size=256, n_epochs=4, gamma=0.99, learning_rate=3e-4, ent_coef=0.01, clip_range=0.2
)
N_HERDS = 8  # parallel herd episodes per rollout, for every variant
EVAL_SEED = 10_000


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
    # The budget is counted in herd steps for everyone; the shared policy makes one VecEnv step per panda.
    steps_per_herd_step = 1
    if variant == "shared":
        # Reports SB3-style info["episode"] per panda slot itself (no Monitor).
        env = PettingZooVecEnv(panda_herd_v0.parallel_env, N_HERDS)
        env.seed(seed)
        steps_per_herd_step = env.num_envs // N_HERDS
        model = PPO(MaskedActorCriticPolicy, env, seed=seed, device="cpu", **PPO_KWARGS)
    else:
        env = make_masked_vec_env(ENV, N_HERDS, seed)
        policy_kwargs = dict(channels=(32, 64), use_agent_mask=variant == "gridnet")
        model = PPO(GridNetPolicy, env, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **PPO_KWARGS)
    curves = TrainingCurves(update_keys=("approx_kl", "clip_fraction"))
    seconds, _ = learn(model, timesteps * steps_per_herd_step, curves)
    env.close()
    if variant == "shared":
        final = team_return_shared(model, eval_episodes, seed=EVAL_SEED)
    else:
        final = evaluate(model, make_masked_vec_env(ENV, 1, EVAL_SEED), eval_episodes)["return_mean"]
    # After each update: the mean training return of the last 100 episodes then, approx_kl and clip_fraction.
    recent = {row["steps"]: row["recent_return"] for row in curves.rollouts}
    rows = [
        {
            "steps": update["steps"] / steps_per_herd_step,
            "return": recent[update["steps"]],
            "approx_kl": update["approx_kl"],
            "clip_fraction": update["clip_fraction"],
        }
        for update in curves.updates
        if recent.get(update["steps"]) is not None
    ]
    return {
        "variant": variant,
        "seed": seed,
        "herd_steps": timesteps,
        "seconds": seconds,
        "curves": rows,
        "eval_team_return": final,
    }


def plot(results: list[Record], path: Path) -> None:
    fig = Figure(figsize=(12, 3.6), dpi=100)
    panels = [("return", "training episode return*"), ("approx_kl", "approx_kl"), ("clip_fraction", "clip fraction")]
    for index, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, 3, index + 1)
        variant_bands(ax, results, VARIANTS, lambda r, key=key: curve(r["curves"], key), lambda variant, _: variant)
        label_axes(ax, "herd steps", title=label, legend=index == 0, size=11)
    save_figure(fig, path)


def eval_return(run: Record) -> float:
    """The run's final evaluation team return."""
    return float(run["eval_team_return"])


def mean_over_updates(run: Record, key: str) -> float:
    """The mean of ``key`` (``approx_kl``, ``clip_fraction``) over the run's updates; NaN if it has none."""
    return float(np.mean([c[key] for c in run["curves"]])) if run["curves"] else float("nan")


class Comparison(NamedTuple):
    """One line of the report: ``variant`` against ``baseline`` on ``score`` (:func:`benchmarks.statistics.gap`)."""

    name: str
    score: Callable[[Record], float]
    variant: str
    baseline: str


#: The comparisons the page's reading makes. approx_kl and the clip fraction are scaled (x 1000, percent) for the
#: two decimals of the line.
COMPARISONS = (
    Comparison("final eval team return", eval_return, "gridnet", "gridnet_nomask"),
    Comparison("final eval team return", eval_return, "shared", "gridnet"),
    Comparison(
        "mean approx_kl x 1000", lambda r: 1000 * mean_over_updates(r, "approx_kl"), "gridnet_nomask", "gridnet"
    ),
    Comparison(
        "mean clip fraction (%)", lambda r: 100 * mean_over_updates(r, "clip_fraction"), "gridnet_nomask", "gridnet"
    ),
)


def table(results: list[Record]) -> str:
    """Per variant: the final evaluation team returns over seeds (IQM with its 95% interval, mean ± std), approx_kl
    and the clip fraction (the mean over the runs of their mean over updates), wall-clock minutes per run; then one
    line per comparison of :data:`COMPARISONS`."""
    groups = dict(by_variant(results, VARIANTS))
    intervals = iqm_intervals({variant: [eval_return(r) for r in runs] for variant, runs in groups.items()})
    lines = [
        "| variant | seeds | eval team return: IQM [95% CI] | mean ± std | approx_kl (mean over updates) "
        "| clip fraction (mean over updates) | minutes per run |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, runs in groups.items():
        kl = np.nanmean([mean_over_updates(r, "approx_kl") for r in runs])
        clip = np.nanmean([mean_over_updates(r, "clip_fraction") for r in runs])
        minutes = np.mean([r["seconds"] for r in runs]) / 60
        lines.append(
            f"| {variant} | {len(runs)} | {intervals[variant].text()} | {mean_std([eval_return(r) for r in runs])} "
            f"| {kl:.4f} | {clip:.3f} | {minutes:.1f} |"
        )
    differences = [
        gap(groups, c.score, c.name, c.variant, c.baseline, intervals if c.score is eval_return else None)
        for c in COMPARISONS
    ]
    return "\n".join([*lines, "", *(f"- {line}" for line in differences)])


def seeds_table(results: list[Record]) -> str:
    """One row per run: its final evaluation team return, mean approx_kl and clip fraction, last training return."""
    lines = [
        "| variant | seed | eval team return | mean approx_kl | mean clip fraction | last training return* |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant, runs in by_variant(results, VARIANTS):
        for r in runs:
            last = r["curves"][-1]["return"] if r["curves"] else float("nan")
            lines.append(
                f"| {variant} | {r['seed']} | {eval_return(r):.2f} | {mean_over_updates(r, 'approx_kl'):.4f} "
                f"| {mean_over_updates(r, 'clip_fraction'):.3f} | {last:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = StudyParser(
        __doc__,
        VARIANTS,
        VARIANTS,
        seeds=(0, 1, 2, 3, 4),
        timesteps=80_000,
        eval_episodes=20,
        out=Path("docs/herd_study"),
        quick={"seeds": [0], "timesteps": 4_096, "eval_episodes": 2},
        timesteps_help="herd steps per run",
    )
    args = parser.parse_args(argv)
    runs = study_runs(
        parser,
        args,
        command_line(__spec__.name, argv),
        functools.partial(run, timesteps=args.timesteps, eval_episodes=args.eval_episodes),
        lambda r: (
            f"{r['variant']} seed {r['seed']}: eval team return {r['eval_team_return']:.2f}, "
            f"{r['seconds'] / 60:.1f} min"
        ),
    )
    plot(runs, args.out / "curves.png")
    print(table(runs))
    print()
    print(seeds_table(runs))


if __name__ == "__main__":
    main()
