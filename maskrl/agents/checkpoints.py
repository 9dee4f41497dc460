"""Checkpoints a run can be resumed from, written so that no crash can corrupt them.

A checkpoint at step ``N`` in a run's ``checkpoints/`` folder is

* ``model_N_steps.zip``: the SB3 model (``model.save``: parameters, optimizer state, hyperparameters),
* ``model_N_steps_vecnormalize.pkl``: the ``VecNormalize`` statistics, only if the training env has them,
* ``model_N_steps.json``: the sidecar with what the zip does not hold: ``num_timesteps``, ``_n_updates``, the
  resume counter, the states of Python's, NumPy's and torch's global random generators, and the zip's SHA-256.

Every file is written to a temporary file in the same folder, fsync'ed and renamed over its final name
(``os.replace`` is atomic), and the sidecar is written last: a checkpoint without a sidecar, or whose zip does
not match the sidecar's checksum, is incomplete and skipped. Old checkpoints are deleted sidecar first for the
same reason. Checkpoints are taken at rollout boundaries (after an update, before collecting the next rollout),
where the parameters, the optimizer and the step counter agree, so a resumed run has exactly the length of an
uninterrupted one.

A run that completes also checkpoints its last step, so that ``train.py --resume RUN -n MORE`` can extend it from
exactly where it ended. :meth:`maskrl.agents.run_folder.RunFolder.lock` keeps two processes from writing to one run
folder at the same time.

The env's state (e.g. the race in progress) cannot be saved in general: a resumed run re-seeds its envs
deterministically (``seed + resumes * RESEED_STRIDE``) and loses the episodes in progress, so it is reproducible
but not bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import pickle
import random
import re
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from maskrl.files import atomic_write
from maskrl.untrusted import read_json

FORMAT_VERSION = 1
#: Largest sidecar read (one is about 25 kB, mostly the random generators' states).
MAX_SIDECAR_BYTES = 1 << 20
#: Env seeds of the ``k``-th resume start at ``seed + k * RESEED_STRIDE``, clear of the seeds of other resumes.
RESEED_STRIDE = 1_000_003
_NAME = re.compile(r"^model_(\d+)_steps\.json$")
T = TypeVar("T")


def capture_rng_state() -> dict[str, Any]:
    """The global random generators' states, as JSON-able data."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch_state = np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()
    torch.set_rng_state(torch.from_numpy(torch_state))


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint's files and sidecar."""

    folder: Path
    step: int

    @property
    def model_path(self) -> Path:
        return self.folder / f"model_{self.step}_steps.zip"

    @property
    def state_path(self) -> Path:
        return self.folder / f"model_{self.step}_steps.json"

    @property
    def vecnormalize_path(self) -> Path:
        return self.folder / f"model_{self.step}_steps_vecnormalize.pkl"

    def read_state(self) -> dict[str, Any]:
        """The sidecar, after checking that the zip is the one it describes.

        :raises ValueError: the checkpoint is incomplete or corrupt
        """
        try:
            state = read_json(self.state_path, "sidecar", MAX_SIDECAR_BYTES)  # bounded: the run may not be ours
            if not isinstance(state, dict):
                raise ValueError("its sidecar is not a JSON object")
            if not self.model_path.is_file():  # e.g. a link to /dev/zero, which _sha256 would read without end
                raise ValueError("its zip is missing or not a regular file")
            digest = _sha256(self.model_path)
        except (OSError, ValueError) as error:
            raise ValueError(f"checkpoint at step {self.step} is unreadable: {error}") from None
        if state.get("format") != FORMAT_VERSION or state.get("num_timesteps") != self.step:
            raise ValueError(f"checkpoint at step {self.step} has an unknown format")
        if digest != state.get("model_sha256"):
            raise ValueError(f"checkpoint at step {self.step} is corrupt: its zip does not match its checksum")
        if state.get("vecnormalize") and not self.vecnormalize_path.is_file():
            raise ValueError(f"checkpoint at step {self.step} lacks its VecNormalize statistics")
        return state

    def delete(self) -> None:
        # Sidecar first: an interrupted deletion leaves an incomplete checkpoint, never an inconsistent one.
        for path in (self.state_path, self.vecnormalize_path, self.model_path):
            path.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_checkpoints(folder: Path) -> list[Checkpoint]:
    """The checkpoints in ``folder`` that have a sidecar, oldest first (temp files are ignored)."""
    if not folder.is_dir():
        return []
    steps = [int(match.group(1)) for path in folder.iterdir() if (match := _NAME.match(path.name))]
    return [Checkpoint(folder, step) for step in sorted(steps)]


def load_latest(folder: Path, load: Callable[[Checkpoint, dict[str, Any]], T]) -> tuple[Checkpoint, T] | None:
    """Load the newest checkpoint that loads, warning about (and skipping) corrupt ones.

    :param load: loads a checkpoint given its sidecar; any exception means "corrupt, try the previous one"
    :return: the checkpoint and what ``load`` returned, or ``None`` if no checkpoint loads
    """
    for checkpoint in reversed(list_checkpoints(folder)):
        try:
            return checkpoint, load(checkpoint, checkpoint.read_state())
        except Exception as error:
            warnings.warn(f"skipping checkpoint {checkpoint.model_path.name}: {error}", stacklevel=2)
    return None


def save_checkpoint(
    model: BaseAlgorithm, folder: Path, num_timesteps: int, rng_state: dict[str, Any], resumes: int
) -> Checkpoint:
    """Write a checkpoint of ``model`` as it was at step ``num_timesteps`` (see the module's docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint(folder, num_timesteps)
    # The zip must say ``num_timesteps`` even when saved mid-rollout, after the counter moved on.
    current, model.num_timesteps = model.num_timesteps, num_timesteps
    try:
        atomic_write(checkpoint.model_path, model.save)
    finally:
        model.num_timesteps = current
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        atomic_write(checkpoint.vecnormalize_path, lambda file: pickle.dump(vec_normalize, file))
    state = {
        "format": FORMAT_VERSION,
        "num_timesteps": num_timesteps,
        "n_updates": int(getattr(model, "_n_updates", 0)),
        "resumes": resumes,
        "vecnormalize": vec_normalize is not None,
        "model_sha256": _sha256(checkpoint.model_path),
        "rng": rng_state,
    }
    atomic_write(checkpoint.state_path, lambda file: file.write(json.dumps(state).encode()))
    return checkpoint


class CheckpointCallback(BaseCallback):
    """Atomic, resumable checkpoints every ``save_freq`` env steps, keeping the last ``keep``; stops on request.

    Checkpoints are taken at the first rollout boundary at or after each ``save_freq`` steps. :meth:`request_stop`
    (called by :func:`handle_interrupts`' signal handler) makes training stop at the next env step; the caller
    then saves :meth:`save_interrupted`, the state at the start of the rollout in progress.

    :param save_freq: env steps between checkpoints; <= 0 saves none (an interruption still saves one)
    :param folder: the run's ``checkpoints/`` folder
    :param keep: how many checkpoints to keep, newest first
    :param resumes: how many times the run was resumed, recorded for the env re-seeding of the next resume
    """

    def __init__(self, save_freq: int, folder: Path, keep: int = 3, resumes: int = 0, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.save_freq = save_freq
        self.folder = Path(folder)
        self.keep = keep
        self.resumes = resumes
        self.stop_signal: int | None = None
        self._last_saved: int | None = None
        self._boundary: tuple[int, dict[str, Any]] | None = None

    def _on_training_start(self) -> None:
        # A resumed run already has a checkpoint where it starts.
        self._last_saved = self.model.num_timesteps
        for stale in self.folder.glob(".model_*.tmp*"):  # left by a crash mid-write
            stale.unlink(missing_ok=True)

    def _on_rollout_start(self) -> None:
        self._boundary = (self.model.num_timesteps, capture_rng_state())
        step = self.model.num_timesteps
        if self.save_freq > 0 and self._last_saved is not None and step - self._last_saved >= self.save_freq:
            self._save(*self._boundary)

    def _on_step(self) -> bool:
        return self.stop_signal is None

    def request_stop(self, signum: int) -> None:
        self.stop_signal = signum

    def save_final(self) -> Checkpoint | None:
        """Checkpoint the state at the end of training (nothing when checkpoints are disabled or already there)."""
        if self.save_freq <= 0 or self._last_saved == self.model.num_timesteps:
            return None
        return self._save(self.model.num_timesteps, capture_rng_state())

    def save_interrupted(self) -> Checkpoint | None:
        """Checkpoint the state at the start of the rollout in progress (nothing if training never started)."""
        return None if self._boundary is None else self._save(*self._boundary)

    def _save(self, step: int, rng_state: dict[str, Any]) -> Checkpoint:
        checkpoint = save_checkpoint(self.model, self.folder, step, rng_state, self.resumes)
        self._last_saved = step
        if self.verbose:
            print(f"checkpoint: {checkpoint.model_path}")
        for old in list_checkpoints(self.folder)[: -self.keep]:
            old.delete()
        return checkpoint


@contextlib.contextmanager
def handle_interrupts(callback: CheckpointCallback) -> Iterator[None]:
    """Turn the first SIGINT/SIGTERM into a graceful stop of training, a second one into ``KeyboardInterrupt``.

    Stopping at the next env step (rather than raising wherever the signal lands, maybe inside an optimizer step)
    keeps the model consistent for the checkpoint. The previous handlers are restored on exit. Outside the main
    thread, where Python cannot install signal handlers, this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if callback.stop_signal is not None:
            raise KeyboardInterrupt
        callback.request_stop(signum)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
