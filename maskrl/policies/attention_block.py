"""The one pre-LayerNorm transformer block of maskrl's attention models.

:class:`MaskedSelfAttentionBlock` is the block of :class:`~maskrl.policies.entity_attention.EntityAttentionExtractor`
(attention over the visible entities), :class:`~maskrl.policies.trajectory_transformer.TrajectoryTransformer`
(attention over ``o1 a1 ... oK`` windows) and :class:`~maskrl.representation.contrastive.SequenceReconstructor`
(attention over the unmasked frames). Its attention mask follows the convention of :mod:`maskrl.masks` and
:mod:`maskrl.policies.attention_masks`, which build every mask: a boolean tensor, ``True`` = may attend, the
convention of :func:`torch.nn.functional.scaled_dot_product_attention`, which receives it unchanged.

**Saved models of maskrl 0.1.0** had three blocks with three sets of parameter names (the trajectory transformer's
and the contrastive reconstructor's used :class:`torch.nn.MultiheadAttention`). Their tensors are the same: the
block renames the old keys when a state dict is loaded into it (:data:`LEGACY_KEYS`, :func:`rename_legacy_keys`), so
encoders, checkpoints and run folders written then load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskrl.policies.attention_masks import to_additive_mask

__all__ = ["LEGACY_KEYS", "MaskedSelfAttentionBlock", "current_key", "rename_legacy_keys"]

#: Old parameter name (prefix, inside a block) -> current name. ``nn.MultiheadAttention`` packs the query, key and
#: value projections in ``in_proj_weight`` ``(3 * d, d)``, rows in the order q, k, v, heads contiguous inside each:
#: the layout of :attr:`MaskedSelfAttentionBlock.qkv`, so the tensors load as they are.
LEGACY_KEYS = {
    "ln_attn.": "attn_norm.",  # maskrl 0.1.0 trajectory_transformer.Block
    "ln_mlp.": "mlp_norm.",
    "norm1.": "attn_norm.",  # maskrl 0.1.0 contrastive._Block
    "norm2.": "mlp_norm.",
    "attn.in_proj_weight": "qkv.weight",  # both (nn.MultiheadAttention)
    "attn.in_proj_bias": "qkv.bias",
    "attn.out_proj.": "out_proj.",
}


def current_key(key: str) -> str:
    """Today's name of a parameter key inside a block (``"attn.in_proj_weight"`` -> ``"qkv.weight"``, ...)."""
    for old, new in LEGACY_KEYS.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def rename_legacy_keys(state_dict: MutableMapping[str, Any], prefix: str = "") -> None:
    """Rename, in place, the keys of the block at ``prefix`` that follow a maskrl 0.1.0 layout (:data:`LEGACY_KEYS`).

    :param state_dict: a state dict holding (among others) the keys of one block
    :param prefix: the block's prefix in it, e.g. ``"blocks.0."``
    """
    for key in [key for key in state_dict if key.startswith(prefix)]:
        renamed = prefix + current_key(key[len(prefix) :])
        if renamed != key:
            state_dict[renamed] = state_dict.pop(key)


class MaskedSelfAttentionBlock(nn.Module):
    """Pre-LayerNorm residual block: ``x + Attn(LN(x), mask)``, then ``x + MLP(LN(x))``.

    Pre-LN keeps an identity path from the embedding to the output, which trains stably without learning-rate
    warm-up (post-LN transformers need it), a good fit for RL's small, non-stationary batches. No dropout: a position
    the mask hides gets exactly zero weight and passes exactly zero gradient.

    :param d_model: token size
    :param n_heads: attention heads; must divide ``d_model``
    :param mlp_ratio: hidden size of the MLP as a multiple of ``d_model``
    :param activation: the MLP's activation (each model keeps the one its saved weights were trained with)
    """

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int, activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.attn_norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model), activation(), nn.Linear(mlp_ratio * d_model, d_model)
        )

    def init_like_multihead_attention(self) -> None:
        """Initialise the attention projections as :class:`torch.nn.MultiheadAttention` does: Xavier-uniform
        ``qkv`` weights, zero ``qkv`` and ``out_proj`` biases (the init of the trajectory transformer's and the
        contrastive reconstructor's blocks, ``nn.MultiheadAttention`` blocks in maskrl 0.1.0).
        """
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.out_proj.bias)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        rename_legacy_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, T, d)`` -> the queries, keys and values, each ``(B, n_heads, T, head_dim)``."""
        batch, n, _ = x.shape
        qkv = self.qkv(self.attn_norm(x)).view(batch, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    @staticmethod
    def _per_head(mask: Tensor) -> Tensor:
        if mask.dtype != torch.bool:
            raise ValueError(f"the attention mask must be boolean (True = may attend), got {mask.dtype}")
        # (T, T) broadcasts as it is; a per-sample (B, T_query, T_key) mask is shared by the heads.
        return mask[:, None] if mask.ndim == 3 else mask

    def _residual(self, x: Tensor, attended: Tensor) -> Tensor:
        attended = attended.transpose(1, 2).reshape(x.shape)
        x = x + self.out_proj(attended)
        return x + self.mlp(self.mlp_norm(x))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Apply the block.

        :param x: tokens ``(B, T, d_model)``
        :param mask: boolean, ``True`` = may attend: ``(T, T)`` for every sample, or ``(B, T, T)``, or ``(B, 1, T)``
            (the same keys for every query, e.g. :func:`~maskrl.policies.attention_masks.key_mask`); every query
            needs at least one key it may attend to
        :return: the new tokens ``(B, T, d_model)``
        """
        q, k, v = self._heads(x)
        return self._residual(x, F.scaled_dot_product_attention(q, k, v, attn_mask=self._per_head(mask)))

    def forward_with_weights(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward` through an explicit softmax, which also returns the attention weights.

        :param x: as for :meth:`forward`
        :param mask: as for :meth:`forward`
        :return: the new tokens and the weights ``(B, n_heads, T_query, T_key)`` (rows sum to 1; hidden keys get
            exactly 0, the additive mask being ``-inf`` there)
        """
        q, k, v = self._heads(x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        weights = (scores + to_additive_mask(self._per_head(mask), scores.dtype)).softmax(dim=-1)
        return self._residual(x, weights @ v), weights
