"""The IQM lines and columns of the study reports (benchmarks/statistics.py's ``gap``, the DQN masking study's table).

The bootstrap draws few resamples here: the point estimates do not depend on them, and the cases are chosen so that
whether the intervals overlap or exclude 0 does not either.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rliable import metrics

from benchmarks import dqn_masking_study, herd_study, panda_visibility_study, pretraining_study
from benchmarks.statistics import Interval, aggregate_iqm, gap, iqm, iqm_intervals

REPS = 500


def runs(scores: list[float]) -> list[dict[str, float]]:
    return [{"score": s} for s in scores]


def score(run: dict[str, float]) -> float:
    return run["score"]


def test_iqm_of_four_runs_is_the_mean_of_the_middle_two() -> None:
    # 4 // 4 = 1 run cut at each end: (2 + 3) / 2.
    assert iqm([10.0, 1.0, 3.0, 2.0]) == pytest.approx(2.5)


@pytest.mark.parametrize("n_runs", [1, 2, 3, 4, 5, 8, 10, 13])
def test_aggregate_iqm_is_rliables(n_runs: int) -> None:
    # The bootstrap's own IQM must give rliable's value (scipy's trim_mean), ties and runs x tasks included.
    rng = np.random.default_rng(n_runs)
    for scores in (rng.normal(size=(n_runs, 1)), rng.integers(0, 3, size=(n_runs, 2)).astype(float)):
        assert aggregate_iqm(scores) == pytest.approx(metrics.aggregate_iqm(scores), abs=1e-12)


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


def test_gap_line_of_a_single_run_gives_no_interval() -> None:
    # One run: its bootstrap interval would be [x, x], which "excludes 0" for any x; the line says there is none.
    line = gap({"masked": runs([4.0]), "unmasked": runs([1.0, 2.0])}, score, "final return", reps=REPS)
    assert line == "final return: masked 4.00 (1 run(s)), unmasked 1.50 (2 run(s)); too few runs for an interval"


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


# ------------------------------------------------------------------------------ masked contrastive study (PandaGrid)
# Each fake run's final return is x; its curve is 1.0 at step 0, then x, x + 1, x + 2 every 10k steps: the mean of its
# last 3 evaluations is x + 1, the mean of all four (3x + 4) / 4. IQM of 5 seeds: the lowest and highest cut, the
# middle 3 averaged.
CONTRASTIVE_FINALS = {"ppo": [9.0, 1.0, 8.0, 7.0, 10.0], "ppo_contrastive": [2.0, 3.0, 4.0, 12.0, -1.0]}


def contrastive_run(variant: str, seed: int, final: float) -> dict[str, Any]:
    aux = {"contrastive_loss": 3.3, "contrastive_accuracy": 0.1 * (1 + seed % 2)} if variant != "ppo" else {}
    return {
        "variant": variant,
        "seed": seed,
        "timesteps": 1000,
        "cpu_seconds": 1.0 if variant == "ppo" else 1.25,
        "evals": [
            {"steps": 10_000.0 * i, "return_mean": value} for i, value in enumerate([1.0, final, final + 1, final + 2])
        ],
        "train": [{"steps": 512.0}, {"steps": 1024.0, **aux}],
        "final_eval_return_mean": final,
        "final_eval_return_std": 0.5,
    }


def contrastive_results() -> list[dict[str, Any]]:
    return [
        contrastive_run(variant, seed, final)
        for variant, finals in CONTRASTIVE_FINALS.items()
        for seed, final in enumerate(finals)
    ]


def test_contrastive_study_table_rows_and_difference_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import contrastive_study

    assert contrastive_study.gap is gap  # the shared line
    monkeypatch.setattr(contrastive_study, "iqm_intervals", functools.partial(iqm_intervals, reps=REPS))
    monkeypatch.setattr(contrastive_study, "gap", functools.partial(gap, reps=REPS))
    lines = contrastive_study.table(contrastive_results()).splitlines()
    assert "| final eval return: IQM [95% CI] | mean ± std | per seed | last 3 evaluations: IQM [95% CI] |" in lines[0]
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in lines[2:4]}
    # ppo: finals sorted 1, 7, 8, 9, 10: IQM (7 + 8 + 9) / 3 = 8, mean 7, std sqrt((4 + 36 + 1 + 0 + 9) / 5) = 3.16;
    # last 3 evaluations x + 1: IQM 9, mean 8 ± 3.16. 1000 steps in 1 CPU-second; no auxiliary task.
    ppo = rows["ppo"].split(" | ")
    assert ppo[1] == "5" and ppo[2].startswith("8.00 [")
    assert ppo[3:5] == ["7.00 ± 3.16", "9.00, 1.00, 8.00, 7.00, 10.00"]
    assert ppo[5].startswith("9.00 [") and ppo[6:] == ["8.00 ± 3.16", "-", "1000 |"]
    # ppo_contrastive: sorted -1, 2, 3, 4, 12: IQM 3, mean 4, std sqrt((4 + 1 + 0 + 64 + 25) / 5) = 4.34; last 3: IQM 4,
    # mean 5 ± 4.34; accuracy mean of 0.1, 0.2, 0.1, 0.2, 0.1 = 0.14; 1000 steps in 1.25 CPU-seconds.
    contrastive = rows["ppo_contrastive"].split(" | ")
    assert contrastive[1] == "5" and contrastive[2].startswith("3.00 [")
    assert contrastive[3:5] == ["4.00 ± 4.34", "2.00, 3.00, 4.00, 12.00, -1.00"]
    assert contrastive[5].startswith("4.00 [") and contrastive[6:] == ["5.00 ± 4.34", "0.14", "800 |"]
    differences = lines[5:]
    assert lines[4] == "" and len(differences) == 3
    # The final line reuses the table's intervals; means of all evaluations: IQMs (3 x 3 + 4) / 4 = 3.25 and
    # (3 x 8 + 4) / 4 = 7.
    assert differences[0].startswith(f"- final eval return: ppo_contrastive {contrastive[2]}, ppo {ppo[2]} (IQM")
    assert "difference -5.00 [" in differences[0]
    assert differences[1].startswith(
        f"- mean eval return over the last 3 evaluations: ppo_contrastive {contrastive[5]}"
    )
    assert f", ppo {ppo[5]} (IQM" in differences[1] and "difference -5.00 [" in differences[1]
    assert differences[2].startswith("- mean of all evaluations (area under the curve): ppo_contrastive 3.25 [")
    assert ", ppo 7.00 [" in differences[2] and "difference -3.75 [" in differences[2]
    # Without contrastive runs, the table says so instead of comparing.
    only_ppo = contrastive_study.table([r for r in contrastive_results() if r["variant"] == "ppo"]).splitlines()
    assert len(only_ppo) == 3 + 1 + 3
    assert only_ppo[-1].endswith("(area under the curve): ppo_contrastive and ppo are not both in the results")


def test_contrastive_study_seed_table() -> None:
    from benchmarks import contrastive_study

    lines = contrastive_study.seed_table(contrastive_results()).splitlines()
    assert lines[0].startswith("| variant | seed | final eval (± std over episodes) | mean of all evaluations |")
    assert len(lines) == 2 + 10
    # ppo seed 0 (x = 9): curve 1, 9, 10, 11, mean 31 / 4 = 7.75, first >= 2 at 10k. ppo seed 1 (x = 1): 1, 1, 2, 3,
    # first >= 2 at 20k. ppo_contrastive seed 4 (x = -1): 1, -1, 0, 1, never >= 2; its accuracy 0.1.
    assert lines[2] == "| ppo | 0 | 9.00 ± 0.50 | 7.75 | 10k | - | - | 1 |"
    assert lines[3] == "| ppo | 1 | 1.00 ± 0.50 | 1.75 | 20k | - | - | 1 |"
    assert lines[-1] == "| ppo_contrastive | 4 | -1.00 ± 0.50 | 0.25 | - | 3.30 | 0.10 | 1 |"


# ---------------------------------------------------------------------- trajectory pretraining study (Kart fine-tuning)


def finetune_run(arm: str, seed: int, training: float, stochastic: float, deterministic: float) -> dict[str, Any]:
    """A pretraining study's fine-tuning record with the given scores (mean training return over the run, stochastic
    and deterministic eval returns); its last training return is ``training`` too."""
    return {
        "arm": arm,
        "seed": seed,
        "curves": [{"steps": 2048, "return": 0.0}, {"steps": 4096, "return": training}],
        "mean_training_return": training,
        "eval_return_stochastic": stochastic,
        "eval_return": deterministic,
        "trainable_parameters": 100,
        "cpu_seconds": 60.0 * (seed + 1),
    }


def test_pretraining_comparisons_are_every_arm_against_scratch_and_the_ablation_extremes() -> None:
    def interval(value: float) -> Interval:
        return Interval(value, value, value, runs=3)

    intervals = {
        "scratch": interval(3.0),
        "all_finetuned": interval(2.0),
        "no_masked_frozen": interval(1.0),
        "all_frozen": interval(5.0),
        "masked_only_frozen": interval(4.0),
    }
    assert pretraining_study.comparisons(list(intervals), intervals) == [
        ("against scratch", "all_finetuned", "scratch"),  # in the order of ARMS
        ("against scratch", "all_frozen", "scratch"),
        ("against scratch", "no_masked_frozen", "scratch"),
        ("against scratch", "masked_only_frozen", "scratch"),
        ("frozen encoders, the best pretrained one against the worst", "all_frozen", "no_masked_frozen"),
        ("frozen encoders, the best pretrained one against a random one", "all_frozen", "random_frozen"),
    ]
    # A single frozen encoder: no best-against-worst line.
    assert pretraining_study.comparisons(["scratch", "all_frozen"], intervals) == [
        ("against scratch", "all_frozen", "scratch"),
        ("frozen encoders, the best pretrained one against a random one", "all_frozen", "random_frozen"),
    ]


def test_pretraining_finetune_table_has_iqm_columns_and_a_line_per_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretraining_study, "iqm_intervals", functools.partial(iqm_intervals, reps=REPS))
    monkeypatch.setattr(pretraining_study, "gap", functools.partial(gap, reps=REPS))
    # (mean training return over the run, eval stochastic, eval deterministic) of 4 seeds per arm.
    scores = {
        "scratch": ([0, 3, 1, 2], [4, 4, 4, 4], [1, 2, 3, 6]),
        "random_frozen": ([1, 1, 1, 1], [4, 4, 4, 4], [4, 4, 4, 4]),
        "all_finetuned": ([13, 10, 12, 11], [4, 4, 4, 4], [10, 1, 2, 3]),
        "all_frozen": ([1, 0, 2, 9], [4, 4, 4, 4], [4, 4, 4, 4]),
        "masked_only_frozen": ([2, 2, 2, 2], [4, 4, 4, 4], [4, 4, 4, 4]),
    }
    records = [
        finetune_run(arm, seed, *(float(measure[seed]) for measure in measures))
        for arm, measures in scores.items()
        for seed in range(4)
    ]
    report = pretraining_study.finetune_table(records)
    lines = report.splitlines()
    assert lines[0] == (
        "| arm | seeds | mean training return over the run: IQM [95% CI] | mean ± std | eval return, stochastic: IQM "
        "[95% CI] | mean ± std | eval return, deterministic: IQM [95% CI] | mean ± std | last training return "
        "| trainable params | CPU minutes per run |"
    )
    # all_finetuned: training IQM (11 + 12) / 2 = 11.5 = its mean, std sqrt((1.5² + 1.5² + 0.5² + 0.5²) / 4) = 1.12;
    # deterministic IQM (2 + 3) / 2 = 2.5, mean 4, std sqrt((6² + 3² + 2² + 1²) / 4) = 3.54. CPU minutes: 1 to 4.
    row = next(line for line in lines if line.startswith("| all_finetuned | 4 | 11.50 ["))
    assert row.endswith("| 11.50 ± 1.12 | 100 | 2.50 |")  # the last training return is the training score
    assert "] | 11.50 ± 1.12 | 4.00 [4.00, 4.00] | 4.00 ± 0.00 | 2.50 [" in row
    assert "] | 4.00 ± 3.54 | 11.50 ± 1.12 |" in row
    # scratch's deterministic scores: IQM (2 + 3) / 2 = 2.5, mean 3, std sqrt((2² + 1² + 0² + 3²) / 4) = 1.87.
    scratch = next(line for line in lines if line.startswith("| scratch | 4 | 1.50 ["))
    assert "] | 3.00 ± 1.87 |" in scratch
    assert not any(line.startswith("| mlp_obs |") for line in lines)  # no runs, no row
    # Per measure: 4 arms against scratch, the best frozen encoder against the worst and against random_frozen.
    comparisons = [line for line in lines if line.startswith("- ")]
    assert len(comparisons) == 3 * 6
    assert "Mean training return over the run, IQM differences (arm - baseline):" in lines
    assert "Eval return, deterministic, IQM differences (arm - baseline):" in lines
    # Every resample of all_finetuned's training scores lies in [10, 13] and of scratch's in [0, 3]: they separate.
    finetuned = next(line for line in comparisons if line.startswith("- against scratch: all_finetuned 11.50 ["))
    assert ", scratch 1.50 [" in finetuned and "the intervals do not overlap" in finetuned
    assert "difference +10.00 [" in finetuned and finetuned.endswith("which excludes 0")
    # Training: masked_only_frozen (IQM 2) is the best frozen encoder, all_frozen (IQM (1 + 2) / 2 = 1.5) the worst.
    assert (
        "- frozen encoders, the best pretrained one against a random one: masked_only_frozen 2.00 [2.00, 2.00], "
        "random_frozen 1.00 [1.00, 1.00] (IQM [95% CI]; the intervals do not overlap); "
        "difference +1.00 [+1.00, +1.00], which excludes 0"
    ) in comparisons
    worst = next(line for line in comparisons if line.startswith("- frozen encoders, the best pretrained one against"))
    assert worst.startswith("- frozen encoders, the best pretrained one against the worst: masked_only_frozen 2.00 [")
    assert ", all_frozen 1.50 [" in worst and "difference +0.50 [" in worst
    # Stochastic: the same 4.0 everywhere, so every difference is exactly 0.
    stochastic = comparisons[6:12]
    assert all("difference +0.00 [+0.00, +0.00], which includes 0" in line for line in stochastic)


# ------------------------------------------------------------------------------------ panda herd study (PettingZoo)


# Final eval team returns of 5 seeds; IQM of 5: the lowest and highest cut, the middle 3 averaged. gridnet: IQM
# (5 + 6 + 7) / 3 = 6, mean 27 / 5 = 5.4, std sqrt((0.6² + 0.4² + 1.6² + 4.4² + 2.6²) / 5) = sqrt(5.84) = 2.42;
# gridnet_nomask: IQM (-2 - 1 + 0) / 3 = -1, mean -5.5 / 5 = -1.1, std sqrt(8.2 / 5) = 1.28; shared: IQM = mean = 16,
# std sqrt(10 / 5) = 1.41. Every resample of gridnet lies in [1, 8], of gridnet_nomask in [-3, 0.5], of shared in
# [14, 18]: their intervals cannot overlap, nor the differences' include 0.
HERD_FINALS = {
    "gridnet": [6.0, 5.0, 7.0, 1.0, 8.0],
    "gridnet_nomask": [-1.0, 0.0, -2.0, 0.5, -3.0],
    "shared": [16.0, 15.0, 17.0, 18.0, 14.0],
}
# Per variant, the approx_kl and clip fraction of a run's two updates (means 0.005 and 0.04 for gridnet, ...), and the
# seconds per run.
HERD_UPDATES = {
    "gridnet": ([0.004, 0.006], [0.03, 0.05], 120.0),
    "gridnet_nomask": ([0.006, 0.008], [0.05, 0.07], 90.0),
    "shared": ([0.003, 0.003], [0.02, 0.02], 30.0),
}


def herd_run(variant: str, seed: int, final: float) -> dict[str, Any]:
    """A herd study record: two updates, the last training return 2 + seed."""
    kls, clips, seconds = HERD_UPDATES[variant]
    return {
        "variant": variant,
        "seed": seed,
        "herd_steps": 2048,
        "seconds": seconds,
        "curves": [
            {"steps": 1024.0 * (i + 1), "return": float(i * (2 + seed)), "approx_kl": kl, "clip_fraction": clip}
            for i, (kl, clip) in enumerate(zip(kls, clips, strict=True))
        ],
        "eval_team_return": final,
    }


def herd_results(variants: tuple[str, ...] = herd_study.VARIANTS) -> list[dict[str, Any]]:
    return [herd_run(v, seed, value) for v in variants for seed, value in enumerate(HERD_FINALS[v])]


@pytest.fixture
def few_resamples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(herd_study, "iqm_intervals", functools.partial(iqm_intervals, reps=REPS))
    monkeypatch.setattr(herd_study, "gap", functools.partial(gap, reps=REPS))


@pytest.mark.usefixtures("few_resamples")
def test_herd_study_table_has_iqm_columns_and_a_line_per_comparison() -> None:
    lines = herd_study.table(herd_results()).splitlines()
    assert lines[0] == (
        "| variant | seeds | eval team return: IQM [95% CI] | mean ± std | approx_kl (mean over updates) "
        "| clip fraction (mean over updates) | minutes per run |"
    )
    gridnet = next(line for line in lines if line.startswith("| gridnet | 5 | 6.00 ["))
    assert gridnet.endswith("] | 5.40 ± 2.42 | 0.0050 | 0.040 | 2.0 |")
    nomask = next(line for line in lines if line.startswith("| gridnet_nomask | 5 | -1.00 ["))
    assert nomask.endswith("] | -1.10 ± 1.28 | 0.0070 | 0.060 | 1.5 |")
    shared = next(line for line in lines if line.startswith("| shared | 5 | 16.00 ["))
    assert shared.endswith("] | 16.00 ± 1.41 | 0.0030 | 0.020 | 0.5 |")
    comparisons = [line for line in lines if line.startswith("- ")]
    assert len(comparisons) == len(herd_study.COMPARISONS) == 4
    mask, decentralised, kl, clip = comparisons
    assert mask.startswith("- final eval team return: gridnet 6.00 [")
    assert ", gridnet_nomask -1.00 [" in mask and "the intervals do not overlap" in mask
    assert "difference +7.00 [" in mask and mask.endswith("which excludes 0")
    assert decentralised.startswith("- final eval team return: shared 16.00 [")
    assert ", gridnet 6.00 [" in decentralised and "the intervals do not overlap" in decentralised
    assert "difference +10.00 [" in decentralised and decentralised.endswith("which excludes 0")
    # Every run of a variant has the same approx_kl and clip fraction: the intervals are points.
    assert kl == (
        "- mean approx_kl x 1000: gridnet_nomask 7.00 [7.00, 7.00], gridnet 5.00 [5.00, 5.00] (IQM [95% CI]; the "
        "intervals do not overlap); difference +2.00 [+2.00, +2.00], which excludes 0"
    )
    assert clip == (
        "- mean clip fraction (%): gridnet_nomask 6.00 [6.00, 6.00], gridnet 4.00 [4.00, 4.00] (IQM [95% CI]; the "
        "intervals do not overlap); difference +2.00 [+2.00, +2.00], which excludes 0"
    )


@pytest.mark.usefixtures("few_resamples")
def test_herd_study_table_without_a_variant_says_so() -> None:
    lines = herd_study.table(herd_results(("gridnet", "gridnet_nomask"))).splitlines()
    assert not any(line.startswith("| shared |") for line in lines)  # no runs, no row
    assert "- final eval team return: shared and gridnet are not both in the results" in lines
    assert sum(line.startswith("- ") and "not both" not in line for line in lines) == 3


def test_herd_study_seeds_table_has_a_row_per_run() -> None:
    lines = herd_study.seeds_table(herd_results()).splitlines()
    assert len(lines) == 2 + 15
    assert lines[2] == "| gridnet | 0 | 6.00 | 0.0050 | 0.040 | 2.00 |"
    assert lines[6] == "| gridnet | 4 | 8.00 | 0.0050 | 0.040 | 6.00 |"  # last training return 2 + seed
    assert lines[-1] == "| shared | 4 | 14.00 | 0.0030 | 0.020 | 6.00 |"


@pytest.mark.usefixtures("few_resamples")
def test_herd_study_plot_only_prints_both_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results.json").write_text(json.dumps(herd_results()))
    herd_study.main(["--plot-only", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert herd_study.table(herd_results()) in printed
    assert herd_study.seeds_table(herd_results()) in printed
    assert (tmp_path / "curves.png").stat().st_size > 0
