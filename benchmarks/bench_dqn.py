"""Training throughput of masked DQN vs unmasked DQN on ``maskrl/Kart-v0``, side by side.

Two variants train with the ``dqn`` hyperparameters of ``maskrl/agents/hyperparams/Kart-v0.yml`` and the same
network (MLP ``[64, 64]``); they differ only in the mask:

- ``masked``: :class:`maskrl.agents.dqn.MaskedDQN` with :class:`~maskrl.policies.q_policies.MaskedDQNPolicy`; the int8
  mask travels in the ``Dict`` observation, through SB3's ``DictReplayBuffer``, into the greedy action, the
  exploration and the TD target;
- ``unmasked``: SB3's ``DQN`` with ``MlpPolicy`` on the observation without the mask (a ``Box``, SB3's flat
  ``ReplayBuffer``): no mask work at all.

The exploration rate is held at the YAML's final value (0.05) for the timed steps, so both variants explore alike,
and the replay buffer is first filled past ``learning_starts`` (untimed). Then, per cell (``DummyVecEnv`` with 1 and
8 envs), the timed ``learn`` calls (``--steps`` env steps each) run round-robin over the two variants, the first of
each round alternating, so that machine noise hits both alike. Reported: env steps per second, the median over
``--repeats`` calls, on the wall clock and on the process's CPU time (which a loaded machine barely moves: time
spent waiting for a core is not counted), and the ratio masked / unmasked of the medians. One torch thread.

Run (about 5 minutes on a loaded 2-core machine)::

    python benchmarks/bench_dqn.py                  # writes docs/benchmarks/training_dqn_kart.json

``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger

from maskrl.agents.dqn import MaskedDQN
from maskrl.agents.envs import make_vec_env
from maskrl.agents.hyperparams import load_hyperparams, resolve_algo_kwargs
from maskrl.policies import MaskedDQNPolicy

ENV = "maskrl/Kart-v0"
VARIANTS = ("masked", "unmasked")
OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "training_dqn_kart.json"


def build(variant: str, n_envs: int) -> BaseAlgorithm:
    """One variant's model on ``n_envs`` Kart envs (``DummyVecEnv``), seeded with 0, its buffer warmed up."""
    kwargs = resolve_algo_kwargs(load_hyperparams(ENV, "dqn"))
    kwargs["exploration_initial_eps"] = kwargs["exploration_final_eps"]  # the same exploration in every timed step
    masked = variant == "masked"
    env = make_vec_env(ENV, n_envs, 0, "dummy", sees_mask=masked)
    algo, policy = (MaskedDQN, MaskedDQNPolicy) if masked else (DQN, "MlpPolicy")
    model = algo(policy, env, seed=0, device="cpu", **kwargs)
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.learn(kwargs["learning_starts"] + 250 * n_envs)  # past the warm-up: every later step trains
    return model


def time_learn(model: BaseAlgorithm, steps: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``model.learn(steps)``, continuing the run."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.learn(steps, reset_num_timesteps=False)
    return time.perf_counter() - wall, time.process_time() - cpu


def run_cell(n_envs: int, steps: int, repeats: int) -> dict[str, Any]:
    """Time both variants round-robin with ``n_envs`` envs; return the per-call speeds and their medians."""
    models = {variant: build(variant, n_envs) for variant in VARIANTS}
    calls: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    for repeat in range(repeats):
        order = VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            wall, cpu = time_learn(models[variant], steps)
            calls[variant].append({"wall_fps": steps / wall, "cpu_fps": steps / cpu})
    for model in models.values():
        model.env.close()
    medians = {
        variant: {key: statistics.median(call[key] for call in calls[variant]) for key in ("wall_fps", "cpu_fps")}
        for variant in VARIANTS
    }
    ratios = {key: medians["masked"][key] / medians["unmasked"][key] for key in ("wall_fps", "cpu_fps")}
    return {
        "vec_env": "dummy",
        "n_envs": n_envs,
        "steps_per_call": steps,
        "calls": calls,
        "median": medians,
        "ratio": ratios,
    }


def table(cells: list[dict[str, Any]]) -> str:
    """The markdown table of the cells."""
    lines = [
        "| vec env | envs | masked DQN steps/s (wall / CPU) | unmasked DQN steps/s (wall / CPU) | masked / unmasked "
        "(wall / CPU) |",
        "|---|---|---|---|---|",
    ]
    for cell in cells:
        m, u, r = cell["median"]["masked"], cell["median"]["unmasked"], cell["ratio"]
        lines.append(
            f"| {cell['vec_env']} | {cell['n_envs']} | {m['wall_fps']:.0f} / {m['cpu_fps']:.0f} | "
            f"{u['wall_fps']:.0f} / {u['cpu_fps']:.0f} | {r['wall_fps']:.2f}x / {r['cpu_fps']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-envs", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--steps", type=int, default=2000, help="env steps per timed call with 1 env (x n_envs)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per variant and cell")
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": settings, "cells": cells}, indent=1) + "\n")
    print(f"\n{table(cells)}\n\nwritten to {args.out}")


if __name__ == "__main__":
    main()
