"""Train an agent: ``python train.py --algo ppo --env maskrl/Kart-v0``.

Every run gets its own folder ``<log-folder>/<algo>/<EnvName>_<N>`` holding ``config.yml`` (the
resolved configuration, with package versions), TensorBoard events under ``tb/``, periodic
checkpoints, ``best_model.zip`` and ``evaluations.npz`` from the periodic evaluation,
``final_model.zip``, and ``final_eval.json``. Checkpoints (``checkpoints/``, see :mod:`maskrl.agents.checkpoints`)
are written atomically; ``--resume RUN_DIR`` finishes an interrupted run from its newest loadable one, and Ctrl-C
or SIGTERM saves one before exiting (status 130 or 143). Resuming loads the checkpoints with SB3's ``ALGO.load``
(and ``VecNormalize.load``), which unpickle them: only resume runs you made (a one-line warning says so).
Policies with the entity-attention extractor also log an attention map to TensorBoard during training and save the
last one as ``attention_map.png``.
"""

from __future__ import annotations

import argparse
import platform
import signal
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.logger import Logger, configure, make_output_format
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from maskrl.agents.callbacks import MaskStatsCallback
from maskrl.agents.checkpoints import (
    RESEED_STRIDE,
    Checkpoint,
    CheckpointCallback,
    handle_interrupts,
    list_checkpoints,
    load_latest,
    restore_rng_state,
)
from maskrl.agents.envs import VEC_ENVS, make_vec_env
from maskrl.agents.hyperparams import (
    check_our_keys,
    import_object,
    load_hyperparams,
    load_yaml,
    parse_key_values,
    resolve_algo_kwargs,
)
from maskrl.agents.registry import ALGOS, get_algo
from maskrl.cli import ArgumentParser, UserError, positive_int, run_cli
from maskrl.envs.wrappers import MASK_KEYS
from maskrl.evaluate import evaluate_model, format_table, write_json
from maskrl.policies import EntityAttentionExtractor
from maskrl.policies.attention_plots import AttentionMapCallback
from maskrl.untrusted import check_npz

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


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Train a masked RL agent.", prog="train.py")
    parser.add_argument("--algo", default="ppo", choices=list(ALGOS), help="algorithm (default: ppo)")
    parser.add_argument("--env", default=DEFAULT_ENV, help=f"gymnasium env id (default: {DEFAULT_ENV})")
    parser.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="env constructor arguments")
    parser.add_argument("-n", "--n-timesteps", type=positive_int, help="env steps to train for (default: from YAML)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--n-envs", type=positive_int, help="parallel envs (default: from YAML)")
    parser.add_argument("--vec-env", default="dummy", choices=list(VEC_ENVS), help="vectorisation (default: dummy)")
    parser.add_argument(
        "--eval-freq", type=int, default=10_000, help="evaluate every N env steps; <= 0 disables (default: 10000)"
    )
    parser.add_argument("--eval-episodes", type=positive_int, default=10, help="episodes per evaluation (default: 10)")
    parser.add_argument(
        "--save-freq", type=int, default=50_000, help="checkpoint every N env steps; <= 0 disables (default: 50000)"
    )
    parser.add_argument(
        "--keep-checkpoints", type=positive_int, default=3, help="checkpoints to keep, newest first (default: 3)"
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="finish an interrupted run from its newest checkpoint, as its config.yml says (other training "
        "options are ignored); the checkpoints are unpickled, which can run code hidden in them: only resume runs "
        "you made",
    )
    parser.add_argument("--log-folder", default="runs", help="where run folders go (default: runs/)")
    parser.add_argument("--hyperparams", nargs="*", metavar="KEY=VALUE", help="override YAML hyperparameters")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda (default: auto)")
    parser.add_argument("--progress-bar", action="store_true", help="show a progress bar")
    parser.add_argument("-v", "--verbose", type=int, default=1, choices=[0, 1, 2], help="verbosity (default: 1)")
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
    run_dir = parent / f"{name}_{max(taken, default=0) + 1}"
    run_dir.mkdir()
    return run_dir


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
        "device": args.device,
        "eval_freq": args.eval_freq,
        "eval_episodes": args.eval_episodes,
        "save_freq": args.save_freq,
        "hyperparams": hyperparams,
        "command": " ".join(sys.argv),
        "versions": package_versions(),
    }


def train(
    config: dict[str, Any], log_folder: Path, verbose: int = 1, progress_bar: bool = False, keep_checkpoints: int = 3
) -> Path:
    """Train as ``config`` says and return the run folder.

    :param config: as made by :func:`resolve_config`
    :param log_folder: parent of the run folder
    :param verbose: 0 silent, 1 progress and summaries, 2 also SB3's debug output
    :param progress_bar: show SB3's progress bar
    :param keep_checkpoints: how many periodic checkpoints to keep
    :raises SystemExit: 130 or 143 after a SIGINT or SIGTERM, once a checkpoint is saved
    """
    spec = get_algo(config["algo"])
    try:
        algo_kwargs = resolve_algo_kwargs(config["hyperparams"])
        env = _make_env(config, spec.sees_mask, resumes=0)
    except ValueError as error:
        raise UserError(str(error)) from None
    try:
        policy = (
            import_object(config["hyperparams"]["policy"])
            if "policy" in config["hyperparams"]
            else spec.policy_for(_n_feature_keys(env.observation_space) > 1)
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
        raise UserError(f"bad hyperparameters for {config['algo']}: {error}") from None

    run_dir = new_run_dir(log_folder, config["algo"], config["env"])
    # Without YAML aliases (env_kwargs is the same dict in two places): a plain config is easier to read and check.
    (run_dir / "config.yml").write_text(yaml.dump(config, Dumper=_NoAliasDumper, sort_keys=False))
    formats = ["stdout", "csv", "tensorboard"] if verbose else ["csv", "tensorboard"]
    model.set_logger(configure(str(run_dir / "tb"), formats))
    if verbose:
        print(f"run folder: {run_dir}")
    _learn(model, env, config, run_dir, verbose, progress_bar, keep_checkpoints, resumes=0)
    return run_dir


def resume(run_dir: Path, verbose: int = 1, progress_bar: bool = False, keep_checkpoints: int = 3) -> Path:
    """Finish the run in ``run_dir`` as its ``config.yml`` says, from its newest loadable checkpoint.

    The envs cannot be checkpointed: they are re-seeded (deterministically, from the seed and the number of
    resumes) and the episodes in progress are lost. Everything else continues: step counter, learning-rate
    schedule, optimizer, random generators, TensorBoard curves, evaluations and best model.

    Resuming is not a safe load: SB3's ``ALGO.load`` and ``VecNormalize.load`` unpickle the checkpoint, which runs
    any code hidden in it, so a one-line warning says so. The plain files (``config.yml``, ``evaluations.npz``) are
    still read within bounds and checked first, so a damaged run fails in one line before anything is unpickled.

    :raises UserError: not a run folder, a bad config or evaluation log, or no loadable checkpoint in it
    """
    config_path = run_dir / "config.yml"
    if not config_path.is_file():
        raise UserError(f"cannot resume {run_dir}: no config.yml there (not a run folder?)")
    folder = run_dir / "checkpoints"
    if not list_checkpoints(folder):
        raise UserError(f"cannot resume {run_dir}: no checkpoints in {folder}")
    try:
        config = load_yaml(config_path)
        _check_resume_config(config)
        spec = get_algo(config["algo"])
    except ValueError as error:
        raise UserError(f"cannot resume {run_dir}: bad config.yml ({error})") from None
    if config["eval_freq"] > 0:
        _read_evaluations(run_dir / "evaluations.npz")
    print(
        f"train.py: warning: --resume unpickles the checkpoints of {run_dir} (SB3's load), which can run code hidden "
        "in them: only resume runs you made",
        file=sys.stderr,
    )

    def load(checkpoint: Checkpoint, state: dict[str, Any]) -> tuple[BaseAlgorithm, VecEnv, int]:
        resumes = int(state["resumes"]) + 1
        env = _make_env(config, spec.sees_mask, resumes)
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
    # Same tb/ folder, so the curves continue (in a new events file); SB3's CSV writer truncates its file, so
    # each resume gets its own.
    outputs = [make_output_format("csv", str(run_dir / "tb"), f".resume{resumes}")]
    outputs.append(make_output_format("tensorboard", str(run_dir / "tb")))
    if verbose:
        outputs.insert(0, make_output_format("stdout", str(run_dir / "tb")))
        print(f"resuming {run_dir} from step {checkpoint.step} of {config['n_timesteps']}")
    model.set_logger(Logger(str(run_dir / "tb"), outputs))
    _learn(model, env, config, run_dir, verbose, progress_bar, keep_checkpoints, resumes)
    return run_dir


def _check_resume_config(config: Any) -> None:
    """One-line ``ValueError`` for a config without the fields --resume uses, or with fields of the wrong type."""
    if not isinstance(config, dict):
        raise ValueError(f"a mapping was expected, got {type(config).__name__}")
    for key, kind in RESUME_FIELDS.items():
        if key not in config:
            raise ValueError(f"no {key!r}")
        if isinstance(config[key], bool) or not isinstance(config[key], kind):
            raise ValueError(f"{key!r} must be a {kind.__name__}, got {type(config[key]).__name__}")


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


def _make_env(config: dict[str, Any], sees_mask: bool, resumes: int) -> VecEnv:
    return make_vec_env(
        config["env"],
        config["n_envs"],
        _env_seed(config, resumes),
        config["vec_env"],
        config["env_kwargs"],
        sees_mask=sees_mask,
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
        config["save_freq"], run_dir / "checkpoints", keep=keep_checkpoints, resumes=resumes, verbose=verbose
    )
    callbacks: list[BaseCallback] = [checkpoints, MaskStatsCallback()]
    attention = None
    if isinstance(model.policy.features_extractor, EntityAttentionExtractor):
        # About 20 attention maps over the run, labelled with the env's entity names when it has them.
        attention = AttentionMapCallback(
            log_freq=max(config["n_timesteps"] // (20 * n_envs), 1), label_fn=entity_labeller(env)
        )
        callbacks.append(attention)
    eval_env = None
    if config["eval_freq"] > 0:
        eval_env = make_vec_env(
            config["env"], 1, config["seed"] + 10_000, "dummy", config["env_kwargs"], sees_mask=spec.sees_mask
        )
        evaluation = spec.eval_callback_class(
            eval_env,
            n_eval_episodes=config["eval_episodes"],
            eval_freq=max(config["eval_freq"] // n_envs, 1),
            best_model_save_path=str(run_dir),
            log_path=str(run_dir),
            verbose=verbose,
        )
        if resumes:
            _continue_evaluations(evaluation, run_dir / "evaluations.npz", model.num_timesteps)
        callbacks.append(evaluation)
    for callback in callbacks:
        # Callbacks count their calls from the start of the run, so periodic work stays on the same steps.
        callback.n_calls = model.num_timesteps // n_envs
    remaining = config["n_timesteps"] - model.num_timesteps
    interrupted = False
    try:
        with handle_interrupts(checkpoints):
            model.learn(
                remaining,
                callback=CallbackList(callbacks),
                reset_num_timesteps=not resumes,
                progress_bar=progress_bar,
            )
        interrupted = checkpoints.stop_signal is not None and model.num_timesteps < config["n_timesteps"]
        if interrupted:
            checkpoint = checkpoints.save_interrupted()
            step = model.num_timesteps if checkpoint is None else checkpoint.step
            print(
                f"interrupted at step {step}; resume with: python train.py --resume {run_dir}",
                file=sys.stderr,
            )
            sys.exit(128 + checkpoints.stop_signal)  # type: ignore[operator]
    except KeyboardInterrupt:
        # A second signal while stopping: the model may be mid-update, so it is not checkpointed.
        interrupted = True
        signum = checkpoints.stop_signal or signal.SIGINT
        print(
            f"interrupted again at step {model.num_timesteps}, not checkpointed; "
            f"resume from the last checkpoint with: python train.py --resume {run_dir}",
            file=sys.stderr,
        )
        sys.exit(128 + signum)
    finally:
        if not interrupted:
            model.save(run_dir / "final_model.zip")
        env.close()
        if eval_env is not None:
            eval_env.close()

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
    write_json(results, run_dir / "final_eval.json")
    if verbose:
        print(f"final model: {run_dir / 'final_model.zip'}")
        print(f"evaluation of the final model over {config['eval_episodes']} episodes:")
        print(format_table(results))
        print(f"TensorBoard: tensorboard --logdir {run_dir.parent.parent}")


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


def _n_feature_keys(space: spaces.Space) -> int:
    if isinstance(space, spaces.Dict):
        return sum(key not in MASK_KEYS for key in space.spaces)
    return 1


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``maskrl-train``)."""

    def _run() -> None:
        args = build_parser().parse_args(argv)
        if args.resume is not None:
            resume(Path(args.resume), args.verbose, args.progress_bar, args.keep_checkpoints)
            return
        config = resolve_config(args)
        train(config, Path(args.log_folder), args.verbose, args.progress_bar, args.keep_checkpoints)

    run_cli(_run, "train.py")


if __name__ == "__main__":
    main()
