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
hooks of ``benchmarks.common.build``, as in ``bench_training.py``.

Run (as in docs/benchmarks.md)::

    python -m benchmarks.bench_recurrent --env grid
    python -m benchmarks.bench_recurrent --env kart

``--quick`` for a smoke run. Writes ``docs/benchmarks/training_recurrent_<env>.json`` (``--out`` to change).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch
from sb3_contrib import RecurrentPPO

from benchmarks.common import EnvBench, breakdown_table, throughput_parser, time_cell, time_cells, write_json
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
    """Time the two variants round-robin on one (vec env, n_envs) cell; add the ratios of their medians."""
    cell = time_cell(bench, VARIANTS, vec_env, n_envs, iterations, repeats, n_epochs)
    cell["ratio_maskrl_unmasked"] = cell["median_steps_per_s"]["maskrl"] / cell["median_steps_per_s"]["unmasked"]
    cpu = cell["median_cpu_steps_per_s"]
    # With SubprocVecEnv the process's CPU time misses the workers: only the wall-clock ratio counts there.
    cell["cpu_ratio_maskrl_unmasked"] = cpu["maskrl"] / cpu["unmasked"] if vec_env == "dummy" else None
    return cell


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
    print(breakdown_table(cells))


def main() -> None:
    parser = throughput_parser(__doc__, ENV_BENCHES, "grid", [1, 4, 8])
    parser.add_argument("--iterations", type=int, default=1, help="RecurrentPPO iterations per timed learn() call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant")
    args = parser.parse_args()
    bench = ENV_BENCHES[args.env]
    if args.quick:
        args.vec_envs, args.n_envs, args.repeats = ["dummy"], [2], 1
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; {bench.env_id}: {bench.notes}")
    print(f"RecurrentPPO n_steps={bench.n_steps} batch_size={bench.n_steps} n_epochs={args.n_epochs}", flush=True)
    timing = time_cells(
        args.vec_envs,
        args.n_envs,
        lambda vec_env, n_envs: run_cell(bench, vec_env, n_envs, args.iterations, args.repeats, args.n_epochs),
        lambda c: (
            f"masked {c['median_steps_per_s']['maskrl']:.0f}/s, unmasked {c['median_steps_per_s']['unmasked']:.0f}"
            f"/s, ratio {c['ratio_maskrl_unmasked']:.2f} (CPU time: {c['cpu_ratio_maskrl_unmasked']})"
        ),
    )
    print_tables(args.env, timing["cells"])
    print(f"\n{timing['seconds']:.0f} s; load before: {timing['uptime_before']}; after: {timing['uptime_after']}")
    result = {
        "env": bench.env_id,
        "env_kwargs": bench.env_kwargs,
        "notes": bench.notes,
        "recurrent_ppo": {"n_steps": bench.n_steps, "batch_size": bench.n_steps, "n_epochs": args.n_epochs},
        "iterations_per_call": args.iterations,
        "repeats": args.repeats,
        "torch": torch.__version__,
        **timing,
    }
    write_json(args.out or OUT_DIR / f"training_recurrent_{args.env}{'_quick' if args.quick else ''}.json", result)


if __name__ == "__main__":
    main()
