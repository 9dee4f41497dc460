"""Hyperparameter tuning with Optuna: ``train.py -optimize``, with rl-baselines3-zoo's flags and their meanings.

:func:`add_tuning_arguments` adds the flags to ``train.py``'s parser and :func:`run_tuning` runs the study they ask
for; :func:`stored_trial_hyperparams` (``--trial-id``) hands a stored trial's hyperparameters to a normal run. The
work is done by :func:`tune`, which takes everything it needs explicitly.

**A trial** samples hyperparameters from the algorithm's search space (:mod:`maskrl.agents.search_spaces`), lays them
over the env file's section, trains ``-n`` steps with the run's seed, and is evaluated ``--n-evaluations`` times
(every ``n / n_evaluations`` steps, the last one after training) by :func:`maskrl.agents.evaluation.evaluate_model`:
mask-aware as each algorithm needs (the mask in the observation, or ``action_masks()`` for MaskablePPO),
deterministic, on ``--eval-episodes`` episodes of an env seeded the same way every time, so that trials compare on
the same races. The mean return is reported to Optuna after each evaluation; the pruner may stop the trial there
(PRUNED). A trial whose network weights become NaN or infinite, or that raises, is FAIL, with the reason in its
``fail_reason`` user attribute, and the study goes on. Each trial records its full hyperparameters (user attribute
``hyperparams``, in the hyperparameter-file format) and the worker that ran it (``worker``: host and pid).

**Storage.** Without ``--storage`` the study lives in its tuning folder, ``<log-folder>/tuning/<algo>/<EnvName>_<N>``,
in an Optuna journal file (``study.log``; :class:`optuna.storages.journal.JournalStorage`) rather than SQLite: no
server either way, but SQLite lets one writer in at a time and answers "database is locked" to the others (Optuna
advises against it for parallel studies), while the journal is one append-only file that the threads and processes
of a machine share through a file lock, that a crash can only cut after its last complete record, and that
``optuna-dashboard`` opens as it is. ``--storage`` takes that folder or any journal file path, or a
database URL: with ``postgresql://user:password@host/db`` any number of workers on any machines share one study, and
the same command started N times is N workers.

**Workers.** Each worker (a process, with ``--n-jobs`` threads) runs trials until it has run ``--n-trials`` of them or,
when ``--max-total-trials`` is given (which then takes precedence over ``--n-trials``, as in the zoo), until the study
holds that many trials in all. Optuna's own ``MaxTrialsCallback`` counts trials after one ends, so two workers ending
trials together may both start another one and overshoot the cap; here a worker counts the study's trials (COMPLETE,
PRUNED, FAIL and RUNNING: a trial in progress already has its place) and creates its next one while holding a lock
shared by every worker of the study (a PostgreSQL advisory lock, or a file lock next to a journal or SQLite file), so
the study ends with exactly ``--max-total-trials`` trials and no trial is run twice. A killed worker's lock goes with
its connection or process. Its trial stays RUNNING (and keeps its one place in the count) until it is found dead:
with a database URL by Optuna's heartbeat (each running trial records a heartbeat every ``--heartbeat-interval``
seconds; a trial without one for twice that is marked FAIL by the next worker that looks, via
:func:`optuna.storages.fail_stale_trials`), and on the worker's own machine at once, by its pid. It is not retried:
Optuna's ``RetryFailedTrialCallback`` would add a trial beyond the cap.

**Results**, written by each worker when it ends, in its tuning folder: ``best_hyperparams.yml`` (the best trial's
hyperparameters as a section of ``maskrl/agents/hyperparams/<EnvName>.yml``, which can be copied into it),
``report.md`` (best value, the same hyperparameters as ``--hyperparams`` flags, the ``--trial-id`` command, parameter
importances when at least two trials are complete, trials by state, the best trials) and ``tuning.yml`` (the
settings, the command line and the package versions).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import shlex
import shutil
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from optuna.pruners import BasePruner, MedianPruner, NopPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.agents.evaluation import evaluate_model
from maskrl.agents.hyperparams import check_our_keys, import_object, load_hyperparams, parse_key_values
from maskrl.agents.imitation import behaviour_clone, load_demonstrator
from maskrl.agents.registry import build_model, get_algo
from maskrl.agents.run_folder import new_numbered_folder
from maskrl.agents.search_spaces import SearchContext, SearchSpace, merge_hyperparams, search_space

try:  # file locks for journal and SQLite storages; maskrl runs on Linux and macOS, where fcntl is
    import fcntl
except ImportError:  # pragma: no cover - Windows: a study's file is then shared by the threads of one process only
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "COUNTED_STATES",
    "DEFAULT_N_TRIALS",
    "PID_NAMESPACE",
    "WORKER",
    "ClaimLock",
    "Heartbeat",
    "Storage",
    "TrialEvaluation",
    "TuningError",
    "TuningOptions",
    "add_tuning_arguments",
    "default_study_name",
    "fail_dead_workers",
    "open_storage",
    "quiet_optuna",
    "run_tuning",
    "stored_trial_hyperparams",
    "trial_hyperparams",
    "tune",
]

DEFAULT_N_TRIALS = 500
DEFAULT_N_STARTUP_TRIALS = 10
DEFAULT_HEARTBEAT_INTERVAL = 60
#: Default steps of a trial when neither ``-n`` nor the env's file gives them (train.py's default too).
DEFAULT_N_TIMESTEPS = 100_000
#: The trial evaluations' env seed is the run's seed plus this (train.py's periodic evaluation uses the same offset,
#: so a trial's evaluations are the races a normal run of the same seed is evaluated on).
EVAL_SEED_OFFSET = 10_000
#: The trials that take a place under ``--max-total-trials``: all but WAITING ones (which ``ask`` hands out first).
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
#: Files of a tuning folder.
STUDY_LOG = "study.log"
BEST_HYPERPARAMS = "best_hyperparams.yml"
REPORT = "report.md"
SETTINGS = "tuning.yml"
#: The study user attribute holding the settings every worker of the study must share.
SETTINGS_ATTR = "maskrl_settings"
#: Tries at opening a database storage: workers started together on a new database collide creating its tables.
SCHEMA_ATTEMPTS = 4
#: Who runs a trial, recorded in it: the host and the pid (also how a dead worker of this host is recognised).
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def _pid_namespace() -> str:
    """This process's pid namespace (Linux): containers of one host name may number their processes apart."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


PID_NAMESPACE = _pid_namespace()
SAMPLERS = ("random", "tpe")
PRUNERS = ("median", "halving", "none")


class TuningError(ValueError):
    """A study that cannot run as asked (a storage, a study of other settings, a trial that is not there). One line."""


class DivergedError(RuntimeError):
    """A trial's training diverged (NaN or infinite weights or returns)."""


@dataclass(frozen=True)
class TuningOptions:
    """How to run a study: the zoo's flags (see :func:`add_tuning_arguments`)."""

    n_trials: int = DEFAULT_N_TRIALS
    max_total_trials: int | None = None
    n_jobs: int = 1
    sampler: str = "tpe"
    pruner: str = "median"
    n_startup_trials: int = DEFAULT_N_STARTUP_TRIALS
    n_evaluations: int | None = None
    n_eval_episodes: int = 10
    storage: str | None = None
    study_name: str | None = None
    heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise TuningError(f"unknown sampler {self.sampler!r}; known: {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise TuningError(f"unknown pruner {self.pruner!r}; known: {', '.join(PRUNERS)}")
        for name in ("n_trials", "n_jobs", "n_eval_episodes", "heartbeat_interval"):
            if getattr(self, name) < 1:
                raise TuningError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_total_trials", "n_evaluations"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise TuningError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_startup_trials < 0:
            raise TuningError(f"n_startup_trials must be 0 or more, got {self.n_startup_trials}")

    def evaluations(self, n_timesteps: int) -> int:
        """Evaluations per trial: ``--n-evaluations``, by default one per 100k steps (at least one), as the zoo."""
        return self.n_evaluations or max(1, n_timesteps // 100_000)


# --- the command line --------------------------------------------------------------------------------------------


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(float(text)) if "e" in text.lower() else int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer of at least {minimum}, got {value}")
        return value

    return parse


def add_tuning_arguments(parser: argparse.ArgumentParser) -> None:
    """Add rl-baselines3-zoo's tuning flags, with the zoo's meanings, to ``train.py``'s parser.

    ``-n`` (the budget of one trial), ``--seed``, ``--eval-episodes``, ``--log-folder``, ``--hyperparams`` and
    ``--env-kwargs`` are ``train.py``'s own. ``--heartbeat-interval`` is maskrl's.
    """
    group = parser.add_argument_group("hyperparameter tuning (Optuna; flags as in rl-baselines3-zoo)")
    group.add_argument(
        "-optimize",
        "--optimize-hyperparameters",
        action="store_true",
        help="tune the hyperparameters instead of training: trials of -n steps each, written to "
        "<log-folder>/tuning/<algo>/<EnvName>_<N>",
    )
    group.add_argument(
        "--n-trials",
        type=_at_least(1),
        default=DEFAULT_N_TRIALS,
        help=f"trials this worker runs (default: {DEFAULT_N_TRIALS}); ignored when --max-total-trials is given",
    )
    group.add_argument(
        "--max-total-trials",
        type=_at_least(1),
        help="trials in the whole study, all workers together (COMPLETE, PRUNED, FAIL and RUNNING ones); each worker "
        "runs until the study holds that many; takes precedence over --n-trials",
    )
    group.add_argument("--n-jobs", type=_at_least(1), default=1, help="trials run in parallel threads (default: 1)")
    group.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="Optuna sampler (default: tpe)")
    group.add_argument("--pruner", choices=PRUNERS, default="median", help="Optuna pruner (default: median)")
    group.add_argument(
        "--n-startup-trials",
        type=_at_least(0),
        default=DEFAULT_N_STARTUP_TRIALS,
        help=f"random trials before the sampler and the median pruner start to work (default: "
        f"{DEFAULT_N_STARTUP_TRIALS})",
    )
    group.add_argument(
        "--n-evaluations",
        type=_at_least(1),
        help="evaluations per trial, every n-timesteps / n-evaluations steps, which pruning decides on (default: one "
        "per 100k steps, at least 1)",
    )
    group.add_argument(
        "--storage",
        help="where the study lives: a database URL (postgresql://user:password@host/db: any number of workers on "
        "any machines share the study), a journal file or a tuning folder (default: study.log in a new tuning "
        "folder); with --trial-id, the study to read",
    )
    group.add_argument(
        "--study-name", help="the study's name in the storage (default: <algo>-<EnvName>, e.g. ppo-Kart-v1)"
    )
    group.add_argument(
        "--trial-id",
        type=_at_least(0),
        metavar="N",
        help="train normally with the hyperparameters of trial number N of the study in --storage (--study-name); "
        "--hyperparams still override them",
    )
    group.add_argument(
        "--heartbeat-interval",
        type=_at_least(1),
        default=DEFAULT_HEARTBEAT_INTERVAL,
        help="database storages: seconds between a running trial's heartbeats; a trial silent for twice that long "
        f"(its worker died) is marked FAIL (default: {DEFAULT_HEARTBEAT_INTERVAL})",
    )


def run_tuning(args: argparse.Namespace) -> Path:
    """Run the study ``train.py -optimize ...`` asks for and return its tuning folder.

    Reads ``train.py``'s ``algo``, ``env``, ``env_kwargs``, ``hyperparams`` (``KEY=VALUE`` lists), ``n_timesteps``
    (the budget of one trial; default: the env file's), ``n_envs``, ``vec_env``, ``seed``, ``eval_episodes``,
    ``log_folder``, ``device`` and ``verbose``, and the flags of :func:`add_tuning_arguments`.

    :raises TuningError: in one line, for anything the user can fix
    """
    if getattr(args, "trial_id", None) is not None:
        raise TuningError("--trial-id retrains a stored trial: it does not go with -optimize")
    try:
        base = load_hyperparams(args.env, args.algo)
        base.update(parse_key_values(args.hyperparams, "--hyperparams"))
        check_our_keys(base)
        env_kwargs = {**(base.get("env_kwargs") or {}), **parse_key_values(args.env_kwargs, "--env-kwargs")}
        if env_kwargs:
            base["env_kwargs"] = env_kwargs
        options = TuningOptions(
            n_trials=args.n_trials,
            max_total_trials=args.max_total_trials,
            n_jobs=args.n_jobs,
            sampler=args.sampler,
            pruner=args.pruner,
            n_startup_trials=args.n_startup_trials,
            n_evaluations=args.n_evaluations,
            n_eval_episodes=args.eval_episodes,
            storage=args.storage,
            study_name=args.study_name,
            heartbeat_interval=args.heartbeat_interval,
        )
        return tune(
            args.algo,
            args.env,
            base,
            n_timesteps=args.n_timesteps or int(base.get("n_timesteps", DEFAULT_N_TIMESTEPS)),
            seed=args.seed,
            log_folder=Path(args.log_folder),
            options=options,
            env_kwargs=env_kwargs,
            n_envs=args.n_envs or int(base.get("n_envs", 1)),
            vec_env=getattr(args, "vec_env", "dummy"),
            device=getattr(args, "device", "auto"),
            verbose=getattr(args, "verbose", 1),
            command=shlex.join(sys.argv),
        )
    except ValueError as error:
        raise TuningError(str(error)) from None


def stored_trial_hyperparams(args: argparse.Namespace) -> dict[str, Any]:
    """``--trial-id N``: the hyperparameters of trial N of the study in ``--storage``; ``{}`` without ``--trial-id``.

    ``train.py`` lays them over the env file's section and under ``--hyperparams``. They hold the trial's
    ``env_kwargs`` and the env file's ``n_timesteps`` (not the trial's budget: ``-n`` still sets the run's).

    :raises TuningError: in one line: no ``--storage``, no such study or trial, a study of another algo
    """
    if getattr(args, "trial_id", None) is None:
        return {}
    if not args.storage:
        raise TuningError(
            "--trial-id needs --storage: the study's database URL, or the tuning folder of a study that ran "
            "without --storage"
        )
    try:
        return trial_hyperparams(args.storage, args.trial_id, args.study_name, algo=args.algo, env_id=args.env)
    except ValueError as error:
        raise TuningError(str(error)) from None


# --- storages ------------------------------------------------------------------------------------------------------
# Shared with the benchmark studies (benchmarks/common.py), whose cells are trials of a study too: how a study's storage
# is opened, how its workers exclude each other, how a running trial beats and how a dead worker's trial is found.


@dataclass
class Storage:
    """An opened storage, and how its workers exclude each other while they count and create trials.

    :param storage: what Optuna uses
    :param shown: for messages and reports (a URL's password hidden)
    :param argument: what ``--storage`` says to reach it again (a URL's password hidden: reports are files)
    :param lock_file: the file every worker locks (journal and SQLite storages)
    :param advisory_url: a PostgreSQL URL whose advisory lock every worker takes
    :param heartbeat: the storage that records heartbeats (database storages)
    """

    storage: BaseStorage
    shown: str
    argument: str
    lock_file: Path | None = None
    advisory_url: str | None = None
    heartbeat: RDBStorage | None = None


def open_storage(
    spec: str | None, folder: Path | None, heartbeat_interval: int | None, on_stale: Callable | None = None
) -> Storage:
    """Open ``--storage`` (``None``: ``study.log`` in ``folder``).

    :param spec: a database URL, a journal file, a folder holding ``study.log``, or ``None``
    :param folder: where ``study.log`` goes without ``spec``
    :param heartbeat_interval: seconds between heartbeats for database storages (``None``: none, to read a study)
    :param on_stale: called by :func:`optuna.storages.fail_stale_trials` with each trial it fails (database storages)
    :raises TuningError: a storage that cannot be opened
    """
    if spec is not None and "://" in spec:
        return _open_database(spec, heartbeat_interval, on_stale)
    if spec is None:
        assert folder is not None
        path = folder / STUDY_LOG
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            path = path / STUDY_LOG
            if not path.is_file():
                raise TuningError(f"{path.parent} holds no {STUDY_LOG}: is it a tuning folder?")
        elif not path.parent.is_dir():
            raise TuningError(f"cannot create the journal file {path}: no folder {path.parent}")
    try:
        storage = JournalStorage(JournalFileBackend(str(path)))
    except OSError as error:
        raise TuningError(f"cannot open the journal file {path}: {error.strerror}") from None
    return Storage(storage, str(path), str(path if spec is None else spec), lock_file=_lock_file(path))


#: The name tests/test_tuning_postgres.py imports.
_open_storage = open_storage


def _lock_file(path: Path) -> Path:
    return path.with_name(f"{path.name}.claim")


def _open_database(url: str, heartbeat_interval: int | None, on_stale: Callable | None) -> Storage:
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, IntegrityError, ProgrammingError, SQLAlchemyError

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise TuningError(
            f"--storage {url!r} is not a database URL (like postgresql://user:password@host/db)"
        ) from None
    # As the user wrote it, without its password: for messages, reports and the commands they show.
    shown = parsed.render_as_string(hide_password=True)
    if parsed.drivername == "postgresql":
        # No driver named: SQLAlchemy's default is psycopg (3) from SQLAlchemy 2.1 on and psycopg2 before; take
        # whichever is installed, so that postgresql://... works with either.
        driver = next((name for name in ("psycopg", "psycopg2") if importlib.util.find_spec(name)), None)
        if driver is not None:
            parsed = parsed.set(drivername=f"postgresql+{driver}")
            url = parsed.render_as_string(hide_password=False)
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            storage = RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=heartbeat_interval,
                heartbeat_stale_trial_callback=on_stale if heartbeat_interval else None,
            )
            break
        except (IntegrityError, ProgrammingError) as error:
            # Workers started together on a new database all create Optuna's tables: the first one does, the others
            # collide with it ("duplicate key", "already exists") and find the tables there when they try again.
            if attempt + 1 == SCHEMA_ATTEMPTS:
                raise TuningError(f"cannot open the storage {shown}: {_first_line(error)}") from None
            time.sleep(0.5 * (attempt + 1))
        except (SQLAlchemyError, ImportError, ValueError) as error:
            raise TuningError(f"cannot open the storage {shown}: {_first_line(error)}") from None
    backend = parsed.get_backend_name()
    lock_file = None
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        lock_file = _lock_file(Path(parsed.database))
    return Storage(
        storage,
        shown,
        shown,
        lock_file=lock_file,
        advisory_url=url if backend == "postgresql" else None,
        heartbeat=storage if heartbeat_interval else None,
    )


class ClaimLock:
    """Held by one worker of a study at a time, while it counts the study's trials and creates its next one.

    Threads of one process take a thread lock; processes, a file lock (``flock``, released by the kernel when a
    process dies) or PostgreSQL's session advisory lock keyed by the study's name (released by the server when the
    connection closes, as when a worker is killed). Other databases get the thread lock only: their workers may
    overshoot ``--max-total-trials`` by a few trials.
    """

    def __init__(self, storage: Storage, study_name: str):
        self._threads = threading.Lock()
        self._lock_file = storage.lock_file
        self._engine = None
        # A signed 64-bit key, as pg_advisory_lock takes; the same for every worker of the study.
        digest = hashlib.blake2b(f"maskrl-tuning:{study_name}".encode(), digest_size=8).digest()
        self._key = int.from_bytes(digest, "big", signed=True)
        if storage.advisory_url is not None:
            import sqlalchemy
            from sqlalchemy.pool import NullPool

            # Its own connection, outside Optuna's sessions, in autocommit mode: nothing stays "idle in transaction".
            self._engine = sqlalchemy.create_engine(
                storage.advisory_url, poolclass=NullPool, isolation_level="AUTOCOMMIT"
            )
        self.exact = self._engine is not None or (self._lock_file is not None and fcntl is not None)

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._threads:
            if self._engine is not None:
                import sqlalchemy

                with self._engine.connect() as connection:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
                    try:
                        yield
                    finally:
                        connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
            elif self._lock_file is not None and fcntl is not None:
                fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    yield
                finally:
                    os.close(fd)  # closing the last descriptor releases the lock
            else:
                yield

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


class Heartbeat:
    """Records a running trial's heartbeat every interval, in a thread (Optuna's ``optimize`` does the same for the
    trials it runs; this module runs its trials with ask-and-tell, which has no heartbeat of its own)."""

    def __init__(self, storage: RDBStorage | None, trial: optuna.Trial):
        self._storage = storage
        # Optuna's heartbeats are keyed by the storage's trial id, which Trial only has as a private attribute.
        self._trial_id = trial._trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._storage is None:
            return
        self._storage.record_heartbeat(self._trial_id)  # at once: a trial without any heartbeat is never found stale
        self._thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        assert self._storage is not None
        interval = self._storage.get_heartbeat_interval() or DEFAULT_HEARTBEAT_INTERVAL
        while not self._stop.wait(interval):
            # A lost connection: the next beat retries; only a long outage makes the trial stale.
            with suppress(Exception):
                self._storage.record_heartbeat(self._trial_id)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _on_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    worker = trial.user_attrs.get("worker", "a worker")
    print(f"trial {trial.number}: FAIL (no heartbeat from {worker}: it died)", file=sys.stderr, flush=True)


def fail_dead_workers(
    study: optuna.Study, on_failed: Callable[[optuna.Study, FrozenTrial], None] | None = None
) -> None:
    """Mark FAIL the RUNNING trials of workers of this host that are no longer alive (any storage, no heartbeat
    needed); Optuna's heartbeat finds the others, on database storages.

    :param on_failed: called with each trial failed here (as it was, RUNNING), as a storage's ``on_stale`` is
    """
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        same_pids = trial.user_attrs.get("pid_namespace") == PID_NAMESPACE
        if worker_host != host or not same_pids or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        except (ValueError, RuntimeError):  # another worker failed it first
            continue
        print(f"trial {trial.number}: FAIL (its worker, pid {pid}, is gone)", file=sys.stderr, flush=True)
        if on_failed is not None:
            on_failed(study, trial)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


# --- trials --------------------------------------------------------------------------------------------------------


class TrialEvaluation(BaseCallback):
    """Evaluates a trial's model during training, reports to Optuna and stops a trial the pruner prunes.

    Evaluation ``k`` (``k = 1 .. n_evaluations - 1``) happens once ``k * every`` steps are done and is reported as
    step ``k``; the last one, after training, by :meth:`final`. A trial whose weights are not finite raises
    :class:`DivergedError` (checked after every update and before every evaluation).

    :param trial: the Optuna trial
    :param evaluate: evaluates a model, returning at least ``return_mean``
    :param every: env steps between evaluations
    :param n_evaluations: evaluations in all, the last one after training
    :param stop: set to stop the trial (Ctrl-C)
    """

    def __init__(
        self,
        trial: optuna.Trial,
        evaluate: Callable[[BaseAlgorithm], Mapping[str, Any]],
        every: int,
        n_evaluations: int,
        stop: threading.Event | None = None,
    ):
        super().__init__()
        self.trial = trial
        self.evaluate = evaluate
        self.every = max(every, 1)
        self.n_evaluations = n_evaluations
        self.stop = stop or threading.Event()
        self.reported = 0
        self.pruned = False
        self.last: Mapping[str, Any] = {}

    def _on_rollout_start(self) -> None:
        # After each update: weights gone NaN stop the trial here, named, rather than as whatever the next forward
        # pass makes of them.
        self._check_weights()

    def _check_weights(self) -> None:
        assert self.model is not None
        if not _finite_weights(self.model):
            raise DivergedError(f"the network's weights are not finite at step {self.num_timesteps:,}")

    def _on_step(self) -> bool:
        if self.stop.is_set():
            return False
        due = min(self.num_timesteps // self.every, self.n_evaluations - 1)
        if due > self.reported:
            # Several due at once (a rollout longer than the period): one evaluation, reported at the latest step.
            self._evaluate(due)
            if self.trial.should_prune():
                self.pruned = True
                return False
        return True

    def final(self) -> float:
        """The last evaluation, after training: the trial's value."""
        return self._evaluate(self.n_evaluations)

    def _evaluate(self, step: int) -> float:
        self._check_weights()
        assert self.model is not None
        self.last = self.evaluate(self.model)
        value = float(self.last["return_mean"])
        if not math.isfinite(value):
            raise DivergedError(f"the evaluation's mean return is {value} at step {self.num_timesteps:,}")
        self.trial.report(value, step)
        self.reported = step
        return value


def _finite_weights(model: BaseAlgorithm) -> bool:
    with torch.no_grad():
        return all(bool(torch.isfinite(parameter).all()) for parameter in model.policy.parameters())


class _Interrupted(Exception):
    """The trial was stopped by Ctrl-C."""


@dataclass
class _Setup:
    """Everything the trials of one worker share."""

    algo: str
    env_id: str
    env_kwargs: dict[str, Any]
    base: dict[str, Any]
    n_timesteps: int
    n_envs: int
    vec_env: str
    seed: int
    device: str
    n_evaluations: int
    n_eval_episodes: int
    space: SearchSpace
    context: SearchContext
    verbose: int
    stop: threading.Event = field(default_factory=threading.Event)


def _objective(trial: optuna.Trial, setup: _Setup) -> float:
    """Train and evaluate one trial; its value is the last evaluation's mean return.

    :raises optuna.TrialPruned: pruned at an intermediate evaluation
    :raises _Interrupted: stopped by Ctrl-C
    """
    sampled = setup.space(trial, setup.context)
    hyperparams = merge_hyperparams(setup.base, sampled)
    trial.set_user_attr("hyperparams", _plain(hyperparams))
    trial.set_user_attr("tuned", sorted(sampled))
    spec = get_algo(setup.algo)
    env = make_masked_vec_env(
        setup.env_id,
        setup.n_envs,
        setup.seed,
        setup.vec_env,
        setup.env_kwargs,
        sees_mask=spec.sees_mask,
        needs_mask=spec.needs_mask,
    )
    try:
        model = build_model(setup.algo, env, hyperparams, seed=setup.seed, device=setup.device)
        if hyperparams.get("behaviour_cloning") is not None:  # each trial starts from the clone, as a run does
            demonstrator = load_demonstrator(model, hyperparams["behaviour_cloning"], import_object)
            behaviour_clone(
                model, demonstrator, setup.env_id, setup.env_kwargs, hyperparams["behaviour_cloning"], setup.seed
            )

        def evaluate(model: BaseAlgorithm) -> dict[str, Any]:
            return evaluate_model(
                model,
                setup.algo,
                setup.env_id,
                setup.env_kwargs,
                n_episodes=setup.n_eval_episodes,
                deterministic=True,
                seed=setup.seed + EVAL_SEED_OFFSET,
            )

        evaluation = TrialEvaluation(
            trial, evaluate, setup.n_timesteps // setup.n_evaluations, setup.n_evaluations, setup.stop
        )
        try:
            model.learn(setup.n_timesteps, callback=evaluation)
        except DivergedError:
            raise
        except Exception as error:
            # NaN weights make the next forward pass fail, in whatever way it fails: name the cause.
            if not _finite_weights(model):
                raise DivergedError(
                    f"the network's weights are not finite at step {model.num_timesteps:,} ({_first_line(error)})"
                ) from error
            raise
        if setup.stop.is_set():
            raise _Interrupted("interrupted")
        if evaluation.pruned:
            raise optuna.TrialPruned(f"pruned at evaluation {evaluation.reported} of {setup.n_evaluations}")
        value = evaluation.final()
        if "invalid_action_rate" in evaluation.last:
            trial.set_user_attr("invalid_action_rate", float(evaluation.last["invalid_action_rate"]))
        return value
    finally:
        env.close()


def _run_trial(study: optuna.Study, trial: optuna.Trial, setup: _Setup, heartbeat: Heartbeat) -> TrialState:
    """Run ``trial`` to its end and tell the study how it ended; every error of the trial is its FAIL.

    :param heartbeat: the trial's heartbeat, started: stopped when the trial ends
    """
    started = time.monotonic()
    value = None
    try:
        value = _objective(trial, setup)
        state, note = TrialState.COMPLETE, f"return {value:+.3f}"
    except optuna.TrialPruned as pruned:
        state, note = TrialState.PRUNED, str(pruned)
    except _Interrupted:
        state, note = TrialState.FAIL, "interrupted"
        trial.set_user_attr("fail_reason", note)
    except Exception as error:  # the trial's failure (divergence, refused hyperparameters, ...): the study goes on
        state, note = TrialState.FAIL, f"{type(error).__name__}: {_first_line(error)}"
        trial.set_user_attr("fail_reason", note)
    finally:
        heartbeat.stop()
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    if setup.verbose:
        print(f"trial {trial.number}: {state.name} {note} ({time.monotonic() - started:.1f} s, worker {WORKER})")
    return state


def _work(
    study: optuna.Study, setup: _Setup, options: TuningOptions, lock: ClaimLock, storage: Storage, budget: _Budget
) -> None:
    """One worker thread: claim a trial while holding the study's lock, run it, until the study or budget is done."""
    while not setup.stop.is_set():
        with lock.hold():
            if not budget.take():
                return
            fail_dead_workers(study)
            if storage.heartbeat is not None:
                optuna.storages.fail_stale_trials(study)
            counted = len(study.get_trials(deepcopy=False, states=COUNTED_STATES))
            if options.max_total_trials is not None and counted >= options.max_total_trials:
                return
            trial = study.ask()
            trial.set_user_attr("worker", WORKER)
            trial.set_user_attr("pid_namespace", PID_NAMESPACE)
            # Its first heartbeat before the lock goes: no trial is ever RUNNING without one.
            heartbeat = Heartbeat(storage.heartbeat, trial)
            heartbeat.start()
        _run_trial(study, trial, setup, heartbeat)


class _Budget:
    """``--n-trials`` of one process, shared by its threads (``None``: no limit of its own)."""

    def __init__(self, n_trials: int | None):
        self.left = n_trials
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.left is None:
                return True
            if self.left <= 0:
                return False
            self.left -= 1
            return True


# --- the study -----------------------------------------------------------------------------------------------------


def default_study_name(algo: str, env_id: str) -> str:
    """The study's name without ``--study-name``: ``<algo>-<EnvName>`` (the same command on N machines shares it)."""
    return f"{algo}-{env_id.split('/')[-1]}"


def _make_sampler(options: TuningOptions, seed: int, shared: bool) -> BaseSampler:
    # Workers of one shared study must not draw the same "random" trials: their samplers' seeds differ by worker.
    sampler_seed = _mix(seed, WORKER) if shared else seed
    if options.sampler == "random":
        return RandomSampler(seed=sampler_seed)
    return TPESampler(n_startup_trials=options.n_startup_trials, seed=sampler_seed, multivariate=True)


def _mix(seed: int, text: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=4).digest(), "big")


def _make_pruner(options: TuningOptions, n_evaluations: int) -> BasePruner:
    # The zoo's pruners, its settings: steps are evaluation numbers.
    if options.pruner == "median":
        return MedianPruner(n_startup_trials=options.n_startup_trials, n_warmup_steps=n_evaluations // 3)
    if options.pruner == "halving":
        return SuccessiveHalvingPruner(min_resource=1, reduction_factor=4, min_early_stopping_rate=0)
    return NopPruner()


def _new_tuning_folder(log_folder: Path, algo: str, env_id: str) -> Path:
    """``<log_folder>/tuning/<algo>/<EnvName>_<N>`` with the next free ``N`` (outside ``<log_folder>/<algo>``, whose
    ``<EnvName>_<N>`` numbers count training runs)."""
    parent = log_folder / "tuning" / algo
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TuningError(f"cannot create the folder {parent}: {error.strerror}") from None
    return new_numbered_folder(parent, env_id.split("/")[-1])


def _check_request(algo: str, env_id: str, env_kwargs: dict[str, Any], base: dict[str, Any]) -> None:
    """Build one model from the base hyperparameters, so a bad env, algo or hyperparameter fails here, in one line,
    rather than in every trial."""
    spec = get_algo(algo)
    try:
        env = make_masked_vec_env(
            env_id, 1, 0, "dummy", env_kwargs, sees_mask=spec.sees_mask, needs_mask=spec.needs_mask
        )
    except ValueError as error:
        raise TuningError(f"cannot tune --algo {algo} on {env_id}: {_first_line(error)}") from None
    try:
        build_model(algo, env, base, seed=0, device="cpu")
    except (TypeError, ValueError, AssertionError) as error:
        raise TuningError(
            f"the hyperparameters of --algo {algo} on {env_id} are refused: {_first_line(error)}"
        ) from None
    finally:
        env.close()


def tune(
    algo: str,
    env_id: str,
    base_hyperparams: Mapping[str, Any],
    n_timesteps: int,
    seed: int = 0,
    log_folder: Path = Path("runs"),
    options: TuningOptions | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    n_envs: int | None = None,
    vec_env: str = "dummy",
    device: str = "auto",
    verbose: int = 1,
    search: SearchSpace | None = None,
    command: str | None = None,
) -> Path:
    """Run a study (this process is one of its workers) and write its results; return the tuning folder.

    :param algo: an ``--algo`` name
    :param env_id: a gymnasium env id
    :param base_hyperparams: the hyperparameters the sampled ones are laid over: the env file's section with the
        user's overrides (:func:`maskrl.agents.hyperparams.load_hyperparams`)
    :param n_timesteps: env steps of one trial
    :param seed: seed of every trial's training (the same for all, so that trials differ by their hyperparameters
        only) and, plus :data:`EVAL_SEED_OFFSET`, of their evaluations; also the sampler's
    :param log_folder: the tuning folder goes in ``<log_folder>/tuning/<algo>/``
    :param options: the study's options (the zoo's flags)
    :param env_kwargs: env constructor arguments (default: ``base_hyperparams["env_kwargs"]``)
    :param n_envs: parallel envs of a trial (default: ``base_hyperparams["n_envs"]``, else 1)
    :param vec_env: ``"dummy"`` or ``"subproc"``
    :param device: torch device of the trials
    :param verbose: 0 nothing but the warnings, 1 a line per trial and a summary, 2 also Optuna's logs
    :param search: the search space (default: the algorithm's, :func:`maskrl.agents.search_spaces.search_space`)
    :param command: the command line, recorded in ``tuning.yml``
    :raises TuningError: in one line: a storage, a study of other settings, a request no trial could run
    """
    options = options or TuningOptions()
    base = dict(base_hyperparams)
    env_kwargs = dict(env_kwargs if env_kwargs is not None else base.get("env_kwargs") or {})
    n_envs = n_envs or int(base.get("n_envs", 1))
    # What the trials really use, so that the best hyperparameters written back say it.
    base["n_envs"] = n_envs
    if env_kwargs:
        base["env_kwargs"] = env_kwargs
    if n_timesteps < 1:
        raise TuningError(f"a trial needs at least 1 step, got {n_timesteps}")
    space = search or search_space(algo)
    n_evaluations = options.evaluations(n_timesteps)
    _check_request(algo, env_id, env_kwargs, base)
    study_name = options.study_name or default_study_name(algo, env_id)
    settings = _plain(
        {
            "algo": algo,
            "env": env_id,
            "env_kwargs": env_kwargs,
            "n_timesteps": n_timesteps,
            "n_envs": n_envs,
            "seed": seed,
            "n_evaluations": n_evaluations,
            "n_eval_episodes": options.n_eval_episodes,
            "hyperparams": base,
        }
    )
    setup = _Setup(
        algo=algo,
        env_id=env_id,
        env_kwargs=env_kwargs,
        base=base,
        n_timesteps=n_timesteps,
        n_envs=n_envs,
        vec_env=vec_env,
        seed=seed,
        device=device,
        n_evaluations=n_evaluations,
        n_eval_episodes=options.n_eval_episodes,
        space=space,
        context=SearchContext(algo, n_timesteps, n_envs, base),
        verbose=verbose,
    )
    with quiet_optuna(verbose):
        folder = _new_tuning_folder(log_folder, algo, env_id)
        try:
            storage = open_storage(options.storage, folder, options.heartbeat_interval, _on_stale_trial)
            study, lock = _join_study(storage, study_name, settings, options, seed, n_evaluations)
        except TuningError:
            shutil.rmtree(folder)  # a refused study leaves nothing behind
            raise
        try:
            _write_yaml(
                folder / SETTINGS,
                {
                    **settings,
                    "study_name": study_name,
                    "storage": storage.shown,
                    "options": {key: value for key, value in asdict(options).items() if key != "storage"},
                    "worker": WORKER,
                    "command": _without_password(command, options.storage, storage.shown),
                    "versions": _versions(),
                },
            )
            if verbose:
                print(_start_line(setup, options, study_name, storage, folder, lock), flush=True)
            _run_workers(study, setup, options, lock, storage)
            if storage.heartbeat is not None:
                optuna.storages.fail_stale_trials(study)
            summary = write_results(study, folder, settings, storage.argument, study_name)
        finally:
            lock.close()
    if verbose:
        print(summary)
    return folder


def _join_study(
    storage: Storage,
    study_name: str,
    settings: dict[str, Any],
    options: TuningOptions,
    seed: int,
    n_evaluations: int,
) -> tuple[optuna.Study, ClaimLock]:
    """Create the study or load it, check that it was made with the same settings, and make its lock."""
    study = optuna.create_study(
        storage=storage.storage,
        study_name=study_name,
        direction="maximize",
        load_if_exists=True,
        sampler=_make_sampler(options, seed, shared=options.storage is not None),
        pruner=_make_pruner(options, n_evaluations),
    )
    lock = ClaimLock(storage, study_name)
    try:
        with lock.hold():  # two workers starting together: one records the settings, the other checks them
            _check_settings(study, settings, storage)
    except BaseException:
        lock.close()
        raise
    return study, lock


def _start_line(
    setup: _Setup, options: TuningOptions, study_name: str, storage: Storage, folder: Path, lock: ClaimLock
) -> str:
    cap = (
        f"until the study holds {options.max_total_trials} trials"
        if options.max_total_trials is not None
        else f"{options.n_trials} trials"
    )
    line = (
        f"tuning {setup.algo} on {setup.env_id}: study {study_name} in {storage.shown}; {cap} of "
        f"{setup.n_timesteps:,} steps, {setup.n_evaluations} evaluation(s) of {setup.n_eval_episodes} episodes each; "
        f"{options.sampler} sampler, {options.pruner} pruner; folder {folder}"
    )
    if options.max_total_trials is not None and not lock.exact:
        line += (
            f"\nwarning: {storage.shown} has no lock shared by the workers: they may overshoot --max-total-trials by "
            "a few trials"
        )
    return line


@contextmanager
def quiet_optuna(verbose: int) -> Iterator[None]:
    """Without Optuna's warnings about what this module does on purpose (experimental heartbeats and multivariate
    TPE; heartbeats with ask-and-tell, which it records in its own thread) and, below ``verbose`` 2, without Optuna's
    log lines (a line per trial is printed instead)."""
    previous = optuna.logging.get_verbosity()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        if verbose < 2:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            yield
        finally:
            optuna.logging.set_verbosity(previous)


def _run_workers(study: optuna.Study, setup: _Setup, options: TuningOptions, lock: ClaimLock, storage: Storage) -> None:
    """Run ``--n-jobs`` worker threads; Ctrl-C stops the trials in progress (FAIL, "interrupted") and the workers."""
    budget = _Budget(None if options.max_total_trials is not None else options.n_trials)
    with ThreadPoolExecutor(options.n_jobs, thread_name_prefix="trial") as pool:
        futures = [pool.submit(_work, study, setup, options, lock, storage, budget) for _ in range(options.n_jobs)]
        try:
            pending = set(futures)
            while pending:
                # A timeout, so that Ctrl-C reaches this (main) thread while the workers train.
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                if any(future.exception() is not None for future in done):
                    setup.stop.set()  # a worker's own error (not a trial's, which is its FAIL): stop the others
                    break
        except KeyboardInterrupt:
            setup.stop.set()
            print("interrupted: stopping the trials in progress", file=sys.stderr, flush=True)
        wait(futures)
    for future in futures:
        future.result()


def _check_settings(study: optuna.Study, settings: dict[str, Any], storage: Storage) -> None:
    """Record the settings in a new study, or check that they are the study's: trials of one study must be
    comparable (the same env, budget, seed, evaluation and base hyperparameters)."""
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, settings)
        return
    differing = [key for key in settings if stored.get(key) != settings[key]]
    if differing:
        theirs = ", ".join(f"{key}={stored.get(key)!r}" for key in differing)
        ours = ", ".join(f"{key}={settings[key]!r}" for key in differing)
        raise TuningError(
            f"study {study.study_name} in {storage.shown} was made with {theirs}, and this command asks for {ours}: "
            "give another --study-name, or the study's settings"
        )


# --- results -------------------------------------------------------------------------------------------------------


def write_results(
    study: optuna.Study, folder: Path, settings: Mapping[str, Any], storage_argument: str, study_name: str
) -> str:
    """Write ``best_hyperparams.yml`` (when a trial is complete) and ``report.md`` into ``folder``; return a summary.

    :param study: the study
    :param folder: the tuning folder
    :param settings: the study's settings (``algo``, ``env``, ...)
    :param storage_argument: the ``--storage`` that reaches the study again, for the commands shown
    :param study_name: the study's name
    """
    algo, env_id = settings["algo"], settings["env"]
    trials = study.get_trials(deepcopy=False)
    by_state = {state.name: sum(trial.state == state for trial in trials) for state in TrialState}
    counts = ", ".join(f"{count} {name}" for name, count in by_state.items() if count)
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    storage_flags = f"--storage {shlex.quote(storage_argument)} --study-name {shlex.quote(study_name)}"
    lines = [
        f"# Tuning {algo} on {env_id}",
        "",
        f"Study `{study_name}` in `{storage_argument}`: {len(trials)} trials ({counts or 'none'}); "
        f"{settings['n_timesteps']:,} steps per trial, {settings['n_evaluations']} evaluation(s) of "
        f"{settings['n_eval_episodes']} deterministic episodes (seed {settings['seed'] + EVAL_SEED_OFFSET}).",
        "",
    ]
    summary = [f"tuning folder: {folder}", f"trials: {len(trials)} ({counts or 'none'})"]
    if complete:
        best = study.best_trial
        hyperparams = dict(best.user_attrs.get("hyperparams") or {})
        tuned = [key for key in best.user_attrs.get("tuned", hyperparams) if key in hyperparams]
        flags = " ".join(shlex.quote(f"{key}={_flow(hyperparams[key])}") for key in tuned)
        _write_best(folder / BEST_HYPERPARAMS, algo, env_id, best, hyperparams, study_name, settings)
        retrain = f"python train.py --algo {algo} --env {env_id} {storage_flags} --trial-id {best.number}"
        lines += [
            f"**Best:** trial {best.number}, mean return {best.value:+.3f}.",
            "",
            f"- `{BEST_HYPERPARAMS}`: its hyperparameters as the `{algo}` section of "
            f"`maskrl/agents/hyperparams/{env_id.split('/')[-1]}.yml` (copy it there);",
            f"- as flags: `--hyperparams {flags}`;",
            f"- retrain it: `{retrain}`.",
            "",
            "## Parameter importance",
            "",
            _importances(study, complete),
            "",
            "## Best trials",
            "",
            "| trial | return | params |",
            "|---:|---:|---|",
        ]
        for trial in sorted(complete, key=lambda t: t.value, reverse=True)[:5]:
            params = ", ".join(f"{key}={_short(value)}" for key, value in trial.params.items())
            lines.append(f"| {trial.number} | {trial.value:+.3f} | {params} |")
        summary += [
            f"best:  trial {best.number}, mean return {best.value:+.3f} ({folder / BEST_HYPERPARAMS})",
            f"next:  {retrain}",
        ]
    else:
        lines.append("No trial is complete yet: no best hyperparameters.")
    failed = [trial for trial in trials if trial.state == TrialState.FAIL]
    if failed:
        lines += ["", "## Failed trials", ""]
        lines += [f"- trial {t.number}: {t.user_attrs.get('fail_reason', 'its worker stopped')}" for t in failed[:20]]
    (folder / REPORT).write_text("\n".join(lines) + "\n")
    summary.append(f"report: {folder / REPORT}; watch: optuna-dashboard {shlex.quote(storage_argument)}")
    return "\n".join(summary)


def _importances(study: optuna.Study, complete: list[FrozenTrial]) -> str:
    if len(complete) < 2:
        return "Not computed: fewer than 2 complete trials."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError, ImportError) as error:
        return f"Not computed: {_first_line(error)}"
    if not importances:
        return "Not computed: no parameter varies across the complete trials."
    return ", ".join(f"{name} {value:.2f}" for name, value in importances.items()) + (
        f" (Optuna's default evaluator, PED-ANOVA, over {len(complete)} complete trials)"
    )


def _write_best(
    path: Path,
    algo: str,
    env_id: str,
    best: FrozenTrial,
    hyperparams: dict[str, Any],
    study_name: str,
    settings: Mapping[str, Any],
) -> None:
    header = (
        f"# Best trial ({best.number}) of study {study_name}: mean return {best.value:+.3f} over "
        f"{settings['n_eval_episodes']} deterministic episodes after {settings['n_timesteps']:,} steps.\n"
        f"# The {algo} section of maskrl/agents/hyperparams/{env_id.split('/')[-1]}.yml for {env_id}: copy it there.\n"
    )
    _write_yaml(path, {algo: hyperparams}, header)


def trial_hyperparams(
    storage: str,
    trial_number: int,
    study_name: str | None = None,
    algo: str | None = None,
    env_id: str | None = None,
) -> dict[str, Any]:
    """The hyperparameters trial ``trial_number`` of a study was run with (the env file's format).

    :param storage: a database URL, a journal file or a tuning folder
    :param trial_number: the trial's number in the study
    :param study_name: the study (default: :func:`default_study_name` of ``algo`` and ``env_id``, or the storage's
        only study)
    :param algo: the ``--algo`` to train them with: refused if the study tuned another one
    :param env_id: the env, for the default study name
    :raises TuningError: no such storage, study or trial, or a study of another algo
    """
    opened = open_storage(storage, None, None)
    name = study_name or (default_study_name(algo, env_id) if algo and env_id else None)
    names = optuna.get_all_study_names(opened.storage)
    if name not in names:
        if study_name is None and len(names) == 1:
            name = names[0]
        else:
            held = ", ".join(names) if names else "no study"
            raise TuningError(f"no study {name or ''} in {opened.shown} (it holds {held}): give --study-name".strip())
    study = optuna.load_study(study_name=name, storage=opened.storage)
    found = [trial for trial in study.get_trials(deepcopy=False) if trial.number == trial_number]
    if not found:
        raise TuningError(f"study {name} has no trial {trial_number} (it has {len(study.trials)} trials, from 0)")
    hyperparams = found[0].user_attrs.get("hyperparams")
    if not isinstance(hyperparams, dict):
        raise TuningError(f"trial {trial_number} of study {name} holds no hyperparameters of maskrl's")
    tuned_algo = (study.user_attrs.get(SETTINGS_ATTR) or {}).get("algo")
    if algo is not None and tuned_algo not in (None, algo):
        raise TuningError(
            f"study {name} tuned --algo {tuned_algo}: retrain trial {trial_number} with --algo {tuned_algo}"
        )
    return json.loads(json.dumps(hyperparams))  # a copy, plain data only


# --- helpers -------------------------------------------------------------------------------------------------------


def _without_password(command: str | None, storage: str | None, shown: str) -> str | None:
    """The command line with the storage URL's password hidden, as it is written to files."""
    if command is None or storage is None or "://" not in storage:
        return command
    return command.replace(storage, shown)


def _plain(value: Any) -> Any:
    """``value`` as JSON and YAML hold it (tuples become lists), for storages and files."""
    return json.loads(json.dumps(value))


def _flow(value: Any) -> str:
    """A value as ``--hyperparams`` parses it back: YAML flow style on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()
    return text.removesuffix("...").strip()


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _write_yaml(path: Path, data: Any, header: str = "") -> None:
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120))


def _versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in ("maskrl", "optuna", "stable-baselines3", "sb3-contrib", "torch", "gymnasium"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
