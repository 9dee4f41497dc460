"""The edges other libraries' distribution tests found: extreme logits, checks switched off, KL, wrong widths.

Every masked distribution (``MaskedCategorical``, ``MaskedMultiCategorical``, ``MaskedBernoulli``,
``CategoricalMap``) must give a masked action probability exactly 0 whatever the valid logits hold, and refuse a
row whose valid actions have no finite logit, naming the row.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sb3_contrib import TRPO
from stable_baselines3.common.distributions import kl_divergence as sb3_kl_divergence
from torch.distributions import Categorical, Distribution
from torch.distributions import kl_divergence as torch_kl_divergence

from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.policies import CategoricalMap, MaskedActorCriticPolicy
from maskrl.policies.distributions import MaskedBernoulli, MaskedCategorical, MaskedMultiCategorical, set_mask_checks
from maskrl.policies.sb3_distributions import (
    CategoricalMapDistribution,
    MaskedBernoulliDistribution,
    MaskedCategoricalDistribution,
    MaskedMultiCategoricalDistribution,
)

INF = float("inf")
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def categorical_map_1x1(logits: torch.Tensor, mask: torch.Tensor) -> CategoricalMap:
    """A CategoricalMap of one agent cell per batch row: the same rows as a MaskedCategorical of ``(B, A)``."""
    return CategoricalMap(logits[:, :, None, None], torch.ones(len(logits), 1, 1), mask[:, :, None, None])


def probs_of(dist) -> torch.Tensor:
    """``(B, A)`` probabilities of a one-cell CategoricalMap or a MaskedCategorical."""
    return dist.probs[:, :, 0, 0] if isinstance(dist, CategoricalMap) else dist.probs


BUILDERS = {"MaskedCategorical": MaskedCategorical, "CategoricalMap": categorical_map_1x1}


@pytest.mark.parametrize("build", BUILDERS.values(), ids=BUILDERS.keys())
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("valid_logit", ["-inf", "finfo.min", "huge negative"])
def test_masked_action_never_gets_probability_from_extreme_valid_logits(build, dtype, valid_logit):
    # Before: masked logits were filled with finfo.min, which beats a valid -inf and ties with a valid finfo.min,
    # so [-inf, -inf, 0] with mask [1, 1, 0] put all the probability on the masked action.
    low = {"-inf": -INF, "finfo.min": torch.finfo(dtype).min, "huge negative": -0.99 * torch.finfo(dtype).max}
    logits = torch.tensor([[low[valid_logit], 0.0, 5.0], [low[valid_logit], low[valid_logit], 0.0]], dtype=dtype)
    # Row 0: one valid extreme logit beside a finite one. Row 1: both valid ones extreme (finite ones tie).
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    if valid_logit == "-inf":
        logits[1, 1] = -5.0  # keep a finite valid logit in row 1; the all -inf row is tested below
    probs = probs_of(build(logits, mask)).float()
    assert probs[:, 2].eq(0).all(), probs
    assert torch.allclose(probs.sum(-1), torch.ones(2), atol=1e-2)
    expected_row_1 = [0.0, 1.0] if valid_logit == "-inf" else [0.5, 0.5]
    assert torch.allclose(probs[1, :2], torch.tensor(expected_row_1), atol=1e-2), probs


@pytest.mark.parametrize("build", BUILDERS.values(), ids=BUILDERS.keys())
def test_float16_overflow_to_minus_inf_does_not_leak_to_masked_action(build):
    # -7e4 overflows float16 to -inf; exactly -65504 is float16's finfo.min (before: 1/3 went to the masked action).
    logits = torch.tensor([[-7e4, 0.0, 1.0], [-65504.0, -65504.0, -65504.0]]).half()
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    probs = probs_of(build(logits, mask)).float()
    assert torch.equal(probs[:, 2], torch.zeros(2))
    assert torch.allclose(probs[0], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(probs[1], torch.tensor([0.5, 0.5, 0.0]))


def test_valid_actions_without_a_finite_logit_are_an_error_naming_the_row():
    logits = torch.tensor([[0.0, 1.0, 2.0], [-INF, -INF, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    with pytest.raises(ValueError, match=r"no valid action has a finite logit in batch row 1"):
        MaskedCategorical(logits, mask)
    with pytest.raises(ValueError, match=r"no valid action of the agent in batch row 1, cell \(0, 0\) has a finite"):
        categorical_map_1x1(logits, mask)
    with pytest.raises(ValueError, match=r"no valid choice has a finite logit for sub-action 1 in batch row 1"):
        MaskedMultiCategorical(
            torch.cat([torch.zeros(2, 3), logits], -1), [3, 3], torch.cat([torch.ones(2, 3), mask], -1)
        )
    # A bit cannot lose all its probability: a forced bit ignores its logit, a free bit with logit -inf is 0.
    bits = MaskedBernoulli(torch.tensor([[-INF, -INF]]), torch.tensor([[0, 1, 1, 1]]))
    assert bits.sample().tolist() == [[1.0, 0.0]]
    # The same -inf at a masked action is fine.
    MaskedCategorical(logits, torch.tensor([[1, 1, 1], [0, 0, 1]]))


def test_huge_logits_keep_masked_probability_zero_and_gradients_finite():
    logits = torch.tensor([[3e38, -3e38, 3e38, 0.0]], requires_grad=True)
    dist = MaskedCategorical(logits, torch.tensor([[0, 1, 1, 1]]))
    assert dist.probs[0, 0] == 0
    assert torch.allclose(dist.probs[0], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    (dist.entropy() + dist.log_prob(torch.tensor([3]))).sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[0, 0] == 0


def test_categorical_map_checks_do_not_follow_torch_global_switch():
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        logits = torch.zeros(1, 3, 1, 1)
        with pytest.raises(ValueError, match="no valid action for the agent"):
            CategoricalMap(logits, torch.ones(1, 1, 1), torch.zeros(1, 3, 1, 1))
        with pytest.raises(ValueError, match="0/1"):
            CategoricalMap(logits, torch.full((1, 1, 1), 2), torch.ones(1, 3, 1, 1))
        with pytest.raises(ValueError, match="NaN"):
            CategoricalMap(torch.full((1, 3, 1, 1), float("nan")), torch.ones(1, 1, 1), torch.ones(1, 3, 1, 1))
    finally:
        Distribution.set_default_validate_args(previous)


@pytest.fixture
def checks_off():
    set_mask_checks(False)
    yield
    set_mask_checks(True)


def test_unchecked_paths_never_sample_a_masked_action(checks_off):
    rng = np.random.default_rng(0)
    mask = torch.as_tensor(rng.random((256, 6)) < 0.3)
    mask[:, 5] = True  # every row has a valid action, but nothing checks the masks
    logits = torch.as_tensor(rng.normal(size=(256, 6)) * 30, dtype=torch.float32)
    logits[:, 0] = -INF
    for dist in (MaskedCategorical(logits, mask), categorical_map_1x1(logits, mask)):
        samples = dist.sample((50,)).reshape(50, 256)
        assert bool(mask.gather(1, samples.T).all()), "a masked action was sampled without checks"
    empty = torch.zeros(1, 6, dtype=torch.bool)
    for dist in (MaskedCategorical(torch.zeros(1, 6), empty), categorical_map_1x1(torch.zeros(1, 6), empty)):
        with pytest.raises(RuntimeError):
            dist.sample()  # no valid action: raise, never hand back an invalid one


def test_unchecked_categorical_map_log_prob_of_out_of_range_action_raises(checks_off):
    # Before: the action was clamped into range and another action's log-prob came back.
    dist = CategoricalMap(torch.zeros(1, 3, 1, 2), torch.ones(1, 1, 2))
    for bad in (3, -1):
        with pytest.raises((RuntimeError, IndexError)):
            dist.log_prob(torch.tensor([[[0, bad]]]))


def test_joint_log_prob_of_several_invalid_parts_stays_finite():
    finfo_min = torch.finfo(torch.float32).min
    multi = MaskedMultiCategorical(torch.zeros(1, 6), [3, 3], torch.tensor([[1, 0, 1, 1, 0, 1]]))
    assert multi.log_prob(torch.tensor([[1, 1]])).item() == finfo_min
    bits = MaskedBernoulli(torch.zeros(1, 2), torch.tensor([[1, 0, 1, 0]]))
    assert bits.log_prob(torch.tensor([[1.0, 1.0]])).item() == finfo_min
    grid = CategoricalMap(torch.zeros(1, 2, 1, 2), torch.ones(1, 1, 2), torch.tensor([[[[1, 1]], [[0, 0]]]]))
    assert grid.log_prob(torch.tensor([[[1, 1]]])).item() == finfo_min


def test_sb3_wrappers_refuse_logits_of_the_wrong_width():
    # Before: MaskedCategoricalDistribution(3) silently built a 2-action distribution.
    with pytest.raises(ValueError, match=r"expected \(batch, 3\)"):
        MaskedCategoricalDistribution(3).proba_distribution(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"sum\(nvec\) = 5"):
        MaskedMultiCategoricalDistribution([2, 3]).proba_distribution(torch.randn(4, 4))
    with pytest.raises(ValueError, match=r"expected \(batch, 3\)"):
        MaskedBernoulliDistribution(3).proba_distribution(torch.randn(4, 6))


def reference_kl(p_logits, q_logits, mask) -> torch.Tensor:
    p = Categorical(logits=p_logits.masked_fill(~mask, -INF))
    q = Categorical(logits=q_logits.masked_fill(~mask, -INF))
    return (p.probs * (p.logits - q.logits).nan_to_num(0.0, 0.0, 0.0)).sum(-1)


def test_kl_divergence_for_multidiscrete_in_sb3_and_torch():
    # Before: SB3's kl_divergence raised "'MaskedMultiCategorical' object is not iterable" (TRPO crashed) and
    # torch had no KL rule for it.
    torch.manual_seed(0)
    nvec = [3, 2, 4]
    p_logits, q_logits = torch.randn(5, 9), torch.randn(5, 9)
    mask = torch.rand(5, 9) < 0.7
    mask[:, [0, 3, 5]] = True
    p = MaskedMultiCategoricalDistribution(nvec).proba_distribution(p_logits, mask)
    q = MaskedMultiCategoricalDistribution(nvec).proba_distribution(q_logits, mask)
    expected = sum(
        reference_kl(a, b, m)
        for a, b, m in zip(p_logits.split(nvec, -1), q_logits.split(nvec, -1), mask.split(nvec, -1), strict=True)
    )
    torch.testing.assert_close(sb3_kl_divergence(p, q), expected)
    torch.testing.assert_close(torch_kl_divergence(p.distribution, q.distribution), expected)
    assert torch.equal(sb3_kl_divergence(p, p), torch.zeros(5))
    bits_p = MaskedBernoulliDistribution(2).proba_distribution(p_logits[:, :2], torch.ones(5, 4))
    bits_q = MaskedBernoulliDistribution(2).proba_distribution(q_logits[:, :2], torch.ones(5, 4))
    by_hand = sum(
        reference_kl(
            torch.stack([torch.zeros(5), p_logits[:, i]], -1),
            torch.stack([torch.zeros(5), q_logits[:, i]], -1),
            torch.ones(5, 2, dtype=torch.bool),
        )
        for i in range(2)
    )
    torch.testing.assert_close(sb3_kl_divergence(bits_p, bits_q), by_hand)


@pytest.mark.parametrize("action_type", ["discrete", "multidiscrete", "multibinary"])
def test_trpo_trains_with_the_masked_policy(action_type):
    env = make_masked_vec_env("maskrl/ToyMasked-v0", 2, seed=0, env_kwargs=dict(action_type=action_type))
    model = TRPO(MaskedActorCriticPolicy, env, n_steps=64, batch_size=64, seed=0)
    model.learn(256)
    assert sum(env.get_attr("invalid_actions")) == 0
    assert np.isfinite(model.logger.name_to_value["train/kl_divergence_loss"])


def test_categorical_map_sb3_wrapper_keeps_zero_masked_probability_with_float_masks():
    dist = CategoricalMapDistribution(3, 1, 2)
    dist.proba_distribution(torch.zeros(2, 3, 1, 2), np.ones((2, 1, 2), np.float32), np.ones((2, 3, 1, 2), np.float32))
    assert torch.allclose(dist.distribution.probs, torch.full((2, 3, 1, 2), 1 / 3))
