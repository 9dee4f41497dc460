"""Reward-free trajectory datasets: the ``.npz`` file format and window sampling for pretraining.

A dataset file (written by ``python -m maskrl.representation.collect``) is a pickle-free ``.npz``
holding, for ``N`` steps in time order (episodes one after another):

=================  ========================  ===========================================================
key                shape, dtype              content
=================  ========================  ===========================================================
``observations``   ``(N, obs_dim)`` float32  the flat observation ``o(t)``
``actions``        ``(N,)`` int64 or         the action taken at ``o(t)`` (discrete index, or the
                   ``(N, act_dim)`` float32  continuous action vector)
``action_masks``   ``(N, n_mask)`` bool      the action mask at ``o(t)`` (``n_mask = 0`` if the env has none)
``episode_starts`` ``(N,)`` bool             ``True`` where ``o(t)`` is the first observation of an episode
``metadata``       0-d str                   JSON: env id, env kwargs, action space, policy, seed, ...
=================  ========================  ===========================================================

No rewards: the data is for self-supervised pretraining only. A dataset file may come from anyone, so it is read
as hostile: its ``.npz`` directory and array headers are checked before NumPy reads them
(:func:`maskrl.untrusted.check_npz`: no pickled arrays, no array declaring more than its data), arrays load with
``allow_pickle=False``, and their dtypes and values are checked (integer actions within the action count, boolean
masks and starts, JSON metadata) so that a bad file fails here, in one line, rather than deep inside pretraining.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from maskrl.files import atomic_write
from maskrl.untrusted import check_npz, parse_json

__all__ = ["TrajectoryDataset", "WindowSampler", "load_dataset", "save_dataset", "window_indices"]

FORMAT = "maskrl-trajectories-v1"
#: Largest dataset read (uncompressed): 10M steps of a 100-float observation are 4 GB.
MAX_DATASET_BYTES = 16 << 30
_KEYS = ("observations", "actions", "action_masks", "episode_starts", "metadata")


@dataclass
class TrajectoryDataset:
    """Steps of reward-free episodes, in time order.

    :param observations: ``(N, obs_dim)`` float32
    :param actions: ``(N,)`` int64 (discrete) or ``(N, act_dim)`` float32 (continuous)
    :param action_masks: ``(N, n_mask)`` bool
    :param episode_starts: ``(N,)`` bool, ``True`` at the first step of each episode (always at step 0)
    :param metadata: JSON-able description (``env``, ``env_kwargs``, ``action_space``, ``n_actions``, ...)
    """

    observations: np.ndarray
    actions: np.ndarray
    action_masks: np.ndarray
    episode_starts: np.ndarray
    metadata: dict[str, Any]

    def __post_init__(self) -> None:
        n = len(self.observations)
        if self.observations.ndim != 2 or n == 0:
            raise ValueError(f"observations must have shape (N > 0, obs_dim), got {self.observations.shape}")
        for name in ("actions", "action_masks", "episode_starts"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} steps but observations has {n}")
        if self.actions.ndim not in (1, 2) or self.action_masks.ndim != 2 or self.episode_starts.ndim != 1:
            raise ValueError("actions must be (N,) or (N, act_dim), action_masks (N, n_mask), episode_starts (N,)")
        if not bool(self.episode_starts[0]):
            raise ValueError("episode_starts[0] must be True: the data must start at the beginning of an episode")
        if not np.isfinite(self.observations).all():
            raise ValueError("observations contain NaN or inf")

    @property
    def discrete(self) -> bool:
        return self.actions.ndim == 1

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        """Number of actions (discrete; from the metadata, else the largest action + 1) or the action size."""
        if self.discrete:
            return int(self.metadata.get("n_actions", int(self.actions.max()) + 1))
        return int(self.actions.shape[1])

    @property
    def n_episodes(self) -> int:
        return int(self.episode_starts.sum())

    def __len__(self) -> int:
        return len(self.observations)

    def split_episodes(self, fraction: float) -> tuple[TrajectoryDataset, TrajectoryDataset]:
        """Split into the first episodes and the last ``fraction`` of them (e.g. a validation set).

        The last part holds at least one episode, so that small datasets still get a validation set.

        :raises ValueError: if either part would hold no episode (fewer than two episodes, or ``fraction`` not
            in ``(0, 1)``)
        """
        starts = np.flatnonzero(self.episode_starts)
        n_last = max(1, round(fraction * len(starts))) if 0 < fraction < 1 else 0
        if not 0 < n_last < len(starts):
            raise ValueError(f"cannot split {len(starts)} episodes into two non-empty parts with fraction {fraction}")
        cut = int(starts[len(starts) - n_last])
        return self._slice(0, cut), self._slice(cut, len(self))

    def _slice(self, begin: int, end: int) -> TrajectoryDataset:
        return TrajectoryDataset(
            self.observations[begin:end],
            self.actions[begin:end],
            self.action_masks[begin:end],
            self.episode_starts[begin:end],
            dict(self.metadata),
        )


def save_dataset(dataset: TrajectoryDataset, path: Path) -> None:
    """Write ``dataset`` to ``path`` (``.npz``), atomically."""
    metadata = {"format": FORMAT, **dataset.metadata}
    arrays = {
        "observations": dataset.observations.astype(np.float32),
        "actions": dataset.actions.astype(np.int64 if dataset.discrete else np.float32),
        "action_masks": dataset.action_masks.astype(bool),
        "episode_starts": dataset.episode_starts.astype(bool),
        "metadata": np.array(json.dumps(metadata)),
    }
    atomic_write(Path(path), lambda file: np.savez(file, **arrays))


def load_dataset(path: str | Path) -> TrajectoryDataset:
    """Read a dataset file written by :func:`save_dataset` (no pickles are loaded, nothing unbounded is allocated).

    :raises ValueError: in one line, for a missing file, a file that is not such a dataset, or inconsistent arrays
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"dataset file not found: {path}")
    check_npz(path, "dataset", MAX_DATASET_BYTES)  # one-line UntrustedFileError (a ValueError) for a hostile file
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in _KEYS if key not in data.files]
            if missing:
                raise ValueError(f"{path} is not a trajectory dataset (missing: {', '.join(missing)})")
            arrays = {key: data[key] for key in _KEYS}
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
        if str(error).startswith(f"{path} is not a trajectory dataset"):
            raise
        # np.load raises ValueError for a file that is neither .npy nor .npz ("contains pickled data").
        raise ValueError(f"cannot read dataset {path}: not an .npz file ({type(error).__name__})") from None
    raw_metadata = arrays.pop("metadata")
    if raw_metadata.ndim != 0 or raw_metadata.dtype.kind != "U":
        raise ValueError(f"{path}: its metadata is not a JSON string")
    metadata = parse_json(str(raw_metadata), f"{path}: its metadata")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown dataset format (expected {FORMAT})")
    _check_arrays(arrays, metadata, path)
    try:
        return TrajectoryDataset(metadata=metadata, **arrays)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _check_arrays(arrays: dict[str, np.ndarray], metadata: dict[str, Any], path: Path) -> None:
    """Dtypes and values a file may hold (:class:`TrajectoryDataset` checks the shapes): one-line ``ValueError``."""
    observations, actions = arrays["observations"], arrays["actions"]
    if not _is_real(observations):
        raise ValueError(f"{path}: observations must be real numbers, got {observations.dtype}")
    for key in ("action_masks", "episode_starts"):
        if arrays[key].dtype != bool:
            raise ValueError(f"{path}: {key} must be booleans, got {arrays[key].dtype}")
    n_actions = metadata.get("n_actions")
    if n_actions is not None and (isinstance(n_actions, bool) or not isinstance(n_actions, int) or n_actions < 1):
        raise ValueError(f"{path}: metadata n_actions must be a positive integer, got {n_actions!r}")
    if actions.ndim == 1:  # discrete: indices into the action embedding
        if not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"{path}: discrete actions must be integers, got {actions.dtype}")
        if len(actions) and (actions.min() < 0 or (n_actions is not None and actions.max() >= n_actions)):
            found = f"{actions.min()}..{actions.max()}"
            raise ValueError(f"{path}: discrete actions must lie in [0, n_actions), got {found}")
    elif not _is_real(actions) or not np.isfinite(actions).all():
        raise ValueError(f"{path}: continuous actions must be finite real numbers")


def _is_real(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.complexfloating)


def _episode_first_step(episode_starts: np.ndarray) -> np.ndarray:
    """For every step, the index of its episode's first step."""
    index = np.where(episode_starts, np.arange(len(episode_starts)), 0)
    return np.maximum.accumulate(index)


def window_indices(episode_starts: np.ndarray, ends: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Step indices and validity of the windows of ``window`` steps ending at ``ends``.

    A window that reaches back before its episode's first step is padded at the front: those slots are invalid
    (and their index is clamped to the episode's first step, whose content the caller must zero).

    :param episode_starts: ``(N,)`` bool
    :param ends: ``(B,)`` index of each window's last step
    :param window: ``K``
    :return: ``(B, K)`` step indices and ``(B, K)`` validity
    """
    first = _episode_first_step(episode_starts)[ends]
    index = ends[:, None] - np.arange(window - 1, -1, -1)[None, :]
    valid = index >= first[:, None]
    return np.where(valid, index, first[:, None]), valid


class WindowSampler:
    """Uniformly sample training windows ``o1 a1 ... a(K-1) oK`` (as tensors) from a dataset.

    Every step of the dataset is a window end, so windows at an episode's start are zero-padded at the front,
    exactly as the fine-tuning wrapper (:class:`maskrl.representation.window.TrajectoryWindow`) pads them.

    :param dataset: the data
    :param window: observations per window ``K`` (>= 2)
    :param seed: seed of the sampling
    """

    def __init__(self, dataset: TrajectoryDataset, window: int, seed: int = 0) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2 (a window needs an action between two observations), got {window}")
        self.dataset = dataset
        self.window = window
        self.rng = np.random.default_rng(seed)
        self.observations = torch.as_tensor(dataset.observations, dtype=torch.float32)
        self.actions = torch.as_tensor(dataset.actions)

    def windows(self, ends: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """The windows ending at ``ends``: ``obs (B, K, obs_dim)``, ``actions (B, K-1[, act_dim])``, ``valid (B, K)``.

        Padding slots hold zeros (observations and actions).
        """
        index, valid = window_indices(self.dataset.episode_starts, np.asarray(ends), self.window)
        index_t, valid_t = torch.as_tensor(index), torch.as_tensor(valid)
        obs = self.observations[index_t] * valid_t[..., None]
        actions = self.actions[index_t[:, :-1]]
        action_valid = valid_t[:, :-1] if actions.ndim == 2 else valid_t[:, :-1, None]
        actions = torch.where(action_valid, actions, torch.zeros_like(actions))
        return obs, actions, valid_t

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
        """A batch of uniformly drawn windows (see :meth:`windows`)."""
        return self.windows(self.rng.integers(0, len(self.dataset), size=batch_size))

    def all_windows(self, max_windows: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Windows ending at every step (or at ``max_windows`` evenly spaced steps), e.g. for validation."""
        n = len(self.dataset)
        ends = np.arange(n) if max_windows is None or max_windows >= n else np.linspace(0, n - 1, max_windows)
        return self.windows(ends.astype(np.int64))
