"""The pure helpers of the masking studies (benchmarks/common.py): steps to threshold, seed means, the summary and
its tables, the results file of a study; and the PPO masking study's IQM table (benchmarks/masking_study.py)."""

from __future__ import annotations

import functools
import json
import math

import pytest

from benchmarks import common as study
from benchmarks import masking_study
from benchmarks.masking_study import NO_MASK_EVAL, VARIANTS
from benchmarks.statistics import gap, iqm_intervals


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
        # the last evaluation is the final one
        "eval": [
            {"steps": 1000.0 * i, "return": r, "invalid_rate": 0.25 * (i == len(returns) - 1)}
            for i, r in enumerate(returns)
        ],
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
    summary = study.summarise(results, VARIANTS)
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
    summary = study.summarise(results, VARIANTS)
    paper = study.paper_table(summary, VARIANTS)
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


def test_summarise_a_negative_best_is_reached_from_below_and_steps_to_stay_must_hold() -> None:
    runs = [record("masked", 0, [-20.0, -9.0, -12.0, -9.0], size=0), record("no_mask", 0, [-20.0, -30.0], size=0)]
    summary = study.summarise(runs, ["masked", "no_mask"], study.steps_to_stay)[0]
    assert summary["masked"]["threshold"] == pytest.approx(-9.0 / 0.9)
    assert summary["masked"]["steps_to_threshold"] == 3000.0  # -9 at 1000 does not hold: -12 follows
    assert summary["no_mask"]["steps_to_threshold"] is None
    assert "Taxi-v4" in study.paper_table({0: summary}, ["masked", "no_mask"])
    assert "| Taxi | masked |" in study.long_table({0: summary}, with_kl=False)


def test_results_file_keeps_a_list_or_a_dict_with_the_runs_under_a_key(tmp_path) -> None:
    plain, keyed = study.ResultsFile(tmp_path / "a.json"), study.ResultsFile(tmp_path / "b.json", runs_key="runs")
    assert plain.load() == ({}, []) and keyed.load() == ({}, [])
    plain.save({"ignored": 1}, [{"seed": 0}])
    keyed.save({"settings": {"x": 1}}, [{"seed": 0}])
    assert json.loads(plain.path.read_text()) == [{"seed": 0}]
    assert json.loads(keyed.path.read_text()) == {"settings": {"x": 1}, "runs": [{"seed": 0}]}
    assert keyed.load() == ({"settings": {"x": 1}}, [{"seed": 0}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no partial file left behind


def test_run_grid_redoes_the_grid_keeps_other_runs_and_with_resume_skips_done_ones(tmp_path) -> None:
    results = study.ResultsFile(tmp_path / "results.json", runs_key="runs")
    calls = []

    def run(variant: str, seed: int) -> list[dict]:
        calls.append((variant, seed))
        # a masked run also gives the record of its model evaluated without the mask
        extra = [{"variant": NO_MASK_EVAL, "seed": seed, "call": len(calls)}] if variant == "masked" else []
        return [{"variant": variant, "seed": seed, "call": len(calls)}, *extra]

    def job_of(r: dict) -> tuple:
        return ("masked" if r["variant"] == NO_MASK_EVAL else r["variant"], r["seed"])

    def grid(jobs: list[tuple], resume: bool = False) -> list[dict]:
        return study.run_grid(results, {"settings": {}}, jobs, run, job_of, lambda r: r["variant"], resume)

    grid([("masked", 0), ("naive", 0)])
    assert calls == [("masked", 0), ("naive", 0)] and len(results.load()[1]) == 3
    runs = grid([("naive", 0), ("naive", 1)])  # naive 0 is redone, masked 0 and its no-mask record stay
    assert calls[2:] == [("naive", 0), ("naive", 1)]
    assert sorted((r["variant"], r["seed"], r["call"]) for r in runs) == [
        ("masked", 0, 1), (NO_MASK_EVAL, 0, 1), ("naive", 0, 3), ("naive", 1, 4)
    ]  # fmt: skip
    grid([("masked", 0), ("naive", 2)], resume=True)
    assert calls[4:] == [("naive", 2)]
    assert results.load()[0] == {"settings": {}} and len(results.load()[1]) == 5


def test_training_curves_record_rollouts_updates_and_evaluations() -> None:
    from stable_baselines3 import PPO

    from maskrl.agents.env_setup import make_masked_vec_env
    from maskrl.policies import MaskedActorCriticPolicy

    env = make_masked_vec_env("maskrl/ToyMasked-v0", 2, 0)
    model = PPO(MaskedActorCriticPolicy, env, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    curves = study.TrainingCurves(lambda m: {"value": 1.0}, eval_every=40, update_keys=("approx_kl", "missing"))
    model.learn(96, callback=curves)
    assert [row["steps"] for row in curves.rollouts] == [32.0, 64.0, 96.0]
    assert all(row["invalid_rate"] == 0 and row["recent_return"] is not None for row in curves.rollouts)
    # read at the start of the next rollouts and at the end; keys not logged are left out
    assert [sorted(row) for row in curves.updates] == [["approx_kl", "steps"]] * 3
    assert [row["steps"] for row in curves.updates] == [32.0, 64.0, 96.0]
    assert [row["steps"] for row in curves.evals] == [0.0, 40.0, 80.0, 96.0] and curves.eval_seconds > 0
    env.close()


def test_evaluate_counts_the_invalid_actions_of_a_model_without_its_mask() -> None:
    from stable_baselines3 import PPO

    from maskrl.agents.env_setup import make_masked_vec_env
    from maskrl.policies import MaskedActorCriticPolicy

    def env():
        return make_masked_vec_env("maskrl/ToyMasked-v0", 4, 7)

    model = PPO(MaskedActorCriticPolicy, env(), n_steps=16, seed=0, device="cpu")
    masked = study.evaluate(model, env(), 8, deterministic=False)
    unmasked = study.evaluate(model, study.AllActionsValid(env()), 8, deterministic=False)
    assert len(masked["returns"]) == len(masked["lengths"]) == 8
    assert masked["invalid_action_rate"] == 0 < unmasked["invalid_action_rate"]
    assert masked["return_mean"] == pytest.approx(sum(masked["returns"]) / 8)


def test_band_and_save_figure_write_a_small_palette_png(tmp_path) -> None:
    from matplotlib.figure import Figure
    from PIL import Image

    fig = Figure(figsize=(4, 3), dpi=80)
    ax = fig.add_subplot()
    study.band(ax, [([0, 10, 20], [0.0, 1.0, 2.0]), ([5, 15, 25], [1.0, 2.0, 3.0])], "a", smooth=1)
    study.band(ax, [([0], [1.0])], "too short")  # left out
    assert [line.get_label() for line in ax.lines] == ["a"]
    assert tuple(ax.lines[0].get_xdata()[[0, -1]]) == (5.0, 20.0)  # from the latest start to the earliest end
    study.save_figure(fig, tmp_path / "plot.png")
    with Image.open(tmp_path / "plot.png") as image:
        assert image.mode == "P"


# ------------------------------------------------------------------------------------- the PPO study's IQM report
#: few bootstrap resamples: the point estimates do not depend on them, and the tests read only those
REPS = 500


def ppo_run(variant: str, seed: int, final: float, training: float | None, size: int = 4) -> dict:
    """A PPO study record: evaluations ending at ``final``; 10 rollouts whose last 20% (the last 2) average to
    ``training`` (``None``: no rollouts, as a ``masked_eval_nomask`` record)."""
    rollouts = [] if training is None else [0.0] * 8 + [training - 1.0, training + 1.0]
    return {
        "variant": variant,
        "n_item_types": size,
        "seed": seed,
        "seconds": 60.0,
        "cpu_seconds": 30.0,
        "eval": [{"steps": 0, "return": 0.0, "invalid_rate": 0.0}, {"steps": 10, "return": final, "invalid_rate": 0.0}],
        "rollouts": [
            {"steps": 10 * (i + 1), "invalid_rate": 0.0, "train_return": value} for i, value in enumerate(rollouts)
        ],
        "updates": [] if training is None else [{"steps": 10, "approx_kl": 0.01}],
        "final_return": final,
        "final_invalid_rate": 0.0,
    }


def test_final_training_return_is_the_mean_of_the_last_fifth_of_the_rollouts() -> None:
    assert masking_study.final_training_return(ppo_run("masked", 0, 1.0, 2.5)) == pytest.approx(2.5)
    run = ppo_run("masked", 0, 1.0, 2.5)
    run["rollouts"][-1]["train_return"] = None  # no episode ended in the last rollout: the other one of the last 2
    assert masking_study.final_training_return(run) == pytest.approx(1.5)
    assert masking_study.final_eval_return(run) == 1.0
    assert math.isnan(masking_study.final_training_return(ppo_run(NO_MASK_EVAL, 0, 1.0, None)))


@pytest.fixture
def few_resamples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(masking_study, "iqm_intervals", functools.partial(iqm_intervals, reps=REPS))
    monkeypatch.setattr(masking_study, "gap", functools.partial(gap, reps=REPS))


#: per variant, 4 seeds of (final eval return, final training return)
FINALS = {
    # eval: IQM (4 + 4.5) / 2 = 4.25, mean 3.625 ± 1.556; training: IQM (4 + 6) / 2 = 5, mean 5 ± sqrt(5) = 2.236
    "masked": [(4.0, 2.0), (1.0, 8.0), (5.0, 4.0), (4.5, 6.0)],
    # eval: IQM (0.5 + 1) / 2 = 0.75, mean 0.875 ± 0.740; training: 1 everywhere
    "penalty_0": [(0.0, 1.0), (1.0, 1.0), (0.5, 1.0), (2.0, 1.0)],
    # eval: IQM (0.5 + 0.5) / 2 = 0.5, mean 1 ± sqrt(5.5 / 4) = 1.173; no training of its own
    NO_MASK_EVAL: [(0.5, None), (0.0, None), (3.0, None), (0.5, None)],
}


def test_iqm_table_rows_and_a_difference_line_per_baseline_and_measure(few_resamples: None) -> None:
    results = [
        ppo_run(variant, seed, final, training)
        for variant, values in FINALS.items()
        for seed, (final, training) in enumerate(values)
    ]
    results.append(ppo_run("masked", 0, 2.0, 3.0, size=16))  # another size, masked only
    lines = masking_study.iqm_table(results).splitlines()
    assert lines[0] == (
        "| item types | variant | seeds | final eval return: IQM [95% CI] | mean ± std "
        "| final training return: IQM [95% CI] | mean ± std |"
    )
    rows = [line for line in lines[2:] if line.startswith("| ")]
    assert [row.split(" | ")[:3] for row in rows] == [
        ["| 4", "masked", "4"], ["| 4", "penalty_0", "4"], ["| 4", NO_MASK_EVAL, "4"], ["| 16", "masked", "1"]
    ]  # fmt: skip
    cells = [[cell.strip() for cell in row.strip("| ").split(" | ")] for row in rows]
    # each IQM with its interval, then mean ± std; the interval's ends come from the bootstrap
    assert [c[3].split(" [")[0] for c in cells] == ["4.25", "0.75", "0.50", "2.00"]
    assert [c[4] for c in cells] == ["3.62 ± 1.56", "0.88 ± 0.74", "1.00 ± 1.17", "2.00 ± 0.00"]
    assert [c[5].split(" [")[0] for c in cells] == ["5.00", "1.00", "—", "3.00"]
    assert [c[6] for c in cells] == ["5.00 ± 2.24", "1.00 ± 0.00", "—", "3.00 ± 0.00"]
    assert cells[1][5] == "1.00 [1.00, 1.00]"  # equal seeds: nothing to resample

    evaluation = lines[lines.index("Final eval return, masked against each baseline:") + 2 :]
    evaluation = evaluation[: evaluation.index("")]
    training = lines[lines.index("Final training return, masked against each baseline:") + 2 :]
    # every baseline at every size: 6 for the evaluation, 5 for training (masked_eval_nomask trains nothing)
    assert len(evaluation) == 2 * 6 and len(training) == 2 * 5
    assert all(line.startswith("- 4 item types (9 actions): masked ") for line in evaluation[:6] + training[:5])
    assert all(line.startswith("- 16 item types (21 actions): masked ") for line in evaluation[6:] + training[5:])
    assert evaluation[1].startswith("- 4 item types (9 actions): masked 4.25 [")
    assert ", penalty_0 0.75 [" in evaluation[1] and "difference +3.50 [" in evaluation[1]
    assert f", {NO_MASK_EVAL} 0.50 [" in evaluation[5] and "difference +3.75 [" in evaluation[5]
    assert "masked 5.00 [" in training[1] and ", penalty_0 1.00 [1.00, 1.00]" in training[1]
    assert "difference +4.00 [" in training[1]
    missing = [line for line in evaluation + training if line.endswith("are not both in the results")]
    assert len(missing) == 4 + 4 + 6 + 5  # size 4: naive and 3 penalties; size 16: every baseline
    assert "masked and naive are not both in the results" in evaluation[0]
    assert not any(NO_MASK_EVAL in line for line in training)


def test_plot_only_prints_the_iqm_table_and_every_metric(
    few_resamples: None, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [ppo_run(v, s, f, t) for v, values in FINALS.items() for s, (f, t) in enumerate(values)]
    study.ResultsFile(tmp_path / "results.json", runs_key="runs").save({"settings": {}}, runs)
    masking_study.main(["--plot-only", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| 4 | masked | 4 | 4.25 [" in printed and "| 3.62 ± 1.56 |" in printed
    assert "Final eval return, masked against each baseline:" in printed
    assert "| 4 | masked | 4 | 3.62 ± 1.56 |" in printed  # the table of every metric
    assert {p.name for p in tmp_path.iterdir()} >= {"curves.png", "training.png"}
