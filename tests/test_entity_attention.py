"""EntityAttentionExtractor (masked entity self-attention), its attention plots and TensorBoard callback."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from matplotlib.figure import Figure
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.torch_layers import CombinedExtractor
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from maskrl.policies import MaskedActorCriticPolicy
from maskrl.policies.attention_masks import key_mask
from maskrl.policies.attention_plots import AttentionMapCallback, plot_attention_map, save_attention_map
from maskrl.policies.entity_attention import EntityAttentionExtractor

N, F, N_ACTIONS = 5, 3, 5
SMALL = dict(embed_dim=8, n_heads=2, n_blocks=2)
POLICY_KWARGS = dict(
    features_extractor_class=EntityAttentionExtractor,
    features_extractor_kwargs=dict(embed_dim=16, n_heads=2, n_blocks=1),
    net_arch=[16],
)


def entity_space(n: int = N, f: int = F) -> spaces.Dict:
    return spaces.Dict({"entities": spaces.Box(-1.0, 1.0, (n, f)), "visibility": spaces.MultiBinary(n)})


def extractor(n: int = N, dtype=torch.float64, seed: int = 0, **kwargs: Any) -> EntityAttentionExtractor:
    torch.manual_seed(seed)
    return EntityAttentionExtractor(entity_space(n), **{**SMALL, **kwargs}).to(dtype).eval()


def random_obs(batch: int = 6, n: int = N, seed: int = 0, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """Random scenes in the env's convention: slot 0 visible, hidden rows zero, every scene has a hidden slot."""
    gen = torch.Generator().manual_seed(seed)
    visibility = (torch.rand(batch, n, generator=gen) < 0.5).to(dtype)
    visibility[:, 0] = 1
    visibility[:, -1] = 0
    entities = torch.rand(batch, n, F, generator=gen, dtype=dtype) * 2 - 1
    entities = entities * visibility[..., None]
    return {"entities": entities, "visibility": visibility}


class TinyEntityEnv(gym.Env):
    """Random entity scenes; the reward is for the action given by the sign pattern of the agent's token."""

    metadata = {"render_modes": []}

    def __init__(self, episode_length: int = 8):
        self.observation_space = spaces.Dict(
            {
                "entities": spaces.Box(-1.0, 1.0, (N, F), dtype=np.float32),
                "visibility": spaces.MultiBinary(N),
                "action_mask": spaces.MultiBinary(N_ACTIONS),
            }
        )
        self.action_space = spaces.Discrete(N_ACTIONS)
        self.episode_length = episode_length
        self._t = 0

    def _obs(self) -> dict[str, np.ndarray]:
        visibility = (self.np_random.random(N) < 0.6).astype(np.int8)
        visibility[0] = 1
        entities = self.np_random.uniform(-1, 1, (N, F)).astype(np.float32) * visibility[:, None]
        mask = (self.np_random.random(N_ACTIONS) < 0.6).astype(np.int8)
        mask[self.np_random.integers(N_ACTIONS)] = 1  # always some valid action
        self._good = int(entities[0, 0] > 0)
        return {"entities": entities, "visibility": visibility, "action_mask": mask}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self._good)
        self._t += 1
        return self._obs(), reward, False, self._t >= self.episode_length, {}


def tiny_vec_env(n_envs: int = 2, seed: int = 0):
    return make_vec_env(TinyEntityEnv, n_envs=n_envs, seed=seed)


# --- invariances -----------------------------------------------------------------------------------------------


def test_features_shape_and_dim():
    ext = extractor()
    features = ext(random_obs())
    assert ext.features_dim == 2 * SMALL["embed_dim"]
    assert features.shape == (6, ext.features_dim)
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("use_visibility", [True, False])
def test_permuting_other_entities_leaves_features_unchanged(use_visibility):
    ext = extractor(use_visibility=use_visibility)
    obs = random_obs()
    perm = torch.cat(
        [torch.zeros(1, dtype=torch.long), 1 + torch.randperm(N - 1, generator=torch.Generator().manual_seed(1))]
    )
    assert not torch.equal(perm, torch.arange(N))
    permuted = {key: value[:, perm] for key, value in obs.items()}
    torch.testing.assert_close(ext(permuted), ext(obs), rtol=0, atol=1e-12)
    # Moving the agent out of slot 0 does change them: slot 0 is special (the test can tell).
    swapped = torch.tensor([1, 0, *range(2, N)])
    obs["visibility"][:, :2] = 1
    assert not torch.allclose(ext({k: v[:, swapped] for k, v in obs.items()}), ext(obs))


def test_hidden_and_padding_features_do_not_matter_with_visibility():
    obs = random_obs()
    changed = {key: value.clone() for key, value in obs.items()}
    hidden = changed["visibility"] == 0
    assert hidden.any() and (changed["visibility"] == 1).sum() > obs["visibility"].shape[0]
    changed["entities"][hidden] = torch.randn(int(hidden.sum()), F, dtype=torch.float64) * 10
    masked = extractor(n_blocks=2)
    torch.testing.assert_close(masked(changed), masked(obs), rtol=0, atol=1e-12)
    # Without the mask the hidden entities are attended to and pooled, so their features matter.
    unmasked = extractor(n_blocks=2, use_visibility=False)
    assert (unmasked(changed) - unmasked(obs)).abs().max() > 1e-3


def test_float32_hidden_entities_exactly_ignored():
    ext = extractor(dtype=torch.float32)
    obs = random_obs(dtype=torch.float32)
    changed = {key: value.clone() for key, value in obs.items()}
    hidden = changed["visibility"] == 0
    changed["entities"][hidden] = 5.0
    assert torch.allclose(ext(changed), ext(obs), rtol=0, atol=1e-6)


@pytest.mark.parametrize("extra", [1, 4])
def test_extra_padding_slots_leave_features_unchanged(extra):
    ext = extractor()
    obs = random_obs()
    batch = obs["entities"].shape[0]
    padded = {
        "entities": torch.cat([obs["entities"], torch.zeros(batch, extra, F, dtype=torch.float64)], dim=1),
        "visibility": torch.cat([obs["visibility"], torch.zeros(batch, extra, dtype=torch.float64)], dim=1),
    }
    torch.testing.assert_close(ext(padded), ext(obs), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scene_with_only_the_agent(dtype):
    ext = extractor(dtype=dtype)
    obs = random_obs(batch=3, dtype=dtype)
    obs["visibility"][:, 1:] = 0
    obs["entities"][:, 1:] = 0
    # Even a visibility that hides the agent itself: slot 0 is forced visible, never an empty softmax row.
    obs["visibility"][0, 0] = 0
    features = ext(obs)
    assert torch.isfinite(features).all()
    alone = ext({"entities": obs["entities"][:, :1], "visibility": obs["visibility"][:, :1]})
    torch.testing.assert_close(features, alone, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)
    maps = ext.attention_maps(obs)
    assert all(torch.isfinite(w).all() for w in maps)
    # With one visible entity the agent's token after the blocks is the pooled mean.
    half = features.shape[1] // 2
    torch.testing.assert_close(features[:, :half], features[:, half:])


def test_no_gradient_to_hidden_entities():
    ext = extractor(use_visibility=True)
    obs = random_obs()
    entities = obs["entities"].clone().requires_grad_(True)
    ext({"entities": entities, "visibility": obs["visibility"]}).square().sum().backward()
    hidden = obs["visibility"] == 0
    assert torch.all(entities.grad[hidden] == 0)
    assert entities.grad[~hidden].abs().sum(-1).gt(0).all()
    # The ablation does pass gradient to them (the test would catch a mask that is never applied).
    ablation = extractor(use_visibility=False)
    entities.grad = None
    ablation({"entities": entities, "visibility": obs["visibility"]}).square().sum().backward()
    assert entities.grad[hidden].abs().sum() > 0


# --- attention maps --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_visibility", [True, False])
def test_attention_maps_match_sdpa_forward(use_visibility):
    ext = extractor(dtype=torch.float32, use_visibility=use_visibility)
    obs = random_obs(dtype=torch.float32)
    maps = ext.attention_maps(obs)
    assert len(maps) == SMALL["n_blocks"]
    hidden = obs["visibility"] == 0
    for weights in maps:
        assert weights.shape == (6, SMALL["n_heads"], N, N)
        torch.testing.assert_close(weights.sum(-1), torch.ones(6, SMALL["n_heads"], N))
        columns = weights.permute(0, 3, 1, 2)  # (B, key, head, query)
        if use_visibility:
            assert torch.all(columns[hidden] == 0)
            assert torch.all(columns[~hidden].sum(-1).sum(-1) > 0)
        else:
            assert torch.all(columns[hidden] > 0)


def test_attention_block_weights_reproduce_sdpa_output():
    """The maps are the weights SDPA uses: weights @ V equals SDPA's output, block by block."""
    ext = extractor(dtype=torch.float64)
    obs = random_obs()
    mask = key_mask(ext.visible_mask(obs))
    x = ext.embed(obs["entities"])
    for block in ext.blocks:
        sdpa = block(x, mask)
        explicit, weights = block.forward_with_weights(x, mask)
        assert weights.shape == (6, SMALL["n_heads"], N, N)
        torch.testing.assert_close(sdpa, explicit, rtol=0, atol=1e-12)
        x = sdpa


def test_zero_blocks_is_embed_and_pool():
    ext = extractor(n_blocks=0)
    obs = random_obs()
    assert ext.attention_maps(obs) == []
    assert torch.isfinite(ext(obs)).all()


# --- bad spaces ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("space", "kwargs", "match"),
    [
        (spaces.Box(-1, 1, (N, F)), {}, "Dict observation space"),
        (spaces.Dict({"visibility": spaces.MultiBinary(N)}), {}, "no 'entities' key"),
        (spaces.Dict({"entities": spaces.Box(-1, 1, (N, F))}), {}, "no 'visibility' key"),
        (spaces.Dict({"entities": spaces.Box(-1, 1, (N * F,)), "visibility": spaces.MultiBinary(N)}), {}, "shape"),
        (spaces.Dict({"entities": spaces.Box(-1, 1, (N, F)), "visibility": spaces.MultiBinary(N + 1)}), {}, r"\(5,\)"),
        (spaces.Dict({"entities": spaces.Discrete(3), "visibility": spaces.MultiBinary(N)}), {}, "must be a Box"),
        (
            spaces.Dict({**entity_space().spaces, "time": spaces.Box(0, 1, (1,))}),
            {},
            r"also has \['time'\]",
        ),
        (entity_space(), {"embed_dim": 10, "n_heads": 4}, "divisible by n_heads"),
        (entity_space(), {"embed_dim": 0}, "embed_dim"),
        (entity_space(), {"n_blocks": -1}, "n_blocks"),
    ],
)
def test_bad_observation_space_raises(space, kwargs, match):
    with pytest.raises(ValueError, match=match):
        EntityAttentionExtractor(space, **kwargs)


def test_ablation_does_not_need_visibility_key():
    ext = EntityAttentionExtractor(spaces.Dict({"entities": spaces.Box(-1, 1, (N, F))}), use_visibility=False, **SMALL)
    assert torch.isfinite(ext({"entities": torch.rand(2, N, F)})).all()


# --- with PPO --------------------------------------------------------------------------------------------------


def test_ppo_learn_predict_save_load(tmp_path):
    env = tiny_vec_env()
    model = PPO(
        MaskedActorCriticPolicy, env, n_steps=64, batch_size=64, n_epochs=2, policy_kwargs=POLICY_KWARGS, seed=0
    )
    assert isinstance(model.policy.features_extractor, EntityAttentionExtractor)
    model.learn(256)
    obs = env.reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (2,)
    assert all(obs["action_mask"][i, a] == 1 for i, a in enumerate(actions))
    model.save(tmp_path / "model.zip")
    loaded = PPO.load(tmp_path / "model.zip", env=env)
    assert isinstance(loaded.policy.features_extractor, EntityAttentionExtractor)
    batch = {
        "entities": np.stack([env.observation_space["entities"].sample() for _ in range(16)]),
        "visibility": np.ones((16, N), dtype=np.int8),
        "action_mask": np.ones((16, N_ACTIONS), dtype=np.int8),
    }
    for observation in (obs, batch):
        np.testing.assert_array_equal(
            loaded.predict(observation, deterministic=True)[0], model.predict(observation, deterministic=True)[0]
        )


# --- plots and callback ----------------------------------------------------------------------------------------


def test_plot_attention_map_labels_and_hidden_marks():
    weights = torch.softmax(torch.randn(4, 4), dim=-1)
    fig = plot_attention_map(weights, labels=["me", "a", "b", "c"], visible=[1, 1, 0, 1], title="t")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    xlabels = [label.get_text() for label in ax.get_xticklabels()]
    ylabels = [label.get_text() for label in ax.get_yticklabels()]
    assert xlabels == ylabels == ["me", "a", "b (hidden)", "c"]
    assert ax.get_title() == "t"
    with pytest.raises(ValueError, match="square"):
        plot_attention_map(np.ones((3, 4)))
    with pytest.raises(ValueError, match="labels"):
        plot_attention_map(np.ones((3, 3)), labels=["a"])
    default = plot_attention_map(np.eye(12))
    assert len(default.axes[0].get_xticklabels()) == 12
    assert default.axes[0].get_yticklabels()[0].get_text() == "agent"


def test_save_attention_map_writes_png(tmp_path):
    path = save_attention_map(tmp_path / "maps" / "map", np.eye(3), visible=np.array([True, False, True]))
    assert path.suffix == ".png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000


def test_attention_map_callback_writes_tensorboard_image(tmp_path):
    env = tiny_vec_env()
    model = PPO(
        MaskedActorCriticPolicy,
        env,
        n_steps=32,
        batch_size=64,
        n_epochs=1,
        policy_kwargs=POLICY_KWARGS,
        tensorboard_log=str(tmp_path),
        seed=0,
    )
    callback = AttentionMapCallback(log_freq=16, label_fn=lambda i: "self" if i == 0 else f"obj{i}")
    model.learn(128, callback=callback, tb_log_name="attn")
    assert callback.last_weights is not None and callback.last_weights.shape == (N, N)
    np.testing.assert_allclose(callback.last_weights.sum(-1), 1.0, rtol=1e-5)
    run_dirs = list(tmp_path.glob("attn*"))
    assert len(run_dirs) == 1
    events = EventAccumulator(str(run_dirs[0]))
    events.Reload()
    assert "attention/map" in events.Tags()["images"]
    image = events.Images("attention/map")[-1]
    assert image.width > 100 and image.height > 100


def test_attention_map_callback_rejects_other_extractors():
    env = tiny_vec_env()
    from maskrl.policies import MaskedMultiInputPolicy

    model = PPO(MaskedMultiInputPolicy, env, n_steps=16, batch_size=16, policy_kwargs=dict(net_arch=[8]))
    assert isinstance(model.policy.features_extractor, CombinedExtractor)
    with pytest.raises(ValueError, match="EntityAttentionExtractor"):
        model.learn(16, callback=AttentionMapCallback(log_freq=1))
