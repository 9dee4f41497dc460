"""Tests for the masked categorical distributions and their SB3 wrappers.

Reference values are computed independently in float64 numpy: the softmax over the valid logits only,
with probability 0 elsewhere ("the renormalised distribution").

Statistical tests seed torch (torch.manual_seed) and bound the sampling noise with Hoeffding's inequality,
P(|freq - p| >= t) <= 2 exp(-2 N t^2) for N draws, which holds whatever p is. Each (N, t) below keeps this
bound under 1e-8 per checked frequency (the value is given next to each test); a run checks fewer than 4000
frequencies of valid actions, so the chance of any false failure in a run is below 1e-7 even before seeding.
Invalid actions have probability exactly 0, so for them "never sampled" is exact, not statistical.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sb3_contrib.common.maskable.distributions import MaskableCategorical, MaskableMultiCategoricalDistribution
from torch import nn
from torch.distributions import Categorical, Distribution

from maskrl.policies.distributions import (
    MaskedCategorical,
    MaskedMultiCategorical,
    mask_checks_enabled,
    set_mask_checks,
)
from maskrl.policies.sb3_distributions import (
    MaskedCategoricalDistribution,
    MaskedMultiCategoricalDistribution,
    make_masked_distribution,
)

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
# Tolerances for comparing with the float64 reference computed from the *same* (already rounded) logits in [-20, 20],
# n <= 12. Largest errors seen over 20000 random cases per dtype (float16 / bfloat16 / float32 / float64):
#   probabilities (absolute):                        3.7e-4 / 2.7e-3 / 2.5e-7 / 2.2e-15
#   log-probabilities and entropy (|err| / (1 + |ref|)): 8.5e-3 / 6.8e-2 / 1.1e-6 / 3.6e-15
#   |sum of probabilities - 1| / eps:                0.4 / 0.4 / 2.1 / 3
# The tolerances below leave a margin of at least 4x; LOG_TOL is used as both atol and rtol.
PROB_ATOL = {torch.float16: 5e-3, torch.bfloat16: 3e-2, torch.float32: 1e-6, torch.float64: 1e-12}
LOG_TOL = {torch.float16: 5e-2, torch.bfloat16: 4e-1, torch.float32: 1e-5, torch.float64: 1e-13}

FAST = settings(max_examples=30, deadline=None)


# ---------------------------------------------------------------------------------------------------------------------
# Reference implementation (float64 numpy) and strategies
# ---------------------------------------------------------------------------------------------------------------------


def ref_log_probs(logits, mask) -> np.ndarray:
    """log of the distribution renormalised over the valid actions; -inf on invalid actions."""
    logits = np.asarray(torch.as_tensor(logits).double().detach(), dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    masked = np.where(mask, logits, -np.inf)
    top = masked.max(axis=-1, keepdims=True)
    log_norm = top + np.log(np.exp(masked - top).sum(axis=-1, keepdims=True))
    return masked - log_norm


def ref_probs(logits, mask) -> np.ndarray:
    return np.exp(ref_log_probs(logits, mask))


def ref_entropy(logits, mask) -> np.ndarray:
    log_p = ref_log_probs(logits, mask)
    p = np.exp(log_p)
    return -np.where(p > 0, p * np.where(p > 0, log_p, 0.0), 0.0).sum(axis=-1)


def assert_samples_valid(samples: torch.Tensor, mask: torch.Tensor) -> None:
    """``samples`` has shape ``(*sample_shape, *batch)``; every sample must be a valid action of its row."""
    expanded = mask.expand(*samples.shape, mask.shape[-1])
    assert bool(expanded.gather(-1, samples.unsqueeze(-1)).all()), "an invalid action was sampled"


@st.composite
def logits_and_masks(draw, max_batch=4, max_n=12, min_value=-20.0, max_value=20.0, min_n=1):
    """float64 logits (exactly representable in float32) and a bool mask with >= 1 valid action per row."""
    batch = draw(st.integers(1, max_batch))
    n = draw(st.integers(min_n, max_n))
    elements = st.floats(min_value, max_value, allow_nan=False, allow_infinity=False, width=32)
    logits = draw(arrays(np.float64, (batch, n), elements=elements))
    mask = draw(arrays(np.bool_, (batch, n)))
    forced = draw(arrays(np.int64, (batch,), elements=st.integers(0, n - 1)))
    mask[np.arange(batch), forced] = True
    return torch.as_tensor(logits), torch.as_tensor(mask)


@st.composite
def multi_logits_and_masks(draw, max_batch=3, max_subactions=4, max_choices=5):
    """(flat logits, nvec, flat mask) with >= 1 valid choice per sub-action and row."""
    nvec = draw(st.lists(st.integers(1, max_choices), min_size=1, max_size=max_subactions))
    batch = draw(st.integers(1, max_batch))
    logit_parts, mask_parts = [], []
    for n in nvec:
        elements = st.floats(-20.0, 20.0, allow_nan=False, allow_infinity=False, width=32)
        logit_parts.append(draw(arrays(np.float64, (batch, n), elements=elements)))
        part = draw(arrays(np.bool_, (batch, n)))
        part[np.arange(batch), draw(arrays(np.int64, (batch,), elements=st.integers(0, n - 1)))] = True
        mask_parts.append(part)
    logits = torch.as_tensor(np.concatenate(logit_parts, axis=-1))
    mask = torch.as_tensor(np.concatenate(mask_parts, axis=-1))
    return logits, nvec, mask


def split(tensor: torch.Tensor, nvec) -> tuple[torch.Tensor, ...]:
    return torch.split(tensor, list(nvec), dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Exact small examples
# ---------------------------------------------------------------------------------------------------------------------


def test_exact_small_example():
    logits = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    mask = torch.tensor([True, False, True, False])
    dist = MaskedCategorical(logits, mask)

    p0 = math.e / (math.e + math.e**3)
    p2 = math.e**3 / (math.e + math.e**3)
    expected_probs = torch.tensor([p0, 0.0, p2, 0.0], dtype=torch.float64)
    torch.testing.assert_close(dist.probs, expected_probs, atol=1e-15, rtol=1e-12)
    assert dist.probs[1] == 0 and dist.probs[3] == 0
    torch.testing.assert_close(
        dist.entropy(), torch.tensor(-(p0 * math.log(p0) + p2 * math.log(p2)), dtype=torch.float64)
    )
    # H = log(1 + e^2) - 2 e^2 / (1 + e^2) ~= 0.36513 nats
    assert dist.entropy().item() == pytest.approx(math.log(1 + math.e**2) - 2 * math.e**2 / (1 + math.e**2), rel=1e-12)
    torch.testing.assert_close(dist.log_prob(torch.tensor(0)), torch.tensor(math.log(p0), dtype=torch.float64))
    torch.testing.assert_close(dist.log_prob(torch.tensor(2)), torch.tensor(math.log(p2), dtype=torch.float64))
    # the highest raw logit (action 3) is invalid
    assert dist.mode.item() == 2


def test_exact_example_sample_frequencies():
    # Hoeffding: N = 100_000 draws, t = 0.01 -> P(|freq - p| >= t) <= 2 exp(-20) ~= 4e-9 per action.
    torch.manual_seed(0)
    n_samples = 100_000
    dist = MaskedCategorical(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1, 0, 1, 0]))
    samples = dist.sample((n_samples,))
    freqs = torch.bincount(samples, minlength=4).double() / n_samples
    p0 = 1 / (1 + math.e**2)
    assert freqs[1] == 0 and freqs[3] == 0
    assert freqs[0].item() == pytest.approx(p0, abs=0.01)
    assert freqs[2].item() == pytest.approx(1 - p0, abs=0.01)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "mask_kind", ["none", "bool", "int"], ids=["mask=None", "all-True bool mask", "all-ones int mask"]
)
def test_all_valid_mask_matches_torch_categorical(dtype, mask_kind):
    torch.manual_seed(1)
    logits = (torch.randn(5, 7) * 3).to(dtype)
    mask = {"none": None, "bool": torch.ones(5, 7, dtype=torch.bool), "int": torch.ones(5, 7, dtype=torch.int64)}
    dist = MaskedCategorical(logits, mask[mask_kind])
    reference = Categorical(logits=logits)
    actions = torch.arange(7).unsqueeze(-1).expand(7, 5)
    if mask_kind == "none":
        # Without a mask it *is* torch's Categorical, to the bit.
        assert torch.equal(dist.probs, reference.probs)
        assert torch.equal(dist.logits, reference.logits)
        assert torch.equal(dist.entropy(), reference.entropy())
        assert torch.equal(dist.log_prob(actions), reference.log_prob(actions))
    else:
        # With a mask the logits are normalised by log_softmax (torch uses logits - logsumexp), which may round
        # differently in the last place: equal up to the dtype's rounding.
        atol, log_tol = PROB_ATOL[dtype], LOG_TOL[dtype]
        torch.testing.assert_close(dist.probs, reference.probs, atol=atol, rtol=0)
        torch.testing.assert_close(dist.logits, reference.logits, atol=log_tol, rtol=0)
        torch.testing.assert_close(dist.entropy(), reference.entropy(), atol=log_tol, rtol=0)
        torch.testing.assert_close(dist.log_prob(actions), reference.log_prob(actions), atol=log_tol, rtol=0)
    assert torch.equal(dist.mode, reference.mode)


# ---------------------------------------------------------------------------------------------------------------------
# Dtypes
# ---------------------------------------------------------------------------------------------------------------------

# Row 0: the invalid actions have the highest raw logits. Row 1: one valid action. Row 2: all valid.
DTYPE_MASK = torch.tensor(
    [
        [True, False, True, False, True, False],
        [False, False, False, True, False, False],
        [True, True, True, True, True, True],
    ]
)
MODERATE_LOGITS = torch.tensor(
    [[0.5, 4.0, 1.5, 5.0, 1.0, 4.5], [1.0, 2.0, 3.0, 0.5, 4.0, 5.0], [0.0, 2.5, 1.0, 2.0, 0.5, 1.5]]
)
# Valid logits of 30-60: in float16, finfo.min - logsumexp overflows to -inf unless the code prevents it.
LARGE_LOGITS = torch.tensor(
    [[30.0, 64.0, 45.0, 62.0, 60.0, 63.0], [30.0, 40.0, 50.0, 55.0, 60.0, 61.0], [30.0, 60.0, 45.0, 52.0, 38.0, 57.0]]
)
LOGIT_SETS = {"moderate": MODERATE_LOGITS, "large": LARGE_LOGITS}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", ["moderate", "large"])
def test_masked_logits_take_dtype_min(dtype, scale):
    # All valid logits are >= 0, so normalising (subtracting logsumexp >= 0) keeps finfo.min at finfo.min.
    dist = MaskedCategorical(LOGIT_SETS[scale].to(dtype), DTYPE_MASK)
    assert dist.logits.dtype == dtype
    assert bool((dist.logits[~DTYPE_MASK] == torch.finfo(dtype).min).all())
    assert bool(torch.isfinite(dist.logits).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", ["moderate", "large"])
def test_everything_finite_in_every_dtype(dtype, scale):
    torch.manual_seed(2)
    logits = LOGIT_SETS[scale].to(dtype)
    dist = MaskedCategorical(logits, DTYPE_MASK)
    probs = dist.probs
    assert probs.dtype == dtype
    assert bool(torch.isfinite(probs).all())
    assert bool((probs[~DTYPE_MASK] == 0).all())
    torch.testing.assert_close(probs.double().sum(-1), torch.ones(3, dtype=torch.float64), atol=2e-2, rtol=0)
    torch.testing.assert_close(
        probs.double(), torch.as_tensor(ref_probs(logits, DTYPE_MASK)), atol=PROB_ATOL[dtype], rtol=0
    )

    entropy = dist.entropy()
    assert entropy.dtype == dtype and entropy.shape == (3,)
    assert bool(torch.isfinite(entropy).all())
    assert entropy[1] == 0  # single valid action

    samples = dist.sample((2000,))
    assert_samples_valid(samples, DTYPE_MASK)
    log_prob = dist.log_prob(samples)
    assert bool(torch.isfinite(log_prob).all())
    assert bool((log_prob[:, 1] == 0).all())

    all_actions = torch.arange(6).unsqueeze(-1).expand(6, 3)
    valid_log_probs = dist.log_prob(all_actions).T[DTYPE_MASK]
    assert bool(torch.isfinite(valid_log_probs).all())

    mode = dist.mode
    assert mode.tolist() == {"moderate": [2, 3, 1], "large": [4, 3, 1]}[scale]
    assert bool(DTYPE_MASK.gather(-1, mode.unsqueeze(-1)).all())


# ---------------------------------------------------------------------------------------------------------------------
# Invariants (hypothesis)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=logits_and_masks())
@FAST
def test_matches_distribution_renormalised_over_valid_actions(dtype, data):
    logits64, mask = data
    logits = logits64.to(dtype)
    dist = MaskedCategorical(logits, mask)
    n = mask.shape[-1]

    # probabilities: exactly 0 on invalid actions, sum to 1, softmax over the valid logits only
    probs = dist.probs
    assert probs.dtype == dtype
    assert bool((probs[~mask] == 0).all()), "invalid actions must have probability exactly 0"
    sums = probs.double().sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=16 * torch.finfo(dtype).eps, rtol=0)
    expected_probs = torch.as_tensor(ref_probs(logits, mask))
    torch.testing.assert_close(probs.double(), expected_probs, atol=PROB_ATOL[dtype], rtol=1e-5)

    # log_prob of every valid action: log of the renormalised distribution
    log_prob = dist.log_prob(torch.arange(n).unsqueeze(-1).expand(n, mask.shape[0])).T
    assert bool(torch.isfinite(log_prob).all())
    expected_log_prob = torch.as_tensor(ref_log_probs(logits, mask))
    torch.testing.assert_close(
        log_prob.double()[mask], expected_log_prob[mask], atol=LOG_TOL[dtype], rtol=LOG_TOL[dtype]
    )

    # entropy: that of the renormalised distribution, i.e. of a Categorical over the valid logits only
    entropy = dist.entropy()
    assert entropy.dtype == dtype
    expected_entropy = torch.as_tensor(ref_entropy(logits, mask))
    torch.testing.assert_close(entropy.double(), expected_entropy, atol=LOG_TOL[dtype], rtol=LOG_TOL[dtype])
    for row in range(mask.shape[0]):
        valid_only = Categorical(logits=logits[row][mask[row]]).entropy()
        torch.testing.assert_close(entropy[row], valid_only, atol=LOG_TOL[dtype], rtol=LOG_TOL[dtype])


@given(data=logits_and_masks())
@FAST
def test_mode_is_argmax_over_valid_actions(data):
    logits, mask = data
    mode = MaskedCategorical(logits, mask).mode
    assert bool(mask.gather(-1, mode.unsqueeze(-1)).all())
    best_valid = logits.masked_fill(~mask, -math.inf).max(-1).values
    chosen = logits.gather(-1, mode.unsqueeze(-1)).squeeze(-1)
    # ties (and logits equal up to rounding of the probabilities) may pick any of the best valid actions
    assert bool((chosen >= best_valid - 1e-9 * (1 + best_valid.abs())).all())


@pytest.mark.parametrize("dtype", DTYPES)
def test_mode_ignores_invalid_action_with_highest_logit(dtype):
    logits = torch.tensor([[10.0, 1.0, 2.0], [0.0, 9.0, -1.0], [3.0, 2.0, 50.0]], dtype=dtype)
    mask = torch.tensor([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    assert MaskedCategorical(logits, mask).mode.tolist() == [2, 0, 0]


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=logits_and_masks(max_n=10), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=20, deadline=None)
def test_invalid_actions_are_never_sampled(dtype, data, seed):
    # 2000 draws per row; frequencies of valid actions are checked with the Hoeffding tolerance
    # t = 0.08: 2 exp(-2 * 2000 * 0.08^2) ~= 1.5e-11 per frequency.
    logits64, mask = data
    logits = logits64.to(dtype)
    torch.manual_seed(seed)
    n_samples = 2000
    dist = MaskedCategorical(logits, mask)
    assert bool((dist.probs[~mask] == 0).all())
    samples = dist.sample((n_samples,))
    assert_samples_valid(samples, mask)
    freqs = torch.nn.functional.one_hot(samples, mask.shape[-1]).double().mean(0)
    expected = torch.as_tensor(ref_probs(logits, mask))
    torch.testing.assert_close(freqs, expected, atol=0.08 + PROB_ATOL[dtype], rtol=0)


@st.composite
def sparse_large_masks(draw, n=4096, max_batch=3, max_valid=4):
    """Logits ``(batch, 4096)`` with 1-4 valid actions per row, whose invalid logits are all higher."""
    batch = draw(st.integers(1, max_batch))
    mask = np.zeros((batch, n), dtype=bool)
    logits = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).normal(40.0, 5.0, size=(batch, n))
    for row in range(batch):
        valid = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=max_valid, unique=True))
        mask[row, valid] = True
        logits[row, valid] = draw(st.lists(st.floats(-5.0, 5.0, width=32), min_size=len(valid), max_size=len(valid)))
    return torch.as_tensor(logits), torch.as_tensor(mask)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=sparse_large_masks(), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=10, deadline=None)
def test_large_action_count_with_few_valid_actions(dtype, data, seed):
    # 4000 draws per row, Hoeffding tolerance t = 0.06: 2 exp(-2 * 4000 * 0.06^2) ~= 6e-13 per frequency.
    logits64, mask = data
    logits = logits64.to(dtype)
    torch.manual_seed(seed)
    dist = MaskedCategorical(logits, mask)
    assert bool((dist.probs[~mask] == 0).all())
    samples = dist.sample((4000,))
    assert_samples_valid(samples, mask)
    counts = torch.stack([torch.bincount(samples[:, row], minlength=mask.shape[-1]) for row in range(mask.shape[0])])
    expected = torch.as_tensor(ref_probs(logits, mask))
    torch.testing.assert_close(counts.double() / 4000, expected, atol=0.06 + PROB_ATOL[dtype], rtol=0)
    assert bool(mask.gather(-1, dist.mode.unsqueeze(-1)).all())
    assert bool(torch.isfinite(dist.entropy()).all())


def test_float16_single_draw_never_samples_invalid_action():
    # torch.multinomial's single draw is argmax(probs / q), q ~ Exp(1) in the probs' dtype; in float16 q rounds
    # to 0 about 3e-8 of the time and NaN = 0 / 0 wins the argmax. With sampling done in float16, about one seed
    # in three at this size (seed 20 among them) drew a masked action; sampling in float32 must never do so.
    logits = torch.zeros(2, 4096, dtype=torch.float16)
    mask = torch.zeros(2, 4096, dtype=torch.bool)
    mask[:, 0] = True
    dist = MaskedCategorical(logits, mask)
    for seed in range(60):
        torch.manual_seed(seed)
        assert dist.sample().tolist() == [0, 0], seed


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
def test_single_valid_action(dtype, batch_shape):
    torch.manual_seed(3)
    n = 5
    logits = (torch.randn(*batch_shape, n) * 10).to(dtype)
    index = torch.randint(n, batch_shape)
    mask = torch.nn.functional.one_hot(index, n).bool()
    dist = MaskedCategorical(logits, mask)
    assert bool((dist.entropy() == 0).all())
    assert torch.equal(dist.probs, mask.to(dtype))
    samples = dist.sample((200,))
    assert bool((samples == index).all())
    assert bool((dist.log_prob(samples) == 0).all())
    assert torch.equal(dist.mode, index)


# ---------------------------------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------------------------------

LOSSES = {
    "log_prob": lambda dist, actions: dist.log_prob(actions).sum(),
    "entropy": lambda dist, actions: dist.entropy().sum(),
    "log_prob+entropy": lambda dist, actions: dist.log_prob(actions).sum() + dist.entropy().sum(),
}


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=logits_and_masks(min_value=-10.0, max_value=60.0), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=20, deadline=None)
def test_masked_logits_get_exactly_zero_gradient(dtype, data, seed):
    # Valid logits up to 60: in float16, finfo.min - logsumexp would overflow to -inf without care.
    logits64, mask = data
    torch.manual_seed(seed)
    for loss in LOSSES.values():
        logits = logits64.to(dtype).requires_grad_()
        dist = MaskedCategorical(logits, mask)
        (grad,) = torch.autograd.grad(loss(dist, dist.sample((8,))), logits)
        assert grad.dtype == dtype
        assert bool(torch.isfinite(grad).all()), "NaN/inf gradient"
        assert bool((grad[~mask] == 0).all()), "masked logits must get exactly zero gradient"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", ["moderate", "large"])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_gradients_fixed_example(dtype, scale, loss):
    torch.manual_seed(4)
    logits = LOGIT_SETS[scale].to(dtype).requires_grad_()
    dist = MaskedCategorical(logits, DTYPE_MASK)
    actions = dist.sample((16,))
    (grad,) = torch.autograd.grad(LOSSES[loss](dist, actions), logits)
    assert bool(torch.isfinite(grad).all())
    assert bool((grad[~DTYPE_MASK] == 0).all())
    if scale == "moderate":
        # rows 0 and 2 have several valid actions with non-uniform probabilities: every valid logit gets a gradient
        several_valid = DTYPE_MASK.clone()
        several_valid[1] = False
        assert bool((grad[several_valid] != 0).all())


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_prob_of_each_valid_action_gives_nonzero_valid_gradients(dtype):
    # d log p_a / d l_i = 1[i == a] - p_i, nonzero for valid i whenever 0 < p_i < 1.
    logits = MODERATE_LOGITS[0].to(dtype).requires_grad_()
    mask = DTYPE_MASK[0]
    for action in mask.nonzero().flatten().tolist():
        (grad,) = torch.autograd.grad(MaskedCategorical(logits, mask).log_prob(torch.tensor(action)), logits)
        assert bool((grad[mask] != 0).all())
        assert bool((grad[~mask] == 0).all())
        assert grad.double().sum().abs().item() < 5e-2  # sum_i (1[i == a] - p_i) = 0, up to bfloat16 rounding


# ---------------------------------------------------------------------------------------------------------------------
# Mask types
# ---------------------------------------------------------------------------------------------------------------------

MASK_CONVERTERS = {
    "torch-bool": lambda m: torch.as_tensor(m, dtype=torch.bool),
    "torch-int8": lambda m: torch.as_tensor(m, dtype=torch.int8),
    "torch-int64": lambda m: torch.as_tensor(m, dtype=torch.int64),
    "torch-uint8": lambda m: torch.as_tensor(m, dtype=torch.uint8),
    "torch-float32": lambda m: torch.as_tensor(m, dtype=torch.float32),
    "torch-float64": lambda m: torch.as_tensor(m, dtype=torch.float64),
    "numpy-bool": lambda m: np.asarray(m, dtype=np.bool_),
    "numpy-int8": lambda m: np.asarray(m, dtype=np.int8),
    "numpy-int64": lambda m: np.asarray(m, dtype=np.int64),
    "numpy-uint8": lambda m: np.asarray(m, dtype=np.uint8),
    "numpy-float32": lambda m: np.asarray(m, dtype=np.float32),
    "numpy-float64": lambda m: np.asarray(m, dtype=np.float64),
}


@given(data=logits_and_masks())
@settings(max_examples=20, deadline=None)
def test_mask_types_give_identical_distributions(data):
    logits, mask = data
    reference = MaskedCategorical(logits, mask)
    for kind, convert in MASK_CONVERTERS.items():
        dist = MaskedCategorical(logits, convert(mask.numpy()))
        assert dist.mask.dtype == torch.bool, kind
        assert torch.equal(dist.mask, mask), kind
        assert torch.equal(dist.logits, reference.logits), kind
        assert torch.equal(dist.probs, reference.probs), kind
        assert torch.equal(dist.entropy(), reference.entropy()), kind
        assert torch.equal(dist.mode, reference.mode), kind


@pytest.mark.parametrize("kind", list(MASK_CONVERTERS))
def test_mask_types_give_identical_multi_distributions(kind):
    logits = torch.tensor([[0.5, 2.0, -1.0, 3.0, 0.0], [1.0, -2.0, 4.0, 0.5, 1.5]])
    mask = np.array([[1, 0, 1, 0, 1], [0, 1, 0, 1, 1]])
    reference = MaskedMultiCategorical(logits, [2, 3], torch.as_tensor(mask, dtype=torch.bool))
    dist = MaskedMultiCategorical(logits, [2, 3], MASK_CONVERTERS[kind](mask))
    assert torch.equal(dist.mask, reference.mask)
    actions = torch.tensor([[0, 2], [1, 1]])
    assert torch.equal(dist.log_prob(actions), reference.log_prob(actions))
    assert torch.equal(dist.entropy(), reference.entropy())
    assert torch.equal(dist.mode, reference.mode)


# ---------------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("validate_args", [None, True])
def test_row_without_valid_action_raises_naming_the_row(validate_args):
    mask = torch.ones(5, 4, dtype=torch.bool)
    mask[3] = False
    with pytest.raises(ValueError) as error:
        MaskedCategorical(torch.zeros(5, 4), mask, validate_args=validate_args)
    assert re.search(r"row\D*\b3\b", str(error.value)), str(error.value)


def test_row_without_valid_action_in_extra_batch_dims_names_the_row():
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[1, 2] = False
    with pytest.raises(ValueError) as error:
        MaskedCategorical(torch.zeros(2, 3, 4), mask)
    assert re.search(r"row\D*\b1\D{1,3}2\b", str(error.value)), str(error.value)


def test_unbatched_mask_without_valid_action_raises():
    with pytest.raises(ValueError):
        MaskedCategorical(torch.zeros(4), torch.zeros(4, dtype=torch.bool))


def test_no_validation_skips_the_empty_row_check():
    mask = torch.tensor([[0, 0, 0], [1, 0, 1]])
    dist = MaskedCategorical(torch.zeros(2, 3), mask, validate_args=False)  # must not raise
    assert dist.probs[1, 1] == 0


def test_checks_ignore_torch_global_switch_and_follow_set_mask_checks():
    # torchrl and `python -O` turn torch's global validation off; maskrl's checks must not follow it.
    mask = torch.tensor([[0, 0, 0], [1, 0, 1]])
    previous = Distribution._validate_args
    try:
        Distribution.set_default_validate_args(False)
        with pytest.raises(ValueError, match="no valid action in batch row 0"):
            MaskedCategorical(torch.zeros(2, 3), mask)
        with pytest.raises(ValueError, match="no valid choice for sub-action 0 in batch row 0"):
            MaskedMultiCategorical(torch.zeros(2, 3), [1, 2], mask)
        with pytest.raises(ValueError, match="0/1"):
            MaskedCategorical(torch.zeros(2, 3), torch.tensor([[2, 0, 1], [1, 0, 1]]))
        with pytest.raises(ValueError, match="NaN"):
            MaskedCategorical(torch.tensor([[float("nan"), 0.0]]), torch.tensor([[1, 1]]))
    finally:
        Distribution.set_default_validate_args(previous)
    assert mask_checks_enabled()
    set_mask_checks(False)
    try:
        MaskedCategorical(torch.zeros(2, 3), mask)  # maskrl's own switch: not checked
        MaskedMultiCategorical(torch.zeros(2, 3), [1, 2], mask)
    finally:
        set_mask_checks(True)
    with pytest.raises(ValueError):
        MaskedCategorical(torch.zeros(2, 3), mask)


def test_torchrl_style_import_turning_validation_off_changes_nothing():
    # What `import torchrl.modules.distributions` does at import time, in a fresh interpreter.
    code = (
        "import torch\n"
        "from torch.distributions import Distribution\n"
        "from maskrl.policies.distributions import MaskedCategorical\n"
        "Distribution.set_default_validate_args(False)\n"
        "try:\n"
        "    MaskedCategorical(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool))\n"
        "except ValueError as error:\n"
        "    print('refused:', error)\n"
    )
    for flags in ([], ["-O"]):
        done = subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, check=True)
        assert "refused: mask has no valid action" in done.stdout, (flags, done.stdout, done.stderr)


@pytest.mark.parametrize("validate_args", [None, True, False])
@pytest.mark.parametrize(("logits_shape", "mask_shape"), [((2, 4), (2, 5)), ((2, 4), (4,)), ((3, 2, 4), (3, 4))])
def test_mask_shape_mismatch_raises_stating_both_shapes(validate_args, logits_shape, mask_shape):
    with pytest.raises(ValueError) as error:
        MaskedCategorical(torch.zeros(logits_shape), torch.ones(mask_shape, dtype=torch.bool), validate_args)
    assert str(logits_shape) in str(error.value)
    assert str(mask_shape) in str(error.value)


@pytest.mark.parametrize(
    "mask",
    [
        torch.tensor([[1, 2, 0], [1, 1, 1]]),
        torch.tensor([[1, 0, 0], [1, -1, 1]], dtype=torch.int8),
        torch.tensor([[1.0, math.nan, 1.0], [1.0, 1.0, 1.0]]),
        torch.tensor([[1.0, 0.5, 1.0], [1.0, 1.0, 1.0]]),
        np.array([[1, 0, 0], [3, 1, 1]], dtype=np.uint8),
    ],
    ids=["int-2", "int8-minus-1", "float-nan", "float-half", "numpy-uint8-3"],
)
def test_non_binary_mask_values_raise(mask):
    with pytest.raises(ValueError):
        MaskedCategorical(torch.zeros(2, 3), mask, validate_args=True)
    with pytest.raises(ValueError):
        MaskedMultiCategorical(torch.zeros(2, 3), [1, 2], mask, validate_args=True)


# ---------------------------------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)])
@pytest.mark.parametrize("sample_shape", [(), (7,), (2, 4)])
def test_batched_shapes(batch_shape, sample_shape):
    torch.manual_seed(5)
    n = 6
    logits = torch.randn(*batch_shape, n)
    mask = torch.rand(*batch_shape, n) < 0.5
    mask[..., 0] = True
    dist = MaskedCategorical(logits, mask)
    assert dist.batch_shape == batch_shape
    assert dist.probs.shape == (*batch_shape, n)
    assert dist.entropy().shape == batch_shape
    assert dist.mode.shape == batch_shape
    samples = dist.sample(sample_shape)
    assert samples.shape == (*sample_shape, *batch_shape)
    assert dist.log_prob(samples).shape == (*sample_shape, *batch_shape)
    assert_samples_valid(samples, mask)


@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)])
@pytest.mark.parametrize("sample_shape", [(), (7,), (2, 4)])
def test_multi_batched_shapes(batch_shape, sample_shape):
    torch.manual_seed(6)
    nvec = [3, 1, 4]
    logits = torch.randn(*batch_shape, sum(nvec))
    mask = torch.rand(*batch_shape, sum(nvec)) < 0.5
    for part in split(mask, nvec):
        part[..., -1] = True  # views into mask
    dist = MaskedMultiCategorical(logits, nvec, mask)
    assert dist.batch_shape == batch_shape
    assert dist.event_shape == (len(nvec),)
    assert dist.entropy().shape == batch_shape
    assert dist.mode.shape == (*batch_shape, len(nvec))
    samples = dist.sample(sample_shape)
    assert samples.shape == (*sample_shape, *batch_shape, len(nvec))
    assert dist.log_prob(samples).shape == (*sample_shape, *batch_shape)
    for index, part in enumerate(split(mask, nvec)):
        assert_samples_valid(samples[..., index], part)


# ---------------------------------------------------------------------------------------------------------------------
# MaskedMultiCategorical
# ---------------------------------------------------------------------------------------------------------------------


@given(data=multi_logits_and_masks(), seed=st.integers(0, 2**31 - 1))
@FAST
def test_multi_log_prob_and_entropy_are_sums_over_sub_actions(data, seed):
    logits, nvec, mask = data
    torch.manual_seed(seed)
    dist = MaskedMultiCategorical(logits, nvec, mask)
    actions = dist.sample((20,))
    expected_log_prob = torch.zeros(actions.shape[:-1], dtype=torch.float64)
    expected_entropy = torch.zeros(logits.shape[0], dtype=torch.float64)
    for index, (part_logits, part_mask) in enumerate(zip(split(logits, nvec), split(mask, nvec), strict=True)):
        log_p = torch.as_tensor(ref_log_probs(part_logits, part_mask)).expand(actions.shape[0], -1, -1)
        expected_log_prob += log_p.gather(-1, actions[..., index].unsqueeze(-1)).squeeze(-1)
        expected_entropy += torch.as_tensor(ref_entropy(part_logits, part_mask))
        sub = MaskedCategorical(part_logits, part_mask)
        torch.testing.assert_close(dist.distributions[index].probs, sub.probs)
    torch.testing.assert_close(dist.log_prob(actions), expected_log_prob, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(dist.entropy(), expected_entropy, atol=1e-10, rtol=1e-10)


@given(data=multi_logits_and_masks(), seed=st.integers(0, 2**31 - 1))
@FAST
def test_multi_samples_are_valid_in_every_sub_action(data, seed):
    logits, nvec, mask = data
    torch.manual_seed(seed)
    samples = MaskedMultiCategorical(logits, nvec, mask).sample((2000,))
    for index, part in enumerate(split(mask, nvec)):
        assert_samples_valid(samples[..., index], part)


@given(data=multi_logits_and_masks())
@FAST
def test_multi_mode_is_argmax_over_valid_choices_per_sub_action(data):
    logits, nvec, mask = data
    mode = MaskedMultiCategorical(logits, nvec, mask).mode
    for index, (part_logits, part_mask) in enumerate(zip(split(logits, nvec), split(mask, nvec), strict=True)):
        chosen = mode[..., index].unsqueeze(-1)
        assert bool(part_mask.gather(-1, chosen).all())
        best = part_logits.masked_fill(~part_mask, -math.inf).max(-1).values
        assert bool((part_logits.gather(-1, chosen).squeeze(-1) >= best - 1e-9 * (1 + best.abs())).all())


def test_multi_exact_example():
    # Sub-action 0: logits [1, 2, 3] mask [1, 0, 1]; sub-action 1: logits [5, 0] mask [0, 1] (forced choice 1).
    logits = torch.tensor([[1.0, 2.0, 3.0, 5.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1, 0, 1]])
    dist = MaskedMultiCategorical(logits, [3, 2], mask)
    p0 = 1 / (1 + math.e**2)
    assert dist.mode.tolist() == [[2, 1]]
    expected = torch.tensor([math.log(p0), math.log(1 - p0)], dtype=torch.float64)
    torch.testing.assert_close(dist.log_prob(torch.tensor([[0, 1], [2, 1]])), expected)
    entropy = -(p0 * math.log(p0) + (1 - p0) * math.log(1 - p0))
    torch.testing.assert_close(dist.entropy(), torch.tensor([entropy], dtype=torch.float64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_multi_masked_logits_get_exactly_zero_gradient(dtype):
    torch.manual_seed(7)
    nvec = [3, 4, 2]
    logits = (torch.randn(4, 9) * 20 + 20).to(dtype).requires_grad_()
    mask = torch.rand(4, 9) < 0.5
    for part in split(mask, nvec):
        part[..., 0] = True
    dist = MaskedMultiCategorical(logits, nvec, mask)
    loss = dist.log_prob(dist.sample((8,))).sum() + dist.entropy().sum()
    (grad,) = torch.autograd.grad(loss, logits)
    assert bool(torch.isfinite(grad).all())
    assert bool((grad[~mask] == 0).all())


def test_multi_sub_action_without_valid_choice_raises_naming_it():
    mask = torch.ones(5, 7, dtype=torch.bool)  # nvec [2, 2, 3]: sub-action 2 is columns 4..6
    mask[3, 4:] = False
    with pytest.raises(ValueError) as error:
        MaskedMultiCategorical(torch.zeros(5, 7), [2, 2, 3], mask)
    message = str(error.value)
    assert re.search(r"sub-action\D*\b2\b", message), message
    assert re.search(r"row\D*\b3\b", message), message


def test_multi_without_validation_does_not_check_sub_actions():
    mask = torch.tensor([[1, 1, 0, 0, 0]])
    dist = MaskedMultiCategorical(torch.zeros(1, 5), [2, 3], mask, validate_args=False)  # must not raise
    assert torch.equal(dist.mask, mask.bool())
    with pytest.raises(ValueError, match="sub-action 1"):
        MaskedMultiCategorical(torch.zeros(1, 5), [2, 3], mask, validate_args=True)


@pytest.mark.parametrize("width", [4, 6])
def test_multi_logits_of_wrong_width_raise(width):
    with pytest.raises(ValueError, match=str(width)):
        MaskedMultiCategorical(torch.zeros(2, width), [2, 3])


def test_multi_mask_of_wrong_width_raises():
    with pytest.raises(ValueError):
        MaskedMultiCategorical(torch.zeros(2, 5), [2, 3], torch.ones(2, 6))


def test_multi_without_mask_matches_independent_categoricals():
    torch.manual_seed(8)
    nvec = [3, 2, 4]
    logits = torch.randn(6, 9)
    dist = MaskedMultiCategorical(logits, nvec)
    parts = [Categorical(logits=part) for part in split(logits, nvec)]
    actions = dist.sample()
    expected = sum(part.log_prob(actions[:, i]) for i, part in enumerate(parts))
    torch.testing.assert_close(dist.log_prob(actions), expected)
    torch.testing.assert_close(dist.entropy(), sum(part.entropy() for part in parts))


# ---------------------------------------------------------------------------------------------------------------------
# Comparison with sb3-contrib
# ---------------------------------------------------------------------------------------------------------------------
# sb3-contrib's MaskableCategorical fills masked logits with the constant -1e8 instead of the dtype's most negative
# finite value (and -1e8 overflows to -inf in float16). In float32 with moderate logits exp(-1e8 - max) underflows to
# exactly 0 too, so the two implementations must agree on valid actions.


@given(data=logits_and_masks())
@FAST
def test_probs_and_log_probs_agree_with_sb3_contrib(data):
    logits64, mask = data
    logits = logits64.float()
    ours = MaskedCategorical(logits, mask)
    theirs = MaskableCategorical(logits=logits, masks=mask)
    torch.testing.assert_close(ours.probs[mask], theirs.probs[mask], atol=1e-6, rtol=0)
    n = mask.shape[-1]
    actions = torch.arange(n).unsqueeze(-1).expand(n, mask.shape[0])
    torch.testing.assert_close(ours.log_prob(actions).T[mask], theirs.log_prob(actions).T[mask], atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(ours.entropy(), theirs.entropy(), atol=1e-5, rtol=1e-6)


@given(data=multi_logits_and_masks(), seed=st.integers(0, 2**31 - 1))
@FAST
def test_multi_agrees_with_sb3_contrib(data, seed):
    logits64, nvec, mask = data
    logits = logits64.float()
    ours = MaskedMultiCategorical(logits, nvec, mask)
    theirs = MaskableMultiCategoricalDistribution(nvec).proba_distribution(logits)
    theirs.apply_masking(mask)
    torch.manual_seed(seed)
    for _ in range(5):
        actions = ours.sample()
        torch.testing.assert_close(ours.log_prob(actions), theirs.log_prob(actions), atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(ours.entropy(), theirs.entropy(), atol=1e-4, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# SB3 wrappers
# ---------------------------------------------------------------------------------------------------------------------


def test_make_masked_distribution_returns_the_right_class():
    discrete = make_masked_distribution(spaces.Discrete(5))
    assert type(discrete) is MaskedCategoricalDistribution
    assert discrete.action_dim == 5
    multi = make_masked_distribution(spaces.MultiDiscrete([3, 4, 2]))
    assert type(multi) is MaskedMultiCategoricalDistribution
    assert list(multi.action_dims) == [3, 4, 2]


@pytest.mark.parametrize(
    "space",
    [spaces.Box(-1, 1, (3,)), spaces.MultiBinary([2, 3]), spaces.MultiDiscrete([[2, 3], [4, 5]])],
    ids=["Box", "2-D MultiBinary", "2-D MultiDiscrete"],
)
def test_make_masked_distribution_rejects_other_spaces(space):
    with pytest.raises(TypeError):
        make_masked_distribution(space)


@pytest.mark.parametrize(("space", "out_features"), [(spaces.Discrete(5), 5), (spaces.MultiDiscrete([3, 4, 2]), 9)])
def test_proba_distribution_net(space, out_features):
    net = make_masked_distribution(space).proba_distribution_net(latent_dim=7)
    assert isinstance(net, nn.Linear)
    assert net.in_features == 7
    assert net.out_features == out_features


def test_sb3_categorical_wrapper_respects_mask():
    torch.manual_seed(9)
    logits = torch.tensor([[5.0, 1.0, 2.0, 0.0], [0.0, 1.0, 9.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 1], [0, 0, 1, 0]])
    dist = MaskedCategoricalDistribution(4)
    assert dist.proba_distribution(logits, mask) is dist
    assert isinstance(dist.distribution, MaskedCategorical)
    assert dist.get_actions(deterministic=True).tolist() == [2, 3, 2]
    samples = torch.stack([dist.get_actions(deterministic=False) for _ in range(300)])
    assert_samples_valid(samples, mask.bool())
    expected = torch.as_tensor(ref_log_probs(logits, mask)).float()
    torch.testing.assert_close(dist.log_prob(samples), expected.gather(-1, samples.T).T)
    torch.testing.assert_close(dist.entropy(), torch.as_tensor(ref_entropy(logits, mask)).float())


def test_sb3_multi_categorical_wrapper_respects_mask():
    torch.manual_seed(10)
    nvec = [3, 2]
    logits = torch.tensor([[5.0, 1.0, 2.0, 9.0, 0.0], [0.0, 8.0, 1.0, 1.0, 2.0]])
    mask = torch.tensor([[0, 1, 1, 0, 1], [1, 0, 1, 1, 1]])
    dist = MaskedMultiCategoricalDistribution(nvec)
    assert dist.proba_distribution(logits, mask) is dist
    assert isinstance(dist.distribution, MaskedMultiCategorical)
    assert dist.get_actions(deterministic=True).tolist() == [[2, 1], [2, 1]]
    samples = torch.stack([dist.get_actions(deterministic=False) for _ in range(300)])
    for index, part in enumerate(split(mask.bool(), nvec)):
        assert_samples_valid(samples[..., index], part)
    reference = MaskedMultiCategorical(logits, nvec, mask)
    torch.testing.assert_close(dist.log_prob(samples), reference.log_prob(samples))
    torch.testing.assert_close(dist.entropy(), reference.entropy())


@pytest.mark.parametrize(("space", "width"), [(spaces.Discrete(4), 4), (spaces.MultiDiscrete([3, 2]), 5)])
def test_sb3_actions_from_params_without_mask(space, width):
    torch.manual_seed(11)
    dist = make_masked_distribution(space)
    logits = torch.randn(6, width)
    deterministic = dist.actions_from_params(logits, deterministic=True)
    reference = make_masked_distribution(space).proba_distribution(logits)
    assert torch.equal(deterministic, reference.mode())
    actions, log_prob = dist.log_prob_from_params(logits)
    assert actions.shape[0] == 6 and log_prob.shape == (6,)
    torch.testing.assert_close(log_prob, reference.log_prob(actions))


@pytest.mark.parametrize(("space", "width"), [(spaces.Discrete(4), 4), (spaces.MultiDiscrete([2, 2]), 4)])
def test_sb3_actions_from_params_respect_mask(space, width):
    logits = torch.tensor([[9.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 9.0]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 0]])
    dist = make_masked_distribution(space)
    torch.manual_seed(12)
    for deterministic in (True, False):
        actions = dist.actions_from_params(logits, action_mask=mask, deterministic=deterministic)
        assert torch.equal(dist.distribution.mask, mask.bool())
        flat_index = actions if actions.dim() == 1 else actions + torch.tensor([0, 2])
        assert bool(mask.gather(-1, flat_index.reshape(2, -1)).all()), actions
    actions, log_prob = dist.log_prob_from_params(logits, action_mask=mask)
    assert torch.equal(dist.distribution.mask, mask.bool())
    assert bool(torch.isfinite(log_prob).all())
    assert actions.shape[0] == 2


@pytest.mark.parametrize(
    ("dtype", "bad"), [(torch.int8, 2), (torch.int8, -1), (torch.uint8, 2), (torch.int64, 2), (torch.int64, -1)]
)
def test_byte_and_int_masks_with_values_other_than_0_1_are_rejected(dtype, bad):
    mask = torch.tensor([[1, 0, 1], [0, bad, 1]], dtype=dtype)
    with pytest.raises(ValueError, match=f"mask values must be 0/1 or booleans, found {bad}"):
        MaskedCategorical(torch.zeros(2, 3), mask)


def test_nan_logit_at_a_valid_action_is_rejected_but_not_at_a_masked_one():
    mask = torch.tensor([[True, False, True]])
    with pytest.raises(ValueError, match="NaN"):
        MaskedCategorical(torch.tensor([[float("nan"), 0.0, 1.0]]), mask)
    # A masked entry's logit is never used: whatever it is, the distribution is well defined.
    dist = MaskedCategorical(torch.tensor([[0.0, float("nan"), 1.0]]), mask)
    assert dist.probs[0, 1] == 0 and bool(torch.isfinite(dist.probs).all())
    MaskedCategorical(torch.tensor([[float("nan"), 0.0, 1.0]]), mask, validate_args=False)  # no check, no error
