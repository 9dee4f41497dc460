"""Evaluate a trained agent: ``python evaluate.py runs/ppo/Kart-v0_1``.

Takes a run folder (its ``config.yml`` says which algo and env) or a model zip (inside a run folder,
or with ``--algo``/``--env``), plays N episodes and prints return, length, invalid-action rate and
the env's episode statistics; ``--json`` also writes them, ``--render ansi`` shows the episodes (with a legend, paced
and redrawn in place on a terminal) and ``--video out.gif`` records them (for envs with an ``rgb_array`` render;
``.mp4`` too where imageio's ffmpeg plugin is installed: ``pip install "imageio[ffmpeg]"``).

A model of a run folder (or of its ``checkpoints/``) is loaded safely
(:func:`maskrl.agents.safe_load.load_model_safely`): rebuilt from the plain-text ``config.yml``, with only the
weights read from the zip, so nothing in the zip is unpickled, and the config may only name registered env ids
and classes of maskrl, SB3, sb3-contrib and ``torch.nn``. A zip outside a run folder, or any model with
``--unsafe-load``, goes through SB3's ``ALGO.load``, which unpickles the zip and so can run code hidden in it, and
makes the config's env id as gymnasium would (``module:EnvId`` imports ``module``): a one-line warning says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.agents.hyperparams import parse_key_values
from maskrl.agents.registry import ALGOS, get_algo
from maskrl.agents.safe_load import CONFIG_FILE, check_config, load_model_safely, read_config
from maskrl.cli import ArgumentParser, UserError, device, positive_int, resolve_device, run_cli, seed
from maskrl.untrusted import check_inside, first_line

MODEL_NAMES = {"best": "best_model.zip", "final": "final_model.zip"}
#: The video formats ``--video`` writes, by file extension (MP4 needs imageio's ffmpeg or PyAV plugin).
VIDEO_FORMATS = (".gif", ".mp4")
#: What the text view of maskrl's envs shows, printed once above the episodes (envs may also have an ``ansi_legend``).
ANSI_LEGENDS = {
    "maskrl/Kart-v0": "legend: A you, 1-9 the other karts, ? item box, * banana on the road, ~ curve (speed limit), "
    "- straight; B boost, S star, X spinning; inv[...] the items you hold; (invalid) an invalid action",
    "maskrl/PandaGrid-v0": "legend: P panda, W watermelon, D dragon, S scorpion, T tree; . a cell the panda sees, "
    ": one it does not (lower-case letters: hidden from it); (invalid) an invalid action",
    "maskrl/PandaHerd-v0": "legend: 0-9 the pandas (* several on one cell), W watermelon, D dragon, T tree, . empty",
}
ANSI_LEGENDS["maskrl/PandaGridImage-v0"] = ANSI_LEGENDS["maskrl/PandaGrid-v0"]
#: Warnings SB3 gives about how the safe loader rebuilds a model (one env where training had several), which
#: are not about anything the user of evaluate.py chose.
QUIET_LOAD_WARNINGS = ("You have specified a mini-batch size",)


class EpisodeCollector:
    """``evaluate_policy`` callback that counts invalid actions and gathers ``episode_stats``.

    With ``render="ansi"`` the env's text view is printed after each step, below a legend printed once. On a
    terminal (``live``) each view replaces the previous one and the steps are paced at ``fps``; elsewhere (a pipe, a
    file) the views follow one another at full speed.

    :param env: the evaluation env, rendered after each step when ``render`` is set
    :param render: ``"ansi"`` to print the env's text view after each step, ``"rgb_array"`` to keep the frames
    :param legend: printed once before the first text view
    :param fps: text views per second on a terminal
    :param live: redraw in place and pace (default: when standard output is a terminal)
    """

    def __init__(
        self,
        env: VecEnv,
        render: str | None = None,
        legend: str | None = None,
        fps: float = 10,
        live: bool | None = None,
    ):
        self.env = env
        self.render = render
        self.legend = legend
        self.fps = fps
        self.live = sys.stdout.isatty() if live is None else live
        self.frames: list[np.ndarray] = []
        self.steps = 0
        self.invalid = 0
        self.episode_stats: list[dict[str, float]] = []
        self._drawn_lines = 0  # lines of the text view on screen, which the next one replaces

    def __call__(self, local_vars: dict[str, Any], _globals: dict[str, Any]) -> None:
        info = local_vars["info"]
        self.steps += 1
        self.invalid += bool(info.get("invalid_action", False))
        if self.render == "ansi" and local_vars["i"] == 0:
            self._show(self.env.env_method("render", indices=0)[0])
        elif self.render == "rgb_array" and local_vars["i"] == 0:
            self.frames.append(self.env.env_method("render", indices=0)[0])
        if local_vars["done"] and "episode_stats" in info:
            self.episode_stats.append({key: float(value) for key, value in info["episode_stats"].items()})
            if self.render == "ansi":
                print(f"--- episode {len(self.episode_stats)} ended: {info['episode_stats']}")
                self._drawn_lines = 0  # the episode's last view stays on screen above the summary line

    def _show(self, text: str) -> None:
        if self.legend is not None:
            print(self.legend)
            self.legend = None
        if self.live and self._drawn_lines:
            # Cursor up to the previous view's first line, then clear to the end of the screen.
            print(f"\x1b[{self._drawn_lines}F\x1b[J", end="")
        print(text, flush=True)
        self._drawn_lines = text.count("\n") + 1
        if self.live:
            time.sleep(1 / self.fps)


def evaluate_model(
    model: BaseAlgorithm,
    algo: str,
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    n_episodes: int = 10,
    deterministic: bool = True,
    seed: int = 0,
    render: str | None = None,
    video: Path | None = None,
) -> dict[str, Any]:
    """Play ``n_episodes`` with ``model`` and summarise them.

    :param model: a trained model
    :param algo: its ``--algo`` name (decides whether the env shows it the mask, and how it is evaluated)
    :param env_id: gymnasium env id
    :param env_kwargs: env constructor arguments
    :param n_episodes: number of episodes
    :param deterministic: take the mode of the policy instead of sampling
    :param seed: seed of the evaluation env
    :param render: ``"ansi"`` to print each step
    :param video: write the episodes there as an animated GIF or an MP4 video (see :func:`check_video_path`; needs
        an env with an ``rgb_array`` render)
    :return: a JSON-serialisable dict (returns, lengths, their mean/std, invalid-action rate, env stats)
    """
    spec = get_algo(algo)
    if video is not None:
        if render is not None:
            raise UserError("--video and --render cannot be used together")
        check_video_path(video)  # before the episodes are played, not after
        render = "rgb_array"
    env = make_masked_vec_env(
        env_id, 1, seed, "dummy", env_kwargs, sees_mask=spec.sees_mask, render_mode=render, needs_mask=spec.needs_mask
    )
    # The wrapping SB3 gave the training env (VecTransposeImage for channel-last images), so spaces compare equal.
    env = BaseAlgorithm._wrap_env(env, monitor_wrapper=False)
    metadata = env.get_attr("metadata")[0]
    if render is not None and render not in metadata.get("render_modes", []):
        env.close()
        raise UserError(f"{env_id} has no '{render}' render mode (it has: {metadata.get('render_modes', [])})")
    fps = metadata.get("render_fps") or 10
    try:
        _check_spaces(model, env)
        legend = env.get_attr("ansi_legend")[0] if env.has_attr("ansi_legend") else ANSI_LEGENDS.get(env_id)
        collector = EpisodeCollector(env, render, legend=legend, fps=fps)
        returns, lengths = spec.evaluate(
            model,
            env,
            n_eval_episodes=n_episodes,
            deterministic=deterministic,
            return_episode_rewards=True,
            callback=collector,
            warn=False,
        )
    finally:
        env.close()
    if video is not None:
        write_video(collector.frames, video, fps=fps)
    stats_keys = sorted({key for stats in collector.episode_stats for key in stats})
    return {
        "algo": algo,
        "env": env_id,
        "env_kwargs": dict(env_kwargs or {}),
        "episodes": n_episodes,
        "deterministic": deterministic,
        "seed": seed,
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length_mean": float(np.mean(lengths)),
        "length_std": float(np.std(lengths)),
        "invalid_action_rate": collector.invalid / max(collector.steps, 1),
        "env_stats": {
            key: {
                "mean": float(np.mean([s[key] for s in collector.episode_stats if key in s])),
                "std": float(np.std([s[key] for s in collector.episode_stats if key in s])),
            }
            for key in stats_keys
        },
        "returns": [float(r) for r in returns],
        "lengths": [int(n) for n in lengths],
    }


def _check_spaces(model: BaseAlgorithm, env: VecEnv) -> None:
    if model.observation_space != env.observation_space:
        raise UserError(
            f"the model expects observations {model.observation_space} but the env gives {env.observation_space} "
            "(was it trained on another env or with other --env-kwargs?)"
        )
    if model.action_space != env.action_space:
        raise UserError(f"the model acts in {model.action_space} but the env expects {env.action_space}")


def format_table(results: dict[str, Any]) -> str:
    """Render :func:`evaluate_model`'s results as a small text table."""
    rows = [
        ("return", f"{results['return_mean']:10.3f}", f"{results['return_std']:10.3f}"),
        ("length", f"{results['length_mean']:10.1f}", f"{results['length_std']:10.1f}"),
        ("invalid-action rate", f"{100 * results['invalid_action_rate']:9.2f}%", ""),
    ]
    rows += [(key, f"{v['mean']:10.3f}", f"{v['std']:10.3f}") for key, v in results["env_stats"].items()]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'metric':<{width}}  {'mean':>10}  {'std':>10}"]
    lines += [f"{name:<{width}}  {mean:>10}  {std:>10}" for name, mean, std in rows]
    return "\n".join(lines)


def check_video_path(path: Path) -> None:
    """Refuse, before anything is played or written, a ``--video`` path that cannot be written.

    ``.gif`` always works; ``.mp4`` needs imageio's ffmpeg (or PyAV) plugin. Without these checks imageio opens the
    file first and fails later, leaving an empty file and a second error when its writer is garbage-collected.

    :raises UserError: another extension, MP4 without a plugin, a folder that does not exist
    """
    suffix = path.suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise UserError(
            f"--video writes .gif files (and .mp4 with imageio's ffmpeg plugin: pip install 'imageio[ffmpeg]'), "
            f"got {str(path)!r}"
        )
    if suffix == ".mp4" and not _has_mp4_plugin():
        raise UserError(
            f"cannot write {path}: MP4 needs imageio's ffmpeg plugin (pip install 'imageio[ffmpeg]'); .gif works "
            "without it"
        )
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: {path.parent} is not a folder")
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")


def _has_mp4_plugin() -> bool:
    return any(importlib.util.find_spec(module) is not None for module in ("imageio_ffmpeg", "av"))


def write_video(frames: list[np.ndarray], path: Path, fps: int = 10) -> None:
    """Write ``frames`` (uint8 HxWx3) as an endlessly looping animated GIF or, for a ``.mp4`` path, an MP4 video."""
    check_video_path(path)
    if path.suffix.lower() == ".gif":
        write_gif(frames, path, fps)
        return
    if not frames:
        raise UserError("no frames to write: the env rendered nothing")
    video = np.stack(frames)
    # H.264 wants sizes in multiples of 16 (imageio would rescale the frames, with a warning): pad the edges.
    pad_h, pad_w = (-video.shape[1]) % 16, (-video.shape[2]) % 16
    video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    try:
        iio.imwrite(path, video, fps=fps)
    except OSError as error:
        path.unlink(missing_ok=True)  # no half-written video left behind
        raise UserError(f"cannot write {path}: {error.strerror or first_line(error)}") from None


def write_gif(frames: list[np.ndarray], path: Path, fps: int = 10) -> None:
    """Write ``frames`` (uint8 HxWx3) as an endlessly looping animated GIF."""
    if not frames:
        raise UserError("no frames to write: the env rendered nothing")
    if not path.parent.is_dir():
        # Checked first: imageio's writer, once opened on a bad path, complains again when garbage-collected.
        raise UserError(f"cannot write {path}: {path.parent} is not a folder")
    try:
        iio.imwrite(path, np.stack(frames), duration=1000 / fps, loop=0)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or first_line(error)}") from None


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write ``results`` as indented JSON."""
    try:
        path.write_text(json.dumps(results, indent=2) + "\n")
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror}") from None


def locate_model(path: Path, which: str) -> tuple[Path, dict[str, Any] | None]:
    """Find the model zip and the run's config for a run folder or a zip path.

    A zip in a run folder's ``checkpoints/`` belongs to that run. The config is read within bounds
    (:func:`maskrl.agents.safe_load.read_config`), and neither it nor the zip may be a symlink leading out of the
    run folder: the folder may come from someone else.

    :param path: run folder or model zip
    :param which: ``"best"`` or ``"final"`` (a run folder without a best model falls back to the final one)
    :return: the zip's path and the run's config (``None`` if the zip is not in a run folder)
    """
    if path.is_dir():
        run_dir = path
        model_path = run_dir / MODEL_NAMES[which]
        if which == "best" and not model_path.exists():
            model_path = run_dir / MODEL_NAMES["final"]
    elif path.exists():
        run_dir, model_path = path.parent, path
        if run_dir.name == "checkpoints" and not _has_config(run_dir) and _has_config(run_dir.parent):
            run_dir = run_dir.parent
    else:
        raise UserError(f"no such model file or run folder: {path}")
    if not model_path.exists():
        raise UserError(f"no model in {run_dir} (expected {MODEL_NAMES[which]} or {MODEL_NAMES['final']})")
    if not _has_config(run_dir):
        return model_path, None
    try:
        config = read_config(run_dir)
        check_inside(model_path, run_dir, "model")
    except ValueError as error:
        raise UserError(str(error)) from None
    return model_path, config


def _has_config(folder: Path) -> bool:
    # A dangling symlink counts: it must be refused, not make the zip look like one outside a run folder.
    return (folder / CONFIG_FILE).exists() or (folder / CONFIG_FILE).is_symlink()


def load_model(algo: str, model_path: Path, device: str = "auto") -> BaseAlgorithm:
    """Load a model zip with ``algo``'s class; a missing or corrupt file is a :class:`UserError`."""
    try:
        return get_algo(algo).algo_class.load(model_path, device=device)
    except FileNotFoundError:
        raise UserError(f"model file not found: {model_path}") from None
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, RuntimeError, OSError, AssertionError) as error:
        # SB3 asserts that the zip has its "data" entry: any other zip, or one cut in the wrong place.
        raise UserError(f"cannot load {model_path}: corrupt or not an SB3 model ({type(error).__name__})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Evaluate a trained agent.", prog="evaluate.py")
    parser.add_argument("path", type=Path, help="run folder or model zip")
    parser.add_argument("--model", default="best", choices=list(MODEL_NAMES), help="model of a run folder")
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
        if args.video is not None:
            check_video_path(args.video)  # before loading anything: a typo costs no wait
        torch_device = resolve_device(args.device, "evaluate.py")
        model_path, config = locate_model(args.path, args.model)
        in_run_folder = config is not None
        config = config or {}
        algo = args.algo or config.get("algo")
        env_id = args.env or config.get("env")
        if algo is None or env_id is None:
            raise UserError(f"{model_path} is not in a run folder: pass --algo and --env")
        try:
            if in_run_folder and not args.unsafe_load:
                check_config(config)  # the config is the attacker's: checked before anything uses a field of it
            env_kwargs = config.get("env_kwargs") or {}
            if not isinstance(env_kwargs, dict):
                raise UserError(f"env_kwargs of {CONFIG_FILE} must be a mapping, got {type(env_kwargs).__name__}")
            env_kwargs = {**env_kwargs, **parse_key_values(args.env_kwargs, "--env-kwargs")}
            if in_run_folder and not args.unsafe_load:
                # The run's own config rebuilds the model; only tensors are read from the zip.
                with warnings.catch_warnings():
                    for message in QUIET_LOAD_WARNINGS:
                        warnings.filterwarnings("ignore", message=message)
                    model = load_model_safely(model_path, config, torch_device)
            else:
                why = "--unsafe-load" if args.unsafe_load else "it is not in a run folder with a config.yml"
                print(
                    f"evaluate.py: warning: loading {model_path} with SB3 ({why}), which unpickles it and can run "
                    "code hidden in it: only load files you trust",
                    file=sys.stderr,
                )
                model = load_model(algo, model_path, torch_device)
            results = evaluate_model(
                model,
                algo,
                env_id,
                env_kwargs,
                args.n_episodes,
                deterministic=not args.stochastic,
                seed=args.seed,
                render=args.render,
                video=args.video,
            )
        except ValueError as error:
            raise UserError(str(error)) from None
        results["model"] = str(model_path)
        print(
            f"{model_path} ({algo} on {env_id}), {args.n_episodes} episodes, "
            f"{'stochastic' if args.stochastic else 'deterministic'}:"
        )
        print(format_table(results))
        if args.video:
            print(f"video written to {args.video}")
        if args.json:
            write_json(results, args.json)
            print(f"results written to {args.json}")

    run_cli(_run, "evaluate.py")


if __name__ == "__main__":
    main()
