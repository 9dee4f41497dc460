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
SubprocVecEnv (whose env time is mostly waiting for the workers); four clock reads per env step:

- ``env``: ``step_async`` + ``step_wait`` of a thin ``VecEnvWrapper`` around the vec env (the workers' time and
  IPC for ``SubprocVecEnv``);
- ``forward``: the policy's ``forward`` during the rollout (features, distribution, sampling, log-prob);
- ``rollout other``: the rest of ``collect_rollouts``: ``obs_as_tensor``, rollout-buffer ``add`` (incl. its copies
  of the masks), MaskablePPO's ``env_method("action_masks")``, callbacks, the final ``predict_values``;
- ``update``: ``train()``, PPO's gradient epochs over the buffer.

Each is reported in µs per env step (median over the repeats).

Run (as in docs/benchmarks.md)::

    python -m benchmarks.bench_training --env kart   # 2 PPO iterations per call, 5 repeats
    python -m benchmarks.bench_training --env grid   # 2 iterations, 5 repeats
    python -m benchmarks.bench_training --env herd   # 1 iteration, 3 repeats (MaskablePPO is slow)

``--profile maskrl`` (or another variant) runs cProfile on the first cell instead of timing (e.g.
``--env kart --vec-envs dummy --n-envs 1 --profile maskrl``). ``--quick`` for a smoke run.
Writes ``docs/benchmarks/training_<env>.json`` (``--out`` to change).
"""

from __future__ import annotations

import cProfile
import functools
import pstats
from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from benchmarks.common import EnvBench, breakdown_table, build, throughput_parser, time_cell, time_cells, write_json
from maskrl.masks import GRID_KEY
from maskrl.policies import EntityAttentionExtractor, GridNetPolicy, MaskedActorCriticPolicy, MaskedMultiInputPolicy

OUT_DIR = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
VARIANTS = ("maskrl", "maskable", "unmasked")


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
    # sb3-contrib#283: MultiBinary(339) with masks, MaskablePPO's slowest case.
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


def run_cell(bench: EnvBench, vec_env: str, n_envs: int, iterations: int, repeats: int, n_epochs: int) -> dict:
    """Time the three variants round-robin on one (vec env, n_envs) cell; add the ratios of their medians."""
    cell = time_cell(bench, VARIANTS, vec_env, n_envs, iterations, repeats, n_epochs)
    med = cell["median_steps_per_s"]
    cell["ratio_maskrl_unmasked"] = med["maskrl"] / med["unmasked"]
    cell["ratio_maskrl_maskable"] = med["maskrl"] / med["maskable"]
    cell["ratio_maskable_unmasked"] = med["maskable"] / med["unmasked"]
    return cell


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


def describe_cell(cell: dict[str, Any]) -> str:
    """One line on a timed cell: each variant's steps per second and the ratios (of CPU time too for dummy)."""
    line = ", ".join(f"{v} {cell['median_steps_per_s'][v]:.0f}/s" for v in VARIANTS)
    line += (
        f"; maskrl/unmasked {cell['ratio_maskrl_unmasked']:.2f}, maskrl/maskable {cell['ratio_maskrl_maskable']:.2f}"
    )
    if cell["vec_env"] == "dummy":
        cpu = cell["median_cpu_steps_per_s"]
        line += f"; CPU-time ratios {cpu['maskrl'] / cpu['unmasked']:.2f}, {cpu['maskrl'] / cpu['maskable']:.2f}"
    return line


def print_tables(env_name: str, cells: list[dict[str, Any]]) -> None:
    """Markdown tables: throughput and ratios, then the breakdown."""
    print(f"\n### {env_name}: env steps per second (median) and ratios of medians\n")
    print("| vec env | n_envs | maskrl | maskable | unmasked | maskrl/unmasked | maskrl/maskable | maskable/unmasked |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in cells:
        m = c["median_steps_per_s"]
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
    print(breakdown_table(cells))


def main() -> None:
    parser = throughput_parser(__doc__, ENV_BENCHES, "kart", [1, 2, 4, 8])
    parser.add_argument("--iterations", type=int, default=None, help="PPO iterations per timed learn() call")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per variant (default 5; herd 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small nets)")
    parser.add_argument(
        "--profile",
        choices=VARIANTS,
        help="instead of timing: cProfile one variant's learn() on the first --vec-envs/--n-envs cell, print the top",
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
    if args.profile:
        profile(bench, args.profile, args.vec_envs[0], args.n_envs[0], args.iterations * args.repeats, args.n_epochs)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {bench.env_id}: {bench.notes}")
    print(f"PPO n_steps={bench.n_steps} batch_size={bench.n_steps} n_epochs={args.n_epochs}", flush=True)
    timing = time_cells(
        args.vec_envs,
        args.n_envs,
        lambda vec_env, n_envs: run_cell(bench, vec_env, n_envs, args.iterations, args.repeats, args.n_epochs),
        describe_cell,
    )
    print_tables(args.env, timing["cells"])
    print(f"\n{timing['seconds']:.0f} s; load before: {timing['uptime_before']}; after: {timing['uptime_after']}")
    result = {
        "env": bench.env_id,
        "notes": bench.notes,
        "ppo": {"n_steps": bench.n_steps, "batch_size": bench.n_steps, "n_epochs": args.n_epochs},
        "iterations_per_call": args.iterations,
        "repeats": args.repeats,
        "variants": list(VARIANTS),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **timing,
    }
    write_json(args.out or OUT_DIR / f"training_{args.env}{'_quick' if args.quick else ''}.json", result)


if __name__ == "__main__":
    main()
