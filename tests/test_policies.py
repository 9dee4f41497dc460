"""MaskedActorCriticPolicy / MaskedMultiInputPolicy with unchanged SB3 algorithms and tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
from torch import nn

from maskrl.envs.toy import ToyMaskedEnv, make_dict_toy_env, make_two_key_toy_env, random_return
from maskrl.envs.wrappers import DropMasks
from maskrl.policies import MaskedActorCriticPolicy, MaskedMultiInputPolicy
from maskrl.policies.actor_critic import split_observation_space

ROOT = Path(__file__).resolve().parents[1]
ACTION_TYPES = ["discrete", "multidiscrete"]
N = 4  # choices per sub-action of the toy env
N_SUB = 2  # sub-actions of the multidiscrete toy env


def constant_lr(_: float) -> float:
    return 3e-4


def vec_env(make=make_dict_toy_env, action_type="discrete", n_envs=2, seed=0, vec_env_cls=DummyVecEnv, **kwargs):
    env_kwargs = {"action_type": action_type, "n": N, "n_sub": N_SUB, **kwargs}
    return make_vec_env(make, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs, vec_env_cls=vec_env_cls)


def assert_no_invalid_actions(env, min_steps: int) -> None:
    invalid = env.get_attr("invalid_actions")
    steps = env.get_attr("total_steps")
    assert sum(steps) >= min_steps, f"the envs were hardly stepped: {steps}"
    assert invalid == [0] * len(invalid), f"invalid actions taken: {invalid} in {steps} steps"


def make_policy(action_type="discrete", policy_class=MaskedActorCriticPolicy, make=make_dict_toy_env, **kwargs):
    env = make(action_type=action_type, n=N, n_sub=N_SUB)
    policy = policy_class(env.observation_space, env.action_space, constant_lr, **kwargs)
    # Far-from-uniform logits, so that masking visibly changes the distribution.
    torch.manual_seed(0)
    nn.init.normal_(policy.action_net.weight, std=2.0)
    nn.init.normal_(policy.action_net.bias, std=2.0)
    return policy.eval()


def random_masks(rng: np.random.Generator, batch: int, action_type: str, min_valid: int = 1) -> np.ndarray:
    """Flat int8 masks with 1..N valid choices per sub-action; every fourth row has a single valid choice."""
    n_sub = 1 if action_type == "discrete" else N_SUB
    masks = np.zeros((batch, n_sub, N), dtype=np.int8)
    for row in range(batch):
        for sub in range(n_sub):
            k = 1 if row % 4 == 0 else rng.integers(min_valid, N + 1)
            masks[row, sub, rng.choice(N, size=k, replace=False)] = 1
    return masks.reshape(batch, n_sub * N)


def random_obs(rng: np.random.Generator, batch: int, action_type: str, min_valid: int = 1) -> dict[str, np.ndarray]:
    n_sub = 1 if action_type == "discrete" else N_SUB
    return {
        "observation": rng.random((batch, n_sub * N)).astype(np.float32),
        "action_mask": random_masks(rng, batch, action_type, min_valid),
    }


def sub_masks(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """(batch, n_sub, N) boolean view of flat masks."""
    return np.asarray(mask).reshape(len(mask), -1, N).astype(bool)


def sub_probs(dist) -> np.ndarray:
    """(batch, n_sub, N) probabilities of an SB3 masked distribution."""
    inner = dist.distribution
    parts = inner.distributions if hasattr(inner, "distributions") else [inner]
    return torch.stack([part.probs for part in parts], dim=1).detach().numpy()


def action_logits(policy, obs_tensor) -> torch.Tensor:
    """Unmasked logits (batch, n_sub, N), computed by hand from the policy's modules."""
    features = policy.extract_features(obs_tensor)
    if not policy.share_features_extractor:
        features = features[0]
    return policy.action_net(policy.mlp_extractor.forward_actor(features)).reshape(len(features), -1, N)


class RecordingExtractor(BaseFeaturesExtractor):
    """Linear features extractor that records the space it was built for and the inputs it receives."""

    def __init__(self, observation_space: spaces.Space, features_dim: int = 8):
        super().__init__(observation_space, features_dim)
        self.built_for = observation_space
        self.linear = nn.Linear(get_flattened_obs_dim(observation_space), features_dim)
        self.inputs: list[tuple[str, tuple[int, ...]]] = []

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        assert isinstance(observations, torch.Tensor), f"got {type(observations)}"
        self.inputs.append(("tensor", tuple(observations.shape)))
        return torch.tanh(self.linear(observations.flatten(1)))


class RecordingCombinedExtractor(CombinedExtractor):
    """CombinedExtractor that records the keys of the observations it receives."""

    def __init__(self, observation_space: spaces.Dict):
        super().__init__(observation_space)
        self.built_for = observation_space
        self.keys_seen: list[tuple[str, ...]] = []

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        self.keys_seen.append(tuple(sorted(observations)))
        return super().forward(observations)


# --------------------------------------------------------------------------------------------------
# Unchanged SB3 algorithms


ALGOS = {
    "PPO": (PPO, {"n_steps": 32, "batch_size": 32, "n_epochs": 2}),
    "A2C": (A2C, {"n_steps": 8}),
}


@pytest.fixture(scope="module")
def shared_vec_envs():
    """Vec envs by (action type, vec env class), shared by the algorithms: starting subprocesses is slow."""
    envs = {}

    def get(action_type, vec_env_cls):
        key = (action_type, vec_env_cls)
        if key not in envs:
            envs[key] = vec_env(action_type=action_type, vec_env_cls=vec_env_cls)
        return envs[key]

    yield get
    for env in envs.values():
        env.close()


@pytest.mark.parametrize("vec_env_cls", [DummyVecEnv, SubprocVecEnv], ids=["dummy", "subproc"])
@pytest.mark.parametrize("action_type", ACTION_TYPES)
@pytest.mark.parametrize("algo", list(ALGOS))
def test_sb3_algorithms_train_without_invalid_actions(shared_vec_envs, algo, action_type, vec_env_cls):
    algo_class, hyperparams = ALGOS[algo]
    env = shared_vec_envs(action_type, vec_env_cls)
    assert isinstance(env, vec_env_cls)
    steps_before = sum(env.get_attr("total_steps"))
    model = algo_class(MaskedActorCriticPolicy, env, seed=0, device="cpu", **hyperparams)
    model.learn(256)
    assert model.num_timesteps >= 256
    assert sum(env.get_attr("total_steps")) >= steps_before + 256
    assert_no_invalid_actions(env, min_steps=256)


def test_invalid_action_counter_catches_unmasked_agents():
    # Control for the test above: the same env, mask dropped, plain SB3 policy -> invalid actions.
    env = make_vec_env(lambda: DropMasks(make_dict_toy_env(n=N)), n_envs=2, seed=0)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    assert sum(env.get_attr("invalid_actions")) > 0


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_ppo_learns_toy_env(action_type):
    env = vec_env(action_type=action_type, seed=0)
    model = PPO(
        MaskedActorCriticPolicy, env, n_steps=64, batch_size=64, n_epochs=4, learning_rate=3e-3, seed=0, device="cpu"
    )
    model.learn(2048)
    eval_env = vec_env(action_type=action_type, n_envs=1, seed=123)
    mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=20, deterministic=True)
    # random valid play scores 8/3 ~ 2.7, the optimum is 8
    assert mean_return > random_return(N, 8) + 3.0, mean_return
    assert_no_invalid_actions(env, min_steps=2048)
    assert_no_invalid_actions(eval_env, min_steps=160)


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_evaluate_policy_uses_the_mask(action_type):
    env = vec_env(action_type=action_type, n_envs=1, seed=1)
    model = PPO(MaskedActorCriticPolicy, env, n_steps=32, batch_size=32, seed=0, device="cpu")
    nn.init.normal_(model.policy.action_net.bias, std=5.0)  # a strongly preferred (sometimes masked) action
    for deterministic in (True, False):
        returns, lengths = evaluate_policy(
            model, env, n_eval_episodes=6, deterministic=deterministic, return_episode_rewards=True
        )
        assert len(returns) == 6
        assert lengths == [8] * 6
        assert all(0.0 <= r <= 8.0 for r in returns)
    assert_no_invalid_actions(env, min_steps=96)


def test_eval_callback_writes_results(tmp_path):
    env = vec_env(seed=0)
    eval_env = vec_env(n_envs=1, seed=50)
    model = PPO(MaskedActorCriticPolicy, env, n_steps=32, batch_size=32, n_epochs=2, seed=0, device="cpu")
    callback = EvalCallback(
        eval_env, n_eval_episodes=3, eval_freq=32, log_path=str(tmp_path), best_model_save_path=str(tmp_path), verbose=0
    )
    model.learn(192, callback=callback)
    results = np.load(tmp_path / "evaluations.npz")
    assert len(results["timesteps"]) >= 2
    assert results["results"].shape == (len(results["timesteps"]), 3)
    assert (results["ep_lengths"] == 8).all()
    assert (tmp_path / "best_model.zip").is_file()
    best = PPO.load(tmp_path / "best_model.zip", device="cpu")
    assert isinstance(best.policy, MaskedActorCriticPolicy)
    assert_no_invalid_actions(eval_env, min_steps=48)


def test_maskable_ppo_trains_on_toy_env():
    # sb3-contrib compatibility: the same toy env through its action_masks() method.
    for action_type in ACTION_TYPES:
        env = make_vec_env(ToyMaskedEnv, n_envs=2, seed=0, env_kwargs={"action_type": action_type, "n": N})
        model = MaskablePPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=2, seed=0, device="cpu")
        model.learn(128)
        assert_no_invalid_actions(env, min_steps=128)


# --------------------------------------------------------------------------------------------------
# The features extractor never sees the mask


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_features_extractor_space_is_the_observation_subspace(action_type):
    policy = make_policy(action_type)
    env = make_dict_toy_env(action_type=action_type, n=N, n_sub=N_SUB)
    assert isinstance(policy.features_extractor, FlattenExtractor)
    assert policy.features_extractor._observation_space == env.observation_space["observation"]
    assert policy.features_dim == N * (1 if action_type == "discrete" else N_SUB)
    assert split_observation_space(env.observation_space, env.action_space) == env.observation_space["observation"]
    assert split_observation_space(env.observation_space, env.action_space, keep_dict=True) == spaces.Dict(
        {"observation": env.observation_space["observation"]}
    )


@pytest.mark.parametrize("share", [True, False], ids=["shared", "separate"])
@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_mask_changes_distribution_not_values_or_features(action_type, share):
    policy = make_policy(action_type, features_extractor_class=RecordingExtractor, share_features_extractor=share)
    rng = np.random.default_rng(0)
    obs = random_obs(rng, 32, action_type)
    all_valid = {**obs, "action_mask": np.ones_like(obs["action_mask"])}
    with torch.no_grad():
        t_masked, _ = policy.obs_to_tensor(obs)
        t_open, _ = policy.obs_to_tensor(all_valid)
        for a, b in [
            (policy.predict_values(t_masked), policy.predict_values(t_open)),
            (policy(t_masked)[1], policy(t_open)[1]),
        ]:
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        features_masked, features_open = policy.extract_features(t_masked), policy.extract_features(t_open)
        if share:
            features_masked, features_open = [features_masked], [features_open]
        for a, b in zip(features_masked, features_open, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        p_masked = sub_probs(policy.get_distribution(t_masked))
        p_open = sub_probs(policy.get_distribution(t_open))
    mask = sub_masks(obs["action_mask"])
    assert not np.allclose(p_masked, p_open)
    # masking = renormalising the unmasked distribution over the valid actions
    expected = np.where(mask, p_open, 0.0)
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(p_masked, expected, rtol=1e-5, atol=1e-6)
    extractors = {id(policy.pi_features_extractor): policy.pi_features_extractor}
    extractors[id(policy.vf_features_extractor)] = policy.vf_features_extractor
    assert len(extractors) == (1 if share else 2)
    obs_dim = obs["observation"].shape[1]
    for extractor in extractors.values():
        assert extractor.built_for == spaces.Box(0.0, 1.0, (obs_dim,), np.float32)
        assert extractor.inputs
        assert all(shape[1:] == (obs_dim,) for _, shape in extractor.inputs), extractor.inputs


def test_features_extractor_never_sees_mask_during_training():
    env = vec_env(action_type="multidiscrete")
    model = PPO(
        MaskedActorCriticPolicy,
        env,
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"features_extractor_class": RecordingExtractor},
    )
    model.learn(64)
    inputs = model.policy.features_extractor.inputs
    assert len(inputs) > 8
    assert {shape[1:] for _, shape in inputs} == {(N * N_SUB,)}


def test_share_features_extractor_false_trains_and_separates_extractors():
    env = vec_env()
    model = PPO(
        MaskedActorCriticPolicy,
        env,
        n_steps=32,
        batch_size=32,
        n_epochs=2,
        seed=0,
        device="cpu",
        policy_kwargs={"share_features_extractor": False, "features_extractor_class": RecordingExtractor},
    )
    model.learn(128)
    assert_no_invalid_actions(env, min_steps=128)
    policy = model.policy
    assert policy.pi_features_extractor is not policy.vf_features_extractor
    obs = random_obs(np.random.default_rng(1), 16, "discrete")
    obs_tensor, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        values, probs = policy.predict_values(obs_tensor), sub_probs(policy.get_distribution(obs_tensor))
        policy.vf_features_extractor.linear.weight.add_(1.0)  # only the critic's extractor changes
        values_vf, probs_vf = policy.predict_values(obs_tensor), sub_probs(policy.get_distribution(obs_tensor))
        policy.pi_features_extractor.linear.weight.add_(1.0)  # now the actor's too
        values_pi, probs_pi = policy.predict_values(obs_tensor), sub_probs(policy.get_distribution(obs_tensor))
    assert not torch.allclose(values, values_vf)
    np.testing.assert_array_equal(probs, probs_vf)
    torch.testing.assert_close(values_vf, values_pi, rtol=0, atol=0)
    assert not np.allclose(probs_vf, probs_pi)
    assert (probs_pi[~sub_masks(obs["action_mask"])] == 0).all()


# --------------------------------------------------------------------------------------------------
# predict / get_distribution / evaluate_actions


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_predict_returns_only_valid_actions(action_type):
    policy = make_policy(action_type)
    rng = np.random.default_rng(2)
    obs = random_obs(rng, 200, action_type)
    obs_tensor, _ = policy.obs_to_tensor(obs)
    mask = sub_masks(obs["action_mask"])
    # Mask the unmasked favourite in every row that has another valid choice, so that ignoring the
    # mask would be caught on most rows.
    with torch.no_grad():
        favourite = action_logits(policy, obs_tensor).argmax(-1).numpy()
    rows, subs = np.nonzero(mask.sum(-1) > 1)
    mask[rows, subs, favourite[rows, subs]] = False
    obs["action_mask"] = mask.reshape(len(mask), -1).astype(np.int8)
    single = mask.sum(-1) == 1
    assert single.any() and (~single).any()

    for deterministic in (True, False):
        actions, state = policy.predict(obs, deterministic=deterministic)
        assert state is None
        assert actions.shape == ((200,) if action_type == "discrete" else (200, N_SUB))
        chosen = actions.reshape(200, -1)
        valid = np.take_along_axis(mask, chosen[..., None], axis=-1)[..., 0]
        assert valid.all(), f"{(~valid).sum()} invalid actions"
        # a single valid choice must be taken
        only = mask.argmax(-1)
        np.testing.assert_array_equal(chosen[single], only[single])

    # unvectorised observation
    one = {key: value[1] for key, value in obs.items()}
    action, _ = policy.predict(one, deterministic=True)
    assert np.shape(action) == (() if action_type == "discrete" else (N_SUB,))
    assert mask[1][np.arange(mask.shape[1]), np.reshape(action, -1)].all()


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_deterministic_predict_is_the_best_valid_action(action_type):
    policy = make_policy(action_type)
    obs = random_obs(np.random.default_rng(3), 64, action_type)
    obs_tensor, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        logits = action_logits(policy, obs_tensor).numpy()
    best_valid = np.where(sub_masks(obs["action_mask"]), logits, -np.inf).argmax(-1)
    actions, _ = policy.predict(obs, deterministic=True)
    np.testing.assert_array_equal(actions.reshape(64, -1), best_valid)


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_get_distribution_gives_zero_probability_to_masked_actions(action_type):
    policy = make_policy(action_type)
    obs = random_obs(np.random.default_rng(4), 64, action_type)
    obs_tensor, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        dist = policy.get_distribution(obs_tensor)
        probs = sub_probs(dist)
        samples = dist.sample().reshape(64, -1).numpy()
    mask = sub_masks(obs["action_mask"])
    assert (probs[~mask] == 0).all()
    assert (probs[mask] > 0).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    assert np.take_along_axis(mask, samples[..., None], axis=-1).all()


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_evaluate_actions_entropy_and_log_prob_over_valid_actions(action_type):
    policy = make_policy(action_type)
    obs = random_obs(np.random.default_rng(5), 64, action_type, min_valid=2)
    obs_tensor, _ = policy.obs_to_tensor(obs)
    mask = sub_masks(obs["action_mask"])
    actions, _ = policy.predict(obs, deterministic=False)
    with torch.no_grad():
        logits = action_logits(policy, obs_tensor).double().numpy()
        values, log_prob, entropy = policy.evaluate_actions(obs_tensor, torch.as_tensor(actions))
        assert values.shape == (64, 1)
        torch.testing.assert_close(values, policy.predict_values(obs_tensor))
    chosen = actions.reshape(64, -1)
    expected_entropy = np.zeros(64)
    expected_log_prob = np.zeros(64)
    for row in range(64):
        for sub in range(mask.shape[1]):
            valid_logits = logits[row, sub][mask[row, sub]]
            log_p = valid_logits - np.logaddexp.reduce(valid_logits)
            expected_entropy[row] += -(np.exp(log_p) * log_p).sum()
            expected_log_prob[row] += log_p[np.flatnonzero(mask[row, sub]).tolist().index(chosen[row, sub])]
    np.testing.assert_allclose(entropy.numpy(), expected_entropy, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(log_prob.numpy(), expected_log_prob, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Save and load


LOAD_SCRIPT = """
import json, sys
import numpy as np
from stable_baselines3 import PPO
out = []
for model_path, observation_path, mask_path in zip(*[iter(sys.argv[1:])] * 3):
    model = PPO.load(model_path, device="cpu")
    obs = {"observation": np.load(observation_path), "action_mask": np.load(mask_path)}
    actions, _ = model.predict(obs, deterministic=True)
    obs_tensor, _ = model.policy.obs_to_tensor(obs)
    values = model.policy.predict_values(obs_tensor).detach().numpy()
    out.append({"policy": type(model.policy).__name__, "actions": actions.tolist(), "values": values.tolist()})
print(json.dumps(out))
"""


def test_save_and_load_in_a_fresh_process(tmp_path):
    # One fresh process loads both models (Discrete and MultiDiscrete): starting it is the slow part.
    args, expected = [], []
    for action_type in ACTION_TYPES:
        env = vec_env(action_type=action_type)
        model = PPO(
            MaskedActorCriticPolicy,
            env,
            n_steps=32,
            batch_size=32,
            n_epochs=2,
            learning_rate=3e-3,
            seed=0,
            device="cpu",
        )
        model.learn(128)
        nn.init.normal_(model.policy.action_net.weight, std=2.0)  # make the argmax depend on the mask
        obs = random_obs(np.random.default_rng(6), 50, action_type)
        paths = [tmp_path / f"{action_type}_{name}" for name in ("model.zip", "observation.npy", "action_mask.npy")]
        model.save(paths[0])
        np.save(paths[1], obs["observation"])
        np.save(paths[2], obs["action_mask"])
        args += [str(path) for path in paths]
        actions, _ = model.predict(obs, deterministic=True)
        chosen = actions.reshape(50, -1)
        assert np.take_along_axis(sub_masks(obs["action_mask"]), chosen[..., None], axis=-1).all()
        obs_tensor, _ = model.policy.obs_to_tensor(obs)
        with torch.no_grad():
            expected.append((actions, model.policy.predict_values(obs_tensor).numpy()))

    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(loaded) == len(ACTION_TYPES)
    for (actions, values), out in zip(expected, loaded, strict=True):
        assert out["policy"] == "MaskedActorCriticPolicy"
        np.testing.assert_array_equal(np.array(out["actions"]), actions)
        np.testing.assert_allclose(np.array(out["values"]), values, rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# MaskedMultiInputPolicy


def test_multi_input_policy_on_two_feature_keys():
    env = vec_env(make=make_two_key_toy_env, action_type="multidiscrete")
    model = PPO(
        MaskedMultiInputPolicy,
        env,
        n_steps=32,
        batch_size=32,
        n_epochs=2,
        seed=0,
        device="cpu",
        policy_kwargs={"features_extractor_class": RecordingCombinedExtractor},
    )
    model.learn(128)
    assert_no_invalid_actions(env, min_steps=128)
    extractor = model.policy.features_extractor
    assert isinstance(extractor, CombinedExtractor)
    assert set(extractor.built_for.spaces) == {"observation", "time"}
    assert set(extractor.keys_seen) == {("observation", "time")}
    obs = env.reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert sub_masks(obs["action_mask"])[np.arange(2)[:, None], np.arange(N_SUB), actions].all()


def test_multi_input_policy_save_and_load(tmp_path):
    policy = make_policy("multidiscrete", policy_class=MaskedMultiInputPolicy, make=make_two_key_toy_env)
    policy.save(tmp_path / "policy.pt")
    loaded = MaskedMultiInputPolicy.load(tmp_path / "policy.pt", device="cpu")
    assert type(loaded.features_extractor) is CombinedExtractor
    rng = np.random.default_rng(7)
    obs = {**random_obs(rng, 20, "multidiscrete"), "time": rng.random((20, 1)).astype(np.float32)}
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], policy.predict(obs, deterministic=True)[0]
    )


def test_multi_input_policy_default_extractor_and_single_key():
    for make in (make_two_key_toy_env, make_dict_toy_env):
        policy = make_policy(policy_class=MaskedMultiInputPolicy, make=make)
        assert type(policy.features_extractor) is CombinedExtractor
        expected = {"observation", "time"} if make is make_two_key_toy_env else {"observation"}
        assert set(policy.features_extractor._observation_space.spaces) == expected
        obs = make(n=N).reset(seed=0)[0]
        batch = {key: np.stack([value, value]) for key, value in obs.items()}
        batch["action_mask"][1] = 0
        batch["action_mask"][1, 2] = 1
        actions, _ = policy.predict(batch, deterministic=True)
        assert batch["action_mask"][0, actions[0]] == 1
        assert actions[1] == 2


# --------------------------------------------------------------------------------------------------
# Clear errors


def box_space(n: int = N) -> spaces.Box:
    return spaces.Box(0.0, 1.0, (n,), np.float32)


@pytest.mark.parametrize(
    "observation_space",
    [
        box_space(),
        spaces.Dict({"observation": box_space()}),
        spaces.Dict({"observation": box_space(), "mask": spaces.MultiBinary(N)}),
    ],
    ids=["box", "dict-without-mask", "dict-misnamed-mask"],
)
def test_missing_action_mask_is_a_clear_error(observation_space):
    with pytest.raises(ValueError, match="action_mask"):
        MaskedActorCriticPolicy(observation_space, spaces.Discrete(N), constant_lr)


def test_box_observation_env_is_refused_by_ppo():
    with pytest.raises(ValueError, match="action_mask"):
        PPO(MaskedActorCriticPolicy, ToyMaskedEnv(n=N), device="cpu")


@pytest.mark.parametrize(
    ("action_space", "mask_shape", "expected"),
    [
        (spaces.Discrete(N), (N + 1,), (N,)),
        (spaces.MultiDiscrete([N, 3]), (N,), (N + 3,)),
        (spaces.MultiDiscrete([N, 3]), (2, N), (N + 3,)),
    ],
)
def test_wrong_mask_size_is_a_clear_error(action_space, mask_shape, expected):
    observation_space = spaces.Dict({"observation": box_space(), "action_mask": spaces.MultiBinary(list(mask_shape))})
    with pytest.raises(ValueError, match="action_mask") as info:
        MaskedActorCriticPolicy(observation_space, action_space, constant_lr)
    assert str(mask_shape) in str(info.value)
    assert str(expected) in str(info.value)


def test_several_feature_keys_with_flatten_extractor_suggests_multi_input_policy():
    env = make_two_key_toy_env(n=N)
    with pytest.raises(ValueError, match="MaskedMultiInputPolicy"):
        MaskedActorCriticPolicy(env.observation_space, env.action_space, constant_lr)
    with pytest.raises(ValueError, match="MaskedMultiInputPolicy"):
        PPO(MaskedActorCriticPolicy, make_two_key_toy_env(n=N), device="cpu")


def test_unwrapped_env_without_mask_is_refused():
    env = gym.make("CartPole-v1")
    with pytest.raises(ValueError, match="action_mask"):
        PPO(MaskedActorCriticPolicy, env, device="cpu")
