"""Behaviour cloning: start an actor-critic policy from a demonstrator's driving before RL takes over.

A section of a hyperparameter file may hold ``behaviour_cloning``::

    behaviour_cloning:
      demonstrator: maskrl.envs.kart:scripted_action   # a function (env) -> action, given the env before each step
      steps: 200000                                   # env steps of demonstrations
      epochs: 20                                      # passes over them

A new run then plays the demonstrator in one env of the run's kind (its ``env_kwargs``, the mask in the
observation), and trains the policy on what it saw before the algorithm's first step: the actor to maximise the
log-probability of the demonstrator's actions under the observation's mask (so an invalid demonstration is an error,
not a -inf loss), the critic to regress the discounted return that followed (the algorithm's ``gamma``), so that the
first policy-gradient updates see sensible advantages instead of undoing the clone. A resumed run does not clone
again: its checkpoint already holds the result. The demonstrator reads whatever it wants from the env (the Kart's
scripted drivers read its internal state), which is why it is an import path and not an observation-only policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy

from maskrl.agents.env_setup import make_masked_env
from maskrl.agents.hyperparams import check_cloning_settings

#: minibatch size and Adam's step size of the cloning; a fresh optimiser, so the algorithm's starts clean
CLONING_BATCH_SIZE = 256
CLONING_LEARNING_RATE = 1e-3
#: demonstrations play episodes seeded from the run's seed plus this (evaluations use other offsets)
DEMONSTRATION_SEED_OFFSET = 30_000

Demonstrator = Callable[[gym.Env], Any]


@dataclass
class Demonstrations:
    """What the demonstrator saw and did: observations by key, actions, and the discounted return from each step."""

    observations: dict[str, np.ndarray]
    actions: np.ndarray
    returns: np.ndarray
    episodes: int

    def __len__(self) -> int:
        return len(self.actions)


def collect_demonstrations(
    env: gym.Env, demonstrator: Demonstrator, steps: int, gamma: float, seed: int
) -> Demonstrations:
    """Play ``demonstrator`` in ``env`` for at least ``steps`` steps, whole episodes only.

    :param env: an env whose observation is a ``Dict`` with the mask under ``"action_mask"``
        (:func:`~maskrl.agents.env_setup.make_masked_env`)
    :param demonstrator: called with ``env`` before each step, returns the action
    :param steps: env steps to collect; the last episode is played to its end
    :param gamma: discount of the returns
    :param seed: seed of the first episode's reset
    :raises ValueError: the demonstrator chose an action its mask forbids
    """
    observations: dict[str, list[np.ndarray]] = {}
    actions: list[Any] = []
    returns: list[float] = []
    episodes = 0
    while len(actions) < steps:
        observation, _ = env.reset(seed=seed if episodes == 0 else None)
        episodes += 1
        rewards: list[float] = []
        done = False
        while not done:
            action = demonstrator(env)
            for key, value in observation.items():
                observations.setdefault(key, []).append(np.asarray(value))
            actions.append(action)
            observation, reward, terminated, truncated, info = env.step(action)
            if info.get("invalid_action"):
                raise ValueError(f"the demonstrator chose action {action!r}, which the action mask forbids")
            rewards.append(float(reward))
            done = terminated or truncated
        discounted = 0.0
        episode_returns = []
        for reward in reversed(rewards):
            discounted = reward + gamma * discounted
            episode_returns.append(discounted)
        returns.extend(reversed(episode_returns))
    return Demonstrations(
        observations={key: np.stack(values) for key, values in observations.items()},
        actions=np.asarray(actions),
        returns=np.asarray(returns, dtype=np.float32),
        episodes=episodes,
    )


def clone(policy: ActorCriticPolicy, demonstrations: Demonstrations, epochs: int, seed: int) -> dict[str, float]:
    """Fit ``policy``'s actor to the demonstrations' actions and its critic to their returns.

    The loss is ``-log pi(a|s) + 0.5 (V(s) - G)^2`` over minibatches of :data:`CLONING_BATCH_SIZE`, with the masked
    distribution of the observation's mask.

    :return: the last epoch's mean negative log-likelihood (``nll``), how often the policy's most likely action is the
        demonstrator's (``accuracy``, over all demonstrations, after training) and the critic's mean squared error
        (``value_mse``)
    """
    threads = torch.get_num_threads()
    # Minibatches this small spend more time synchronising torch's threads than computing: one thread is faster.
    torch.set_num_threads(1)
    try:
        return _clone(policy, demonstrations, epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _clone(policy: ActorCriticPolicy, demonstrations: Demonstrations, epochs: int, seed: int) -> dict[str, float]:
    device = policy.device
    observations = {key: torch.as_tensor(value, device=device) for key, value in demonstrations.observations.items()}
    actions = torch.as_tensor(demonstrations.actions, device=device)
    returns = torch.as_tensor(demonstrations.returns, device=device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=CLONING_LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed)
    n = len(demonstrations)
    policy.set_training_mode(True)
    nll = 0.0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        total = 0.0
        for start in range(0, n, CLONING_BATCH_SIZE):
            index = order[start : start + CLONING_BATCH_SIZE]
            batch = {key: value[index] for key, value in observations.items()}
            values, log_prob, _ = policy.evaluate_actions(batch, actions[index])
            loss = -log_prob.mean() + 0.5 * (values.flatten() - returns[index]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(-log_prob.detach().sum())
        nll = total / n
    policy.set_training_mode(False)
    with torch.no_grad():
        matches, squared_error = 0, 0.0
        for start in range(0, n, 4096):
            rows = slice(start, start + 4096)
            batch = {key: value[rows] for key, value in observations.items()}
            predicted = policy._predict(batch, deterministic=True).reshape(actions[rows].shape)
            matches += int((predicted == actions[rows]).sum())
            squared_error += float((policy.predict_values(batch).flatten() - returns[rows]).pow(2).sum())
    return {"nll": nll, "accuracy": matches / n, "value_mse": squared_error / n}


def load_demonstrator(
    model: BaseAlgorithm, settings: dict[str, Any], import_object: Callable[[str], Any]
) -> Demonstrator:
    """Check that ``model`` can be cloned into, and import the demonstrator of ``settings`` (``behaviour_cloning``).

    :param model: an algorithm with a feed-forward actor-critic policy (PPO, A2C and their masked kinds)
    :param import_object: imports the demonstrator's path
    :raises ValueError: in one line: bad settings, another kind of policy, a demonstrator that cannot be imported
    """
    check_cloning_settings(settings)
    policy = model.policy
    if not isinstance(policy, ActorCriticPolicy) or hasattr(policy, "lstm_actor"):
        raise ValueError(
            f"behaviour_cloning needs a feed-forward actor-critic policy (ppo, a2c), not {type(policy).__name__}"
        )
    demonstrator = import_object(settings["demonstrator"])
    if not callable(demonstrator):
        raise ValueError(f"behaviour_cloning.demonstrator {settings['demonstrator']!r} is not a function")
    return demonstrator


def behaviour_clone(
    model: BaseAlgorithm,
    demonstrator: Demonstrator,
    env_id: str,
    env_kwargs: dict[str, Any],
    settings: dict[str, Any],
    seed: int,
) -> dict[str, float]:
    """Clone ``demonstrator`` (from :func:`load_demonstrator`) into ``model``'s policy, as ``settings`` say.

    :param env_id: the run's env, played with the mask in the observation
    :param env_kwargs: the run's env arguments
    :param seed: the run's seed
    :return: :func:`clone`'s metrics, with the demonstrations' ``steps`` and ``episodes``
    :raises ValueError: in one line, for an env without action masks or a demonstrator choosing an invalid action
    """
    env = make_masked_env(env_id, env_kwargs)  # refuses an env without masks
    try:
        gamma = float(getattr(model, "gamma", 0.99))
        demonstrations = collect_demonstrations(
            env, demonstrator, settings["steps"], gamma, seed + DEMONSTRATION_SEED_OFFSET
        )
    finally:
        env.close()
    metrics = clone(model.policy, demonstrations, settings["epochs"], seed)
    return {**metrics, "steps": float(len(demonstrations)), "episodes": float(demonstrations.episodes)}
