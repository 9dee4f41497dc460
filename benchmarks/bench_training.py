"""End-to-end PPO training throughput on Kart: maskrl's masked PPO vs MaskablePPO vs unmasked PPO.

All three use the same PPO hyperparameters and network; they differ only in how the mask reaches
the policy:

- ``maskrl``: unchanged SB3 ``PPO`` + ``MaskedActorCriticPolicy``; the int8 mask travels in the
  ``Dict`` observation;
- ``maskable``: sb3-contrib ``MaskablePPO``; the mask is fetched with ``env.action_masks()`` each
  step and stored as float32 in its own buffer;
- ``unmasked``: plain ``PPO`` + ``MlpPolicy`` on the plain ``Box`` observation, no mask at all.

Each variant first trains one PPO iteration (warm-up), then the timed ``learn`` calls (4 PPO iterations each) run
round-robin over the variants, so that machine noise hits all of them alike; the median over
repeats is reported as env steps per second, with ratios to the other variants.

Run: ``python benchmarks/bench_training.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from maskrl.agents.envs import make_vec_env
from maskrl.policies import MaskedActorCriticPolicy

ENV = "maskrl/Kart-v0"
PPO_KWARGS: dict[str, Any] = dict(
    n_steps=256, batch_size=256, n_epochs=4, learning_rate=3e-4, policy_kwargs=dict(net_arch=[64, 64])
)
VARIANTS = {
    "maskrl": (PPO, MaskedActorCriticPolicy, True),
    "maskable": (MaskablePPO, "MlpPolicy", False),
    "unmasked": (PPO, "MlpPolicy", False),
}


def build(variant: str, vec_env: str, n_envs: int, env_kwargs: dict[str, Any]) -> BaseAlgorithm:
    algo, policy, sees_mask = VARIANTS[variant]
    env = make_vec_env(ENV, n_envs, seed=0, vec_env=vec_env, env_kwargs=env_kwargs, sees_mask=sees_mask)
    return algo(policy, env, seed=0, device="cpu", **PPO_KWARGS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vec-envs", nargs="+", default=["dummy", "subproc"], choices=["dummy", "subproc"])
    parser.add_argument("--n-envs", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--iterations", type=int, default=4, help="PPO iterations per timed learn() call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small nets)")
    parser.add_argument("--n-item-types", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="dummy only, 4 envs, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.vec_envs, args.n_envs, args.repeats, args.iterations = ["dummy"], [4], 1, 1
    env_kwargs = {"n_item_types": args.n_item_types}
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; env {ENV} {env_kwargs}; PPO {PPO_KWARGS}")
    print()
    print(
        "| vec env | n_envs | maskrl (steps/s) | maskable (steps/s) | unmasked (steps/s) "
        "| maskrl/unmasked | maskrl/maskable | maskable/unmasked |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for vec_env in args.vec_envs:
        for n_envs in args.n_envs:
            models = {variant: build(variant, vec_env, n_envs, env_kwargs) for variant in VARIANTS}
            steps = args.iterations * PPO_KWARGS["n_steps"] * n_envs
            for model in models.values():
                model.learn(PPO_KWARGS["n_steps"] * n_envs)  # warm-up: first rollout, first update
            rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
            for _ in range(args.repeats):
                for variant, model in models.items():
                    start = time.perf_counter()
                    model.learn(steps, reset_num_timesteps=False)
                    rates[variant].append(steps / (time.perf_counter() - start))
            for model in models.values():
                model.get_env().close()
            med = {variant: statistics.median(values) for variant, values in rates.items()}
            # Ratios of medians; each timed call is several PPO iterations (rollout + update) long.
            print(
                f"| {vec_env} | {n_envs} | {med['maskrl']:.0f} | {med['maskable']:.0f} | {med['unmasked']:.0f} "
                f"| {med['maskrl'] / med['unmasked']:.2f} | {med['maskrl'] / med['maskable']:.2f} "
                f"| {med['maskable'] / med['unmasked']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
