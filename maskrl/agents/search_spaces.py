"""Hyperparameter search spaces for ``train.py -optimize``: every algorithm of the registry, in this one module.

A search space is a function ``(trial, context) -> hyperparameters``: it asks an Optuna trial for values and returns
them in the hyperparameter-file format (:mod:`maskrl.agents.hyperparams`: plain YAML values, ``activation_fn`` by
name, ``net_arch`` as a list), so a trial's hyperparameters can be written back into ``<EnvName>.yml`` as they are.
Only the tuned keys are returned; :func:`merge_hyperparams` lays them over the env file's section, keeping what is
not tuned (a features extractor, ``n_envs``, ``env_kwargs``, ...).

The ranges follow rl-baselines3-zoo's (``rl_zoo3/hyperparams_opt.py``) with two differences. Choices that only make
sense for a budget (rollout length, replay buffer, warm-up, target-network period) are cut to the per-trial budget of
the study, so that every trial learns something (at least 4 rollouts; a buffer no larger than the budget) whatever
``-n`` is. The budget and ``n_envs`` are fixed for a whole study, so each parameter keeps one distribution in it.
And PPO's minibatches go up to 2048 (the zoo stops at 512): with many envs a rollout holds tens of thousands of steps,
and on a CPU a large minibatch is what keeps an epoch over it cheap.
Masking changes none of these knobs: the masked algorithms (``ppo``, ``a2c``, ``ppo_lstm``, ``dqn``, ``qrdqn``) share
their space with their unmasked baselines (``*_nomask``), ``maskable_ppo`` and the PPO variants.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

__all__ = [
    "NET_ARCHS",
    "SEARCH_SPACES",
    "SearchContext",
    "SearchSpace",
    "merge_hyperparams",
    "sample_a2c",
    "sample_dqn",
    "sample_ppo",
    "sample_ppo_lstm",
    "sample_qrdqn",
    "search_space",
]

#: ``net_arch`` choices by name: Optuna's categorical parameters must be plain values, not lists.
NET_ARCHS: dict[str, list[int]] = {"tiny": [64], "small": [64, 64], "medium": [256, 256]}
#: Fewest rollouts (on-policy) a trial's budget must allow: one update says little about a learning rate.
MIN_ROLLOUTS = 4


@dataclass(frozen=True)
class SearchContext:
    """What a search space may depend on: the same for every trial of a study.

    :param algo: the ``--algo`` name
    :param n_timesteps: env steps of one trial
    :param n_envs: parallel envs of the trials (rollout sizes are per env)
    :param base: the hyperparameters the sampled ones are laid over (the env file's section)
    """

    algo: str
    n_timesteps: int
    n_envs: int = 1
    base: Mapping[str, Any] = field(default_factory=dict)


SearchSpace = Callable[[optuna.Trial, SearchContext], dict[str, Any]]


def _powers_of_two(low: int, high: int) -> list[int]:
    return [2**k for k in range(int(math.log2(low)), int(math.log2(high)) + 1)]


def _rollout_lengths(context: SearchContext, low: int, high: int) -> list[int]:
    """Powers of two from ``low`` to ``high`` steps per env, keeping :data:`MIN_ROLLOUTS` rollouts in the budget."""
    longest = context.n_timesteps // (MIN_ROLLOUTS * context.n_envs)
    choices = [n for n in _powers_of_two(low, high) if n <= longest]
    return choices or [low]  # a budget too small for even that: one choice, the study still runs


def _network(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "net_arch": NET_ARCHS[trial.suggest_categorical("net_arch", list(NET_ARCHS))],
        "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
    }


def _one_minus(trial: optuna.Trial, name: str, low: float, high: float) -> float:
    """``1 - x`` with ``x`` log-uniform: discounts and GAE lambdas near 1 are searched on the scale that matters."""
    return round(1.0 - trial.suggest_float(f"one_minus_{name}", low, high, log=True), 6)


def sample_ppo(trial: optuna.Trial, context: SearchContext) -> dict[str, Any]:
    """PPO and its variants (``ppo``, ``ppo_nomask``, ``ppo_naive``, ``maskable_ppo``, ``ppo_contrastive``)."""
    n_steps = trial.suggest_categorical("n_steps", _rollout_lengths(context, 16, 2048))
    batch_size = trial.suggest_categorical("batch_size", [32, 64, 128, 256, 512, 1024, 2048])
    return {
        "n_steps": n_steps,
        # A minibatch larger than the rollout is the rollout (SB3 asserts on nothing but warns on every update).
        "batch_size": min(batch_size, n_steps * context.n_envs),
        "n_epochs": trial.suggest_categorical("n_epochs", [1, 3, 5, 10, 20]),
        "gamma": _one_minus(trial, "gamma", 1e-4, 0.1),
        "gae_lambda": _one_minus(trial, "gae_lambda", 1e-3, 0.2),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.1, log=True),
        "clip_range": trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3, 0.4]),
        "vf_coef": trial.suggest_float("vf_coef", 0.2, 1.0),
        "max_grad_norm": trial.suggest_categorical("max_grad_norm", [0.3, 0.5, 1.0, 2.0, 5.0]),
        "policy_kwargs": _network(trial),
    }


def sample_ppo_lstm(trial: optuna.Trial, context: SearchContext) -> dict[str, Any]:
    """Recurrent PPO (``ppo_lstm``, ``ppo_lstm_nomask``): PPO's space plus the LSTM's size."""
    hyperparams = sample_ppo(trial, context)
    hyperparams["policy_kwargs"]["lstm_hidden_size"] = trial.suggest_categorical("lstm_hidden_size", [32, 64, 128])
    return hyperparams


def sample_a2c(trial: optuna.Trial, context: SearchContext) -> dict[str, Any]:
    """A2C (``a2c``)."""
    return {
        "n_steps": trial.suggest_categorical("n_steps", _rollout_lengths(context, 4, 128)),
        "gamma": _one_minus(trial, "gamma", 1e-4, 0.1),
        "gae_lambda": _one_minus(trial, "gae_lambda", 1e-3, 0.2),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.1, log=True),
        "vf_coef": trial.suggest_float("vf_coef", 0.2, 1.0),
        "max_grad_norm": trial.suggest_categorical("max_grad_norm", [0.3, 0.5, 1.0, 2.0, 5.0]),
        "normalize_advantage": trial.suggest_categorical("normalize_advantage", [False, True]),
        "use_rms_prop": trial.suggest_categorical("use_rms_prop", [False, True]),
        "policy_kwargs": _network(trial),
    }


def sample_dqn(trial: optuna.Trial, context: SearchContext) -> dict[str, Any]:
    """DQN (``dqn``, ``dqn_nomask``)."""
    budget = context.n_timesteps
    # Buffers beyond the budget only cost memory; warm-ups and target periods beyond a quarter of it leave no learning.
    buffer_sizes = [size for size in (10_000, 50_000, 100_000, 300_000, 1_000_000) if size <= budget] or [budget]
    warm_ups = [steps for steps in (0, 1_000, 5_000, 10_000, 20_000) if steps <= budget // 4] or [0]
    target_periods = [steps for steps in (1, 1_000, 5_000, 10_000, 20_000) if steps <= budget // 4] or [1]
    train_freq = trial.suggest_categorical("train_freq", [1, 4, 8, 16])
    # zoo: gradient steps per update as a fraction of the steps collected in between
    subsample = trial.suggest_categorical("subsample_steps", [1, 2, 4, 8])
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128, 256]),
        "buffer_size": trial.suggest_categorical("buffer_size", buffer_sizes),
        "learning_starts": trial.suggest_categorical("learning_starts", warm_ups),
        "gamma": _one_minus(trial, "gamma", 1e-4, 0.1),
        "train_freq": train_freq,
        "gradient_steps": max(train_freq // subsample, 1),
        "target_update_interval": trial.suggest_categorical("target_update_interval", target_periods),
        "exploration_fraction": trial.suggest_float("exploration_fraction", 0.0, 0.5),
        "exploration_final_eps": trial.suggest_float("exploration_final_eps", 0.0, 0.2),
        "policy_kwargs": {"net_arch": NET_ARCHS[trial.suggest_categorical("net_arch", list(NET_ARCHS))]},
    }


def sample_qrdqn(trial: optuna.Trial, context: SearchContext) -> dict[str, Any]:
    """QR-DQN (``qrdqn``, ``qrdqn_nomask``): DQN's space plus the number of quantiles."""
    hyperparams = sample_dqn(trial, context)
    hyperparams["policy_kwargs"]["n_quantiles"] = trial.suggest_categorical("n_quantiles", [10, 25, 50, 100])
    return hyperparams


#: The search space of each ``--algo`` (every algorithm of :data:`maskrl.agents.registry.ALGOS`).
SEARCH_SPACES: dict[str, SearchSpace] = {
    "ppo": sample_ppo,
    "ppo_nomask": sample_ppo,
    "ppo_naive": sample_ppo,
    "maskable_ppo": sample_ppo,
    "ppo_contrastive": sample_ppo,
    "a2c": sample_a2c,
    "ppo_lstm": sample_ppo_lstm,
    "ppo_lstm_nomask": sample_ppo_lstm,
    "dqn": sample_dqn,
    "dqn_nomask": sample_dqn,
    "qrdqn": sample_qrdqn,
    "qrdqn_nomask": sample_qrdqn,
}


def search_space(algo: str) -> SearchSpace:
    """The search space of ``--algo algo``.

    :raises ValueError: in one line, for an algorithm without one
    """
    try:
        return SEARCH_SPACES[algo]
    except KeyError:
        raise ValueError(f"no search space for --algo {algo}; there is one for {', '.join(SEARCH_SPACES)}") from None


def merge_hyperparams(base: Mapping[str, Any], sampled: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``sampled`` laid over it; ``policy_kwargs`` are merged key by key, so a features extractor or
    ``n_quantiles`` of the env file survives a sampled ``net_arch``."""
    merged = dict(base)
    for key, value in sampled.items():
        if key == "policy_kwargs":
            merged[key] = {**(base.get(key) or {}), **value}
        else:
            merged[key] = value
    return merged
