"""Masked categorical distributions in pure torch (no SB3 needed).

A masked (invalid) action has probability exactly 0, whatever the logits hold: the logits of invalid actions
are replaced by ``-inf`` before the softmax, so even a valid logit of ``-inf``, the dtype's most negative
value or a float16 overflow cannot hand them probability. After normalisation the ``-inf`` entries are stored
as the dtype's most negative finite value (``finfo.min``), so log-probabilities stay finite, the entropy is
the entropy of the distribution renormalised over the valid actions, and ``torch.where`` sends exactly zero
gradient to the invalid actions' logits.

Mask checks (0/1 values, a valid action in every row, a finite logit at some valid action of every row, no
NaN) are maskrl's own and on by default. They do not follow torch's global ``Distribution`` validation
switch, which other libraries (and ``python -O``) turn off; :func:`set_mask_checks` is the switch for users
who want them off. Unchecked, a masked action is still never sampled: rows with no valid action get no
probability at all, so sampling from them raises instead of choosing an invalid action.

Three distributions of one action follow these rules: :class:`MaskedCategorical` (``Discrete``),
:class:`MaskedMultiCategorical` (``MultiDiscrete``, sb3-contrib's flat mask layout) and :class:`MaskedBernoulli`
(``MultiBinary``, the same flat layout with two entries per bit: "may be 0", "may be 1").

:class:`CategoricalMap` (GridNet, Han et al., ICML 2019) is a grid of categoricals, one per cell of an ``H x W`` map,
of which only the cells where an agent stands count: the agent mask ``(B, H, W)`` selects them, so the joint
log-probability sums, and the entropy averages, over agent cells only. Empty cells contribute exactly 0
(``torch.where``, never a multiplication by the mask, so whatever their logits hold, even NaN or inf, cannot leak into
the result or its gradient). With a per-cell action mask ``(B, A, H, W)``, every agent cell follows the rules above.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.distributions import Categorical, Distribution, constraints, kl_divergence, register_kl
from torch.distributions.utils import lazy_property

MaskLike = torch.Tensor | np.ndarray

_mask_checks_enabled = True


def set_mask_checks(enabled: bool) -> None:
    """Turn maskrl's mask checks on (the default) or off, for every masked distribution built afterwards.

    The checks cost one or two reductions and a sync per distribution. Off, bad masks are not diagnosed, but a
    masked action is still never sampled (a row with no valid action makes sampling raise). torch's own
    ``Distribution.set_default_validate_args`` does not affect them.

    :param enabled: ``True`` to check masks and logits, ``False`` to skip the checks
    """
    global _mask_checks_enabled
    _mask_checks_enabled = bool(enabled)


def mask_checks_enabled() -> bool:
    """Whether maskrl's mask checks are on (see :func:`set_mask_checks`)."""
    return _mask_checks_enabled


def _validation_enabled(validate_args: bool | None) -> bool:
    return _mask_checks_enabled if validate_args is None else bool(validate_args)


_BYTE_DTYPES = (torch.bool, torch.int8, torch.uint8)


def as_bool_mask(mask: MaskLike, logits: torch.Tensor, validate: bool = True, check_rows: bool = True) -> torch.Tensor:
    """Convert ``mask`` (bool or 0/1 integers/floats, numpy or torch) to a bool tensor beside ``logits``.

    :param mask: ``True``/1 marks a valid action; same shape as ``logits``
    :param logits: the logits the mask applies to (gives the expected shape and the device)
    :param validate: check that the values are 0/1 and (with ``check_rows``) that every row has a valid action
    :param check_rows: with ``validate``, check the rows along the last dimension
    :return: boolean mask on ``logits.device``
    :raises ValueError: on a shape mismatch, a value other than 0/1, or a row with no valid action
    """
    if not isinstance(mask, torch.Tensor) or mask.device != logits.device:
        mask = torch.as_tensor(mask, device=logits.device)
    if mask.shape != logits.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match logits shape {tuple(logits.shape)}")
    if mask.dtype in _BYTE_DTYPES:
        as_bytes = mask
    else:
        # Float (or wider int) masks are brought to bytes once: a 0/1 mask survives the round trip unchanged,
        # anything else (0.5, -1, NaN, 2) either changes or shows up as a byte above 1 in the check below.
        as_bytes = mask.to(torch.uint8)
        if validate and not torch.equal(as_bytes.to(mask.dtype), mask):
            bad = as_bytes.to(mask.dtype) != mask
            raise ValueError(f"mask values must be 0/1 or booleans, found {mask[bad][0].item()!r}")
    if validate and not _fast_mask_check(as_bytes, check_rows):
        if as_bytes.dtype != torch.bool:
            bad = (as_bytes != 0) & (as_bytes != 1)
            if bool(bad.any()):
                raise ValueError(f"mask values must be 0/1 or booleans, found {mask[bad][0].item()!r}")
        if check_rows:
            raise_if_empty_rows(as_bytes.bool(), "no valid action")
    return as_bytes if as_bytes.dtype == torch.bool else as_bytes.bool()


def _fast_mask_check(mask: torch.Tensor, check_rows: bool) -> bool:
    """One reduction that is True when a byte mask certainly passes validation (False: look closer).

    Read as raw bytes, a bool/int8/uint8 mask is all 0/1 iff no row's max exceeds 1, and every row has a
    valid action iff every row's max is 1; a byte ``amax`` is much cheaper on CPU than ``any`` on bools.
    """
    if mask.dtype not in _BYTE_DTYPES or mask.shape[-1] == 0:
        return False
    row_max = mask.view(torch.uint8).amax(dim=-1)
    return bool((row_max == 1).all() if check_rows else (row_max <= 1).all())


def _row_name(index: Sequence[int]) -> str:
    return str(index[0]) if len(index) == 1 else str(tuple(index))


def raise_if_empty_rows(mask: torch.Tensor, problem: str) -> None:
    """Raise a ``ValueError`` naming the first batch row of ``mask`` with no ``True`` along the last dim.

    :param mask: boolean mask ``(*batch, n)``
    :param problem: what an empty row means, for the message (e.g. ``"no valid action"``)
    """
    if _fast_mask_check(mask, check_rows=True):
        return
    has_valid = mask.any(dim=-1)
    if has_valid.dim() == 0:
        raise ValueError(f"mask has {problem}")
    empty = (~has_valid).nonzero()
    raise ValueError(f"mask has {problem} in batch row {_row_name(empty[0].tolist())} ({len(empty)} such rows)")


def masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    """Log-probabilities over the valid entries along ``dim``; invalid entries get ``finfo.min``.

    Invalid logits become ``-inf`` before the softmax, so no valid logit (``-inf``, ``finfo.min``, a float16
    overflow) can lose to them. The ``-inf`` results, of invalid actions and of valid actions whose logit was
    ``-inf``, are clamped to the most negative finite value: their probability is exactly 0 and their gradient
    exactly 0. A row with no finite logit at a valid entry comes out NaN (see :func:`raise_if_not_a_number`).

    :param logits: floating logits
    :param mask: bool, ``True`` for valid entries, the shape of ``logits``; ``None`` means all valid
    :param dim: the dimension the distribution is over
    """
    if mask is not None:
        logits = torch.where(mask, logits, torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device))
    return torch.log_softmax(logits, dim=dim).clamp(min=torch.finfo(logits.dtype).min)


def raise_if_not_a_number(normalized: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor, what: str) -> None:
    """Raise a ``ValueError`` naming the first row whose :func:`masked_log_softmax` result is NaN.

    One sum and one sync when all is well: normalised logits are ``<= 0`` and finite, so their sum is NaN exactly
    when some row is NaN (a NaN or ``+inf`` logit at a valid entry, or no finite logit at any valid entry).

    :param normalized: the output of :func:`masked_log_softmax`
    :param logits: the raw logits it was computed from
    :param mask: the bool mask it was computed with
    :param what: what a row of the last dimension chooses, for the message (e.g. ``"action"``)
    """
    if not bool(normalized.detach().sum().isnan()):
        return
    bad = normalized.detach().isnan().any(dim=-1).nonzero()
    index = tuple(bad[0].tolist())
    row = logits.detach()[index]
    valid = mask[index]
    where = f" in batch row {_row_name(index)}" if index else ""
    if not bool((row[valid] != float("-inf")).any()):
        raise ValueError(f"no valid {what} has a finite logit{where} (all valid logits are -inf)")
    raise ValueError(f"logits hold NaN or +inf at a valid {what}{where}")


class MaskedCategorical(Categorical):
    """Categorical distribution over the valid actions only.

    :param logits: unnormalised log-probabilities, shape ``(*batch, n)``, any floating dtype
    :param mask: ``(*batch, n)``, ``True``/1 for valid actions; ``None`` means all actions are valid
    :param validate_args: check the mask's values, that each row has a valid action, that the logits give some
        valid action a finite value and hold no NaN (a sync per call), and ``log_prob``'s argument; ``None``
        follows :func:`set_mask_checks` (not torch's global validation switch)
    :raises ValueError: on a bad mask or bad logits, naming the row
    """

    def __init__(self, logits: torch.Tensor, mask: MaskLike | None = None, validate_args: bool | None = None):
        self.mask: torch.Tensor | None = None
        validate = _validation_enabled(validate_args)
        if mask is None:
            super().__init__(logits=logits, validate_args=validate)
            return
        if logits.dim() < 1:
            raise ValueError("logits must have at least one dimension")
        self.mask = as_bool_mask(mask, logits, validate=validate)
        self._init_normalized(masked_log_softmax(logits, self.mask), checked=validate)
        if validate:
            raise_if_not_a_number(self.logits, logits, self.mask, "action")

    def _init_normalized(self, normalized: torch.Tensor, checked: bool) -> None:
        # What Categorical.__init__ does for logits, without normalising a second time and without its NaN check
        # (a slow bool reduction; raise_if_not_a_number does it in one sum).
        self.logits = normalized
        self._param = self.logits
        self._num_events = self.logits.size(-1)
        #: every row is known to hold probability only at valid actions (the checks ran and passed)
        self._rows_checked = checked
        Distribution.__init__(self, self.logits.size()[:-1], validate_args=False)
        self._validate_args = checked  # log_prob still checks its argument, as torch's Categorical does

    @lazy_property
    def probs(self) -> torch.Tensor:
        probs = torch.softmax(self.logits, dim=-1)
        if self.mask is not None and not getattr(self, "_rows_checked", True):
            # Unchecked rows may have no valid action (all finfo.min: softmax would make them uniform over
            # invalid actions) or NaN: give masked actions nothing, so sampling such a row raises instead.
            probs = torch.where(self.mask, probs, torch.zeros((), dtype=probs.dtype, device=probs.device))
        return probs

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        if self.logits.dtype != torch.float16:
            return super().sample(sample_shape)
        # A single draw of torch.multinomial is argmax(probs / q) with q ~ Exp(1) in the probs' dtype;
        # float16 rounds q to 0 about once in 3e7 draws, and the NaN of 0/0 wins the argmax, which can be
        # a masked action. Drawing from float32 probabilities never meets that.
        sample_shape = torch.Size(sample_shape)
        probs_2d = self.probs.float().reshape(-1, self._num_events)
        samples_2d = torch.multinomial(probs_2d, sample_shape.numel(), True).T
        return samples_2d.reshape(self._extended_shape(sample_shape))


def _clamp_joint(log_prob: torch.Tensor) -> torch.Tensor:
    # Each invalid part contributes finfo.min; two of them would sum to -inf. The joint stays finite.
    return log_prob.clamp(min=torch.finfo(log_prob.dtype).min)


class _IndependentMaskedCategoricals(Distribution):
    """Independent masked categoricals along the second-to-last dimension of ``(*batch, k, width)`` logits.

    The base of :class:`MaskedMultiCategorical`: one batched
    :class:`MaskedCategorical` does the work of ``k`` separate ones (sb3-contrib builds ``k`` objects per call,
    which is what makes wide ``MultiBinary`` spaces slow there).
    """

    arg_constraints = {}
    has_enumerate_support = False
    #: what one sub-distribution chooses, for error messages
    part_name = "sub-action"

    def _init_parts(self, logits: torch.Tensor, mask: torch.Tensor | None, nvec: Sequence[int], validate: bool) -> None:
        """Build the batched categorical from padded ``(*batch, k, width)`` logits and mask.

        :param logits: padded logits
        :param mask: padded bool mask (padding is ``False``), or ``None`` when every entry is valid
        :param nvec: number of choices of each part
        :param validate: run the checks (the mask's values were checked by the caller)
        """
        self.nvec = [int(n) for n in nvec]
        self._categorical = MaskedCategorical.__new__(MaskedCategorical)
        self._categorical.mask = mask
        if mask is not None and validate:
            self._raise_if_empty_parts(mask)
        normalized = masked_log_softmax(logits, mask)
        self._categorical._init_normalized(normalized, checked=validate)
        if validate:
            self._raise_if_not_a_number(normalized, logits, mask)
        super().__init__(batch_shape=logits.shape[:-2], event_shape=(len(self.nvec),), validate_args=False)
        self._validate_args = validate

    def _raise_if_empty_parts(self, mask: torch.Tensor) -> None:
        if _fast_mask_check(mask, check_rows=True):
            return
        empty = (~mask.any(dim=-1)).nonzero()
        *row, part = empty[0].tolist()
        where = f" in batch row {_row_name(row)}" if row else ""
        raise ValueError(f"mask has no valid choice for {self.part_name} {part}{where} ({len(empty)} such rows)")

    def _raise_if_not_a_number(self, normalized: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor | None) -> None:
        if not bool(normalized.detach().sum().isnan()):
            return
        *row, part = normalized.detach().isnan().any(dim=-1).nonzero()[0].tolist()
        where = f"{self.part_name} {part}" + (f" in batch row {_row_name(row)}" if row else "")
        valid = mask[(*row, part)] if mask is not None else torch.ones_like(logits[(*row, part)], dtype=torch.bool)
        if not bool((logits.detach()[(*row, part)][valid] != float("-inf")).any()):
            raise ValueError(f"no valid choice has a finite logit for {where} (all valid logits are -inf)")
        raise ValueError(f"logits hold NaN or +inf at a valid choice of {where}")

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.integer_interval(0, max(self.nvec) - 1), 1)

    @property
    def probs(self) -> torch.Tensor:
        """Padded per-part probabilities ``(*batch, k, width)``; exactly 0 at invalid and padding entries."""
        return self._categorical.probs

    def _parts_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if value.shape[-1:] != (len(self.nvec),):
            raise ValueError(f"values have shape {tuple(value.shape)}, expected (*batch, {len(self.nvec)})")
        if self._validate_args:
            limits = torch.as_tensor(self.nvec, device=value.device)
            bad = (value < 0) | (value >= limits)
            if value.is_floating_point():
                bad |= value != value.round()
            if bool(bad.any()):
                index = bad.nonzero()[0].tolist()
                raise ValueError(
                    f"{self.part_name} value {value[tuple(index)].item()} at index {tuple(index)} is not in "
                    f"[0, {self.nvec[index[-1]]})"
                )
        # Unchecked, an index past the padded width still makes gather raise; one inside the padding reads finfo.min.
        index, log_pmf = torch.broadcast_tensors(value.long().unsqueeze(-1), self._categorical.logits)
        return log_pmf.gather(-1, index[..., :1]).squeeze(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Joint log-probability ``(*batch,)``: the sum over parts, never below ``finfo.min``.

        :param value: ``(*batch, k)`` choices (any numeric dtype holding whole numbers)
        """
        return _clamp_joint(self._parts_log_prob(value).sum(-1))

    def entropy(self) -> torch.Tensor:
        return self._categorical.entropy().sum(-1)

    @property
    def mode(self) -> torch.Tensor:
        return self._categorical.mode

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        return self._categorical.sample(sample_shape)

    @property
    def distributions(self) -> list[MaskedCategorical]:
        """One distribution per part, built on demand (the batched one does the work of sampling and scoring)."""
        parent = self._categorical
        parts = []
        for part, n in enumerate(self.nvec):
            logits = parent.logits[..., part, :n]
            mask = None if parent.mask is None else parent.mask[..., part, :n]
            # Already normalised, so building from them is exact; the parent ran the checks.
            parts.append(MaskedCategorical(logits, mask, validate_args=False))
        return parts

    def __iter__(self) -> Iterator[MaskedCategorical]:
        """The per-part distributions, as SB3's ``kl_divergence`` iterates a ``MultiCategoricalDistribution``."""
        return iter(self.distributions)


@register_kl(_IndependentMaskedCategoricals, _IndependentMaskedCategoricals)
def _kl_independent_masked(p: _IndependentMaskedCategoricals, q: _IndependentMaskedCategoricals) -> torch.Tensor:
    if p.nvec != q.nvec:
        raise ValueError(f"KL between distributions of different spaces: {p.nvec} vs {q.nvec}")
    return kl_divergence(p._categorical, q._categorical).sum(-1)


def _pad_index(nvec: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each padded entry ``(k, width)`` reads from the flat layout, and which padded entries are real."""
    width = max(nvec)
    starts = np.concatenate([[0], np.cumsum(nvec)[:-1]])
    columns = np.arange(width)
    real = columns[None, :] < np.asarray(nvec)[:, None]
    index = np.where(real, starts[:, None] + columns[None, :], 0)
    return torch.as_tensor(index, device=device), torch.as_tensor(real, device=device)


class MaskedMultiCategorical(_IndependentMaskedCategoricals):
    """Independent masked categoricals, one per ``MultiDiscrete`` sub-action.

    Logits and mask use sb3-contrib's flat layout: the sub-actions' entries are concatenated along
    the last dimension, so both have shape ``(*batch, sum(nvec))``.

    :param logits: flat logits, shape ``(*batch, sum(nvec))``
    :param nvec: number of choices of each sub-action
    :param mask: flat mask of the same shape as ``logits``; ``None`` means all actions are valid
    :param validate_args: as for :class:`MaskedCategorical`
    """

    def __init__(
        self,
        logits: torch.Tensor,
        nvec: Sequence[int],
        mask: MaskLike | None = None,
        validate_args: bool | None = None,
    ):
        nvec = [int(n) for n in nvec]
        total = sum(nvec)
        if logits.dim() < 1 or logits.shape[-1] != total:
            raise ValueError(f"logits have shape {tuple(logits.shape)}, expected (*batch, sum(nvec) = {total})")
        validate = _validation_enabled(validate_args)
        #: the flat bool mask, as given (``None``: all valid)
        self.mask = None if mask is None else as_bool_mask(mask, logits, validate=validate, check_rows=False)
        if len(set(nvec)) == 1:
            # Equal sizes (MultiBinary-like spaces, grids of cells): a view, no padding.
            padded_logits = logits.unflatten(-1, (len(nvec), nvec[0]))
            padded_mask = None if self.mask is None else self.mask.unflatten(-1, (len(nvec), nvec[0]))
        else:
            index, real = _pad_index(nvec, logits.device)
            padded_logits = logits[..., index]
            flat_mask = self.mask if self.mask is not None else torch.ones_like(logits, dtype=torch.bool)
            padded_mask = flat_mask[..., index] & real
        self._init_parts(padded_logits, padded_mask, nvec, validate)


class MaskedBernoulli(Distribution):
    """Independent masked bits for ``MultiBinary(n)`` actions.

    Each bit has one logit, as in SB3's ``BernoulliDistribution``: ``P(bit = 1) = sigmoid(logit)``. The mask has
    two entries per bit, in sb3-contrib's flat layout (the one of ``MultiDiscrete([2] * n)``): entry ``2 * i`` says
    bit ``i`` may be 0, entry ``2 * i + 1`` that it may be 1. ``[1, 1]`` leaves the bit free, ``[1, 0]`` forces 0,
    ``[0, 1]`` forces 1, ``[0, 0]`` is an error. :func:`bit_mask` builds it from two boolean arrays.

    A forced bit's logit is replaced by ``+inf`` or ``-inf`` through ``torch.where``: its value has probability
    exactly 1, the other exactly 0, it adds nothing to the entropy and its logit gets exactly zero gradient. Bits
    are handled as one tensor (sb3-contrib builds one categorical object per bit, which is what makes wide
    ``MultiBinary`` spaces slow there).

    :param logits: ``(*batch, n)`` logits of the bits being 1
    :param mask: ``(*batch, 2 * n)`` flat mask; ``None`` means every bit is free
    :param validate_args: check the mask's values, that every bit has an allowed value, that the logits of free
        bits hold no NaN, and ``log_prob``'s argument; ``None`` follows :func:`set_mask_checks`
    """

    arg_constraints = {}
    has_enumerate_support = False

    def __init__(self, logits: torch.Tensor, mask: MaskLike | None = None, validate_args: bool | None = None):
        if logits.dim() < 1 or not logits.is_floating_point():
            raise ValueError(f"logits must be floating point with at least one dimension, got {tuple(logits.shape)}")
        n_bits = logits.shape[-1]
        validate = _validation_enabled(validate_args)
        #: the flat bool mask ``(*batch, 2 * n)`` (``None``: every bit free)
        self.mask: torch.Tensor | None = None
        #: ``(*batch, n)`` bits whose two values are both allowed (``None``: all)
        self.free: torch.Tensor | None = None
        self.logits = logits
        effective = logits
        if mask is not None:
            expected = (*logits.shape[:-1], 2 * n_bits)
            if tuple(mask.shape) != expected:
                raise ValueError(
                    f"mask has shape {tuple(mask.shape)}, expected {expected}: two entries per bit (may be 0, may be 1)"
                )
            if not isinstance(mask, torch.Tensor) or mask.device != logits.device:
                mask = torch.as_tensor(mask, device=logits.device)
            # For byte masks one reduction over the pairs answers both checks: every pair's max byte is 1 exactly
            # when all values are 0/1 and every bit allows a value.
            checked = validate and _fast_mask_check(mask.unflatten(-1, (n_bits, 2)), check_rows=True)
            reference = logits.new_empty(()).expand(expected)
            self.mask = as_bool_mask(mask, reference, validate=validate and not checked, check_rows=False)
            pairs = self.mask.unflatten(-1, (n_bits, 2))
            if validate and not checked and not _fast_mask_check(pairs, check_rows=True):
                *row, bit = (~pairs.any(dim=-1)).nonzero()[0].tolist()
                count = int((~pairs.any(dim=-1)).sum())
                where = f" in batch row {_row_name(row)}" if row else ""
                raise ValueError(f"mask has no valid choice for bit {bit}{where} ({count} such rows)")
            may_be_zero, may_be_one = pairs[..., 0], pairs[..., 1]
            self.free = may_be_zero & may_be_one
            forced = torch.where(may_be_one, float("inf"), float("-inf")).to(logits.dtype)
            effective = torch.where(self.free, logits, forced)
            if not validate:
                # Unchecked, a bit may allow neither value: NaN makes sampling it raise instead of choosing one.
                effective = torch.where(may_be_zero | may_be_one, effective, torch.nan)
        #: logits with forced bits at +-inf
        self.effective_logits = effective
        #: ``(*batch, n)`` probability of each bit being 1; exactly 0 or 1 for forced bits
        self.probs_one = torch.sigmoid(effective)
        if validate and bool(self.probs_one.detach().sum().isnan()):
            *row, bit = self.probs_one.detach().isnan().nonzero()[0].tolist()
            where = f" in batch row {_row_name(row)}" if row else ""
            raise ValueError(f"logits hold NaN for bit {bit}{where}")
        super().__init__(batch_shape=logits.shape[:-1], event_shape=(n_bits,), validate_args=False)
        self._validate_args = validate

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.boolean, 1)

    @property
    def probs(self) -> torch.Tensor:
        """``(*batch, n, 2)`` probabilities of each bit being 0 and being 1."""
        return torch.stack([1 - self.probs_one, self.probs_one], dim=-1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        """Bits ``(*sample_shape, *batch, n)`` as floats (SB3's ``MultiBinary`` convention)."""
        with torch.no_grad():
            return torch.bernoulli(self.probs_one.expand(self._extended_shape(torch.Size(sample_shape))))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Joint log-probability ``(*batch,)`` of the bits ``value`` (``(*batch, n)``, 0/1 of any dtype).

        A forbidden value gives the dtype's most negative finite value, however many bits took one.
        """
        if self._validate_args and bool(((value != 0) & (value != 1)).any()):
            raise ValueError(f"bit values must be 0 or 1, got {value[(value != 0) & (value != 1)][0].item()!r}")
        # log P(bit = a) = logsigmoid(logit) for a = 1 and logsigmoid(-logit) for a = 0: one logsigmoid of
        # (2a - 1) * logit, which never multiplies an infinite logit by 0.
        sign = value.to(self.effective_logits.dtype) * 2 - 1
        finfo_min = torch.finfo(self.effective_logits.dtype).min
        per_bit = torch.nn.functional.logsigmoid(sign * self.effective_logits).clamp(min=finfo_min)
        return _clamp_joint(per_bit.sum(-1))

    def entropy(self) -> torch.Tensor:
        """Entropy ``(*batch,)``: the sum over free bits (forced bits have none)."""
        # Forced bits get logit 0 here (and 0 entropy below), so no infinity reaches the formula or its gradient;
        # the clamp keeps an infinite free logit from making 0 * inf (its entropy is 0 to float precision anyway).
        logits = self.logits if self.free is None else torch.where(self.free, self.logits, 0.0)
        logits = logits.clamp(-60.0, 60.0)
        per_bit = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.sigmoid(logits), reduction="none")
        if self.free is not None:
            per_bit = torch.where(self.free, per_bit, 0.0)
        return per_bit.sum(-1)

    @property
    def mode(self) -> torch.Tensor:
        """Most likely allowed value of each bit, as floats."""
        return (self.effective_logits > 0).to(self.logits.dtype)


@register_kl(MaskedBernoulli, MaskedBernoulli)
def _kl_masked_bernoulli(p: MaskedBernoulli, q: MaskedBernoulli) -> torch.Tensor:
    logsigmoid = torch.nn.functional.logsigmoid
    one, zero = p.probs_one, 1 - p.probs_one
    # 0 * log(0 / x) = 0; x * log(x / 0) = inf (a value p allows and q forbids).
    term_one = torch.where(one > 0, one * (logsigmoid(p.effective_logits) - logsigmoid(q.effective_logits)), 0.0)
    term_zero = torch.where(zero > 0, zero * (logsigmoid(-p.effective_logits) - logsigmoid(-q.effective_logits)), 0.0)
    return (term_one + term_zero).sum(-1)


def bit_mask(may_be_zero: MaskLike, may_be_one: MaskLike) -> np.ndarray:
    """The flat ``MultiBinary`` mask (see :class:`MaskedBernoulli`) from two per-bit boolean arrays.

    :param may_be_zero: ``(*batch, n)``, whether each bit may be 0
    :param may_be_one: ``(*batch, n)``, whether each bit may be 1
    :return: int8 ``(*batch, 2 * n)``, interleaved ``[zero_0, one_0, zero_1, one_1, ...]``
    """
    zero, one = np.asarray(may_be_zero, dtype=bool), np.asarray(may_be_one, dtype=bool)
    if zero.shape != one.shape:
        raise ValueError(f"may_be_zero has shape {zero.shape} but may_be_one has shape {one.shape}")
    return np.stack([zero, one], axis=-1).reshape(*zero.shape[:-1], 2 * zero.shape[-1]).astype(np.int8)


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
    but ``exp`` on CPU takes a much slower path on the underflowing masked entries (the dtype's most negative
    value); the softmax kernel does not (docs/benchmarks.md, section 5).
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
