"""Collect reward-free trajectories from an env into a dataset file, for masked trajectory pretraining.

``python -m maskrl.representation.collect --env maskrl/Kart-v0 --steps 50000 --out data/kart_random.npz``

The behaviour policy is either uniformly random over the **valid** actions (the action mask; the default) or a
trained model (``--model``: a run folder, loaded safely from its ``config.yml`` and weights as in ``evaluate.py``,
so its config may only name registered env ids and allowed classes; or a model zip: one outside a run folder needs
``--algo`` and, like any model with ``--unsafe-load``, is loaded with SB3's unpickling loader, with a warning); a run
folder's model plays in its run's env and env kwargs unless ``--env``/``--env-kwargs`` say otherwise. The file
format is described in :mod:`maskrl.representation.dataset`: observations, actions, action masks and episode
starts, no rewards.

The env's observation must be a ``Dict`` with a flat ``Box`` under ``"observation"`` (and the mask under
``"action_mask"``, or an ``action_masks()`` method), e.g. ``maskrl/Kart-v0``; other envs get a one-line error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3.common.base_class import BaseAlgorithm

from maskrl.agents.env_setup import make_masked_env
from maskrl.agents.hyperparams import parse_key_values
from maskrl.agents.safe_load import load_model_safely
from maskrl.cli import ArgumentParser, UserError, positive_int, run_cli
from maskrl.masks import ACTION_MASK_KEY
from maskrl.representation.dataset import TrajectoryDataset, save_dataset

__all__ = ["check_flat_observation_env", "collect", "main"]


def check_flat_observation_env(env: gym.Env, env_id: str) -> int:
    """Check that ``env`` has what trajectory models need and return the observation size.

    :raises ValueError: for an observation that is not a ``Dict`` with a flat ``Box`` ``"observation"``, or an
        action space other than ``Discrete`` and ``Box``
    """
    space = env.observation_space
    keys = list(space.spaces) if isinstance(space, spaces.Dict) else []
    obs_space = space.spaces.get("observation") if isinstance(space, spaces.Dict) else None
    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
        described = f"keys {', '.join(keys)}" if keys else str(space)
        raise ValueError(
            f"{env_id}: trajectory models need a flat Box under the 'observation' key, its observation has {described}"
        )
    if not isinstance(env.action_space, spaces.Discrete | spaces.Box) or (
        isinstance(env.action_space, spaces.Box) and len(env.action_space.shape) != 1
    ):
        raise ValueError(
            f"{env_id}: trajectory models need a Discrete or flat Box action space, got {env.action_space}"
        )
    return int(obs_space.shape[0])


def _model_input(model: BaseAlgorithm, env: gym.Env, obs: dict[str, np.ndarray]) -> Any:
    """The part of the env's observation that ``model`` was trained on (with or without the mask)."""
    if model.observation_space == env.observation_space:
        return obs
    if model.observation_space == env.observation_space["observation"]:
        return obs["observation"]
    raise ValueError(
        f"the model expects observations {model.observation_space} but the env gives {env.observation_space} "
        "(was it trained on another env or with other env kwargs?)"
    )


def collect(
    env_id: str,
    n_steps: int,
    env_kwargs: dict[str, Any] | None = None,
    model: BaseAlgorithm | None = None,
    deterministic: bool = False,
    seed: int = 0,
) -> TrajectoryDataset:
    """Play ``n_steps`` env steps (the last episode may be cut short) and record them.

    :param env_id: gymnasium id
    :param n_steps: number of steps to record
    :param env_kwargs: env constructor arguments
    :param model: behaviour policy; ``None`` = uniformly random over the valid actions
    :param deterministic: take the model's mode instead of sampling
    :param seed: seeds the env's first reset and the random policy
    :raises ValueError: for an unsuitable env or a model of another env, in one line
    """
    env = make_masked_env(env_id, env_kwargs)
    try:
        obs_dim = check_flat_observation_env(env, env_id)
        if model is not None and model.action_space != env.action_space:
            raise ValueError(f"the model acts in {model.action_space} but {env_id} expects {env.action_space}")
        discrete = isinstance(env.action_space, spaces.Discrete)
        rng = np.random.default_rng(seed)
        env.action_space.seed(seed)
        observations = np.zeros((n_steps, obs_dim), dtype=np.float32)
        actions = np.zeros(n_steps if discrete else (n_steps, env.action_space.shape[0]), dtype=np.float32)
        mask_space = env.observation_space.spaces.get(ACTION_MASK_KEY)
        mask_size = 0 if mask_space is None else int(mask_space.shape[0])
        masks = np.ones((n_steps, mask_size), dtype=bool)
        starts = np.zeros(n_steps, dtype=bool)
        obs, _ = env.reset(seed=seed)
        starts[0] = True
        episodes = 0
        for t in range(n_steps):
            mask = np.asarray(obs[ACTION_MASK_KEY], dtype=bool) if mask_size else None
            observations[t] = obs["observation"]
            if mask is not None:
                masks[t] = mask
            if model is not None:
                extra = {"action_masks": mask} if isinstance(model, MaskablePPO) and mask is not None else {}
                action, _ = model.predict(_model_input(model, env, obs), deterministic=deterministic, **extra)
            elif discrete and mask is not None:
                valid = np.flatnonzero(mask)
                if len(valid) == 0:
                    raise ValueError(f"{env_id} gave an observation whose action mask allows no action")
                action = rng.choice(valid)
            else:
                action = env.action_space.sample()
            actions[t] = action
            obs, _, terminated, truncated, _ = env.step(int(action) if discrete else np.asarray(action))
            if terminated or truncated:
                episodes += 1
                obs, _ = env.reset()
                if t + 1 < n_steps:
                    starts[t + 1] = True
    finally:
        env.close()
    metadata = {
        "env": env_id,
        "env_kwargs": dict(env_kwargs or {}),
        "action_space": "discrete" if discrete else "box",
        "n_actions": int(env.action_space.n) if discrete else int(env.action_space.shape[0]),
        "policy": "random" if model is None else type(model).__name__,
        "deterministic": deterministic,
        "seed": seed,
        "complete_episodes": episodes,
    }
    return TrajectoryDataset(observations, actions.astype(np.int64) if discrete else actions, masks, starts, metadata)


def _load_behaviour_model(
    path: Path, algo: str | None, device: str, unsafe_load: bool = False
) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """The model and its run config (empty for a zip outside a run folder).

    :param path: run folder or model zip
    :param algo: ``--algo`` of a zip outside a run folder (or with ``unsafe_load``, instead of the config's)
    :param device: torch device
    :param unsafe_load: load with SB3's ``ALGO.load`` even in a run folder (it unpickles the zip), with a warning
    """
    # Imported here: maskrl.agents.evaluation pulls in imageio, which collection without a model does not need.
    from maskrl.agents.evaluation import load_model, locate_model

    model_path, config = locate_model(path, "best")
    if config is not None and not unsafe_load:
        return load_model_safely(model_path, config, device), config
    algo = algo or (config or {}).get("algo")
    if algo is None:
        raise UserError(f"{model_path} is not in a run folder: pass --algo")
    why = "--unsafe-load" if unsafe_load else "it is not in a run folder with a config.yml"
    print(
        f"collect_trajectories: warning: loading {model_path} with SB3 ({why}), which unpickles it and can run code "
        "hidden in it: only load files you trust",
        file=sys.stderr,
    )
    return load_model(algo, model_path, device), config or {}


def build_parser() -> argparse.ArgumentParser:
    from maskrl.agents.registry import ALGOS

    parser = ArgumentParser(description="Collect reward-free trajectories into a dataset file.", prog="collect")
    parser.add_argument("--env", help="gymnasium env id (default: the model's run config, else maskrl/Kart-v0)")
    parser.add_argument(
        "--env-kwargs", nargs="*", metavar="KEY=VALUE", help="env constructor arguments (override the run config's)"
    )
    parser.add_argument("-n", "--steps", type=positive_int, default=50_000, help="env steps (default: 50000)")
    parser.add_argument("--out", type=Path, required=True, help="dataset file to write (.npz)")
    parser.add_argument("--model", type=Path, help="behaviour policy: run folder or model zip (default: random)")
    parser.add_argument("--algo", choices=list(ALGOS), help="algo of a model zip outside a run folder")
    parser.add_argument("--deterministic", action="store_true", help="take the model's mode instead of sampling")
    parser.add_argument("--seed", type=int, default=0, help="seed of the env and the random policy (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device of the model (default: cpu)")
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help="load --model with SB3's ALGO.load, which unpickles the zip, and make any env id of its config "
        "(module:EnvId imports module): either can run code from the run folder, so only for runs you trust",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""

    def _run() -> None:
        args = build_parser().parse_args(argv)
        out = args.out
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UserError(f"cannot write {out}: {out.parent} is not a folder") from None
        try:
            model, config = None, {}
            if args.model is not None:
                model, config = _load_behaviour_model(args.model, args.algo, args.device, args.unsafe_load)
            # A run folder's model plays in the env it was trained on unless told otherwise.
            env_id = args.env or config.get("env") or "maskrl/Kart-v0"
            env_kwargs = dict(config.get("env_kwargs") or {}) if env_id == config.get("env") else {}
            env_kwargs.update(parse_key_values(args.env_kwargs, "--env-kwargs"))
            dataset = collect(env_id, args.steps, env_kwargs, model, args.deterministic, args.seed)
        except ValueError as error:
            raise UserError(str(error)) from None
        try:
            save_dataset(dataset, out)
        except OSError as error:
            raise UserError(f"cannot write {out}: {error.strerror}") from None
        meta = dataset.metadata
        print(
            f"wrote {out}: {len(dataset)} steps, {dataset.n_episodes} episodes ({meta['complete_episodes']} complete), "
            f"policy {meta['policy']}, obs_dim {dataset.obs_dim}, {json.dumps(meta['action_space'])} actions"
        )

    run_cli(_run, "collect_trajectories")


if __name__ == "__main__":
    main()
