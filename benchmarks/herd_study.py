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
already there) and ``curves.png``; prints a markdown table.

Run: ``python -m benchmarks.herd_study --out docs/herd_study`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

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


def table(results: list[Record]) -> str:
    lines = [
        "| variant | seeds | eval team return (mean ± std over seeds) | approx_kl (mean over updates) "
        "| clip fraction (mean over updates) | minutes per run |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant, runs in by_variant(results, VARIANTS):
        kl = np.mean([np.mean([c["approx_kl"] for c in r["curves"]]) for r in runs if r["curves"]])
        clip = np.mean([np.mean([c["clip_fraction"] for c in r["curves"]]) for r in runs if r["curves"]])
        minutes = np.mean([r["seconds"] for r in runs]) / 60
        lines.append(
            f"| {variant} | {len(runs)} | {mean_std([r['eval_team_return'] for r in runs])} | {kl:.4f} | {clip:.3f} "
            f"| {minutes:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = StudyParser(
        __doc__,
        VARIANTS,
        VARIANTS,
        seeds=(0, 1, 2),
        timesteps=100_000,
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


if __name__ == "__main__":
    main()
