"""How the cost of maskrl's masked pieces grows: actions, entities, grid size (plots in ``docs/benchmarks/``).

Three sweeps, each timing one PPO-update-like call (forward + ``backward``) per case:

1. ``distribution`` -- action count ``n`` at batch 256: construct + ``sample`` + ``log_prob`` + ``entropy`` +
   backward (as ``bench_distributions.py``) for torch's ``Categorical`` (no mask), maskrl's ``MaskedCategorical``
   (int8 mask, the rollout buffer's dtype) and sb3-contrib's ``MaskableCategorical``; half the actions valid.
2. ``attention`` -- entity count ``N`` at batch 256: ``EntityAttentionExtractor`` (32-dim, 2 heads, 2 blocks, the
   PandaGrid setting) forward + backward of the features' mean, with the visibility mask (half the slots visible)
   and without it (``use_visibility=False``): the cost of the mask itself.
3. ``grid`` -- grid side ``S`` (``S x S`` cells, 5 actions per cell, batch 64): the per-cell distribution alone,
   maskrl's ``CategoricalMap`` (agent mask + per-cell action masks; and with no masks) vs sb3-contrib's
   ``MaskableMultiCategoricalDistribution`` (one ``MaskableCategorical`` per cell, flat mask), then the whole
   ``GridNetPolicy.evaluate_actions`` + backward (channels 32, 64) with masks.

Method: per shape, the cases are warmed up, then timed round-robin in blocks of ~``--block-ms`` of calls, on the
process CPU clock with one torch thread; the time per call is the median over ``--repeats`` blocks. Machine load
shifts absolute numbers; ratios between curves of one sweep are what the plots show best.

Run: ``python -m benchmarks.bench_scaling`` (``--quick`` for a smoke run, which writes no files).
Writes ``docs/benchmarks/scaling.json`` and ``scaling_distribution.png``, ``scaling_attention.png``,
``scaling_grid.png`` there.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from matplotlib.figure import Figure
from sb3_contrib.common.maskable.distributions import MaskableCategorical, MaskableMultiCategoricalDistribution
from torch.distributions import Categorical

from benchmarks.common import save_figure, time_blocks, write_json
from maskrl.policies import CategoricalMap, EntityAttentionExtractor, GridNetPolicy, MaskedCategorical

OUT_DIR = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"


def time_cases(cases: dict[str, Callable[[], Any]], repeats: int, block_ms: float) -> dict[str, float]:
    """Median CPU µs per call of each case, timed round-robin in blocks."""
    blocks = time_blocks(cases, repeats, block_ms / 1e3)
    return {name: statistics.median(seconds) * 1e6 for name, seconds in blocks.items()}


def distribution_cases(n: int, batch: int, generator: torch.Generator) -> dict[str, Callable[[], Any]]:
    base = torch.randn(batch, n, generator=generator)
    mask = torch.rand(batch, n, generator=generator) < 0.5
    mask[torch.arange(batch), torch.randint(n, (batch,), generator=generator)] = True
    mask_int8 = mask.to(torch.int8)

    def step(make: Callable[[torch.Tensor], Any]) -> Callable[[], None]:
        def run() -> None:
            logits = base.detach().requires_grad_()
            dist = make(logits)
            action = dist.sample()
            (dist.log_prob(action).mean() + dist.entropy().mean()).backward()

        return run

    return {
        "torch Categorical (no mask)": step(lambda x: Categorical(logits=x)),
        "maskrl MaskedCategorical": step(lambda x: MaskedCategorical(x, mask_int8)),
        "sb3-contrib MaskableCategorical": step(lambda x: MaskableCategorical(logits=x, masks=mask)),
    }


def attention_cases(n_entities: int, batch: int, generator: torch.Generator) -> dict[str, Callable[[], Any]]:
    space = spaces.Dict({"entities": spaces.Box(-1, 1, (n_entities, 9)), "visibility": spaces.MultiBinary(n_entities)})
    obs = {
        "entities": torch.randn(batch, n_entities, 9, generator=generator),
        "visibility": (torch.rand(batch, n_entities, generator=generator) < 0.5).float(),
    }
    masked = EntityAttentionExtractor(space, embed_dim=32, n_heads=2, n_blocks=2)
    unmasked = EntityAttentionExtractor(space, embed_dim=32, n_heads=2, n_blocks=2, use_visibility=False)

    def step(extractor: EntityAttentionExtractor) -> Callable[[], None]:
        def run() -> None:
            extractor.zero_grad(set_to_none=True)
            extractor(obs).mean().backward()

        return run

    return {"with visibility mask": step(masked), "without mask (use_visibility=False)": step(unmasked)}


def grid_cases(side: int, batch: int, generator: torch.Generator) -> dict[str, Callable[[], Any]]:
    n_actions = 5
    base = torch.randn(batch, n_actions, side, side, generator=generator)
    agent = (torch.rand(batch, side, side, generator=generator) < 0.15).to(torch.int8)
    action_mask = (torch.rand(batch, n_actions, side, side, generator=generator) < 0.7).to(torch.int8)
    action_mask[:, 0] = 1  # STAY is always valid, as in the herd
    flat_mask = action_mask.permute(0, 2, 3, 1).reshape(batch, -1).bool()  # cell-major, as action_masks()
    sb3c = MaskableMultiCategoricalDistribution([n_actions] * side * side)

    def step_map(with_masks: bool) -> Callable[[], None]:
        def run() -> None:
            logits = base.detach().requires_grad_()
            dist = CategoricalMap(logits, agent if with_masks else None, action_mask if with_masks else None)
            action = dist.sample()
            (dist.log_prob(action).mean() + dist.entropy().mean()).backward()

        return run

    def step_sb3c() -> None:
        logits = base.detach().requires_grad_()
        dist = sb3c.proba_distribution(logits.permute(0, 2, 3, 1).reshape(batch, -1))
        dist.apply_masking(flat_mask)
        action = dist.sample()
        (dist.log_prob(action).mean() + dist.entropy().mean()).backward()

    obs_space = spaces.Dict(
        {
            "grid": spaces.Box(0, 1, (4, side, side), np.float32),
            "agent_mask": spaces.Box(0, 1, (side, side), np.int8),
            "action_mask": spaces.Box(0, 1, (n_actions, side, side), np.int8),
        }
    )
    policy = GridNetPolicy(obs_space, spaces.MultiDiscrete([n_actions] * side * side), lambda _: 3e-4)
    grid = torch.rand(batch, 4, side, side, generator=generator)
    obs = {"grid": grid, "agent_mask": agent, "action_mask": action_mask}
    with torch.no_grad():
        actions = policy(obs)[0].float()

    def step_policy() -> None:
        policy.zero_grad(set_to_none=True)
        values, log_prob, entropy = policy.evaluate_actions(obs, actions)
        (values.mean() + log_prob.mean() + entropy.mean()).backward()

    cases = {"maskrl CategoricalMap (masks)": step_map(True), "CategoricalMap (no masks)": step_map(False)}
    if side <= 16:  # one python-level Categorical per cell: too slow for 32x32
        cases["sb3-contrib MaskableMultiCategorical"] = step_sb3c
    cases["GridNetPolicy.evaluate_actions (masks)"] = step_policy
    return cases


SWEEPS: dict[str, tuple[str, str, list[int], list[int], Callable[..., dict[str, Callable[[], Any]]], int]] = {
    # name: (x label, title, full sizes, quick sizes, case builder, batch)
    "distribution": (
        "actions per row",
        "masked distribution, batch 256 (construct+sample+log_prob+entropy+backward)",
        [4, 16, 64, 256, 1024, 4096],
        [4, 64],
        distribution_cases,
        256,
    ),
    "attention": (
        "entities per observation",
        "EntityAttentionExtractor(32, 2 heads, 2 blocks), batch 256, forward+backward",
        [4, 8, 16, 32, 64, 128],
        [4, 16],
        attention_cases,
        256,
    ),
    "grid": (
        "grid side S (S x S cells, 5 actions each)",
        "per-cell distributions and GridNet, batch 64",
        [4, 8, 16, 32],
        [4, 8],
        grid_cases,
        64,
    ),
}


def plot(name: str, result: dict[str, Any], path: Path) -> None:
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    ax = fig.add_subplot()
    for case in result["cases"]:
        xs = [x for x, point in zip(result["sizes"], result["us"], strict=True) if case in point]
        ys = [point[case] / 1e3 for point in result["us"] if case in point]
        ax.plot(xs, ys, marker="o", label=case)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(result["xlabel"])
    ax.set_ylabel("CPU ms per call (median)")
    ax.set_title(result["title"], fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", nargs="+", choices=list(SWEEPS), default=list(SWEEPS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--block-ms", type=float, default=40.0)
    parser.add_argument("--quick", action="store_true", help="two sizes per sweep, 2 repeats, no files written")
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    if args.quick:
        args.repeats, args.block_ms = 2, 10.0
    results: dict[str, Any] = {}
    for name in args.sweeps:
        xlabel, title, sizes, quick_sizes, builder, batch = SWEEPS[name]
        sizes = quick_sizes if args.quick else sizes
        points = []
        for size in sizes:
            us = time_cases(builder(size, batch, generator), args.repeats, args.block_ms)
            points.append(us)
            print(f"{name} {size}: " + ", ".join(f"{case} {t:.0f} µs" for case, t in us.items()), flush=True)
        cases = list(dict.fromkeys(case for point in points for case in point))
        results[name] = {"xlabel": xlabel, "title": title, "batch": batch, "sizes": sizes, "cases": cases, "us": points}
    if args.quick:
        return
    write_json(OUT_DIR / "scaling.json", results)
    for name, result in results.items():
        plot(name, result, OUT_DIR / f"scaling_{name}.png")


if __name__ == "__main__":
    main()
