"""Train an agent: ``python train.py --algo ppo --env maskrl/Kart-v0``.

Every run gets its own folder ``<log-folder>/<algo>/<EnvName>_<N>`` (``N`` counts the runs of that algo on that env)
holding ``config.yml`` (the resolved configuration, with package versions and the device really used), TensorBoard
events under ``tb/``, periodic checkpoints, ``best_model.zip`` and ``evaluations.npz`` from the periodic evaluation,
``final_model.zip``, and ``final_eval.json``. Training shows a progress bar (on a terminal) and a short line every
10% of the run, and always ends with a summary: the run folder, the final and best evaluations and the command that
evaluates the run. ``--list`` lists the algorithms and maskrl's envs; any gymnasium env trains too (``ppo_nomask``
when it has no action masks).

Checkpoints (``checkpoints/``, see :mod:`maskrl.agents.checkpoints`) are written atomically; ``--resume RUN_DIR``
finishes an interrupted run from its newest loadable one, and Ctrl-C or SIGTERM saves one before exiting (status 130
or 143). A finished run is refused by ``--resume`` unless ``-n`` asks for a larger total, which extends it. A run
folder is locked while a process trains in it, so two ``--resume`` of one run cannot both write to it. Resuming
loads the checkpoints with SB3's ``ALGO.load`` (and ``VecNormalize.load``), which unpickle them: only resume runs
you made (a one-line warning says so). Policies with the entity-attention extractor also log an attention map to
TensorBoard during training and save the last one as ``attention_map.png``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Collection
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.logger import Logger, configure, make_output_format
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from maskrl.agents.callbacks import MaskStatsCallback, ProgressLineCallback, format_duration
from maskrl.agents.checkpoints import (
    RESEED_STRIDE,
    Checkpoint,
    CheckpointCallback,
    RunInUseError,
    handle_interrupts,
    list_checkpoints,
    load_latest,
    restore_rng_state,
    run_lock,
)
from maskrl.agents.env_setup import VEC_ENVS, UnknownEnvError, describe_env, make_masked_vec_env
from maskrl.agents.hyperparams import (
    check_our_keys,
    hyperparams_file,
    import_object,
    load_hyperparams,
    load_yaml,
    parse_key_values,
    resolve_algo_kwargs,
)
from maskrl.agents.registry import ALGOS, AlgoSpec, IncompatibleEnvError, check_algo_env, get_algo
from maskrl.cli import ArgumentParser, UserError, device, integer, positive_int, resolve_device, run_cli, seed
from maskrl.evaluate import evaluate_model, format_table, write_json
from maskrl.files import atomic_write
from maskrl.masks import ACTION_MASK_KEY
from maskrl.policies import EntityAttentionExtractor
from maskrl.policies.attention_plots import AttentionMapCallback
from maskrl.untrusted import check_npz, first_line, read_json

DEFAULT_ENV = "maskrl/Kart-v0"
DEFAULT_N_TIMESTEPS = 100_000
#: The fields of a run's config.yml that --resume uses, and their types.
RESUME_FIELDS: dict[str, type] = {
    "algo": str,
    "env": str,
    "env_kwargs": dict,
    "seed": int,
    "n_timesteps": int,
    "n_envs": int,
    "vec_env": str,
    "device": str,
    "eval_freq": int,
    "eval_episodes": int,
    "save_freq": int,
    "hyperparams": dict,
}
#: Largest evaluations.npz read back by --resume (one row per evaluation: a few kB).
MAX_EVALUATIONS_BYTES = 64 << 20
VERSIONED_PACKAGES = ("maskrl", "stable-baselines3", "sb3-contrib", "gymnasium", "torch", "numpy", "pettingzoo")
#: SB3 warnings that are about how maskrl wires things, not about anything the user chose.
QUIET_WARNINGS = ("Training and eval env are not of the same type",)
LIST_HINT = "train.py --list shows maskrl's envs and algos"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Train a masked RL agent.", prog="train.py")
    parser.add_argument(
        "--algo", default="ppo", choices=list(ALGOS), metavar="ALGO", help="algorithm (default: ppo; --list)"
    )
    parser.add_argument(
        "--env", default=DEFAULT_ENV, help=f"gymnasium env id, any of them (default: {DEFAULT_ENV}; --list)"
    )
    parser.add_argument("--list", action="store_true", help="list the algorithms and maskrl's envs, then exit")
    parser.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="env constructor arguments")
    parser.add_argument(
        "-n", "--n-timesteps", type=positive_int, help="env steps to train for, e.g. 100000 or 1e5 (default: from YAML)"
    )
    parser.add_argument("--seed", type=seed, default=0, help="random seed, >= 0 (default: 0)")
    parser.add_argument("--n-envs", type=positive_int, help="parallel envs (default: from YAML)")
    parser.add_argument("--vec-env", default="dummy", choices=list(VEC_ENVS), help="vectorisation (default: dummy)")
    parser.add_argument(
        "--eval-freq", type=integer, default=10_000, help="evaluate every N env steps; <= 0 disables (default: 10000)"
    )
    parser.add_argument("--eval-episodes", type=positive_int, default=10, help="episodes per evaluation (default: 10)")
    parser.add_argument(
        "--save-freq", type=integer, default=50_000, help="checkpoint every N env steps; <= 0 disables (default: 50000)"
    )
    parser.add_argument(
        "--keep-checkpoints", type=positive_int, default=3, help="checkpoints to keep, newest first (default: 3)"
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="finish an interrupted run from its newest checkpoint, as its config.yml says (other training "
        "options are ignored); with -n N, extend the run (finished or not) to N steps in all; the checkpoints are "
        "unpickled, which can run code hidden in them: only resume runs you made",
    )
    parser.add_argument("--log-folder", default="runs", help="where run folders go (default: runs/)")
    parser.add_argument("--hyperparams", nargs="*", metavar="KEY=VALUE", help="override YAML hyperparameters")
    parser.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument(
        "--progress-bar",
        action=argparse.BooleanOptionalAction,
        help="show a progress bar (default: with -v 1 or 2 on a terminal)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        type=int,
        default=1,
        choices=[0, 1, 2],
        help="0: the final summary only; 1: also a progress bar and a line every 10%% of the run; 2: also SB3's "
        "logs (default: 1)",
    )
    return parser


def package_versions() -> dict[str, str]:
    """Versions of the packages a run depends on, for the run's config."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def new_run_dir(log_folder: Path, algo: str, env_id: str) -> Path:
    """Create ``<log_folder>/<algo>/<EnvName>_<N>`` with the next free ``N``."""
    parent = log_folder / algo
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create log folder {parent}: {error.strerror}") from None
    name = env_id.split("/")[-1]
    taken = [int(p.name.rsplit("_", 1)[1]) for p in parent.glob(f"{name}_*") if p.name.rsplit("_", 1)[1].isdigit()]
    number = max(taken, default=0) + 1
    while True:
        run_dir = parent / f"{name}_{number}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:  # another train.py took that number in the meantime
            number += 1


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the YAML hyperparameters with the command line into the run's full configuration."""
    try:
        hyperparams = load_hyperparams(args.env, args.algo)
        hyperparams.update(parse_key_values(args.hyperparams, "--hyperparams"))
        check_our_keys(hyperparams)
        env_kwargs = dict(hyperparams.get("env_kwargs") or {})
        env_kwargs.update(parse_key_values(args.env_kwargs, "--env-kwargs"))
    except ValueError as error:
        raise UserError(str(error)) from None
    n_timesteps = args.n_timesteps or int(hyperparams.get("n_timesteps", DEFAULT_N_TIMESTEPS))
    n_envs = args.n_envs or int(hyperparams.get("n_envs", 1))
    if n_timesteps <= 0 or n_envs <= 0:
        raise UserError(f"n_timesteps and n_envs must be positive, got {n_timesteps} and {n_envs}")
    hyperparams.update(n_timesteps=n_timesteps, n_envs=n_envs, env_kwargs=env_kwargs)
    return {
        "algo": args.algo,
        "env": args.env,
        "env_kwargs": env_kwargs,
        "seed": args.seed,
        "n_timesteps": n_timesteps,
        "n_envs": n_envs,
        "vec_env": args.vec_env,
        # Where it really runs: SB3 would fall back to the CPU silently, and the config must say so.
        "device": resolve_device(args.device, "train.py"),
        "eval_freq": args.eval_freq,
        "eval_episodes": args.eval_episodes,
        "save_freq": args.save_freq,
        "hyperparams": hyperparams,
        "command": " ".join(sys.argv),
        "versions": package_versions(),
    }


def train(
    config: dict[str, Any],
    log_folder: Path,
    verbose: int = 1,
    progress_bar: bool = False,
    keep_checkpoints: int = 3,
    user_hyperparams: Collection[str] = (),
) -> Path:
    """Train as ``config`` says and return the run folder.

    Everything that can be wrong with the request (env, algo, hyperparameters, policy) is found before the run
    folder is created, so a refused run leaves nothing behind.

    :param config: as made by :func:`resolve_config`
    :param log_folder: parent of the run folder
    :param verbose: 0 the final summary only, 1 also progress, 2 also SB3's logs
    :param progress_bar: show SB3's progress bar
    :param keep_checkpoints: how many periodic checkpoints to keep
    :param user_hyperparams: the hyperparameters given on the command line, which errors then blame
    :raises SystemExit: 130 or 143 after a SIGINT or SIGTERM, once a checkpoint is saved
    """
    model, env = build_model(config, verbose, user_hyperparams)
    run_dir = new_run_dir(log_folder, config["algo"], config["env"])
    with run_lock(run_dir):
        _write_config(run_dir, config)
        formats = ["stdout", "csv", "tensorboard"] if verbose >= 2 else ["csv", "tensorboard"]
        model.set_logger(configure(str(run_dir / "tb"), formats))
        if verbose:
            print(f"run folder: {run_dir}  ({config['algo']} on {config['env']}, {config['n_timesteps']:,} steps)")
        _learn(model, env, config, run_dir, verbose, progress_bar, keep_checkpoints, resumes=0)
    return run_dir


def build_model(
    config: dict[str, Any], verbose: int = 1, user_hyperparams: Collection[str] = ()
) -> tuple[BaseAlgorithm, VecEnv]:
    """Check the request and build the untrained model and its training env, writing nothing.

    The env is described first and refused in one line when the algorithm cannot train on it; the policy is the
    hyperparameters' one or the algorithm's default for the env's observation, recorded in
    ``config["hyperparams"]["policy"]`` (an import path) so that the safe loader rebuilds exactly it; the model must
    then act once (:func:`_check_policy_runs`).

    :param config: as made by :func:`resolve_config` (its ``hyperparams`` gain ``policy``)
    :param verbose: as for :func:`train`
    :param user_hyperparams: the hyperparameters given on the command line, which errors then blame
    :raises UserError: in one line, for anything that would keep the run from training
    """
    spec = get_algo(config["algo"])
    hyperparams = config["hyperparams"]
    try:
        algo_kwargs = resolve_algo_kwargs(hyperparams)
        env_description = describe_env(config["env"], config["env_kwargs"])
        check_algo_env(
            config["algo"],
            config["env"],
            env_description.action_space,
            env_description.mask_source is not None,
            env_description.observation_space,
            preferred=[algo for algo in ALGOS if load_hyperparams(config["env"], algo)],
        )
        _check_mask_shape(config, spec, env_description.observation_space)
        env = _make_env(config, spec, resumes=0)
    except UnknownEnvError as error:
        raise UserError(f"{error} ({LIST_HINT})") from None
    except ValueError as error:
        raise UserError(str(error)) from None
    try:
        policy = (
            import_object(hyperparams["policy"])
            if "policy" in hyperparams
            else spec.default_policy(env.observation_space, hyperparams.get("policy_kwargs"))
        )
    except ValueError as error:
        env.close()
        raise UserError(str(error)) from None
    try:
        model = spec.algo_class(
            policy, env, seed=config["seed"], device=config["device"], verbose=max(verbose - 1, 0), **algo_kwargs
        )
    except (TypeError, ValueError, AssertionError) as error:
        # Unknown keyword arguments (TypeError), values the policy refuses (ValueError, one line), SB3's own
        # range checks (AssertionError, e.g. batch_size=0).
        env.close()
        raise UserError(_build_error(config, error, user_hyperparams)) from None
    try:
        _check_policy_runs(model)
    except UserError:
        env.close()
        raise
    if "policy" not in hyperparams:
        # The policy chosen for this env, by import path: the safe loader rebuilds exactly it (no rule to re-derive).
        policy_class = model.policy_class
        hyperparams["policy"] = f"{policy_class.__module__}:{policy_class.__qualname__}"
    return model, env


def _check_mask_shape(config: dict[str, Any], spec: AlgoSpec, observation_space: Any) -> None:
    """Refuse a mask that is not flat (the herd's one per grid cell) for an algorithm's default policy, which reads
    flat masks only: only a policy named in the hyperparameters (GridNetPolicy) can read it."""
    mask_space = getattr(observation_space, "spaces", {}).get(ACTION_MASK_KEY)
    if not spec.sees_mask or "policy" in config["hyperparams"] or mask_space is None or len(mask_space.shape) == 1:
        return
    fitting = [algo for algo in ALGOS if "policy" in load_hyperparams(config["env"], algo)]
    instead = (
        f"use --algo {' or '.join(fitting)} (their hyperparameters name a policy that reads it) or" if fitting else ""
    )
    raise IncompatibleEnvError(
        f"--algo {config['algo']} reads flat action masks, and {config['env']}'s has shape {mask_space.shape}: "
        f"{instead} pass such a policy with --hyperparams policy=..."
    )


def _build_error(config: dict[str, Any], error: BaseException, user_hyperparams: Collection[str]) -> str:
    """Say why the model could not be built, blaming the command line only when it gave hyperparameters."""
    if user_hyperparams:
        return f"bad hyperparameters for {config['algo']}: {error}"
    path = hyperparams_file(config["env"])
    source = (
        f"the hyperparameters of {path.name} (section {config['algo']})"
        if load_hyperparams(config["env"], config["algo"])
        else "the default hyperparameters"
    )
    return f"--algo {config['algo']} cannot train on {config['env']} with {source}: {first_line(error)}"


def _check_policy_runs(model: BaseAlgorithm) -> None:
    """Run the policy once on a made-up observation, so a policy that cannot act fails before any file is written.

    A policy class can be valid for SB3's constructor and still not act as the algorithm calls it (a recurrent
    policy under PPO, say). The observation is sampled from the space (with every action valid), the random
    generators are restored afterwards, and the training env is not touched: the run stays as it would be without.
    """
    observation = model.observation_space.sample()
    if isinstance(observation, dict) and ACTION_MASK_KEY in observation:
        observation[ACTION_MASK_KEY] = np.ones_like(observation[ACTION_MASK_KEY])
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            if isinstance(model, RecurrentPPO):
                # As its rollout calls it: with the LSTM states of one env, at an episode start.
                state = [torch.zeros(model.policy.lstm_hidden_state_shape, device=model.device)] * 2
                obs_tensor = model.policy.obs_to_tensor(observation)[0]
                starts = torch.ones(1, device=model.device)
                model.policy(obs_tensor, RNNStates(state, state), starts, deterministic=True)
            elif isinstance(model, OnPolicyAlgorithm):
                model.policy(model.policy.obs_to_tensor(observation)[0], deterministic=True)
            else:
                model.policy.predict(observation, deterministic=True)
    except Exception as error:  # whatever the policy raises: the training loop would raise it too
        name = getattr(model.policy_class, "__name__", str(model.policy_class))
        raise UserError(f"the policy {name} cannot act for {type(model).__name__}: {first_line(error)}") from None


def _write_config(run_dir: Path, config: dict[str, Any]) -> None:
    # Without YAML aliases (env_kwargs is the same dict in two places): a plain config is easier to read and check.
    text = yaml.dump(config, Dumper=_NoAliasDumper, sort_keys=False)
    atomic_write(run_dir / "config.yml", lambda file: file.write(text.encode()))


def resume(
    run_dir: Path,
    verbose: int = 1,
    progress_bar: bool = False,
    keep_checkpoints: int = 3,
    n_timesteps: int | None = None,
) -> Path:
    """Finish the run in ``run_dir`` as its ``config.yml`` says, from its newest loadable checkpoint.

    The envs cannot be checkpointed: they are re-seeded (deterministically, from the seed and the number of
    resumes) and the episodes in progress are lost. Everything else continues: step counter, learning-rate
    schedule, optimizer, random generators, TensorBoard curves, evaluations and best model.

    A finished run (its ``final_eval.json`` covers all its steps) is refused unless ``n_timesteps`` asks for a
    larger total, which extends it: ``config.yml`` records the new total (and the old ones under
    ``extended_from``), the schedules stretch over it, and the final model and evaluation are redone at its end.
    The run folder is locked (:func:`maskrl.agents.checkpoints.run_lock`) while this runs.

    Resuming is not a safe load: SB3's ``ALGO.load`` and ``VecNormalize.load`` unpickle the checkpoint, which runs
    any code hidden in it, so a one-line warning says so. The plain files (``config.yml``, ``evaluations.npz``) are
    still read within bounds and checked first, so a damaged run fails in one line before anything is unpickled.

    :param n_timesteps: the run's new total, larger than its configured one (``-n`` with ``--resume``)
    :raises UserError: not a run folder, a bad config or evaluation log, no loadable checkpoint in it, a finished
        run without a larger ``n_timesteps``, or a run another process is training
    """
    config_path = run_dir / "config.yml"
    if not config_path.is_file():
        raise UserError(f"cannot resume {run_dir}: no config.yml there (not a run folder?)")
    try:
        with run_lock(run_dir):
            return _resume_locked(run_dir, verbose, progress_bar, keep_checkpoints, n_timesteps)
    except RunInUseError as error:
        raise UserError(f"cannot resume {run_dir}: {error} (training it or resuming it); wait for it to end") from None


def _resume_locked(
    run_dir: Path, verbose: int, progress_bar: bool, keep_checkpoints: int, n_timesteps: int | None
) -> Path:
    folder = run_dir / "checkpoints"
    if not list_checkpoints(folder):
        raise UserError(f"cannot resume {run_dir}: no checkpoints in {folder}")
    try:
        config = load_yaml(run_dir / "config.yml")
        _check_resume_config(config)
        spec = get_algo(config["algo"])
        device(config["device"])  # the argparse type: one of the devices train.py accepts
    except (ValueError, argparse.ArgumentTypeError) as error:
        raise UserError(f"cannot resume {run_dir}: bad config.yml ({error})") from None
    if config["eval_freq"] > 0:
        _read_evaluations(run_dir / "evaluations.npz")
    total = config["n_timesteps"]
    finished_at = _finished_at(run_dir, config)
    if n_timesteps is not None and n_timesteps <= total:
        raise UserError(
            f"cannot extend {run_dir} to {n_timesteps:,} steps: it is set to {total:,} already (with --resume, -n "
            "is the run's new total and must be larger)"
        )
    if finished_at is not None and n_timesteps is None:
        raise UserError(
            f"cannot resume {run_dir}: it is finished ({finished_at:,} of {total:,} steps); to train it further, give "
            f"the new total: train.py --resume {shlex.quote(str(run_dir))} -n {2 * total}"
        )
    config["device"] = resolve_device(config["device"], "train.py")
    print(
        f"train.py: warning: --resume unpickles the checkpoints of {run_dir} (SB3's load), which can run code hidden "
        "in them: only resume runs you made",
        file=sys.stderr,
    )

    def load(checkpoint: Checkpoint, state: dict[str, Any]) -> tuple[BaseAlgorithm, VecEnv, int]:
        resumes = int(state["resumes"]) + 1
        env = _make_env(config, spec, resumes)
        try:
            if state["vecnormalize"]:
                env = VecNormalize.load(str(checkpoint.vecnormalize_path), env)
            model = spec.algo_class.load(checkpoint.model_path, env=env, device=config["device"])
        except BaseException:
            env.close()
            raise
        # load() re-seeds the env with the run's seed (set_random_seed): re-seed it for this resume, then put the
        # global generators back where the checkpoint left them.
        env.seed(_env_seed(config, resumes))
        restore_rng_state(state["rng"])
        model.num_timesteps = int(state["num_timesteps"])
        model._n_updates = int(state["n_updates"])
        model.verbose = max(verbose - 1, 0)
        return model, env, resumes

    try:
        loaded = load_latest(folder, load)
    except ValueError as error:  # the env itself cannot be made: nothing to do with the checkpoints
        raise UserError(str(error)) from None
    if loaded is None:
        raise UserError(f"cannot resume {run_dir}: no loadable checkpoint in {folder}")
    checkpoint, (model, env, resumes) = loaded
    if n_timesteps is not None:
        # Written before training, so that an interrupted extension is resumed as one.
        config["extended_from"] = [*config.get("extended_from", []), total]
        config["n_timesteps"] = config["hyperparams"]["n_timesteps"] = n_timesteps
        _write_config(run_dir, config)
    # Same tb/ folder, so the curves continue (in a new events file); SB3's CSV writer truncates its file, so
    # each resume gets its own.
    outputs = [make_output_format("csv", str(run_dir / "tb"), f".resume{resumes}")]
    outputs.append(make_output_format("tensorboard", str(run_dir / "tb")))
    if verbose >= 2:
        outputs.insert(0, make_output_format("stdout", str(run_dir / "tb")))
    if verbose:
        what = "extending" if n_timesteps is not None else "resuming"
        print(f"{what} {run_dir} from step {checkpoint.step:,} to {config['n_timesteps']:,}")
    model.set_logger(Logger(str(run_dir / "tb"), outputs))
    _learn(model, env, config, run_dir, verbose, progress_bar, keep_checkpoints, resumes)
    return run_dir


def _finished_at(run_dir: Path, config: dict[str, Any]) -> int | None:
    """The step a run finished at, or ``None`` while it has steps to go (no ``final_eval.json`` covering them).

    ``final_eval.json`` is the last file a run writes. Runs made before it recorded ``num_timesteps`` finished at
    their configured total.
    """
    path = run_dir / "final_eval.json"
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        results = read_json(path, "final_eval.json")
    except ValueError as error:
        raise UserError(f"cannot resume {run_dir}: {error}") from None
    step = results.get("num_timesteps", config["n_timesteps"]) if isinstance(results, dict) else None
    if isinstance(step, bool) or not isinstance(step, int):
        raise UserError(f"cannot resume {run_dir}: final_eval.json has no integer num_timesteps")
    return step if step >= config["n_timesteps"] else None


def _check_resume_config(config: Any) -> None:
    """One-line ``ValueError`` for a config without the fields --resume uses, or with fields of the wrong type."""
    if not isinstance(config, dict):
        raise ValueError(f"a mapping was expected, got {type(config).__name__}")
    for key, kind in RESUME_FIELDS.items():
        if key not in config:
            raise ValueError(f"no {key!r}")
        if isinstance(config[key], bool) or not isinstance(config[key], kind):
            raise ValueError(f"{key!r} must be a {kind.__name__}, got {type(config[key]).__name__}")
    extended = config.get("extended_from", [])
    if not isinstance(extended, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in extended):
        raise ValueError("'extended_from' must be a list of step counts")


def _read_evaluations(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a run's ``evaluations.npz`` (``None`` if there is none), checked; errors are a ``UserError``.

    Read with ``allow_pickle=False`` after :func:`maskrl.untrusted.check_npz` (no object arrays, no array larger
    than its data), and checked to be what ``EvalCallback`` writes: one row per evaluation.
    """
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        check_npz(path, "evaluations.npz", MAX_EVALUATIONS_BYTES)
        with np.load(path, allow_pickle=False) as saved:
            arrays = {key: saved[key] for key in saved.files}
    except ValueError as error:  # UntrustedFileError, or NumPy's own refusal
        raise UserError(f"cannot resume: {error}") from None
    timesteps, results, lengths = (arrays.get(key) for key in ("timesteps", "results", "ep_lengths"))
    if (
        timesteps is None
        or results is None
        or lengths is None
        or timesteps.ndim != 1
        or results.ndim != 2
        or results.shape != lengths.shape
        or len(results) != len(timesteps)
        or not all(np.issubdtype(a.dtype, np.number) for a in (timesteps, results, lengths))
    ):
        raise UserError(
            f"cannot resume: {path} is not an evaluation log (numeric timesteps (N,), results and ep_lengths (N, E))"
        )
    return arrays


class _NoAliasDumper(yaml.SafeDumper):
    """YAML's safe dumper, writing a value used twice twice rather than as an anchor and an alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _env_seed(config: dict[str, Any], resumes: int) -> int:
    return config["seed"] + resumes * RESEED_STRIDE


def _make_env(config: dict[str, Any], spec: AlgoSpec, resumes: int) -> VecEnv:
    return make_masked_vec_env(
        config["env"],
        config["n_envs"],
        _env_seed(config, resumes),
        config["vec_env"],
        config["env_kwargs"],
        sees_mask=spec.sees_mask,
        needs_mask=spec.needs_mask,
    )


def _learn(
    model: BaseAlgorithm,
    env: VecEnv,
    config: dict[str, Any],
    run_dir: Path,
    verbose: int,
    progress_bar: bool,
    keep_checkpoints: int,
    resumes: int,
) -> None:
    """Train ``model`` up to the configured steps (from wherever it is), then save and evaluate the final model."""
    spec = get_algo(config["algo"])
    n_envs = config["n_envs"]
    checkpoints = CheckpointCallback(
        config["save_freq"], run_dir / "checkpoints", keep=keep_checkpoints, resumes=resumes, verbose=int(verbose >= 2)
    )
    callbacks: list[BaseCallback] = [checkpoints, MaskStatsCallback()]
    attention = None
    if isinstance(getattr(model.policy, "features_extractor", None), EntityAttentionExtractor):
        # About 20 attention maps over the run, labelled with the env's entity names when it has them.
        attention = AttentionMapCallback(
            log_freq=max(config["n_timesteps"] // (20 * n_envs), 1), label_fn=entity_labeller(env)
        )
        callbacks.append(attention)
    eval_env = None
    evaluation = None
    if config["eval_freq"] > 0:
        eval_env = make_masked_vec_env(
            config["env"],
            1,
            config["seed"] + 10_000,
            "dummy",
            config["env_kwargs"],
            sees_mask=spec.sees_mask,
            needs_mask=spec.needs_mask,
        )
        evaluation = spec.eval_callback_class(
            eval_env,
            n_eval_episodes=config["eval_episodes"],
            eval_freq=max(config["eval_freq"] // n_envs, 1),
            best_model_save_path=str(run_dir),
            log_path=str(run_dir),
            verbose=int(verbose >= 2),
        )
        if resumes:
            _continue_evaluations(evaluation, run_dir / "evaluations.npz", model.num_timesteps)
        callbacks.append(evaluation)
    if verbose:
        callbacks.append(ProgressLineCallback(config["n_timesteps"], evaluation=evaluation))
    for callback in callbacks:
        # Callbacks count their calls from the start of the run, so periodic work stays on the same steps.
        callback.n_calls = model.num_timesteps // n_envs
    start_step = model.num_timesteps
    remaining = config["n_timesteps"] - start_step
    completed = False
    start = time.monotonic()
    try:
        with handle_interrupts(checkpoints), warnings.catch_warnings():
            for message in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            model.learn(
                remaining,
                callback=CallbackList(callbacks),
                reset_num_timesteps=not resumes,
                progress_bar=progress_bar,
            )
        if checkpoints.stop_signal is not None and model.num_timesteps < config["n_timesteps"]:
            checkpoint = checkpoints.save_interrupted()
            step = model.num_timesteps if checkpoint is None else checkpoint.step
            print(
                f"interrupted at step {step}; resume with: python train.py --resume {run_dir}",
                file=sys.stderr,
            )
            sys.exit(128 + checkpoints.stop_signal)
        completed = True
    except KeyboardInterrupt:
        # A second signal while stopping: the model may be mid-update, so it is not checkpointed.
        signum = checkpoints.stop_signal or signal.SIGINT
        print(
            f"interrupted again at step {model.num_timesteps}, not checkpointed; "
            f"resume from the last checkpoint with: python train.py --resume {run_dir}",
            file=sys.stderr,
        )
        sys.exit(128 + signum)
    finally:
        if completed:
            # The last step is checkpointed too, so that --resume -n MORE extends the run from exactly its end.
            checkpoints.save_final()
            model.save(run_dir / "final_model.zip")
        env.close()
        if eval_env is not None:
            eval_env.close()
    elapsed = time.monotonic() - start

    if attention is not None and attention.last_figure is not None:
        attention.last_figure.savefig(run_dir / "attention_map.png")
    results = evaluate_model(
        model,
        config["algo"],
        config["env"],
        config["env_kwargs"],
        config["eval_episodes"],
        seed=config["seed"] + 20_000,
    )
    # num_timesteps: the step this evaluation covers, which tells --resume that the run is finished.
    write_json({**results, "num_timesteps": int(model.num_timesteps)}, run_dir / "final_eval.json")
    if verbose:
        print(f"evaluation of the final model over {config['eval_episodes']} episodes:")
        print(format_table(results))
    print(summary(run_dir, results, evaluation, model.num_timesteps - start_step, elapsed))


def summary(
    run_dir: Path,
    results: dict[str, Any],
    evaluation: EvalCallback | None,
    steps: int,
    elapsed: float,
) -> str:
    """The lines a run ends with: where it is, how good its final and best models are, and what to run next.

    :param run_dir: the run folder
    :param results: :func:`maskrl.evaluate.evaluate_model`'s results for the final model
    :param evaluation: the run's periodic evaluation, if any
    :param steps: env steps trained by this process
    :param elapsed: seconds this process trained
    """
    invalid = (
        f", invalid actions {100 * results['invalid_action_rate']:.1f}%" if "invalid_action_rate" in results else ""
    )
    lines = [
        f"done: {steps:,} steps in {format_duration(elapsed)} ({steps / max(elapsed, 1e-9):,.0f} steps/s)",
        f"run folder:  {run_dir}",
        f"final model: return {results['return_mean']:+.2f} +/- {results['return_std']:.2f} over "
        f"{results['episodes']} episodes{invalid} (final_model.zip)",
    ]
    if evaluation is not None and evaluation.evaluations_timesteps:
        means = np.mean(evaluation.evaluations_results, axis=1)
        best = int(np.argmax(means))
        lines.append(
            f"best model:  return {means[best]:+.2f} at step {evaluation.evaluations_timesteps[best]:,} "
            f"(best_model.zip, of {len(means)} evaluations)"
        )
    else:
        lines.append("best model:  none (no periodic evaluation); evaluate.py takes final_model.zip")
    lines.append(f"next:        {_sibling_command('evaluate')} {shlex.quote(str(run_dir))}")
    lines.append(f"TensorBoard: tensorboard --logdir {shlex.quote(str(run_dir.parent.parent))}")
    return "\n".join(lines)


def _sibling_command(tool: str) -> str:
    """How to call ``evaluate`` the way this ``train`` was called: ``python evaluate.py``, ``maskrl-evaluate``, ...

    ``python`` is this interpreter: by that name when it is the one on the ``PATH`` (an activated venv), else by its
    path (``make train`` runs ``.venv/bin/python`` without activating anything).
    """
    argv0 = Path(sys.argv[0])
    if argv0.name == "maskrl-train":
        return f"maskrl-{tool}"
    on_path = shutil.which("python")
    # Paths compared as they are: a venv's python is a symlink to the system's, which lacks the venv's packages.
    python = "python" if on_path and os.path.abspath(on_path) == os.path.abspath(sys.executable) else None
    python = python or _short_path(sys.executable)
    if argv0.name == "train.py" and argv0.parent.name != "maskrl":  # the shim at the repository's root
        return f"{python} {shlex.quote(str(argv0.with_name(f'{tool}.py')))}"
    return f"{python} -m maskrl.{tool}"


def _short_path(path: str) -> str:
    """``path`` relative to the current folder when it lies inside it, as typed in the shell (quoted)."""
    relative = os.path.relpath(path)
    return shlex.quote(path if relative.startswith("..") else relative)


def _continue_evaluations(evaluation: EvalCallback, path: Path, step: int) -> None:
    """Make a resumed run's ``EvalCallback`` extend ``evaluations.npz`` and only beat the best model so far."""
    saved = _read_evaluations(path)  # checked (and pickle-free) as resume() already did before loading anything
    if saved is None:
        return
    keep = saved["timesteps"] <= step  # later ones were made after the checkpoint and will be redone
    evaluation.evaluations_timesteps = saved["timesteps"][keep].tolist()
    evaluation.evaluations_results = saved["results"][keep].tolist()
    evaluation.evaluations_length = saved["ep_lengths"][keep].tolist()
    if "successes" in saved and len(saved["successes"]) == len(keep):
        evaluation.evaluations_successes = saved["successes"][keep].tolist()
    if len(saved["results"]):
        # best_model.zip may come from any evaluation, even one after the checkpoint.
        evaluation.best_mean_reward = float(np.max(np.mean(saved["results"], axis=1)))


def entity_labeller(env: VecEnv) -> Callable[[int], str] | None:
    """Slot -> entity name from the env's ``entity_slots`` (name -> slice), if it has one."""
    if not env.has_attr("entity_slots"):  # safe with SubprocVecEnv, unlike catching get_attr's error
        return None
    slots = env.get_attr("entity_slots")[0]
    labels: dict[int, str] = {}
    for name, where in slots.items():
        indices = range(where.start, where.stop)
        for i in indices:
            labels[i] = name if len(indices) == 1 else f"{name}{i - where.start}"
    return lambda slot: labels.get(slot, f"e{slot}")


def list_algos_and_envs() -> str:
    """What ``--list`` prints: the algorithms, and maskrl's envs with the algos their YAML files set up."""
    import gymnasium as gym

    width = max(len(name) for name in ALGOS)
    lines = ["algorithms (--algo):"]
    for name, spec in ALGOS.items():
        lines.append(f"  {name:<{width}}  {spec.description}")
    lines += ["", "maskrl's envs (--env), with the algos their hyperparameter file sets up (default steps):"]
    for env_id in sorted(known for known in gym.envs.registry if known.startswith("maskrl/")):
        path = hyperparams_file(env_id)
        try:
            sections = load_yaml(path) if path.exists() else {}
        except ValueError:
            sections = {}
        tuned = ", ".join(
            f"{algo} ({int((section or {}).get('n_timesteps', DEFAULT_N_TIMESTEPS)):,})"
            for algo, section in (sections or {}).items()
            if algo in ALGOS and isinstance(section or {}, dict)
        )
        lines.append(f"  {env_id:<26} {tuned or '-'}")
    unmasked = " or ".join(name for name, spec in ALGOS.items() if not spec.needs_mask)
    lines += [
        "",
        "Any other gymnasium env id works too. The masked algos need an env with action masks (an "
        f"'{ACTION_MASK_KEY}' observation key, an action_masks() method or info['{ACTION_MASK_KEY}']); {unmasked} "
        "train on any env (the others use SB3's default hyperparameters there).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``maskrl-train``)."""

    def _run() -> None:
        args = build_parser().parse_args(argv)
        if args.list:
            print(list_algos_and_envs())
            return
        verbose = args.verbose
        # A bar needs a terminal: in a log file or a pipe the periodic lines say the same without the redraws.
        progress_bar = args.progress_bar if args.progress_bar is not None else verbose >= 1 and sys.stdout.isatty()
        if args.resume is not None:
            resume(Path(args.resume), verbose, progress_bar, args.keep_checkpoints, args.n_timesteps)
            return
        config = resolve_config(args)
        user_hyperparams = list(parse_key_values(args.hyperparams, "--hyperparams"))  # checked by resolve_config
        train(config, Path(args.log_folder), verbose, progress_bar, args.keep_checkpoints, user_hyperparams)

    run_cli(_run, "train.py")


if __name__ == "__main__":
    main()
