"""The momentum (exponential moving average) update of target encoders.

Both self-supervised objectives of the representation level compare an online network's output with a slowly moving
copy of it, which gets no gradient: the forward-dynamics objective's target observation encoder
(:meth:`~maskrl.representation.objectives.TrajectoryPretrainer.update_target`) and the masked contrastive task's key
encoder and key projection (:meth:`~maskrl.representation.contrastive.MaskedContrastiveModel.update_keys`). Both
call :func:`momentum_update` after each optimiser step.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["momentum_update"]


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """Exponential moving average, in place: ``target <- momentum * target + (1 - momentum) * online``.

    Applied to every parameter; buffers (e.g. batch-norm statistics) are copied, so that a target never keeps the
    statistics it was copied with. ``momentum=1`` freezes the target's parameters, ``momentum=0`` copies the online
    module.

    :param target: the moving copy (e.g. a ``copy.deepcopy`` of ``online`` with ``requires_grad_(False)``)
    :param online: the trained module
    :param momentum: in ``[0, 1]``
    :raises ValueError: if ``momentum`` is not a number in ``[0, 1]`` or the two modules differ in structure
    """
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
    t_params, o_params = list(target.parameters()), list(online.parameters())
    t_buffers, o_buffers = list(target.buffers()), list(online.buffers())
    if len(t_params) != len(o_params) or any(t.shape != o.shape for t, o in zip(t_params, o_params, strict=True)):
        raise ValueError("target and online modules must have the same parameters (make target a deepcopy)")
    if len(t_buffers) != len(o_buffers) or any(t.shape != o.shape for t, o in zip(t_buffers, o_buffers, strict=True)):
        raise ValueError("target and online modules must have the same buffers (make target a deepcopy)")
    for t, o in zip(t_params, o_params, strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)
    for t, o in zip(t_buffers, o_buffers, strict=True):
        t.copy_(o)
