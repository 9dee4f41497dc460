"""Masked recurrent PPO: MaskedRecurrentActorCriticPolicy with unchanged sb3-contrib RecurrentPPO, and the
PandaGrid ``blink_prob`` option that makes memory matter."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.torch_layers import CombinedExtractor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
from torch import nn

from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.agents.registry import get_algo
from maskrl.agents.safe_load import load_model_safely
from maskrl.envs.panda_grid import PandaGridEnv
from maskrl.envs.toy import InvalidActionError, make_dict_toy_env, make_two_key_toy_env
from maskrl.envs.wrappers import DropMasks
from maskrl.evaluate import main as evaluate_main
from maskrl.masks import ACTION_MASK_KEY
from maskrl.policies import EntityAttentionExtractor, MaskedRecurrentActorCriticPolicy, MaskedRecurrentMultiInputPolicy
from maskrl.policies.recurrent import open_padding_rows
from maskrl.train import main as train_main

ACTION_TYPES = ["discrete", "multidiscrete", "multibinary"]
N = 4  # choices per sub-action of the toy env (Discrete / MultiDiscrete)
N_SUB = 2  # sub-actions (bits) of the MultiDiscrete / MultiBinary toy env
EPISODE = 5  # toy episode length: several episode boundaries inside every rollout
SMALL_LSTM = {"lstm_hidden_size": 16, "net_arch": [16]}


def constant_lr(_: float) -> float:
    return 3e-4


def nvec(action_type: str) -> list[int]:
    """Choices per sub-action; the flat mask is their concatenation (MultiBinary: 2 entries per bit)."""
    return {"discrete": [N], "multidiscrete": [N] * N_SUB, "multibinary": [2] * N_SUB}[action_type]


def toy_vec_env(action_type: str = "discrete", n_envs: int = 3, seed: int = 0, vec_env_cls=DummyVecEnv, **kwargs):
    # strict: a masked action raises InvalidActionError inside the env, so training itself would fail.
    env_kwargs = {"action_type": action_type, "n": N, "n_sub": N_SUB, "episode_length": EPISODE, "strict": True}
    return sb3_make_vec_env(
        make_dict_toy_env, n_envs=n_envs, seed=seed, env_kwargs={**env_kwargs, **kwargs}, vec_env_cls=vec_env_cls
    )


def spread_logits(policy: nn.Module) -> None:
    """Far-from-uniform logits, so that masking visibly changes the distribution."""
    torch.manual_seed(0)
    nn.init.normal_(policy.action_net.weight, std=2.0)
    nn.init.normal_(policy.action_net.bias, std=2.0)


def make_policy(action_type: str) -> MaskedRecurrentActorCriticPolicy:
    env = make_dict_toy_env(action_type=action_type, n=N, n_sub=N_SUB)
    policy = MaskedRecurrentActorCriticPolicy(env.observation_space, env.action_space, constant_lr, **SMALL_LSTM)
    spread_logits(policy)
    return policy.eval()


def is_valid(mask: np.ndarray, actions: np.ndarray, action_type: str) -> np.ndarray:
    """(batch,) whether every sub-action of each row is allowed by its flat mask."""
    widths = nvec(action_type)
    chosen = np.asarray(actions).reshape(len(mask), len(widths)).astype(np.int64)
    parts = np.asarray(mask).reshape(len(mask), len(widths), widths[0]).astype(bool)
    return np.take_along_axis(parts, chosen[..., None], axis=-1)[..., 0].all(axis=1)


def assert_no_invalid_actions(env, min_steps: int) -> None:
    steps = env.get_attr("total_steps")
    assert sum(steps) >= min_steps, f"the envs were hardly stepped: {steps}"
    assert env.get_attr("invalid_actions") == [0] * env.num_envs


# --------------------------------------------------------------------------------------------------
# Training, predict with states, evaluation: never an invalid action


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_recurrent_ppo_trains_without_invalid_actions(action_type):
    env = toy_vec_env(action_type)
    model = RecurrentPPO(
        MaskedRecurrentActorCriticPolicy,
        env,
        n_steps=16,
        batch_size=24,  # not a multiple of n_steps: sequences are cut and padded
        n_epochs=2,
        seed=0,
        device="cpu",
        policy_kwargs=SMALL_LSTM,
    )
    spread_logits(model.policy)
    model.learn(3 * 16 * 4)  # 4 rollouts of 3 envs x 16 steps: ~40 episode boundaries
    assert_no_invalid_actions(env, min_steps=192)
    assert model._n_updates == 4 * 2  # every rollout was followed by its update (2 epochs)


def test_recurrent_ppo_trains_with_subprocess_envs_and_two_feature_keys():
    env = sb3_make_vec_env(
        make_two_key_toy_env,
        n_envs=2,
        seed=1,
        env_kwargs={"action_type": "multidiscrete", "n": N, "n_sub": N_SUB, "episode_length": EPISODE, "strict": True},
        vec_env_cls=SubprocVecEnv,
    )
    try:
        model = RecurrentPPO(
            MaskedRecurrentMultiInputPolicy,
            env,
            n_steps=16,
            batch_size=16,
            n_epochs=1,
            seed=0,
            policy_kwargs=SMALL_LSTM,
        )
        assert isinstance(model.policy.features_extractor, CombinedExtractor)
        assert set(model.policy.features_extractor._observation_space.spaces) == {"observation", "time"}
        model.learn(64)
        assert_no_invalid_actions(env, min_steps=64)
    finally:
        env.close()


def test_the_invalid_action_counter_catches_unmasked_recurrent_ppo():
    # Control for the tests above: the same env, mask dropped, sb3-contrib's own policy -> invalid actions.
    env = sb3_make_vec_env(
        lambda: DropMasks(make_dict_toy_env(n=N, episode_length=EPISODE)), n_envs=2, seed=0, vec_env_cls=DummyVecEnv
    )
    model = RecurrentPPO("MlpLstmPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0, policy_kwargs=SMALL_LSTM)
    model.learn(64)
    assert sum(env.get_attr("invalid_actions")) > 0


def _mask_out_favourites(mask: np.ndarray, favourite: np.ndarray, action_type: str) -> np.ndarray:
    """Mask every sub-action's favourite choice wherever another valid choice remains."""
    widths = nvec(action_type)
    parts = mask.reshape(len(mask), len(widths), widths[0]).copy()
    chosen = favourite.reshape(len(mask), len(widths)).astype(np.int64)
    rows, subs = np.nonzero(parts.sum(-1) > 1)
    parts[rows, subs, chosen[rows, subs]] = 0
    return parts.reshape(len(mask), -1)


def _random_masks(rng: np.random.Generator, batch: int, action_type: str) -> np.ndarray:
    widths = nvec(action_type)
    parts = (rng.random((batch, len(widths), widths[0])) < 0.6).astype(np.int8)
    empty = parts.sum(-1) == 0
    parts[empty, 0] = 1
    return parts.reshape(batch, -1)


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_predict_with_states_takes_only_valid_actions_and_the_mask_stays_out_of_memory(action_type):
    policy = make_policy(action_type)
    rng = np.random.default_rng(0)
    n_envs, obs_dim = 5, sum(nvec(action_type))
    state, episode_start = None, np.ones(n_envs, dtype=bool)
    changed = 0
    for step in range(30):
        obs = {
            "observation": rng.random((n_envs, obs_dim)).astype(np.float32),
            ACTION_MASK_KEY: _random_masks(rng, n_envs, action_type),
        }
        open_obs = {**obs, ACTION_MASK_KEY: np.ones_like(obs[ACTION_MASK_KEY])}
        favourite, open_state = policy.predict(open_obs, state, episode_start, deterministic=True)
        obs[ACTION_MASK_KEY] = _mask_out_favourites(obs[ACTION_MASK_KEY], favourite, action_type)
        for deterministic in (True, False):
            actions, new_state = policy.predict(obs, state, episode_start, deterministic=deterministic)
            assert actions.shape == (n_envs, *policy.action_space.shape)
            assert is_valid(obs[ACTION_MASK_KEY], actions, action_type).all(), f"invalid action at step {step}"
            # The mask shapes the distribution only: the LSTM state is what it would be without it.
            for new, expected in zip(new_state, open_state, strict=True):
                assert new.shape == (1, n_envs, SMALL_LSTM["lstm_hidden_size"])
                np.testing.assert_array_equal(new, expected)
        changed += int((actions != favourite).any())
        state = new_state
        episode_start = rng.random(n_envs) < 0.2
    assert changed > 20  # the masks did overrule the unmasked favourites


def test_an_episode_start_resets_the_lstm_state_in_predict():
    policy = make_policy("discrete")
    rng = np.random.default_rng(1)
    obs = {"observation": rng.random((4, N)).astype(np.float32), ACTION_MASK_KEY: _random_masks(rng, 4, "discrete")}
    garbage = tuple(rng.normal(size=(1, 4, SMALL_LSTM["lstm_hidden_size"])).astype(np.float32) for _ in range(2))
    fresh_actions, fresh_state = policy.predict(obs, None, None, deterministic=True)
    reset_actions, reset_state = policy.predict(obs, garbage, np.ones(4, dtype=bool), deterministic=True)
    _, kept_state = policy.predict(obs, garbage, np.zeros(4, dtype=bool), deterministic=True)
    np.testing.assert_array_equal(reset_actions, fresh_actions)
    np.testing.assert_allclose(reset_state[0], fresh_state[0], rtol=0, atol=1e-7)
    assert not np.allclose(kept_state[0], fresh_state[0])  # the state does carry memory


@pytest.mark.parametrize("action_type", ["discrete", "multibinary"])
def test_evaluate_policy_passes_states_and_takes_only_valid_actions(action_type):
    env = toy_vec_env(action_type, n_envs=2, seed=3)
    model = RecurrentPPO(MaskedRecurrentActorCriticPolicy, env, n_steps=16, seed=0, policy_kwargs=SMALL_LSTM)
    spread_logits(model.policy)
    for deterministic in (True, False):
        _, lengths = evaluate_policy(
            model, env, n_eval_episodes=6, deterministic=deterministic, return_episode_rewards=True
        )
        assert lengths == [EPISODE] * 6
    assert_no_invalid_actions(env, min_steps=60)


# --------------------------------------------------------------------------------------------------
# The update: evaluate_actions over padded sequences sees exactly the masks of the rollout


def _collect_rollout(action_type: str) -> RecurrentPPO:
    env = toy_vec_env(action_type, n_envs=3, seed=4)
    model = RecurrentPPO(
        MaskedRecurrentActorCriticPolicy, env, n_steps=20, batch_size=16, seed=0, device="cpu", policy_kwargs=SMALL_LSTM
    )
    spread_logits(model.policy)
    _, callback = model._setup_learn(total_timesteps=60, callback=None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
    return model


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_evaluate_actions_scores_the_rollout_actions_under_their_own_masks(action_type):
    model = _collect_rollout(action_type)
    buffer = model.rollout_buffer
    masks = buffer.observations[ACTION_MASK_KEY].reshape(-1, sum(nvec(action_type)))
    assert len(np.unique(masks, axis=0)) > 2, "the masks must differ from step to step for this test to mean anything"
    padded = misaligned = 0
    for batch in buffer.get(batch_size=16):  # sequences cut at episode starts and padded with zeros
        real = batch.mask > 1e-8
        padded += int((~real).sum())
        actions = batch.actions.long().flatten() if action_type == "discrete" else batch.actions
        obs = batch.observations
        with torch.no_grad():
            values, log_prob, entropy = model.policy.evaluate_actions(
                obs, actions, batch.lstm_states, batch.episode_starts
            )
            # The same batch with every mask moved to the next row: what a misaligned mask would give.
            moved = {**obs, ACTION_MASK_KEY: obs[ACTION_MASK_KEY].roll(1, dims=0)}
            _, moved_log_prob, _ = model.policy.evaluate_actions(
                moved, actions, batch.lstm_states, batch.episode_starts
            )
        # The policy has not changed since the rollout: the same actions must get the log-probs and values the
        # rollout recorded, which they only can under the masks they were sampled with.
        torch.testing.assert_close(log_prob[real], batch.old_log_prob[real], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(values.flatten()[real], batch.old_values[real], rtol=1e-5, atol=1e-5)
        assert torch.isfinite(log_prob).all() and torch.isfinite(entropy).all()  # padding rows included
        misaligned += int(not torch.allclose(moved_log_prob[real], batch.old_log_prob[real], rtol=1e-5, atol=1e-5))
    assert padded > 0, "no padding: the test did not exercise padded sequences"
    assert misaligned > 0, "moving the masks by one row changed nothing: the test could not catch a misalignment"


def test_padding_rows_are_scored_as_all_valid_but_real_empty_masks_still_raise():
    mask = torch.tensor([[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.int8)
    np.testing.assert_array_equal(open_padding_rows(mask).numpy(), [[0, 1, 0, 1], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert open_padding_rows(mask).dtype == torch.int8
    policy = make_policy("discrete")
    obs = {"observation": torch.rand(3, N), ACTION_MASK_KEY: mask}
    states = RNNStates(*[(torch.zeros(1, 3, 16), torch.zeros(1, 3, 16))] * 2)
    starts = torch.ones(3)
    with torch.no_grad():
        _, log_prob, entropy = policy.evaluate_actions(obs, torch.tensor([1, 2, 0]), states, starts)
        assert torch.isfinite(log_prob).all() and torch.isfinite(entropy).all()
        assert log_prob[2] == 0.0  # the only valid action of row 2
        # Outside the update an empty mask is an env bug, and says so.
        with pytest.raises(ValueError, match="no valid action"):
            policy(obs, states, starts)
        with pytest.raises(ValueError, match="no valid action"):
            policy.get_distribution(obs, states.pi, starts)


# --------------------------------------------------------------------------------------------------
# Features: the extractor never sees the action mask; the entity-attention extractor gets the visibility


class RecordingAttention(EntityAttentionExtractor):
    """EntityAttentionExtractor that records the keys it is given and whether any entity was hidden."""

    def __init__(self, observation_space: spaces.Dict, **kwargs: Any):
        super().__init__(observation_space, **kwargs)
        self.keys_seen: set[tuple[str, ...]] = set()
        self.saw_hidden = False

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        self.keys_seen.add(tuple(sorted(observations)))
        self.saw_hidden |= bool((observations["visibility"][:, 1:] == 0).any())
        return super().forward(observations)


class InvalidActionCounter(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.steps = self.invalid = 0

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            self.steps += 1
            self.invalid += bool(info["invalid_action"])
        return True


def test_entity_attention_under_recurrent_ppo_on_blinking_panda_grid():
    env = make_masked_vec_env("maskrl/PandaGrid-v0", 2, seed=0, env_kwargs={"blink_prob": 0.5, "max_steps": 20})
    model = RecurrentPPO(
        MaskedRecurrentActorCriticPolicy,
        env,
        n_steps=32,
        batch_size=32,
        n_epochs=1,
        seed=0,
        policy_kwargs={
            "features_extractor_class": RecordingAttention,
            "features_extractor_kwargs": {"embed_dim": 8, "n_heads": 2, "n_blocks": 1},
            **SMALL_LSTM,
        },
    )
    spread_logits(model.policy)
    counter = InvalidActionCounter()
    model.learn(128, callback=counter)
    extractor = model.policy.features_extractor
    assert model.policy.lstm_actor.input_size == extractor.features_dim == 16
    assert extractor.keys_seen == {("entities", "visibility")}  # the visibility reaches it, the action mask does not
    assert extractor.saw_hidden
    assert counter.steps == 128 and counter.invalid == 0
    obs = env.reset()
    actions, _ = model.predict(obs, None, np.ones(2, dtype=bool))
    assert obs[ACTION_MASK_KEY][np.arange(2), actions].all()
    env.close()


def test_clear_errors_for_observations_the_policy_cannot_use():
    with pytest.raises(ValueError, match="action_mask"):
        RecurrentPPO(MaskedRecurrentActorCriticPolicy, gym.make("CartPole-v1"), device="cpu")
    env = make_two_key_toy_env(n=N)
    with pytest.raises(ValueError, match="MaskedRecurrentMultiInputPolicy"):
        MaskedRecurrentActorCriticPolicy(env.observation_space, env.action_space, constant_lr)


def test_plain_ppo_refuses_the_recurrent_policy():
    # A recurrent policy needs RecurrentPPO's LSTM states: plain PPO fails at once rather than mid-training.
    with pytest.raises(TypeError):
        PPO(MaskedRecurrentActorCriticPolicy, toy_vec_env(n_envs=1), n_steps=8, batch_size=8).learn(8)


# --------------------------------------------------------------------------------------------------
# Save and load


def _play(model: RecurrentPPO, observations: list[dict[str, np.ndarray]], starts: list[np.ndarray]):
    """Actions and hidden states of ``model`` along a recorded sequence of observations and episode starts."""
    state, out = None, []
    for obs, start in zip(observations, starts, strict=True):
        actions, state = model.predict(obs, state, start, deterministic=True)
        out.append((actions, state[0].copy(), state[1].copy()))
    return out


def _record(model: RecurrentPPO, env, steps: int = 24) -> tuple[list, list]:
    observations, starts = [], []
    obs, start, state = env.reset(), np.ones(env.num_envs, dtype=bool), None
    for _ in range(steps):
        observations.append(obs)
        starts.append(start)
        actions, state = model.predict(obs, state, start, deterministic=False)
        obs, _, start, _ = env.step(actions)
    return observations, starts


def _assert_same_play(a: list, b: list) -> None:
    for (actions_a, h_a, c_a), (actions_b, h_b, c_b) in zip(a, b, strict=True):
        np.testing.assert_array_equal(actions_a, actions_b)
        np.testing.assert_array_equal(h_a, h_b)
        np.testing.assert_array_equal(c_a, c_b)


def test_save_and_load_keep_actions_and_states_identical(tmp_path):
    env = toy_vec_env("multidiscrete", n_envs=2, seed=5)
    model = RecurrentPPO(
        MaskedRecurrentActorCriticPolicy,
        env,
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        learning_rate=3e-3,
        seed=0,
        policy_kwargs={"lstm_hidden_size": 12, "n_lstm_layers": 2, "net_arch": [16]},
    )
    model.learn(64)
    spread_logits(model.policy)
    observations, starts = _record(model, env)
    expected = _play(model, observations, starts)
    for obs, (actions, _, _) in zip(observations, expected, strict=True):
        assert is_valid(obs[ACTION_MASK_KEY], actions, "multidiscrete").all()
    model.save(tmp_path / "model.zip")
    model.policy.save(tmp_path / "policy.pt")
    loaded = RecurrentPPO.load(tmp_path / "model.zip", device="cpu")
    assert type(loaded.policy) is MaskedRecurrentActorCriticPolicy
    _assert_same_play(_play(loaded, observations, starts), expected)
    # policy.save/load alone rebuilds the LSTM's shape (sb3-contrib's constructor parameters leave it out)
    policy = MaskedRecurrentActorCriticPolicy.load(tmp_path / "policy.pt", device="cpu")
    assert (policy.lstm_actor.hidden_size, policy.lstm_actor.num_layers) == (12, 2)
    loaded.policy = policy
    _assert_same_play(_play(loaded, observations, starts), expected)


def test_train_evaluate_safe_load_and_resume_from_the_command_line(tmp_path, capsys):
    train_main(
        [
            "--algo",
            "ppo_lstm",
            "--env",
            "maskrl/ToyMasked-v0",
            "--env-kwargs",
            "action_type=multibinary",
            "episode_length=6",
            "-n",
            "128",
            "--n-envs",
            "2",
            "--hyperparams",
            "n_steps=16",
            "batch_size=16",
            "n_epochs=1",
            "policy_kwargs={lstm_hidden_size: 8, net_arch: [8]}",
            "--eval-freq",
            "64",
            "--eval-episodes",
            "2",
            "--save-freq",
            "64",
            "--log-folder",
            str(tmp_path),
            "-v",
            "0",
        ]
    )
    (run_dir,) = (tmp_path / "ppo_lstm").iterdir()
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    assert config["hyperparams"]["policy"] == "maskrl.policies.recurrent:MaskedRecurrentActorCriticPolicy"
    assert json.loads((run_dir / "final_eval.json").read_text())["invalid_action_rate"] == 0.0

    # The safe loader rebuilds the model from config.yml and reads only the weights: same play as SB3's loader.
    safe = load_model_safely(run_dir / "final_model.zip")
    unsafe = RecurrentPPO.load(run_dir / "final_model.zip", device="cpu")
    assert type(safe) is RecurrentPPO and type(safe.policy) is MaskedRecurrentActorCriticPolicy
    env = make_masked_vec_env("maskrl/ToyMasked-v0", 2, seed=9, env_kwargs={"action_type": "multibinary"})
    observations, starts = _record(unsafe, env)
    _assert_same_play(_play(safe, observations, starts), _play(unsafe, observations, starts))

    evaluate_main([str(run_dir), "-n", "4", "--json", str(tmp_path / "eval.json")])
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["episodes"] == 4 and results["invalid_action_rate"] == 0.0

    train_main(["--resume", str(run_dir), "-n", "192", "-v", "0"])
    assert json.loads((run_dir / "final_eval.json").read_text())["num_timesteps"] == 192
    capsys.readouterr()


@pytest.mark.parametrize("algo", ["ppo_lstm", "ppo_lstm_nomask"])
def test_panda_grid_yaml_sections_train_and_evaluate(algo, tmp_path, capsys):
    train_main(
        [
            *("--algo", algo, "--env", "maskrl/PandaGrid-v0", "--env-kwargs", "blink_prob=0.5", "max_steps=20"),
            *("-n", "64", "--n-envs", "2", "--hyperparams", "n_steps=32", "batch_size=32", "n_epochs=1"),
            *("--eval-freq", "0", "--save-freq", "0", "--eval-episodes", "2", "--log-folder", str(tmp_path), "-v", "0"),
        ]
    )
    (run_dir,) = (tmp_path / algo).iterdir()
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    assert config["hyperparams"]["policy_kwargs"]["lstm_hidden_size"] == 64
    results = json.loads((run_dir / "final_eval.json").read_text())
    assert results["episodes"] == 2
    if algo == "ppo_lstm":
        assert results["invalid_action_rate"] == 0.0
    capsys.readouterr()


def test_registry_entries():
    masked, plain = get_algo("ppo_lstm"), get_algo("ppo_lstm_nomask")
    assert masked.algo_class is plain.algo_class is RecurrentPPO
    assert masked.sees_mask and not plain.sees_mask and not plain.needs_mask
    assert masked.policy == (MaskedRecurrentActorCriticPolicy, MaskedRecurrentMultiInputPolicy)
    assert spaces.Box in plain.supported_action_spaces() and spaces.Box not in masked.supported_action_spaces()


# --------------------------------------------------------------------------------------------------
# PandaGrid's blink_prob


def _random_walk(env: PandaGridEnv, seed: int, steps: int) -> list[tuple]:
    """(world state, reward, terminated, truncated, mask, blinked) along a seeded random walk over many episodes."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    out = []
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(int(rng.integers(5)))
        world = (env._panda, env._dragon, env._scorpion, tuple(env._wm), tuple(env._trees))
        out.append((world, reward, terminated, truncated, obs["action_mask"].tolist(), env._blinking))
        if terminated or truncated:
            env.reset()  # unseeded: the next layout comes from the world's random stream, which blinks must not touch
    return out


def test_blinking_changes_what_the_panda_sees_not_the_world():
    blinking, plain = PandaGridEnv(blink_prob=0.5), PandaGridEnv()
    a, b = _random_walk(blinking, 0, 400), _random_walk(plain, 0, 400)
    assert [row[:5] for row in a] == [row[:5] for row in b]
    blinks = sum(row[5] for row in a)
    assert 160 <= blinks <= 240  # Binomial(400, 0.5): mean 200, std 10
    assert not any(row[5] for row in b)


def test_a_blinked_observation_shows_only_the_panda():
    env = PandaGridEnv(blink_prob=0.6, render_mode="ansi")
    obs, _ = env.reset(seed=1)
    assert obs["visibility"][1:].any()  # the first observation is never blinked
    seen_blink = seen_open = False
    for step in range(60):
        mask = env.action_masks()
        obs, _, terminated, truncated, _ = env.step(int(np.flatnonzero(mask)[step % mask.sum()]))
        np.testing.assert_array_equal(obs["action_mask"], env.action_masks())
        if env._blinking:
            seen_blink = True
            assert obs["visibility"].tolist() == [1] + [0] * (env.max_entities - 1)
            assert not obs["entities"][1:].any() and obs["entities"][0].any()
            assert "(blink)" in env.render().splitlines()[0]
        else:
            seen_open = True
            assert obs["visibility"][1:].any()
        if terminated or truncated:
            obs, _ = env.reset()
    assert seen_blink and seen_open


def test_a_blinked_image_is_fog_except_the_panda():
    env = PandaGridEnv(blink_prob=0.99, obs_mode="image", image_cell_px=1)
    env.reset(seed=2)
    obs, *_ = env.step(0)
    assert env._blinking
    image = obs["observation"].reshape(-1, 3)
    panda = env._panda
    fog = np.array([60, 75, 55], dtype=np.uint8)
    assert (np.delete(image, panda, axis=0) == fog).all()
    np.testing.assert_array_equal(image[panda], [255, 255, 255])


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan")])
def test_blink_prob_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="blink_prob"):
        PandaGridEnv(blink_prob=bad)


# --------------------------------------------------------------------------------------------------
# Learning check: memory plus masks


class CueRecallEnv(gym.Env):
    """Remember a cue over a delay: the recurrent agent's task that no memoryless policy can solve.

    Step 0 shows one of ``n_cues`` cues (one-hot); the next ``delay`` observations are blank and only "wait"
    (action 0) is valid; the last observation says "answer", "wait" is masked, and so is one wrong answer (drawn
    at random). Answering the cue (action ``cue + 1``) gives +1. A memoryless policy scores ``1 / (n_cues - 1)``
    at best; with memory, 1. Strict: a masked action raises.
    """

    def __init__(self, n_cues: int = 4, delay: int = 3):
        self.n_cues, self.delay = n_cues, delay
        self.action_space = spaces.Discrete(n_cues + 1)
        self.observation_space = spaces.Dict(
            {
                "observation": spaces.Box(0.0, 1.0, (n_cues + 1,), np.float32),
                ACTION_MASK_KEY: spaces.MultiBinary(n_cues + 1),
            }
        )

    def _obs(self) -> dict[str, np.ndarray]:
        features = np.zeros(self.n_cues + 1, dtype=np.float32)
        mask = np.zeros(self.n_cues + 1, dtype=np.int8)
        if self._t == 0:
            features[self._cue] = 1.0
        if self._t < self.delay:
            mask[0] = 1
        else:
            features[-1] = 1.0
            mask[1:] = 1
            mask[self._decoy + 1] = 0
        return {"observation": features, ACTION_MASK_KEY: mask}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._cue = int(self.np_random.integers(self.n_cues))
        self._decoy = (self._cue + int(self.np_random.integers(1, self.n_cues))) % self.n_cues
        self._last = self._obs()
        return self._last, {}

    def step(self, action):
        if not self._last[ACTION_MASK_KEY][int(action)]:
            raise InvalidActionError(f"masked action {action}")
        self._t += 1
        if self._t <= self.delay:
            self._last = self._obs()
            return self._last, 0.0, False, False, {}
        return self._last, float(int(action) == self._cue + 1), True, False, {}


def train_cue_recall(seed: int, recurrent: bool = True, timesteps: int = 4096) -> float:
    """Mean deterministic return over 200 evaluation episodes after training (``recurrent=False``: masked PPO)."""
    from maskrl.policies import MaskedActorCriticPolicy

    env = sb3_make_vec_env(CueRecallEnv, n_envs=8, seed=seed, vec_env_cls=DummyVecEnv)
    common = {"n_steps": 32, "batch_size": 64, "n_epochs": 4, "learning_rate": 3e-3, "gamma": 0.9, "seed": seed}
    if recurrent:
        model = RecurrentPPO(MaskedRecurrentActorCriticPolicy, env, policy_kwargs={"lstm_hidden_size": 32}, **common)
    else:
        model = PPO(MaskedActorCriticPolicy, env, **common)
    model.learn(timesteps)
    eval_env = sb3_make_vec_env(CueRecallEnv, n_envs=1, seed=10_000 + seed, vec_env_cls=DummyVecEnv)
    mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=200, deterministic=True)
    return float(mean_return)


def test_masked_recurrent_ppo_learns_to_remember():
    # Measured spread (train_cue_recall, 4096 steps, seeds 0-4, each in a fresh process with one torch thread):
    # 1.00 for every seed, both with torch's native kernels (AVX512) and with ATEN_CPU_CAPABILITY=default (scalar
    # kernels). Failing configurations, seeds 0-2: memoryless masked PPO 0.31-0.38 (the bound is 1/3),
    # masks misaligned by one row in evaluate_actions 0.30-0.36. At 12k steps the curves stay at 1.0 but dip once in
    # a while (to 0.57-0.85 at single checkpoints), so the budget is kept short; 0.75 leaves a wide margin on both
    # sides. The env is strict: a masked action would raise.
    assert train_cue_recall(seed=0) > 0.75
