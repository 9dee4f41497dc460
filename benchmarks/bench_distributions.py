"""Benchmark ``MaskedCategorical`` against torch's plain ``Categorical`` and sb3-contrib's ``MaskableCategorical``.

What is measured: the time of one PPO-style training step of the distribution alone::

    logits = base.detach().requires_grad_()   # a fresh leaf each call
    dist = <variant>(logits, mask)
    action = dist.sample()
    loss = dist.log_prob(action).mean() + dist.entropy().mean()
    loss.backward()                           # gradient w.r.t. logits

for these variants:

* ``torch``      -- ``torch.distributions.Categorical(logits=logits)``, no mask (the reference),
* ``ours``       -- ``maskrl.policies.distributions.MaskedCategorical(logits, mask)`` with a bool mask,
* ``ours int8``  -- the same with the mask as an int8 0/1 tensor (what SB3's rollout buffer hands the
  policy for the int8 ``"action_mask"`` observation, i.e. the real call path),
* ``ours float`` -- the same with the mask as a float32 0/1 tensor (a user's ``Box`` mask space),
* ``sb3c``       -- ``sb3_contrib.common.maskable.distributions.MaskableCategorical(logits=..., masks=mask)``
  with a bool mask.

With ``--space multibinary`` the same table is for ``MultiBinary(n)`` actions (``n`` = the "actions" column):
``torch`` is ``torch.distributions.Bernoulli`` (SB3's unmasked distribution), ``ours`` is
``MaskedBernoulli`` with the flat two-entries-per-bit mask, ``sb3c`` is sb3-contrib's
``MaskableBernoulliDistribution`` (``n`` two-way ``MaskableCategorical`` s, fed the same logits as
``[0, logit]`` pairs). Each bit's two values are each allowed with probability ``--valid-frac``, and one of
them is forced allowed when neither is.

Each variant runs twice: with torch's default argument validation (``validate_args`` not given, so
``torch.distributions.Distribution._validate_args`` decides: True unless ``python -O`` or
``Distribution.set_default_validate_args(False)``) and with ``validate_args=False`` passed explicitly.

The mask is made once per (batch, actions) shape. By default (``--mask-layout random``) every action is
valid with probability ``--valid-frac`` (default 0.5) independently, and one random action per row is
forced valid so that no row is empty. A random 50% mask is the worst case for branchy CPU kernels
(``torch.where``, bool reductions mispredict half the time); ``--mask-layout block`` makes each row's valid
actions one cyclic run of ``round(valid_frac * actions)`` at a random offset instead. The logits are
standard normal float32.

Method: all 8 (variant, validation) cases of one shape are warmed up, then timed round-robin (the start
of the round rotates each repeat) so that machine noise hits them equally. Each timing is a block of
calls lasting about ``--block-ms``; the time per call is the median over ``--repeats`` blocks, and each
ratio is the median over rounds of the per-round ratio. The clock is the process CPU time with one
thread (robust when other processes share the machine) and wall time otherwise (``--clock``). The thread
count is fixed with ``torch.set_num_threads`` (default 1) and printed. A shape whose cost, estimated from
one call of plain torch, exceeds ``--max-combo-seconds`` or the time left of ``--time-budget`` is skipped
and listed. CPU only.

Run from the repository root::

    python -m benchmarks.bench_distributions            # default sweep
    python -m benchmarks.bench_distributions --quick    # smoke run
    python -m benchmarks.bench_distributions --batch-sizes 2048 --n-actions 256 --repeats 15 --threads 2
"""

from __future__ import annotations

import argparse
import functools
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import sb3_contrib
import stable_baselines3
import torch
from sb3_contrib.common.maskable.distributions import MaskableBernoulliDistribution, MaskableCategorical
from torch.distributions import Bernoulli, Categorical, Distribution

from benchmarks.common import command_line, time_block, time_blocks
from maskrl.policies import distributions as maskrl_distributions
from maskrl.policies.distributions import MaskedBernoulli, MaskedCategorical

#: ``make(logits, masks, validate_args)``; ``masks`` maps a mask kind ("bool", "int8") to the mask tensor.
Factory = Callable[[torch.Tensor, dict[str, torch.Tensor], bool | None], Distribution]


@dataclass(frozen=True)
class Variant:
    key: str
    make: Factory


class ContribBits:
    """sb3-contrib's ``MaskableBernoulliDistribution`` behind the torch ``Distribution`` methods ``step`` calls."""

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor):
        pairs = torch.stack([torch.zeros_like(logits), logits], dim=-1).flatten(1)
        self.dist = MaskableBernoulliDistribution(logits.shape[-1]).proba_distribution(pairs)
        self.dist.apply_masking(mask)

    def sample(self) -> torch.Tensor:
        return self.dist.sample()

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.dist.log_prob(actions)

    def entropy(self) -> torch.Tensor:
        return self.dist.entropy()


VARIANTS_BY_SPACE = {
    "discrete": (
        Variant("torch", lambda x, m, v: Categorical(logits=x, validate_args=v)),
        Variant("ours", lambda x, m, v: MaskedCategorical(x, m["bool"], validate_args=v)),
        Variant("ours_int8", lambda x, m, v: MaskedCategorical(x, m["int8"], validate_args=v)),
        Variant("ours_float", lambda x, m, v: MaskedCategorical(x, m["float"], validate_args=v)),
        Variant("sb3c", lambda x, m, v: MaskableCategorical(logits=x, masks=m["bool"], validate_args=v)),
    ),
    "multibinary": (
        Variant("torch", lambda x, m, v: Bernoulli(logits=x, validate_args=v)),
        Variant("ours", lambda x, m, v: MaskedBernoulli(x, m["bool"], validate_args=v)),
        Variant("ours_int8", lambda x, m, v: MaskedBernoulli(x, m["int8"], validate_args=v)),
        Variant("ours_float", lambda x, m, v: MaskedBernoulli(x, m["float"], validate_args=v)),
        Variant("sb3c", lambda x, m, v: ContribBits(x, m["bool"])),
    ),
}
VARIANTS = VARIANTS_BY_SPACE["discrete"]
#: (name, ``validate_args`` passed to every variant)
VALIDATION_MODES: tuple[tuple[str, bool | None], ...] = (("default", None), ("off", False))
TARGET_RATIO = 1.5


def step(variant: Variant, base: torch.Tensor, masks: dict[str, torch.Tensor], validate_args: bool | None) -> None:
    """One construct + sample + log_prob + entropy + backward, with a fresh leaf for the logits."""
    logits = base.detach().requires_grad_()
    dist = variant.make(logits, masks, validate_args)
    action = dist.sample()
    loss = dist.log_prob(action).mean() + dist.entropy().mean()
    loss.backward()


def make_inputs(
    batch: int, n_actions: int, valid_frac: float, layout: str, generator: torch.Generator, space: str = "discrete"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Standard normal float32 logits and the mask (as bool, int8 and float32), see the module docstring."""
    base = torch.randn(batch, n_actions, generator=generator)
    if space == "multibinary":
        pairs = torch.rand(batch, n_actions, 2, generator=generator) < valid_frac
        forced = torch.randint(2, (batch, n_actions), generator=generator)
        neither = ~pairs.any(-1)
        pairs[..., 0] |= neither & (forced == 0)
        pairs[..., 1] |= neither & (forced == 1)
        mask = pairs.flatten(1)
    elif layout == "random":
        mask = torch.rand(batch, n_actions, generator=generator) < valid_frac
        forced = torch.randint(n_actions, (batch,), generator=generator)
        mask[torch.arange(batch), forced] = True
    else:  # "block": a cyclic run of valid actions starting at a random offset per row
        offsets = torch.randint(n_actions, (batch, 1), generator=generator)
        mask = (torch.arange(n_actions) - offsets) % n_actions < max(1, round(valid_frac * n_actions))
    return base, {"bool": mask, "int8": mask.to(torch.int8), "float": mask.float()}


def sanity_check(base: torch.Tensor, masks: dict[str, torch.Tensor], space: str = "discrete") -> None:
    """The masked variants never sample an invalid action and agree on log-probs of valid actions."""
    mask = masks["bool"]
    if space == "multibinary":
        ours_bits, theirs_bits = MaskedBernoulli(base, mask), ContribBits(base, mask)
        bits = ours_bits.sample()
        taken = mask.unflatten(-1, (-1, 2)).gather(-1, bits.long().unsqueeze(-1))
        if not bool(taken.all()):
            raise AssertionError("MaskedBernoulli sampled a masked value")
        torch.testing.assert_close(ours_bits.log_prob(bits), theirs_bits.log_prob(bits))
        return
    ours = MaskedCategorical(base, mask)
    theirs = MaskableCategorical(logits=base, masks=mask)
    for dist in (ours, theirs, MaskedCategorical(base, masks["int8"])):
        action = dist.sample()
        if not bool(mask.gather(-1, action.unsqueeze(-1)).all()):
            raise AssertionError(f"{type(dist).__name__} sampled a masked action")
    action = ours.sample()
    torch.testing.assert_close(ours.log_prob(action), theirs.log_prob(action))
    torch.testing.assert_close(ours.entropy(), theirs.entropy(), atol=1e-4, rtol=1e-4)


#: assumed cost of an average case relative to plain torch, for the up-front estimate of a shape's run time
ESTIMATE_FACTOR = 2.0


def bench_shape(
    batch: int, n_actions: int, args: argparse.Namespace, generator: torch.Generator, seconds_left: float
) -> dict[tuple[str, str], list[float]] | str:
    """Seconds per call of every timed block, keyed by (validation mode, variant key) and in round order,
    or a string saying why the shape was skipped.

    The shape's cost is estimated in wall time from one call of plain torch before anything else runs, so
    a shape that would break ``--max-combo-seconds`` or the remaining ``--time-budget`` costs one call.
    """
    base, masks = make_inputs(batch, n_actions, args.valid_frac, args.mask_layout, generator, args.space)
    cases = {
        (mode, variant.key): functools.partial(step, variant, base, masks, validate)
        for mode, validate in VALIDATION_MODES
        for variant in VARIANTS
    }
    reference = functools.partial(step, VARIANTS[0], base, masks, None)
    reference()
    probe = time_block(reference, 1, time.perf_counter) * ESTIMATE_FACTOR
    warmup = args.warmup if probe < 0.01 else 1
    estimate = len(cases) * (args.repeats * max(probe, args.block_ms / 1e3) + (warmup + 1) * probe)
    if estimate > args.max_combo_seconds:
        return f"skipped: estimated {estimate:.0f} s > --max-combo-seconds {args.max_combo_seconds:g}"
    if estimate > seconds_left:
        return f"skipped: estimated {estimate:.0f} s > {max(seconds_left, 0):.0f} s left of --time-budget"
    sanity_check(base, masks, args.space)
    return time_blocks(cases, args.repeats, args.block_ms / 1e3, args.clock, warmup)


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of the per-round ratio (blocks of one round ran back to back, so drift cancels)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def format_tables(results: dict[tuple[int, int], dict[tuple[str, str], list[float]] | str]) -> str:
    lines: list[str] = []
    for mode, validate in VALIDATION_MODES:
        title = "torch default (validate_args not given)" if validate is None else "validate_args=False for all"
        lines += [f"### Validation: {mode} -- {title}", ""]
        lines.append(
            "| batch | actions | torch µs | ours µs | ours int8 µs | ours float µs | sb3c µs "
            "| ours/torch | int8/torch | float/torch | sb3c/torch | ours/sb3c |"
        )
        lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        ratios: dict[str, list[float]] = {"ours": [], "ours_int8": [], "ours_float": [], "sb3c": []}
        for (batch, n_actions), result in results.items():
            if isinstance(result, str):
                lines.append("| " + " | ".join([str(batch), str(n_actions), result, *[""] * 9]) + " |")
                continue
            blocks = {variant.key: result[mode, variant.key] for variant in VARIANTS}
            t = {key: statistics.median(values) * 1e6 for key, values in blocks.items()}
            for key in ratios:
                ratios[key].append(paired_ratio(blocks[key], blocks["torch"]))
            lines.append(
                f"| {batch} | {n_actions} | {t['torch']:.1f} | {t['ours']:.1f} | {t['ours_int8']:.1f} "
                f"| {t['ours_float']:.1f} | {t['sb3c']:.1f} | {ratios['ours'][-1]:.2f} "
                f"| {ratios['ours_int8'][-1]:.2f} | {ratios['ours_float'][-1]:.2f} "
                f"| {ratios['sb3c'][-1]:.2f} | {paired_ratio(blocks['ours'], blocks['sb3c']):.2f} |"
            )
        if ratios["ours"]:
            lines.append("")
            for key, label in (
                ("ours", "ours"),
                ("ours_int8", "ours int8"),
                ("ours_float", "ours float"),
                ("sb3c", "sb3c"),
            ):
                values = ratios[key]
                geo = math.exp(statistics.fmean(math.log(r) for r in values))
                over = sum(r > TARGET_RATIO for r in values)
                lines.append(
                    f"- {label}/torch: geometric mean {geo:.2f}, max {max(values):.2f}; "
                    f"{over}/{len(values)} shapes above the {TARGET_RATIO}x target"
                )
        lines.append("")
    return "\n".join(lines)


#: defaults for a full run and for ``--quick``; an option given on the command line wins over both
DEFAULTS = {
    "batch_sizes": ([64, 256, 2048], [64, 2048]),
    "n_actions": ([4, 16, 256, 1024, 4096], [16, 256]),
    "repeats": (7, 3),
    "warmup": (3, 2),
    "block_ms": (20.0, 5.0),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default 64 256 2048 (quick: 64 2048)")
    parser.add_argument("--n-actions", type=int, nargs="+", help="default 4 16 256 1024 4096 (quick: 16 256)")
    parser.add_argument("--repeats", type=int, help="timed blocks per case (median reported); default 7 (quick: 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads value; default 1")
    parser.add_argument("--quick", action="store_true", help="small sweep, fewer repeats, shorter blocks")
    parser.add_argument("--warmup", type=int, help="untimed calls per case before timing; default 3 (quick: 2)")
    parser.add_argument("--block-ms", type=float, help="target length of one timed block; default 20 (quick: 5)")
    parser.add_argument(
        "--max-combo-seconds", type=float, default=20.0, help="skip shapes estimated to take longer; default 20"
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=140.0,
        help="wall seconds for the whole sweep; shapes that would not fit are skipped; default 140",
    )
    parser.add_argument("--valid-frac", type=float, default=0.5, help="fraction of valid actions; default 0.5")
    parser.add_argument(
        "--mask-layout",
        choices=["random", "block"],
        default="random",
        help="random: each action valid independently (worst case for branchy kernels); "
        "block: one run of valid actions per row; default random",
    )
    parser.add_argument(
        "--clock",
        choices=["auto", "wall", "cpu"],
        default="auto",
        help="wall: time.perf_counter; cpu: process CPU time (robust to other processes on a busy machine, "
        "only meaningful with 1 thread); auto: cpu with --threads 1, else wall",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--space", choices=list(VARIANTS_BY_SPACE), default="discrete", help="action space; default discrete"
    )
    args = parser.parse_args(argv)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.clock == "auto":
        args.clock = "cpu" if args.threads == 1 else "wall"
    args.clock_name = {"cpu": "process CPU time (time.process_time)", "wall": "wall time (time.perf_counter)"}[
        args.clock
    ]
    args.clock = time.process_time if args.clock == "cpu" else time.perf_counter
    return args


def main(argv: list[str] | None = None) -> None:
    global VARIANTS
    args = parse_args(argv)
    VARIANTS = VARIANTS_BY_SPACE[args.space]
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    command = command_line(__spec__.name, argv)
    print("## MaskedCategorical benchmark: construct + sample + log_prob + entropy + backward")
    print()
    print(f"- command: `{command}`")
    print(
        f"- torch {torch.__version__}, stable-baselines3 {stable_baselines3.__version__}, "
        f"sb3-contrib {sb3_contrib.__version__}, Python {platform.python_version()}, {platform.machine()}"
    )
    print(f"- MaskedCategorical from {maskrl_distributions.__file__}")
    print(f"- torch threads: {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), device: cpu")
    print(f"- torch global default validate_args: {Distribution._validate_args}")
    if args.mask_layout == "random":
        layout = f"each action valid with p={args.valid_frac} independently, plus one forced valid action per row"
    else:
        layout = f"one cyclic run of round({args.valid_frac} * actions) valid actions per row at a random offset"
    print(
        f"- logits float32 N(0, 1); mask ({args.mask_layout}): {layout}; "
        "bool mask for ours/sb3c, int8 0/1 for 'ours int8'"
    )
    print(
        f"- median of {args.repeats} round-robin blocks of ~{args.block_ms:g} ms per case, "
        f"{args.warmup} warm-up calls; times are µs per call of {args.clock_name}"
    )
    print(
        "- ratio columns: median over rounds of the per-round ratio of the two variants' blocks "
        "(times columns: plain medians)"
    )
    print(flush=True)
    start = time.perf_counter()
    results: dict[tuple[int, int], dict[tuple[str, str], list[float]] | str] = {}
    for batch in args.batch_sizes:
        for n_actions in args.n_actions:
            shape_start = time.perf_counter()
            seconds_left = args.time_budget - (shape_start - start)
            results[batch, n_actions] = bench_shape(batch, n_actions, args, generator, seconds_left)
            print(f"  [{batch} x {n_actions}: {time.perf_counter() - shape_start:.1f} s]", file=sys.stderr)
    print(format_tables(results))
    print(f"Total time {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
