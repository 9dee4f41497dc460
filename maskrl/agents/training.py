"""Training runs: a configuration in, a run folder with a trained and evaluated model out; resuming and extending one.

:func:`make_config` merges an env's hyperparameter file with the caller's overrides into a run's configuration;
:func:`prepare_training` checks it and builds the model (:func:`maskrl.agents.registry.build_model`) and its training
env, writing nothing; :func:`train` makes the run folder (:class:`~maskrl.agents.run_folder.RunFolder`) and trains:
periodic evaluations (``best_model.zip``), atomic checkpoints (:mod:`maskrl.agents.checkpoints`), TensorBoard logs,
the callbacks the model's own parts ask for (:func:`maskrl.agents.callbacks.extra_callbacks`), then the final model
and its evaluation (:mod:`maskrl.agents.evaluation`). :func:`resume` finishes an interrupted run from its newest
loadable checkpoint, or extends a finished one to a larger total.

Problems the caller can fix are a :class:`TrainingError` (a ``ValueError``) in one line; what the caller should know
but does not stop the run (a device that is not there, checkpoints about to be unpickled) is a :class:`RunWarning`.
A SIGINT or SIGTERM stops training at the next step and saves a checkpoint: :class:`TrainingInterrupted` says where.
"""

from __future__ import annotations

import platform
import shlex
import signal
import time
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.logger import Logger, configure, make_output_format
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from maskrl.agents.callbacks import MaskStatsCallback, ProgressLineCallback, extra_callbacks, format_duration
from maskrl.agents.checkpoints import (
    RESEED_STRIDE,
    Checkpoint,
    CheckpointCallback,
    handle_interrupts,
    list_checkpoints,
    load_latest,
    restore_rng_state,
)
from maskrl.agents.env_setup import UnknownEnvError, describe_env, make_masked_vec_env
from maskrl.agents.evaluation import EvaluationError, evaluate_model, write_json
from maskrl.agents.hyperparams import (
    HyperparameterError,
    check_our_keys,
    hyperparams_file,
    import_object,
    load_hyperparams,
    load_yaml,
    resolve_algo_kwargs,
)
from maskrl.agents.imitation import behaviour_clone, load_demonstrator
from maskrl.agents.registry import ALGOS, AlgoSpec, IncompatibleEnvError, build_model, check_algo_env, get_algo
from maskrl.agents.run_folder import RunFolder, RunFolderError, RunInUseError
from maskrl.agents.self_play import training_callbacks as self_play_callbacks
from maskrl.masks import ACTION_MASK_KEY
from maskrl.untrusted import first_line, read_json

__all__ = [
    "DEFAULT_N_TIMESTEPS",
    "RunWarning",
    "TrainingError",
    "TrainingInterrupted",
    "TrainingResult",
    "check_device",
    "make_config",
    "prepare_training",
    "resolve_device",
    "resume",
    "train",
]

DEFAULT_N_TIMESTEPS = 100_000
#: The fields of a run's config.yml that resume() uses, and their types.
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
VERSIONED_PACKAGES = ("maskrl", "stable-baselines3", "sb3-contrib", "gymnasium", "torch", "numpy", "pettingzoo")
#: SB3 warnings that are about how maskrl wires things, not about anything the user chose.
QUIET_WARNINGS = ("Training and eval env are not of the same type",)
LIST_HINT = "train.py --list shows maskrl's envs and algos"
#: The devices a run may ask for: what SB3 can train on without extra packages.
DEVICE_TYPES = ("cpu", "cuda", "mps")
#: Seed offsets of the periodic and the final evaluation envs, clear of the training envs' seeds.
PERIODIC_EVAL_SEED_OFFSET = 10_000
FINAL_EVAL_SEED_OFFSET = 20_000


class TrainingError(ValueError):
    """A run that cannot be trained or resumed as asked: the request, the env, the hyperparameters, the folder."""


class RunWarning(UserWarning):
    """What the user should know about a run that does not stop it; the command line prints it as one line."""


class TrainingInterrupted(Exception):
    """Training stopped on a SIGINT or SIGTERM.

    :param signum: the signal
    :param step: the step the run can be resumed from
    :param run: the run folder
    :param checkpointed: whether a checkpoint was saved at ``step`` (not when a second signal came while stopping:
        the model may then be mid-update; the run resumes from its last checkpoint)
    """

    def __init__(self, signum: int, step: int, run: RunFolder, checkpointed: bool) -> None:
        super().__init__(f"interrupted at step {step}")
        self.signum = signum
        self.step = step
        self.run = run
        self.checkpointed = checkpointed


@dataclass
class TrainingResult:
    """What a training process did.

    :param run: the run folder
    :param results: :func:`maskrl.agents.evaluation.evaluate_model`'s results for the final model
    :param steps: env steps trained by this process
    :param elapsed: seconds this process trained
    :param evaluation_timesteps: the steps of the run's periodic evaluations (all of them, resumes included)
    :param evaluation_means: their mean returns
    """

    run: RunFolder
    results: dict[str, Any]
    steps: int
    elapsed: float
    evaluation_timesteps: list[int] = field(default_factory=list)
    evaluation_means: list[float] = field(default_factory=list)


def check_device(text: str) -> str:
    """Accept a torch device a run can ask for: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    :raises ValueError: for anything else
    """
    if text == "auto":
        return text
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def resolve_device(requested: str) -> str:
    """The device a run will really use, with a :class:`RunWarning` when it is not the one asked for.

    SB3 silently falls back to the CPU when CUDA is missing; the run's config must record where it really ran.

    :param requested: a value accepted by :func:`check_device`
    :return: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``
    """
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.device(requested).type
    problem = None
    if kind == "cuda" and not torch.cuda.is_available():
        problem = "no CUDA GPU is available"
    elif kind == "cuda" and (index := torch.device(requested).index) is not None:
        if index >= torch.cuda.device_count():
            problem = f"there is no CUDA device {index} (found {torch.cuda.device_count()})"
    elif kind == "mps" and not torch.backends.mps.is_available():
        problem = "MPS is not available"
    if problem is None:
        return requested
    warnings.warn(f"--device {requested}: {problem}; using the CPU", RunWarning, stacklevel=2)
    return "cpu"


def package_versions() -> dict[str, str]:
    """Versions of the packages a run depends on, for the run's config."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def make_config(
    algo: str,
    env_id: str,
    hyperparams: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    n_timesteps: int | None = None,
    n_envs: int | None = None,
    vec_env: str = "dummy",
    device: str = "auto",
    eval_freq: int = 10_000,
    eval_episodes: int = 10,
    save_freq: int = 50_000,
    command: str | None = None,
) -> dict[str, Any]:
    """A run's full configuration: the env's hyperparameter file for ``algo``, with the caller's overrides.

    :param algo: an ``--algo`` name
    :param env_id: a gymnasium env id
    :param hyperparams: overrides of the file's hyperparameters
    :param env_kwargs: overrides of its ``env_kwargs``
    :param seed: the run's seed
    :param n_timesteps: env steps to train for (default: the file's, else :data:`DEFAULT_N_TIMESTEPS`)
    :param n_envs: parallel envs (default: the file's, else 1)
    :param vec_env: ``"dummy"`` or ``"subproc"``
    :param device: as :func:`check_device` accepts it; the config records the one really used (:func:`resolve_device`)
    :param eval_freq: evaluate every this many env steps; <= 0 disables the periodic evaluation
    :param eval_episodes: episodes per evaluation
    :param save_freq: checkpoint every this many env steps; <= 0 disables the periodic checkpoints
    :param command: the command line that asked for the run, recorded in the config
    :raises ValueError: a bad hyperparameter file or override, a step or env count that is not positive
    """
    merged = load_hyperparams(env_id, algo)
    merged.update(hyperparams or {})
    check_our_keys(merged)
    merged_env_kwargs = dict(merged.get("env_kwargs") or {})
    merged_env_kwargs.update(env_kwargs or {})
    n_timesteps = n_timesteps or int(merged.get("n_timesteps", DEFAULT_N_TIMESTEPS))
    n_envs = n_envs or int(merged.get("n_envs", 1))
    if n_timesteps <= 0 or n_envs <= 0:
        raise ValueError(f"n_timesteps and n_envs must be positive, got {n_timesteps} and {n_envs}")
    merged.update(n_timesteps=n_timesteps, n_envs=n_envs, env_kwargs=merged_env_kwargs)
    return {
        "algo": algo,
        "env": env_id,
        "env_kwargs": merged_env_kwargs,
        "seed": seed,
        "n_timesteps": n_timesteps,
        "n_envs": n_envs,
        "vec_env": vec_env,
        # Where it really runs: SB3 would fall back to the CPU silently, and the config must say so.
        "device": resolve_device(device),
        "eval_freq": eval_freq,
        "eval_episodes": eval_episodes,
        "save_freq": save_freq,
        "hyperparams": merged,
        "command": command,
        "versions": package_versions(),
    }


def train(
    config: dict[str, Any],
    log_folder: Path,
    verbose: int = 1,
    progress_bar: bool = False,
    keep_checkpoints: int = 3,
    user_hyperparams: Collection[str] = (),
) -> TrainingResult:
    """Train as ``config`` says in a new run folder of ``log_folder``.

    Everything that can be wrong with the request (env, algo, hyperparameters, policy) is found before the run
    folder is created, so a refused run leaves nothing behind.

    :param config: as made by :func:`make_config`
    :param log_folder: parent of the run folder
    :param verbose: 0 nothing but SB3's warnings, 1 also the run folder and progress lines, 2 also SB3's logs
    :param progress_bar: show SB3's progress bar
    :param keep_checkpoints: how many periodic checkpoints to keep
    :param user_hyperparams: the hyperparameters the caller gave, which errors then blame
    :raises TrainingError: in one line, for anything that would keep the run from training
    :raises TrainingInterrupted: after a SIGINT or SIGTERM, once a checkpoint is saved
    """
    model, env = prepare_training(config, verbose, user_hyperparams)
    cloning = config["hyperparams"].get("behaviour_cloning")
    demonstrator = None
    if cloning is not None:
        try:
            demonstrator = load_demonstrator(model, cloning, import_object)
        except ValueError as error:
            env.close()
            raise TrainingError(str(error)) from None
    try:
        run = RunFolder.create(log_folder, config["algo"], config["env"])
    except RunFolderError as error:
        env.close()
        raise TrainingError(str(error)) from None
    with run.lock():
        run.write_config(config)
        formats = ["stdout", "csv", "tensorboard"] if verbose >= 2 else ["csv", "tensorboard"]
        model.set_logger(configure(str(run.tensorboard), formats))
        if verbose:
            print(f"run folder: {run}  ({config['algo']} on {config['env']}, {config['n_timesteps']:,} steps)")
        if demonstrator is not None:
            _clone(model, demonstrator, config, verbose)
        return _learn(model, env, config, run, verbose, progress_bar, keep_checkpoints, resumes=0)


def prepare_training(
    config: dict[str, Any], verbose: int = 1, user_hyperparams: Collection[str] = ()
) -> tuple[BaseAlgorithm, VecEnv]:
    """Check the request and build the untrained model and its training env, writing nothing.

    The env is described first and refused in one line when the algorithm cannot train on it; the policy is the
    hyperparameters' one or the algorithm's default for the env's observation, recorded in
    ``config["hyperparams"]["policy"]`` (an import path) so that the safe loader rebuilds exactly it; the model must
    then act once (:func:`_check_policy_runs`).

    :param config: as made by :func:`make_config` (its ``hyperparams`` gain ``policy``)
    :param verbose: as for :func:`train`
    :param user_hyperparams: the hyperparameters the caller gave, which errors then blame
    :raises TrainingError: in one line, for anything that would keep the run from training
    """
    spec = get_algo(config["algo"])
    hyperparams = config["hyperparams"]
    try:
        resolve_algo_kwargs(hyperparams)  # before the env is made: a typo costs no wait
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
        raise TrainingError(f"{error} ({LIST_HINT})") from None
    except ValueError as error:
        raise TrainingError(str(error)) from None
    try:
        model = build_model(
            config["algo"], env, hyperparams, seed=config["seed"], device=config["device"], verbose=max(verbose - 1, 0)
        )
    except HyperparameterError as error:
        env.close()
        raise TrainingError(str(error)) from None
    except (TypeError, ValueError, AssertionError) as error:
        # Unknown keyword arguments (TypeError), values the policy refuses (ValueError, one line), SB3's own
        # range checks (AssertionError, e.g. batch_size=0).
        env.close()
        raise TrainingError(_build_error(config, error, user_hyperparams)) from None
    try:
        _check_policy_runs(model)
    except TrainingError:
        env.close()
        raise
    if "policy" not in hyperparams:
        # The policy chosen for this env, by import path: the safe loader rebuilds exactly it (no rule to re-derive).
        policy_class = model.policy_class
        hyperparams["policy"] = f"{policy_class.__module__}:{policy_class.__qualname__}"
    return model, env


def _clone(model: BaseAlgorithm, demonstrator: Any, config: dict[str, Any], verbose: int) -> None:
    """Behaviour-clone ``demonstrator`` into a new run's policy (:mod:`maskrl.agents.imitation`), logged at step 0."""
    settings = config["hyperparams"]["behaviour_cloning"]
    start = time.monotonic()
    try:
        metrics = behaviour_clone(model, demonstrator, config["env"], config["env_kwargs"], settings, config["seed"])
    except ValueError as error:
        raise TrainingError(str(error)) from None
    for key, value in metrics.items():
        model.logger.record(f"imitation/{key}", value)
    model.logger.dump(0)
    if verbose:
        print(
            f"behaviour cloning: {int(metrics['steps']):,} steps of {settings['demonstrator']} "
            f"({int(metrics['episodes'])} episodes), {settings['epochs']} epochs in "
            f"{format_duration(time.monotonic() - start)}: the policy's likeliest action is the demonstrator's "
            f"{metrics['accuracy']:.1%} of the time"
        )


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
    """Say why the model could not be built, blaming the caller only when it gave hyperparameters."""
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
        raise TrainingError(f"the policy {name} cannot act for {type(model).__name__}: {first_line(error)}") from None


def resume(
    run_dir: Path,
    verbose: int = 1,
    progress_bar: bool = False,
    keep_checkpoints: int = 3,
    n_timesteps: int | None = None,
) -> TrainingResult:
    """Finish the run in ``run_dir`` as its ``config.yml`` says, from its newest loadable checkpoint.

    The envs cannot be checkpointed: they are re-seeded (deterministically, from the seed and the number of
    resumes) and the episodes in progress are lost. Everything else continues: step counter, learning-rate
    schedule, optimizer, random generators, TensorBoard curves, evaluations and best model.

    A finished run (its ``final_eval.json`` covers all its steps) is refused unless ``n_timesteps`` asks for a
    larger total, which extends it: ``config.yml`` records the new total (and the old ones under
    ``extended_from``), the schedules stretch over it, and the final model and evaluation are redone at its end.
    The run folder is locked (:meth:`RunFolder.lock`) while this runs.

    Resuming is not a safe load: SB3's ``ALGO.load`` and ``VecNormalize.load`` unpickle the checkpoint, which runs
    any code hidden in it, so a :class:`RunWarning` says so. The plain files (``config.yml``, ``evaluations.npz``)
    are still read within bounds and checked first, so a damaged run fails in one line before anything is unpickled.

    :param n_timesteps: the run's new total, larger than its configured one (``-n`` with ``--resume``)
    :raises TrainingError: not a run folder, a bad config or evaluation log, no loadable checkpoint in it, a finished
        run without a larger ``n_timesteps``, or a run another process is training
    :raises TrainingInterrupted: after a SIGINT or SIGTERM, once a checkpoint is saved
    """
    run = RunFolder(run_dir)
    if not run.config.is_file():
        raise TrainingError(f"cannot resume {run}: no {RunFolder.CONFIG} there (not a run folder?)")
    try:
        with run.lock():
            return _resume_locked(run, verbose, progress_bar, keep_checkpoints, n_timesteps)
    except RunInUseError as error:
        raise TrainingError(f"cannot resume {run}: {error} (training it or resuming it); wait for it to end") from None


def _resume_locked(
    run: RunFolder, verbose: int, progress_bar: bool, keep_checkpoints: int, n_timesteps: int | None
) -> TrainingResult:
    folder = run.checkpoints
    if not list_checkpoints(folder):
        raise TrainingError(f"cannot resume {run}: no checkpoints in {folder}")
    try:
        config = load_yaml(run.config)
        _check_resume_config(config)
        spec = get_algo(config["algo"])
        check_device(config["device"])
    except ValueError as error:
        raise TrainingError(f"cannot resume {run}: bad {RunFolder.CONFIG} ({error})") from None
    if config["eval_freq"] > 0:
        _read_evaluations(run)
    total = config["n_timesteps"]
    finished_at = _finished_at(run, config)
    if n_timesteps is not None and n_timesteps <= total:
        raise TrainingError(
            f"cannot extend {run} to {n_timesteps:,} steps: it is set to {total:,} already (with --resume, -n "
            "is the run's new total and must be larger)"
        )
    if finished_at is not None and n_timesteps is None:
        raise TrainingError(
            f"cannot resume {run}: it is finished ({finished_at:,} of {total:,} steps); to train it further, give "
            f"the new total: train.py --resume {shlex.quote(str(run))} -n {2 * total}"
        )
    config["device"] = resolve_device(config["device"])
    warnings.warn(
        f"--resume unpickles the checkpoints of {run} (SB3's load), which can run code hidden in them: only resume "
        "runs you made",
        RunWarning,
        stacklevel=3,
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
        raise TrainingError(str(error)) from None
    if loaded is None:
        raise TrainingError(f"cannot resume {run}: no loadable checkpoint in {folder}")
    checkpoint, (model, env, resumes) = loaded
    if n_timesteps is not None:
        # Written before training, so that an interrupted extension is resumed as one.
        config["extended_from"] = [*config.get("extended_from", []), total]
        config["n_timesteps"] = config["hyperparams"]["n_timesteps"] = n_timesteps
        run.write_config(config)
    # Same tb/ folder, so the curves continue (in a new events file); SB3's CSV writer truncates its file, so
    # each resume gets its own.
    logs = str(run.tensorboard)
    outputs = [make_output_format("csv", logs, f".resume{resumes}"), make_output_format("tensorboard", logs)]
    if verbose >= 2:
        outputs.insert(0, make_output_format("stdout", logs))
    if verbose:
        what = "extending" if n_timesteps is not None else "resuming"
        print(f"{what} {run} from step {checkpoint.step:,} to {config['n_timesteps']:,}")
    model.set_logger(Logger(logs, outputs))
    return _learn(model, env, config, run, verbose, progress_bar, keep_checkpoints, resumes)


def _finished_at(run: RunFolder, config: dict[str, Any]) -> int | None:
    """The step a run finished at, or ``None`` while it has steps to go (no ``final_eval.json`` covering them).

    ``final_eval.json`` is the last file a run writes. Runs made before it recorded ``num_timesteps`` finished at
    their configured total.
    """
    path = run.final_eval
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        results = read_json(path, RunFolder.FINAL_EVAL)
    except ValueError as error:
        raise TrainingError(f"cannot resume {run}: {error}") from None
    step = results.get("num_timesteps", config["n_timesteps"]) if isinstance(results, dict) else None
    if isinstance(step, bool) or not isinstance(step, int):
        raise TrainingError(f"cannot resume {run}: {RunFolder.FINAL_EVAL} has no integer num_timesteps")
    return step if step >= config["n_timesteps"] else None


def _check_resume_config(config: Any) -> None:
    """One-line ``ValueError`` for a config without the fields resume() uses, or with fields of the wrong type."""
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


def _read_evaluations(run: RunFolder) -> dict[str, np.ndarray] | None:
    """:meth:`RunFolder.read_evaluations`, its errors a :class:`TrainingError` about resuming."""
    try:
        return run.read_evaluations()
    except RunFolderError as error:
        raise TrainingError(f"cannot resume: {error}") from None


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
    run: RunFolder,
    verbose: int,
    progress_bar: bool,
    keep_checkpoints: int,
    resumes: int,
) -> TrainingResult:
    """Train ``model`` up to the configured steps (from wherever it is), then save and evaluate the final model."""
    spec = get_algo(config["algo"])
    # Env steps per callback call: the copies of the env, times their agents for a parallel PettingZoo env (one slot
    # per agent).
    n_envs = env.num_envs
    checkpoints = CheckpointCallback(
        config["save_freq"], run.checkpoints, keep=keep_checkpoints, resumes=resumes, verbose=int(verbose >= 2)
    )
    callbacks: list[BaseCallback] = [checkpoints, MaskStatsCallback()]
    callbacks += extra_callbacks(model, env, config["n_timesteps"], run)
    # A turn-based PettingZoo game trains against an opponent pool, which snapshots of the learner join.
    callbacks += self_play_callbacks(env)
    eval_env = None
    evaluation = None
    if config["eval_freq"] > 0:
        eval_env = make_masked_vec_env(
            config["env"],
            1,
            config["seed"] + PERIODIC_EVAL_SEED_OFFSET,
            "dummy",
            config["env_kwargs"],
            sees_mask=spec.sees_mask,
            needs_mask=spec.needs_mask,
        )
        evaluation = spec.eval_callback_class(
            eval_env,
            n_eval_episodes=config["eval_episodes"],
            eval_freq=max(config["eval_freq"] // n_envs, 1),
            verbose=int(verbose >= 2),
            **run.eval_callback_paths(),
        )
        if resumes:
            _continue_evaluations(evaluation, run, model.num_timesteps)
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
            raise TrainingInterrupted(checkpoints.stop_signal, step, run, checkpointed=True)
        completed = True
    except KeyboardInterrupt:
        # A second signal while stopping: the model may be mid-update, so it is not checkpointed.
        signum = checkpoints.stop_signal or signal.SIGINT
        raise TrainingInterrupted(signum, model.num_timesteps, run, checkpointed=False) from None
    finally:
        if completed:
            # The last step is checkpointed too, so that --resume -n MORE extends the run from exactly its end.
            checkpoints.save_final()
            model.save(run.final_model)
        env.close()
        if eval_env is not None:
            eval_env.close()
    elapsed = time.monotonic() - start

    try:
        results = evaluate_model(
            model,
            config["algo"],
            config["env"],
            config["env_kwargs"],
            config["eval_episodes"],
            seed=config["seed"] + FINAL_EVAL_SEED_OFFSET,
        )
        # num_timesteps: the step this evaluation covers, which tells resume() that the run is finished.
        write_json({**results, "num_timesteps": int(model.num_timesteps)}, run.final_eval)
    except EvaluationError as error:
        raise TrainingError(str(error)) from None
    result = TrainingResult(run, results, model.num_timesteps - start_step, elapsed)
    if evaluation is not None:
        result.evaluation_timesteps = [int(step) for step in evaluation.evaluations_timesteps]
        result.evaluation_means = [float(np.mean(row)) for row in evaluation.evaluations_results]
    return result


def _continue_evaluations(evaluation: EvalCallback, run: RunFolder, step: int) -> None:
    """Make a resumed run's ``EvalCallback`` extend ``evaluations.npz`` and only beat the best model so far."""
    saved = _read_evaluations(run)  # checked (and pickle-free) as resume() already did before loading anything
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
