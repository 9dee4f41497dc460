"""Heat maps of :class:`~maskrl.policies.entity_attention.EntityAttentionExtractor` attention, and a callback
that logs them to TensorBoard during training (:func:`training_callbacks` gives it to a run of such a policy).

Figures are built with ``matplotlib.figure.Figure`` and rendered with the Agg canvas directly, never
through ``pyplot``: importing this module does not pick or change matplotlib's global backend, and no
figure is left registered with pyplot (so nothing leaks over a long training run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.vec_env import VecEnv

from maskrl.checks import check_int
from maskrl.masks import ACTION_MASK_KEY, VISIBILITY_KEY
from maskrl.policies.entity_attention import EntityAttentionExtractor

__all__ = [
    "AttentionMapCallback",
    "default_entity_label",
    "entity_labeller",
    "figure_to_array",
    "plot_attention_map",
    "save_attention_map",
    "training_callbacks",
]

HIDDEN_COLOR = "0.6"  # grey tick labels for hidden entities
#: How many attention maps :func:`training_callbacks` logs over a run.
MAPS_PER_RUN = 20


def default_entity_label(slot: int) -> str:
    """``"agent"`` for slot 0, ``"e<slot>"`` for the others."""
    return "agent" if slot == 0 else f"e{slot}"


def _to_numpy(array: np.ndarray | torch.Tensor | Sequence) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def plot_attention_map(
    weights: np.ndarray | torch.Tensor,
    labels: Sequence[str] | None = None,
    visible: np.ndarray | torch.Tensor | Sequence[bool] | None = None,
    title: str | None = None,
    annotate: bool | None = None,
    cmap: str = "viridis",
) -> Figure:
    """Entities x entities heat map of attention weights (rows: queries, columns: keys).

    :param weights: ``(N, N)`` weights, e.g. one head or the mean over heads of one block of
        :meth:`EntityAttentionExtractor.attention_maps` for one observation
    :param labels: ``N`` entity names; default ``"agent", "e1", "e2", ...``
    :param visible: ``N`` booleans (or 0/1); the labels of hidden entities (``False``/0) are greyed and
        suffixed with ``"(hidden)"``. Default: all visible
    :param title: figure title
    :param annotate: write each weight in its cell; default: only when ``N <= 10`` (unreadable beyond)
    :param cmap: matplotlib colour map name
    :return: a ``matplotlib.figure.Figure`` not registered with pyplot (save it with ``fig.savefig`` or
        :func:`save_attention_map`, or render it with :func:`figure_to_array`)
    """
    weights = _to_numpy(weights).astype(np.float64)
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"weights must be a square (N, N) matrix, got shape {weights.shape}")
    n = weights.shape[0]
    labels = [default_entity_label(i) for i in range(n)] if labels is None else [str(label) for label in labels]
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} entities")
    visible = np.ones(n, dtype=bool) if visible is None else _to_numpy(visible).astype(bool).reshape(-1)
    if visible.shape != (n,):
        raise ValueError(f"visible must hold {n} values, got shape {visible.shape}")
    if annotate is None:
        annotate = n <= 10
    shown = [label if vis else f"{label} (hidden)" for label, vis in zip(labels, visible, strict=True)]

    size = max(4.0, 0.5 * n + 2.5)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.add_subplot()
    # Weights are probabilities: a fixed [0, 1] scale makes maps comparable across steps and runs.
    image = ax.imshow(weights, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="attention weight")
    ax.set_xticks(np.arange(n), labels=shown, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(np.arange(n), labels=shown)
    for tick_labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        for tick_label, vis in zip(tick_labels, visible, strict=True):
            if not vis:
                tick_label.set_color(HIDDEN_COLOR)
    ax.set_xlabel("key (attended entity)")
    ax.set_ylabel("query (attending entity)")
    if annotate:
        for row in range(n):
            for col in range(n):
                value = weights[row, col]
                ax.text(
                    col, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color="k" if value > 0.6 else "w"
                )
    if title is not None:
        ax.set_title(title)
    return fig


def save_attention_map(path: str | Path, weights: np.ndarray | torch.Tensor, **kwargs) -> Path:
    """Plot an attention map with :func:`plot_attention_map` and save it (PNG unless the suffix says otherwise).

    :param path: output file; its parent directories are created
    :param weights: ``(N, N)`` weights
    :param kwargs: passed to :func:`plot_attention_map` (``labels``, ``visible``, ``title``, ...)
    :return: the path written
    """
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_attention_map(weights, **kwargs)
    fig.savefig(path, dpi=100)
    return path


def figure_to_array(fig: Figure, dpi: int = 100) -> np.ndarray:
    """Render a figure with the Agg canvas to an ``(H, W, 3)`` uint8 RGB array (no pyplot involved)."""
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class AttentionMapCallback(BaseCallback):
    """Log the attention map of an :class:`EntityAttentionExtractor` policy to SB3's logger (TensorBoard).

    Every ``log_freq`` calls (i.e. ``log_freq * n_envs`` environment steps), it takes the algorithm's current
    observations (``model._last_obs``), keeps env ``env_index``, computes the attention weights of block
    ``block`` averaged over heads, plots them with :func:`plot_attention_map` (hidden entities marked) and
    records the image under ``key``. SB3 writes the record at its next log dump (with ``PPO``: after the
    rollout, every ``log_interval`` iterations); only the TensorBoard output takes images.

    The actor's features extractor is used (``policy.pi_features_extractor``, the shared one by default).

    :param log_freq: log every ``log_freq`` calls of the callback
    :param block: index of the attention block to show (default: the last)
    :param env_index: which of the vectorised envs' observations to show
    :param label_fn: entity slot -> name for the axes; default ``"agent", "e1", ...``
    :param key: logger key of the image
    :param save_path: where to save the last logged map when training ends (nothing is saved by default)
    :param verbose: SB3 verbosity level
    """

    def __init__(
        self,
        log_freq: int = 1000,
        block: int = -1,
        env_index: int = 0,
        label_fn: Callable[[int], str] | None = None,
        key: str = "attention/map",
        save_path: str | Path | None = None,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        check_int("log_freq", log_freq, 1)
        self.log_freq = log_freq
        self.block = block
        self.env_index = env_index
        self.label_fn = default_entity_label if label_fn is None else label_fn
        self.key = key
        self.save_path = None if save_path is None else Path(save_path)
        #: the last logged ``(N, N)`` head-averaged weights, for inspection
        self.last_weights: np.ndarray | None = None
        #: the last logged figure (saved to ``save_path`` when training ends)
        self.last_figure: Figure | None = None

    def _extractor(self) -> EntityAttentionExtractor:
        policy = self.model.policy
        extractor = getattr(policy, "pi_features_extractor", None)
        if extractor is None:
            extractor = getattr(policy, "features_extractor", None)
        if not isinstance(extractor, EntityAttentionExtractor):
            raise ValueError(
                f"AttentionMapCallback needs a policy whose features extractor is an EntityAttentionExtractor, "
                f"got {type(extractor).__name__}; pass policy_kwargs=dict(features_extractor_class="
                "EntityAttentionExtractor)"
            )
        return extractor

    def _init_callback(self) -> None:
        extractor = self._extractor()
        n_blocks = len(extractor.blocks)
        if not -n_blocks <= self.block < n_blocks:
            raise ValueError(f"block {self.block} out of range: the extractor has {n_blocks} attention block(s)")
        if not 0 <= self.env_index < self.training_env.num_envs:
            raise ValueError(f"env_index {self.env_index} out of range for {self.training_env.num_envs} env(s)")

    def _on_step(self) -> bool:
        if self.n_calls % self.log_freq == 0:
            self.log_attention_map()
        return True

    def _on_training_end(self) -> None:
        if self.save_path is not None and self.last_figure is not None:
            self.last_figure.savefig(self.save_path)

    def log_attention_map(self) -> None:
        """Compute, plot and record the attention map of the current observation of env ``env_index``."""
        obs = self.model._last_obs
        if not isinstance(obs, dict):
            raise ValueError(f"expected Dict observations, got {type(obs).__name__}")
        policy = self.model.policy
        extractor = self._extractor()
        # Same input as the policy's extractor gets: all keys but the action mask, preprocessed for the
        # features space (MultiBinary visibility -> float).
        one_env = {key: value[self.env_index : self.env_index + 1] for key, value in obs.items()}
        tensors, _ = policy.obs_to_tensor(one_env)
        inputs = {key: value for key, value in tensors.items() if key != ACTION_MASK_KEY}
        # Masked policies keep the extractor's space as features_space; plain SB3 Dict policies have none.
        space = getattr(policy, "features_space", policy.observation_space)
        inputs = preprocess_obs(inputs, space, normalize_images=policy.normalize_images)
        with torch.no_grad():
            weights = extractor.attention_maps(inputs)[self.block][0].mean(dim=0)
            visible = extractor.visible_mask(inputs)[0]
        if extractor.use_visibility:
            shown_visible = visible
        else:
            # The ablation attends to everything, but which entities the env hides is still worth showing.
            shown_visible = inputs[VISIBILITY_KEY][0] != 0 if VISIBILITY_KEY in inputs else None
            if shown_visible is not None:
                shown_visible[0] = True
        self.last_weights = weights.cpu().numpy()
        n = self.last_weights.shape[0]
        fig = plot_attention_map(
            self.last_weights,
            labels=[self.label_fn(i) for i in range(n)],
            visible=None if shown_visible is None else shown_visible.cpu().numpy(),
            title=f"attention, block {self.block % len(extractor.blocks)}, mean over heads, step {self.num_timesteps}",
        )
        self.last_figure = fig
        self.logger.record(self.key, Image(figure_to_array(fig), "HWC"), exclude=("stdout", "log", "json", "csv"))


def entity_labeller(env: VecEnv) -> Callable[[int], str] | None:
    """Slot -> entity name from the env's ``entity_slots`` (name -> slice), if it has one."""
    if not env.has_attr("entity_slots"):  # safe with SubprocVecEnv, unlike catching get_attr's error
        return None
    slots = env.get_attr("entity_slots")[0]
    labels: dict[int, str] = {}
    for name, where in slots.items():
        indices = range(where.start, where.stop)
        for i in indices:
            labels[i] = name if len(indices) == 1 else f"{name}{i - where.start}"
    return lambda slot: labels.get(slot, f"e{slot}")


def training_callbacks(
    model: BaseAlgorithm, env: VecEnv, total_timesteps: int, figure_path: str | Path | None = None
) -> list[BaseCallback]:
    """The callbacks a run of ``model`` gets from this module: none, unless its policy's features extractor is an
    :class:`EntityAttentionExtractor`.

    Then an :class:`AttentionMapCallback` logs about :data:`MAPS_PER_RUN` maps over the run, labelled with the env's
    entity names when it has them (:func:`entity_labeller`), and saves the last one to ``figure_path``.

    :param model: the model about to train
    :param env: its training env
    :param total_timesteps: the run's total env steps
    :param figure_path: where the last map is saved when training ends
    """
    if not isinstance(getattr(model.policy, "features_extractor", None), EntityAttentionExtractor):
        return []
    log_freq = max(total_timesteps // (MAPS_PER_RUN * env.num_envs), 1)
    return [AttentionMapCallback(log_freq=log_freq, label_fn=entity_labeller(env), save_path=figure_path)]
