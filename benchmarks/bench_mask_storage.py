"""Mask storage in PPO's rollout buffer: maskrl's int8 mask keys vs MaskablePPO's float32 mask buffer.

Builds the real models of ``bench_training.py`` (maskrl: SB3 ``PPO`` whose ``DictRolloutBuffer`` stores each
observation key in its space's dtype, so the ``"action_mask"`` / ``"agent_mask"`` / ``"visibility"`` keys are int8;
MaskablePPO: its ``Maskable(Dict)RolloutBuffer`` keeps the action masks in a separate float32 array, plus whatever
mask keys remain in its observation; unmasked PPO: no action mask), then reads ``nbytes`` of the buffers' actual
numpy arrays. Per transition = nbytes / (n_steps * n_envs). No training, no timing: the result is exact and
independent of machine load.

Cases: Kart with 4 (default) and 256 item types, PandaGrid, the herd at 8x8 (default) and 16x16.

Run: ``python -m benchmarks.bench_mask_storage`` (``--quick`` only runs Kart and the 8x8 herd).
Writes ``docs/benchmarks/mask_storage.json``.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.buffers import RolloutBuffer

from benchmarks.bench_training import ENV_BENCHES, OUT_DIR, VARIANTS
from benchmarks.common import build, write_json
from maskrl.masks import MASK_KEYS

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("Kart, 4 item types (9 actions)", "kart", {}),
    ("Kart, 256 item types (261 actions)", "kart", {"n_item_types": 256}),
    ("PandaGrid (5 actions, 15 entities)", "grid", {}),
    ("herd 8x8 (64 cells x 5 actions)", "herd", {}),
    ("herd 16x16 (256 cells x 5 actions)", "herd", {"size": 16, "n_pandas": 16}),
]


def buffer_bytes(buffer: RolloutBuffer) -> dict[str, int]:
    """``nbytes`` of every numpy array the buffer holds (observation keys as ``obs:<key>``)."""
    sizes: dict[str, int] = {}
    for name, value in vars(buffer).items():
        if isinstance(value, np.ndarray):
            sizes[name] = value.nbytes
        elif name == "observations" and isinstance(value, dict):
            sizes.update({f"obs:{key}": array.nbytes for key, array in value.items()})
    return sizes


def measure(env: str, env_kwargs: dict[str, Any], n_envs: int) -> dict[str, Any]:
    """Bytes per transition of the mask arrays and of the whole buffer, per variant."""
    bench = ENV_BENCHES[env]
    result: dict[str, Any] = {}
    for variant in VARIANTS:
        model, _ = build(bench, variant, "dummy", n_envs, 1, env_kwargs)
        buffer = model.rollout_buffer
        transitions = buffer.buffer_size * buffer.n_envs
        sizes = buffer_bytes(buffer)
        model.get_env().close()
        action_mask = sizes.get("obs:action_mask", 0) + sizes.get("action_masks", 0)
        other_masks = sum(sizes.get(f"obs:{key}", 0) for key in MASK_KEYS if key != "action_mask")
        arrays = dict(buffer.observations) if isinstance(buffer.observations, dict) else {}
        if hasattr(buffer, "action_masks"):
            arrays["action_masks"] = buffer.action_masks
        dtypes = {name: str(array.dtype) for name, array in arrays.items() if name in (*MASK_KEYS, "action_masks")}
        result[variant] = {
            "transitions": transitions,
            "action_mask_bytes_per_transition": action_mask / transitions,
            "other_mask_bytes_per_transition": other_masks / transitions,
            "buffer_bytes_per_transition": sum(sizes.values()) / transitions,
            "buffer_bytes": sum(sizes.values()),
            "mask_dtypes": dtypes,
            "arrays": sizes,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = [CASES[0], CASES[3]] if args.quick else CASES
    rows = []
    print(
        "| case | variant | action mask B/transition (dtype) | other masks B/transition "
        "| whole buffer B/transition | whole buffer (n_steps x n_envs) |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for label, env, env_kwargs in cases:
        result = measure(env, env_kwargs, args.n_envs)
        rows.append({"case": label, "env": env, "env_kwargs": env_kwargs, "n_envs": args.n_envs, "variants": result})
        for variant, r in result.items():
            dtype = r["mask_dtypes"].get("action_mask", r["mask_dtypes"].get("action_masks", "-"))
            print(
                f"| {label} | {variant} | {r['action_mask_bytes_per_transition']:.0f} ({dtype}) "
                f"| {r['other_mask_bytes_per_transition']:.0f} | {r['buffer_bytes_per_transition']:.0f} "
                f"| {r['buffer_bytes'] / 2**20:.2f} MiB ({r['transitions']} transitions) |",
                flush=True,
            )
    if not args.quick:
        write_json(OUT_DIR / "mask_storage.json", rows)


if __name__ == "__main__":
    main()
