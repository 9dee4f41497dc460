"""Evaluating a trained model: play episodes, summarise them, record them; find and load a run's model.

:func:`evaluate_model` plays N episodes with a model in the env it was trained on (made as the algorithm needs it,
:mod:`maskrl.agents.env_setup`) and returns return, length, invalid-action rate and the env's episode statistics;
:class:`EpisodeCollector` gathers what SB3's ``evaluate_policy`` does not (invalid actions, ``episode_stats``, text
views, frames); :func:`write_video`, :func:`write_gif` and :func:`write_json` write the results. :func:`locate_model`
finds the model zip and config of a run folder (or of a zip in one), :func:`load_model` loads a zip with SB3's
``ALGO.load`` (which unpickles it; :func:`maskrl.agents.safe_load.load_model_safely` does not).
:func:`episode_summary` summarises episodes played elsewhere (the benchmarks' own envs) the same way.
:func:`evaluate_against` plays a turn-based PettingZoo game against named opponents and gives win/draw/loss rates.

Every problem the caller can fix (a path, a format, a model that does not fit the env) is an
:class:`EvaluationError`, a ``ValueError`` in one line.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from maskrl.agents.env_setup import describe_env, is_turn_based, make_masked_vec_env
from maskrl.agents.registry import get_algo
from maskrl.agents.run_folder import RunFolder
from maskrl.agents.safe_load import read_config
from maskrl.untrusted import check_inside, first_line

__all__ = [
    "ANSI_LEGENDS",
    "VIDEO_FORMATS",
    "EpisodeCollector",
    "EvaluationError",
    "check_video_path",
    "episode_summary",
    "evaluate_against",
    "evaluate_model",
    "format_outcomes",
    "format_table",
    "load_model",
    "locate_model",
    "write_gif",
    "write_json",
    "write_video",
]


class EvaluationError(ValueError):
    """A model, path or output an evaluation cannot use as asked. One line."""


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
ANSI_LEGENDS["maskrl/Kart-v1"] = ANSI_LEGENDS["maskrl/Kart-v0"]


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
    :raises EvaluationError: ``video`` with ``render``, a render mode the env lacks, a model whose spaces are not the
        env's, a video that cannot be written
    """
    spec = get_algo(algo)
    if video is not None:
        if render is not None:
            raise EvaluationError("--video and --render cannot be used together")
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
        raise EvaluationError(f"{env_id} has no '{render}' render mode (it has: {metadata.get('render_modes', [])})")
    fps = metadata.get("render_fps") or 10
    try:
        _check_spaces(model, env)
        legend = env.get_attr("ansi_legend")[0] if env.has_attr("ansi_legend") else ANSI_LEGENDS.get(env_id)
        collector = EpisodeCollector(env, render, legend=legend, fps=fps)
        returns, lengths = play_episodes(model, env, n_episodes, deterministic, collector, spec.evaluate)
    finally:
        env.close()
    if video is not None:
        write_video(collector.frames, video, fps=fps)
    return {
        "algo": algo,
        "env": env_id,
        "env_kwargs": dict(env_kwargs or {}),
        "episodes": n_episodes,
        "deterministic": deterministic,
        "seed": seed,
        **episode_summary(returns, lengths, collector),
    }


def evaluate_against(
    model: BaseAlgorithm,
    algo: str,
    env_id: str,
    opponents: Sequence[str],
    env_kwargs: dict[str, Any] | None = None,
    n_episodes: int = 10,
    deterministic: bool = True,
    seed: int = 0,
    render: str | None = None,
    video: Path | None = None,
) -> dict[str, Any]:
    """Play a turn-based PettingZoo game (``pettingzoo:...``) with ``model`` against each named opponent.

    The model plays ``n_episodes`` games against each opponent, its seat alternating (first, second, ...), through
    :func:`evaluate_model` (so ``render`` and ``video`` apply: the video records the games against the first
    opponent).

    :param opponents: names of :data:`maskrl.agents.self_play.EVALUATION_OPPONENTS`
    :return: :func:`evaluate_model`'s results against the first opponent, plus ``"opponents"``: per opponent, the
        ``win``, ``draw`` and ``loss`` rates, ``return_mean``, ``invalid_action_rate`` and ``episodes``
    :raises EvaluationError: an env that is not a turn-based game, an unknown opponent, or one that does not know the
        game (the look-ahead player plays connect four and tic-tac-toe)
    """
    from maskrl.agents.self_play import EVALUATION_OPPONENTS, LookaheadOpponent

    if not is_turn_based(env_id):
        raise EvaluationError(f"--opponent is for turn-based PettingZoo games (pettingzoo:...), not {env_id}")
    for name in opponents:
        if name not in EVALUATION_OPPONENTS:
            raise EvaluationError(f"unknown opponent {name!r}; known: {', '.join(EVALUATION_OPPONENTS)}")
    if "lookahead" in opponents and not LookaheadOpponent.supports(describe_env(env_id, env_kwargs).observation_space):
        raise EvaluationError(f"the look-ahead opponent plays connect four and tic-tac-toe, not {env_id}")
    first: dict[str, Any] = {}
    outcomes: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(opponents):
        results = evaluate_model(
            model,
            algo,
            env_id,
            {**(env_kwargs or {}), "opponent": name},
            n_episodes,
            deterministic=deterministic,
            seed=seed,
            render=render,
            video=video if index == 0 else None,
        )
        stats = results["env_stats"]
        outcomes[name] = {
            **{kind: stats[kind]["mean"] for kind in ("win", "draw", "loss")},
            "return_mean": results["return_mean"],
            "invalid_action_rate": results["invalid_action_rate"],
            "episodes": n_episodes,
        }
        first = first or results
    return {**first, "opponents": outcomes}


def format_outcomes(outcomes: dict[str, dict[str, Any]]) -> str:
    """:func:`evaluate_against`'s ``"opponents"`` as one line per opponent: win, draw and loss rates."""
    width = max(len(name) for name in outcomes)
    return "\n".join(
        f"against {name + ':':<{width + 1}}  win {o['win']:.2f}  draw {o['draw']:.2f}  loss {o['loss']:.2f}  "
        f"({o['episodes']} games, seats alternating)"
        for name, o in outcomes.items()
    )


def play_episodes(
    model: BaseAlgorithm,
    env: VecEnv,
    n_episodes: int,
    deterministic: bool,
    collector: EpisodeCollector,
    evaluate: Callable[..., Any] = evaluate_policy,
) -> tuple[list[float], list[int]]:
    """Play ``n_episodes`` on ``env`` (recurrent states carried), ``collector`` counting invalid actions and stats.

    :param evaluate: SB3's ``evaluate_policy``, or the algorithm's own (sb3-contrib's for ``MaskablePPO``)
    :return: the episodes' returns and lengths
    """
    returns, lengths = evaluate(
        model,
        env,
        n_eval_episodes=n_episodes,
        deterministic=deterministic,
        return_episode_rewards=True,
        callback=collector,
        warn=False,
    )
    return list(returns), list(lengths)


def episode_summary(returns: Sequence[float], lengths: Sequence[int], collector: EpisodeCollector) -> dict[str, Any]:
    """Summarise played episodes, JSON-serialisable: mean and std of the returns and lengths, the invalid-action rate,
    mean and std of each ``episode_stats`` key, and the returns and lengths themselves.

    :param returns: the episodes' returns, as ``evaluate_policy(..., return_episode_rewards=True)`` gives them
    :param lengths: their lengths
    :param collector: the :class:`EpisodeCollector` that watched them
    """
    stats_keys = sorted({key for stats in collector.episode_stats for key in stats})
    return {
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
        raise EvaluationError(
            f"the model expects observations {model.observation_space} but the env gives {env.observation_space} "
            "(was it trained on another env or with other --env-kwargs?)"
        )
    if model.action_space != env.action_space:
        raise EvaluationError(f"the model acts in {model.action_space} but the env expects {env.action_space}")


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

    :raises EvaluationError: another extension, MP4 without a plugin, a folder that does not exist
    """
    suffix = path.suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise EvaluationError(
            f"--video writes .gif files (and .mp4 with imageio's ffmpeg plugin: pip install 'imageio[ffmpeg]'), "
            f"got {str(path)!r}"
        )
    if suffix == ".mp4" and not _has_mp4_plugin():
        raise EvaluationError(
            f"cannot write {path}: MP4 needs imageio's ffmpeg plugin (pip install 'imageio[ffmpeg]'); .gif works "
            "without it"
        )
    if not path.parent.is_dir():
        raise EvaluationError(f"cannot write {path}: {path.parent} is not a folder")
    if path.is_dir():
        raise EvaluationError(f"cannot write {path}: it is a folder")


def _has_mp4_plugin() -> bool:
    return any(importlib.util.find_spec(module) is not None for module in ("imageio_ffmpeg", "av"))


def write_video(frames: list[np.ndarray], path: Path, fps: int = 10) -> None:
    """Write ``frames`` (uint8 HxWx3) as an endlessly looping animated GIF or, for a ``.mp4`` path, an MP4 video."""
    check_video_path(path)
    if path.suffix.lower() == ".gif":
        write_gif(frames, path, fps)
        return
    if not frames:
        raise EvaluationError("no frames to write: the env rendered nothing")
    video = np.stack(frames)
    # H.264 wants sizes in multiples of 16 (imageio would rescale the frames, with a warning): pad the edges.
    pad_h, pad_w = (-video.shape[1]) % 16, (-video.shape[2]) % 16
    video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    try:
        iio.imwrite(path, video, fps=fps)
    except OSError as error:
        path.unlink(missing_ok=True)  # no half-written video left behind
        raise EvaluationError(f"cannot write {path}: {error.strerror or first_line(error)}") from None


def write_gif(frames: list[np.ndarray], path: Path, fps: int = 10) -> None:
    """Write ``frames`` (uint8 HxWx3) as an endlessly looping animated GIF."""
    if not frames:
        raise EvaluationError("no frames to write: the env rendered nothing")
    if not path.parent.is_dir():
        # Checked first: imageio's writer, once opened on a bad path, complains again when garbage-collected.
        raise EvaluationError(f"cannot write {path}: {path.parent} is not a folder")
    try:
        iio.imwrite(path, np.stack(frames), duration=1000 / fps, loop=0)
    except OSError as error:
        raise EvaluationError(f"cannot write {path}: {error.strerror or first_line(error)}") from None


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write ``results`` as indented JSON."""
    try:
        path.write_text(json.dumps(results, indent=2) + "\n")
    except OSError as error:
        raise EvaluationError(f"cannot write {path}: {error.strerror}") from None


def locate_model(path: Path, which: str) -> tuple[Path, dict[str, Any] | None]:
    """Find the model zip and the run's config for a run folder or a zip path.

    A zip in a run folder's ``checkpoints/`` belongs to that run (:meth:`RunFolder.of_model`). The config is read
    within bounds (:func:`maskrl.agents.safe_load.read_config`), and neither it nor the zip may be a symlink leading
    out of the run folder: the folder may come from someone else.

    :param path: run folder or model zip
    :param which: ``"best"`` or ``"final"`` (a run folder without a best model falls back to the final one)
    :return: the zip's path and the run's config (``None`` if the zip is not in a run folder)
    :raises EvaluationError: no such file or folder, no model in the folder, a bad config or a symlink out of it
    """
    if path.is_dir():
        run = RunFolder(path)
        model_path = run.model(which)
        if model_path is None:
            raise EvaluationError(f"no model in {run} (expected {RunFolder.MODELS[which]} or {RunFolder.FINAL_MODEL})")
    elif path.exists():
        run, model_path = RunFolder.of_model(path), path
    else:
        raise EvaluationError(f"no such model file or run folder: {path}")
    if not run.has_config():
        return model_path, None
    try:
        config = read_config(run.path)
        check_inside(model_path, run.path, "model")
    except ValueError as error:
        raise EvaluationError(str(error)) from None
    return model_path, config


def load_model(algo: str, model_path: Path, device: str = "auto") -> BaseAlgorithm:
    """Load a model zip with ``algo``'s class; a missing or corrupt file is a :class:`EvaluationError`."""
    try:
        return get_algo(algo).algo_class.load(model_path, device=device)
    except FileNotFoundError:
        raise EvaluationError(f"model file not found: {model_path}") from None
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, RuntimeError, OSError, AssertionError) as error:
        # SB3 asserts that the zip has its "data" entry: any other zip, or one cut in the wrong place.
        raise EvaluationError(
            f"cannot load {model_path}: corrupt or not an SB3 model ({type(error).__name__})"
        ) from None
