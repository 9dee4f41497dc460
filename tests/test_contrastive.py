"""Tests of the masked contrastive auxiliary task (maskrl.representation.contrastive), the momentum update
(maskrl.representation.momentum) and ContrastivePPO."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure
from torch import nn

from maskrl.agents.contrastive import ContrastivePPO
from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.policies import MaskedActorCriticPolicy, MaskedMultiInputPolicy
from maskrl.policies.attention_masks import context_attention_mask
from maskrl.policies.small_cnn import SmallCNN
from maskrl.representation.contrastive import (
    MaskedContrastiveModel,
    SequenceReconstructor,
    contrastive_accuracy,
    info_nce,
    info_nce_logits,
    mask_frames,
)
from maskrl.representation.momentum import momentum_update

IMAGE_ENV = "maskrl/PandaGridImage-v0"


# --------------------------------------------------------------------------------------------- InfoNCE


def test_info_nce_exact_small_example() -> None:
    eye = torch.eye(2)
    assert info_nce(eye, eye, temperature=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert info_nce(eye, eye.flip(0), temperature=1.0).item() == pytest.approx(math.log(1 + math.e))
    # Cosine similarity: scaling a query or key changes nothing; temperature 0.5 doubles the logits.
    assert info_nce(3 * eye, eye, temperature=0.5).item() == pytest.approx(math.log(1 + math.exp(-2)))
    # Explicit positives: query 0 matches key 1.
    assert info_nce(eye[:1], eye, temperature=1.0, positives=[1]).item() == pytest.approx(math.log(1 + math.e))


def test_info_nce_is_minimal_when_query_and_key_match() -> None:
    q = torch.eye(4) + 0.1 * torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    matched = info_nce(q, q, temperature=0.1).item()
    for perm in itertools.permutations(range(4)):
        if perm != (0, 1, 2, 3):
            assert info_nce(q, q[list(perm)], temperature=0.1).item() > matched
    logits = info_nce_logits(q, q, temperature=0.1)
    assert contrastive_accuracy(logits).item() == 1.0
    assert contrastive_accuracy(logits, torch.tensor([1, 0, 3, 2])).item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"temperature": 0.0}, "temperature"), ({"positives": [0, 5]}, "positives"), ({"positives": [0]}, "shape")],
)
def test_info_nce_rejects_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        info_nce(torch.eye(2), torch.eye(2), **kwargs)


# --------------------------------------------------------------------------------------------- frame masking


def _distinct_frames(B: int = 3, T: int = 8) -> torch.Tensor:
    # Strictly positive and all different: a replaced frame always differs from the original.
    return torch.rand(B, T, 3, 4, 4, generator=torch.Generator().manual_seed(1)) + 1.0


@pytest.mark.parametrize("mode", ["zeros", "frames"])
def test_frame_masking_changes_exactly_the_reported_positions(mode: str) -> None:
    frames = _distinct_frames()
    before = frames.clone()
    out, masked = mask_frames(frames, ratio=0.25, mode=mode, generator=torch.Generator().manual_seed(0))
    assert torch.equal(frames, before)  # input untouched
    assert masked.shape == (3, 8) and masked.dtype == torch.bool
    assert masked.sum(1).tolist() == [2, 2, 2]  # exactly round(0.25 * 8) per sequence
    changed = (out != frames).flatten(2).any(-1)
    assert torch.equal(changed, masked)
    if mode == "zeros":
        assert (out[masked] == 0).all()
    else:
        # Every replacement is one of the *other* original frames of the batch.
        flat = frames.flatten(0, 1)
        for b, t in masked.nonzero().tolist():
            same = (flat == out[b, t]).flatten(1).all(1).nonzero().squeeze(1).tolist()
            assert len(same) == 1 and same[0] != b * 8 + t


def test_frame_masking_with_explicit_indices() -> None:
    frames = _distinct_frames(B=2, T=5)
    out, masked = mask_frames(frames, indices=[[0, 3], [4, 4]])
    assert masked.tolist() == [[True, False, False, True, False], [False, False, False, False, True]]
    assert torch.equal(out[~masked], frames[~masked])
    with pytest.raises(ValueError, match="floating"):
        mask_frames(frames.to(torch.uint8), ratio=0.5)
    with pytest.raises(ValueError, match="mode"):
        mask_frames(frames, ratio=0.5, mode="noise")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- transformer


def test_reconstructor_reads_no_masked_frame_but_its_own() -> None:
    torch.manual_seed(0)
    model = SequenceReconstructor(in_dim=6, max_len=5, d_model=8, n_heads=2, n_layers=2)
    features = torch.randn(2, 5, 6, requires_grad=True)
    masked = torch.tensor([[False, True, False, True, False], [True, False, False, False, False]])
    out = model(features, masked)
    assert out.shape == (2, 5, 6)
    for b, i in itertools.product(range(2), range(5)):
        (grad,) = torch.autograd.grad(out[b, i].sum(), features, retain_graph=True)
        reads = grad[b].abs().sum(-1) > 0
        expected = ~masked[b].clone()
        expected[i] = True
        assert torch.equal(reads, expected), (b, i)
        assert (grad[1 - b] == 0).all()  # sequences do not mix


class _LegacyBlock(nn.Module):
    """maskrl 0.1.0's ``contrastive._Block``, verbatim but for the mask it takes (True = may attend)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mha_mask = (~mask).repeat_interleave(self.n_heads, dim=0)  # MultiheadAttention: True = may NOT attend
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=mha_mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def test_a_maskrl_0_1_reconstructor_state_dict_loads_and_computes_the_same() -> None:
    """The old block (nn.MultiheadAttention, ``norm1``/``norm2``) loads into today's under renamed keys."""
    torch.manual_seed(0)
    model = SequenceReconstructor(in_dim=6, max_len=5, d_model=8, n_heads=2, n_layers=2)
    legacy_blocks = nn.ModuleList(_LegacyBlock(8, 2) for _ in range(2))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("blocks.")}
    state.update({f"blocks.{k}": v for k, v in legacy_blocks.state_dict().items()})
    assert "blocks.0.attn.in_proj_weight" in state and "blocks.1.norm2.bias" in state
    # The old layout lists its parameters in today's order and shapes: optimiser states saved with it still fit.
    old_shapes = [tuple(v.shape) for k, v in state.items() if k.startswith("blocks.")]
    model.load_state_dict(state)  # strict
    assert old_shapes == [tuple(p.shape) for p in model.blocks.parameters()]
    for new, old in zip(model.blocks, legacy_blocks, strict=True):
        assert torch.equal(new.qkv.weight, old.attn.in_proj_weight) and torch.equal(new.attn_norm.bias, old.norm1.bias)

    features = torch.randn(3, 5, 6)
    masked = torch.tensor([[False, True, False, True, False], [True, False, False, False, False], [False] * 5])
    x = model.inp(features) + model.pos[:5] + masked[..., None] * model.mask_token
    for block in legacy_blocks:
        x = block(x, context_attention_mask(masked))
    with torch.no_grad():
        torch.testing.assert_close(model(features, masked), model.out(model.norm(x)), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------- momentum


def test_momentum_update_math() -> None:
    target, online = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        target.weight.copy_(torch.tensor([[4.0, -2.0]]))
        target.bias.fill_(1.0)
        online.weight.copy_(torch.tensor([[8.0, 2.0]]))
        online.bias.fill_(-3.0)
    momentum_update(target, online, 0.75)
    assert target.weight.tolist() == [[5.0, -1.0]]  # 0.75 * 4 + 0.25 * 8, 0.75 * -2 + 0.25 * 2
    assert target.bias.tolist() == [0.0]
    momentum_update(target, online, 1.0)
    assert target.weight.tolist() == [[5.0, -1.0]]
    momentum_update(target, online, 0.0)
    assert torch.equal(target.weight, online.weight) and torch.equal(target.bias, online.bias)
    with pytest.raises(ValueError, match="momentum"):
        momentum_update(target, online, 1.5)
    with pytest.raises(ValueError, match="same parameters"):
        momentum_update(target, nn.Linear(3, 1), 0.5)
    with pytest.raises(ValueError, match="momentum"):
        momentum_update(target, online, True)  # type: ignore[arg-type]


def test_momentum_update_copies_buffers() -> None:
    # A target that kept the batch-norm statistics it was copied with would normalise with stale ones.
    online = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    target = copy.deepcopy(online).requires_grad_(False)
    online(torch.randn(16, 2) * 5 + 3)  # training mode: updates the running statistics
    momentum_update(target, online, 0.9)
    for t, o in zip(target.buffers(), online.buffers(), strict=True):
        assert torch.equal(t, o)
    with pytest.raises(ValueError, match="same buffers"):
        momentum_update(nn.BatchNorm1d(3), nn.BatchNorm1d(3, track_running_stats=False), 0.5)


def test_aux_gradient_reaches_the_encoder_but_not_the_key_encoder() -> None:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU())
    model = MaskedContrastiveModel(encoder, 16, max_len=6, mask_ratio=0.34, reconstructor_kwargs={"d_model": 16})
    frames = torch.rand(4, 6, 3, 2, 2)
    result = model(frames, encoder, generator=torch.Generator().manual_seed(0))
    assert result.masked.sum(1).tolist() == [2, 2, 2, 2]
    assert 0.0 <= result.accuracy.item() <= 1.0
    result.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    assert all(p.grad is not None for p in model.reconstructor.parameters())
    for module in (model.key_encoder, model.key_projection):
        assert all(not p.requires_grad and p.grad is None for p in module.parameters())
    # The key encoder starts as a copy and follows the online encoder only through update_keys().
    before = [p.clone() for p in model.key_encoder.parameters()]
    with torch.no_grad():  # one plain gradient step on the online encoder only
        for p in encoder.parameters():
            p -= p.grad
    assert all(torch.equal(b, p) for b, p in zip(before, model.key_encoder.parameters(), strict=True))
    model.update_keys(encoder, 0.5)
    for b, k, o in zip(before, model.key_encoder.parameters(), encoder.parameters(), strict=True):
        assert torch.allclose(k, 0.5 * b + 0.5 * o)


# --------------------------------------------------------------------------------------------- ContrastivePPO

PPO_KWARGS = dict(n_steps=32, batch_size=64, n_epochs=2, seed=0, device="cpu")
POLICY_KWARGS = dict(features_extractor_class=SmallCNN, features_extractor_kwargs={"features_dim": 32}, net_arch=[32])


def _env(n_envs: int = 4, **env_kwargs):
    # 3 px per cell (24 x 24), SmallCNN's default, smaller than the registered 5 px.
    return make_masked_vec_env(IMAGE_ENV, n_envs, seed=0, env_kwargs={"image_cell_px": 3, **env_kwargs})


def test_contrastive_ppo_trains_end_to_end_with_the_masked_policy(tmp_path) -> None:
    torch.set_num_threads(1)
    model = ContrastivePPO(
        MaskedMultiInputPolicy, _env(), policy_kwargs=POLICY_KWARGS, contrastive_coef=0.5, **PPO_KWARGS
    )
    assert model.policy.observation_space["observation"].shape == (3, 24, 24)  # SB3 transposed the image
    model.set_logger(configure(str(tmp_path), ["csv"]))
    key_before = [p.clone() for p in model.contrastive.key_encoder.parameters()]
    model.learn(256)
    values = model.logger.name_to_value
    assert np.isfinite(values["train/contrastive_loss"]) and values["train/contrastive_loss"] > 0
    assert 0.0 <= values["train/contrastive_accuracy"] <= 1.0
    assert "train/contrastive_loss" in (tmp_path / "progress.csv").read_text().splitlines()[0]
    assert any(
        not torch.equal(b, p) for b, p in zip(key_before, model.contrastive.key_encoder.parameters(), strict=True)
    )
    # Save and load keep the auxiliary modules; the loaded policy acts the same.
    model.save(tmp_path / "model.zip")
    loaded = ContrastivePPO.load(tmp_path / "model.zip", device="cpu")
    for a, b in zip(model.contrastive.state_dict().values(), loaded.contrastive.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    obs = model.env.reset()
    assert np.array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])


def test_zero_coefficient_is_exactly_ppo() -> None:
    torch.set_num_threads(1)
    kwargs = dict(policy_kwargs=POLICY_KWARGS, **PPO_KWARGS)
    # Build and train one after the other: SB3 seeds the global RNGs when it builds a model.
    ours = ContrastivePPO(MaskedActorCriticPolicy, _env(), contrastive_coef=0.0, **kwargs)
    ours.learn(128)
    ref = PPO(MaskedActorCriticPolicy, _env(), **kwargs)
    ref.learn(128)
    assert not hasattr(ours, "contrastive")
    for a, b in zip(ours.policy.state_dict().values(), ref.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_sequences_stay_inside_one_episode_of_one_env() -> None:
    model = ContrastivePPO(
        MaskedMultiInputPolicy,
        _env(n_envs=2, max_steps=5),
        policy_kwargs=POLICY_KWARGS,
        sequence_length=4,
        **{**PPO_KWARGS, "n_steps": 16, "batch_size": 32},
    )
    model.learn(32)  # one rollout; the buffer still holds it
    frames, env_idx, step_idx = model._rollout_frames()
    starts = model.rollout_buffer.episode_starts  # (n_steps, n_envs)
    assert frames.shape == (2, 16, 3, 24, 24) and len(env_idx) > 0
    for e, t in zip(env_idx, step_idx, strict=True):
        assert starts[t + 1 : t + 4, e].sum() == 0
    # With max_steps=5 every env restarts at least every 5 steps, so some windows must have been excluded.
    assert len(env_idx) < 2 * (16 - 4 + 1)
    sequences = model._sample_sequences(frames, env_idx, step_idx)
    assert sequences.shape == (16, 4, 3, 24, 24)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"contrastive_coef": -1.0}, "contrastive_coef"),
        ({"sequence_length": 1}, "sequence_length"),
        ({"sequence_length": 64}, "exceeds n_steps"),
        ({"mask_mode": "noise"}, "mask_mode"),
        ({"momentum": 2.0}, "momentum"),
        ({"contrastive_key": "pixels"}, "pixels"),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ContrastivePPO(MaskedMultiInputPolicy, _env(n_envs=2), policy_kwargs=POLICY_KWARGS, **{**PPO_KWARGS, **kwargs})
