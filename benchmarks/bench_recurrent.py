"""Training throughput of masked recurrent PPO against unmasked RecurrentPPO with the same network.

Both variants are unchanged sb3-contrib ``RecurrentPPO`` with the same hyperparameters and network (features
extractor, LSTMs of 64 units for the actor and the critic, MLP head); they differ only in the action mask:

- ``maskrl``: :class:`~maskrl.policies.MaskedRecurrentActorCriticPolicy`; the int8 mask travels in the ``Dict``
  observation, is stored in the recurrent rollout buffer, padded with the sequences and applied in the rollout and
  in the update;
- ``unmasked``: sb3-contrib's own ``RecurrentActorCriticPolicy`` (``MlpLstmPolicy`` / ``MultiInputLstmPolicy``) on
  the observation without the action mask: no mask work at all.

Envs (``--env``):

- ``grid``: ``maskrl/PandaGrid-v0`` with ``blink_prob=0.5`` (the memory setting of docs/recurrent_study.md):
  ``EntityAttentionExtractor`` (32-dim, 2 heads, 2 blocks) + LSTM(64) + ``[64]``; both variants keep the
  ``"visibility"`` key (the extractor's attention mask), only the action mask differs;
- ``kart``: ``maskrl/Kart-v0``, LSTM(64) on the flat observation + ``[64]`` (a cheap network, so the masking's
  own cost shows more).

RecurrentPPO: ``n_steps=128``, ``batch_size=128``, 4 epochs, one torch thread. Each model first runs one iteration
(warm-up); then the timed ``learn`` calls run round-robin over the variants (which goes first rotates), so machine
noise hits both alike. Reported: median env steps per second over ``--repeats`` (wall clock) and the ratio of the
medians; for DummyVecEnv also the ratio from the process's CPU time, which machine load barely moves. The breakdown
(µs per env step: env step, policy forward in the rollout, the rest of the rollout, update) comes from the timing
hooks of ``bench_training.py``, which this script reuses.

Run (as in docs/benchmarks.md)::

    python benchmarks/bench_recurrent.py --env grid
    python benchmarks/bench_recurrent.py --env kart

``--quick`` for a smoke run. Writes ``docs/benchmarks/training_recurrent_<env>.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from bench_training import PARTS, EnvBench, build
from sb3_contrib import RecurrentPPO

from maskrl.policies import EntityAttentionExtractor, MaskedRecurrentActorCriticPolicy

OUT_DIR = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
VARIANTS = ("maskrl", "unmasked")
_LSTM = dict(lstm_hidden_size=64, net_arch=[64])
_ATTENTION = dict(
    features_extractor_class=EntityAttentionExtractor,
    features_extractor_kwargs=dict(embed_dim=32, n_heads=2, n_blocks=2),
    **_LSTM,
)
ENV_BENCHES: dict[str, EnvBench] = {
    "grid": EnvBench(
        "maskrl/PandaGrid-v0",
        128,
        {
            "maskrl": (RecurrentPPO, MaskedRecurrentActorCriticPolicy, _ATTENTION),
            "unmasked": (RecurrentPPO, "MultiInputLstmPolicy", _ATTENTION),
        },
        drop_only_action_mask=True,
        notes="blink_prob=0.5; EntityAttentionExtractor(32, 2 heads, 2 blocks) + LSTM(64) + [64] for both; "
        "both see the visibility mask",
        env_kwargs={"blink_prob": 0.5},
    ),
    "kart": EnvBench(
        "maskrl/Kart-v0",
        128,
        {
            "maskrl": (RecurrentPPO, MaskedRecurrentActorCriticPolicy, _LSTM),
            "unmasked": (RecurrentPPO, "MlpLstmPolicy", _LSTM),
        },
        notes="LSTM(64) + [64] for both",
    ),
}


def run_cell(bench: EnvBench, vec_env: str, n_envs: int, iterations: int, repeats: int, n_epochs: int) -> dict:
    """Time the two variants round-robin on one (vec env, n_envs) cell."""
    models = {variant: build(bench, variant, vec_env, n_envs, n_epochs) for variant in VARIANTS}
    steps = iterations * bench.n_steps * n_envs
    for model, _ in models.values():
        model.learn(bench.n_steps * n_envs)  # warm-up: first rollout, first update
    rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    cpu_rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    parts: dict[str, dict[str, list[float]]] = {variant: {part: [] for part in PARTS} for variant in VARIANTS}
    for repeat in range(repeats):
        for variant in VARIANTS[repeat % 2 :] + VARIANTS[: repeat % 2]:
            model, timers = models[variant]
            timers.reset()
            start, cpu_start = time.perf_counter(), time.process_time()
            model.learn(steps, reset_num_timesteps=False)
            rates[variant].append(steps / (time.perf_counter() - start))
            cpu_rates[variant].append(steps / (time.process_time() - cpu_start))
            per_step = 1e6 / steps
            parts[variant]["env"].append(timers.env * per_step)
            parts[variant]["forward"].append(timers.forward * per_step)
            parts[variant]["rollout_other"].append((timers.rollout - timers.env - timers.forward) * per_step)
            parts[variant]["update"].append(timers.update * per_step)
    for model, _ in models.values():
        model.get_env().close()
    med = {variant: statistics.median(values) for variant, values in rates.items()}
    cpu = {variant: statistics.median(values) for variant, values in cpu_rates.items()}
    return {
        "vec_env": vec_env,
        "n_envs": n_envs,
        "steps_per_timed_call": steps,
        "steps_per_s": rates,
        "median_steps_per_s": med,
        "ratio_maskrl_unmasked": med["maskrl"] / med["unmasked"],
        "cpu_steps_per_s": cpu_rates,
        "median_cpu_steps_per_s": cpu,
        # With SubprocVecEnv the process's CPU time misses the workers: only the wall-clock ratio counts there.
        "cpu_ratio_maskrl_unmasked": cpu["maskrl"] / cpu["unmasked"] if vec_env == "dummy" else None,
        "us_per_step": {v: {p: statistics.median(x) for p, x in parts[v].items()} for v in VARIANTS},
    }


def print_tables(env_name: str, cells: list[dict[str, Any]]) -> None:
    print(f"\n### {env_name}: env steps per second (median over the repeats) and ratios of the medians\n")
    print("| vec env | n_envs | masked RecurrentPPO | unmasked RecurrentPPO | **masked / unmasked** | CPU-time ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for c in cells:
        m = c["median_steps_per_s"]
        cpu = f"{c['cpu_ratio_maskrl_unmasked']:.2f}" if c["cpu_ratio_maskrl_unmasked"] is not None else "-"
        print(
            f"| {c['vec_env']} | {c['n_envs']} | {m['maskrl']:.0f} | {m['unmasked']:.0f} "
            f"| {c['ratio_maskrl_unmasked']:.2f} | {cpu} |"
        )
    ratios = [c["ratio_maskrl_unmasked"] for c in cells]
    print(
        f"\nWall clock: masked / unmasked {min(ratios):.2f}-{max(ratios):.2f} (median {statistics.median(ratios):.2f}; "
        f"{sum(r < 0.9 for r in ratios)}/{len(ratios)} cells below 0.9)"
    )
    print(f"\n### {env_name}: breakdown, µs per env step (median; CPU time for dummy, wall time for subproc)\n")
    print("| vec env | n_envs | variant | env step | policy forward | rollout other | update | total |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for c in cells:
        for v, p in c["us_per_step"].items():
            rate = c["median_cpu_steps_per_s" if c["vec_env"] == "dummy" else "median_steps_per_s"][v]
            print(
                f"| {c['vec_env']} | {c['n_envs']} | {v} | {p['env']:.0f} | {p['forward']:.0f} "
                f"| {p['rollout_other']:.0f} | {p['update']:.0f} | {1e6 / rate:.0f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=list(ENV_BENCHES), default="grid")
    parser.add_argument("--vec-envs", nargs="+", default=["dummy", "subproc"], choices=["dummy", "subproc"])
    parser.add_argument("--n-envs", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--iterations", type=int, default=1, help="RecurrentPPO iterations per timed learn() call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant")
    parser.add_argument("--n-epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="default docs/benchmarks/training_recurrent_<env>.json")
    parser.add_argument("--quick", action="store_true", help="dummy only, 2 envs, 1 repeat")
    args = parser.parse_args()
    bench = ENV_BENCHES[args.env]
    if args.quick:
        args.vec_envs, args.n_envs, args.repeats = ["dummy"], [2], 1
    torch.set_num_threads(1)
    out = args.out or OUT_DIR / f"training_recurrent_{args.env}{'_quick' if args.quick else ''}.json"
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"torch {torch.__version__}, 1 thread; {bench.env_id}: {bench.notes}")
    print(f"RecurrentPPO n_steps={bench.n_steps} batch_size={bench.n_steps} n_epochs={args.n_epochs}; {load_before}")
    started = time.time()
    cells = []
    for vec_env in args.vec_envs:
        for n_envs in args.n_envs:
            cell = run_cell(bench, vec_env, n_envs, args.iterations, args.repeats, args.n_epochs)
            cells.append(cell)
            m = cell["median_steps_per_s"]
            print(
                f"{vec_env} x {n_envs}: masked {m['maskrl']:.0f}/s, unmasked {m['unmasked']:.0f}/s, "
                f"ratio {cell['ratio_maskrl_unmasked']:.2f} (CPU time: {cell['cpu_ratio_maskrl_unmasked']})",
                flush=True,
            )
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print_tables(args.env, cells)
    print(f"\n{time.time() - started:.0f} s; load before: {load_before}; after: {load_after}")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "env": bench.env_id,
        "env_kwargs": bench.env_kwargs,
        "notes": bench.notes,
        "recurrent_ppo": {"n_steps": bench.n_steps, "batch_size": bench.n_steps, "n_epochs": args.n_epochs},
        "iterations_per_call": args.iterations,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "uptime_before": load_before,
        "uptime_after": load_after,
        "seconds": time.time() - started,
        "cells": cells,
    }
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
