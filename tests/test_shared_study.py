"""Studies as shared units of work (benchmarks/common.py's runner on an Optuna storage) and their statistics.

No RL here: the jobs are trivial functions. The embedded storage (the study's journal in its OUT folder) is tested
without any server; the workers sharing one study, with a real PostgreSQL server started for the session
(:mod:`postgres_server`; skipped only when its programs are not installed). For the latter this file is also the
worker: ``python tests/test_shared_study.py URL STUDY OUT LOG SECONDS`` runs the grid of :data:`JOBS`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.common import (
    ResultsFile,
    StudyError,
    StudyParser,
    command_line,
    run_grid,
    study_runs,
)
from benchmarks.statistics import Interval, iqm, iqm_difference, iqm_intervals
from maskrl.agents.tuning import PID_NAMESPACE

pytestmark = pytest.mark.filterwarnings(
    "ignore::optuna.exceptions.ExperimentalWarning", "ignore:Heartbeat of storage:UserWarning"
)

REPO = Path(__file__).resolve().parents[1]
Job = tuple[str, int]
#: The grid the worker processes share: 2 variants x 4 seeds.
JOBS = [(variant, seed) for seed in range(4) for variant in ("a", "b")]


# --- the embedded storage ---------------------------------------------------------------------------------------------


class Jobs:
    """A trivial study: records each call; ``fail`` lists the jobs that raise."""

    def __init__(self, fail: tuple[tuple[str, int], ...] = ()):
        self.calls: list[tuple[str, int]] = []
        self.fail = set(fail)

    def __call__(self, variant: str, seed: int) -> dict[str, Any]:
        self.calls.append((variant, seed))
        if (variant, seed) in self.fail:
            raise ValueError(f"no {variant} for seed {seed}")
        return {"variant": variant, "seed": seed, "score": seed + (variant == "b"), "call": len(self.calls)}


def parser_for(out: Path) -> StudyParser:
    return StudyParser(
        "A trivial study.", ["a", "b"], ["a", "b"], seeds=(0, 1), timesteps=10, eval_episodes=1, out=out, quick={}
    )


def study(jobs: Jobs, out: Path, *flags: str) -> list[dict[str, Any]]:
    parser = parser_for(out)
    args = parser.parse_args(["--out", str(out), *flags])
    return study_runs(parser, args, "python -m trivial", jobs, lambda r: f"{r['variant']} {r['seed']}")


def cells(folder: Path, name: str | None = None) -> list[optuna.trial.FrozenTrial]:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(folder / "study.log")))
    return optuna.load_study(study_name=name or folder.name, storage=storage).trials


def test_every_cell_runs_exactly_once_and_the_runs_are_exported(tmp_path: Path) -> None:
    out = tmp_path / "study"
    jobs = Jobs()
    runs = study(jobs, out, "--seeds", "0", "1", "2")
    assert sorted(jobs.calls) == sorted((v, s) for v in "ab" for s in range(3))
    assert len(jobs.calls) == 6
    assert json.loads((out / "results.json").read_text()) == runs
    assert sorted((r["variant"], r["seed"]) for r in runs) == sorted(jobs.calls)
    stored = cells(out)
    assert [cell.state for cell in stored] == [TrialState.COMPLETE] * 6
    assert all(cell.user_attrs["records"] == [run] for cell, run in zip(stored, runs, strict=True))
    # --plot-only reads the exported file and runs nothing.
    assert study(jobs, out, "--plot-only") == runs and len(jobs.calls) == 6


def test_continue_skips_the_cells_done_and_without_it_the_grid_runs_again(tmp_path: Path) -> None:
    out = tmp_path / "study"
    jobs = Jobs()
    study(jobs, out)
    assert len(jobs.calls) == 4
    runs = study(jobs, out, "--continue", "--seeds", "0", "1", "2")
    assert sorted(jobs.calls[4:]) == [("a", 2), ("b", 2)]
    assert len(runs) == 6
    # Without --continue the grid's runs are done again and replace theirs; the runs of other jobs stay.
    runs = study(jobs, out, "--seeds", "0")
    assert sorted(jobs.calls[6:]) == [("a", 0), ("b", 0)]
    assert sorted((r["variant"], r["seed"]) for r in runs) == sorted((v, s) for v in "ab" for s in range(3))
    assert {r["call"] for r in runs if r["seed"] == 0} == {7, 8}
    assert json.loads((out / "results.json").read_text()) == runs


def test_a_failed_cell_is_recorded_the_others_go_on_and_continue_runs_it_again(tmp_path: Path, capsys) -> None:
    out = tmp_path / "study"
    jobs = Jobs(fail=(("a", 0),))
    runs = study(jobs, out)
    assert len(jobs.calls) == 4  # the failure stopped nothing
    assert sorted((r["variant"], r["seed"]) for r in runs) == [("a", 1), ("b", 0), ("b", 1)]
    (failed,) = [cell for cell in cells(out) if cell.state == TrialState.FAIL]
    assert failed.user_attrs["job"] == ["a", 0]
    assert failed.user_attrs["fail_reason"] == "ValueError: no a for seed 0"
    assert "failed: a 0: ValueError: no a for seed 0" in capsys.readouterr().out
    jobs.fail.clear()
    runs = study(jobs, out, "--continue")
    assert jobs.calls[4:] == [("a", 0)]
    assert len(runs) == 4


def test_a_record_that_is_not_json_fails_its_cell_and_ctrl_c_queues_the_cell_again(tmp_path: Path) -> None:
    out = tmp_path / "study"

    def run(variant: str, seed: int) -> dict[str, Any]:
        if variant == "b":
            return {"variant": variant, "seed": np.int64(seed)}  # not JSON data
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        study(run, out, "--seeds", "0")  # type: ignore[arg-type]
    queue = [(c.user_attrs["job"], c.state.name) for c in cells(out)]
    assert queue == [(["a", 0], "FAIL"), (["b", 0], "WAITING"), (["a", 0], "WAITING")]
    assert cells(out)[0].user_attrs["fail_reason"] == "interrupted"
    runs = study(Jobs(), out, "--seeds", "0", "--continue")  # the waiting cells run: b, 0 and a, 0 again
    assert sorted((r["variant"], r["seed"]) for r in runs) == [("a", 0), ("b", 0)]
    calls = {"n": 0}

    def numpy_run(variant: str, seed: int) -> dict[str, Any]:
        calls["n"] += 1
        return {"variant": variant, "seed": np.int64(seed)}

    assert study(numpy_run, out, "--seeds", "1") == runs  # type: ignore[arg-type]
    assert calls["n"] == 2
    failed = [c for c in cells(out) if c.state == TrialState.FAIL and c.user_attrs["job"][1] == 1]
    reason = "TypeError: Object of type int64 is not JSON serializable"
    assert [c.user_attrs["fail_reason"] for c in failed] == [reason, reason]


def test_the_runs_of_a_results_file_from_before_the_storage_count_as_done(tmp_path: Path) -> None:
    out = tmp_path / "study"
    old = [{"variant": "a", "seed": 0, "score": 5.0}, {"variant": "b", "seed": 0, "score": 6.0}]
    ResultsFile(out / "results.json").save({}, old)
    jobs = Jobs()
    runs = study(jobs, out, "--continue")
    assert sorted(jobs.calls) == [("a", 1), ("b", 1)]
    assert runs[:2] == old and len(runs) == 4


def test_a_dead_workers_cell_is_run_again_by_the_next_worker(tmp_path: Path) -> None:
    out = tmp_path / "study"
    results = ResultsFile(out / "results.json")
    jobs = Jobs()
    run_grid(results, {}, [("a", 0)], jobs, lambda r: (r["variant"], r["seed"]), str, resume=True)
    # A worker of this machine took cell ("b", 0) and died (its pid is gone) before it ended.
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    shared = optuna.load_study(study_name="study", storage=JournalStorage(JournalFileBackend(str(out / "study.log"))))
    shared.enqueue_trial({}, user_attrs={"job": ["b", 0]})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cell = shared.ask()
    cell.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")
    cell.set_user_attr("pid_namespace", PID_NAMESPACE)
    runs = run_grid(results, {}, [("a", 0), ("b", 0)], jobs, lambda r: (r["variant"], r["seed"]), str, resume=True)
    assert jobs.calls == [("a", 0), ("b", 0)]
    assert sorted((r["variant"], r["seed"]) for r in runs) == [("a", 0), ("b", 0)]
    states = [(c.user_attrs["job"], c.state.name, c.system_attrs.get("failed_trial")) for c in cells(out)]
    assert states == [(["a", 0], "COMPLETE", None), (["b", 0], "FAIL", None), (["b", 0], "COMPLETE", 1)]


def test_a_shared_study_never_runs_a_done_cell_again_and_refuses_other_settings(tmp_path: Path) -> None:
    storage = tmp_path / "shared.log"  # a journal file given as --storage: a shared study, as a database's
    jobs = Jobs()
    study(jobs, tmp_path / "one", "--storage", str(storage), "--study-name", "s")
    study(jobs, tmp_path / "two", "--storage", str(storage), "--study-name", "s", "--seeds", "1", "2")
    assert sorted(jobs.calls) == sorted((v, s) for v in "ab" for s in range(3))  # no --continue needed
    assert len(json.loads((tmp_path / "two" / "results.json").read_text())) == 6
    with pytest.raises(SystemExit):
        study(jobs, tmp_path / "three", "--storage", str(storage), "--study-name", "s", "--timesteps", "20")
    parser = parser_for(tmp_path)
    args = parser.parse_args(["--timesteps", "20"])
    with pytest.raises(StudyError, match=r"runs with timesteps=10, and this command asks for timesteps=20"):
        run_grid(ResultsFile(tmp_path / "r.json"), {}, [], Jobs(), tuple, str, storage=str(storage),
                 study_name="s", settings=parser.settings(args))  # fmt: skip


def test_the_command_line_hides_a_storage_password() -> None:
    argv = ["--storage", "postgresql://me:s3cret@host/db", "--seeds", "1"]
    assert (
        command_line("benchmarks.x", argv) == "python -m benchmarks.x --storage 'postgresql://me:***@host/db' --seeds 1"
    )
    assert "s3cret" not in command_line("benchmarks.x", ["--storage=postgresql://me:s3cret@host/db"])


# --- statistics -------------------------------------------------------------------------------------------------------


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    assert iqm(range(1, 9)) == 4.5  # mean of 3, 4, 5, 6
    assert iqm([1, 2, 3, 4, 5, 6, 7, 1000]) == 4.5  # an outlier seed changes nothing
    assert iqm(range(1, 11)) == 5.5  # 10 runs: 2 cut at each end, mean of 3..8
    assert iqm([2, 1, 4, 3]) == 2.5  # 1 cut at each end, mean of 2 and 3
    assert iqm([7.0]) == 7.0


def test_iqm_intervals_are_exact_on_small_cases_contain_the_iqm_and_are_reproducible() -> None:
    intervals = iqm_intervals({"two": [0.0, 1.0], "one": [3.0], "flat": [2.0] * 5}, reps=1000)
    # Two runs (nothing cut): resamples {0, 0}, {0, 1}, {1, 1} with chances 1/4, 1/2, 1/4: the 95% interval is [0, 1].
    assert intervals["two"] == Interval(0.5, 0.0, 1.0, runs=2)
    assert intervals["one"] == Interval(3.0, 3.0, 3.0, runs=1)
    assert intervals["flat"] == Interval(2.0, 2.0, 2.0, runs=5)
    scores = [0.3, -0.6, 1.8, 1.3, 0.8, 2.4, 0.7, 1.1, -0.2, 1.6]
    first = iqm_intervals({"v": scores}, reps=1000)["v"]
    assert first.value == pytest.approx(iqm(scores))
    assert min(scores) <= first.low < first.value < first.high <= max(scores)
    # Seeded: the same interval every time, whatever else is in the table; NumPy's global generator is left alone.
    np.random.seed(1)
    expected = np.random.rand()
    np.random.seed(1)
    assert iqm_intervals({"w": [9.0], "v": scores}, reps=1000)["v"] == first
    assert np.random.rand() == expected
    assert first.text() == f"{first.value:.2f} [{first.low:.2f}, {first.high:.2f}]"
    with pytest.raises(ValueError, match="no scores"):
        iqm_intervals({"empty": []})


def test_iqm_difference_resamples_each_side_and_is_exact_on_small_cases() -> None:
    assert iqm_difference([3.0] * 4, [1.0] * 6, reps=500) == Interval(2.0, 2.0, 2.0, runs=10)
    # IQM([0, 1]) resamples to 0, 0.5 or 1 (chances 1/4, 1/2, 1/4); the baseline's one run is always 0.
    assert iqm_difference([0.0, 1.0], [0.0], reps=1000) == Interval(0.5, 0.0, 1.0, runs=3)
    gap = iqm_difference([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0], reps=1000)
    assert gap.value == 2.5 and gap.low <= 2.5 <= gap.high and gap.excludes_zero()
    assert not Interval(0.0, -1.0, 1.0, 3).excludes_zero()
    assert Interval(0, 0, 1, 2).overlaps(Interval(0, 1, 2, 2))
    assert not Interval(0, 0, 1, 2).overlaps(Interval(0, 2, 3, 2))
    with pytest.raises(ValueError, match="baseline: no scores"):
        iqm_difference([1.0, 2.0], [])


# --- workers sharing a study on a real PostgreSQL server --------------------------------------------------------------


def start_worker(url: str, study_name: str, out: Path, log: Path, seconds: float) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, url, study_name, str(out), str(log), str(seconds)]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)


def events(log: Path, pid: int | None = None) -> Counter[tuple[str, Job]]:
    """``(start|end, job)`` -> how many times the workers (or the worker ``pid``) logged it."""
    lines = [line.split(",") for line in (log.read_text().split() if log.exists() else [])]
    return Counter((e, (variant, int(seed))) for e, variant, seed, by in lines if pid is None or int(by) == pid)


def load(url: str, study_name: str) -> optuna.Study:
    return optuna.load_study(study_name=study_name, storage=url)


def finish(workers: list[subprocess.Popen[str]]) -> list[str]:
    outputs = []
    try:
        for worker in workers:
            output, _ = worker.communicate(timeout=120)
            outputs.append(output)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    return outputs


def test_two_workers_share_one_study_and_run_every_cell_once(postgres_url: str, tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    workers = [start_worker(postgres_url, "shared", tmp_path / f"w{i}", log, 1.0) for i in range(2)]
    outputs = finish(workers)
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    counts = events(log)
    assert counts == Counter({(event, job): 1 for job in JOBS for event in ("start", "end")})
    # Both took cells, and both exported the whole study once the cells were done.
    assert {line.rsplit(",", 1)[1] for line in log.read_text().split()} == {str(w.pid) for w in workers}
    for i in range(2):
        runs = json.loads((tmp_path / f"w{i}" / "results.json").read_text())
        assert sorted((r["variant"], r["seed"]) for r in runs) == sorted(JOBS)
    stored = load(postgres_url, "shared").trials
    assert len(stored) == len(JOBS) and all(cell.state == TrialState.COMPLETE for cell in stored)


def test_a_worker_killed_mid_cell_has_its_cell_run_again_by_the_other(postgres_url: str, tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    workers = [start_worker(postgres_url, "killed", tmp_path / f"w{i}", log, 1.5) for i in range(2)]
    victim, survivor = workers
    try:
        killed_job = kill_mid_cell(victim, postgres_url, "killed", log)
    except BaseException:
        finish(workers)
        raise
    (output,) = finish([survivor])
    assert survivor.returncode == 0, output
    counts = events(log)
    for job in JOBS:
        assert counts["end", job] == 1, (job, counts)  # every cell ended once: none was lost, none done twice
        assert counts["start", job] == (2 if job == killed_job else 1)
    stored = load(postgres_url, "killed").trials
    killed = [c for c in stored if c.state == TrialState.FAIL]
    assert [tuple(c.user_attrs["job"]) for c in killed] == [killed_job]
    assert killed[0].user_attrs["worker"].endswith(f":{victim.pid}")
    (retry,) = [c for c in stored if c.system_attrs.get("failed_trial") == killed[0].number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["worker"].endswith(f":{survivor.pid}")
    assert sorted(tuple(c.user_attrs["job"]) for c in stored if c.state == TrialState.COMPLETE) == sorted(JOBS)
    assert "died; queued again" in output
    runs = json.loads((tmp_path / "w1" / "results.json").read_text())
    assert sorted((r["variant"], r["seed"]) for r in runs) == sorted(JOBS)


def kill_mid_cell(worker: subprocess.Popen[str], url: str, study_name: str, log: Path, timeout: float = 60) -> Job:
    """SIGKILL ``worker`` in the middle of a cell; return the cell's job.

    The worker is stopped (SIGSTOP) first and looked at while it cannot change: killed if its cell is RUNNING, started
    and not ended (so not between the end of its job and the study's record of it); else it goes on (SIGCONT).
    """
    storage = optuna.storages.RDBStorage(url)  # one connection pool for the whole watch
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker ended before it could be killed"
        time.sleep(0.2)
        if study_name not in optuna.get_all_study_names(storage):
            continue
        os.kill(worker.pid, signal.SIGSTOP)
        running = optuna.load_study(study_name=study_name, storage=storage).get_trials(states=(TrialState.RUNNING,))
        mine = [
            tuple(c.user_attrs["job"]) for c in running if c.user_attrs.get("worker", "").endswith(f":{worker.pid}")
        ]
        done = events(log, worker.pid)
        if mine and done["start", mine[0]] == 1 and done["end", mine[0]] == 0:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
            return mine[0]
        os.kill(worker.pid, signal.SIGCONT)
    raise AssertionError("the worker never ran a cell")


def worker_main(url: str, study_name: str, out: str, log: str, seconds: str) -> None:
    """One worker: the grid of :data:`JOBS`, each cell logging its start and end and sleeping ``seconds``."""

    def run(variant: str, seed: int) -> dict[str, Any]:
        with open(log, "a") as file:
            file.write(f"start,{variant},{seed},{os.getpid()}\n")
        time.sleep(float(seconds))
        with open(log, "a") as file:
            file.write(f"end,{variant},{seed},{os.getpid()}\n")
        return {"variant": variant, "seed": seed, "pid": os.getpid()}

    results = ResultsFile(Path(out) / "results.json")
    describe = lambda r: f"{r['variant']} {r['seed']}"  # noqa: E731
    run_grid(results, {}, JOBS, run, lambda r: (r["variant"], r["seed"]), describe, storage=url,
             study_name=study_name, settings={"seconds": seconds}, heartbeat_interval=1)  # fmt: skip


if __name__ == "__main__":
    worker_main(*sys.argv[1:])
