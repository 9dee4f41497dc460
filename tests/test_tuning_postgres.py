"""Tuning with many workers: worker processes sharing one study on a real PostgreSQL server the tests start.

The server is Debian's ``postgresql`` package (``.ci/run`` installs it), started in a temporary folder for the session
(:mod:`postgres_server`). The tests are skipped only when its programs are not installed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from maskrl.agents.tuning import WORKER, _on_stale_trial, _open_storage

# Both on purpose here: Optuna's heartbeat API is experimental, and its heartbeats are run outside Study.optimize.
pytestmark = pytest.mark.filterwarnings(
    "ignore::optuna.exceptions.ExperimentalWarning", "ignore:Heartbeat of storage:UserWarning"
)

WORKER_SCRIPT = Path(__file__).with_name("tuning_worker.py")
MAX_TOTAL_TRIALS = 6


def start_worker(url: str, study: str, log_folder: Path) -> subprocess.Popen[str]:
    command = [sys.executable, str(WORKER_SCRIPT), "--algo", "ppo", "--env", "maskrl/ToyMasked-v0", "-n", "512"]
    command += ["--log-folder", str(log_folder), "--eval-episodes", "3", "-optimize", "--storage", url]
    command += ["--study-name", study, "--max-total-trials", str(MAX_TOTAL_TRIALS), "--sampler", "random"]
    command += ["--n-evaluations", "2", "--heartbeat-interval", "1"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)


#: The line a worker prints when one of its trials ends: ``trial 3: COMPLETE return +8.000 (1.2 s, worker host:pid)``.
TRIAL_LINE = re.compile(r"^trial (\d+): (?:COMPLETE|PRUNED|FAIL) .*\(\S+ s, worker (\S+)\)$", re.MULTILINE)


def trials_run_by(output: str) -> list[int]:
    """The numbers of the trials a worker's output says it ran to their end."""
    return [int(number) for number, _ in TRIAL_LINE.findall(output)]


def running_trial_of(study: optuna.Study, pid: int) -> optuna.trial.FrozenTrial | None:
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if str(trial.user_attrs.get("worker", "")).endswith(f":{pid}"):
            return trial
    return None


def kill_mid_trial(worker: subprocess.Popen[str], url: str, study_name: str, timeout: float = 120) -> int:
    """SIGKILL ``worker`` while it runs a trial; return that trial's number.

    The worker is stopped (SIGSTOP) first and its trial looked at while it cannot change: RUNNING means killed
    mid-trial; else (between two trials) it goes on (SIGCONT) and is caught at its next one.
    """
    storage = optuna.storages.RDBStorage(url)  # one connection pool for the whole watch: polling stays cheap
    deadline = time.monotonic() + timeout
    study = None
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker ended before it could be killed"
        time.sleep(0.1)
        if study is None:
            if study_name not in optuna.get_all_study_names(storage):
                continue
            study = optuna.load_study(study_name=study_name, storage=storage)
        if running_trial_of(study, worker.pid) is None:
            continue
        os.kill(worker.pid, signal.SIGSTOP)
        trial = running_trial_of(study, worker.pid)
        if trial is not None:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
            return trial.number
        os.kill(worker.pid, signal.SIGCONT)
    raise AssertionError("the worker never ran a trial")


def test_workers_share_one_study_and_survive_a_killed_one(postgres_url: str, tmp_path: Path) -> None:
    study_name = "three-workers"
    # A password (the server trusts its socket and ignores it) that no file or output may show.
    url = postgres_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    workers = [start_worker(url, study_name, tmp_path / f"worker{i}") for i in range(3)]
    try:
        killed_trial = kill_mid_trial(workers[0], postgres_url, study_name)
        killed_at = time.monotonic()
        outputs = [workers[0].stdout.read()]
        for worker in workers[1:]:
            output, _ = worker.communicate(timeout=300)
            outputs.append(output)
            assert worker.returncode == 0, output
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    # Exactly --max-total-trials trials, numbered 0..N-1: the killed trial keeps its one place, nothing was added.
    assert sorted(trials) == list(range(MAX_TOTAL_TRIALS))
    # No trial ran twice: each was run to its end by one worker, and the killed one by none.
    ran = [number for output in outputs for number in trials_run_by(output)]
    assert len(ran) == len(set(ran))
    assert sorted([*ran, killed_trial]) == list(range(MAX_TOTAL_TRIALS))
    pids = {worker.pid for worker in workers}
    for trial in trials.values():
        assert int(trial.user_attrs["worker"].rsplit(":", 1)[1]) in pids
    for output, worker in zip(outputs, workers, strict=True):
        for number in trials_run_by(output):
            assert trials[number].user_attrs["worker"].endswith(f":{worker.pid}")
    # The others went on after the kill: the trials created after the killed one were run by them.
    assert any(number > killed_trial for number in ran)
    # The killed trial is FAIL (its worker found dead by the others: a pid of this host) or still RUNNING (no one
    # looked since); after the heartbeat's grace period (2 s), Optuna's stale-trial check fails it for good.
    states = {number: trial.state for number, trial in trials.items()}
    assert states.pop(killed_trial) in (TrialState.RUNNING, TrialState.FAIL)
    assert set(states.values()) <= {TrialState.COMPLETE, TrialState.PRUNED}
    time.sleep(max(0.0, killed_at + 3 - time.monotonic()))
    storage = _open_storage(postgres_url, None, 1, _on_stale_trial)
    optuna.storages.fail_stale_trials(optuna.load_study(study_name=study_name, storage=storage.storage))
    after = {t.number: t.state for t in optuna.load_study(study_name=study_name, storage=postgres_url).trials}
    assert len(after) == MAX_TOTAL_TRIALS
    assert after[killed_trial] == TrialState.FAIL
    # Each surviving worker wrote the study's report and best hyperparameters in its own tuning folder.
    for i in (1, 2):
        (folder,) = (tmp_path / f"worker{i}" / "tuning" / "ppo").iterdir()
        assert (folder / "best_hyperparams.yml").is_file()
        report = (folder / "report.md").read_text()
        assert f"{MAX_TOTAL_TRIALS} trials" in report
        assert "postgresql://postgres:***@" in report
        assert "s3cret" not in report + (folder / "tuning.yml").read_text() + outputs[i]


def test_a_trial_whose_worker_stops_beating_is_failed_once_its_grace_period_is_over(postgres_url: str) -> None:
    # A worker on another machine (a host name that is not this one, so only the heartbeat can tell) dies mid-trial.
    storage = _open_storage(postgres_url, None, 1, _on_stale_trial)
    study = optuna.create_study(study_name="heartbeat", storage=storage.storage, direction="maximize")
    trial = study.ask()
    trial.set_user_attr("worker", "another-machine:12345")
    assert storage.heartbeat is not None
    storage.heartbeat.record_heartbeat(trial._trial_id)
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state == TrialState.RUNNING  # within its grace period (2 heartbeat intervals)
    time.sleep(3)
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.trials] == [TrialState.FAIL]  # failed, not retried: no trial added
    assert WORKER not in study.trials[0].user_attrs["worker"]
