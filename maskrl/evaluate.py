"""Evaluate a trained agent: ``python evaluate.py runs/ppo/Kart-v1_1``.

Takes a run folder (its ``config.yml`` says which algo and env) or a model zip (inside a run folder,
or with ``--algo``/``--env``), plays N episodes and prints return, length, invalid-action rate and
the env's episode statistics (for a turn-based PettingZoo game, ``pettingzoo:classic/connect_four_v3``, the
win/draw/loss rates against each ``--opponent``: ``random``, ``lookahead``); ``--json`` also writes them,
``--render ansi`` shows the episodes (with a legend, paced and redrawn in place on a terminal) and
``--video out.gif`` records them (for envs with an ``rgb_array`` render; ``.mp4`` too where imageio's ffmpeg
plugin is installed: ``pip install "imageio[ffmpeg]"``).

A model of a run folder (or of its ``checkpoints/``) is loaded safely
(:func:`maskrl.agents.safe_load.load_model_safely`): rebuilt from the plain-text ``config.yml``, with only the
weights read from the zip, so nothing in the zip is unpickled, and the config may only name registered env ids
and classes of maskrl, SB3, sb3-contrib and ``torch.nn``. A zip outside a run folder, or any model with
``--unsafe-load``, goes through SB3's ``ALGO.load``, which unpickles the zip and so can run code hidden in it, and
makes the config's env id as gymnasium would (``module:EnvId`` imports ``module``): a one-line warning says so.

This module is the command line only: evaluation is :mod:`maskrl.agents.evaluation`, safe loading
:mod:`maskrl.agents.safe_load`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from maskrl.agents.env_setup import is_turn_based
from maskrl.agents.evaluation import (
    check_video_path,
    evaluate_against,
    evaluate_model,
    format_outcomes,
    format_table,
    load_model,
    locate_model,
    write_json,
)
from maskrl.agents.hyperparams import parse_key_values
from maskrl.agents.registry import ALGOS
from maskrl.agents.run_folder import RunFolder
from maskrl.agents.safe_load import check_config, load_model_safely
from maskrl.agents.self_play import EVALUATION_OPPONENTS
from maskrl.agents.training import resolve_device
from maskrl.cli import ArgumentParser, UserError, device, positive_int, run_cli, seed

PROG = "evaluate.py"
#: Warnings SB3 gives about how the safe loader rebuilds a model (one env where training had several), which
#: are not about anything the user of evaluate.py chose.
QUIET_LOAD_WARNINGS = ("You have specified a mini-batch size",)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Evaluate a trained agent.", prog=PROG)
    parser.add_argument("path", type=Path, help="run folder or model zip")
    parser.add_argument("--model", default="best", choices=list(RunFolder.MODELS), help="model of a run folder")
    parser.add_argument("-n", "--n-episodes", type=positive_int, default=10, help="episodes (default: 10)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mode")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the evaluation env, >= 0 (default: 0)")
    parser.add_argument(
        "--render", choices=["ansi"], help="show the env's text view at every step (paced, on a terminal)"
    )
    parser.add_argument(
        "--video",
        type=Path,
        metavar="FILE",
        help="record the episodes as an animated GIF (.gif) or, with imageio's ffmpeg plugin, an MP4 (.mp4)",
    )
    parser.add_argument(
        "--opponent",
        nargs="+",
        choices=list(EVALUATION_OPPONENTS),
        metavar="NAME",
        help="turn-based PettingZoo games (pettingzoo:...): the opponents to play -n games each against, the seat "
        "alternating: random (a random valid move), lookahead (wins if it can, blocks if it must; connect four and "
        "tic-tac-toe); prints win/draw/loss rates (default: random)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--algo", choices=list(ALGOS), help="algo of a model zip outside a run folder")
    parser.add_argument("--env", help="env id of a model zip outside a run folder")
    parser.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="override the run's env kwargs")
    parser.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help="load with SB3's ALGO.load, which unpickles the zip, and make any env id of the config (module:EnvId "
        "imports module): either can run code from the run folder, so only for runs you trust",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``maskrl-evaluate``)."""

    def _run() -> None:
        args = build_parser().parse_args(argv)
        try:
            evaluate(args)
        except ValueError as error:  # the library's one-line errors: EvaluationError, SafeLoadError, ...
            raise UserError(str(error)) from None

    run_cli(_run, PROG)


def evaluate(args: argparse.Namespace) -> None:
    """Evaluate as the parsed command line says, and print (and write) the results."""
    if args.video is not None:
        check_video_path(args.video)  # before loading anything: a typo costs no wait
    torch_device = resolve_device(args.device)
    model_path, config = locate_model(args.path, args.model)
    in_run_folder = config is not None
    config = config or {}
    algo = args.algo or config.get("algo")
    env_id = args.env or config.get("env")
    if algo is None or env_id is None:
        raise UserError(f"{model_path} is not in a run folder: pass --algo and --env")
    if in_run_folder and not args.unsafe_load:
        check_config(config)  # the config is the attacker's: checked before anything uses a field of it
    env_kwargs = config.get("env_kwargs") or {}
    if not isinstance(env_kwargs, dict):
        raise UserError(f"env_kwargs of {RunFolder.CONFIG} must be a mapping, got {type(env_kwargs).__name__}")
    env_kwargs = {**env_kwargs, **parse_key_values(args.env_kwargs, "--env-kwargs")}
    if in_run_folder and not args.unsafe_load:
        # The run's own config rebuilds the model; only tensors are read from the zip.
        with warnings.catch_warnings():
            for message in QUIET_LOAD_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            model = load_model_safely(model_path, config, torch_device)
    else:
        why = "--unsafe-load" if args.unsafe_load else f"it is not in a run folder with a {RunFolder.CONFIG}"
        print(
            f"{PROG}: warning: loading {model_path} with SB3 ({why}), which unpickles it and can run code hidden in "
            "it: only load files you trust",
            file=sys.stderr,
        )
        model = load_model(algo, model_path, torch_device)
    turn_based = is_turn_based(env_id)
    if args.opponent and not turn_based:
        raise UserError(f"--opponent is for turn-based PettingZoo games (pettingzoo:...), not {env_id}")
    play = dict(deterministic=not args.stochastic, seed=args.seed, render=args.render, video=args.video)
    if turn_based:
        opponents = args.opponent or ["random"]
        results = evaluate_against(model, algo, env_id, opponents, env_kwargs, args.n_episodes, **play)
    else:
        results = evaluate_model(model, algo, env_id, env_kwargs, args.n_episodes, **play)
    results["model"] = str(model_path)
    print(
        f"{model_path} ({algo} on {env_id}), {args.n_episodes} episodes, "
        f"{'stochastic' if args.stochastic else 'deterministic'}:"
    )
    if turn_based:
        print(format_outcomes(results["opponents"]))
    else:
        print(format_table(results))
    if args.video:
        print(f"video written to {args.video}")
    if args.json:
        write_json(results, args.json)
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
