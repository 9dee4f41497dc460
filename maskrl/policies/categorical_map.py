"""A grid of categorical distributions, one per cell, counted only where an agent stands (GridNet).

Grid-wise control (Han et al., ICML 2019) views the state as a ``H x W`` feature map; a convolutional
encoder-decoder outputs one action distribution per cell and each agent takes the action of the cell it
stands on. :class:`CategoricalMap` is that joint distribution: the agent mask ``(B, H, W)`` selects the
cells whose actions count, so the joint log-probability sums, and the entropy averages, over agent cells
only. Empty cells contribute exactly 0 (``torch.where``, never a multiplication by the mask, so whatever
their logits hold, even NaN or inf, cannot leak into the result or its gradient).

Combined with a per-cell action mask ``(B, A, H, W)``, every agent cell follows
:class:`~maskrl.policies.distributions.MaskedCategorical`'s rules: invalid actions have probability exactly 0
whatever the logits hold (they are ``-inf`` in the softmax, stored as the dtype's most negative finite value), are
never sampled, the entropy is over the valid actions and their logits receive exactly zero gradient. The checks
follow :func:`~maskrl.policies.distributions.set_mask_checks`, not torch's global validation switch.

:class:`CategoricalMapDistribution` wraps it for SB3, which sees the grid of actions as the flat, row-major
``MultiDiscrete([A] * (H * W))``.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from stable_baselines3.common.distributions import Distribution as SB3Distribution
from torch import nn
from torch.distributions import Distribution, constraints

from maskrl.policies.distributions import MaskLike, _validation_enabled, as_bool_mask, masked_log_softmax

SelfCategoricalMapDistribution = TypeVar("SelfCategoricalMapDistribution", bound="CategoricalMapDistribution")


def _check_shape(name: str, value: MaskLike, expected: tuple[int, ...], layout: str) -> None:
    if tuple(value.shape) != expected:
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {expected} {layout}")


def _on_device(mask: MaskLike, device: torch.device) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.device != device:
        return torch.as_tensor(mask, device=device)
    return mask


def _probs(logits: torch.Tensor) -> torch.Tensor:
    """``exp`` of normalised per-cell logits ``(B, A, H, W)``, computed as a softmax over the actions.

    Equal to ``logits.exp()`` up to rounding (the logits are already normalised) and exactly 0 at masked actions,
    but ``exp`` on CPU takes a path ~80x slower on the underflowing masked entries (the dtype's most negative
    value); the softmax kernel does not (0.75 ms -> 0.08 ms at 128 x 5 x 8 x 8 with 30% of actions masked).
    """
    return torch.softmax(logits, dim=1)


_BYTE_MASK_DTYPES = (torch.bool, torch.int8, torch.uint8)


def _masks_pass(agent_mask: torch.Tensor, action_mask: torch.Tensor) -> bool:
    """True when both masks are certainly valid: 0/1 values and a valid action in every agent cell.

    Read as raw bytes (bool/int8/uint8 only; other dtypes return False, i.e. "look closer"), with ``m`` the max of
    a cell's action-mask bytes: the action mask is 0/1 iff ``m <= 1`` everywhere, and then the agent mask is 0/1
    with a valid action in every agent cell iff ``agent <= m`` everywhere. One reduction and one sync instead of
    three of each (the separate checks cost as much as the rest of the constructor on small batches).
    """
    if agent_mask.dtype not in _BYTE_MASK_DTYPES or action_mask.dtype not in _BYTE_MASK_DTYPES:
        return False
    cell_max = action_mask.view(torch.uint8).amax(dim=1)
    return not bool(((agent_mask.view(torch.uint8) > cell_max) | (cell_max > 1)).any())


class CategoricalMap(Distribution):
    """Independent categoricals over a grid of cells; only the cells holding an agent count.

    ``batch_shape`` is ``(B,)`` and ``event_shape`` is ``(H, W)``: one joint action per sample, one
    sub-action per cell.

    :param logits: unnormalised log-probabilities ``(B, A, H, W)`` (a convolutional decoder's output), any
        floating dtype
    :param agent_mask: ``(B, H, W)``, ``True``/1 where an agent stands (bool or 0/1, numpy or torch);
        ``None`` means every cell holds an agent
    :param action_mask: ``(B, A, H, W)``, ``True``/1 for the valid actions of each cell; ``None`` means all
        valid. Only agent cells need a valid action.
    :param validate_args: check the masks' values, that every agent cell has a valid action, that the logits of
        every agent cell give some valid action a finite value and hold no NaN, and ``log_prob``'s argument;
        ``None`` follows :func:`~maskrl.policies.distributions.set_mask_checks` (shapes are always checked)
    :raises ValueError: on bad shapes, mask values other than 0/1, or an agent cell with no valid action
    """

    arg_constraints = {}
    has_enumerate_support = False

    def __init__(
        self,
        logits: torch.Tensor,
        agent_mask: MaskLike | None = None,
        action_mask: MaskLike | None = None,
        validate_args: bool | None = None,
    ):
        if logits.dim() != 4:
            raise ValueError(f"logits must have shape (B, A, H, W), got shape {tuple(logits.shape)}")
        if not logits.is_floating_point():
            raise ValueError(f"logits must be floating point, got {logits.dtype}")
        batch, n_actions, height, width = logits.shape
        validate = _validation_enabled(validate_args)
        cells = logits[:, 0]  # (B, H, W): the shape and device the agent mask must match
        if agent_mask is not None:
            _check_shape("agent_mask", agent_mask, tuple(cells.shape), f"(B, H, W) for logits {tuple(logits.shape)}")
            agent_mask = _on_device(agent_mask, logits.device)
        if action_mask is not None:
            _check_shape("action_mask", action_mask, tuple(logits.shape), "(B, A, H, W), the shape of logits")
            action_mask = _on_device(action_mask, logits.device)
        # With both masks, one fused check answers all three validation questions at once; the separate
        # (slower, detailed) checks below run only when it fails, to name the problem.
        both = agent_mask is not None and action_mask is not None
        checked = validate and both and _masks_pass(agent_mask, action_mask)  # type: ignore[arg-type]
        validate_masks = validate and not checked
        if agent_mask is None:
            self.agent_mask = torch.ones(cells.shape, dtype=torch.bool, device=logits.device)
        else:
            self.agent_mask = as_bool_mask(agent_mask, cells, validate=validate_masks, check_rows=False)
        # Empty cells get logit 0 and every action valid: their (uniform) distribution is well defined whatever
        # the inputs hold there, so sampling never meets NaN and log_softmax's backward never multiplies by one.
        agent = self.agent_mask.unsqueeze(1)  # (B, 1, H, W), broadcasts over actions
        clean = torch.where(agent, logits, torch.zeros((), dtype=logits.dtype, device=logits.device))
        self.action_mask: torch.Tensor | None = None
        #: ``(B, A, H, W)`` entries that may hold probability: valid actions of agent cells, every action of empty ones
        self._open: torch.Tensor | None = None
        if action_mask is not None:
            self.action_mask = as_bool_mask(action_mask, logits, validate=validate_masks, check_rows=False)
            if validate_masks:
                self._raise_if_agent_without_action()
            self._open = self.action_mask | ~agent
        #: per-cell normalised log-probabilities ``(B, A, H, W)``; empty cells hold the uniform distribution
        self.logits = masked_log_softmax(clean, self._open, dim=1)
        self.n_actions = n_actions
        self._checked = validate
        if validate:
            self._raise_if_not_a_number(clean)
        super().__init__(torch.Size((batch,)), torch.Size((height, width)), validate_args=False)
        self._validate_args = validate  # log_prob checks its argument

    def _raise_if_not_a_number(self, clean: torch.Tensor) -> None:
        # Normalised logits are <= 0 and finite, and empty cells were cleaned, so the sum is NaN exactly when an
        # agent cell had NaN (or +inf) at a valid action, or no finite logit at any valid action.
        if not bool(self.logits.detach().sum().isnan()):
            return
        row, y, x = self.logits.detach().isnan().any(dim=1).nonzero()[0].tolist()
        cell = clean.detach()[row, :, y, x]
        valid = self._open[row, :, y, x] if self._open is not None else torch.ones_like(cell, dtype=torch.bool)
        where = f"the agent in batch row {row}, cell ({y}, {x})"
        if not bool((cell[valid] != float("-inf")).any()):
            raise ValueError(f"no valid action of {where} has a finite logit (all its valid logits are -inf)")
        raise ValueError(f"logits hold NaN or +inf at a valid action of {where}")

    def _raise_if_agent_without_action(self) -> None:
        assert self.action_mask is not None
        # amax over the raw bytes is much faster than any() on CPU (see distributions._fast_mask_check).
        stranded = self.agent_mask & (self.action_mask.view(torch.uint8).amax(dim=1) == 0)
        if bool(stranded.any()):
            where = stranded.nonzero()
            row, y, x = where[0].tolist()
            raise ValueError(
                f"action_mask has no valid action for the agent in batch row {row}, cell ({y}, {x}) "
                f"({len(where)} such agent cells)"
            )

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.integer_interval(0, self.n_actions - 1), 2)

    @property
    def probs(self) -> torch.Tensor:
        """Per-cell probabilities ``(B, A, H, W)`` (empty cells: uniform); exactly 0 at invalid actions."""
        return self._masked_probs(self.logits)

    def _masked_probs(self, logits: torch.Tensor) -> torch.Tensor:
        probs = _probs(logits)
        if not self._checked and self._open is not None:
            # Unchecked, an agent cell may have no valid action: its invalid actions must get nothing (not the
            # uniform share softmax gives equal logits), so sampling it raises instead of choosing one.
            probs = torch.where(self._open, probs, torch.zeros((), dtype=probs.dtype, device=probs.device))
        return probs

    @property
    def n_agents(self) -> torch.Tensor:
        """Number of agent cells of each sample, ``(B,)`` int64."""
        return self.agent_mask.sum(dim=(1, 2))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        """Draw joint actions ``(*sample_shape, B, H, W)`` int64; empty cells get action 0.

        :param sample_shape: leading shape of independent draws
        """
        sample_shape = torch.Size(sample_shape)
        with torch.no_grad():
            # float32 probabilities: a float16 multinomial can draw a masked action (see MaskedCategorical.sample).
            probs_2d = self._masked_probs(self.logits.float()).movedim(1, -1).reshape(-1, self.n_actions)
            draws = torch.multinomial(probs_2d, sample_shape.numel(), True).T
            draws = draws.reshape(*sample_shape, *self.agent_mask.shape)
            return torch.where(self.agent_mask, draws, 0)

    @property
    def mode(self) -> torch.Tensor:
        """Most likely valid action of each agent cell, ``(B, H, W)`` int64; empty cells get action 0."""
        return torch.where(self.agent_mask, self.logits.argmax(dim=1), 0)

    def cell_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-probability of each cell's action, ``(B, H, W)``; exactly 0 in empty cells.

        :param value: actions ``(B, H, W)`` (any numeric dtype; values in empty cells are ignored)
        """
        expected = tuple(self.agent_mask.shape)
        if tuple(value.shape) != expected:
            raise ValueError(f"actions have shape {tuple(value.shape)}, expected {expected} (B, H, W)")
        actions = value.long()
        if self._validate_args:
            bad = self.agent_mask & ((actions < 0) | (actions >= self.n_actions))
            if bool(bad.any()):
                row, y, x = bad.nonzero()[0].tolist()
                raise ValueError(
                    f"action {actions[row, y, x].item()} of the agent in batch row {row}, cell ({y}, {x}) "
                    f"is outside [0, {self.n_actions})"
                )
        # No clamping: unchecked, an out-of-range action of an agent makes gather raise rather than read another
        # action's log-probability.
        index = torch.where(self.agent_mask, actions, 0)
        per_cell = self.logits.gather(1, index.unsqueeze(1)).squeeze(1)
        return torch.where(self.agent_mask, per_cell, torch.zeros((), dtype=per_cell.dtype, device=per_cell.device))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Joint log-probability ``(B,)``: the sum over agent cells of their actions' log-probabilities.

        Never below the dtype's most negative finite value, however many agents took an invalid action.

        :param value: actions ``(B, H, W)``; values in empty cells are ignored
        """
        joint = self.cell_log_prob(value).sum(dim=(1, 2))
        return joint.clamp(min=torch.finfo(joint.dtype).min)

    def cell_entropy(self) -> torch.Tensor:
        """Entropy of each cell's distribution over its valid actions, ``(B, H, W)``; exactly 0 in empty cells."""
        # p * log p with p exactly 0 at masked actions (finite log p): -0, as torch's Categorical.entropy computes.
        per_cell = -(self.probs * self.logits).sum(dim=1)
        return torch.where(self.agent_mask, per_cell, torch.zeros((), dtype=per_cell.dtype, device=per_cell.device))

    def entropy(self) -> torch.Tensor:
        """Mean entropy over the agent cells of each sample, ``(B,)``; 0 for a sample with no agent."""
        # Clamping the count keeps an agent-free sample at 0 / 1 = 0 instead of 0 / 0 = NaN.
        count = self.n_agents.clamp(min=1).to(self.logits.dtype)
        return self.cell_entropy().sum(dim=(1, 2)) / count


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
