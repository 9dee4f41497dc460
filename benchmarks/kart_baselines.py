"""Scripted-policy baselines for ``maskrl/Kart-v0``: do items matter, and how far is random from a decent driver?

Runs the same seeds for four policies (uniformly random valid actions, always accelerate, the heuristic driver
without items, the heuristic driver with items) and prints a markdown table::

    python -m benchmarks.kart_baselines --episodes 100 --seed 0 --n-item-types 4
"""

import argparse
from collections.abc import Callable

import numpy as np

from benchmarks.common import command_line
from maskrl.envs.kart import ACCELERATE, KartEnv, scripted_action

Policy = Callable[[KartEnv, np.random.Generator], int]


def _random_valid(env: KartEnv, rng: np.random.Generator) -> int:
    return int(rng.choice(np.flatnonzero(env.action_masks())))


POLICIES: dict[str, Policy] = {
    "random valid": _random_valid,
    "always accelerate": lambda env, rng: ACCELERATE,
    "heuristic, no items": lambda env, rng: scripted_action(env, use_items=False),
    "heuristic, items": lambda env, rng: scripted_action(env, use_items=True),
}


def run(policy: Policy, episodes: int, seed: int, **env_kwargs: int) -> dict[str, np.ndarray]:
    """Play ``episodes`` episodes with seeds ``seed, seed + 1, ...`` and return per-episode statistics.

    :param policy: maps (env, rng) to an action.
    :param episodes: number of episodes.
    :param seed: seed of the first episode; the policy's own RNG is seeded with it too.
    :param env_kwargs: passed to :class:`KartEnv`.
    :return: arrays ``return``, ``rank``, ``win``, ``items_used``, ``length``, ``finished``.
    """
    env = KartEnv(**env_kwargs)
    rng = np.random.default_rng(seed)
    rows = []
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        total, done, info = 0.0, False, {}
        while not done:
            _, reward, terminated, truncated, info = env.step(policy(env, rng))
            total += reward
            done = terminated or truncated
        stats = info["episode_stats"]
        rows.append(
            (
                total,
                stats["final_rank"],
                stats["final_rank"] == 1,
                stats["items_used"],
                stats["steps"],
                stats["finished"],
            ),
        )
    env.close()
    cols = np.array(rows, dtype=np.float64).T
    return dict(zip(("return", "rank", "win", "items_used", "length", "finished"), cols, strict=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-item-types", type=int, default=4)
    args = parser.parse_args(argv)

    print(f"`{command_line(__spec__.name, argv)}`\n")
    print(
        f"maskrl/Kart-v0, n_item_types={args.n_item_types}, {args.episodes} episodes (seeds {args.seed}.."
        f"{args.seed + args.episodes - 1})\n"
    )
    print("| policy | return (mean ± std) | mean final rank | win rate | items used | episode length | finished |")
    print("|---|---|---|---|---|---|---|")
    for name, policy in POLICIES.items():
        r = run(policy, args.episodes, args.seed, n_item_types=args.n_item_types)
        print(
            f"| {name} | {r['return'].mean():.2f} ± {r['return'].std():.2f} | {r['rank'].mean():.2f} | "
            f"{r['win'].mean():.0%} | {r['items_used'].mean():.1f} | {r['length'].mean():.0f} | "
            f"{r['finished'].mean():.0%} |"
        )


if __name__ == "__main__":
    main()
