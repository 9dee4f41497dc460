"""SB3 ``Distribution`` wrappers around :mod:`maskrl.policies.distributions`."""

from __future__ import annotations

from typing import TypeVar

import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.distributions import Distribution as SB3Distribution
from torch import nn

from maskrl.policies.distributions import (
    CategoricalMap,
    MaskedBernoulli,
    MaskedCategorical,
    MaskedMultiCategorical,
    MaskLike,
)

SelfMaskedCategoricalDistribution = TypeVar("SelfMaskedCategoricalDistribution", bound="MaskedCategoricalDistribution")
SelfMaskedMultiCategoricalDistribution = TypeVar(
    "SelfMaskedMultiCategoricalDistribution", bound="MaskedMultiCategoricalDistribution"
)
SelfMaskedBernoulliDistribution = TypeVar("SelfMaskedBernoulliDistribution", bound="MaskedBernoulliDistribution")


def _check_width(action_logits: torch.Tensor, expected: int, what: str) -> None:
    # SB3's own distributions accept any width and build a distribution over another action space.
    if action_logits.dim() < 1 or action_logits.shape[-1] != expected:
        raise ValueError(f"action_logits have shape {tuple(action_logits.shape)}, expected (batch, {expected}) {what}")


class _FromParamsWithMask:
    """``actions_from_params``/``log_prob_from_params`` that take the mask too (SB3's drop it)."""

    def actions_from_params(
        self, action_logits: torch.Tensor, deterministic: bool = False, action_mask: MaskLike | None = None
    ) -> torch.Tensor:
        self.proba_distribution(action_logits, action_mask)  # type: ignore[attr-defined]
        return self.get_actions(deterministic=deterministic)  # type: ignore[attr-defined]

    def log_prob_from_params(
        self, action_logits: torch.Tensor, action_mask: MaskLike | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        actions = self.actions_from_params(action_logits, action_mask=action_mask)
        return actions, self.log_prob(actions)  # type: ignore[attr-defined]


class MaskedCategoricalDistribution(_FromParamsWithMask, CategoricalDistribution):
    """SB3 categorical distribution for ``Discrete`` actions that accepts an action mask.

    :param action_dim: number of discrete actions
    """

    distribution: MaskedCategorical

    def proba_distribution(
        self: SelfMaskedCategoricalDistribution, action_logits: torch.Tensor, action_mask: MaskLike | None = None
    ) -> SelfMaskedCategoricalDistribution:
        """Set the distribution's parameters.

        :param action_logits: logits ``(batch, n)``
        :param action_mask: ``(batch, n)``, 1/True for valid actions; ``None`` means all valid
        """
        _check_width(action_logits, self.action_dim, "for the action space's n")
        self.distribution = MaskedCategorical(action_logits, action_mask)
        return self


class _JointDistribution:
    """The SB3 methods for a torch distribution over a whole action vector (SB3's own sum over parts or iterate)."""

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.distribution.log_prob(actions)  # type: ignore[attr-defined]

    def entropy(self) -> torch.Tensor:
        return self.distribution.entropy()  # type: ignore[attr-defined]

    def sample(self) -> torch.Tensor:
        return self.distribution.sample()  # type: ignore[attr-defined]

    def mode(self) -> torch.Tensor:
        return self.distribution.mode  # type: ignore[attr-defined]


class MaskedMultiCategoricalDistribution(_JointDistribution, _FromParamsWithMask, MultiCategoricalDistribution):
    """SB3 distribution for ``MultiDiscrete`` actions that accepts a flat action mask.

    :param action_dims: number of choices of each sub-action
    """

    distribution: MaskedMultiCategorical  # type: ignore[assignment]

    def proba_distribution(
        self: SelfMaskedMultiCategoricalDistribution, action_logits: torch.Tensor, action_mask: MaskLike | None = None
    ) -> SelfMaskedMultiCategoricalDistribution:
        """Set the distribution's parameters.

        :param action_logits: flat logits ``(batch, sum(action_dims))``
        :param action_mask: flat mask of the same shape, 1/True for valid choices; ``None`` means all valid
        """
        self.distribution = MaskedMultiCategorical(action_logits, self.action_dims, action_mask)
        return self


class MaskedBernoulliDistribution(_JointDistribution, _FromParamsWithMask, BernoulliDistribution):
    """SB3 distribution for ``MultiBinary(n)`` actions that accepts a flat mask of two entries per bit.

    The network outputs one logit per bit, as for SB3's ``BernoulliDistribution``; the mask is
    :class:`~maskrl.policies.distributions.MaskedBernoulli`'s (``2 * n`` entries: bit ``i`` may be 0, may be 1).

    :param action_dims: number of bits
    """

    distribution: MaskedBernoulli  # type: ignore[assignment]

    def proba_distribution(
        self: SelfMaskedBernoulliDistribution, action_logits: torch.Tensor, action_mask: MaskLike | None = None
    ) -> SelfMaskedBernoulliDistribution:
        """Set the distribution's parameters.

        :param action_logits: ``(batch, n)`` logits of each bit being 1
        :param action_mask: ``(batch, 2 * n)``, 1/True where a bit may take that value; ``None`` means all free
        """
        _check_width(action_logits, self.action_dims, "(one logit per bit)")
        self.distribution = MaskedBernoulli(action_logits, action_mask)
        return self


MaskedDistribution = MaskedCategoricalDistribution | MaskedMultiCategoricalDistribution | MaskedBernoulliDistribution


def own_actions_log_prob(distribution: SB3Distribution, actions: torch.Tensor) -> torch.Tensor:
    """``distribution.log_prob(actions)`` for actions this same distribution just sampled (or took the mode of).

    Such actions are in the support by construction, so torch's per-call check of the ``log_prob`` argument (a few
    small tensor ops and a sync, ~15-30 µs per rollout step on CPU) can only pass; it is skipped here, and left on
    for every other caller (PPO's update calls ``log_prob`` on actions read back from the rollout buffer).

    :param distribution: an SB3 distribution whose parameters are set (``proba_distribution`` was called)
    :param actions: what ``distribution.get_actions()`` just returned
    """
    inner = getattr(distribution, "distribution", None)
    if not isinstance(inner, torch.distributions.Distribution) or not inner._validate_args:
        return distribution.log_prob(actions)
    inner._validate_args = False
    try:
        return distribution.log_prob(actions)
    finally:
        inner._validate_args = True


def make_masked_distribution(action_space: spaces.Space) -> MaskedDistribution:
    """Return the masked SB3 distribution that fits ``action_space``.

    :param action_space: ``Discrete``, ``MultiDiscrete`` (1-D) or ``MultiBinary`` (1-D)
    :raises TypeError: for any other action space
    """
    if isinstance(action_space, spaces.Discrete):
        return MaskedCategoricalDistribution(int(action_space.n))
    if isinstance(action_space, spaces.MultiDiscrete):
        if action_space.nvec.ndim != 1:
            raise TypeError(f"MultiDiscrete action masks need a 1-D nvec, got shape {action_space.nvec.shape}")
        return MaskedMultiCategoricalDistribution([int(n) for n in action_space.nvec])
    if isinstance(action_space, spaces.MultiBinary):
        if len(action_space.shape) != 1:
            raise TypeError(f"MultiBinary action masks need a 1-D space, got shape {action_space.shape}")
        return MaskedBernoulliDistribution(int(action_space.shape[0]))
    raise TypeError(f"action masking needs a Discrete, MultiDiscrete or MultiBinary action space, got {action_space}")


SelfCategoricalMapDistribution = TypeVar("SelfCategoricalMapDistribution", bound="CategoricalMapDistribution")


class CategoricalMapDistribution(SB3Distribution):
    """SB3 distribution for a grid of per-cell actions, seen by SB3 as ``MultiDiscrete([A] * (H * W))``.

    Actions go in and out flat, ``(B, H * W)``, in row-major order (cell ``(y, x)`` is sub-action
    ``y * W + x``); the parameters are the logit map ``(B, A, H, W)`` with an agent mask and an optional
    per-cell action mask (see :class:`CategoricalMap`).

    :param n_actions: number of actions of each cell, ``A``
    :param height: grid height, ``H``
    :param width: grid width, ``W``
    """

    distribution: CategoricalMap

    def __init__(self, n_actions: int, height: int, width: int):
        super().__init__()
        self.n_actions = int(n_actions)
        self.height = int(height)
        self.width = int(width)
        self.action_dim = self.height * self.width

    def proba_distribution_net(self, latent_dim: int) -> nn.Module:
        """A 1x1 convolution mapping a ``(B, latent_dim, H, W)`` feature map to the logit map ``(B, A, H, W)``.

        :param latent_dim: channels of the feature map
        """
        return nn.Conv2d(latent_dim, self.n_actions, kernel_size=1)

    def proba_distribution(
        self: SelfCategoricalMapDistribution,
        action_logits: torch.Tensor,
        agent_mask: MaskLike | None = None,
        action_mask: MaskLike | None = None,
    ) -> SelfCategoricalMapDistribution:
        """Set the distribution's parameters.

        :param action_logits: logit map ``(B, A, H, W)``
        :param agent_mask: ``(B, H, W)``, 1/True where an agent stands; ``None`` counts every cell
        :param action_mask: ``(B, A, H, W)``, 1/True for valid actions; ``None`` means all valid
        """
        expected = (self.n_actions, self.height, self.width)
        if action_logits.dim() != 4 or tuple(action_logits.shape[1:]) != expected:
            raise ValueError(f"action_logits have shape {tuple(action_logits.shape)}, expected (B, *{expected})")
        self.distribution = CategoricalMap(action_logits, agent_mask, action_mask)
        return self

    def _grid(self, actions: torch.Tensor) -> torch.Tensor:
        # PPO's rollout buffer hands MultiDiscrete actions back as float32 (B, H * W).
        return actions.reshape(-1, self.height, self.width)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.distribution.log_prob(self._grid(actions))

    def entropy(self) -> torch.Tensor:
        return self.distribution.entropy()

    def sample(self) -> torch.Tensor:
        return self.distribution.sample().flatten(1)

    def mode(self) -> torch.Tensor:
        return self.distribution.mode.flatten(1)

    def actions_from_params(
        self,
        action_logits: torch.Tensor,
        agent_mask: MaskLike | None = None,
        action_mask: MaskLike | None = None,
        deterministic: bool = False,
    ) -> torch.Tensor:
        self.proba_distribution(action_logits, agent_mask, action_mask)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(
        self,
        action_logits: torch.Tensor,
        agent_mask: MaskLike | None = None,
        action_mask: MaskLike | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        actions = self.actions_from_params(action_logits, agent_mask, action_mask)
        return actions, self.log_prob(actions)
