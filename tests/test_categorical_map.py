"""Tests for the grid of per-cell categoricals (CategoricalMap) and the GridNet policy.

The references are independent per-agent ``torch.distributions.Categorical`` (or ``MaskedCategorical`` with
action masks) built cell by cell in a Python loop, so they share no code path with the vectorised map.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3 import PPO
from torch.distributions import Categorical

from maskrl.policies.distributions import CategoricalMap, MaskedCategorical
from maskrl.policies.gridnet import GridNetPolicy
from maskrl.policies.sb3_distributions import CategoricalMapDistribution


def random_case(
    batch: int = 3,
    n_actions: int = 5,
    height: int = 4,
    width: int = 3,
    with_action_mask: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits, a bool agent mask (about half the cells) and an action mask with a valid action per agent cell."""
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, n_actions, height, width, generator=gen) * 3).to(dtype)
    agents = torch.rand(batch, height, width, generator=gen) < 0.5
    agents[0, 0, 0] = True  # at least one agent in the first sample
    if not with_action_mask:
        return logits, agents, None
    actions = torch.rand(batch, n_actions, height, width, generator=gen) < 0.5
    forced = torch.randint(n_actions, (batch, height, width), generator=gen)
    actions.scatter_(1, forced.unsqueeze(1), True)
    actions &= agents.unsqueeze(1)  # empty cells: no valid action at all, which must be allowed
    return logits, agents, actions


def per_agent_reference(logits, agents, action_mask, actions):
    """Sum of per-agent log-probs and mean of per-agent entropies, one Categorical per agent cell."""
    log_probs, entropies = [], []
    for b in range(logits.shape[0]):
        lp, ent = [], []
        for y, x in agents[b].nonzero().tolist():
            cell_logits = logits[b, :, y, x]
            if action_mask is None:
                dist = Categorical(logits=cell_logits)
            else:
                dist = MaskedCategorical(cell_logits, action_mask[b, :, y, x])
            lp.append(dist.log_prob(actions[b, y, x]))
            ent.append(dist.entropy())
        log_probs.append(torch.stack(lp).sum() if lp else torch.zeros((), dtype=logits.dtype))
        entropies.append(torch.stack(ent).mean() if ent else torch.zeros((), dtype=logits.dtype))
    return torch.stack(log_probs), torch.stack(entropies)


# ---------------------------------------------------------------------------------------------- CategoricalMap


@pytest.mark.parametrize("with_action_mask", [False, True])
def test_matches_independent_per_agent_categoricals(with_action_mask):
    logits, agents, action_mask = random_case(with_action_mask=with_action_mask)
    dist = CategoricalMap(logits, agents, action_mask)
    actions = dist.sample()
    ref_lp, ref_ent = per_agent_reference(logits, agents, action_mask, actions)
    torch.testing.assert_close(dist.log_prob(actions), ref_lp)
    torch.testing.assert_close(dist.entropy(), ref_ent)
    # Arbitrary (valid) actions, not only sampled ones
    other = torch.randint(5, actions.shape)
    if action_mask is not None:
        other = torch.where(action_mask.gather(1, other.unsqueeze(1)).squeeze(1), other, dist.mode)
    torch.testing.assert_close(dist.log_prob(other), per_agent_reference(logits, agents, action_mask, other)[0])


@pytest.mark.parametrize("fill", [float("nan"), float("inf"), -float("inf"), 1e30, -1e30])
def test_independent_of_empty_cells_logits(fill):
    logits, agents, action_mask = random_case()
    dist = CategoricalMap(logits, agents, action_mask)
    actions = dist.sample()
    changed = torch.where(agents.unsqueeze(1), logits, fill)
    other = CategoricalMap(changed, agents, action_mask)
    # Actions in empty cells are ignored too
    noisy_actions = torch.where(agents, actions, 99)
    assert torch.equal(other.log_prob(noisy_actions), dist.log_prob(actions))
    assert torch.equal(other.entropy(), dist.entropy())
    assert torch.isfinite(other.log_prob(actions)).all() and torch.isfinite(other.entropy()).all()
    assert torch.equal(other.mode, dist.mode)


def test_independent_of_padding_with_empty_cells():
    logits, agents, action_mask = random_case(height=3, width=3)
    dist = CategoricalMap(logits, agents, action_mask)
    actions = dist.mode
    pad = (1, 2, 0, 3)  # left, right, top, bottom
    padded = CategoricalMap(
        torch.nn.functional.pad(logits, pad, value=7.0),
        torch.nn.functional.pad(agents, pad, value=False),
        torch.nn.functional.pad(action_mask, pad, value=False),
    )
    padded_actions = torch.nn.functional.pad(actions, pad, value=3)
    torch.testing.assert_close(padded.log_prob(padded_actions), dist.log_prob(actions))
    torch.testing.assert_close(padded.entropy(), dist.entropy())
    assert torch.equal(padded.mode[:, 0:3, 1:4], actions)


@pytest.mark.parametrize("with_action_mask", [False, True])
def test_gradients_reach_only_agent_cells_and_valid_actions(with_action_mask):
    logits, agents, action_mask = random_case(with_action_mask=with_action_mask)
    logits.requires_grad_(True)
    dist = CategoricalMap(logits, agents, action_mask)
    (dist.log_prob(dist.sample()).sum() + dist.entropy().sum()).backward()
    grad = logits.grad
    assert torch.isfinite(grad).all()
    allowed = agents.unsqueeze(1).expand_as(grad)
    if action_mask is not None:
        allowed = allowed & action_mask
    assert torch.equal(grad[~allowed], torch.zeros_like(grad[~allowed]))
    assert (grad[allowed] != 0).float().mean() > 0.9  # reaches (almost) every valid logit of an agent cell


def test_gradients_zero_even_with_nan_in_empty_cells():
    logits, agents, action_mask = random_case()
    logits = torch.where(agents.unsqueeze(1), logits, float("nan")).requires_grad_(True)
    dist = CategoricalMap(logits, agents, action_mask)
    (dist.log_prob(dist.mode).sum() + dist.entropy().sum()).backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[~agents.unsqueeze(1).expand_as(logits)] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_kind", ["bool", "int8", "numpy"])
def test_shapes_and_dtypes(dtype, mask_kind):
    logits, agents, action_mask = random_case(batch=2, n_actions=4, height=3, width=5, dtype=dtype)
    convert = {
        "bool": lambda m: m,
        "int8": lambda m: m.to(torch.int8),
        "numpy": lambda m: m.numpy().astype(np.int8),
    }[mask_kind]
    dist = CategoricalMap(logits, convert(agents), convert(action_mask))
    assert dist.batch_shape == (2,) and dist.event_shape == (3, 5)
    sample = dist.sample()
    assert sample.shape == (2, 3, 5) and sample.dtype == torch.int64
    assert dist.sample((7,)).shape == (7, 2, 3, 5)
    assert dist.mode.shape == (2, 3, 5) and dist.mode.dtype == torch.int64
    assert dist.log_prob(sample).shape == (2,) and dist.log_prob(sample).dtype == dtype
    assert dist.entropy().shape == (2,) and dist.entropy().dtype == dtype
    assert (sample[~agents] == 0).all() and (dist.mode[~agents] == 0).all()
    reference = CategoricalMap(logits, agents, action_mask)
    assert torch.equal(dist.log_prob(sample), reference.log_prob(sample))


def test_sample_without_agents():
    logits = torch.randn(2, 3, 2, 2)
    agents = torch.zeros(2, 2, 2, dtype=torch.bool)
    agents[1, 1, 0] = True
    action_mask = torch.zeros(2, 3, 2, 2, dtype=torch.bool)  # sample 0: no valid action anywhere, and no agent
    action_mask[1] = True
    dist = CategoricalMap(logits, agents, action_mask, validate_args=True)
    sample = dist.sample()
    assert dist.log_prob(sample)[0] == 0 and dist.entropy()[0] == 0
    assert torch.isfinite(dist.log_prob(sample)).all() and torch.isfinite(dist.entropy()).all()
    assert dist.entropy()[1] > 0


def test_mode_is_most_likely_valid_action():
    logits = torch.tensor([5.0, 1.0, 3.0, 2.0]).reshape(1, 4, 1, 1)
    mask = torch.tensor([False, True, True, True]).reshape(1, 4, 1, 1)
    assert CategoricalMap(logits, torch.ones(1, 1, 1), mask).mode.item() == 2
    assert CategoricalMap(logits, torch.ones(1, 1, 1)).mode.item() == 0


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    n_actions=st.integers(1, 6),
    height=st.integers(1, 4),
    width=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_samples_valid_under_action_masks(batch, n_actions, height, width, seed):
    logits, agents, action_mask = random_case(batch, n_actions, height, width, seed=seed, dtype=torch.float32)
    # Push invalid actions' logits up so an unmasked sampler would pick them almost always.
    logits = torch.where(action_mask, logits, 30.0)
    dist = CategoricalMap(logits, agents, action_mask)
    samples = dist.sample((200,))  # (200, B, H, W)
    chosen_valid = action_mask.unsqueeze(0).expand(200, -1, -1, -1, -1).gather(2, samples.unsqueeze(2)).squeeze(2)
    assert chosen_valid[:, agents].all()
    assert (samples[:, ~agents] == 0).all()
    # Each agent cell's probabilities are exactly 0 off its mask and sum to 1 on it.
    probs = dist.probs
    assert (probs[agents.unsqueeze(1).expand_as(probs) & ~action_mask] == 0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(batch, height, width))


def test_sample_frequencies_match_probabilities():
    torch.manual_seed(0)
    logits = torch.tensor([0.0, 1.0, 2.0]).reshape(1, 3, 1, 1).repeat(1, 1, 2, 2)
    agents = torch.ones(1, 2, 2, dtype=torch.bool)
    mask = torch.ones(1, 3, 2, 2, dtype=torch.bool)
    mask[0, 2, 1, 1] = False
    dist = CategoricalMap(logits, agents, mask)
    samples = dist.sample((20000,))
    freq = torch.nn.functional.one_hot(samples, 3).float().mean(0).movedim(-1, 1)
    # Hoeffding: P(|freq - p| >= 0.02) <= 2 exp(-2 * 20000 * 0.02^2) ~ 2e-7 per frequency
    torch.testing.assert_close(freq, dist.probs.float(), atol=0.02, rtol=0)
    assert freq[0, 2, 1, 1] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"logits": torch.zeros(2, 3, 4)}, r"logits must have shape \(B, A, H, W\), got shape \(2, 3, 4\)"),
        ({"agent_mask": torch.ones(2, 4, 3)}, r"agent_mask has shape \(2, 4, 3\), expected \(2, 3, 4\)"),
        ({"action_mask": torch.ones(2, 5, 3, 4)}, r"action_mask has shape \(2, 5, 3, 4\), expected \(2, 3, 3, 4\)"),
        ({"agent_mask": torch.full((2, 3, 4), 2)}, r"mask values must be 0/1"),
        ({"action_mask": torch.full((2, 3, 3, 4), -1)}, r"mask values must be 0/1"),
    ],
)
def test_bad_shapes_and_values(kwargs, message):
    args = {"logits": torch.zeros(2, 3, 3, 4), "agent_mask": torch.ones(2, 3, 4), "action_mask": None}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        CategoricalMap(args["logits"], args["agent_mask"], args["action_mask"], validate_args=True)


def test_agent_without_valid_action_is_named():
    action_mask = torch.ones(2, 3, 3, 4, dtype=torch.bool)
    agents = torch.zeros(2, 3, 4, dtype=torch.bool)
    agents[1, 2, 1] = True
    action_mask[:, :, 0, 0] = False  # empty cell without a valid action: fine
    CategoricalMap(torch.zeros(2, 3, 3, 4), agents, action_mask, validate_args=True)
    action_mask[1, :, 2, 1] = False
    with pytest.raises(ValueError, match=r"batch row 1, cell \(2, 1\)"):
        CategoricalMap(torch.zeros(2, 3, 3, 4), agents, action_mask, validate_args=True)
    CategoricalMap(torch.zeros(2, 3, 3, 4), agents, action_mask, validate_args=False)  # checks off: no error


def test_nan_logits_in_agent_cell_and_bad_actions_raise():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, 1, 1] = float("nan")
    agents = torch.ones(1, 2, 2)
    with pytest.raises(ValueError, match="NaN"):
        CategoricalMap(logits, agents, validate_args=True)
    dist = CategoricalMap(torch.zeros(1, 3, 2, 2), agents, validate_args=True)
    with pytest.raises(ValueError, match=r"action 3 of the agent in batch row 0, cell \(0, 1\)"):
        dist.log_prob(torch.tensor([[[0, 3], [0, 0]]]))
    with pytest.raises(ValueError, match=r"actions have shape \(1, 4\), expected \(1, 2, 2\)"):
        dist.log_prob(torch.zeros(1, 4))


def test_sb3_wrapper_flattens_row_major():
    logits, agents, action_mask = random_case(batch=2, n_actions=5, height=4, width=3)
    sb3 = CategoricalMapDistribution(5, 4, 3).proba_distribution(logits, agents, action_mask)
    flat = sb3.sample()
    assert flat.shape == (2, 12)
    grid = flat.reshape(2, 4, 3)
    torch.testing.assert_close(sb3.log_prob(flat.float()), sb3.distribution.log_prob(grid))
    assert torch.equal(sb3.mode()[:, 1 * 3 + 2], sb3.distribution.mode[:, 1, 2])
    assert torch.equal(sb3.get_actions(deterministic=True), sb3.mode())
    actions, log_prob = CategoricalMapDistribution(5, 4, 3).log_prob_from_params(logits, agents, action_mask)
    assert actions.shape == (2, 12) and log_prob.shape == (2,)
    head = sb3.proba_distribution_net(8)
    assert head(torch.zeros(2, 8, 4, 3)).shape == (2, 5, 4, 3)
    with pytest.raises(ValueError, match=r"expected \(B, \*\(5, 4, 3\)\)"):
        sb3.proba_distribution(torch.zeros(2, 5, 3, 4), None)
    # No agent mask: every cell counts
    everyone = CategoricalMapDistribution(5, 4, 3).proba_distribution(logits)
    torch.testing.assert_close(
        everyone.log_prob(flat), per_agent_reference(logits, torch.ones(2, 4, 3, dtype=torch.bool), None, grid)[0]
    )


# ---------------------------------------------------------------------------------------------- GridNet + PPO

SIZE, N_ACTIONS, N_CHANNELS = 4, 5, 1 + 5


class GridTargetEnv(gym.Env):
    """Contextual bandit on a 4x4 grid: 2-3 agents at random cells, each rewarded +1 for its target action.

    Channel 0 marks agents, channels 1..A one-hot the target action of each agent cell. Each agent has the
    target plus 1-2 random other actions valid; empty cells have no valid action. Counts actions of agents
    outside their mask in ``invalid``.
    """

    def __init__(self, episode_length: int = 8):
        self.observation_space = spaces.Dict(
            {
                "grid": spaces.Box(0.0, 1.0, (N_CHANNELS, SIZE, SIZE), np.float32),
                "agent_mask": spaces.MultiBinary((SIZE, SIZE)),
                "action_mask": spaces.Box(0, 1, (N_ACTIONS, SIZE, SIZE), np.int8),
            }
        )
        self.action_space = spaces.MultiDiscrete([N_ACTIONS] * (SIZE * SIZE))
        self.episode_length = episode_length
        self.invalid = 0

    def _draw(self):
        rng = self.np_random
        self.agents = np.zeros((SIZE, SIZE), np.int8)
        cells = rng.choice(SIZE * SIZE, size=rng.integers(2, 4), replace=False)
        self.agents.flat[cells] = 1
        self.targets = rng.integers(N_ACTIONS, size=(SIZE, SIZE))
        self.valid = np.zeros((N_ACTIONS, SIZE, SIZE), np.int8)
        for cell in cells:
            y, x = divmod(int(cell), SIZE)
            others = rng.choice(N_ACTIONS, size=rng.integers(1, 3), replace=False)
            self.valid[others, y, x] = 1
            self.valid[self.targets[y, x], y, x] = 1
        grid = np.zeros((N_CHANNELS, SIZE, SIZE), np.float32)
        grid[0] = self.agents
        ys, xs = np.nonzero(self.agents)
        grid[1 + self.targets[ys, xs], ys, xs] = 1
        return {"grid": grid, "agent_mask": self.agents.copy(), "action_mask": self.valid.copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action):
        grid_action = np.asarray(action).reshape(SIZE, SIZE)
        ys, xs = np.nonzero(self.agents)
        chosen = grid_action[ys, xs]
        self.invalid += int((self.valid[chosen, ys, xs] == 0).sum())
        reward = float((chosen == self.targets[ys, xs]).sum())
        self.t += 1
        return self._draw(), reward, False, self.t >= self.episode_length, {}

    def random_valid_reward(self) -> float:
        """Expected reward of uniformly random valid actions in the current state."""
        ys, xs = np.nonzero(self.agents)
        return float((1.0 / self.valid[:, ys, xs].sum(0)).sum())


def mean_reward(model, steps: int = 300, seed: int = 123) -> tuple[float, float]:
    env = GridTargetEnv()
    obs, _ = env.reset(seed=seed)
    total = random_total = 0.0
    for _ in range(steps):
        action, _ = model.predict(obs, deterministic=True)
        assert action.shape == (SIZE * SIZE,)
        random_total += env.random_valid_reward()
        obs, reward, _, truncated, _ = env.step(action)
        total += reward
        if truncated:
            obs, _ = env.reset()
    assert env.invalid == 0
    return total / steps, random_total / steps


def make_ppo(use_agent_mask: bool = True, seed: int = 0) -> PPO:
    return PPO(
        GridNetPolicy,
        GridTargetEnv(),
        n_steps=256,
        batch_size=64,
        n_epochs=4,
        learning_rate=3e-3,
        gamma=0.0,  # a contextual bandit: with gamma 0.99 the advantages carry the next steps' random rewards
        seed=seed,
        policy_kwargs={"channels": (16, 16), "value_hidden": 32, "use_agent_mask": use_agent_mask},
        device="cpu",
    )


@pytest.mark.parametrize("use_agent_mask", [True, False])
def test_gridnet_ppo_learns_with_valid_actions(use_agent_mask):
    model = make_ppo(use_agent_mask)
    before, random_reward = mean_reward(model)
    model.learn(2048)
    assert model.get_env().get_attr("invalid") == [0]
    after, _ = mean_reward(model)
    # Random valid actions earn ~1.2 per step here; the target is visible, so the best policy earns ~2.5
    # (the mean number of agents); 2048 steps reach ~2.45.
    assert after > random_reward + 0.8, (before, after, random_reward)


def test_gridnet_save_load_round_trip(tmp_path):
    model = make_ppo(seed=1)
    model.learn(256)
    env = GridTargetEnv()
    observations = [env.reset(seed=s)[0] for s in range(5)]
    batch = {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    actions, _ = model.predict(batch, deterministic=True)
    assert actions.shape == (5, SIZE * SIZE)
    model.save(tmp_path / "gridnet")
    loaded = PPO.load(tmp_path / "gridnet", device="cpu")
    assert isinstance(loaded.policy, GridNetPolicy) and loaded.policy.channels == (16, 16)
    assert np.array_equal(loaded.predict(batch, deterministic=True)[0], actions)
    model.policy.save(tmp_path / "policy")
    policy = GridNetPolicy.load(tmp_path / "policy", device="cpu")
    assert np.array_equal(policy.predict(batch, deterministic=True)[0], actions)


def test_gridnet_rejects_unfit_spaces_and_options():
    env = GridTargetEnv()
    obs_space, act_space = env.observation_space, env.action_space
    with pytest.raises(ValueError, match="net_arch"):
        GridNetPolicy(obs_space, act_space, lambda _: 1e-3, net_arch=[64])
    with pytest.raises(ValueError, match="MultiDiscrete"):
        GridNetPolicy(obs_space, spaces.MultiDiscrete([N_ACTIONS] * 15), lambda _: 1e-3)
    bad = spaces.Dict({**obs_space.spaces, "action_mask": spaces.MultiBinary((N_ACTIONS, SIZE, SIZE + 1))})
    with pytest.raises(ValueError, match=r"'action_mask' has shape \(5, 4, 5\), expected \(5, 4, 4\)"):
        GridNetPolicy(bad, act_space, lambda _: 1e-3)
    with pytest.raises(ValueError, match="kernel_size"):
        GridNetPolicy(obs_space, act_space, lambda _: 1e-3, kernel_size=2)
    GridNetPolicy(obs_space, act_space, lambda _: 1e-3, use_sde=False, log_std_init=0.0)  # what PPO passes: fine


@pytest.mark.parametrize("use_agent_mask", [True, False])
def test_gridnet_log_prob_counts_agent_cells_or_all_cells(use_agent_mask):
    env = GridTargetEnv()
    policy = GridNetPolicy(env.observation_space, env.action_space, lambda _: 1e-3, use_agent_mask=use_agent_mask)
    observations = [env.reset(seed=s)[0] for s in range(4)]
    obs, _ = policy.obs_to_tensor({key: np.stack([o[key] for o in observations]) for key in observations[0]})
    actions, values, log_prob = policy(obs)
    assert actions.shape == (4, SIZE * SIZE) and values.shape == (4, 1) and log_prob.shape == (4,)
    # PPO's buffer gives the actions back as float32
    values2, log_prob2, entropy = policy.evaluate_actions(obs, actions.float())
    torch.testing.assert_close(log_prob2, log_prob)
    torch.testing.assert_close(values2, values)
    torch.testing.assert_close(policy.predict_values(obs), values)
    logits = policy.action_net(policy.decoder(policy.features_extractor(obs["grid"])))
    agents = obs["agent_mask"].bool()
    grid_actions = actions.reshape(4, SIZE, SIZE)
    per_cell = torch.log_softmax(logits, 1).gather(1, grid_actions.unsqueeze(1)).squeeze(1)  # unmasked log-probs
    if use_agent_mask:
        ref_lp, ref_ent = per_agent_reference(logits, agents, obs["action_mask"].bool(), grid_actions)
        torch.testing.assert_close(log_prob, ref_lp)
        torch.testing.assert_close(entropy, ref_ent)
    else:
        # Ablation: every cell counts; empty cells are unmasked, agent cells keep their action mask.
        action_mask = obs["action_mask"].bool() | ~agents.unsqueeze(1)
        everyone = torch.ones_like(agents)
        ref_lp, ref_ent = per_agent_reference(logits, everyone, action_mask, grid_actions)
        torch.testing.assert_close(log_prob, ref_lp)
        torch.testing.assert_close(entropy, ref_ent)
        # ... i.e. the agents' log-probs plus the empty cells' unmasked log-probs
        agents_only = per_agent_reference(logits, agents, obs["action_mask"].bool(), grid_actions)[0]
        empty_cells = torch.where(agents, 0.0, per_cell).sum(dim=(1, 2))
        assert (empty_cells < 0).all()
        torch.testing.assert_close(log_prob, agents_only + empty_cells)
