"""Does memory help when the panda blinks? Masked recurrent PPO on PandaGrid's memory setting, against two baselines.

The memory setting is ``maskrl/PandaGrid-v0`` with ``blink_prob`` (0.5 by default): after each step, with that
probability, the panda sees nothing but itself (see the module docstring of ``maskrl/envs/panda_grid.py``).
Three variants, with the same features extractor (``EntityAttentionExtractor``, 32-dim, 2 heads, 2 blocks, with the
visibility mask), head (``[64]``) and PPO hyperparameters (the ``ppo`` / ``ppo_lstm`` sections of
``maskrl/agents/hyperparams/PandaGrid-v0.yml``: 8 envs, ``n_steps=64``, ``batch_size=256``, 4 epochs, lr 3e-4):

- ``lstm_masked``: sb3-contrib ``RecurrentPPO`` + :class:`~maskrl.policies.MaskedRecurrentActorCriticPolicy`
  (LSTM of 64 units for the actor and for the critic), action mask applied (``--algo ppo_lstm``);
- ``ff_masked``: SB3 ``PPO`` + :class:`~maskrl.policies.MaskedActorCriticPolicy`, no memory (``--algo ppo``);
- ``lstm_nomask``: ``RecurrentPPO`` + sb3-contrib's own ``MultiInputLstmPolicy`` with the same extractor and LSTM,
  on the observation without the action mask (it keeps the visibility key, so only the action mask differs); in
  training an invalid move is a no-op costing ``invalid_action_penalty=-0.1`` (as ``ppo_nomask``'s YAML).

``--variants ff_masked_open`` adds a reference run: masked feed-forward PPO trained and evaluated without blinks
(``blink_prob=0``), what the memoryless agent reaches when it sees everything.

Every variant is evaluated on the memory setting without any penalty, so returns compare: +1 per watermelon, -1 when
caught. For each run the script records the training curve (mean "world return" of the last 100 training episodes,
i.e. without invalid-action penalties, after each rollout) and the training invalid-action rate, then evaluates the
final model over ``--eval-episodes`` episodes deterministically and stochastically (seeds 10000+), counting invalid
actions. Runs go one at a time (one torch thread), seed by seed; each finished run is appended to
``results.json`` at once, and ``--continue`` skips the runs already there, so an interrupted study loses one run at
most. Writes ``results.json`` and ``curves.png`` to ``--out`` and prints markdown tables (``--tables-only``: from
``results.json``, training nothing).

Run: ``python -m benchmarks.recurrent_study --out docs/recurrent_study`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from benchmarks.common import (
    Record,
    StudyParser,
    TrainingCurves,
    by_variant,
    command_line,
    evaluate,
    label_axes,
    learn,
    make_vec_env_for,
    mean_std,
    save_figure,
    study_runs,
    uptime,
    variant_bands,
)
from benchmarks.statistics import iqm_difference, iqm_intervals
from maskrl.agents.hyperparams import load_hyperparams, resolve_algo_kwargs
from maskrl.policies import MaskedActorCriticPolicy, MaskedRecurrentActorCriticPolicy

ENV = "maskrl/PandaGrid-v0"
VARIANTS = ("lstm_masked", "ff_masked", "lstm_nomask")
#: Not run by default: masked feed-forward PPO without blinks (trained and evaluated with blink_prob=0), what the
#: memoryless agent reaches when it sees everything.
REFERENCES = ("ff_masked_open",)
ALL_VARIANTS = VARIANTS + REFERENCES
LABELS = {
    "lstm_masked": "masked recurrent PPO",
    "ff_masked": "masked feed-forward PPO",
    "lstm_nomask": "recurrent PPO, no action mask",
    "ff_masked_open": "masked feed-forward PPO, no blinks (reference)",
}
NOMASK_PENALTY = -0.1


def make_venv(variant: str, n_envs: int, seed: int, env_kwargs: dict[str, Any], training: bool) -> VecEnv:
    """The variant's vec env: the memory setting, without the action mask (and penalised in training) for nomask."""
    sees_mask = variant != "lstm_nomask"
    kwargs = dict(env_kwargs) if sees_mask or not training else {**env_kwargs, "invalid_action_penalty": NOMASK_PENALTY}
    return make_vec_env_for(ENV, n_envs, seed, env_kwargs=kwargs, sees_mask=sees_mask, drop_only_action_mask=True)


def build(variant: str, env: VecEnv, seed: int) -> BaseAlgorithm:
    """The variant's model, with the hyperparameters of PandaGrid-v0.yml (``ppo`` or ``ppo_lstm``)."""
    variant = variant.removesuffix("_open")
    section = "ppo" if variant == "ff_masked" else "ppo_lstm"
    kwargs = resolve_algo_kwargs(load_hyperparams(ENV, section))
    kwargs.pop("env_kwargs", None)
    if variant == "ff_masked":
        return PPO(MaskedActorCriticPolicy, env, seed=seed, device="cpu", **kwargs)
    policy = MaskedRecurrentActorCriticPolicy if variant == "lstm_masked" else "MultiInputLstmPolicy"
    return RecurrentPPO(policy, env, seed=seed, device="cpu", **kwargs)


def world_return(info: dict[str, Any]) -> float:
    """An episode's return without penalties: +1 per watermelon, -1 when caught."""
    return info["episode_stats"]["watermelons_eaten"] - info["episode_stats"]["caught"]


def evaluate_both(model: BaseAlgorithm, variant: str, env_kwargs: dict[str, Any], episodes: int, seed: int) -> dict:
    """Deterministic and stochastic evaluation on the memory setting without penalties (LSTM states carried)."""
    out: dict[str, Any] = {}
    for mode in ("deterministic", "stochastic"):
        env = make_venv(variant, 1, seed, env_kwargs, training=False)
        result = evaluate(model, env, episodes, deterministic=mode == "deterministic")
        out[mode] = {
            **{key: result[key] for key in ("return_mean", "return_std", "length_mean", "invalid_action_rate")},
            **{key: result["env_stats"][key] for key in ("watermelons_eaten", "caught", "hidden_fraction")},
        }
    return out


def run(variant: str, seed: int, timesteps: int, env_kwargs: dict[str, Any], eval_episodes: int) -> dict[str, Any]:
    load = uptime()
    if variant.endswith("_open"):
        env_kwargs = {**env_kwargs, "blink_prob": 0.0}
    hyperparams = load_hyperparams(ENV, "ppo" if variant.startswith("ff_masked") else "ppo_lstm")
    env = make_venv(variant, int(hyperparams["n_envs"]), seed, env_kwargs, training=True)
    model = build(variant, env, seed)
    # The training curve: the world return (no penalties) of the last 100 episodes after each rollout.
    log = TrainingCurves(task_return=world_return, print_every=max(timesteps // 10, 1))
    seconds, _ = learn(model, timesteps, log)
    env.close()
    rows = [row for row in log.rollouts if row["recent_return"] is not None]
    invalid_rates = [row["invalid_rate"] for row in rows]
    return {
        "variant": variant,
        "seed": seed,
        "timesteps": timesteps,
        "env_kwargs": env_kwargs,
        "seconds": seconds,
        "curve_steps": [int(row["steps"]) for row in rows],
        "curve_returns": [row["recent_return"] for row in rows],
        "curve_invalid_rates": invalid_rates,
        "train_invalid_action_rate_last10": float(np.mean(invalid_rates[-10:])),
        "eval": evaluate_both(model, variant, env_kwargs, eval_episodes, 10_000 + seed),
        "uptime_before": load,
    }


def plot(results: list[Record], path: Path, title: str) -> None:
    fig = Figure(figsize=(6.4, 3.8), dpi=90)
    ax = fig.add_subplot()
    variant_bands(
        ax,
        results,
        ALL_VARIANTS,
        lambda r: (r["curve_steps"], r["curve_returns"]),
        lambda variant, seeds: f"{LABELS[variant]} ({seeds} seeds)",
        styles=dict.fromkeys(REFERENCES, ":"),
    )
    label_axes(ax, "env steps", "training return, no penalties (last 100 ep.)", title, size=9)
    save_figure(fig, path)


#: The IQM differences reported (deterministic evaluation): variant minus baseline.
COMPARISONS = (("lstm_masked", "ff_masked"), ("lstm_nomask", "ff_masked"), ("lstm_masked", "lstm_nomask"))


def _final_return(run: Record, mode: str) -> float:
    return run["eval"][mode]["return_mean"]


def tables(results: list[Record]) -> str:
    """Per variant, the final evaluation return over seeds (IQM with its 95% stratified bootstrap interval, and mean ±
    std), the eval statistics and minutes per run; then the IQM differences of :data:`COMPARISONS`; then every run."""
    groups = dict(by_variant(results, ALL_VARIANTS))
    det_scores = {variant: [_final_return(r, "deterministic") for r in runs] for variant, runs in groups.items()}
    sto_scores = {variant: [_final_return(r, "stochastic") for r in runs] for variant, runs in groups.items()}
    det_intervals, sto_intervals = iqm_intervals(det_scores), iqm_intervals(sto_scores)
    lines = [
        "| variant | seeds | eval return, det.: IQM [95% CI] | mean ± std | eval return, stoch.: IQM [95% CI] | "
        "last training return | watermelons | caught | invalid actions (eval det. / stoch.) | invalid actions "
        "(training, last 10 rollouts) | minutes per run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, runs in groups.items():
        det = [r["eval"]["deterministic"] for r in runs]
        sto = [r["eval"]["stochastic"] for r in runs]
        lines.append(
            f"| {LABELS[variant]} | {len(runs)} | {det_intervals[variant].text()} | {mean_std(det_scores[variant])} "
            f"| {sto_intervals[variant].text()} | {mean_std([r['curve_returns'][-1] for r in runs])} "
            f"| {np.mean([e['watermelons_eaten'] for e in det]):.2f} | {np.mean([e['caught'] for e in det]):.2f} "
            f"| {100 * np.mean([e['invalid_action_rate'] for e in det]):.1f}% / "
            f"{100 * np.mean([e['invalid_action_rate'] for e in sto]):.1f}% "
            f"| {100 * np.mean([r['train_invalid_action_rate_last10'] for r in runs]):.1f}% "
            f"| {np.mean([r['seconds'] for r in runs]) / 60:.1f} |"
        )
    lines += ["", "| comparison (deterministic evaluation) | IQM difference [95% CI] | separates? |", "|---|---:|---|"]
    for variant, baseline in COMPARISONS:
        if variant in groups and baseline in groups:
            difference = iqm_difference(det_scores[variant], det_scores[baseline])
            lines.append(
                f"| {LABELS[variant]} minus {LABELS[baseline]} | {difference.text('+.2f')} "
                f"| {'yes' if difference.excludes_zero() else 'no'} |"
            )
    lines += [
        "",
        "| variant | seed | eval return det. (± over episodes) | eval return stoch. | last training return "
        "| watermelons (det.) | caught (det.) | invalid (det.) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, runs in by_variant(results, ALL_VARIANTS):
        for r in runs:
            det, sto = r["eval"]["deterministic"], r["eval"]["stochastic"]
            lines.append(
                f"| {LABELS[variant]} | {r['seed']} | {det['return_mean']:.2f} ± {det['return_std']:.2f} "
                f"| {sto['return_mean']:.2f} | {r['curve_returns'][-1]:.2f} | {det['watermelons_eaten']:.2f} "
                f"| {det['caught']:.2f} | {100 * det['invalid_action_rate']:.1f}% |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = StudyParser(
        __doc__,
        ALL_VARIANTS,
        VARIANTS,
        seeds=(0, 1, 2, 3, 4),
        timesteps=200_000,
        eval_episodes=50,
        out=Path("docs/recurrent_study"),
        quick={"seeds": [0], "timesteps": 4_096, "eval_episodes": 3},
        plot_only_aliases=("--tables-only",),
    )
    parser.add_argument("--blink-prob", type=float, default=0.5)
    args = parser.parse_args(argv)
    runs = study_runs(
        parser,
        args,
        command_line(__spec__.name, argv),
        functools.partial(
            run, timesteps=args.timesteps, env_kwargs={"blink_prob": args.blink_prob}, eval_episodes=args.eval_episodes
        ),
        lambda r: (
            f"{r['variant']} seed {r['seed']}: eval {r['eval']['deterministic']['return_mean']:+.2f} (det.) "
            f"{r['eval']['stochastic']['return_mean']:+.2f} (stoch.), last training {r['curve_returns'][-1]:+.2f}, "
            f"{r['seconds'] / 60:.1f} min"
        ),
    )
    blinking = [r for r in runs if r["variant"] in VARIANTS]
    blink = blinking[0]["env_kwargs"]["blink_prob"] if blinking else args.blink_prob
    plot(runs, args.out / "curves.png", f"{ENV}, blink_prob={blink}")
    print(tables(runs))


if __name__ == "__main__":
    main()
