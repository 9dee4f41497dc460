"""Scripted-policy baselines for ``maskrl/Kart-v1``: do items matter, and how far is random from a decent driver?

The races are those of ``maskrl/Kart-v0`` too (the versions differ only in the observation).

Runs the same seeds for four policies (uniformly random valid actions, always accelerate, the heuristic driver
without items, the heuristic driver with items) and prints a markdown table::

    python -m benchmarks.kart_baselines --episodes 100 --seed 0 --n-item-types 4

``--model RUN_OR_ZIP`` (repeatable) adds trained agents to the table, on the same races: a run folder of an algorithm
that reads the mask from the observation (``ppo``, ``a2c``, ...; its best model, else its final one) or one of its
model zips, loaded safely (:func:`maskrl.agents.safe_load.load_model_safely`) and acting deterministically. Agents
trained on ``maskrl/Kart-v0`` drive the same races, seeing the observation without its skid warnings::

    python -m benchmarks.kart_baselines --model runs/ppo/Kart-v1_1 --model runs/ppo/Kart-v1_1/final_model.zip
"""

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import command_line
from maskrl.envs.kart import ACCELERATE, KartEnv, scripted_action

Observation = dict[str, np.ndarray]
Policy = Callable[[KartEnv, Observation, np.random.Generator], int]


def _random_valid(env: KartEnv, obs: Observation, rng: np.random.Generator) -> int:
    return int(rng.choice(np.flatnonzero(env.action_masks())))


POLICIES: dict[str, Policy] = {
    "random valid": _random_valid,
    "always accelerate": lambda env, obs, rng: ACCELERATE,
    "heuristic, no items": lambda env, obs, rng: scripted_action(env, use_items=False),
    "heuristic, items": lambda env, obs, rng: scripted_action(env, use_items=True),
}


def model_policy(path: str, **env_kwargs: int) -> Policy:
    """The deterministic policy of a trained agent: a run folder (its best model, else its final one) or a model zip.

    :param env_kwargs: those of the races (:func:`run`'s), which the model's observation space must fit
    :raises ValueError: in one line, for a model that cannot be loaded, does not read the mask from the observation or
        was trained on other races
    """
    from maskrl.agents.registry import get_algo
    from maskrl.agents.run_folder import RunFolder
    from maskrl.agents.safe_load import load_model_safely, read_config

    zip_path = Path(path)
    if not zip_path.exists():
        raise ValueError(f"{path}: no such run folder or model zip")
    config = read_config(zip_path if zip_path.is_dir() else RunFolder.of_model(zip_path).path)
    if not get_algo(config["algo"]).sees_mask:
        raise ValueError(f"{path}: --algo {config['algo']} does not read the mask from the observation")
    model = load_model_safely(path, device="cpu")
    v0 = config["env"] == "maskrl/Kart-v0"
    if config["env"] not in ("maskrl/Kart-v0", "maskrl/Kart-v1") or (
        model.observation_space != KartEnv(skid_warnings=not v0, **env_kwargs).observation_space
    ):
        raise ValueError(f"{path}: trained on {config['env']} {config.get('env_kwargs') or {}}, not on these races")

    def policy(env: KartEnv, obs: Observation, rng: np.random.Generator) -> int:
        if v0:
            obs = {**obs, "observation": np.delete(obs["observation"], env.obs_layout["skid"])}
        action, _ = model.predict(obs, deterministic=True)
        return int(action)

    return policy


def run(policy: Policy, episodes: int, seed: int, **env_kwargs: int) -> dict[str, np.ndarray]:
    """Play ``episodes`` episodes with seeds ``seed, seed + 1, ...`` and return per-episode statistics.

    :param policy: maps (env, observation, rng) to an action.
    :param episodes: number of episodes.
    :param seed: seed of the first episode; the policy's own RNG is seeded with it too.
    :param env_kwargs: passed to :class:`KartEnv`.
    :return: arrays ``return``, ``rank``, ``win``, ``items_used``, ``length``, ``finished``.
    """
    env = KartEnv(**env_kwargs)
    rng = np.random.default_rng(seed)
    rows = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, done, info = 0.0, False, {}
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(env, obs, rng))
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
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="RUN_OR_ZIP",
        help="also play a trained agent (run folder or model zip; masked algos), deterministically; repeatable",
    )
    args = parser.parse_args(argv)
    policies = dict(POLICIES)
    for path in args.model:
        try:
            policies[path] = model_policy(path, n_item_types=args.n_item_types)
        except ValueError as error:
            parser.error(str(error))

    print(f"`{command_line(__spec__.name, argv)}`\n")
    print(
        f"maskrl/Kart-v1, n_item_types={args.n_item_types}, {args.episodes} episodes (seeds {args.seed}.."
        f"{args.seed + args.episodes - 1})\n"
    )
    print("| policy | return (mean ± std) | mean final rank | win rate | items used | episode length | finished |")
    print("|---|---|---|---|---|---|---|")
    for name, policy in policies.items():
        r = run(policy, args.episodes, args.seed, n_item_types=args.n_item_types)
        print(
            f"| {name} | {r['return'].mean():.2f} ± {r['return'].std():.2f} | {r['rank'].mean():.2f} | "
            f"{r['win'].mean():.0%} | {r['items_used'].mean():.1f} | {r['length'].mean():.0f} | "
            f"{r['finished'].mean():.0%} |"
        )


if __name__ == "__main__":
    main()
