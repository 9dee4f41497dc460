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

4. ``fixes`` (``--sweeps fixes``, also in the default run) -- before/after of this session's fixes, old and new
   code side by side in one process: (a) ``CategoricalMap``'s three mask validations vs the fused check, (b) the
   per-cell probabilities as ``exp`` of masked normalised logits vs ``softmax``, (c) a masked policy's rollout
   ``log_prob`` of its own sampled actions with and without torch's argument validation; printed as a table and
   stored in ``scaling.json`` (no plot).

Method: per shape, the cases are warmed up, then timed round-robin in blocks of ~``--block-ms`` of calls, on the
process CPU clock with one torch thread; the time per call is the median over ``--repeats`` blocks. Machine load
shifts absolute numbers; ratios between curves of one sweep are what the plots show best.

Run: ``python benchmarks/bench_scaling.py`` (about 3 minutes; ``--quick`` for a smoke run).
Writes ``docs/benchmarks/scaling.json`` and ``scaling_distribution.png``, ``scaling_attention.png``,
``scaling_grid.png`` there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from matplotlib.figure import Figure
from sb3_contrib.common.maskable.distributions import MaskableCategorical, MaskableMultiCategoricalDistribution
from torch.distributions import Categorical

from maskrl.policies import CategoricalMap, EntityAttentionExtractor, GridNetPolicy, MaskedCategorical
from maskrl.policies.categorical_map import _masks_pass
from maskrl.policies.distributions import as_bool_mask

OUT_DIR = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"


def time_cases(cases: dict[str, Callable[[], Any]], repeats: int, block_ms: float) -> dict[str, float]:
    """Median CPU µs per call of each case, timed round-robin in blocks."""
    per_block: dict[str, int] = {}
    for name, fn in cases.items():
        fn()  # warm-up
        start = time.process_time()
        fn()
        one = max(time.process_time() - start, 1e-5)
        per_block[name] = max(1, int(block_ms / 1e3 / one))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            fn, k = cases[name], per_block[name]
            start = time.process_time()
            for _ in range(k):
                fn()
            samples[name].append((time.process_time() - start) / k * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


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
    if side <= 16:  # one python-level Categorical per cell: 1024 of them at 32x32 take seconds per call
        cases["sb3-contrib MaskableMultiCategorical"] = step_sb3c
    cases["GridNetPolicy.evaluate_actions (masks)"] = step_policy
    return cases


def fix_cases(generator: torch.Generator) -> dict[str, dict[str, Callable[[], Any]]]:
    """Old vs new code of each fix, at the herd's rollout (8 envs) and update (batch 128) shapes and Kart's."""
    groups: dict[str, dict[str, Callable[[], Any]]] = {}
    for batch in (8, 128):
        logits = torch.randn(batch, 5, 8, 8, generator=generator)
        agent = (torch.rand(batch, 8, 8, generator=generator) < 0.1).to(torch.int8)
        action_mask = (torch.rand(batch, 5, 8, 8, generator=generator) < 0.7).to(torch.int8)
        action_mask[:, 0] = 1
        cells = logits[:, 0]

        def old_checks(
            agent: torch.Tensor = agent,
            action_mask: torch.Tensor = action_mask,
            logits: torch.Tensor = logits,
            cells: torch.Tensor = cells,
        ) -> None:
            agent_bool = as_bool_mask(agent, cells, validate=True, check_rows=False)
            as_bool_mask(action_mask, logits, validate=True, check_rows=False)
            stranded = agent_bool & (action_mask.view(torch.uint8).amax(dim=1) == 0)
            assert not bool(stranded.any())

        def new_checks(
            agent: torch.Tensor = agent,
            action_mask: torch.Tensor = action_mask,
            logits: torch.Tensor = logits,
            cells: torch.Tensor = cells,
        ) -> None:
            assert _masks_pass(agent, action_mask)
            as_bool_mask(agent, cells, validate=False, check_rows=False)
            as_bool_mask(action_mask, logits, validate=False, check_rows=False)

        groups[f"CategoricalMap mask validation, {batch} x 5 x 8 x 8"] = {"before": old_checks, "after": new_checks}
    densities = (("10% agent cells, 70% valid", 0.1, 0.7), ("all agent cells, 30% valid", 1.0, 0.3))
    for label, agent_frac, valid_frac in densities:
        # Only agent cells keep masked entries (empty cells are made all-valid), so the density of masked
        # entries, not the shape, decides what exp costs.
        agent = (torch.rand(128, 8, 8, generator=generator) < agent_frac).to(torch.int8)
        action_mask = (torch.rand(128, 5, 8, 8, generator=generator) < valid_frac).to(torch.int8)
        action_mask[:, 0] = 1
        normalised = CategoricalMap(torch.randn(128, 5, 8, 8, generator=generator), agent, action_mask).logits
        groups[f"CategoricalMap probs, 128 x 5 x 8 x 8, {label}"] = {
            "before": lambda x=normalised: x.exp(),
            "after": lambda x=normalised: torch.softmax(x, dim=1),
        }
    for batch in (1, 8):
        mask = (torch.rand(batch, 9, generator=generator) < 0.5).to(torch.int8)
        mask[:, 0] = 1
        dist = MaskedCategorical(torch.randn(batch, 9, generator=generator), mask)
        quiet = MaskedCategorical(dist.logits, mask, validate_args=False)
        action = dist.sample()
        groups[f"rollout log_prob of own sample, Kart {batch} x 9"] = {
            "before": lambda d=dist, a=action: d.log_prob(a),
            "after": lambda d=quiet, a=action: d.log_prob(a),
        }
    return groups


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
    fig = Figure(figsize=(6.4, 4.2))
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", nargs="+", choices=[*SWEEPS, "fixes"], default=[*SWEEPS, "fixes"])
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
        if name == "fixes":
            continue
        xlabel, title, sizes, quick_sizes, builder, batch = SWEEPS[name]
        sizes = quick_sizes if args.quick else sizes
        points = []
        for size in sizes:
            us = time_cases(builder(size, batch, generator), args.repeats, args.block_ms)
            points.append(us)
            print(f"{name} {size}: " + ", ".join(f"{case} {t:.0f} µs" for case, t in us.items()), flush=True)
        cases = list(dict.fromkeys(case for point in points for case in point))
        results[name] = {"xlabel": xlabel, "title": title, "batch": batch, "sizes": sizes, "cases": cases, "us": points}
    if "fixes" in args.sweeps:
        fixes = {}
        print("\n| fix | before µs | after µs | before/after |\n|---|---:|---:|---:|")
        for label, cases in fix_cases(generator).items():
            us = time_cases(cases, args.repeats, args.block_ms)
            fixes[label] = us
            ratio = us["before"] / us["after"]
            print(f"| {label} | {us['before']:.1f} | {us['after']:.1f} | {ratio:.1f}x |", flush=True)
    if args.quick:
        return
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    if "fixes" in args.sweeps:
        results["fixes"] = fixes
    for name, result in results.items():
        if name == "fixes":
            continue
        plot(name, result, OUT_DIR / f"scaling_{name}.png")
    with open(OUT_DIR / "scaling.json", "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {OUT_DIR}/scaling*.png and scaling.json")


if __name__ == "__main__":
    main()
