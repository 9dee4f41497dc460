"""The IQM lines and columns of the study reports (benchmarks/statistics.py's ``gap``, the DQN masking study's table).

The bootstrap draws few resamples here: the point estimates do not depend on them, and the cases are chosen so that
whether the intervals overlap or exclude 0 does not either.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np
import pytest

from benchmarks import dqn_masking_study, panda_visibility_study
from benchmarks.statistics import gap, iqm, iqm_intervals

REPS = 500


def runs(scores: list[float]) -> list[dict[str, float]]:
    return [{"score": s} for s in scores]


def score(run: dict[str, float]) -> float:
    return run["score"]


def test_iqm_of_four_runs_is_the_mean_of_the_middle_two() -> None:
    # 4 // 4 = 1 run cut at each end: (2 + 3) / 2.
    assert iqm([10.0, 1.0, 3.0, 2.0]) == pytest.approx(2.5)


def test_gap_line_when_the_variants_separate() -> None:
    # IQMs by hand: (11 + 12) / 2 = 11.5 and (1 + 2) / 2 = 1.5. Every resample of the first lies in [10, 13] and every
    # resample of the second in [0, 3]: the intervals cannot overlap, and the difference stays above 7.
    groups = {"masked": runs([13, 10, 12, 11]), "unmasked": runs([0, 3, 1, 2])}
    line = gap(groups, score, "final return", reps=REPS)
    assert line.startswith("final return: masked 11.50 [")
    assert ", unmasked 1.50 [" in line
    assert "the intervals do not overlap" in line
    assert "difference +10.00 [" in line
    assert line.endswith("which excludes 0")
    low, high = map(float, re.search(r"difference \+10\.00 \[([-+.\d]+), ([-+.\d]+)\]", line).groups())
    assert 7 <= low <= 10 <= high <= 13


def test_gap_line_when_they_do_not() -> None:
    # The same runs on both sides: the IQMs and their intervals are equal, the difference is 0.
    groups = {"masked": runs([0, 1, 2, 3]), "unmasked": runs([3, 2, 1, 0])}
    line = gap(groups, score, "final return", reps=REPS)
    assert "masked 1.50 [" in line and "unmasked 1.50 [" in line
    assert "the intervals overlap" in line
    assert "difference +0.00 [" in line and line.endswith("which includes 0")


def test_gap_takes_intervals_drawn_already_and_names_missing_variants() -> None:
    groups = {"masked": runs([13, 10, 12, 11]), "penalty": runs([0, 3, 1, 2])}
    drawn = iqm_intervals({v: [score(r) for r in rs] for v, rs in groups.items()}, reps=REPS)
    assert gap(groups, score, "x", "masked", "penalty", drawn, reps=REPS) == gap(
        groups, score, "x", "masked", "penalty", reps=REPS
    )
    assert gap(groups, score, "x", "masked", "unmasked") == "x: masked and unmasked are not both in the results"
    assert gap({**groups, "unmasked": []}, score, "x") == "x: masked and unmasked are not both in the results"


def test_panda_study_uses_the_shared_gap() -> None:
    assert panda_visibility_study.gap is gap


def kart_run(variant: str, seed: int, final: float, training: list[float | None]) -> dict[str, Any]:
    """A DQN study record: evaluations ending at ``final``, one training window per ``training`` value."""
    return {
        "variant": variant,
        "n_item_types": 4,
        "seed": seed,
        "eval": [{"steps": 0, "return": 0.0, "invalid_rate": 0.0}, {"steps": 10, "return": final, "invalid_rate": 0.0}],
        "rollouts": [
            {"steps": 10 * (i + 1), "invalid_rate": 0.0, "train_return": value} for i, value in enumerate(training)
        ],
    }


def test_final_training_return_is_the_mean_of_the_last_fifth_of_the_windows() -> None:
    run = kart_run("masked", 0, 1.0, [0.0] * 8 + [1.0, 3.0])
    assert dqn_masking_study.final_training_return(run) == pytest.approx(2.0)
    run = kart_run("masked", 0, 1.0, [0.0] * 9 + [None])  # no episode ended in the last window
    assert dqn_masking_study.final_training_return(run) == pytest.approx(0.0)
    assert np.isnan(dqn_masking_study.final_training_return(kart_run("masked", 0, 1.0, [None] * 5)))


def test_dqn_study_table_has_iqm_columns_and_a_line_per_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dqn_masking_study, "iqm_intervals", functools.partial(iqm_intervals, reps=REPS))
    monkeypatch.setattr(dqn_masking_study, "gap", functools.partial(gap, reps=REPS))
    finals = {"masked": [4.0, 1.0, 5.0, 4.5], "penalty_0": [0.0, 1.0, 0.5, 2.0]}
    results = [
        kart_run(variant, seed, value, [value] * 5)
        for variant, values in finals.items()
        for seed, value in enumerate(values)
    ]
    report = dqn_masking_study.iqm_table(results, list(dqn_masking_study.VARIANTS))
    lines = report.splitlines()
    assert "| final eval return: IQM [95% CI] | mean ± std |" in lines[0]
    # masked: IQM (4 + 4.5) / 2 = 4.25, mean 3.625; penalty_0: IQM (0.5 + 1) / 2 = 0.75, mean 0.875.
    masked = next(line for line in lines if line.startswith("| 4 | masked | 4 | 4.25 ["))
    assert masked.count("| 3.62 ± 1.56 |") == 2  # training return = final return here
    assert any(line.startswith("| 4 | penalty_0 | 4 | 0.75 [") for line in lines)
    assert not any("penalty_-0.1 |" in line for line in lines)  # no runs, no row
    comparisons = [line for line in lines if line.startswith("- 4 item types (9 actions): ")]
    assert len(comparisons) == 4  # 2 baselines x 2 measures
    assert sum("masked 4.25 [" in line and "penalty_0 0.75 [" in line for line in comparisons) == 2
    assert sum("difference +3.50 [" in line for line in comparisons) == 2
    assert sum("masked and penalty_-0.1 are not both in the results" in line for line in comparisons) == 2
