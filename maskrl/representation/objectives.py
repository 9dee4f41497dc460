"""Self-supervised objectives that pretrain a :class:`~maskrl.policies.trajectory_transformer.TrajectoryTransformer`.

Three control-centric objectives in the spirit of SMART (Sun et al. 2023) and Masked Trajectory Models (Wu et al.
2023), over windows ``o1 a1 o2 a2 ... a(K-1) oK`` (``a(t)`` is taken at ``o(t)``). Each returns a loss and metrics;
the pretrainer sums the losses of the chosen objectives.

- ``forward`` (forward dynamics): causal attention; the output at ``a(t)`` (which has seen ``o(<=t)``, ``a(<=t)``)
  goes through a predictor MLP and must match the embedding of ``o(t+1)`` by a **momentum target encoder** (a copy
  of the observation MLP that follows it by :func:`~maskrl.representation.momentum.momentum_update`, no gradient),
  standardised over the batch so that it cannot collapse to a constant (MSE; see
  :meth:`TrajectoryPretrainer.forward_dynamics_loss`).
- ``inverse`` (inverse dynamics): :func:`~maskrl.policies.attention_masks.inverse_dynamics_mask`; the output at
  ``o(t+1)``, which sees ``o(<=t+1)`` and ``a(<t)`` but not ``a(t)``, must predict ``a(t)`` (cross-entropy for
  discrete actions, MSE for continuous ones).
- ``masked`` (random masked trajectory reconstruction): bidirectional attention; a random subset of action tokens
  (and, with ``obs_mask_ratio``, of observation tokens) is replaced by a learned mask embedding with
  :func:`~maskrl.policies.attention_masks.random_trajectory_mask`, and the masked actions must be reconstructed.
  The fraction of masked actions follows a **curriculum**: it grows linearly from ``mask_ratio_start`` to
  ``mask_ratio_end`` over training (:func:`mask_ratio_schedule`), from filling in a few gaps to inferring every
  action of the window from its observations.

Windows may start with zero padding (a window that reaches back before its episode's first step, as the fine-tuning
wrapper produces): ``obs_valid`` says which observation slots are real, padding tokens are hidden from the others
(:func:`~maskrl.policies.attention_masks.padding_attention_mask`) and never count in a loss. Every attention mask
comes from :mod:`maskrl.policies.attention_masks`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskrl.policies.attention_masks import (
    bidirectional_mask,
    causal_mask,
    inverse_dynamics_mask,
    padding_attention_mask,
    random_trajectory_mask,
    trajectory_token_valid,
)
from maskrl.policies.trajectory_transformer import TrajectoryConfig, TrajectoryTransformer
from maskrl.representation.momentum import momentum_update

__all__ = ["OBJECTIVES", "TrajectoryPretrainer", "check_objectives", "mask_ratio_schedule"]

OBJECTIVES = ("forward", "inverse", "masked")


def check_objectives(objectives: Iterable[str]) -> tuple[str, ...]:
    """Validate and deduplicate objective names, keeping :data:`OBJECTIVES`' order.

    :raises ValueError: for an empty list or an unknown name
    """
    chosen = list(objectives)
    unknown = [name for name in chosen if name not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objective {unknown[0]!r}; known: {', '.join(OBJECTIVES)}")
    if not chosen:
        raise ValueError(f"give at least one objective ({', '.join(OBJECTIVES)})")
    return tuple(name for name in OBJECTIVES if name in chosen)


def mask_ratio_schedule(progress: float, start: float, end: float) -> float:
    """The masking curriculum: the fraction of masked actions at training progress ``progress`` in ``[0, 1]``.

    Linear from ``start`` to ``end``; ``progress`` is clipped to ``[0, 1]``.
    """
    progress = min(max(progress, 0.0), 1.0)
    return start + (end - start) * progress


def _head(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_in), nn.GELU(), nn.Linear(d_in, d_out))


def _weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    # Weights are 0/1 validity; at least one valid target is guaranteed by the callers' data, but never divide by 0.
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


class TrajectoryPretrainer(nn.Module):
    """A :class:`TrajectoryTransformer` plus the heads, mask embedding and target encoder of the three objectives.

    :param config: the encoder's architecture
    :param objectives: which of :data:`OBJECTIVES` :meth:`loss` sums
    :param ema_momentum: momentum of the forward objective's target encoder
    :param mask_ratio_start: masked-action fraction at the start of the curriculum
    :param mask_ratio_end: masked-action fraction at its end
    :param obs_mask_ratio: fraction of observation tokens also masked by the ``masked`` objective
    """

    def __init__(
        self,
        config: TrajectoryConfig,
        objectives: Iterable[str] = OBJECTIVES,
        ema_momentum: float = 0.99,
        mask_ratio_start: float = 0.2,
        mask_ratio_end: float = 1.0,
        obs_mask_ratio: float = 0.15,
    ) -> None:
        super().__init__()
        for name, value in (
            ("ema_momentum", ema_momentum),
            ("mask_ratio_start", mask_ratio_start),
            ("mask_ratio_end", mask_ratio_end),
            ("obs_mask_ratio", obs_mask_ratio),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.objectives = check_objectives(objectives)
        self.config = config
        self.ema_momentum = ema_momentum
        self.mask_ratio_start = mask_ratio_start
        self.mask_ratio_end = mask_ratio_end
        self.obs_mask_ratio = obs_mask_ratio
        d = config.d_model
        self.encoder = TrajectoryTransformer(config)
        self.target_obs_encoder = copy.deepcopy(self.encoder.obs_encoder).requires_grad_(False)
        self.forward_predictor = _head(d, d)
        self.inverse_head = _head(d, config.action_dim)
        self.masked_head = _head(d, config.action_dim)
        self.mask_embedding = nn.Parameter(torch.randn(d) * 0.02)

    # ----------------------------------------------------------------------------------------- helpers

    def _action_loss(self, prediction: Tensor, actions: Tensor, weights: Tensor) -> tuple[Tensor, Tensor | None]:
        """Loss and (discrete only) accuracy of ``(B, n, action_dim)`` predictions of ``actions``, weighted."""
        if self.config.discrete:
            target = actions.long()
            per_item = F.cross_entropy(prediction.flatten(0, 1), target.flatten(), reduction="none")
            correct = (prediction.argmax(-1) == target).float()
            return _weighted_mean(per_item.view_as(weights), weights), _weighted_mean(correct, weights).detach()
        per_item = (prediction - actions.float()).pow(2).mean(-1)
        return _weighted_mean(per_item, weights), None

    def update_target(self) -> None:
        """One momentum step of the target encoder toward the online observation encoder."""
        momentum_update(self.target_obs_encoder, self.encoder.obs_encoder, self.ema_momentum)

    def mask_ratio(self, progress: float) -> float:
        return mask_ratio_schedule(progress, self.mask_ratio_start, self.mask_ratio_end)

    # ----------------------------------------------------------------------------------------- objectives

    def forward_dynamics_loss(self, obs: Tensor, actions: Tensor, obs_valid: Tensor) -> tuple[Tensor, dict]:
        """Predict the (batch-standardised) target embedding of ``o(t+1)`` from the causal output at ``a(t)``.

        The momentum encoder's embeddings are standardised per dimension over the batch's real items before they
        serve as targets, so a constant (collapsed) target does not exist: with a plain cosine or MSE target, the
        online and target encoders can agree on mapping every observation to the same vector, which makes the
        loss 0 and the representation useless (observed with a high learning rate). The loss is then the
        fraction of the target's variance the prediction misses; ``forward_r2 = 1 - loss``.
        """
        T = 2 * obs.shape[1] - 1
        h = self.encoder(obs, actions, causal_mask(T, obs.device), trajectory_token_valid(obs_valid))
        prediction = self.forward_predictor(h[:, 1::2])
        weights = obs_valid[:, :-1].float()  # a(t) real <=> o(t) real (padding only at the start)
        with torch.no_grad():
            target = self.target_obs_encoder(obs[:, 1:].float())
            w = weights[..., None]
            mean = (target * w).sum((0, 1)) / w.sum().clamp_min(1.0)
            var = ((target - mean).pow(2) * w).sum((0, 1)) / w.sum().clamp_min(1.0)
            target = (target - mean) / (var + 1e-10).sqrt()
        loss = _weighted_mean((prediction - target).pow(2).mean(-1), weights)
        return loss, {"forward_r2": 1.0 - loss.detach()}

    def inverse_dynamics_loss(self, obs: Tensor, actions: Tensor, obs_valid: Tensor) -> tuple[Tensor, dict]:
        """Predict ``a(t)`` from the output at ``o(t+1)`` under the inverse-dynamics mask."""
        T = 2 * obs.shape[1] - 1
        h = self.encoder(obs, actions, inverse_dynamics_mask(T, obs.device), trajectory_token_valid(obs_valid))
        loss, accuracy = self._action_loss(self.inverse_head(h[:, 2::2]), actions, obs_valid[:, :-1].float())
        return loss, {} if accuracy is None else {"inverse_accuracy": accuracy}

    def n_masked_actions(self, ratio: float, n_actions: int) -> int:
        """How many action tokens the masked objective hides at masking ratio ``ratio``: at least one, so that every
        window has a target.
        """
        return min(n_actions, max(1, round(ratio * n_actions)))

    def mask_tokens(
        self, tokens: Tensor, ratio: float, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Replace :meth:`n_masked_actions` action tokens and ``obs_mask_ratio`` of the observation tokens of every
        window by the learned mask embedding.

        :param tokens: ``(B, 2K - 1, d_model)`` interleaved tokens (from :meth:`TrajectoryTransformer.tokenize`)
        :return: the masked tokens and the ``(B, 2K - 1)`` boolean positions that were replaced
        """
        n_actions = tokens.shape[1] // 2
        n_masked = self.n_masked_actions(ratio, n_actions)
        tokens, masked = random_trajectory_mask(
            tokens, ratio=n_masked / n_actions, modality="action", mask_value=self.mask_embedding, generator=generator
        )
        if self.obs_mask_ratio > 0:
            tokens, masked_obs = random_trajectory_mask(
                tokens,
                ratio=self.obs_mask_ratio,
                modality="observation",
                mask_value=self.mask_embedding,
                generator=generator,
            )
            masked = masked | masked_obs
        return tokens, masked

    def masked_reconstruction_loss(
        self,
        obs: Tensor,
        actions: Tensor,
        obs_valid: Tensor,
        ratio: float,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict]:
        """Mask tokens (:meth:`mask_tokens`), attend bidirectionally, reconstruct the masked actions."""
        # The mask embedding replaces the content; modality and timestep embeddings, added after, still say where
        # the gap is.
        tokens, masked = self.mask_tokens(self.encoder.tokenize(obs, actions), ratio, generator)
        token_valid = trajectory_token_valid(obs_valid)
        mask = padding_attention_mask(bidirectional_mask(tokens.shape[1], obs.device), token_valid)
        h = self.encoder.encode(self.encoder.add_embeddings(tokens), mask)
        weights = (masked[:, 1::2] & token_valid[:, 1::2]).float()
        loss, accuracy = self._action_loss(self.masked_head(h[:, 1::2]), actions, weights)
        metrics = {"mask_ratio": torch.tensor(self.n_masked_actions(ratio, actions.shape[1]) / actions.shape[1])}
        if accuracy is not None:
            metrics["masked_accuracy"] = accuracy
        return loss, metrics

    def loss(
        self,
        obs: Tensor,
        actions: Tensor,
        obs_valid: Tensor,
        progress: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Sum of the chosen objectives' losses, plus per-objective metrics (``loss_<name>``, accuracies, ...).

        :param obs: ``(B, K, obs_dim)``
        :param actions: ``(B, K - 1)`` (discrete) or ``(B, K - 1, action_dim)``
        :param obs_valid: ``(B, K)`` boolean, ``False`` for padding slots at the start of a window
        :param progress: training progress in ``[0, 1]``, for the masking curriculum
        :param generator: random generator of the masking
        """
        total = obs.new_zeros(())
        metrics: dict[str, Tensor] = {}
        for name in self.objectives:
            if name == "forward":
                value, extra = self.forward_dynamics_loss(obs, actions, obs_valid)
            elif name == "inverse":
                value, extra = self.inverse_dynamics_loss(obs, actions, obs_valid)
            else:
                value, extra = self.masked_reconstruction_loss(
                    obs, actions, obs_valid, self.mask_ratio(progress), generator
                )
            total = total + value
            metrics[f"loss_{name}"] = value.detach()
            metrics.update(extra)
        metrics["loss"] = total.detach()
        return total, metrics
