"""A run folder: the files one training run writes, under the names every other module gets from here.

Every run gets its own folder ``<log-folder>/<algo>/<EnvName>_<N>`` (:meth:`RunFolder.create`), holding

=====================  ===========================================================================================
``config.yml``          the resolved configuration, plain YAML: what the safe loader and ``--resume`` rebuild from
``tb/``                 TensorBoard events and SB3's CSV logs
``checkpoints/``        the resumable checkpoints (:mod:`maskrl.agents.checkpoints` names the files inside)
``evaluations.npz``     the periodic evaluations (SB3's ``EvalCallback``: ``timesteps``, ``results``, ...)
``best_model.zip``      the best model of the periodic evaluations (SB3's ``EvalCallback``)
``final_model.zip``     the model at the end of training
``final_eval.json``     the final model's evaluation and the step it covers: the last file a run writes
``attention_map.png``   the last attention map of an entity-attention policy
``.lock``               locked while a process trains in the folder (:meth:`RunFolder.lock`)
=====================  ===========================================================================================

Folders written by earlier versions of maskrl use the same names (``tests/fixtures/legacy_v0_1``). A run folder may
come from someone else: what is read back here (``evaluations.npz``) is read within bounds and pickle-free
(:mod:`maskrl.untrusted`); ``config.yml`` is read by :func:`maskrl.agents.safe_load.read_config`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml

from maskrl.files import atomic_write
from maskrl.untrusted import check_npz

__all__ = ["MAX_EVALUATIONS_BYTES", "RunFolder", "RunFolderError", "RunInUseError", "new_numbered_folder"]

#: Largest evaluations.npz read back (one row per evaluation: a few kB).
MAX_EVALUATIONS_BYTES = 64 << 20


class RunFolderError(ValueError):
    """A run folder that cannot be made, or a file of one that is not what the run writes. One line."""


class RunInUseError(RuntimeError):
    """Another process holds a run folder's lock."""


@dataclass(frozen=True)
class RunFolder:
    """The folder of one run, and the paths of its files (see the module's docstring).

    :param path: the folder (it may not exist yet)
    """

    path: Path

    CONFIG: ClassVar[str] = "config.yml"
    TENSORBOARD: ClassVar[str] = "tb"
    CHECKPOINTS: ClassVar[str] = "checkpoints"
    #: Written by SB3's ``EvalCallback`` given ``log_path=<run folder>`` (see :meth:`eval_callback_paths`).
    EVALUATIONS: ClassVar[str] = "evaluations.npz"
    #: Written by SB3's ``EvalCallback`` given ``best_model_save_path=<run folder>``.
    BEST_MODEL: ClassVar[str] = "best_model.zip"
    FINAL_MODEL: ClassVar[str] = "final_model.zip"
    FINAL_EVAL: ClassVar[str] = "final_eval.json"
    ATTENTION_MAP: ClassVar[str] = "attention_map.png"
    LOCK: ClassVar[str] = ".lock"
    #: The models of a run, by the name ``evaluate.py --model`` gives them.
    MODELS: ClassVar[dict[str, str]] = {"best": BEST_MODEL, "final": FINAL_MODEL}

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __str__(self) -> str:
        return str(self.path)

    @classmethod
    def create(cls, log_folder: Path, algo: str, env_id: str) -> RunFolder:
        """Create ``<log_folder>/<algo>/<EnvName>_<N>`` with the next free ``N`` (safe against a concurrent run).

        :raises RunFolderError: the log folder cannot be created
        """
        parent = Path(log_folder) / algo
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunFolderError(f"cannot create log folder {parent}: {error.strerror}") from None
        return cls(new_numbered_folder(parent, env_id.split("/")[-1]))

    @classmethod
    def of_model(cls, model_path: Path) -> RunFolder:
        """The folder a model zip belongs to: its own, or the run folder above a run's ``checkpoints/``."""
        folder = cls(Path(model_path).parent)
        if folder.path.name == cls.CHECKPOINTS and not folder.has_config():
            run = cls(folder.path.parent)
            if run.has_config():
                return run
        return folder

    # --- the files ---------------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def evaluations(self) -> Path:
        return self.path / self.EVALUATIONS

    @property
    def best_model(self) -> Path:
        return self.path / self.BEST_MODEL

    @property
    def final_model(self) -> Path:
        return self.path / self.FINAL_MODEL

    @property
    def final_eval(self) -> Path:
        return self.path / self.FINAL_EVAL

    @property
    def attention_map(self) -> Path:
        return self.path / self.ATTENTION_MAP

    def model(self, which: str = "best") -> Path | None:
        """The run's ``"best"`` model (the final one when there is no best one) or its ``"final"`` one, if it exists.

        :raises KeyError: for another ``which``
        """
        path = self.path / self.MODELS[which]
        if which == "best" and not path.exists():
            path = self.final_model
        return path if path.exists() else None

    def has_config(self) -> bool:
        """Whether the folder has a ``config.yml``; a dangling symlink counts (it must be refused, not ignored)."""
        return self.config.exists() or self.config.is_symlink()

    def eval_callback_paths(self) -> dict[str, str]:
        """The arguments that make SB3's ``EvalCallback`` write :data:`BEST_MODEL` and :data:`EVALUATIONS` here."""
        return {"best_model_save_path": str(self.path), "log_path": str(self.path)}

    # --- reading and writing -------------------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.yml`` atomically, without YAML aliases (a plain config is easier to read and check)."""
        text = yaml.dump(config, Dumper=_NoAliasDumper, sort_keys=False)
        atomic_write(self.config, lambda file: file.write(text.encode()))

    def read_evaluations(self) -> dict[str, np.ndarray] | None:
        """The arrays of ``evaluations.npz`` (``None`` if there is none), checked to be what ``EvalCallback`` writes.

        Read with ``allow_pickle=False`` after :func:`maskrl.untrusted.check_npz` (no object arrays, no array larger
        than its data), and checked to hold one row per evaluation.

        :raises RunFolderError: in one line
        """
        path = self.evaluations
        if not (path.exists() or path.is_symlink()):
            return None
        try:
            check_npz(path, self.EVALUATIONS, MAX_EVALUATIONS_BYTES)
            with np.load(path, allow_pickle=False) as saved:
                arrays = {key: saved[key] for key in saved.files}
        except ValueError as error:  # UntrustedFileError, or NumPy's own refusal
            raise RunFolderError(str(error)) from None
        timesteps, results, lengths = (arrays.get(key) for key in ("timesteps", "results", "ep_lengths"))
        if (
            timesteps is None
            or results is None
            or lengths is None
            or timesteps.ndim != 1
            or results.ndim != 2
            or results.shape != lengths.shape
            or len(results) != len(timesteps)
            or not all(np.issubdtype(a.dtype, np.number) for a in (timesteps, results, lengths))
        ):
            raise RunFolderError(
                f"{path} is not an evaluation log (numeric timesteps (N,), results and ep_lengths (N, E))"
            )
        return arrays

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock for the duration: training and resuming a run never write to it side by side.

        An advisory ``flock`` on ``.lock``, which the operating system releases when the process ends, however it
        ends (``kill -9`` included), so a stale lock cannot block a run. The holder's pid is written in the file for
        the error message. Where ``fcntl`` does not exist (Windows), nothing is locked.

        :raises RunInUseError: naming the pid of the process holding the lock
        """
        try:
            import fcntl
        except ImportError:  # Windows
            yield
            return
        fd = os.open(self.path / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                raise RunInUseError(
                    f"another process{f' (pid {holder})' if holder.isdigit() else ''} is using it"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)  # released with the descriptor: no pid left behind to mislead anyone
        finally:
            os.close(fd)


def new_numbered_folder(parent: Path, name: str) -> Path:
    """Create ``<parent>/<name>_<N>`` with the next free ``N`` (the largest taken plus one) and return it.

    Safe against another process numbering folders in ``parent`` at the same time: ``mkdir`` either creates the
    folder or finds it taken, and then the next number is tried.

    :param parent: an existing folder
    :param name: the folders' name, before ``_<N>``
    """
    taken = [int(p.name.rsplit("_", 1)[1]) for p in parent.glob(f"{name}_*") if p.name.rsplit("_", 1)[1].isdigit()]
    number = max(taken, default=0) + 1
    while True:
        path = parent / f"{name}_{number}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another process took that number in the meantime
            number += 1


class _NoAliasDumper(yaml.SafeDumper):
    """YAML's safe dumper, writing a value used twice twice rather than as an anchor and an alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
