"""End-to-end PPO training throughput and its breakdown: maskrl's masked PPO vs MaskablePPO vs unmasked PPO.

For each env (``--env kart|grid|herd``) three variants train with the same PPO hyperparameters and, as far as
possible, the same network; they differ only in how the masks reach the policy:

- ``maskrl``: unchanged SB3 ``PPO`` with maskrl's policy; the int8 masks travel in the ``Dict`` observation;
- ``maskable``: sb3-contrib ``MaskablePPO``; the action mask comes from ``env.action_masks()`` each step
  and is stored as float32 in its own buffer;
- ``unmasked``: plain ``PPO`` on the observation without the action mask: no mask work at all.

Networks per env:

- ``kart`` (``maskrl/Kart-v0``): MLP ``[64, 64]`` for all three;
- ``grid`` (``maskrl/PandaGrid-v0``): the ``EntityAttentionExtractor`` (32-dim, 2 heads, 2 blocks) + ``[64]`` for
  all three; all three keep the ``"visibility"`` key (the extractor's attention mask), only the action mask differs;
- ``herd`` (``maskrl/PandaHerd-v0``, 8x8): the GridNet conv encoder-decoder (channels 32, 64) for all three.
  ``maskrl`` is ``GridNetPolicy`` (one :class:`CategoricalMap` over the grid, agent mask + per-cell action mask);
  ``maskable`` is the same convolutions in a ``MaskableActorCriticPolicy`` whose logits are flattened cell-major
  into sb3-contrib's ``MaskableMultiCategoricalDistribution`` (64 ``MaskableCategorical`` s, mask from
  ``action_masks()``): that is how MaskablePPO handles a ``MultiDiscrete`` grid; ``unmasked`` is
  ``GridNetPolicy(use_agent_mask=False)`` on the grid alone (every cell counts, no masks).

PPO: ``n_steps`` per env (256 Kart, 128 PandaGrid/herd), ``batch_size = n_steps`` (so ``n_envs`` minibatches per
epoch), 4 epochs, one torch thread. Each model first runs one PPO iteration (warm-up), then the timed ``learn``
calls (``--iterations`` PPO iterations each) run round-robin over the variants (the first of each round rotates),
so machine noise hits all of them
alike; the median over ``--repeats`` is reported as env steps per second (wall clock), with ratios of the medians.
For DummyVecEnv the process's CPU time of the same calls gives a second set of ratios that machine load barely
moves (time spent waiting for a core is not counted); with SubprocVecEnv it would miss the workers, so only wall
time counts there.

Breakdown, measured inside the same timed calls with the process's CPU time for DummyVecEnv and the wall clock for
SubprocVecEnv (whose env time is mostly waiting for the workers); four clock reads per env step, ~1-2 µs:

- ``env``: ``step_async`` + ``step_wait`` of a thin ``VecEnvWrapper`` around the vec env (the workers' time and
  IPC for ``SubprocVecEnv``);
- ``forward``: the policy's ``forward`` during the rollout (features, distribution, sampling, log-prob);
- ``rollout other``: the rest of ``collect_rollouts``: ``obs_as_tensor``, rollout-buffer ``add`` (incl. its copies
  of the masks), MaskablePPO's ``env_method("action_masks")``, callbacks, the final ``predict_values``;
- ``update``: ``train()``, PPO's gradient epochs over the buffer.

Each is reported in µs per env step (median over the repeats).

Run (as in docs/benchmarks.md; each 5-10 minutes on a loaded 2-core machine)::

    python benchmarks/bench_training.py --env kart --with-before   # 2 PPO iterations per call, 5 repeats
    python benchmarks/bench_training.py --env grid --with-before   # 2 iterations, 5 repeats
    python benchmarks/bench_training.py --env herd --with-before   # 1 iteration, 3 repeats (MaskablePPO is slow)

``--profile maskrl`` (or another variant) runs cProfile on the first cell instead of timing (e.g.
``--env kart --vec-envs dummy --n-envs 1 --profile maskrl_before``). ``--quick`` for a smoke run.
Writes ``docs/benchmarks/training_<env>.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import pstats
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper
from torch import nn

from maskrl.agents.env_setup import make_masked_env, make_masked_vec_env
from maskrl.masks import ACTION_MASK_KEY, GRID_KEY
from maskrl.policies import EntityAttentionExtractor, GridNetPolicy, MaskedActorCriticPolicy, MaskedMultiInputPolicy

OUT_DIR = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
VARIANTS = ("maskrl", "maskable", "unmasked")
PARTS = ("env", "forward", "rollout_other", "update")


# ---------------------------------------------------------------------------------------------------------------
# Envs


class DropActionMask(gym.ObservationWrapper):
    """Remove only ``"action_mask"`` from a ``Dict`` observation (PandaGrid keeps its ``"visibility"`` feature mask).

    :param env: env with a ``Dict`` observation holding ``"action_mask"``
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = spaces.Dict(
            {key: space for key, space in env.observation_space.spaces.items() if key != ACTION_MASK_KEY}
        )

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in observation.items() if key != ACTION_MASK_KEY}


def _make_env_without_action_mask(env_id: str, env_kwargs: dict[str, Any] | None) -> gym.Env:
    return DropActionMask(make_masked_env(env_id, env_kwargs))


def make_venv(
    env_id: str,
    variant: str,
    vec_env: str,
    n_envs: int,
    drop_only_action_mask: bool,
    env_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """The vec env a variant trains on (seeded with 0)."""
    if variant == "maskrl" or not drop_only_action_mask:
        return make_masked_vec_env(env_id, n_envs, 0, vec_env, env_kwargs, sees_mask=variant == "maskrl")
    venv_class = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}[vec_env]
    venv = venv_class([functools.partial(_make_env_without_action_mask, env_id, env_kwargs)] * n_envs)
    venv.seed(0)
    venv.action_space.seed(0)
    return venv


# ---------------------------------------------------------------------------------------------------------------
# GridNet's convolutions inside sb3-contrib's MaskableActorCriticPolicy (the herd's MaskablePPO variant)


class _GridDictEncoder(BaseFeaturesExtractor):
    """GridNet's encoder convolutions over ``obs["grid"]``: ``(B, channels[-1], H, W)``."""

    def __init__(self, observation_space: spaces.Dict, channels: tuple[int, ...] = (32, 64), kernel_size: int = 3):
        super().__init__(observation_space, features_dim=channels[-1])
        layers: list[nn.Module] = []
        in_channels = observation_space[GRID_KEY].shape[0]
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2), nn.ReLU()]
            in_channels = out_channels
        self.convs = nn.Sequential(*layers)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.convs(observations[GRID_KEY])


class _GridHeads(nn.Module):
    """GridNet's decoder (latent_pi, a feature map) and pooled value MLP (latent_vf), as an ``mlp_extractor``."""

    def __init__(self, channels: tuple[int, ...], kernel_size: int, value_hidden: int):
        super().__init__()
        decoder_channels = channels[-2::-1] or channels[-1:]
        layers: list[nn.Module] = []
        in_channels = channels[-1]
        for out_channels in decoder_channels:
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2), nn.ReLU()]
            in_channels = out_channels
        self.decoder = nn.Sequential(*layers)
        self.value_mlp = nn.Sequential(nn.Linear(2 * channels[-1], value_hidden), nn.ReLU())
        self.latent_dim_pi = decoder_channels[-1]
        self.latent_dim_vf = value_hidden

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(features)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_mlp(torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1))


class _CellMajorLogits(nn.Module):
    """1x1 conv to ``(B, A, H, W)`` logits, flattened cell-major ``(B, H * W * A)`` (``action_masks()``'s order)."""

    def __init__(self, in_channels: int, n_actions: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, n_actions, kernel_size=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.conv(latent).permute(0, 2, 3, 1).flatten(1)


class MaskableGridNetPolicy(MaskableActorCriticPolicy):
    """GridNet's conv encoder-decoder and value head in sb3-contrib's ``MaskableActorCriticPolicy``.

    :param channels: encoder channels, as in ``GridNetPolicy``
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.MultiDiscrete,
        lr_schedule: Schedule,
        channels: tuple[int, ...] | list[int] = (32, 64),
        kernel_size: int = 3,
        value_hidden: int = 64,
        **kwargs: Any,
    ):
        self.grid_channels = tuple(channels)
        self.kernel_size = kernel_size
        self.value_hidden = value_hidden
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            activation_fn=nn.ReLU,
            features_extractor_class=_GridDictEncoder,
            features_extractor_kwargs=dict(channels=self.grid_channels, kernel_size=kernel_size),
            **kwargs,
        )

    def _build(self, lr_schedule: Schedule) -> None:
        self.mlp_extractor = _GridHeads(self.grid_channels, self.kernel_size, self.value_hidden)
        self.action_net = _CellMajorLogits(self.mlp_extractor.latent_dim_pi, int(self.action_space.nvec[0]))
        self.value_net = nn.Linear(self.value_hidden, 1)
        if self.ortho_init:
            gains = {self.features_extractor: 2**0.5, self.mlp_extractor: 2**0.5, self.action_net: 0.01}
            gains[self.value_net] = 1.0
            for module, gain in gains.items():
                module.apply(functools.partial(self.init_weights, gain=gain))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)


# ---------------------------------------------------------------------------------------------------------------
# The three variants per env


@dataclass(frozen=True)
class EnvBench:
    """What one env's benchmark trains: the env, PPO's rollout length and each variant's (algo, policy, kwargs)."""

    env_id: str
    n_steps: int
    variants: dict[str, tuple[type[BaseAlgorithm], Any, dict[str, Any]]]
    drop_only_action_mask: bool = False
    notes: str = ""
    env_kwargs: dict[str, Any] | None = None


_ATTENTION = dict(
    features_extractor_class=EntityAttentionExtractor,
    features_extractor_kwargs=dict(embed_dim=32, n_heads=2, n_blocks=2),
    net_arch=[64],
)
ENV_BENCHES: dict[str, EnvBench] = {
    "kart": EnvBench(
        "maskrl/Kart-v0",
        256,
        {
            "maskrl": (PPO, MaskedActorCriticPolicy, dict(net_arch=[64, 64])),
            "maskable": (MaskablePPO, "MlpPolicy", dict(net_arch=[64, 64])),
            "unmasked": (PPO, "MlpPolicy", dict(net_arch=[64, 64])),
        },
        notes="MLP [64, 64] for all",
    ),
    "grid": EnvBench(
        "maskrl/PandaGrid-v0",
        128,
        {
            "maskrl": (PPO, MaskedMultiInputPolicy, _ATTENTION),
            "maskable": (MaskablePPO, "MultiInputPolicy", _ATTENTION),
            "unmasked": (PPO, "MultiInputPolicy", _ATTENTION),
        },
        drop_only_action_mask=True,
        notes="EntityAttentionExtractor(32, 2 heads, 2 blocks) + [64] for all; all see the visibility mask",
    ),
    "herd": EnvBench(
        "maskrl/PandaHerd-v0",
        128,
        {
            "maskrl": (PPO, GridNetPolicy, dict(channels=[32, 64])),
            "maskable": (MaskablePPO, MaskableGridNetPolicy, dict(channels=[32, 64])),
            "unmasked": (PPO, GridNetPolicy, dict(channels=[32, 64], use_agent_mask=False)),
        },
        notes="GridNet convs (32, 64) for all; maskable = same convs + 64 MaskableCategoricals; "
        "unmasked = GridNetPolicy(use_agent_mask=False) on the grid alone",
    ),
    # sb3-contrib#283: MultiBinary(339) with masks ran at ~5 steps/s against ~140 unmasked there.
    "bits": EnvBench(
        "maskrl/ToyMasked-v0",
        64,
        {
            "maskrl": (PPO, MaskedActorCriticPolicy, dict(net_arch=[64, 64])),
            "maskable": (MaskablePPO, "MlpPolicy", dict(net_arch=[64, 64])),
            "unmasked": (PPO, "MlpPolicy", dict(net_arch=[64, 64])),
        },
        notes="MultiBinary(339) toy bandit; MLP [64, 64] for all",
        env_kwargs={"action_type": "multibinary", "n_sub": 339},
    ),
}


# ---------------------------------------------------------------------------------------------------------------
# Timing


@dataclass
class Timers:
    """Seconds accumulated in each part of a ``learn()`` call."""

    env: float = 0.0
    forward: float = 0.0
    rollout: float = 0.0
    update: float = 0.0
    #: process CPU time for DummyVecEnv (all the work is in this process; robust to load), wall time for Subproc
    clock: Callable[[], float] = time.perf_counter

    def reset(self) -> None:
        self.env = self.forward = self.rollout = self.update = 0.0


class TimedVecEnv(VecEnvWrapper):
    """Adds the wall time from ``step_async`` to the end of ``step_wait`` to ``timers.env``."""

    def __init__(self, venv: VecEnv, timers: Timers):
        super().__init__(venv)
        self.timers = timers
        self._start = 0.0

    def reset(self) -> Any:
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        self._start = self.timers.clock()
        self.venv.step_async(actions)

    def step_wait(self) -> Any:
        out = self.venv.step_wait()
        self.timers.env += self.timers.clock() - self._start
        return out


def _timed(function: Callable[..., Any], timers: Timers, name: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = timers.clock()
        try:
            return function(*args, **kwargs)
        finally:
            setattr(timers, name, getattr(timers, name) + timers.clock() - start)

    return wrapper


def _forward_before_fix(policy: Any) -> Callable[..., Any]:
    """The policy's ``forward`` as it was before ``own_actions_log_prob``: log_prob re-validates the sampled actions."""

    def forward(obs: Any, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(policy, GridNetPolicy):
            encoding = policy._encode(obs)
            distribution = policy._distribution(encoding, obs)
            actions = distribution.get_actions(deterministic=deterministic)
            return actions, policy._values(encoding), distribution.log_prob(actions)
        latent_pi, latent_vf = policy._latents(obs)
        values = policy.value_net(latent_vf)
        distribution = policy._masked_distribution(latent_pi, obs)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        return actions.reshape((-1, *policy.action_space.shape)), values, log_prob

    return forward


def build(
    bench: EnvBench,
    variant: str,
    vec_env: str,
    n_envs: int,
    n_epochs: int,
    env_kwargs: dict[str, Any] | None = None,
    hooks: bool = True,
) -> tuple[BaseAlgorithm, Timers]:
    """Build one variant's model with its timing hooks (instance attributes shadow the methods ``learn`` calls).

    :param hooks: install the timing hooks (off for ``--profile``, where cProfile would count them)
    """
    before_fix = variant == "maskrl_before"
    if before_fix:
        variant = "maskrl"
    algo, policy, policy_kwargs = bench.variants[variant]
    timers = Timers(clock=time.process_time if vec_env == "dummy" else time.perf_counter)
    env_kwargs = env_kwargs if env_kwargs is not None else bench.env_kwargs
    raw_venv = make_venv(bench.env_id, variant, vec_env, n_envs, bench.drop_only_action_mask, env_kwargs)
    venv = TimedVecEnv(raw_venv, timers) if hooks else raw_venv
    model = algo(
        policy,
        venv,
        n_steps=bench.n_steps,
        batch_size=bench.n_steps,
        n_epochs=n_epochs,
        learning_rate=3e-4,
        policy_kwargs=dict(policy_kwargs),
        seed=0,
        device="cpu",
    )
    if before_fix:
        model.policy.forward = _forward_before_fix(model.policy)  # type: ignore[method-assign]
    if not hooks:
        return model, timers
    model.collect_rollouts = _timed(model.collect_rollouts, timers, "rollout")  # type: ignore[method-assign]
    model.train = _timed(model.train, timers, "update")  # type: ignore[method-assign]
    model.policy.forward = _timed(model.policy.forward, timers, "forward")  # type: ignore[method-assign]
    return model, timers


def run_cell(
    bench: EnvBench,
    vec_env: str,
    n_envs: int,
    iterations: int,
    repeats: int,
    n_epochs: int,
    variants: tuple[str, ...] = VARIANTS,
) -> dict[str, Any]:
    """Time the variants round-robin on one (vec env, n_envs) cell."""
    models = {variant: build(bench, variant, vec_env, n_envs, n_epochs) for variant in variants}
    steps = iterations * bench.n_steps * n_envs
    for model, _ in models.values():
        model.learn(bench.n_steps * n_envs)  # warm-up: first rollout, first update
    rates: dict[str, list[float]] = {variant: [] for variant in variants}
    cpu_rates: dict[str, list[float]] = {variant: [] for variant in variants}
    parts: dict[str, dict[str, list[float]]] = {variant: {part: [] for part in PARTS} for variant in variants}
    order = list(models)
    for repeat in range(repeats):
        # Rotate which variant goes first, so no variant always runs right after the same one.
        for variant in order[repeat % len(order) :] + order[: repeat % len(order)]:
            model, timers = models[variant]
            timers.reset()
            start, cpu_start = time.perf_counter(), time.process_time()
            model.learn(steps, reset_num_timesteps=False)
            rates[variant].append(steps / (time.perf_counter() - start))
            cpu_rates[variant].append(steps / (time.process_time() - cpu_start))
            per_step = 1e6 / steps  # seconds -> µs per env step
            parts[variant]["env"].append(timers.env * per_step)
            parts[variant]["forward"].append(timers.forward * per_step)
            parts[variant]["rollout_other"].append((timers.rollout - timers.env - timers.forward) * per_step)
            parts[variant]["update"].append(timers.update * per_step)
    for model, _ in models.values():
        model.get_env().close()
    med = {variant: statistics.median(values) for variant, values in rates.items()}
    before = {}
    if "maskrl_before" in med:
        before = {
            "ratio_before_unmasked": med["maskrl_before"] / med["unmasked"],
            "ratio_before_maskable": med["maskrl_before"] / med["maskable"],
            "ratio_maskrl_before": med["maskrl"] / med["maskrl_before"],
        }
    return {
        "vec_env": vec_env,
        "n_envs": n_envs,
        "steps_per_timed_call": steps,
        "steps_per_s": rates,
        "median_steps_per_s": med,
        "ratio_maskrl_unmasked": med["maskrl"] / med["unmasked"],
        "ratio_maskrl_maskable": med["maskrl"] / med["maskable"],
        "ratio_maskable_unmasked": med["maskable"] / med["unmasked"],
        # CPU time of this process: with DummyVecEnv that is all the work, and it barely moves with machine load
        # (time the process waits for a core is not counted); with SubprocVecEnv it misses the workers' time.
        "median_cpu_steps_per_s": {v: statistics.median(x) for v, x in cpu_rates.items()},
        "cpu_steps_per_s": cpu_rates,
        "us_per_step": {v: {p: statistics.median(x) for p, x in parts[v].items()} for v in variants},
        **before,
    }


def profile(bench: EnvBench, variant: str, vec_env: str, n_envs: int, iterations: int, n_epochs: int) -> None:
    """cProfile ``iterations`` PPO iterations of one variant (after a warm-up one); print the top 30 by own time."""
    model, _ = build(bench, variant, vec_env, n_envs, n_epochs, hooks=False)
    model.learn(bench.n_steps * n_envs)
    profiler = cProfile.Profile()
    profiler.enable()
    model.learn(bench.n_steps * n_envs * iterations, reset_num_timesteps=False)
    profiler.disable()
    model.get_env().close()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def print_tables(env_name: str, cells: list[dict[str, Any]]) -> None:
    """Markdown tables: throughput and ratios, then the breakdown."""
    print(f"\n### {env_name}: env steps per second (median) and ratios of medians\n")
    print("| vec env | n_envs | maskrl | maskable | unmasked | maskrl/unmasked | maskrl/maskable | maskable/unmasked |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in cells:
        m = c["median_steps_per_s"]
        if "maskrl_before" in m:
            print(
                f"| {c['vec_env']} | {c['n_envs']} | before fix: {m['maskrl_before']:.0f} | | "
                f"| {c['ratio_before_unmasked']:.2f} | {c['ratio_before_maskable']:.2f} "
                f"| maskrl/before {c['ratio_maskrl_before']:.2f} |"
            )
        print(
            f"| {c['vec_env']} | {c['n_envs']} | {m['maskrl']:.0f} | {m['maskable']:.0f} | {m['unmasked']:.0f} "
            f"| {c['ratio_maskrl_unmasked']:.2f} | {c['ratio_maskrl_maskable']:.2f} "
            f"| {c['ratio_maskable_unmasked']:.2f} |"
        )
    print(f"\n### {env_name}: DummyVecEnv, from the process's CPU time (robust to machine load)\n")
    print("| n_envs | maskrl/unmasked | maskrl/maskable | maskable/unmasked |")
    print("|---:|---:|---:|---:|")
    for c in cells:
        if c["vec_env"] == "dummy":
            cpu = c["median_cpu_steps_per_s"]
            print(
                f"| {c['n_envs']} | {cpu['maskrl'] / cpu['unmasked']:.2f} | {cpu['maskrl'] / cpu['maskable']:.2f} "
                f"| {cpu['maskable'] / cpu['unmasked']:.2f} |"
            )
    print(f"\n### {env_name}: breakdown, µs per env step (median; CPU time for dummy, wall time for subproc)\n")
    print("| vec env | n_envs | variant | env step | policy forward | rollout other | PPO update | total |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for c in cells:
        for v in c["us_per_step"]:
            p = c["us_per_step"][v]
            rate = c["median_cpu_steps_per_s" if c["vec_env"] == "dummy" else "median_steps_per_s"][v]
            total = 1e6 / rate
            print(
                f"| {c['vec_env']} | {c['n_envs']} | {v} | {p['env']:.1f} | {p['forward']:.1f} "
                f"| {p['rollout_other']:.1f} | {p['update']:.1f} | {total:.1f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=list(ENV_BENCHES), default="kart")
    parser.add_argument("--vec-envs", nargs="+", default=["dummy", "subproc"], choices=["dummy", "subproc"])
    parser.add_argument("--n-envs", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--iterations", type=int, default=None, help="PPO iterations per timed learn() call")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per variant (default 5; herd 3)")
    parser.add_argument("--n-epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small nets)")
    parser.add_argument("--out", type=Path, default=None, help="default docs/benchmarks/training_<env>.json")
    parser.add_argument("--quick", action="store_true", help="dummy only, 2 envs, 1 repeat, 1 iteration")
    parser.add_argument(
        "--profile",
        choices=[*VARIANTS, "maskrl_before"],
        help="instead of timing: cProfile one variant's learn() on the first --vec-envs/--n-envs cell, print the top",
    )
    parser.add_argument(
        "--with-before",
        action="store_true",
        help="also time maskrl with its forward as before the fix (log_prob re-validates the sampled actions)",
    )
    args = parser.parse_args()
    bench = ENV_BENCHES[args.env]
    if args.iterations is None:
        args.iterations = 1 if args.env == "herd" else 2
    if args.repeats is None:
        args.repeats = 3 if args.env == "herd" else 5
    if args.quick:
        args.vec_envs, args.n_envs, args.repeats, args.iterations = ["dummy"], [2], 1, 1
    torch.set_num_threads(args.threads)
    out = args.out or OUT_DIR / f"training_{args.env}{'_quick' if args.quick else ''}.json"

    if args.profile:
        profile(bench, args.profile, args.vec_envs[0], args.n_envs[0], args.iterations * args.repeats, args.n_epochs)
        return
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {bench.env_id}: {bench.notes}")
    print(f"PPO n_steps={bench.n_steps} batch_size={bench.n_steps} n_epochs={args.n_epochs}; {load_before}", flush=True)
    started = time.time()
    variants = (*VARIANTS, "maskrl_before") if args.with_before else VARIANTS
    cells = []
    for vec_env in args.vec_envs:
        for n_envs in args.n_envs:
            cell = run_cell(bench, vec_env, n_envs, args.iterations, args.repeats, args.n_epochs, variants)
            cells.append(cell)
            print(
                f"{vec_env} x {n_envs}: "
                + ", ".join(f"{v} {cell['median_steps_per_s'][v]:.0f}/s" for v in variants)
                + f"; maskrl/unmasked {cell['ratio_maskrl_unmasked']:.2f}, "
                f"maskrl/maskable {cell['ratio_maskrl_maskable']:.2f}"
                + (
                    f"; CPU-time ratios {cpu['maskrl'] / cpu['unmasked']:.2f}, {cpu['maskrl'] / cpu['maskable']:.2f}"
                    if (cpu := cell["median_cpu_steps_per_s"]) and vec_env == "dummy"
                    else ""
                ),
                flush=True,
            )
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print_tables(args.env, cells)
    print(f"\n{time.time() - started:.0f} s; load before: {load_before}; after: {load_after}")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "env": bench.env_id,
        "notes": bench.notes,
        "ppo": {"n_steps": bench.n_steps, "batch_size": bench.n_steps, "n_epochs": args.n_epochs},
        "iterations_per_call": args.iterations,
        "repeats": args.repeats,
        "variants": list(variants),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "uptime_before": load_before,
        "uptime_after": load_after,
        "seconds": time.time() - started,
        "cells": cells,
    }
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
