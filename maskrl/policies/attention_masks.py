"""Every attention mask of maskrl's attention models, and the token masking of the pretraining objectives.

Representation-level masking as in SMART (Sun et al. 2023) and Masked Trajectory Models (Wu et al. 2023):
instead of masking *actions* (see :mod:`maskrl.policies.distributions`), these masks hide *tokens* from a
transformer, so that it has to predict them or cannot read what it must not.

**Convention** (:mod:`maskrl.masks`). Every mask built here is a boolean tensor where ``mask[..., i, j]`` is ``True``
when query row ``i`` **may attend** to key column ``j``: the convention of the boolean ``attn_mask`` of
:func:`torch.nn.functional.scaled_dot_product_attention`, to which the block of every model
(:class:`~maskrl.policies.attention_block.MaskedSelfAttentionBlock`) passes them unchanged. :func:`to_additive_mask`
gives the float form for code that adds the mask to the attention scores (the block's explicit-softmax path).

=============================  ==============================  ====================================================
builder                        shape                           used by
=============================  ==============================  ====================================================
:func:`causal_mask`            ``(T, T)``                      trajectory extractor, forward-dynamics objective
:func:`bidirectional_mask`     ``(T, T)``                      masked-reconstruction objective
:func:`inverse_dynamics_mask`  ``(T, T)``                      inverse-dynamics objective
:func:`padding_attention_mask` ``(B, T, T)``                   trajectory windows padded at an episode's start
:func:`trajectory_token_valid` ``(B, 2K - 1)`` token validity  the same, from ``window_valid``
:func:`key_mask`               ``(B, 1, N)``                   entity attention (the visible entities)
:func:`context_attention_mask` ``(B, T, T)``                   contrastive reconstructor (hides masked frames)
=============================  ==============================  ====================================================

**Trajectory layout.** The trajectory builders assume an interleaved sequence ``o1 a1 o2 a2 ...``: even positions
(0, 2, 4, ...) are observation tokens and odd positions are action tokens. ``T`` may be odd, in which case the
sequence ends with an observation (e.g. the current observation whose action is still to be chosen).

Every row of every ``(T, T)`` mask built here allows at least its own diagonal entry, so no row is fully masked and
softmax never sees a row of only ``-inf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from maskrl.checks import check_int

__all__ = [
    "bidirectional_mask",
    "causal_mask",
    "context_attention_mask",
    "inverse_dynamics_mask",
    "key_mask",
    "padding_attention_mask",
    "random_trajectory_mask",
    "to_additive_mask",
    "trajectory_token_valid",
]

Modality = Literal["action", "observation", "both"]
_MODALITIES = ("action", "observation", "both")


def _check_bool_mask(mask: Tensor, name: str = "mask", ndim: int = 2) -> None:
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a torch.bool tensor (True = may attend / valid)")
    if mask.ndim < ndim:
        raise ValueError(f"{name} must have at least {ndim} dimensions, got shape {tuple(mask.shape)}")


# --------------------------------------------------------------------------------------------- conversion


def to_additive_mask(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Convert a "True = may attend" mask to an additive float mask: ``0`` where allowed, ``-inf`` elsewhere.

    ``-inf`` rather than ``torch.finfo(dtype).min`` because ``exp(-inf)`` is exactly 0: the attention weights (and
    their gradients) of hidden positions are exactly zero, matching the boolean path of
    :func:`~torch.nn.functional.scaled_dot_product_attention` bit for bit, whereas a large finite value only makes
    them tiny, and ``finfo.min + score`` can overflow to ``-inf`` anyway for negative scores. The price: a row with no
    allowed entry becomes NaN after softmax. That cannot happen with the masks of this module (the diagonal is always
    allowed) and for a hand-made mask a NaN is a louder symptom than silently uniform attention.

    :param mask: boolean mask, ``True`` = may attend, shape ``(..., T, T)``.
    :param dtype: floating-point dtype of the result (use the dtype of the attention scores).
    :return: a float tensor of ``dtype`` on ``mask``'s device.
    :raises ValueError: if ``mask`` is not a boolean tensor or ``dtype`` is not floating point.
    """
    _check_bool_mask(mask)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype}")
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return additive.masked_fill(~mask, float("-inf"))


# --------------------------------------------------------------------------------------------- (T, T) builders


def causal_mask(T: int, device: torch.device | str | None = None) -> Tensor:
    """Causal mask: token ``i`` may attend to tokens ``0..i`` (lower triangle including the diagonal).

    Example, ``T = 4``::

        1 0 0 0
        1 1 0 0
        1 1 1 0
        1 1 1 1

    :param T: sequence length, ``>= 1``.
    :param device: device of the result.
    :return: boolean tensor ``(T, T)``, ``True`` = may attend.
    :raises ValueError: if ``T`` is not a positive int.
    """
    check_int("T", T, 1)
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def bidirectional_mask(T: int, device: torch.device | str | None = None) -> Tensor:
    """Every token may attend to every token (all ``True``): BERT-style attention.

    :param T: sequence length, ``>= 1``.
    :param device: device of the result.
    :return: boolean tensor ``(T, T)``, ``True`` = may attend.
    """
    check_int("T", T, 1)
    return torch.ones(T, T, dtype=torch.bool, device=device)


def inverse_dynamics_mask(T: int, device: torch.device | str | None = None) -> Tensor:
    """Causal mask over ``o1 a1 o2 a2 ...`` with the action before each observation hidden from it.

    Query ``o(t+1)`` (even position ``p >= 2``) may not attend to ``a(t)`` (position ``p - 1``); everything else is
    the :func:`causal_mask`. A head that predicts ``a(t)`` from the output at ``o(t+1)``, which has seen ``o(t)``
    and ``o(t+1)``, then learns inverse dynamics instead of copying the action. Action rows are plain causal.

    Every visible key ``j < p - 1`` only sees keys ``<= j``, so the hidden action stays unreachable through any
    number of stacked layers **provided every layer uses this mask**.

    Example, ``T = 8`` (rows = queries, columns = keys, 1 = may attend)::

               o1 a1 o2 a2 o3 a3 o4 a4
        o1  [   1  0  0  0  0  0  0  0 ]
        a1  [   1  1  0  0  0  0  0  0 ]
        o2  [   1  0  1  0  0  0  0  0 ]   o2 cannot see a1
        a2  [   1  1  1  1  0  0  0  0 ]
        o3  [   1  1  1  0  1  0  0  0 ]   o3 cannot see a2
        a3  [   1  1  1  1  1  1  0  0 ]
        o4  [   1  1  1  1  1  0  1  0 ]   o4 cannot see a3
        a4  [   1  1  1  1  1  1  1  1 ]

    :param T: sequence length, ``>= 1``; odd when the sequence ends with an observation.
    :param device: device of the result.
    :return: boolean tensor ``(T, T)``, ``True`` = may attend.
    :raises ValueError: on a non-positive ``T``.
    """
    mask = causal_mask(T, device=device)
    for p in range(2, T, 2):
        mask[p, p - 1] = False
    return mask


# --------------------------------------------------------------------------------------------- per-sample masks


def trajectory_token_valid(obs_valid: Tensor) -> Tensor:
    """Token validity of ``o1 a1 ... oK`` windows from the validity of their ``K`` observation slots.

    ``a(t)`` is real exactly when ``o(t)`` is (padding only precedes an episode's first step).

    :param obs_valid: ``(B, K)``, nonzero / ``True`` for real observations (e.g. the ``window_valid`` key of
        :class:`~maskrl.representation.window.TrajectoryWindow`, floats after SB3's preprocessing)
    :return: boolean ``(B, 2K - 1)``
    """
    valid = obs_valid > 0.5 if obs_valid.is_floating_point() else obs_valid.bool()
    return valid.repeat_interleave(2, dim=1)[:, :-1]


def padding_attention_mask(mask: Tensor, token_valid: Tensor) -> Tensor:
    """Combine a ``(T, T)`` attention mask with per-sample token validity (zero padding at an episode's start).

    A valid query never attends to an invalid (padding) key. Every query keeps its diagonal, so a padding query
    attends to itself only: no row is empty, and padding outputs never reach valid ones.

    :param mask: ``(T, T)`` boolean, ``True`` = may attend
    :param token_valid: ``(B, T)`` boolean
    :return: ``(B, T, T)`` boolean, ``True`` = may attend
    """
    _check_bool_mask(mask)
    _check_bool_mask(token_valid, "token_valid")
    T = mask.shape[-1]
    eye = torch.eye(T, dtype=torch.bool, device=mask.device)
    return mask & (token_valid[:, None, :] | eye)


def key_mask(key_valid: Tensor) -> Tensor:
    """Every query may attend to the valid keys only (e.g. the entities the agent sees).

    :param key_valid: ``(B, N)`` boolean, ``True`` for the keys that may be attended to; at least one per row
    :return: ``(B, 1, N)`` boolean, ``True`` = may attend, broadcast over the queries
    """
    _check_bool_mask(key_valid, "key_valid")
    return key_valid[:, None, :]


def context_attention_mask(masked: Tensor) -> Tensor:
    """Which frame may attend to which when rebuilding masked positions from their context.

    Every position may attend to every unmasked position and to itself; masked positions are hidden from all others,
    so that no position reads a masked frame's (zero or wrong) content, and a masked position's output is built
    from the context alone plus its own mask token.

    :param masked: boolean ``(B, T)``, ``True`` where a frame was masked.
    :return: boolean ``(B, T, T)``: ``out[b, i, j]`` ``True`` when position ``i`` may attend to position ``j``.
    """
    if not isinstance(masked, Tensor) or masked.dtype != torch.bool or masked.ndim != 2:
        raise ValueError("masked must be a boolean tensor of shape (B, T)")
    return padding_attention_mask(bidirectional_mask(masked.shape[1], masked.device), ~masked)


# --------------------------------------------------------------------------------------------- token masking


def _candidate_positions(T: int, modality: str, device: torch.device) -> Tensor:
    if modality == "observation":
        return torch.arange(0, T, 2, device=device)
    if modality == "action":
        return torch.arange(1, T, 2, device=device)
    return torch.arange(T, device=device)


def random_trajectory_mask(
    tokens: Tensor,
    ratio: float | None = None,
    indices: Sequence[int] | Tensor | None = None,
    modality: Modality = "both",
    mask_value: float | Tensor = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Replace some observation and/or action tokens of interleaved trajectories by a mask value.

    The candidates are the positions of the chosen ``modality`` in the ``o1 a1 o2 a2 ...`` layout (even positions =
    observations, odd = actions, all for ``"both"``). Give exactly one of

    - ``ratio``: each row gets exactly ``round(ratio * n_candidates)`` masked positions (Python's ``round``, i.e.
      half to even), drawn uniformly without replacement and independently per row from ``generator``;
    - ``indices``: explicit positions, either 1-D (the same positions in every row) or 2-D ``(B, k)`` (per row);
      each must be a candidate of ``modality``. Duplicates are allowed.

    ``tokens`` is not modified; the result is a new tensor. If ``mask_value`` is a tensor that requires grad (e.g.
    an :class:`torch.nn.Parameter` mask embedding), gradients flow to it from the masked positions.

    :param tokens: token embeddings, shape ``(B, T, D)``, floating point.
    :param ratio: fraction of candidates to mask per row, in ``[0, 1]``.
    :param indices: explicit positions to mask (1-D or ``(B, k)`` ints in ``[0, T)``).
    :param modality: ``"action"``, ``"observation"`` or ``"both"``.
    :param mask_value: a constant, or a tensor of shape ``(D,)`` (or a scalar tensor) such as a learned embedding.
    :param generator: random generator for ``ratio`` (on ``tokens``' device); the global RNG if ``None``.
    :return: ``(masked_tokens, masked_positions)``: the tokens with masked positions replaced (``(B, T, D)``) and a
        boolean ``(B, T)`` tensor, ``True`` where a token was replaced.
    :raises ValueError: on bad shapes, a bad ``modality``, ``ratio`` outside ``[0, 1]``, both or neither of
        ``ratio`` and ``indices``, or indices out of range or not of the chosen modality.
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 3:
        raise ValueError(f"tokens must be a tensor of shape (B, T, D), got {getattr(tokens, 'shape', type(tokens))}")
    if not tokens.is_floating_point():
        raise ValueError(f"tokens must be floating point, got {tokens.dtype}")
    if modality not in _MODALITIES:
        raise ValueError(f"modality must be one of {_MODALITIES}, got {modality!r}")
    if (ratio is None) == (indices is None):
        raise ValueError("give exactly one of ratio and indices")
    B, T, D = tokens.shape
    device = tokens.device
    candidates = _candidate_positions(T, modality, device)
    masked = torch.zeros(B, T, dtype=torch.bool, device=device)

    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be a number in [0, 1], got {ratio!r}")
        n_mask = round(ratio * len(candidates))
        if n_mask > 0:
            # argsort of i.i.d. uniforms is a uniform random permutation per row.
            scores = torch.rand(B, len(candidates), generator=generator, device=device)
            chosen = candidates[scores.argsort(dim=1)[:, :n_mask]]
            masked.scatter_(1, chosen, True)
    else:
        idx = torch.as_tensor(indices, device=device)
        if idx.numel() > 0 and (idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex()):
            raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
        if idx.ndim == 1:
            idx = idx.expand(B, -1)
        elif idx.ndim != 2 or idx.shape[0] != B:
            raise ValueError(f"indices must be 1-D or of shape (B={B}, k), got shape {tuple(idx.shape)}")
        idx = idx.long()
        if idx.numel() > 0:
            if idx.min() < 0 or idx.max() >= T:
                raise ValueError(f"indices must be in [0, {T}), got values in [{int(idx.min())}, {int(idx.max())}]")
            is_candidate = torch.zeros(T, dtype=torch.bool, device=device)
            is_candidate[candidates] = True
            if not bool(is_candidate[idx].all()):
                raise ValueError(f"indices must all be {modality} positions (observations even, actions odd)")
            masked.scatter_(1, idx, True)

    if isinstance(mask_value, Tensor):
        if mask_value.shape not in ((), (D,)):
            raise ValueError(f"mask_value tensor must have shape () or (D={D},), got {tuple(mask_value.shape)}")
        # ``.to`` is differentiable, so a Parameter still receives gradient.
        value = mask_value.to(dtype=tokens.dtype, device=device)
    elif isinstance(mask_value, (int, float)) and not isinstance(mask_value, bool):
        value = torch.tensor(float(mask_value), dtype=tokens.dtype, device=device)
    else:
        raise ValueError(f"mask_value must be a number or a tensor, got {type(mask_value).__name__}")
    # torch.where builds a new tensor: the input is untouched and unmasked entries are copied bit for bit.
    masked_tokens = torch.where(masked[..., None], value.expand(D), tokens)
    return masked_tokens, masked
