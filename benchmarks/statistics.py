"""The statistics the study tables report: interquartile means with stratified bootstrap confidence intervals (rliable).

A few seeds of an RL run spread widely and now and then fail outright; their mean ± std says little. Following
Agarwal et al., *Deep RL at the edge of the statistical precipice* (NeurIPS 2021), whose library ``rliable`` does the
work, a variant's final scores over seeds are summed up by their **interquartile mean** (IQM: the mean of the middle
half, robust to a lost seed yet using half the runs, unlike the median) and its **95% stratified bootstrap confidence
interval** (seeds resampled with replacement; with a single task, the strata are that task). The bootstrap draws from
a generator seeded by ``seed`` for every variant alike, so a table is the same every time it is drawn.

Two variants *separate* when their intervals do not overlap; :func:`iqm_difference` gives the gap between them with
its own interval (each variant's runs resampled on their own, as rliable does for two sets of scores), and :func:`gap`
says it in one line of a study's report.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from rliable import library

#: Bootstrap resamples per interval: the endpoints move by about 0.01 of the spread between two draws of 10,000.
REPS = 10_000
CONFIDENCE = 0.95

Run = TypeVar("Run")


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval.

    :param value: the estimate (an IQM, or a difference of IQMs)
    :param low: the interval's lower end
    :param high: the interval's upper end
    :param runs: the runs (seeds) it is computed from
    """

    value: float
    low: float
    high: float
    runs: int

    def text(self, spec: str = ".2f") -> str:
        """``"1.23 [0.95, 1.50]"``."""
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a point (closed intervals)."""
        return self.low <= other.high and other.low <= self.high

    def excludes_zero(self) -> bool:
        """Whether 0 lies outside the interval (a difference that separates)."""
        return self.low > 0 or self.high < 0


def iqm(scores: Sequence[float]) -> float:
    """The interquartile mean: the mean of the scores once the lowest and highest quarter are cut (``n // 4`` of each
    side, as :func:`scipy.stats.trim_mean` cuts them; rliable's ``aggregate_iqm``)."""
    return aggregate_iqm(_column(scores))


def iqm_intervals(
    scores: Mapping[str, Sequence[float]], reps: int = REPS, confidence: float = CONFIDENCE, seed: int = 0
) -> dict[str, Interval]:
    """Per variant, the IQM of its scores (one per seed) and its stratified bootstrap confidence interval.

    :param scores: the final scores of each variant's runs, one per seed
    :param reps: bootstrap resamples
    :param confidence: the interval's coverage
    :param seed: seeds the bootstrap's generator, afresh for each variant (its interval does not depend on the others)
    :raises ValueError: a variant without scores
    """
    intervals = {}
    for variant, values in scores.items():
        column = _column(values, variant)
        point, interval = _interval_estimates(column, aggregate_iqm, reps, confidence, seed)
        intervals[variant] = Interval(point, *interval, runs=len(column))
    return intervals


def iqm_difference(
    scores: Sequence[float],
    baseline: Sequence[float],
    reps: int = REPS,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """IQM of ``scores`` minus IQM of ``baseline``, with its bootstrap interval: each side's runs resampled on their
    own (rliable's stratified independent bootstrap), so the two may have different numbers of seeds.

    :return: the difference; ``runs`` counts both sides' runs
    :raises ValueError: a side without scores
    """
    ours, theirs = _column(scores, "scores"), _column(baseline, "baseline")

    def difference(x: np.ndarray, y: np.ndarray) -> float:
        return aggregate_iqm(x) - aggregate_iqm(y)

    point, interval = _interval_estimates([ours, theirs], difference, reps, confidence, seed)
    return Interval(point, *interval, runs=len(ours) + len(theirs))


def gap(
    groups: Mapping[str, Sequence[Run]],
    score: Callable[[Run], float],
    name: str,
    variant: str = "masked",
    baseline: str = "unmasked",
    intervals: Mapping[str, Interval] | None = None,
    reps: int = REPS,
) -> str:
    """One line of a report: does ``variant`` separate from ``baseline`` on ``score``? Their IQMs with 95% intervals,
    whether these overlap, and the IQM difference with its own 95% interval and whether that excludes 0::

        final eval return: masked 0.89 [0.65, 1.32], unmasked 0.86 [0.52, 1.32] (IQM [95% CI]; the intervals
        overlap); difference +0.03 [-0.48, +0.59], which includes 0

    :param groups: each variant's runs
    :param score: a run's score (its final return, say)
    :param name: what is compared, the line's start
    :param variant: the variant compared
    :param baseline: the variant it is compared with
    :param intervals: the variants' :func:`iqm_intervals` of ``score`` if a table has drawn them already (each takes
        seconds to draw); drawn here otherwise
    :param reps: bootstrap resamples
    :return: the line; it says so when ``variant`` or ``baseline`` has no runs, or only one (no interval)
    """
    if not groups.get(variant) or not groups.get(baseline):
        return f"{name}: {variant} and {baseline} are not both in the results"
    scores = {key: [score(run) for run in groups[key]] for key in (variant, baseline)}
    if min(len(values) for values in scores.values()) < 2:
        # A bootstrap of one run is that run, with an interval of width 0 that would "separate" from anything.
        values = ", ".join(f"{key} {iqm(scores[key]):.2f} ({len(scores[key])} run(s))" for key in scores)
        return f"{name}: {values}; too few runs for an interval"
    if intervals is None or variant not in intervals or baseline not in intervals:
        intervals = iqm_intervals(scores, reps)
    difference = iqm_difference(scores[variant], scores[baseline], reps)
    overlap = "overlap" if intervals[variant].overlaps(intervals[baseline]) else "do not overlap"
    return (
        f"{name}: {variant} {intervals[variant].text()}, {baseline} {intervals[baseline].text()} (IQM [95% CI]; the "
        f"intervals {overlap}); difference {difference.text('+.2f')}, which "
        f"{'excludes' if difference.excludes_zero() else 'includes'} 0"
    )


def aggregate_iqm(scores: np.ndarray) -> float:
    """The IQM of all the entries of ``scores``: rliable's ``metrics.aggregate_iqm`` (:func:`scipy.stats.trim_mean`
    with a quarter cut at each end, ``size // 4`` entries), the same value, without scipy's per-call checks. The
    bootstrap calls it once per resample: 10,000 calls took 3.3 CPU-seconds with rliable's and 0.13 with this one."""
    ordered = np.sort(scores, axis=None)
    cut = ordered.size // 4
    return float(ordered[cut : ordered.size - cut].mean())


def _column(values: Sequence[float], name: str = "scores") -> np.ndarray:
    """Scores as rliable takes them: runs x tasks, here one task."""
    column = np.asarray(values, dtype=float).reshape(-1, 1)
    if len(column) == 0:
        raise ValueError(f"{name}: no scores")
    return column


def _interval_estimates(
    scores: np.ndarray | list[np.ndarray], aggregate: Callable[..., float], reps: int, confidence: float, seed: int
) -> tuple[float, tuple[float, float]]:
    """``aggregate`` of the scores and its bootstrap interval: rliable's stratified bootstrap of one array of scores,
    its stratified independent bootstrap of a list of them (``aggregate`` then takes one argument per array)."""
    # rliable's stratified bootstrap draws its resamples from NumPy's global generator, whatever ``random_state`` it is
    # given (that one only reaches arch): seed the global generator for the draw, and give it back its state after.
    global_state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            # rliable hands ``random_state`` on to arch, which has deprecated that argument: nothing to do here.
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            points, intervals = library.get_interval_estimates(
                {"scores": scores},
                lambda *runs: np.array([aggregate(*runs)]),
                reps=reps,
                confidence_interval_size=confidence,
                random_state=np.random.RandomState(seed),
            )
    finally:
        np.random.set_state(global_state)
    low, high = intervals["scores"][:, 0]
    return float(points["scores"][0]), (float(low), float(high))
