"""Masked contrastive representation learning over short frame sequences (pure torch).

The self-supervised half of M-CURL (Zhu et al. 2020, "Masked Contrastive Representation Learning for
Reinforcement Learning"): take ``T`` consecutive observations, hide some of them, encode every frame with the RL
encoder, let a small transformer rebuild the hidden positions from the visible ones, and score each rebuilt
position with InfoNCE against a momentum ("key") encoder's features of the *original* frames. The positive key of a
masked position is the original frame at that position; every other frame of the batch (the other positions of the
same sequence, which look alike, and the frames of the other sequences) is a negative.

The pieces, each usable alone:

- :func:`info_nce` / :func:`info_nce_logits` / :func:`contrastive_accuracy`: the loss and its accuracy;
- :func:`mask_frames`: hide frames by zeros or by other frames of the batch, reporting the masked positions;
- :class:`SequenceReconstructor`: the transformer (blocks of :mod:`maskrl.policies.attention_block`) and its
  attention mask, :func:`~maskrl.policies.attention_masks.context_attention_mask` (True = may attend);
- :class:`MaskedContrastiveModel`: everything wired together, its key encoder following the online one by
  :func:`~maskrl.representation.momentum.momentum_update`.

The RL side, PPO with this auxiliary loss, is :class:`maskrl.agents.contrastive.ContrastivePPO`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskrl.checks import check_positive
from maskrl.policies.attention_block import MaskedSelfAttentionBlock
from maskrl.policies.attention_masks import context_attention_mask, random_trajectory_mask
from maskrl.representation.momentum import momentum_update

__all__ = [
    "ContrastiveOutput",
    "MaskedContrastiveModel",
    "SequenceReconstructor",
    "contrastive_accuracy",
    "info_nce",
    "info_nce_logits",
    "mask_frames",
]

#: How :func:`mask_frames` hides a frame: ``"zeros"``, or (ablation) ``"frames"``, another frame of the batch.
MaskMode = Literal["zeros", "frames"]
MASK_MODES = ("zeros", "frames")
#: Hidden size of the reconstructor blocks' MLPs, as a multiple of ``d_model``.
MLP_RATIO = 2


# --------------------------------------------------------------------------------------------- InfoNCE


def info_nce_logits(query: Tensor, keys: Tensor, temperature: float = 0.1) -> Tensor:
    """Cosine-similarity logits ``query @ keys.T / temperature``, on L2-normalised vectors.

    :param query: ``(N, D)``.
    :param keys: ``(M, D)``.
    :param temperature: divides the similarities, ``> 0``.
    :return: ``(N, M)`` logits.
    :raises ValueError: on bad shapes or a non-positive temperature.
    """
    check_positive("temperature", temperature)
    if query.ndim != 2 or keys.ndim != 2 or query.shape[1] != keys.shape[1]:
        raise ValueError(f"query and keys must be (N, D) and (M, D), got {tuple(query.shape)} and {tuple(keys.shape)}")
    query, keys = F.normalize(query, dim=1), F.normalize(keys, dim=1)
    return query @ keys.T / temperature


def _positives(logits: Tensor, positives: Tensor | None) -> Tensor:
    n, m = logits.shape
    if positives is None:
        if n > m:
            raise ValueError(f"without positives every query i needs key i: got {n} queries and {m} keys")
        return torch.arange(n, device=logits.device)
    positives = torch.as_tensor(positives, device=logits.device).long()
    if positives.shape != (n,):
        raise ValueError(f"positives must have shape ({n},), got {tuple(positives.shape)}")
    if n and (positives.min() < 0 or positives.max() >= m):
        raise ValueError(f"positives must index the {m} keys")
    return positives


def info_nce(
    query: Tensor,
    keys: Tensor,
    temperature: float = 0.1,
    positives: Tensor | Sequence[int] | None = None,
) -> Tensor:
    """InfoNCE: cross-entropy of picking each query's positive key among all keys.

    ``loss = mean_i [ -log softmax_j(sim(q_i, k_j) / temperature)[positives[i]] ]``; every key other than the
    positive is a negative. It is smallest when each query is most similar to its own key.

    Example (``temperature=1``, unit vectors): ``q = k = [[1, 0], [0, 1]]`` gives ``log(1 + e^-1) = 0.3133``; with
    the keys swapped it is ``log(1 + e) = 1.3133``.

    :param query: ``(N, D)`` queries.
    :param keys: ``(M, D)`` keys.
    :param temperature: ``> 0``.
    :param positives: ``(N,)`` index of each query's positive key; ``None``: query ``i`` matches key ``i``.
    :return: scalar loss.
    """
    logits = info_nce_logits(query, keys, temperature)
    return F.cross_entropy(logits, _positives(logits, positives))


def contrastive_accuracy(logits: Tensor, positives: Tensor | None = None) -> Tensor:
    """Fraction of queries (rows of ``logits``) whose most similar key is their positive."""
    return (logits.argmax(dim=1) == _positives(logits, positives)).float().mean()


# --------------------------------------------------------------------------------------------- frame masking


def mask_frames(
    frames: Tensor,
    ratio: float | None = None,
    indices: Sequence[int] | Tensor | None = None,
    mode: MaskMode = "zeros",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Hide some frames of a batch of sequences, by zeros or by other frames of the batch.

    Which positions are hidden follows :func:`~maskrl.policies.attention_masks.random_trajectory_mask` (every
    position is a candidate): ``ratio`` masks exactly ``round(ratio * T)`` positions per sequence, drawn uniformly;
    ``indices`` gives them explicitly (1-D for every sequence, or ``(B, k)``). With ``mode="frames"`` each hidden
    frame is replaced by a frame drawn uniformly from the *other* ``B * T - 1`` frames of the batch (BERT's "random
    token"), so the hidden position still looks like a plausible observation.

    :param frames: ``(B, T, ...)`` floating-point frames (images or feature vectors).
    :param ratio: fraction of the ``T`` positions to hide per sequence, in ``[0, 1]``.
    :param indices: explicit positions to hide.
    :param mode: ``"zeros"``, or ``"frames"`` (an ablation; M-CURL and ContrastivePPO's default use zeros).
    :param generator: random generator (positions and replacement frames); the global one if ``None``.
    :return: ``(masked_frames, masked)``: a new tensor like ``frames`` and the boolean ``(B, T)`` masked positions.
    :raises ValueError: on bad shapes, a non-floating tensor, a bad mode, or the errors of ``random_trajectory_mask``.
    """
    if not isinstance(frames, Tensor) or frames.ndim < 3:
        raise ValueError(f"frames must be a tensor of shape (B, T, ...), got {getattr(frames, 'shape', type(frames))}")
    if not frames.is_floating_point():
        raise ValueError(f"frames must be floating point, got {frames.dtype}")
    if mode not in MASK_MODES:
        raise ValueError(f"mode must be one of {MASK_MODES}, got {mode!r}")
    B, T = frames.shape[:2]
    flat = frames.reshape(B, T, -1)
    zeroed, masked = random_trajectory_mask(flat, ratio=ratio, indices=indices, modality="both", generator=generator)
    if mode == "zeros":
        return zeroed.reshape(frames.shape), masked
    if B * T < 2:
        raise ValueError("mode='frames' needs at least 2 frames in the batch")
    rows = flat.reshape(B * T, -1)
    own = torch.nonzero(masked.reshape(-1)).squeeze(1)
    # A uniform draw among the other B*T - 1 frames: draw from B*T - 1 and skip over the frame itself.
    draw = torch.randint(B * T - 1, own.shape, generator=generator, device=frames.device)
    draw = draw + (draw >= own).long()
    out = rows.clone()
    out[own] = rows[draw]
    return out.reshape(frames.shape), masked


# --------------------------------------------------------------------------------------------- transformer


class SequenceReconstructor(nn.Module):
    """A small transformer that rebuilds the features of masked frames from the other frames of the sequence.

    Input tokens are the encoder's features of the (masked) frames, projected to ``d_model``, plus a learned
    position embedding, plus a learned mask embedding at the masked positions (so the model knows what to rebuild,
    also when a masked frame was replaced by another real frame). The blocks are
    :class:`~maskrl.policies.attention_block.MaskedSelfAttentionBlock` (GELU MLP of ``2 * d_model``) under
    :func:`~maskrl.policies.attention_masks.context_attention_mask`; the output is projected back to ``in_dim``.

    :param in_dim: feature size of the encoder.
    :param max_len: longest sequence.
    :param d_model: transformer width.
    :param n_heads: attention heads (must divide ``d_model``).
    :param n_layers: transformer blocks.
    """

    def __init__(self, in_dim: int, max_len: int, d_model: int = 64, n_heads: int = 2, n_layers: int = 2) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide d_model={d_model}")
        self.n_heads = n_heads
        self.inp = nn.Linear(in_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(max_len, d_model))
        self.mask_token = nn.Parameter(torch.zeros(d_model))
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.blocks = nn.ModuleList(MaskedSelfAttentionBlock(d_model, n_heads, MLP_RATIO) for _ in range(n_layers))
        for block in self.blocks:
            block.init_like_multihead_attention()
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, in_dim)

    def forward(self, features: Tensor, masked: Tensor) -> Tensor:
        """:param features: ``(B, T, in_dim)``. :param masked: boolean ``(B, T)``. :return: ``(B, T, in_dim)``."""
        T = features.shape[1]
        if self.pos.shape[0] < T:
            raise ValueError(f"sequence length {T} exceeds max_len={self.pos.shape[0]}")
        x = self.inp(features) + self.pos[:T] + masked[..., None] * self.mask_token
        mask = context_attention_mask(masked)
        for block in self.blocks:
            x = block(x, mask)
        return self.out(self.norm(x))


# --------------------------------------------------------------------------------------------- the whole model


class ContrastiveOutput(NamedTuple):
    """Result of :meth:`MaskedContrastiveModel.forward`."""

    loss: Tensor  #: scalar InfoNCE loss (differentiable)
    accuracy: Tensor  #: fraction of masked positions whose nearest key is their own original frame
    masked: Tensor  #: boolean (B, T) masked positions


def _apply(x: Tensor, module: nn.Module) -> Tensor:
    return module(x)


class MaskedContrastiveModel(nn.Module):
    """M-CURL's auxiliary task around an existing (online) encoder that is trained by RL at the same time.

    Holds the momentum key encoder (a frozen deep copy of ``encoder``), the :class:`SequenceReconstructor`, and a
    projection head with its momentum copy. It does **not** hold the online encoder: that one belongs to the RL
    policy (and its optimizer) and is passed to :meth:`forward`, so the gradient of the loss reaches it while the
    key side gets none (keys are computed under ``no_grad`` by modules without trainable parameters).

    Query of a masked position: ``projection(reconstructor(encoder(masked frames))[position])``; its positive key:
    ``key_projection(key_encoder(original frame))``; negatives: the keys of all other frames of the batch.

    :param encoder: the online encoder (copied for the key encoder).
    :param features_dim: size of the encoder's output.
    :param max_len: longest sequence.
    :param mask_ratio: fraction of each sequence to mask (at least one and at most ``T - 1`` positions).
    :param mask_mode: ``"zeros"``, or (ablation) ``"frames"`` (see :func:`mask_frames`).
    :param temperature: InfoNCE temperature.
    :param proj_dim: size of the projected queries and keys.
    :param reconstructor_kwargs: extra arguments of :class:`SequenceReconstructor` (``d_model``, ``n_heads``,
        ``n_layers``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        features_dim: int,
        max_len: int,
        mask_ratio: float = 0.25,
        mask_mode: MaskMode = "zeros",
        temperature: float = 0.1,
        proj_dim: int = 64,
        reconstructor_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) or not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be a number in (0, 1), got {mask_ratio!r}")
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
        self.mask_ratio = float(mask_ratio)
        self.mask_mode = mask_mode
        self.temperature = check_positive("temperature", temperature)
        self.key_encoder = copy.deepcopy(encoder)
        self.key_encoder.requires_grad_(False)
        self.reconstructor = SequenceReconstructor(features_dim, max_len, **(reconstructor_kwargs or {}))
        self.projection = nn.Linear(features_dim, proj_dim)
        self.key_projection = copy.deepcopy(self.projection).requires_grad_(False)

    def n_masked(self, T: int) -> int:
        """Positions masked per sequence of length ``T``: ``round(mask_ratio * T)`` clipped to ``[1, T - 1]``."""
        if T < 2:
            raise ValueError(f"sequences need at least 2 frames (one masked, one context), got T={T}")
        return min(T - 1, max(1, round(self.mask_ratio * T)))

    def forward(
        self,
        frames: Tensor,
        encoder: nn.Module,
        features: Callable[[Tensor, nn.Module], Tensor] = _apply,
        generator: torch.Generator | None = None,
    ) -> ContrastiveOutput:
        """Mask, encode, rebuild and score a batch of sequences.

        :param frames: ``(B, T, ...)`` floating-point observations, as the RL buffer stores them.
        :param encoder: the online encoder (receives the gradient).
        :param features: ``features(flat_frames, module) -> (N, features_dim)``; how to run ``encoder`` or the key
            encoder on ``(N, ...)`` frames (e.g. with the policy's observation preprocessing).
        :param generator: random generator for the masking.
        """
        B, T = frames.shape[:2]
        k = self.n_masked(T)
        # Exactly k positions per sequence: pass the ratio that rounds to k.
        masked_frames, masked = mask_frames(frames, ratio=k / T, mode=self.mask_mode, generator=generator)
        z = features(masked_frames.flatten(0, 1), encoder).reshape(B, T, -1)
        rebuilt = self.reconstructor(z, masked)
        query = self.projection(rebuilt[masked])  # (B * k, proj_dim), row-major order of the masked positions
        with torch.no_grad():
            keys = self.key_projection(features(frames.flatten(0, 1), self.key_encoder))  # (B * T, proj_dim)
        positives = torch.nonzero(masked.reshape(-1)).squeeze(1)
        logits = info_nce_logits(query, keys, self.temperature)
        loss = F.cross_entropy(logits, positives)
        return ContrastiveOutput(loss, contrastive_accuracy(logits.detach(), positives), masked)

    def update_keys(self, encoder: nn.Module, momentum: float) -> None:
        """Move the key encoder and key projection toward the online ones (call after each optimiser step)."""
        momentum_update(self.key_encoder, encoder, momentum)
        momentum_update(self.key_projection, self.projection, momentum)
