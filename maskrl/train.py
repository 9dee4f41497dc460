"""Train an agent: ``python train.py --algo ppo --env maskrl/Kart-v1``.

Every run gets its own folder ``<log-folder>/<algo>/<EnvName>_<N>`` (``N`` counts the runs of that algo on that env;
its files: :mod:`maskrl.agents.run_folder`) holding the resolved configuration (with package versions and the device
really used), TensorBoard events, periodic checkpoints, the best model and the evaluation log of the periodic
evaluation, the final model and its evaluation. Training shows a progress bar (on a terminal) and a short line every
10% of the run, and always ends with a summary: the run folder, the final and best evaluations and the command that
evaluates the run. ``--list`` lists the algorithms and maskrl's envs; any gymnasium env trains too (``ppo_nomask``
when it has no action masks), and so do PettingZoo envs with masks, spelled ``pettingzoo:FAMILY/NAME``
(:mod:`maskrl.agents.env_setup`: parallel envs with one shared policy, turn-based games by self-play).

Checkpoints (:mod:`maskrl.agents.checkpoints`) are written atomically; ``--resume RUN_DIR`` finishes an interrupted
run from its newest loadable one, and Ctrl-C or SIGTERM saves one before exiting (status 130 or 143). A finished run
is refused by ``--resume`` unless ``-n`` asks for a larger total, which extends it. A run folder is locked while a
process trains in it, so two ``--resume`` of one run cannot both write to it. Resuming loads the checkpoints with
SB3's ``ALGO.load`` (and ``VecNormalize.load``), which unpickle them: only resume runs you made (a one-line warning
says so). The model's own parts may log more: policies with the entity-attention extractor log an attention map to
TensorBoard during training and save the last one in the run folder.

This module is the command line only: the runs are made by :mod:`maskrl.agents.training`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from maskrl.agents.callbacks import format_duration
from maskrl.agents.env_setup import VEC_ENVS
from maskrl.agents.evaluation import format_table
from maskrl.agents.hyperparams import hyperparams_file, load_yaml, parse_key_values
from maskrl.agents.registry import ALGOS
from maskrl.agents.run_folder import RunFolder
from maskrl.agents.training import (
    DEFAULT_N_TIMESTEPS,
    TrainingError,
    TrainingInterrupted,
    TrainingResult,
    make_config,
    resume,
    train,
)
from maskrl.agents.tuning import TuningError, add_tuning_arguments, run_tuning, stored_trial_hyperparams
from maskrl.cli import ArgumentParser, UserError, device, integer, positive_int, run_cli, seed
from maskrl.masks import ACTION_MASK_KEY

PROG = "train.py"
DEFAULT_ENV = "maskrl/Kart-v1"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Train a masked RL agent.", prog=PROG)
    parser.add_argument(
        "--algo", default="ppo", choices=list(ALGOS), metavar="ALGO", help="algorithm (default: ppo; --list)"
    )
    parser.add_argument(
        "--env",
        default=DEFAULT_ENV,
        help=f"gymnasium env id, any of them (default: {DEFAULT_ENV}; --list), or a PettingZoo env as "
        "pettingzoo:FAMILY/NAME: a parallel env (pettingzoo:maskrl/panda_herd_v0) trains one policy shared by its "
        "agents, a turn-based game (pettingzoo:classic/connect_four_v3) trains by self-play against an opponent pool",
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
    add_tuning_arguments(parser)
    return parser


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
        "",
        "PettingZoo envs whose observations carry an 'action_mask' train as pettingzoo:FAMILY/NAME (PettingZoo's "
        "registry, else the module pettingzoo.FAMILY.NAME): parallel envs with one policy shared by all agents "
        "(pettingzoo:maskrl/panda_herd_v0), turn-based games by self-play (pettingzoo:classic/connect_four_v3, "
        "pettingzoo:classic/tictactoe_v3; evaluate.py --opponent random lookahead gives win/draw/loss rates).",
    ]
    return "\n".join(lines)


def summary(result: TrainingResult) -> str:
    """The lines a run ends with: where it is, how good its final and best models are, and what to run next."""
    results, steps, elapsed = result.results, result.steps, result.elapsed
    invalid = (
        f", invalid actions {100 * results['invalid_action_rate']:.1f}%" if "invalid_action_rate" in results else ""
    )
    lines = [
        f"done: {steps:,} steps in {format_duration(elapsed)} ({steps / max(elapsed, 1e-9):,.0f} steps/s)",
        f"run folder:  {result.run}",
        f"final model: return {results['return_mean']:+.2f} +/- {results['return_std']:.2f} over "
        f"{results['episodes']} episodes{invalid} ({RunFolder.FINAL_MODEL})",
    ]
    if result.evaluation_timesteps:
        means = result.evaluation_means
        best = int(np.argmax(means))
        lines.append(
            f"best model:  return {means[best]:+.2f} at step {result.evaluation_timesteps[best]:,} "
            f"({RunFolder.BEST_MODEL}, of {len(means)} evaluations)"
        )
    else:
        lines.append(f"best model:  none (no periodic evaluation); evaluate.py takes {RunFolder.FINAL_MODEL}")
    lines.append(f"next:        {_sibling_command('evaluate')} {shlex.quote(str(result.run))}")
    lines.append(f"TensorBoard: tensorboard --logdir {shlex.quote(str(result.run.path.parent.parent))}")
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


def config_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The run's configuration (:func:`maskrl.agents.training.make_config`) and the hyperparameters the command line
    gave, which errors then blame."""
    try:
        # --trial-id: a stored trial's values, under what --hyperparams sets.
        user_hyperparams = {**stored_trial_hyperparams(args), **parse_key_values(args.hyperparams, "--hyperparams")}
        config = make_config(
            args.algo,
            args.env,
            hyperparams=user_hyperparams,
            env_kwargs=parse_key_values(args.env_kwargs, "--env-kwargs"),
            seed=args.seed,
            n_timesteps=args.n_timesteps,
            n_envs=args.n_envs,
            vec_env=args.vec_env,
            device=args.device,
            eval_freq=args.eval_freq,
            eval_episodes=args.eval_episodes,
            save_freq=args.save_freq,
            command=" ".join(sys.argv),
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    return config, list(user_hyperparams)


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``maskrl-train``)."""

    def _run() -> None:
        args = build_parser().parse_args(argv)
        if args.list:
            print(list_algos_and_envs())
            return
        if args.optimize_hyperparameters:
            try:
                run_tuning(args)
            except TuningError as error:
                raise UserError(str(error)) from None
            return
        verbose = args.verbose
        # A bar needs a terminal: in a log file or a pipe the periodic lines say the same without the redraws.
        progress_bar = args.progress_bar if args.progress_bar is not None else verbose >= 1 and sys.stdout.isatty()
        try:
            if args.resume is not None:
                result = resume(Path(args.resume), verbose, progress_bar, args.keep_checkpoints, args.n_timesteps)
            else:
                config, user_hyperparams = config_from_args(args)
                log_folder = Path(args.log_folder)
                result = train(config, log_folder, verbose, progress_bar, args.keep_checkpoints, user_hyperparams)
        except TrainingError as error:
            raise UserError(str(error)) from None
        except TrainingInterrupted as stop:
            if stop.checkpointed:
                print(
                    f"interrupted at step {stop.step}; resume with: python train.py --resume {stop.run}",
                    file=sys.stderr,
                )
            else:
                print(
                    f"interrupted again at step {stop.step}, not checkpointed; "
                    f"resume from the last checkpoint with: python train.py --resume {stop.run}",
                    file=sys.stderr,
                )
            sys.exit(128 + stop.signum)
        if verbose:
            print(f"evaluation of the final model over {result.results['episodes']} episodes:")
            print(format_table(result.results))
        print(summary(result))

    run_cli(_run, PROG)


if __name__ == "__main__":
    main()
