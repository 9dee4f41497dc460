"""The pure helpers of benchmarks/masking_study.py: steps to threshold, seed means, the summary and its tables."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "masking_study.py"
_SPEC = importlib.util.spec_from_file_location("masking_study", _PATH)
study = importlib.util.module_from_spec(_SPEC)
sys.modules["masking_study"] = study  # ProcessPoolExecutor and dataclasses look modules up by name
_SPEC.loader.exec_module(study)


def test_steps_to_threshold_first_crossing_equality_and_never() -> None:
    steps = [0, 10, 20, 30]
    assert study.steps_to_threshold(steps, [0.0, 1.0, 3.0, 2.0], 2.5) == 20.0
    assert study.steps_to_threshold(steps, [0.0, 2.5, 3.0, 2.0], 2.5) == 10.0  # reaching counts, >=
    assert study.steps_to_threshold(steps, [5.0, 0.0, 0.0, 0.0], 2.5) == 0.0
    assert study.steps_to_threshold(steps, [0.0, 1.0, 2.4, 2.49], 2.5) is None
    assert study.steps_to_threshold([], [], 1.0) is None
    with pytest.raises(ValueError, match="differ in length"):
        study.steps_to_threshold([0, 1], [0.0], 1.0)


def test_mean_curve_averages_seeds_and_cuts_to_the_shortest() -> None:
    a = [{"steps": 0, "return": 1.0}, {"steps": 10, "return": 3.0}, {"steps": 20, "return": 5.0}]
    b = [{"steps": 0, "return": 3.0}, {"steps": 10, "return": 5.0}]
    assert study.mean_curve([a, b], "return") == ([0, 10], [2.0, 4.0])
    assert study.mean_curve([], "return") == ([], [])
    with pytest.raises(ValueError, match="different steps"):
        study.mean_curve([a, [{"steps": 0, "return": 0.0}, {"steps": 15, "return": 0.0}]], "return")


def record(variant: str, seed: int, returns: list[float], size: int = 4, kl: float = 0.01) -> dict:
    return {
        "variant": variant,
        "n_item_types": size,
        "seed": seed,
        "seconds": 60.0,
        "eval": [{"steps": 1000.0 * i, "return": r, "invalid_rate": 0.0} for i, r in enumerate(returns)],
        "rollouts": [{"steps": 1000.0, "invalid_rate": 0.5, "train_return": None}],
        "updates": [{"steps": 1000.0, "approx_kl": kl}, {"steps": 2000.0, "approx_kl": 3 * kl}],
        "final_return": returns[-1],
        "final_invalid_rate": 0.25,
    }


def test_summarise_threshold_is_a_fraction_of_the_best_seed_mean_final_return() -> None:
    results = [
        record("masked", 0, [0.0, 4.0, 5.0]),
        record("masked", 1, [0.0, 2.0, 5.0]),  # seed mean 0, 3, 5: best final 5, threshold 4.5
        record("penalty_0", 0, [0.0, 1.0, 4.4]),  # never reaches 4.5
        record("masked_eval_nomask", 0, [0.0, 0.0, 0.0], kl=float("nan")),
        record("masked", 0, [1.0, 1.0], size=16),  # other sizes have their own best
    ]
    results[3]["updates"] = []
    # Training return: the last 20% of the rollouts (here the last one) of the seeds that have one.
    results[0]["rollouts"] = [{"steps": i, "invalid_rate": 0.5, "train_return": float(i)} for i in range(1, 6)]
    summary = study.summarise(results)
    assert list(summary) == [4, 16]
    masked = summary[4]["masked"]
    assert masked["seeds"] == 2 and masked["final_mean"] == 5.0 and masked["final_std"] == 0.0
    assert masked["threshold"] == pytest.approx(4.5)
    assert masked["steps_to_threshold"] == 2000.0  # the seed mean reaches 4.5 only at the last point
    assert masked["approx_kl"] == pytest.approx(0.02)
    assert masked["train_invalid_rate"] == 0.5 and masked["eval_invalid_rate"] == 0.25
    assert masked["train_return_final"] == 5.0 and summary[4]["penalty_0"]["train_return_final"] is None
    assert summary[4]["penalty_0"]["steps_to_threshold"] is None
    assert summary[4]["masked_eval_nomask"]["approx_kl"] is None
    assert summary[16]["masked"]["threshold"] == pytest.approx(0.9) and summary[16]["masked"]["steps_to_threshold"] == 0


def test_tables_show_never_and_missing_values() -> None:
    results = [record("masked", 0, [0.0, 5.0]), record("penalty_0", 0, [0.0, 1.0])]
    results[1]["updates"] = []
    summary = study.summarise(results)
    paper = study.paper_table(summary)
    assert "| masked | 5.00 ± 0.00 (1k) |" in paper and "| penalty_0 | 1.00 ± 0.00 (never) |" in paper
    long = study.long_table(summary).splitlines()
    assert len(long) == 2 + 2
    assert "never (≥ 4.50)" in long[3] and "| — |" in long[3]
    assert study.format_steps(None) == "never"
    assert study.format_steps(12_345) == "12k" and study.format_steps(512) == "512"


def test_training_curve_averages_a_window_of_rollouts_and_skips_rollouts_without_episodes() -> None:
    rows = [{"steps": 1.0, "train_return": None}, {"steps": 2.0, "train_return": 1.0}]
    rows += [
        {"steps": 3.0, "train_return": None},
        {"steps": 4.0, "train_return": 3.0},
        {"steps": 5.0, "train_return": 5.0},
    ]
    curve = study.training_curve(rows, window=2)
    assert [p["return"] for p in curve] == [None, 1.0, 1.0, 3.0, 4.0]
    other = [{"steps": float(i), "train_return": 2.0} for i in range(1, 6)]
    # Seed mean only where both seeds have a value (with the default window of 3).
    steps, values = study.mean_training_curve([{"rollouts": rows}, {"rollouts": other}])
    assert steps == [2.0, 3.0, 4.0, 5.0] and values == [1.5, 1.5, 2.0, 3.0]
    assert study.mean_training_curve([{"rollouts": []}]) == ([], [])
