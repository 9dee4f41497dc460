"""Tests for maskrl.policies.attention_masks (exact patterns, no-leak gradients, conversion, per-sample masks, token
masking) and for the one block that consumes the masks, maskrl.policies.attention_block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maskrl.policies.attention_block import MaskedSelfAttentionBlock
from maskrl.policies.attention_masks import (
    bidirectional_mask,
    causal_mask,
    context_attention_mask,
    inverse_dynamics_mask,
    key_mask,
    padding_attention_mask,
    random_trajectory_mask,
    to_additive_mask,
    trajectory_token_valid,
)


def _m(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row.split()] for row in rows], dtype=torch.bool)


# Literal expected patterns (rows = queries, columns = keys, 1 = may attend); layout o1 a1 o2 a2 o3 a3 o4 a4.
CAUSAL_4 = _m(["1 0 0 0", "1 1 0 0", "1 1 1 0", "1 1 1 1"])
ID_8 = _m(
    [
        "1 0 0 0 0 0 0 0",
        "1 1 0 0 0 0 0 0",
        "1 0 1 0 0 0 0 0",
        "1 1 1 1 0 0 0 0",
        "1 1 1 0 1 0 0 0",
        "1 1 1 1 1 1 0 0",
        "1 1 1 1 1 0 1 0",
        "1 1 1 1 1 1 1 1",
    ]
)


# --------------------------------------------------------------------------------------------- exact patterns


def test_causal_literal():
    m = causal_mask(4)
    assert m.dtype == torch.bool
    assert torch.equal(m, CAUSAL_4)
    assert torch.equal(causal_mask(1), torch.ones(1, 1, dtype=torch.bool))


def test_inverse_dynamics_literal():
    assert torch.equal(inverse_dynamics_mask(8), ID_8)


def test_inverse_dynamics_odd_T_and_edge_cases():
    # T odd: ends with observation o4 at position 6; the leading 7x7 block of the T=8 pattern.
    assert torch.equal(inverse_dynamics_mask(7), ID_8[:7, :7])
    # Too short for an observation after an action: plain causal.
    assert torch.equal(inverse_dynamics_mask(2), causal_mask(2))
    assert torch.equal(inverse_dynamics_mask(1), causal_mask(1))
    for T in range(1, 10):
        assert inverse_dynamics_mask(T).diagonal().all()


def test_bidirectional_literal():
    assert torch.equal(bidirectional_mask(3), torch.ones(3, 3, dtype=torch.bool))


def test_device_argument():
    for m in (causal_mask(3, device="cpu"), inverse_dynamics_mask(3, device="cpu"), bidirectional_mask(2, "cpu")):
        assert m.device.type == "cpu"


# --------------------------------------------------------------------------------------------- per-sample masks


def test_trajectory_token_valid_from_bool_and_float_window_valid():
    obs_valid = torch.tensor([[False, False, True, True], [True, True, True, True]])
    expected = [[False, False, False, False, True, True, True], [True] * 7]
    assert trajectory_token_valid(obs_valid).tolist() == expected
    # SB3's preprocessing hands the MultiBinary window_valid over as floats.
    assert trajectory_token_valid(obs_valid.float()).tolist() == expected


def test_padding_attention_mask_hides_padding_keys_but_keeps_every_diagonal():
    token_valid = torch.tensor([[False, True, True]])
    mask = padding_attention_mask(causal_mask(3), token_valid)
    assert mask.shape == (1, 3, 3)
    assert mask[0].tolist() == [[True, False, False], [False, True, False], [False, True, True]]
    with pytest.raises(ValueError, match="token_valid"):
        padding_attention_mask(causal_mask(3), token_valid.float())


def test_key_mask_broadcasts_the_valid_keys_over_queries():
    visible = torch.tensor([[True, False, True], [True, True, False]])
    mask = key_mask(visible)
    assert mask.shape == (2, 1, 3) and torch.equal(mask[:, 0], visible)
    with pytest.raises(ValueError, match="key_valid"):
        key_mask(visible.float())


def test_context_attention_mask_exact_example():
    masked = torch.tensor([[False, True, False, True]])
    expected = torch.tensor(
        [
            [1, 0, 1, 0],
            [1, 1, 1, 0],  # a masked position sees itself and the unmasked context
            [1, 0, 1, 0],
            [1, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(context_attention_mask(masked)[0], expected)
    with pytest.raises(ValueError, match="masked"):
        context_attention_mask(masked.float())


# --------------------------------------------------------------------------------------------- no-leak gradients


def _attention_layer(d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    wq, wk, wv = (torch.randn(d, d, generator=g, dtype=torch.float64) for _ in range(3))

    def layer(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention((x @ wq)[None], (x @ wk)[None], (x @ wv)[None], attn_mask=mask)[0]
        return x + out  # residual, as in a real transformer block

    return layer


def _dependency(masks: list[torch.Tensor], T: int = 8, d: int = 4) -> torch.Tensor:
    """dep[i, j] = sum |d out_i / d x_j| through len(masks) stacked attention layers (float64)."""
    layers = [_attention_layer(d, seed) for seed in range(len(masks))]

    def f(x: torch.Tensor) -> torch.Tensor:
        for layer, mask in zip(layers, masks, strict=True):
            x = layer(x, mask)
        return x

    x = torch.randn(T, d, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(f, x)  # (T, d, T, d)
    return jac.abs().sum(dim=(1, 3))


def _reachable(masks: list[torch.Tensor]) -> torch.Tensor:
    reach = torch.eye(masks[0].shape[0], dtype=torch.long)
    for m in masks:
        reach = ((m.long() @ reach) > 0).long()  # out_i of this layer sees layer input j allowed by m
    return reach.bool()


@pytest.mark.parametrize("n_layers", [1, 2])
def test_causal_no_future_leak(n_layers):
    dep = _dependency([causal_mask(8)] * n_layers)
    future = ~torch.ones(8, 8, dtype=torch.bool).tril()
    assert (dep[future] == 0).all()  # exactly zero, not just small
    assert (dep[~future] > 0).all()  # the test can fail: past entries do matter


@pytest.mark.parametrize("n_layers", [1, 2])
def test_inverse_dynamics_no_leak(n_layers):
    mask = inverse_dynamics_mask(8)
    dep = _dependency([mask] * n_layers)
    # The exact dependency pattern is the transitive reachability through the stacked masks.
    assert torch.equal(dep > 0, _reachable([mask] * n_layers))
    # o(t+1) at position p has exactly zero gradient w.r.t. a(t) at p - 1. For 2 layers this holds because every key
    # o(t+1) may attend (positions < p - 1, and p itself) has not seen it either.
    for p in (2, 4, 6):
        assert dep[p, p - 1] == 0, p
    # Sanity that the check can fail: without the hidden edge, o(t+1) does depend on a(t).
    dep_causal = _dependency([causal_mask(8)] * n_layers)
    assert all(dep_causal[p, p - 1] > 0 for p in (2, 4, 6))


def test_inverse_dynamics_leaks_if_only_first_layer_masked():
    # Documents the caveat: a causal second layer lets o(t+1) read a(t) directly, so every layer needs the mask.
    dep = _dependency([inverse_dynamics_mask(8), causal_mask(8)])
    assert all(dep[p, p - 1] > 0 for p in (2, 4, 6))


# --------------------------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("mask", [causal_mask(6), inverse_dynamics_mask(6), bidirectional_mask(6)])
def test_additive_mask_matches_sdpa_bool(mask):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 6, 8).unbind(0)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    additive = to_additive_mask(mask)
    assert additive.dtype == torch.float32
    assert (additive[mask] == 0).all() and torch.isneginf(additive[~mask]).all()
    out_add = F.scaled_dot_product_attention(q, k, v, attn_mask=additive)
    torch.testing.assert_close(out_add, ref, rtol=1e-5, atol=1e-6)
    # Sanity that the comparison can fail: the inverted mask means something else.
    out_wrong = F.scaled_dot_product_attention(q, k, v, attn_mask=~mask | torch.eye(6, dtype=torch.bool))
    assert not torch.allclose(out_wrong, ref, atol=1e-4)


def test_additive_dtype():
    assert to_additive_mask(causal_mask(3), dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError):
        to_additive_mask(causal_mask(3), dtype=torch.int64)
    for bad in (causal_mask(3).float(), torch.tensor([True, False])):
        with pytest.raises(ValueError):
            to_additive_mask(bad)


# --------------------------------------------------------------------------------------------- the block


@pytest.mark.parametrize(
    "mask",
    [
        causal_mask(5),  # (T, T), shared by every sample
        padding_attention_mask(causal_mask(5), torch.tensor([[False, True, True, True, True]] * 3)),  # (B, T, T)
        key_mask(torch.tensor([[True, False, True, True, False]] * 3)),  # (B, 1, T)
    ],
)
def test_block_weights_path_reproduces_the_sdpa_path(mask):
    torch.manual_seed(0)
    block = MaskedSelfAttentionBlock(8, 2, mlp_ratio=2).double()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    out, weights = block.forward_with_weights(x, mask)
    torch.testing.assert_close(out, block(x, mask), rtol=0, atol=1e-12)
    assert weights.shape == (3, 2, 5, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 5, dtype=torch.float64))
    hidden = ~mask.expand(3, 5, 5)[:, None].expand(3, 2, 5, 5)
    assert torch.all(weights[hidden] == 0)


def test_block_hidden_keys_pass_no_gradient_and_bad_masks_are_refused():
    torch.manual_seed(0)
    block = MaskedSelfAttentionBlock(8, 2, mlp_ratio=4)
    x = torch.randn(1, 4, 8, requires_grad=True)
    block(x, causal_mask(4))[0, 1].sum().backward()
    assert torch.all(x.grad[0, 2:] == 0) and torch.all(x.grad[0, :2].abs().sum(-1) > 0)
    with pytest.raises(ValueError, match="boolean"):
        block(x, causal_mask(4).float())
    with pytest.raises(ValueError, match="multiple of n_heads"):
        MaskedSelfAttentionBlock(6, 4, mlp_ratio=2)


# --------------------------------------------------------------------------------------------- token masking


def _tokens(B=4, T=9, D=3, seed=0):
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("modality", ["action", "observation", "both"])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
def test_random_mask_ratio_exact_count_and_modality(modality, ratio):
    x = _tokens()
    x_before = x.clone()
    out, pos = random_trajectory_mask(x, ratio=ratio, modality=modality, mask_value=7.5, generator=torch.Generator())
    T = x.shape[1]
    n_cand = {"action": T // 2, "observation": (T + 1) // 2, "both": T}[modality]
    assert pos.shape == (4, T) and pos.dtype == torch.bool
    assert (pos.sum(dim=1) == round(ratio * n_cand)).all()
    parity = torch.arange(T) % 2
    if modality == "action":
        assert not pos[:, parity == 0].any()
    elif modality == "observation":
        assert not pos[:, parity == 1].any()
    assert (out[pos] == 7.5).all()
    assert torch.equal(out[~pos], x[~pos])  # bit-equal elsewhere
    assert torch.equal(x, x_before)  # input untouched
    assert out.data_ptr() != x.data_ptr()


def test_random_mask_rows_differ_and_generator_deterministic():
    x = _tokens(B=16, T=20)
    _, p1 = random_trajectory_mask(x, ratio=0.5, generator=torch.Generator().manual_seed(3))
    _, p2 = random_trajectory_mask(x, ratio=0.5, generator=torch.Generator().manual_seed(3))
    _, p3 = random_trajectory_mask(x, ratio=0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(p1, p2)
    assert not torch.equal(p1, p3)
    assert len({tuple(r.tolist()) for r in p1}) > 1  # random per row


def test_explicit_indices():
    x = _tokens(B=2, T=6)
    out, pos = random_trajectory_mask(x, indices=[1, 4, 4])
    expected = torch.tensor([[0, 1, 0, 0, 1, 0]] * 2, dtype=torch.bool)
    assert torch.equal(pos, expected)
    assert (out[pos] == 0).all() and torch.equal(out[~pos], x[~pos])
    _, pos = random_trajectory_mask(x, indices=torch.tensor([[1], [3]]), modality="action")
    assert torch.equal(pos, torch.tensor([[0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0]], dtype=torch.bool))
    _, pos = random_trajectory_mask(x, indices=[])
    assert not pos.any()


def test_learned_mask_embedding_gets_gradient():
    x = _tokens(B=2, T=6, D=3).requires_grad_()
    emb = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    out, pos = random_trajectory_mask(x, indices=[0, 2], modality="observation", mask_value=emb)
    assert torch.equal(out[pos], emb.detach().expand(4, 3))
    (out * torch.arange(1.0, 4.0)).sum().backward()
    # 4 masked tokens (2 rows x 2), each contributing weight (1, 2, 3).
    torch.testing.assert_close(emb.grad, torch.tensor([4.0, 8.0, 12.0]))
    assert (x.grad[pos] == 0).all() and (x.grad[~pos] != 0).all()


@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [
        (causal_mask, {"T": 0}),
        (causal_mask, {"T": -3}),
        (causal_mask, {"T": 2.0}),
        (causal_mask, {"T": True}),
        (inverse_dynamics_mask, {"T": 0}),
        (bidirectional_mask, {"T": 0}),
    ],
)
def test_builder_bad_args(fn, kwargs):
    with pytest.raises(ValueError):
        fn(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ratio": -0.1},
        {"ratio": 1.1},
        {"ratio": 0.5, "modality": "reward"},
        {},  # neither ratio nor indices
        {"ratio": 0.5, "indices": [0]},  # both
        {"indices": [6]},  # out of range (T = 6)
        {"indices": [-1]},
        {"indices": [0], "modality": "action"},  # 0 is an observation
        {"indices": [1], "modality": "observation"},
        {"indices": [[0], [1], [2]]},  # wrong batch size
        {"indices": [0.0]},
        {"ratio": 0.5, "mask_value": torch.zeros(5)},  # wrong D
    ],
)
def test_random_mask_bad_args(kwargs):
    with pytest.raises(ValueError):
        random_trajectory_mask(_tokens(B=2, T=6), **kwargs)


def test_random_mask_bad_tokens():
    with pytest.raises(ValueError):
        random_trajectory_mask(torch.zeros(6, 3), ratio=0.5)
    with pytest.raises(ValueError):
        random_trajectory_mask(torch.zeros(2, 6, 3, dtype=torch.long), ratio=0.5)
