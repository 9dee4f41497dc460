"""Tests for the trajectory transformer and its pretraining objectives: no-leak gradients through the whole model,
masked reconstruction, the momentum target, the masking curriculum, learning on a tiny synthetic dataset, files
(including encoders in maskrl 0.1.0's layout)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from maskrl.policies.attention_masks import causal_mask, inverse_dynamics_mask, trajectory_token_valid
from maskrl.policies.trajectory_transformer import (
    TrajectoryConfig,
    TrajectoryTransformer,
    interleave,
    load_encoder,
    save_encoder,
)
from maskrl.representation.dataset import TrajectoryDataset, WindowSampler
from maskrl.representation.objectives import TrajectoryPretrainer, check_objectives, mask_ratio_schedule

K = 4
T = 2 * K - 1
OBS_DIM = 5


def _model(discrete: bool = True, seed: int = 0) -> TrajectoryTransformer:
    torch.manual_seed(seed)
    model = TrajectoryTransformer(TrajectoryConfig(OBS_DIM, 3, discrete, max_window=K, d_model=16, n_heads=2))
    # Larger weights than the GPT init, so that every allowed path carries a clearly nonzero gradient.
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    return model


def _token_jacobian_norms(model: TrajectoryTransformer, mask: torch.Tensor) -> torch.Tensor:
    """``norms[i, j]`` = norm of d output(i) / d input token(j), through all blocks of the real model."""
    obs = torch.randn(1, K, OBS_DIM)
    actions = torch.tensor([[0, 2, 1]])
    tokens = model.tokenize(obs, actions).detach().requires_grad_(True)
    out = model.encode(model.add_embeddings(tokens), mask)
    norms = torch.zeros(T, T)
    for i in range(T):
        (grad,) = torch.autograd.grad(out[0, i].sum(), tokens, retain_graph=True)
        norms[i] = grad[0].norm(dim=-1)
    return norms


def test_interleave_layout() -> None:
    obs = torch.arange(3.0).view(1, 3, 1)
    actions = torch.tensor([[[10.0], [11.0]]])
    assert interleave(obs, actions).flatten().tolist() == [0.0, 10.0, 1.0, 11.0, 2.0]
    with pytest.raises(ValueError, match="action tokens"):
        interleave(obs, actions[:, :1])


def test_causal_mask_no_output_depends_on_a_later_input() -> None:
    norms = _token_jacobian_norms(_model(), causal_mask(T))
    later = torch.ones(T, T, dtype=torch.bool).triu(1)
    assert torch.all(norms[later] == 0)  # exactly zero, not merely small
    assert torch.all(norms[~later] > 1e-6)  # and every earlier input does matter


def test_causal_mask_no_leak_from_raw_inputs() -> None:
    # Through the observation MLP and the action embedding too: perturb the future, the past outputs do not move.
    model = _model(discrete=False)
    obs, actions = torch.randn(2, K, OBS_DIM), torch.randn(2, K - 1, 3)
    out = model(obs, actions, causal_mask(T))
    obs2, actions2 = obs.clone(), actions.clone()
    obs2[:, 2:] += 1.0  # o3, o4 are tokens 4 and 6
    actions2[:, 2:] += 1.0  # a3 is token 5
    out2 = model(obs2, actions2, causal_mask(T))
    assert torch.equal(out[:, :4], out2[:, :4])
    assert not torch.allclose(out[:, 4:], out2[:, 4:])


def test_inverse_dynamics_mask_hides_the_action_before_each_observation() -> None:
    norms = _token_jacobian_norms(_model(), inverse_dynamics_mask(T))
    for t in range(K - 1):
        o_next, a_t, o_t = 2 * t + 2, 2 * t + 1, 2 * t
        assert norms[o_next, a_t] == 0, f"o({t + 2}) sees a({t + 1})"
        assert norms[o_next, o_t] > 1e-6, f"o({t + 2}) must see o({t + 1})"
    # And still nothing from the future.
    assert torch.all(norms[torch.ones(T, T, dtype=torch.bool).triu(1)] == 0)


def test_padding_content_never_reaches_valid_tokens() -> None:
    model = _model()
    obs, actions = torch.randn(2, K, OBS_DIM), torch.randint(0, 3, (2, K - 1))
    obs_valid = torch.tensor([[False, False, True, True], [True, True, True, True]])
    token_valid = trajectory_token_valid(obs_valid)
    assert token_valid[0].tolist() == [False, False, False, False, True, True, True]
    full = torch.ones(T, T, dtype=torch.bool)
    out = model(obs, actions, full, token_valid)
    obs2, actions2 = obs.clone(), actions.clone()
    obs2[0, :2] = 7.0  # garbage in the padding slots of sample 0
    actions2[0, :2] = 2
    out2 = model(obs2, actions2, full, token_valid)
    assert torch.equal(out[0, 4:], out2[0, 4:])
    assert torch.equal(out[1], out2[1])
    assert torch.isfinite(out2).all()


def test_masked_reconstruction_changes_exactly_the_reported_positions() -> None:
    torch.manual_seed(0)
    pretrainer = TrajectoryPretrainer(TrajectoryConfig(OBS_DIM, 3, max_window=K, d_model=16), obs_mask_ratio=0.25)
    tokens = torch.randn(64, T, 16)
    generator = torch.Generator().manual_seed(3)
    masked_tokens, positions = pretrainer.mask_tokens(tokens, ratio=0.5, generator=generator)
    changed = (masked_tokens != tokens).any(-1)
    assert torch.equal(changed, positions)
    assert torch.equal(masked_tokens[positions], pretrainer.mask_embedding.detach().expand(int(positions.sum()), 16))
    # round(0.5 * 3) = 2 actions and round(0.25 * 4) = 1 observation per window.
    assert positions[:, 1::2].sum(1).tolist() == [2] * 64
    assert positions[:, 0::2].sum(1).tolist() == [1] * 64
    assert len({tuple(p.tolist()) for p in positions}) > 1  # drawn independently per window
    # Gradient reaches the learned mask embedding.
    masked_tokens.sum().backward()
    assert pretrainer.mask_embedding.grad is not None and pretrainer.mask_embedding.grad.abs().sum() > 0


def test_masking_curriculum_grows_and_always_masks_an_action() -> None:
    assert mask_ratio_schedule(0.0, 0.2, 1.0) == pytest.approx(0.2)
    assert mask_ratio_schedule(0.5, 0.2, 1.0) == pytest.approx(0.6)
    assert mask_ratio_schedule(2.0, 0.2, 1.0) == pytest.approx(1.0)
    pretrainer = TrajectoryPretrainer(TrajectoryConfig(OBS_DIM, 3, max_window=K, d_model=16), objectives=["masked"])
    counts = [pretrainer.n_masked_actions(pretrainer.mask_ratio(p), 3) for p in np.linspace(0, 1, 11)]
    assert counts == sorted(counts) and counts[0] == 1 and counts[-1] == 3
    assert pretrainer.n_masked_actions(0.0, 3) == 1
    obs, actions, valid = (
        torch.randn(4, K, OBS_DIM),
        torch.randint(0, 3, (4, K - 1)),
        torch.ones(4, K, dtype=torch.bool),
    )
    ratios = [float(pretrainer.loss(obs, actions, valid, progress=p)[1]["mask_ratio"]) for p in (0.0, 1.0)]
    assert ratios == pytest.approx([1 / 3, 1.0])


def test_forward_target_gets_no_gradient_and_follows_the_online_encoder() -> None:
    pretrainer = TrajectoryPretrainer(TrajectoryConfig(OBS_DIM, 3, max_window=K, d_model=16), objectives=["forward"])
    assert not any(p.requires_grad for p in pretrainer.target_obs_encoder.parameters())
    obs, actions, valid = (
        torch.randn(4, K, OBS_DIM),
        torch.randint(0, 3, (4, K - 1)),
        torch.ones(4, K, dtype=torch.bool),
    )
    loss, _ = pretrainer.loss(obs, actions, valid)
    loss.backward()
    assert all(p.grad is None for p in pretrainer.target_obs_encoder.parameters())
    with torch.no_grad():
        pretrainer.encoder.obs_encoder[0].weight.add_(1.0)
    old = pretrainer.target_obs_encoder[0].weight.clone()
    pretrainer.update_target()
    expected = 0.99 * old + 0.01 * pretrainer.encoder.obs_encoder[0].weight
    assert torch.allclose(pretrainer.target_obs_encoder[0].weight, expected, atol=1e-7)


def _synthetic_dataset(discrete: bool, n_steps: int = 3000) -> TrajectoryDataset:
    """o(t+1) = o(t) + effect(a(t)) + small noise: a(t) is a function of (o(t), o(t+1))."""
    rng = np.random.default_rng(0)
    effects = np.eye(3, 4) * 0.5
    obs = np.zeros((n_steps, 4), dtype=np.float32)
    starts = np.zeros(n_steps, dtype=bool)
    starts[::50] = True
    actions = rng.integers(0, 3, n_steps) if discrete else rng.normal(size=(n_steps, 2)).astype(np.float32)
    for t in range(n_steps):
        if starts[t]:
            obs[t] = rng.normal(size=4)
        else:
            step = effects[actions[t - 1]] if discrete else np.r_[actions[t - 1], 0.0, 0.0] * 0.5
            obs[t] = np.tanh(obs[t - 1] + step + rng.normal(scale=0.01, size=4))
    masks = np.ones((n_steps, 3), dtype=bool)
    meta = {"n_actions": 3} if discrete else {}
    return TrajectoryDataset(obs, actions, masks, starts, meta)


def test_losses_decrease_and_inverse_dynamics_is_learned() -> None:
    torch.manual_seed(0)
    data = _synthetic_dataset(discrete=True)
    sampler = WindowSampler(data, K, seed=0)
    pretrainer = TrajectoryPretrainer(TrajectoryConfig(4, 3, max_window=K, d_model=16, n_layers=1), obs_mask_ratio=0.0)
    optimizer = torch.optim.Adam([p for p in pretrainer.parameters() if p.requires_grad], lr=3e-3)
    fixed = sampler.sample(256)
    gen = torch.Generator().manual_seed(0)
    _, before = pretrainer.loss(*fixed, progress=1.0, generator=gen)
    for step in range(120):
        loss, _ = pretrainer.loss(*sampler.sample(64), progress=step / 119)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pretrainer.update_target()
    gen = torch.Generator().manual_seed(0)
    _, after = pretrainer.loss(*fixed, progress=1.0, generator=gen)
    for name in ("loss_forward", "loss_inverse", "loss_masked"):
        assert after[name] < 0.7 * before[name], name
    assert after["inverse_accuracy"] > 0.9
    assert after["masked_accuracy"] > 0.7
    assert after["forward_r2"] > 0.5


def test_continuous_actions_use_mse() -> None:
    torch.manual_seed(0)
    data = _synthetic_dataset(discrete=False, n_steps=1000)
    sampler = WindowSampler(data, K, seed=0)
    pretrainer = TrajectoryPretrainer(
        TrajectoryConfig(4, 2, discrete=False, max_window=K, d_model=16, n_layers=1), objectives=["inverse", "masked"]
    )
    optimizer = torch.optim.Adam(pretrainer.parameters(), lr=3e-3)
    fixed = sampler.sample(256)
    _, before = pretrainer.loss(*fixed, progress=1.0)
    for _ in range(60):
        loss, metrics = pretrainer.loss(*sampler.sample(64), progress=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _, after = pretrainer.loss(*fixed, progress=1.0)
    assert "inverse_accuracy" not in metrics
    assert after["loss_inverse"] < 0.5 * before["loss_inverse"]


def test_objectives_and_config_are_checked() -> None:
    assert check_objectives(["masked", "forward", "masked"]) == ("forward", "masked")
    with pytest.raises(ValueError, match="unknown objective 'reward'"):
        check_objectives(["reward"])
    with pytest.raises(ValueError, match="at least one"):
        check_objectives([])
    with pytest.raises(ValueError, match="multiple of n_heads"):
        TrajectoryConfig(4, 3, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="obs_dim must be >= 1"):
        TrajectoryConfig(0, 3)
    with pytest.raises(ValueError, match="unknown trajectory model config keys: foo"):
        TrajectoryConfig.from_dict({"obs_dim": 4, "action_dim": 3, "foo": 1})
    model = TrajectoryTransformer(TrajectoryConfig(4, 3, max_window=2))
    with pytest.raises(ValueError, match="exceeds the model's max_window 2"):
        model(torch.zeros(1, 3, 4), torch.zeros(1, 2, dtype=torch.long), causal_mask(5))


def test_encoder_files_round_trip_exactly(tmp_path) -> None:
    model = _model()
    save_encoder(model, tmp_path, {"objectives": ["inverse"]})
    loaded, info = load_encoder(tmp_path)
    assert info["objectives"] == ["inverse"] and info["config"] == model.config.to_dict()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # weights_only loading works on the file itself.
    assert set(torch.load(tmp_path / "encoder.pt", weights_only=True)) == set(model.state_dict())
    with pytest.raises(ValueError, match="no pretrained encoder"):
        load_encoder(tmp_path / "nowhere")
    info["config"]["d_model"] = 32
    (tmp_path / "encoder.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="do not fit"):
        load_encoder(tmp_path)


# --------------------------------------------------------------------------------------------- maskrl 0.1.0 encoders

LEGACY_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "legacy_v0_1" / "encoder"


class _LegacyBlock(nn.Module):
    """maskrl 0.1.0's ``trajectory_transformer.Block`` (nn.MultiheadAttention, ``ln_attn``/``ln_mlp``), verbatim."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=0.0, batch_first=True)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, d_model)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mha_mask = ~mask  # MultiheadAttention: True = may NOT attend
        if mha_mask.ndim == 3:
            mha_mask = mha_mask.repeat_interleave(self.n_heads, dim=0)
        h = self.ln_attn(x)
        x = x + self.attn(h, h, h, attn_mask=mha_mask, need_weights=False)[0]
        return x + self.mlp(self.ln_mlp(x))


def _legacy_folder(folder: Path, seed: int = 0) -> tuple[Path, nn.ModuleList]:
    """An encoder folder as maskrl 0.1.0 wrote it: old block names, ``mlp_ratio`` in the config; and its blocks."""
    model = _model(seed=seed)
    torch.manual_seed(seed + 1)
    blocks = nn.ModuleList(_LegacyBlock(16, 2, 4) for _ in range(model.config.n_layers))
    for param in blocks.parameters():
        param.data.normal_(0.0, 0.5)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("blocks.")}
    state.update({f"blocks.{k}": v.clone() for k, v in blocks.state_dict().items()})
    folder.mkdir()
    torch.save(state, folder / "encoder.pt")
    config = {**model.config.to_dict(), "mlp_ratio": 4}
    (folder / "encoder.json").write_text(json.dumps({"config": config}))
    model.blocks = blocks  # the old model, for reference outputs
    return folder, model


def test_a_maskrl_0_1_encoder_folder_loads_and_encodes_the_same(tmp_path) -> None:
    folder, legacy = _legacy_folder(tmp_path / "old")
    assert "blocks.0.attn.in_proj_weight" in torch.load(folder / "encoder.pt", weights_only=True)
    loaded, info = load_encoder(folder)
    assert info["config"]["mlp_ratio"] == 4 and "mlp_ratio" not in loaded.config.to_dict()
    obs, actions = torch.randn(3, K, OBS_DIM), torch.randint(0, 3, (3, K - 1))
    token_valid = trajectory_token_valid(torch.tensor([[False, True, True, True]] * 3))
    for mask in (causal_mask(T), inverse_dynamics_mask(T)):
        with torch.no_grad():
            expected = legacy(obs, actions, mask, token_valid)  # runs the old MultiheadAttention blocks
            torch.testing.assert_close(loaded(obs, actions, mask, token_valid), expected, rtol=1e-5, atol=1e-5)
    # The same remap serves a plain load_state_dict (e.g. a pretraining checkpoint of maskrl 0.1.0).
    fresh = TrajectoryTransformer(loaded.config)
    fresh.load_state_dict(torch.load(folder / "encoder.pt", weights_only=True))
    for (name, a), b in zip(fresh.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_the_fixture_encoder_of_maskrl_0_1_has_the_old_layout_and_loads() -> None:
    # tests/test_legacy_artifacts.py checks its features against the values maskrl 0.1.0 computed.
    raw = torch.load(LEGACY_FIXTURE / "encoder.pt", weights_only=True)
    assert "blocks.0.ln_attn.weight" in raw and "blocks.0.attn.in_proj_weight" in raw
    encoder, info = load_encoder(LEGACY_FIXTURE)
    assert info["config"]["mlp_ratio"] == 4
    assert torch.equal(encoder.blocks[0].qkv.weight, raw["blocks.0.attn.in_proj_weight"])
    assert torch.equal(encoder.blocks[0].attn_norm.bias, raw["blocks.0.ln_attn.bias"])


def test_config_keeps_only_the_legacy_mlp_ratio() -> None:
    base = {"obs_dim": 4, "action_dim": 3}
    assert TrajectoryConfig.from_dict({**base, "mlp_ratio": 4}) == TrajectoryConfig(4, 3)
    with pytest.raises(ValueError, match="mlp_ratio 4 only"):
        TrajectoryConfig.from_dict({**base, "mlp_ratio": 2})
