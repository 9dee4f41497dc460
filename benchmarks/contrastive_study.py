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
contrastive runs also record the auxiliary loss and accuracy. Writes ``results.json`` (after every run;
``--continue`` skips the runs already there), ``curves.png`` and ``observation.png`` into ``--out`` and prints two
markdown tables: per variant the interquartile mean of the final evaluation returns over seeds with its 95%
stratified bootstrap interval (:mod:`benchmarks.statistics`), mean ± std beside it, the same for the last three
evaluations, and the env steps per CPU-second, then one line per measure on the gap between ``ppo_contrastive`` and
``ppo``; and the runs seed by seed.

Run (the study of ``docs/masked_contrastive.md``; its settings are the defaults, spelled out here)::

    nice -n 5 python -m benchmarks.contrastive_study --out docs/masked_contrastive --timesteps 200000 \\
        --eval-every 10000 --eval-episodes 10 --seeds 0 1 2 3 4 \\
        --env-kwargs '{"n_watermelons": 4, "dragon_chase_prob": 0.25, "image_view": "egocentric", "image_cell_px": 2}'

``--env-kwargs '{}'`` is the registered env (the global 24 x 24 view).

``--quick`` for a one-seed 8k-step smoke run; ``--plot-only`` (or ``--replot``) redraws the plots and tables from the
saved results.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from benchmarks.common import (
    Record,
    StudyParser,
    TrainingCurves,
    band,
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
CONTRASTIVE_KWARGS: dict[str, Any] = dict(
    contrastive_coef=0.05, sequence_length=8, sequences_per_batch=16, mask_ratio=0.25, mask_mode="zeros",
    temperature=0.1, momentum=0.95,
)  # fmt: skip
AUX_KEYS = ("contrastive_loss", "contrastive_accuracy")
EVAL_SEED = 10_000
#: the setting of the study (``docs/masked_contrastive.md``), the default of ``--env-kwargs``
STUDY_ENV_KWARGS: dict[str, Any] = {
    "n_watermelons": 4, "dragon_chase_prob": 0.25, "image_view": "egocentric", "image_cell_px": 2,
}  # fmt: skip
#: "first evaluation at or above this" in the per-seed table: when a run starts to learn (untrained: about -0.5)
LEARNING_THRESHOLD = 2.0


def policy_kwargs(env_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """SmallCNN matched to the image: first kernel = pixels per cell; stride 2 next for the larger egocentric view."""
    env_kwargs = env_kwargs or {}
    cnn = {
        "features_dim": 64,
        "cell_px": env_kwargs.get("image_cell_px", 3),
        "second_stride": 2 if env_kwargs.get("image_view") == "egocentric" else 1,
    }
    return {"features_extractor_class": SmallCNN, "features_extractor_kwargs": cnn, "net_arch": [64]}


def evaluate_greedy(model: ContrastivePPO, episodes: int, env_kwargs: dict[str, Any] | None) -> dict[str, float]:
    """Deterministic mean and std return over ``episodes`` episodes of a fresh env (the same episodes every call)."""
    result = evaluate(model, make_masked_vec_env(ENV, 1, seed=EVAL_SEED, env_kwargs=env_kwargs), episodes)
    return {"return_mean": result["return_mean"], "return_std": result["return_std"]}


def run(
    variant: str, seed: int, timesteps: int, eval_every: int, eval_episodes: int, env_kwargs: dict[str, Any] | None
) -> dict[str, Any]:
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
    greedy = functools.partial(evaluate_greedy, episodes=eval_episodes, env_kwargs=env_kwargs)
    # Evaluation time is measured apart, so that steps per second can count training only.
    curves = TrainingCurves(greedy, eval_every, eval_at_end=False, update_keys=AUX_KEYS)
    seconds, cpu_seconds = learn(model, timesteps, curves)
    env.close()
    final = evaluate_greedy(model, 2 * eval_episodes, env_kwargs)
    # Per rollout: the mean training return of the last 100 episodes and the auxiliary task after its update.
    aux_after = {row["steps"]: {key: row[key] for key in AUX_KEYS if key in row} for row in curves.updates}
    train = [
        {
            "steps": row["steps"],
            **({} if row["recent_return"] is None else {"train_return": row["recent_return"]}),
            **aux_after.get(row["steps"], {}),
        }
        for row in curves.rollouts
    ]
    return {
        "variant": variant,
        "seed": seed,
        "env_kwargs": env_kwargs or {},
        "timesteps": timesteps,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "eval_seconds": curves.eval_seconds,
        "evals": curves.evals,
        "train": train,
        "final_eval_return_mean": final["return_mean"],
        "final_eval_return_std": final["return_std"],
        "final_eval_episodes": 2 * eval_episodes,
    }


def plot(results: list[Record], path: Path) -> None:
    fig = Figure(figsize=(11, 4.2), dpi=100)
    ax_eval, ax_aux = fig.subplots(1, 2)
    variant_bands(ax_eval, results, VARIANTS, lambda r: curve(r["evals"], "return_mean"))
    label_axes(
        ax_eval, "env steps", "deterministic eval return (mean ± std over seeds)", f"masked PPO on {ENV}", size=11
    )
    runs = [r for r in results if r["variant"] == "ppo_contrastive"]
    if runs:
        band(ax_aux, [curve(r["train"], "contrastive_loss") for r in runs], "InfoNCE loss", "C1")
        ax_aux.set_ylabel("InfoNCE loss")
        ax_acc = ax_aux.twinx()
        band(ax_acc, [curve(r["train"], "contrastive_accuracy") for r in runs], "accuracy", "C2")
        ax_acc.set_ylabel("contrastive accuracy")
        ax_acc.set_ylim(0, 1)
        ax_aux.legend(handles=ax_aux.get_lines() + ax_acc.get_lines(), loc="center right")
    label_axes(ax_aux, "env steps", ax_aux.get_ylabel(), "auxiliary task (ppo_contrastive)", legend=False, size=11)
    save_figure(fig, path)


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
    save_figure(fig, path)
    env.close()


def final_return(run: Record) -> float:
    """The final deterministic evaluation's mean return (``2 x --eval-episodes`` episodes)."""
    return float(run["final_eval_return_mean"])


def late_return(run: Record) -> float:
    """The mean return of the last 3 evaluations of the curve."""
    return float(np.mean([e["return_mean"] for e in run["evals"][-3:]]))


def mean_eval_return(run: Record) -> float:
    """The mean return of all the evaluations of the curve (step 0 included): an area under the curve."""
    return float(np.mean([e["return_mean"] for e in run["evals"]]))


def last_aux(run: Record, key: str) -> float:
    """``contrastive_loss`` or ``contrastive_accuracy`` after the last update (NaN for ``ppo``)."""
    return float(run["train"][-1].get(key, np.nan)) if run["train"] else np.nan


def table(results: list[Record]) -> str:
    """Per variant: the final evaluation returns over seeds (IQM with its 95% interval, mean ± std, per seed), the
    mean of the last 3 evaluations (IQM with its interval, mean ± std), the last contrastive accuracy, the env steps
    per CPU-second; then ppo_contrastive against ppo on the final return, the last 3 evaluations and the mean of all
    evaluations."""
    groups = dict(by_variant(results, VARIANTS))
    finals = iqm_intervals({variant: [final_return(r) for r in runs] for variant, runs in groups.items()})
    lates = iqm_intervals({variant: [late_return(r) for r in runs] for variant, runs in groups.items()})
    lines = [
        "| variant | seeds | final eval return: IQM [95% CI] | mean ± std | per seed | last 3 evaluations: IQM "
        "[95% CI] | mean ± std | last contrastive accuracy | env steps per CPU-second |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for variant, runs in groups.items():
        returns = [final_return(r) for r in runs]
        accuracy = [last_aux(r, "contrastive_accuracy") for r in runs]
        # Per CPU-second (evaluations included), not per wall-second: the machine is shared.
        speed = np.mean([r["timesteps"] / r["cpu_seconds"] for r in runs])
        acc = "-" if np.isnan(accuracy).all() else f"{np.nanmean(accuracy):.2f}"
        lines.append(
            f"| {variant} | {len(runs)} | {finals[variant].text()} | {mean_std(returns)} "
            f"| {', '.join(f'{x:.2f}' for x in returns)} | {lates[variant].text()} "
            f"| {mean_std([late_return(r) for r in runs])} | {acc} | {speed:.0f} |"
        )
    compare = functools.partial(gap, groups, variant="ppo_contrastive", baseline="ppo")
    differences = [
        compare(final_return, "final eval return", intervals=finals),
        compare(late_return, "mean eval return over the last 3 evaluations", intervals=lates),
        compare(mean_eval_return, "mean of all evaluations (area under the curve)"),
    ]
    return "\n".join([*lines, "", *(f"- {line}" for line in differences)])


def seed_table(results: list[Record]) -> str:
    """Per run: the final evaluation (± std over its episodes), the mean of all evaluations, the first evaluation at or
    above :data:`LEARNING_THRESHOLD`, the auxiliary loss and accuracy after the last update, the CPU-seconds."""
    lines = [
        "| variant | seed | final eval (± std over episodes) | mean of all evaluations | first eval >= "
        f"{LEARNING_THRESHOLD:g} at | InfoNCE loss | accuracy | CPU-seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, runs in by_variant(results, VARIANTS):
        for r in runs:
            first = next((e["steps"] for e in r["evals"] if e["return_mean"] >= LEARNING_THRESHOLD), None)
            loss, accuracy = last_aux(r, "contrastive_loss"), last_aux(r, "contrastive_accuracy")
            lines.append(
                f"| {variant} | {r['seed']} | {final_return(r):.2f} ± {r['final_eval_return_std']:.2f} "
                f"| {mean_eval_return(r):.2f} | {'-' if first is None else f'{first / 1000:.0f}k'} "
                f"| {'-' if np.isnan(loss) else f'{loss:.2f}'} | {'-' if np.isnan(accuracy) else f'{accuracy:.2f}'} "
                f"| {r['cpu_seconds']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = StudyParser(
        __doc__,
        VARIANTS,
        VARIANTS,
        seeds=(0, 1, 2, 3, 4),
        timesteps=200_000,
        eval_episodes=10,
        out=Path("docs/masked_contrastive"),
        quick={"seeds": [0], "timesteps": 8_192, "eval_every": 4_096, "eval_episodes": 3},
        plot_only_aliases=("--replot",),
    )
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument(
        "--env-kwargs",
        type=json.loads,
        default=STUDY_ENV_KWARGS,
        help="JSON, e.g. '{\"n_watermelons\": 4}' (default: the study's setting; '{}': the registered env)",
    )
    args = parser.parse_args(argv)
    runs = study_runs(
        parser,
        args,
        command_line(__spec__.name, argv),
        functools.partial(
            run,
            timesteps=args.timesteps,
            eval_every=args.eval_every,
            eval_episodes=args.eval_episodes,
            env_kwargs=args.env_kwargs,
        ),
        lambda r: (
            f"{r['variant']} seed {r['seed']}: final eval {r['final_eval_return_mean']:.2f}, "
            f"{r['cpu_seconds'] / 60:.1f} CPU min"
        ),
    )
    plot(runs, args.out / "curves.png")
    draw_observation(args.out / "observation.png", runs[0].get("env_kwargs"))
    print(table(runs))
    print()
    print(seed_table(runs))


if __name__ == "__main__":
    main()
