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
``--continue`` skips the runs already there), ``curves.png`` and ``observation.png`` into ``--out`` and prints a
markdown table with the env steps per CPU-second of each variant.

Run (the study of ``docs/masked_contrastive.md``)::

    nice -n 5 python -m benchmarks.contrastive_study --out docs/masked_contrastive --timesteps 200000 \\
        --eval-every 10000 --eval-episodes 10 \\
        --env-kwargs '{"n_watermelons": 4, "dragon_chase_prob": 0.25, "image_view": "egocentric", "image_cell_px": 2}'

``--quick`` for a one-seed 8k-step smoke run; ``--plot-only`` (or ``--replot``) redraws the plots and table from the
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


def table(results: list[Record]) -> str:
    lines = [
        "| variant | seeds | final eval return (mean ± std over seeds) | per seed | mean eval return over the "
        "last 3 evaluations | last contrastive accuracy | env steps per CPU-second |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for variant, runs in by_variant(results, VARIANTS):
        finals = [r["final_eval_return_mean"] for r in runs]
        late = [np.mean([e["return_mean"] for e in r["evals"][-3:]]) for r in runs]
        accuracy = [r["train"][-1].get("contrastive_accuracy", np.nan) for r in runs]
        # Per CPU-second (evaluations included), not per wall-second: the machine is shared.
        speed = np.mean([r["timesteps"] / r["cpu_seconds"] for r in runs])
        acc = "-" if np.isnan(accuracy).all() else f"{np.nanmean(accuracy):.2f}"
        lines.append(
            f"| {variant} | {len(runs)} | {mean_std(finals)} | {', '.join(f'{x:.2f}' for x in finals)} "
            f"| {mean_std(late)} | {acc} | {speed:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = StudyParser(
        __doc__,
        VARIANTS,
        VARIANTS,
        seeds=(0, 1, 2),
        timesteps=200_000,
        eval_episodes=10,
        out=Path("docs/masked_contrastive"),
        quick={"seeds": [0], "timesteps": 8_192, "eval_every": 4_096, "eval_episodes": 3},
        plot_only_aliases=("--replot",),
    )
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--env-kwargs", type=json.loads, default=None, help="JSON, e.g. '{\"n_watermelons\": 4}'")
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


if __name__ == "__main__":
    main()
