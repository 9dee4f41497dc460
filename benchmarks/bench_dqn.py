"""Training throughput of masked DQN vs unmasked DQN on ``maskrl/Kart-v0``, side by side.

Two variants train with the ``dqn`` hyperparameters of ``maskrl/agents/hyperparams/Kart-v0.yml`` and the same
network (MLP ``[64, 64]``); they differ only in the mask:

- ``masked``: :class:`maskrl.agents.dqn.MaskedDQN` with :class:`~maskrl.policies.q_policies.MaskedDQNPolicy`; the int8
  mask travels in the ``Dict`` observation, through maskrl's ``MaskedReplayBuffer`` (SB3's ``DictReplayBuffer`` with
  the features and the mask in one array each), into the greedy action, the exploration and the TD target;
- ``unmasked``: SB3's ``DQN`` with ``MlpPolicy`` on the observation without the mask (a ``Box``, SB3's flat
  ``ReplayBuffer``): no mask work at all. The target (masked >= 0.95x this) is measured against it.
- ``unmasked_dict``: SB3's ``DQN`` with ``MultiInputPolicy`` on ``Dict(observation=...)``, the same observation with
  only the mask key removed (``DictReplayBuffer``, ``CombinedExtractor`` flattening the one key: the same MLP). It
  separates what SB3's ``Dict`` path costs (obs copies, per-key buffers and tensors) from what the mask costs.

The exploration rate is held at the YAML's final value (0.05) for the timed steps, so both variants explore alike,
and the replay buffer is first filled past ``learning_starts`` (untimed). Then, per cell (``DummyVecEnv`` with 1 and
8 envs), the timed ``learn`` calls (``--steps`` env steps each) run round-robin over the two variants, the first of
each round alternating, so that machine noise hits both alike. Reported: env steps per second, the median over
``--repeats`` calls, on the wall clock and on the process's CPU time (which a loaded machine barely moves: time
spent waiting for a core is not counted), the ratio masked / unmasked of the medians, and the median of the rounds'
ratios on CPU time (each round's calls paired: the steadier figure when the machine's speed drifts during the run).
One torch thread.

Run::

    python -m benchmarks.bench_dqn                  # writes docs/benchmarks/training_dqn_kart.json

``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger

from benchmarks.common import make_vec_env_for, time_learn_calls, write_json
from maskrl.agents.dqn import MaskedDQN
from maskrl.agents.hyperparams import load_hyperparams, resolve_algo_kwargs
from maskrl.policies import MaskedDQNPolicy

ENV = "maskrl/Kart-v0"
VARIANTS = ("masked", "unmasked", "unmasked_dict")
OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "training_dqn_kart.json"


def build(variant: str, n_envs: int) -> BaseAlgorithm:
    """One variant's model on ``n_envs`` Kart envs (``DummyVecEnv``), seeded with 0, its buffer warmed up."""
    kwargs = resolve_algo_kwargs(load_hyperparams(ENV, "dqn"))
    kwargs["exploration_initial_eps"] = kwargs["exploration_final_eps"]  # the same exploration in every timed step
    env = make_vec_env_for(
        ENV, n_envs, 0, sees_mask=variant == "masked", drop_only_action_mask=variant == "unmasked_dict"
    )
    algo, policy = {
        "masked": (MaskedDQN, MaskedDQNPolicy),
        "unmasked": (DQN, "MlpPolicy"),
        "unmasked_dict": (DQN, "MultiInputPolicy"),
    }[variant]
    model = algo(policy, env, seed=0, device="cpu", **kwargs)
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.learn(kwargs["learning_starts"] + 250 * n_envs)  # past the warm-up: every later step trains
    return model


def run_cell(n_envs: int, steps: int, repeats: int) -> dict[str, Any]:
    """Time the variants round-robin with ``n_envs`` envs; return the per-call speeds and their medians."""
    models = {variant: build(variant, n_envs) for variant in VARIANTS}
    timing = time_learn_calls(models, steps, repeats)
    for model in models.values():
        model.env.close()
    calls = {
        variant: [
            {"wall_fps": wall, "cpu_fps": cpu}
            for wall, cpu in zip(timing["steps_per_s"][variant], timing["cpu_steps_per_s"][variant], strict=True)
        ]
        for variant in VARIANTS
    }
    wall, cpu = timing["median_steps_per_s"], timing["median_cpu_steps_per_s"]
    medians = {variant: {"wall_fps": wall[variant], "cpu_fps": cpu[variant]} for variant in VARIANTS}
    ratios = {
        f"{key}_vs_{other}": medians["masked"][key] / medians[other][key]
        for key in ("wall_fps", "cpu_fps")
        for other in ("unmasked", "unmasked_dict")
    }
    # The same calls paired by round (each round's calls run back to back): a drift of the machine's speed over the
    # run moves both calls of a pair alike, so the median of the pairs' ratios is steadier than the ratio of medians.
    paired = {
        f"cpu_fps_vs_{other}": statistics.median(
            mine["cpu_fps"] / theirs["cpu_fps"] for mine, theirs in zip(calls["masked"], calls[other], strict=True)
        )
        for other in ("unmasked", "unmasked_dict")
    }
    return {
        "vec_env": "dummy",
        "n_envs": n_envs,
        "steps_per_call": steps,
        "calls": calls,
        "median": medians,
        "ratio": ratios,
        "paired_ratio": paired,
    }


def table(cells: list[dict[str, Any]]) -> str:
    """The markdown table of the cells: steps/s (wall / CPU) and the ratios of masked DQN to the two others."""
    lines = [
        "| vec env | envs | masked DQN | unmasked DQN (Box) | unmasked DQN (Dict) | masked / unmasked (Box) "
        "| masked / unmasked (Dict) | paired CPU ratios (Box, Dict) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        m, u, d = (f"{cell['median'][v]['wall_fps']:.0f} / {cell['median'][v]['cpu_fps']:.0f}" for v in VARIANTS)
        r, p = cell["ratio"], cell["paired_ratio"]
        lines.append(
            f"| {cell['vec_env']} | {cell['n_envs']} | {m} | {u} | {d} "
            f"| {r['wall_fps_vs_unmasked']:.2f}x / **{r['cpu_fps_vs_unmasked']:.2f}x** "
            f"| {r['wall_fps_vs_unmasked_dict']:.2f}x / {r['cpu_fps_vs_unmasked_dict']:.2f}x "
            f"| {p['cpu_fps_vs_unmasked']:.2f}x, {p['cpu_fps_vs_unmasked_dict']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-envs", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--steps", type=int, default=1000, help="env steps per timed call with 1 env (x n_envs / 2)")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per variant and cell")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 steps per call, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 200, 2
    torch.set_num_threads(1)
    cells = []
    for n_envs in args.n_envs:
        # More envs per call with more envs: each gradient step then serves n_envs transitions.
        cells.append(run_cell(n_envs, args.steps * n_envs // 2 if n_envs > 1 else args.steps, args.repeats))
        print(table(cells[-1:]), flush=True)
    settings = {
        "env": ENV,
        "hyperparams": {k: v for k, v in load_hyperparams(ENV, "dqn").items() if k != "n_timesteps"},
        "exploration_rate": "held at exploration_final_eps",
        "torch_threads": 1,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "repeats": args.repeats,
    }
    print(f"\n{table(cells)}\n")
    write_json(args.out, {"settings": settings, "cells": cells})


if __name__ == "__main__":
    main()
