"""What the benchmark scripts share: the study runner, training curves, evaluation, plots, tables and timing.

Every script is a thin layer over this module: its variants, its env, its ``run`` and its tables. Run them from the
repository root as modules, e.g. ``python -m benchmarks.masking_study --quick``.

- **Studies** (``*_study.py``) train a grid of runs (variant x seed, and whatever else the study varies) with
  :func:`study_runs`. Each run is a cell of an Optuna study (:func:`run_grid`), kept in the study's journal,
  ``OUT/study.log``, with no server: a worker process takes the next waiting cell, runs it with one torch thread and
  stores its record in the study; a run that raises is recorded as failed and the others go on. After each run the
  study's runs are exported to ``OUT/results.json``, so a stopped study loses one run at most; ``--continue`` does not
  run again the cells done (without it, the grid's runs are done again). ``--plot-only`` redraws the plots and tables
  from ``results.json``, ``--quick`` is a smoke run. While a model learns, :class:`TrainingCurves` records its
  curves; :func:`evaluate` plays the trained model. :mod:`benchmarks.statistics` gives the tables interquartile means
  over seeds with 95% stratified bootstrap intervals.
- **Many workers.** With ``--storage postgresql://user:password@host/db`` (``pip install -e ".[postgres]"``) the
  study lives in that database, and the same command started N times, on one machine or many, is N workers::

      python -m benchmarks.panda_visibility_study --seeds 0 1 2 3 4 5 6 7 8 9 \
          --storage postgresql://user:password@host/db --study-name panda-visibility   # on each machine

  The first worker queues the cells (while it holds the study's lock, so each cell is queued once); every worker
  takes the next waiting one, so no cell runs twice. A worker that dies leaves its cell to Optuna's heartbeat: silent
  for two minutes, the cell is failed and queued again (:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`)
  for another worker. A shared study never runs a finished cell again, and refuses a worker whose settings (budget,
  episodes, ...) differ from the first one's. Each worker writes the whole study's ``results.json``, plots and tables
  in its own ``OUT`` when no cell is left; ``--study-name`` defaults to the ``OUT`` folder's name.
  ``optuna-dashboard <storage>`` shows the cells (trials) as they run.
- **Plots** are seed means ± one standard deviation (:func:`band`), saved as small palette PNGs
  (:func:`save_figure`; the docs keep every picture under 150 KB).
- **Speed benchmarks** (``bench_*.py``) time their cases round-robin, so that machine noise hits every case
  alike: whole ``learn()`` calls (:func:`time_learn_calls`, with the per-part timing hooks of :func:`build`) or
  blocks of single calls (:func:`time_blocks`).
"""

from __future__ import annotations

import argparse
import functools
import gc
import io
import json
import shlex
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import optuna
import sqlalchemy
import torch
from gymnasium import spaces
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from optuna.samplers import RandomSampler
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from PIL import Image
from sqlalchemy.exc import ArgumentError
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper

from maskrl.agents.env_setup import make_masked_env, make_masked_vec_env
from maskrl.agents.evaluation import EpisodeCollector, play_episodes
from maskrl.agents.tuning import (
    PID_NAMESPACE,
    WORKER,
    ClaimLock,
    Heartbeat,
    Storage,
    TuningError,
    fail_dead_workers,
    open_storage,
    quiet_optuna,
)
from maskrl.masks import ACTION_MASK_KEY

Record = dict[str, Any]
Job = tuple[Any, ...]


# ---------------------------------------------------------------------------------------------- the study runner
#: Seconds between the heartbeats of a running cell on a database storage: a cell silent for twice that long lost its
#: worker and is queued again.
HEARTBEAT_INTERVAL = 60
#: How many times a cell whose worker died is queued again; after that it stays FAIL.
MAX_RETRIES = 3
#: Seconds between two looks at the study while a worker waits for the other workers' last cells.
POLL_SECONDS = 2.0
#: The study user attribute that holds the settings every worker of a shared study must agree on.
SETTINGS_ATTR = "maskrl_study_settings"
#: The runner's own flags: they may differ between the workers of one study (the others may not).
RUNNER_FLAGS = frozenset({"out", "resume", "plot_only", "quick", "storage", "study_name", "seeds", "variants"})


class StudyError(ValueError):
    """A study that cannot run as asked (its storage, or a shared study of other settings). One line."""


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The command that runs ``module`` with ``argv`` (default: this process's arguments), for the record: printed,
    and written into results files, so a ``--storage`` URL's password is hidden."""
    words = list(sys.argv[1:] if argv is None else argv)
    for index, word in enumerate(words):
        if word.startswith("--storage="):
            words[index] = "--storage=" + _hide_password(word.removeprefix("--storage="))
        elif index > 0 and words[index - 1] == "--storage":
            words[index] = _hide_password(word)
    return shlex.join(["python", "-m", module, *words])


def _hide_password(storage: str) -> str:
    if "://" not in storage:
        return storage
    try:
        return sqlalchemy.engine.make_url(storage).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL: open_storage will say so
        return storage


class StudyParser(argparse.ArgumentParser):
    """The options every study has; :meth:`parse_args` applies the settings of ``--quick``.

    ``--variants``, ``--seeds``, ``--timesteps``, ``--eval-episodes``, ``--out``, ``--continue`` (``args.resume``),
    ``--plot-only``, ``--quick``, ``--storage`` and ``--study-name``; the script adds its own.

    :param doc: the script's docstring (its first line is the description)
    :param variants: the choices of ``--variants``
    :param default_variants: its default (``None``: the script decides after parsing)
    :param quick: the options ``--quick`` sets, e.g. ``{"seeds": [0], "timesteps": 4096}``
    :param plot_only_aliases: older names of ``--plot-only`` the script keeps accepting
    :param variants_flags: the names of ``--variants`` (``args.variants`` whatever they are)
    """

    def __init__(
        self,
        doc: str,
        variants: Sequence[str],
        default_variants: Sequence[str] | None,
        seeds: Sequence[int],
        timesteps: int,
        eval_episodes: int,
        out: Path,
        quick: dict[str, Any],
        plot_only_aliases: Sequence[str] = (),
        variants_flags: Sequence[str] = ("--variants",),
        timesteps_help: str = "env steps per run",
    ) -> None:
        super().__init__(description=doc.splitlines()[0])
        self.quick = dict(quick)
        default = None if default_variants is None else list(default_variants)
        self.add_argument(*variants_flags, dest="variants", nargs="+", default=default, choices=list(variants))
        self.add_argument("--seeds", nargs="+", type=int, default=list(seeds))
        self.add_argument("--timesteps", type=int, default=timesteps, help=timesteps_help)
        self.add_argument("--eval-episodes", type=int, default=eval_episodes, help="episodes per evaluation")
        self.add_argument("--out", type=Path, default=out, help="where results.json and the plots go")
        self.add_argument(
            "--continue", dest="resume", action="store_true", help="do not run again the runs the study has done"
        )
        self.add_argument(
            "--plot-only",
            *plot_only_aliases,
            dest="plot_only",
            action="store_true",
            help="train nothing: redraw the plots and tables from OUT/results.json",
        )
        settings = ", ".join(f"{name.replace('_', '-')} {value}" for name, value in self.quick.items())
        self.add_argument("--quick", action="store_true", help=f"smoke run ({settings})")
        self.add_argument(
            "--storage",
            help="where the study's runs are queued and kept: a database URL (postgresql://user:password@host/db): "
            "the same command started N times, on any machines, is N workers of one study; or a journal file "
            "(default: OUT/study.log)",
        )
        self.add_argument("--study-name", help="the study's name in the storage (default: the OUT folder's name)")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed = super().parse_args(args, namespace)
        if parsed.quick:
            for name, value in self.quick.items():
                setattr(parsed, name, value)
        return parsed

    def settings(self, args: argparse.Namespace) -> dict[str, Any]:
        """The options that make the runs what they are: every option of the parser but the runner's own
        (:data:`RUNNER_FLAGS`) and the paths (each machine has its own)."""
        names = {action.dest for action in self._actions} - RUNNER_FLAGS - {"help"}
        return {
            name: value for name, value in sorted(vars(args).items()) if name in names and not isinstance(value, Path)
        }


def study_runs(
    parser: StudyParser,
    args: argparse.Namespace,
    command: str,
    run: Callable[..., Record | list[Record]],
    describe: Callable[[Record], str],
    results: ResultsFile | None = None,
    header: dict[str, Any] | None = None,
    jobs: Sequence[Job] | None = None,
    job_of: Callable[[Record], Job] | None = None,
) -> list[Record]:
    """The runs a study reports. With ``--plot-only`` those of its results file (a usage error if there are none);
    else print ``command`` and :func:`run_grid` the jobs in the study of ``--storage`` and ``--study-name``.

    :param command: the command line (:func:`command_line`)
    :param run: ``run(*job)`` trains and evaluates one job; its record(s) must be JSON data
    :param describe: one line on a finished run, from its first record
    :param results: default ``OUT/results.json``, a list of runs
    :param header: what the results file holds besides the runs (``results.runs_key``)
    :param jobs: default every variant x seed, seed by seed, ``job_of`` then ``(record["variant"], record["seed"])``
    :param job_of: the job a record comes from
    """
    results = results or ResultsFile(args.out / "results.json")
    if args.plot_only:
        _, runs = results.load()
        if not runs:
            parser.error(f"no results in {results.path}")
        return runs
    print(f"command: `{command}`", flush=True)
    if jobs is None:
        jobs = [(variant, seed) for seed in args.seeds for variant in args.variants]
    try:
        return run_grid(
            results,
            header or {},
            jobs,
            run,
            job_of or _variant_and_seed,
            describe,
            args.resume,
            storage=args.storage,
            study_name=args.study_name,
            settings=parser.settings(args),
        )
    except StudyError as error:
        parser.error(str(error))


def _variant_and_seed(record: Record) -> Job:
    return record["variant"], record["seed"]


@dataclass(frozen=True)
class ResultsFile:
    """A study's ``results.json``: its runs, a list at the top level or, with ``runs_key``, under that key of a dict
    whose other keys (the header) describe the study.

    :param path: the file
    :param runs_key: the key of the runs in the dict; ``None``: the file is the list of runs
    """

    path: Path
    runs_key: str | None = None

    def load(self) -> tuple[dict[str, Any], list[Record]]:
        """The header and the runs (``{}, []`` when there is no file yet)."""
        if not self.path.is_file():
            return {}, []
        data = json.loads(self.path.read_text())
        if self.runs_key is None:
            return {}, data
        return {key: value for key, value in data.items() if key != self.runs_key}, data[self.runs_key]

    def save(self, header: dict[str, Any], runs: list[Record]) -> None:
        """Write the header and the runs (through a temporary file, so a stopped write leaves the old file)."""
        data: Any = runs if self.runs_key is None else {**header, self.runs_key: runs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(data, indent=1) + "\n")
        partial.replace(self.path)


def run_grid(
    results: ResultsFile,
    header: dict[str, Any],
    jobs: Sequence[Job],
    run: Callable[..., Record | list[Record]],
    job_of: Callable[[Record], Job],
    describe: Callable[[Record], str],
    resume: bool = False,
    storage: str | None = None,
    study_name: str | None = None,
    settings: dict[str, Any] | None = None,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
) -> list[Record]:
    """Run the jobs as the cells of an Optuna study, with whatever other workers share it; return the study's runs.

    Each job is a cell: a trial of the study, queued (WAITING) with the job in its user attribute ``job``. This
    process is a worker: it takes the next waiting cell (``ask``), runs ``run(*job)`` with one torch thread, stores
    the run's records in the cell (user attribute ``records``) and ends it (``tell``: COMPLETE, or FAIL with the
    error in ``fail_reason``, and the other cells go on). When no cell waits, it waits for the cells other workers
    run, then writes the study's runs to ``results`` (after each of its own cells too) and returns them: for each
    job, the records of its latest finished cell, if that one is complete.

    A job is queued while holding the study's lock (shared by every worker), only when it has no waiting or running
    cell, and when it has a complete one only to run it again. With the study's own journal (``storage`` ``None``:
    ``study.log`` next to ``results``) the grid is run again unless ``resume``, as a study was before it had a
    storage; the runs of other jobs stay. A study in ``storage`` is shared: the jobs done are never run again, and
    every worker must give the same ``settings`` (the first one records them).

    A worker that dies leaves its cell RUNNING until it is found: at once on its own machine (its pid is gone), and
    on a database by Optuna's heartbeat (beating every ``heartbeat_interval`` seconds; silent for twice that, the cell
    is failed by :func:`optuna.storages.fail_stale_trials`). Either way the cell is queued again by
    :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`, at most :data:`MAX_RETRIES` times. A Ctrl-C ends the
    cell as FAIL ("interrupted") and queues it again.

    :param results: where the runs are written, with ``header``; the runs already in it join a new study's journal
    :param job_of: the job a record comes from (a run may give several records)
    :param describe: one line on a finished run, from its first record
    :param study_name: default the name of ``results``' folder
    :param settings: what every worker of a shared study must agree on (:meth:`StudyParser.settings`)
    :return: the study's runs, those of other jobs included
    :raises StudyError: a storage that cannot be opened, or a shared study of other settings
    """
    folder = results.path.parent
    folder.mkdir(parents=True, exist_ok=True)
    name = study_name or folder.resolve().name
    shared = storage is not None
    with quiet_optuna(1):
        try:
            opened = open_storage(storage, folder, heartbeat_interval, _queue_again)
        except TuningError as error:
            raise StudyError(str(error)) from None
        study = optuna.create_study(
            storage=opened.storage, study_name=name, load_if_exists=True, sampler=RandomSampler(seed=0)
        )
        lock = ClaimLock(opened, name)
        try:
            with lock.hold():  # one worker at a time queues jobs, so that none is queued twice
                _recover(study, opened)
                if not shared and not study.get_trials(deepcopy=False):
                    _take_in(study, results, job_of)
                if shared and settings is not None:
                    _check_settings(study, _plain(settings), opened.shown)
                queued, done = _queue(study, jobs, again=not (resume or shared))
            print(
                f"study {name} in {opened.shown}: {len(set(map(_job_key, jobs)))} jobs, {done} done already, "
                f"{queued} queued now; worker {WORKER}",
                flush=True,
            )
            torch.set_num_threads(1)
            _work(study, opened, lock, run, describe, [_job_key(job) for job in jobs], results, header)
        finally:
            lock.close()
        runs, failed = _study_runs(study)
    results.save(header, runs)
    for cell in failed:
        print(f"failed: {_job_text(cell.user_attrs['job'])}: {_fail_reason(cell)}", flush=True)
    return runs


def _plain(value: Any) -> Any:
    """``value`` as JSON holds it (tuples become lists): what a storage gives back."""
    return json.loads(json.dumps(value))


def _job_key(job: Sequence[Any]) -> str:
    return json.dumps(_plain(list(job)))


def _job_text(job: Sequence[Any]) -> str:
    return " ".join(str(part) for part in job)


def _fail_reason(cell: FrozenTrial) -> str:
    return cell.user_attrs.get("fail_reason", "its worker stopped")


def _queue_again(study: optuna.Study, cell: FrozenTrial) -> None:
    """A cell whose worker died (no heartbeat, or its pid gone) is FAIL: queue it again, up to the retries, with
    Optuna's own retry (a WAITING copy of the cell: the same user attributes, so the same job)."""
    job, worker = _job_text(cell.user_attrs.get("job", [])), cell.user_attrs.get("worker", "its worker")
    if len(RetryHeartbeatStaleTrialCallback.retry_history(cell)) >= MAX_RETRIES:
        print(f"cell {cell.number} ({job}): {worker} died; run {MAX_RETRIES + 1} times, it stays FAIL", flush=True)
        return
    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, cell)
    print(f"cell {cell.number} ({job}): {worker} died; queued again", flush=True)


def _recover(study: optuna.Study, opened: Storage) -> None:
    """Fail the cells of dead workers and queue them again: this machine's by their pid, any by their heartbeat."""
    fail_dead_workers(study, _queue_again)
    if opened.heartbeat is not None:
        optuna.storages.fail_stale_trials(study)  # calls _queue_again, the storage's stale-trial callback


def _take_in(study: optuna.Study, results: ResultsFile, job_of: Callable[[Record], Job]) -> None:
    """A new study's journal starts with the runs of ``results`` (written before studies had a storage), as complete
    cells: ``--continue`` skips them, as it did."""
    jobs: dict[str, list[Record]] = {}
    for record in results.load()[1]:
        jobs.setdefault(_job_key(job_of(record)), []).append(record)
    for key, records in jobs.items():
        cell = optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            value=float(records[0].get("seconds", 0.0)),
            user_attrs={"job": json.loads(key), "records": _plain(records), "taken_from": str(results.path)},
        )
        study.add_trial(cell)
    if jobs:
        print(f"{len(jobs)} runs of {results.path} taken into the study", flush=True)


def _check_settings(study: optuna.Study, settings: dict[str, Any], shown: str) -> None:
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, settings)
        return
    differing = sorted(key for key in {*stored, *settings} if stored.get(key) != settings.get(key))
    if differing:
        theirs = ", ".join(f"{key}={stored.get(key)!r}" for key in differing)
        ours = ", ".join(f"{key}={settings.get(key)!r}" for key in differing)
        raise StudyError(
            f"study {study.study_name} in {shown} runs with {theirs}, and this command asks for {ours}: give another "
            "--study-name, or the study's settings"
        )


@dataclass
class _Job:
    """What a study holds of one job: its latest finished cell and whether a cell of it waits or runs."""

    last: FrozenTrial | None = None
    pending: bool = False


def _jobs(study: optuna.Study) -> dict[str, _Job]:
    jobs: dict[str, _Job] = {}
    for cell in study.get_trials(deepcopy=False):  # in the order of their numbers
        job = jobs.setdefault(_job_key(cell.user_attrs.get("job", [])), _Job())
        if cell.state in (TrialState.WAITING, TrialState.RUNNING):
            job.pending = True
        elif cell.state in (TrialState.COMPLETE, TrialState.FAIL):
            job.last = cell
    return jobs


def _done(job: _Job | None) -> bool:
    return job is not None and job.last is not None and job.last.state == TrialState.COMPLETE


def _queue(study: optuna.Study, jobs: Sequence[Job], again: bool) -> tuple[int, int]:
    """Queue the jobs that have no waiting or running cell, and no complete one unless ``again``; hold the lock.

    :return: the jobs queued, and the jobs that were done
    """
    held = _jobs(study)
    queued = done = 0
    for key in dict.fromkeys(map(_job_key, jobs)):
        job = held.get(key)
        done += _done(job)
        if job is not None and (job.pending or (_done(job) and not again)):
            continue
        study.enqueue_trial({}, user_attrs={"job": json.loads(key)})
        queued += 1
    return queued, done


def _on_this_host(cell: FrozenTrial) -> bool:
    return str(cell.user_attrs.get("worker", "")).rpartition(":")[0] == socket.gethostname()


def _work(
    study: optuna.Study,
    opened: Storage,
    lock: ClaimLock,
    run: Callable[..., Record | list[Record]],
    describe: Callable[[Record], str],
    grid: Sequence[str],
    results: ResultsFile,
    header: dict[str, Any],
) -> None:
    """Run the study's waiting cells one after the other, then wait for those of other workers to end."""
    waiting_said = False
    while True:
        with lock.hold():
            _recover(study, opened)
            cell = None
            if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                cell = study.ask()  # the oldest waiting cell: under the lock, no other worker takes it meanwhile
                cell.set_user_attr("worker", WORKER)
                cell.set_user_attr("pid_namespace", PID_NAMESPACE)
                heartbeat = Heartbeat(opened.heartbeat, cell)
                heartbeat.start()  # before the lock goes: no cell is RUNNING without a heartbeat
            else:
                # Without heartbeats (a journal), a dead worker is only seen on its own machine: the cells of other
                # machines are not waited for.
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                others = [c for c in running if opened.heartbeat is not None or _on_this_host(c)]
                if not others:
                    if running:
                        print(f"{len(running)} cells run on other machines: not waited for", flush=True)
                    return
        if cell is None:
            if not waiting_said:
                print(f"waiting for {len(others)} cells of other workers", flush=True)
                waiting_said = True
            time.sleep(POLL_SECONDS)
            continue
        waiting_said = False
        try:
            records = _run_cell(study, cell, heartbeat, run)
        except KeyboardInterrupt:
            with lock.hold():  # queued again, for the other workers or the next start, unless queued meanwhile
                _queue(study, [tuple(cell.user_attrs["job"])], again=False)
            raise
        runs, _ = _study_runs(study)
        results.save(header, runs)
        if records:
            jobs = _jobs(study)
            done = sum(_done(jobs.get(key)) for key in dict.fromkeys(grid))
            print(f"[{done}/{len(set(grid))}] {describe(records[0])}", flush=True)


def _run_cell(
    study: optuna.Study, cell: optuna.Trial, heartbeat: Heartbeat, run: Callable[..., Record | list[Record]]
) -> list[Record] | None:
    """Run one cell and end it; its records, or ``None`` when it failed. A Ctrl-C ends it as FAIL and goes on."""
    job = cell.user_attrs["job"]
    started = time.perf_counter()
    try:
        records = run(*job)
        # As the storage keeps them: a record that is not JSON data fails its cell here, not the worker later.
        records = _plain(records if isinstance(records, list) else [records])
    except KeyboardInterrupt:
        heartbeat.stop()
        _end(study, cell, None, "interrupted")
        raise
    except Exception as error:  # the cell's failure: recorded, and the other cells go on
        heartbeat.stop()
        traceback.print_exc()
        text = str(error).strip()
        reason = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
        _end(study, cell, None, reason)
        print(f"cell {cell.number} ({_job_text(job)}): FAIL {reason}", flush=True)
        return None
    heartbeat.stop()
    return records if _end(study, cell, records, time.perf_counter() - started) else None


def _end(study: optuna.Study, cell: optuna.Trial, records: list[Record] | None, outcome: float | str) -> bool:
    """Tell the study how the cell ended: COMPLETE with its records (and its seconds as its value), or FAIL with
    ``outcome`` as its reason. ``False`` if the other workers gave it up meanwhile (no heartbeat: it was retried)."""
    try:
        if records is None:
            cell.set_user_attr("fail_reason", outcome)
            study.tell(cell, state=TrialState.FAIL)
        else:
            cell.set_user_attr("records", records)
            study.tell(cell, outcome)
    except RuntimeError:  # UpdateFinishedTrialError, or tell's own "has already finished"
        print(f"cell {cell.number}: given up by the other workers while it ran; its retry stands", flush=True)
        return False
    return True


def _study_runs(study: optuna.Study) -> tuple[list[Record], list[FrozenTrial]]:
    """The records of each job whose latest finished cell is complete, in the order of their cells; the failed
    jobs' cells."""
    jobs = sorted((job.last for job in _jobs(study).values() if job.last is not None), key=lambda cell: cell.number)
    runs = [record for cell in jobs if cell.state == TrialState.COMPLETE for record in cell.user_attrs["records"]]
    return runs, [cell for cell in jobs if cell.state == TrialState.FAIL]


def learn(model: BaseAlgorithm, timesteps: int, callback: BaseCallback | None = None) -> tuple[float, float]:
    """``model.learn(timesteps, callback)``; return its wall and process-CPU seconds."""
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(timesteps, callback=callback)
    return time.perf_counter() - start, time.process_time() - cpu_start


def uptime() -> str:
    """The machine's load, as ``uptime`` prints it (benchmarks record it next to their timings)."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# ---------------------------------------------------------------------------------------------- training curves
class TrainingCurves(BaseCallback):
    """What a study records while a model learns, as three lists of rows, each with the env ``steps`` it was taken at.

    - ``rollouts``: one row per rollout (or, with ``window``, per ``window`` env steps: off-policy algorithms'
      rollouts are a few steps): ``invalid_rate``, the share of the window's env steps whose action was invalid;
      ``train_return``, the mean task return of the episodes that ended in the window; ``recent_return``, that of
      the last 100 episodes (both ``None`` while there are none);
    - ``updates``: after each update, the values of ``update_keys`` the algorithm logged (``"approx_kl"`` for
      ``train/approx_kl``); SB3 dumps them after the next rollout, so they are read at its start and at the end;
    - ``evals``: what ``evaluate(model)`` returns, at step 0, every ``eval_every`` env steps and (``eval_at_end``)
      at the end. The seconds it takes add up in ``eval_seconds``.

    An episode's task return is its return without the training env's invalid-action ``penalty`` (the Monitor's
    return, minus ``penalty`` x the invalid actions of ``info["episode_stats"]``), or ``task_return(info)``.

    :param print_every: print the recent return every this many env steps (0: never)
    """

    def __init__(
        self,
        evaluate: Callable[[BaseAlgorithm], dict[str, float]] | None = None,
        eval_every: int = 0,
        eval_at_end: bool = True,
        window: int | None = None,
        penalty: float = 0.0,
        task_return: Callable[[dict[str, Any]], float] | None = None,
        update_keys: Sequence[str] = (),
        print_every: int = 0,
    ) -> None:
        super().__init__()
        self.evaluate, self.eval_every, self.eval_at_end = evaluate, eval_every, eval_at_end
        self.window, self.penalty, self.task_return = window, penalty, task_return
        self.update_keys, self.print_every = tuple(update_keys), print_every
        self.rollouts: list[Record] = []
        self.updates: list[Record] = []
        self.evals: list[Record] = []
        self.eval_seconds = 0.0
        self._recent: deque[float] = deque(maxlen=100)
        self._returns: list[float] = []
        self._steps = self._invalid = 0
        self._next_eval = self._next_window = self._next_print = 0

    def _episode_return(self, info: dict[str, Any]) -> float:
        if self.task_return is not None:
            return self.task_return(info)
        invalid = info.get("episode_stats", {}).get("invalid_actions", 0) if self.penalty else 0
        return float(info["episode"]["r"]) - self.penalty * invalid

    def _evaluate(self) -> None:
        assert self.evaluate is not None
        start = time.perf_counter()
        self.evals.append({"steps": float(self.num_timesteps), **self.evaluate(self.model)})
        self.eval_seconds += time.perf_counter() - start

    def _record_update(self) -> None:
        values = self.model.logger.name_to_value
        row = {key: float(values[f"train/{key}"]) for key in self.update_keys if f"train/{key}" in values}
        if row:
            self.updates.append({"steps": float(self.num_timesteps), **row})

    def _close_window(self) -> None:
        recent = float(np.mean(self._recent)) if self._recent else None
        self.rollouts.append(
            {
                "steps": float(self.num_timesteps),
                "invalid_rate": self._invalid / max(self._steps, 1),
                "train_return": float(np.mean(self._returns)) if self._returns else None,
                "recent_return": recent,
            }
        )
        self._steps = self._invalid = 0
        self._returns = []
        if self.print_every and self.num_timesteps >= self._next_print and recent is not None:
            print(f"  step {self.num_timesteps:,}: training return {recent:+.2f}", flush=True)
            self._next_print += self.print_every

    def _on_training_start(self) -> None:
        if self.evaluate is not None:
            self._evaluate()
        self._next_eval, self._next_window, self._next_print = self.eval_every, self.window or 0, self.print_every

    def _on_rollout_start(self) -> None:
        self._record_update()

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            self._steps += 1
            self._invalid += bool(info.get("invalid_action", False))
            if "episode" in info:
                value = self._episode_return(info)
                self._returns.append(value)
                self._recent.append(value)
        if self.window is not None and self.num_timesteps >= self._next_window:
            self._close_window()
            self._next_window += self.window
        if self.evaluate is not None and self.eval_every and self.num_timesteps >= self._next_eval:
            self._evaluate()
            self._next_eval += self.eval_every
        return True

    def _on_rollout_end(self) -> None:
        if self.window is None:
            self._close_window()

    def _on_training_end(self) -> None:
        self._record_update()
        if self._steps:
            self._close_window()
        if self.evaluate is not None and self.eval_at_end and self.evals[-1]["steps"] < self.num_timesteps:
            self._evaluate()


# ---------------------------------------------------------------------------------------------- evaluation and envs
def evaluate(model: BaseAlgorithm, env: VecEnv, n_episodes: int, deterministic: bool = True) -> dict[str, Any]:
    """Play ``n_episodes`` with ``model`` on ``env`` (SB3's ``evaluate_policy``, recurrent states carried), then
    close ``env``.

    The episodes are spread over ``env``'s envs as SB3 spreads them: with as many envs as episodes, each env plays
    its first episode, all in lock step. Invalid actions are counted from ``info["invalid_action"]``, which
    maskrl's envs report whether the model sees the mask or not.

    :param deterministic: the policy's mode (greedy) instead of sampled actions
    :return: ``returns`` and ``lengths`` of the episodes, ``return_mean``, ``return_std``, ``length_mean``,
        ``invalid_action_rate`` and ``env_stats`` (the mean over the episodes of each ``info["episode_stats"]`` key)
    """
    collector = EpisodeCollector(env)
    try:
        returns, lengths = play_episodes(model, env, n_episodes, deterministic, collector)
    finally:
        env.close()
    keys = sorted({key for stats in collector.episode_stats for key in stats})
    return {
        "returns": [float(r) for r in returns],
        "lengths": [int(n) for n in lengths],
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length_mean": float(np.mean(lengths)),
        "invalid_action_rate": collector.invalid / max(collector.steps, 1),
        "env_stats": {key: float(np.mean([s[key] for s in collector.episode_stats if key in s])) for key in keys},
    }


class AllActionsValid(VecEnvWrapper):
    """Replace the action mask of every observation by all ones: a masked model "without its mask".

    The envs below still see the true mask, so they still report the invalid actions the model now takes.
    """

    def reset(self) -> Any:
        observation = self.venv.reset()
        observation[ACTION_MASK_KEY][:] = 1
        return observation

    def step_wait(self) -> Any:
        observation, rewards, dones, infos = self.venv.step_wait()
        observation[ACTION_MASK_KEY][:] = 1
        return observation, rewards, dones, infos


class DropActionMask(gym.ObservationWrapper):
    """Remove only ``"action_mask"`` from a ``Dict`` observation, which stays a ``Dict`` (other mask keys stay too,
    e.g. PandaGrid's ``"visibility"``, an extractor's input). ``action_masks()`` still works on the env below."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = spaces.Dict(
            {key: space for key, space in env.observation_space.spaces.items() if key != ACTION_MASK_KEY}
        )

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in observation.items() if key != ACTION_MASK_KEY}


def _env_without_action_mask(env_id: str, env_kwargs: dict[str, Any] | None) -> gym.Env:
    return DropActionMask(make_masked_env(env_id, env_kwargs))


def make_vec_env_for(
    env_id: str,
    n_envs: int,
    seed: int,
    vec_env: str = "dummy",
    env_kwargs: dict[str, Any] | None = None,
    sees_mask: bool = True,
    drop_only_action_mask: bool = False,
) -> VecEnv:
    """``make_masked_vec_env``, or, for a model that must not see the action mask but keeps the ``Dict`` observation
    and its other keys (``drop_only_action_mask``), the same envs under :class:`DropActionMask`.

    :param seed: env ``i`` is seeded with ``seed + i``
    """
    if sees_mask or not drop_only_action_mask:
        return make_masked_vec_env(env_id, n_envs, seed, vec_env, env_kwargs, sees_mask=sees_mask)
    venv_class = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}[vec_env]
    venv = venv_class([functools.partial(_env_without_action_mask, env_id, env_kwargs)] * n_envs)
    venv.seed(seed)
    venv.action_space.seed(seed)
    return venv


# ---------------------------------------------------------------------------------------------- plots and tables
#: x axis in thousands of env steps
THOUSANDS = FuncFormatter(lambda x, _: f"{x / 1000:.0f}k")


def curve(rows: Sequence[Record], key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of the rows that have a value for ``key``."""
    kept = [row for row in rows if row.get(key) is not None]
    return [row["steps"] for row in kept], [row[key] for row in kept]


def band(
    ax: Any,
    curves: Sequence[tuple[Sequence[float], Sequence[float]]],
    label: str,
    color: str | None = None,
    smooth: int = 1,
    style: str = "-",
) -> None:
    """Draw the seed mean ± one standard deviation of ``curves`` (one ``(steps, values)`` per seed).

    Each curve is first a running mean over ``smooth`` points; the curves are then interpolated on 60 steps from the
    latest first step to the earliest last one. Curves of fewer than two points are left out (nothing is drawn
    without any).
    """
    kept = []
    for steps, values in curves:
        if len(values) >= smooth + 1:
            smoothed = np.convolve(np.asarray(values, dtype=float), np.ones(smooth) / smooth, mode="valid")
            kept.append((np.asarray(steps[smooth - 1 :], dtype=float), smoothed))
    if not kept:
        return
    grid = np.linspace(max(steps[0] for steps, _ in kept), min(steps[-1] for steps, _ in kept), 60)
    ys = np.array([np.interp(grid, steps, values) for steps, values in kept])
    mean, std = ys.mean(0), ys.std(0)
    (line,) = ax.plot(grid, mean, style, label=label, color=color)
    ax.fill_between(grid, mean - std, mean + std, alpha=0.15, color=line.get_color())


def by_variant(
    results: Sequence[Record], variants: Sequence[str], key: str = "variant"
) -> Iterator[tuple[str, list[Record]]]:
    """``(variant, its runs sorted by seed)`` for each variant that has runs, in the order of ``variants``.

    :param key: the runs' field that names their variant
    """
    for variant in variants:
        runs = sorted((r for r in results if r[key] == variant), key=lambda r: r["seed"])
        if runs:
            yield variant, runs


def variant_bands(
    ax: Any,
    results: Sequence[Record],
    variants: Sequence[str],
    curve_of: Callable[[Record], tuple[Sequence[float], Sequence[float]]],
    label: Callable[[str, int], str] = lambda variant, seeds: f"{variant} ({seeds} seeds)",
    colors: dict[str, str] | None = None,
    styles: dict[str, str] | None = None,
    smooth: int = 1,
    key: str = "variant",
) -> None:
    """One :func:`band` per variant that has runs in ``results``, of its runs' ``curve_of(run)``.

    :param label: a band's label from its variant and number of seeds
    :param key: the runs' field that names their variant
    """
    for variant, runs in by_variant(results, variants, key):
        color, style = (colors or {}).get(variant), (styles or {}).get(variant, "-")
        band(ax, [curve_of(r) for r in runs], label(variant, len(runs)), color, smooth, style)


def label_axes(ax: Any, xlabel: str, ylabel: str = "", title: str = "", legend: bool = True, size: float = 9) -> None:
    """Axis labels, title (font ``size``), a light grid and, if ``legend`` and there are curves, a legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=size)
    ax.grid(alpha=0.3)
    if legend and ax.lines:
        ax.legend(fontsize=size - 1)


def save_figure(fig: Figure, path: Path) -> None:
    """Lay ``fig`` out and write it as a 64-colour palette PNG: a plot has a few dozen colours, and the docs keep
    pictures small."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    Image.open(buffer).convert("RGB").quantize(colors=64).save(path, optimize=True)


def mean_std(values: Sequence[float], spec: str = ".2f") -> str:
    """``"1.23 ± 0.45"``: mean and standard deviation (over seeds, usually)."""
    return f"{np.mean(values):{spec}} ± {np.std(values):{spec}}"


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are not ``None`` or NaN, or ``None`` if there are none."""
    kept = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(kept)) if kept else None


# ---------------------------------------------------------------------------------------------- Kart masking studies
# The PPO and DQN masking studies (masking_study.py, dqn_masking_study.py) evaluate, summarise and plot alike.

#: the evaluation episode i is seeded EVAL_SEED + i, the same for every run and evaluation
EVAL_SEED = 1_000_000
THRESHOLD = 0.9


def evaluate_kart(
    model: BaseAlgorithm, n_item_types: int, n_episodes: int, sees_mask: bool, without_mask: bool = False
) -> dict[str, float]:
    """Deterministic mean ``return`` and ``invalid_rate`` on ``maskrl/Kart-v0`` without penalty, episodes seeded
    ``EVAL_SEED + i`` and played in lock step.

    :param sees_mask: whether the model's observation holds the mask
    :param without_mask: the mask in the observation replaced by all ones (:class:`AllActionsValid`)
    """
    env = make_masked_vec_env(
        "maskrl/Kart-v0", n_episodes, EVAL_SEED, env_kwargs={"n_item_types": n_item_types}, sees_mask=sees_mask
    )
    result = evaluate(model, AllActionsValid(env) if without_mask else env, n_episodes)
    return {"return": result["return_mean"], "invalid_rate": result["invalid_action_rate"]}


def steps_to_threshold(steps: Sequence[float], values: Sequence[float], threshold: float) -> float | None:
    """The first step at which ``values`` reaches ``threshold`` (``>=``), or ``None`` if it never does.

    :raises ValueError: if the two sequences differ in length
    """
    if len(steps) != len(values):
        raise ValueError(f"steps and values differ in length ({len(steps)} vs {len(values)})")
    return next((float(step) for step, value in zip(steps, values, strict=True) if value >= threshold), None)


def steps_to_stay(steps: Sequence[float], values: Sequence[float], threshold: float) -> float | None:
    """The first step after 0 from which ``values`` stays at or above ``threshold`` to the end (``None``: never).

    Unlike :func:`steps_to_threshold`, the untrained point (step 0) does not count: an untrained Q-network's greedy
    action is nearly one constant action, and on Kart "always accelerate" alone scores above most thresholds; and
    DQN's evaluation curves dip and recover, so a crossing must hold to count.

    :raises ValueError: if the two sequences differ in length
    """
    if len(steps) != len(values):
        raise ValueError(f"steps and values differ in length ({len(steps)} vs {len(values)})")
    found = None
    for step, value in zip(steps, values, strict=True):
        if value < threshold:
            found = None
        elif found is None and step > 0:
            found = float(step)
    return found


def mean_curve(curves: Sequence[Sequence[Record]], key: str) -> tuple[list[float], list[float]]:
    """Seed-mean of curves evaluated at the same steps, cut to the shortest one.

    :param curves: per seed, a list of points ``{"steps": ..., key: ...}``
    :raises ValueError: if the seeds' steps differ
    """
    if not curves:
        return [], []
    length = min(len(c) for c in curves)
    steps = [point["steps"] for point in curves[0][:length]]
    if any([point["steps"] for point in c[:length]] != steps for c in curves[1:]):
        raise ValueError("the seeds' curves are evaluated at different steps")
    return steps, [float(np.mean([c[i][key] for c in curves])) for i in range(length)]


def training_curve(rollouts: Sequence[Record], window: int = 3) -> list[Record]:
    """Per rollout, the mean task return of the episodes that ended in it and the ``window - 1`` rollouts before
    (a rollout ends only a handful of Kart episodes); ``return`` is ``None`` while none has ended in the window."""
    return [
        {
            "steps": row["steps"],
            "return": mean_or_none([r["train_return"] for r in rollouts[max(0, index - window + 1) : index + 1]]),
        }
        for index, row in enumerate(rollouts)
    ]


def mean_training_curve(runs: Sequence[Record]) -> tuple[list[float], list[float]]:
    """Seed-mean of :func:`training_curve`, at the rollouts where every seed has a value."""
    curves = [training_curve(r["rollouts"]) for r in runs]
    if not curves or not all(curves):
        return [], []
    points = [p for p in zip(*curves, strict=False) if all(q["return"] is not None for q in p)]
    return [p[0]["steps"] for p in points], [float(np.mean([q["return"] for q in p])) for p in points]


def _tail(rows: Sequence[Record], key: str, fraction: float = 0.2) -> float | None:
    """Mean of ``key`` over the last ``fraction`` of ``rows`` (``None`` if there are none)."""
    return mean_or_none([row[key] for row in rows[len(rows) - max(1, round(fraction * len(rows))) :]] if rows else [])


def _threshold(best: float, fraction: float) -> float:
    return fraction * best if best > 0 else best / fraction  # a negative best (Taxi) is reached from below


def summarise(
    results: Sequence[Record],
    variants: Sequence[str],
    to_threshold: Callable[[Sequence[float], Sequence[float], float], float | None] = steps_to_threshold,
    fraction: float = THRESHOLD,
) -> dict[int, dict[str, dict[str, Any]]]:
    """Per size (``n_item_types``) and variant: the final evaluation return (mean and std over seeds), the steps
    to ``fraction`` of the size's best, the invalid-action rates, the mean ``approx_kl`` of PPO's updates.

    The best final return of a size is the largest seed-mean final evaluation return of any variant at that size;
    ``steps_to_threshold`` is where the variant's seed-mean evaluation curve reaches ``fraction`` of it, as
    ``to_threshold`` tells (``None``: never). The same on the training return (``train_*``), on the seed mean of
    :func:`training_curve` against the best final training return (of the last 20% of the rollouts).

    :param results: run records (``eval``, ``rollouts``, optionally ``updates``)
    :param variants: the variants, in table order
    :return: ``{size: {variant: stats}}``
    """
    summary: dict[int, dict[str, dict[str, Any]]] = {}
    for size in sorted({r["n_item_types"] for r in results}):
        cells: dict[str, dict[str, Any]] = {}
        for variant, runs in by_variant([r for r in results if r["n_item_types"] == size], variants):
            finals = [r["eval"][-1]["return"] for r in runs]
            steps, values = mean_curve([r["eval"] for r in runs], "return")
            cells[variant] = {
                "seeds": len(runs),
                "final_mean": float(np.mean(finals)),
                "final_std": float(np.std(finals)),
                "curve_steps": steps,
                "curve_mean": values,
                "train_curve": mean_training_curve(runs),
                "train_return_final": mean_or_none([_tail(r["rollouts"], "train_return") for r in runs]),
                "train_invalid_rate": mean_or_none(
                    [mean_or_none([row["invalid_rate"] for row in r["rollouts"]]) for r in runs]
                ),
                "train_invalid_rate_final": mean_or_none([_tail(r["rollouts"], "invalid_rate") for r in runs]),
                "eval_invalid_rate": float(np.mean([r["eval"][-1]["invalid_rate"] for r in runs])),
                "approx_kl": mean_or_none(
                    [mean_or_none([row["approx_kl"] for row in r.get("updates", [])]) for r in runs]
                ),
                # CPU time: on a shared machine the wall time says more about the neighbours than about the variant.
                "cpu_minutes": float(np.mean([r.get("cpu_seconds", r["seconds"]) for r in runs])) / 60,
            }
        best = max(cell["final_mean"] for cell in cells.values())
        trained = [c["train_return_final"] for c in cells.values() if c["train_return_final"] is not None]
        best_train = max(trained, default=0.0)
        for cell in cells.values():
            cell["threshold"] = _threshold(best, fraction)
            cell["steps_to_threshold"] = to_threshold(cell["curve_steps"], cell["curve_mean"], cell["threshold"])
            cell["train_threshold"] = _threshold(best_train, fraction)
            cell["train_steps_to_threshold"] = to_threshold(*cell.pop("train_curve"), cell["train_threshold"])
        summary[size] = cells
    return summary


def format_steps(steps: float | None) -> str:
    """``12345`` -> ``"12k"``, ``None`` -> ``"never"``."""
    if steps is None:
        return "never"
    return f"{steps / 1000:.0f}k" if steps >= 1000 else f"{steps:.0f}"


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def size_name(size: int) -> str:
    """A study column's name: ``n_item_types`` of Kart, or Taxi (size 0)."""
    return "Taxi-v4" if size == 0 else f"{size} item types ({5 + size} actions)"


def _summary_cell(cell: dict[str, Any] | None, training: bool) -> str:
    if cell is None or (training and cell["train_return_final"] is None):
        return "—"
    if training:
        return f"{cell['train_return_final']:.2f} ({format_steps(cell['train_steps_to_threshold'])})"
    return f"{cell['final_mean']:.2f} ± {cell['final_std']:.2f} ({format_steps(cell['steps_to_threshold'])})"


def paper_table(summary: dict[int, dict[str, dict[str, Any]]], variants: Sequence[str], training: bool = False) -> str:
    """One row per variant, one column per size: final return (± std over seeds) and steps to the threshold.

    :param training: the training return instead of the evaluation return
    """
    sizes = list(summary)
    lines = ["| variant | " + " | ".join(size_name(s) for s in sizes) + " |", "|---|" + "---:|" * len(sizes)]
    for variant in variants:
        cells = [summary[s].get(variant) for s in sizes]
        if any(cell is not None for cell in cells):
            lines.append(f"| {variant} | " + " | ".join(_summary_cell(c, training) for c in cells) + " |")
    return "\n".join(lines)


def long_table(summary: dict[int, dict[str, dict[str, Any]]], with_kl: bool = True) -> str:
    """One row per size and variant with every reported metric (``with_kl``: PPO's mean ``approx_kl`` too)."""
    kl_header, kl_rule = (" approx_kl (mean over updates) |", "---:|") if with_kl else ("", "")
    lines = [
        "| item types | variant | seeds | final eval return | steps to 90% of best | final training return (steps) "
        f"| train invalid-action rate (all / last 20%) | final eval invalid-action rate |{kl_header} "
        "CPU minutes per run |",
        "|---:|---|---:|---:|---:|---:|---:|---:|" + kl_rule + "---:|",
    ]
    for size, cells in summary.items():
        for variant, c in cells.items():
            kl = f" {_fmt(c['approx_kl'], '.4f')} |" if with_kl else ""
            lines.append(
                f"| {size or 'Taxi'} | {variant} | {c['seeds']} | {c['final_mean']:.2f} ± {c['final_std']:.2f} "
                f"| {format_steps(c['steps_to_threshold'])} (≥ {c['threshold']:.2f}) "
                f"| {_summary_cell(c, training=True)} "
                f"| {_fmt(c['train_invalid_rate'], '.1%')} / {_fmt(c['train_invalid_rate_final'], '.1%')} "
                f"| {c['eval_invalid_rate']:.1%} |{kl} {c['cpu_minutes']:.1f} |"
            )
    return "\n".join(lines)


@dataclass(frozen=True)
class CurveRow:
    """One row of panels of :func:`plot_sizes`: ``run[section][i][key]`` against steps.

    :param smooth: running mean over this many points
    :param log: log-scale y axis
    """

    section: str
    key: str
    label: str
    smooth: int = 1
    log: bool = False


def plot_sizes(
    results: Sequence[Record],
    path: Path,
    rows: Sequence[CurveRow],
    variants_of: Callable[[int], Sequence[str]],
    colors: dict[str, str],
) -> None:
    """Panels of seed bands, one row per :class:`CurveRow` and one column per size (Taxi last), saved to ``path``.

    :param variants_of: the variants drawn in a size's column
    """
    sizes = sorted({r["n_item_types"] for r in results}, key=lambda size: (size == 0, size))
    fig = Figure(figsize=(3.6 * len(sizes), 2.7 * len(rows)), dpi=90)
    for row_index, row in enumerate(rows):
        for col, size in enumerate(sizes):
            ax = fig.add_subplot(len(rows), len(sizes), row_index * len(sizes) + col + 1)
            variant_bands(
                ax,
                [r for r in results if r["n_item_types"] == size],
                variants_of(size),
                lambda r, row=row: curve(r[row.section], row.key),
                lambda variant, _: variant,
                colors,
                smooth=row.smooth,
            )
            ax.xaxis.set_major_formatter(THOUSANDS)
            if row.log:
                ax.set_yscale("log")
            if row_index == 0:
                ax.set_title(size_name(size), fontsize=9)
            if col == 0:
                ax.set_ylabel(row.label, fontsize=8)
            if row_index == len(rows) - 1:
                ax.set_xlabel("env steps")
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    # A legend in each column (its variants may differ), in the first row that has curves.
    for col in range(len(sizes)):
        column = fig.axes[col :: len(sizes)]
        first = next((ax for ax in column if ax.lines), None)
        if first is not None:
            first.legend(fontsize=7)
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- timing
@dataclass
class Timers:
    """Seconds accumulated in each part of ``learn()`` calls (see :func:`build`)."""

    env: float = 0.0
    forward: float = 0.0
    rollout: float = 0.0
    update: float = 0.0
    #: process CPU time for DummyVecEnv (all the work is in this process; robust to load), wall time for Subproc
    clock: Callable[[], float] = time.perf_counter

    def reset(self) -> None:
        self.env = self.forward = self.rollout = self.update = 0.0


#: the parts of a PPO iteration :func:`time_learn_calls` reports, in µs per env step
PARTS = ("env", "forward", "rollout_other", "update")


class TimedVecEnv(VecEnvWrapper):
    """Adds the time from ``step_async`` to the end of ``step_wait`` to ``timers.env``."""

    def __init__(self, venv: VecEnv, timers: Timers):
        super().__init__(venv)
        self.timers = timers
        self._start = 0.0

    def reset(self) -> Any:
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        self._start = self.timers.clock()
        self.venv.step_async(actions)

    def step_wait(self) -> Any:
        out = self.venv.step_wait()
        self.timers.env += self.timers.clock() - self._start
        return out


def _timed(function: Callable[..., Any], timers: Timers, name: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = timers.clock()
        try:
            return function(*args, **kwargs)
        finally:
            setattr(timers, name, getattr(timers, name) + timers.clock() - start)

    return wrapper


@dataclass(frozen=True)
class EnvBench:
    """What a throughput benchmark trains on one env: the env, the rollout length and each variant's
    ``(algorithm class, policy, policy kwargs)``.

    A variant named ``"maskrl"`` sees the action mask in its observation; the others do not (MaskablePPO reads
    ``action_masks()``). ``drop_only_action_mask``: they keep the ``Dict`` observation and its other keys.
    """

    env_id: str
    n_steps: int
    variants: dict[str, tuple[type[BaseAlgorithm], Any, dict[str, Any]]]
    drop_only_action_mask: bool = False
    notes: str = ""
    env_kwargs: dict[str, Any] | None = None


def build(
    bench: EnvBench,
    variant: str,
    vec_env: str,
    n_envs: int,
    n_epochs: int,
    env_kwargs: dict[str, Any] | None = None,
    hooks: bool = True,
) -> tuple[BaseAlgorithm, Timers]:
    """One variant's model (``batch_size = n_steps``, lr 3e-4, seed 0, CPU) with its timing hooks.

    The hooks are instance attributes that shadow the methods ``learn`` calls: the vec env's steps, the policy's
    ``forward``, ``collect_rollouts`` and ``train``.

    :param env_kwargs: instead of the bench's
    :param hooks: install the timing hooks (off under a profiler, which would count them)
    """
    algo, policy, policy_kwargs = bench.variants[variant]
    timers = Timers(clock=time.process_time if vec_env == "dummy" else time.perf_counter)
    venv = make_vec_env_for(
        bench.env_id,
        n_envs,
        0,
        vec_env,
        env_kwargs if env_kwargs is not None else bench.env_kwargs,
        sees_mask=variant == "maskrl",
        drop_only_action_mask=bench.drop_only_action_mask,
    )
    model = algo(
        policy,
        TimedVecEnv(venv, timers) if hooks else venv,
        n_steps=bench.n_steps,
        batch_size=bench.n_steps,
        n_epochs=n_epochs,
        learning_rate=3e-4,
        policy_kwargs=dict(policy_kwargs),
        seed=0,
        device="cpu",
    )
    if hooks:
        model.collect_rollouts = _timed(model.collect_rollouts, timers, "rollout")  # type: ignore[method-assign]
        model.train = _timed(model.train, timers, "update")  # type: ignore[method-assign]
        model.policy.forward = _timed(model.policy.forward, timers, "forward")  # type: ignore[method-assign]
    return model, timers


def time_learn_calls(
    models: dict[str, BaseAlgorithm], steps: int, repeats: int, timers: dict[str, Timers] | None = None
) -> dict[str, Any]:
    """Time ``learn(steps)`` calls of the models round-robin (the first of each round rotating), continuing each run.

    :param timers: the models' timing hooks (:func:`build`), for the breakdown
    :return: per model, env steps per second of every call on the wall clock (``steps_per_s``) and on the process's
        CPU time (``cpu_steps_per_s``: the time spent waiting for a core is not counted, so machine load barely moves
        it; with SubprocVecEnv it misses the workers), their medians (``median_*``) and, with ``timers``, the median
        µs per env step of each of :data:`PARTS` (``us_per_step``)
    """
    rates: dict[str, list[float]] = {name: [] for name in models}
    cpu_rates: dict[str, list[float]] = {name: [] for name in models}
    parts: dict[str, dict[str, list[float]]] = {name: {part: [] for part in PARTS} for name in models}
    order = list(models)
    for repeat in range(repeats):
        for name in order[repeat % len(order) :] + order[: repeat % len(order)]:
            clock = timers[name] if timers else None
            if clock:
                clock.reset()
            start, cpu_start = time.perf_counter(), time.process_time()
            models[name].learn(steps, reset_num_timesteps=False)
            rates[name].append(steps / (time.perf_counter() - start))
            cpu_rates[name].append(steps / (time.process_time() - cpu_start))
            if clock:
                per_step = 1e6 / steps  # seconds -> µs per env step
                parts[name]["env"].append(clock.env * per_step)
                parts[name]["forward"].append(clock.forward * per_step)
                parts[name]["rollout_other"].append((clock.rollout - clock.env - clock.forward) * per_step)
                parts[name]["update"].append(clock.update * per_step)
    timing: dict[str, Any] = {
        "steps_per_s": rates,
        "median_steps_per_s": {name: statistics.median(values) for name, values in rates.items()},
        "cpu_steps_per_s": cpu_rates,
        "median_cpu_steps_per_s": {name: statistics.median(values) for name, values in cpu_rates.items()},
    }
    if timers:
        timing["us_per_step"] = {n: {p: statistics.median(x) for p, x in parts[n].items()} for n in models}
    return timing


def time_cell(
    bench: EnvBench, variants: Sequence[str], vec_env: str, n_envs: int, iterations: int, repeats: int, n_epochs: int
) -> dict[str, Any]:
    """Build the variants on one (vec env, n_envs) cell, run one iteration each (warm-up), then time
    ``iterations`` iterations per call with :func:`time_learn_calls`."""
    built = {variant: build(bench, variant, vec_env, n_envs, n_epochs) for variant in variants}
    steps = iterations * bench.n_steps * n_envs
    for model, _ in built.values():
        model.learn(bench.n_steps * n_envs)  # warm-up: first rollout, first update
    timing = time_learn_calls(
        {v: model for v, (model, _) in built.items()}, steps, repeats, {v: t for v, (_, t) in built.items()}
    )
    for model, _ in built.values():
        model.get_env().close()
    return {"vec_env": vec_env, "n_envs": n_envs, "steps_per_timed_call": steps, **timing}


def throughput_parser(doc: str, benches: Sequence[str], env: str, n_envs: Sequence[int]) -> argparse.ArgumentParser:
    """The options of a training-throughput benchmark: ``--env``, ``--vec-envs``, ``--n-envs``, ``--n-epochs``,
    ``--out`` and ``--quick`` (the script adds ``--iterations`` and ``--repeats``, whose defaults differ)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--env", choices=list(benches), default=env)
    parser.add_argument("--vec-envs", nargs="+", default=["dummy", "subproc"], choices=["dummy", "subproc"])
    parser.add_argument("--n-envs", nargs="+", type=int, default=list(n_envs))
    parser.add_argument("--n-epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="the JSON file written (default: under docs/benchmarks)")
    parser.add_argument("--quick", action="store_true", help="smoke run: DummyVecEnv with 2 envs, 1 repeat")
    return parser


def time_cells(
    vec_envs: Sequence[str],
    n_envs: Sequence[int],
    run_cell: Callable[[str, int], Record],
    describe: Callable[[Record], str],
) -> dict[str, Any]:
    """Run ``run_cell(vec_env, n_envs)`` for every cell, printing ``describe(cell)`` after each.

    :return: ``cells``, ``uptime_before`` and ``uptime_after`` (the machine's load) and ``seconds``
    """
    load_before, started = uptime(), time.time()
    cells = []
    for vec_env in vec_envs:
        for n in n_envs:
            cells.append(run_cell(vec_env, n))
            print(f"{vec_env} x {n}: {describe(cells[-1])}", flush=True)
    return {"uptime_before": load_before, "uptime_after": uptime(), "seconds": time.time() - started, "cells": cells}


def write_json(path: Path, data: Any) -> None:
    """Write a benchmark's results and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path}")


def breakdown_table(cells: Sequence[Record]) -> str:
    """Markdown: µs per env step of each part and in total, per cell and variant (CPU time for DummyVecEnv)."""
    lines = [
        "| vec env | n_envs | variant | env step | policy forward | rollout other | update | total |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        for variant, p in c["us_per_step"].items():
            rate = c["median_cpu_steps_per_s" if c["vec_env"] == "dummy" else "median_steps_per_s"][variant]
            lines.append(
                f"| {c['vec_env']} | {c['n_envs']} | {variant} | {p['env']:.1f} | {p['forward']:.1f} "
                f"| {p['rollout_other']:.1f} | {p['update']:.1f} | {1e6 / rate:.1f} |"
            )
    return "\n".join(lines)


def time_block(fn: Callable[[], Any], calls: int, clock: Callable[[], float] = time.process_time) -> float:
    """Seconds per call over ``calls`` back-to-back calls of ``fn``, with the garbage collector paused."""
    gc.disable()
    try:
        start = clock()
        for _ in range(calls):
            fn()
        return (clock() - start) / calls
    finally:
        gc.enable()


def time_blocks(
    cases: dict[Hashable, Callable[[], Any]],
    repeats: int,
    block_seconds: float,
    clock: Callable[[], float] = time.process_time,
    warmup: int = 1,
) -> dict[Hashable, list[float]]:
    """Seconds per call of each case, one value per round, in round order: cases timed round-robin in blocks.

    Each case is first called ``warmup`` times, then one timed call sets how many calls make a block of about
    ``block_seconds``; each of the ``repeats`` rounds times one block of every case, the first case rotating.
    """
    calls = {}
    for key, fn in cases.items():
        for _ in range(warmup):
            fn()
        calls[key] = max(1, round(block_seconds / max(time_block(fn, 1, clock), 1e-6)))
    gc.collect()
    times: dict[Hashable, list[float]] = {key: [] for key in cases}
    keys = list(cases)
    for repeat in range(repeats):
        shift = repeat % len(keys)
        for key in keys[shift:] + keys[:shift]:
            times[key].append(time_block(cases[key], calls[key], clock))
    return times
