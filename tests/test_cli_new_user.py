"""The command line as a new user meets it (issue #14): documented commands work, mistakes get one line, any env trains.

The commands of the issue run ``train.py`` / ``evaluate.py`` in a subprocess, as a user would; the rest goes through
``main([...])`` in this process, which is faster. Trainings are a few hundred steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import PPO
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from maskrl.agents.checkpoints import list_checkpoints
from maskrl.agents.env_setup import describe_env, suggest_env_ids
from maskrl.agents.evaluation import EpisodeCollector
from maskrl.agents.registry import ALGOS
from maskrl.agents.run_folder import RunFolder
from maskrl.agents.training import TrainingError, make_config, prepare_training
from maskrl.envs.wrappers import InfoActionMaskToObservation
from maskrl.evaluate import main as evaluate_main
from maskrl.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
# A tiny finished Kart run: 2 envs x 128 steps per rollout, an evaluation and a checkpoint every 256.
KART = [
    "--env-kwargs",
    "n_laps=1",
    "max_steps=150",
    "--n-envs",
    "2",
    "--hyperparams",
    "behaviour_cloning=null",  # the default agent's clone of the scripted driver takes a minute
    "n_steps=128",
    "batch_size=64",
    "n_epochs=1",
    "--eval-freq",
    "256",
    "--eval-episodes",
    "1",
    "--save-freq",
    "256",
]
QUIET = ["--eval-freq", "0", "--save-freq", "0", "--eval-episodes", "1", "-v", "0"]


def cli(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python <tool>.py args`` from the repository's root scripts, in ``cwd``."""
    return subprocess.run(
        [sys.executable, str(REPO / f"{tool}.py"), *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], prog: str, *needles: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1 and all("warning:" in line for line in lines if line not in errors), result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def run_quietly(argv: list[str], main: Any = train_main) -> str:
    """Run a CLI's main in this process and return what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(argv)
    return out.getvalue()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scalar_tags(run_dir: Path) -> set[str]:
    tags: set[str] = set()
    for events in (run_dir / "tb").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished tiny ppo run on Kart (with its default output, -v 1), and what it printed."""
    log_folder = tmp_path_factory.mktemp("runs")
    printed = run_quietly(["--log-folder", str(log_folder), "-n", "5.12e2", *KART])  # -n takes 1e5 notation
    return log_folder / "ppo" / "Kart-v1_1", printed


# --- the "Broken" list ----------------------------------------------------------------------------------


def test_every_algo_builds_on_every_maskrl_env_or_says_plainly_why_not() -> None:
    refused: dict[tuple[str, str], str] = {}
    for env_id in sorted(known for known in gym.envs.registry if known.startswith("maskrl/")):
        for algo in ALGOS:
            config = make_config(algo, env_id, n_envs=1, device="cpu")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # SB3's mini-batch advice for --n-envs 1
                    _, env = prepare_training(config, verbose=0)
                env.close()
            except TrainingError as error:
                refused[algo, env_id] = message = str(error)
                # What cannot work is said as such, never blamed on hyperparameters nobody gave.
                assert message.startswith(f"--algo {algo} ") and "hyperparameters" not in message.split(":")[0]
                assert "\n" not in " ".join(message.split()), message
    for algo in ("maskable_ppo", "ppo_nomask", "ppo_naive"):  # what the issue found broken
        for env_id in ("maskrl/PandaGrid-v0", "maskrl/PandaHerd-v0"):
            assert (algo, env_id) not in refused, refused.get((algo, env_id))
    assert "encodes frames held in one 'observation' key" in refused["ppo_contrastive", "maskrl/PandaHerd-v0"]
    assert "needs a Discrete action space" in refused["dqn", "maskrl/PandaHerd-v0"]
    assert not any(env_id in ("maskrl/Kart-v0", "maskrl/Kart-v1") for _, env_id in refused)


def test_maskable_ppo_trains_on_panda_grid_and_the_printed_command_evaluates_it(tmp_path: Path) -> None:
    # batch_size 128 = 2 envs x 64 steps: the safe loader's one-env rebuild makes SB3 warn about the mini-batch,
    # which evaluate.py must keep to itself.
    args = ["--algo", "maskable_ppo", "--env", "maskrl/PandaGrid-v0", "-n", "256", "--n-envs", "2"]
    args += ["--hyperparams", "n_steps=64", "batch_size=128", "n_epochs=1", "--eval-freq", "128"]
    trained = cli("train", *args, "--eval-episodes", "1", "--save-freq", "0", "--log-folder", "runs", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert trained.stderr == "", trained.stderr
    lines = trained.stdout.splitlines()
    assert lines[0].startswith("run folder: runs/maskable_ppo/PandaGrid-v0_1")
    assert "runs/maskable_ppo/PandaGrid-v0_1" in [line.split()[-1] for line in lines if line.startswith("run folder:")]
    assert any(line.startswith("final model: return ") for line in lines)
    assert any(line.startswith("best model:  return ") for line in lines)
    (next_command,) = [line.removeprefix("next:").strip() for line in lines if line.startswith("next:")]
    python, script, run = shlex.split(next_command)  # python: this interpreter, by name or by path
    assert (script, run) == (str(REPO / "evaluate.py"), "runs/maskable_ppo/PandaGrid-v0_1")
    assert python == "python" or Path(python).samefile(sys.executable)
    evaluated = subprocess.run(
        [*shlex.split(next_command), "-n", "1"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stderr == "", "no unsafe-load warning and no SB3 warning: " + evaluated.stderr
    assert "watermelons_eaten" in evaluated.stdout


def test_resume_refuses_a_finished_run_and_leaves_it_as_it_is(finished_run: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = finished_run
    files = ("final_model.zip", "best_model.zip", "final_eval.json", "config.yml")
    before = {name: sha256(run_dir / name) for name in files}
    result = cli("train", "--resume", str(run_dir), cwd=tmp_path)
    line = assert_one_line_error(result, "train.py", "it is finished (512 of 512 steps)", f"-n {2 * 512}")
    assert str(run_dir) in line
    assert {name: sha256(run_dir / name) for name in files} == before


def test_a_second_process_cannot_resume_a_run_in_use(finished_run: tuple[Path, str], tmp_path: Path) -> None:
    import shutil

    run_dir = shutil.copytree(finished_run[0], tmp_path / "run")
    with RunFolder(run_dir).lock():  # as a train.py --resume of it would hold it
        result = cli("train", "--resume", str(run_dir), "-n", "1024", cwd=tmp_path)
    assert_one_line_error(result, "train.py", "another process", "is using it")
    assert json.loads((run_dir / "final_eval.json").read_text())["num_timesteps"] == 512


def test_resume_with_more_steps_extends_a_finished_run(finished_run: tuple[Path, str], tmp_path: Path, capsys) -> None:
    import shutil

    run_dir = shutil.copytree(finished_run[0], tmp_path / "run")
    with pytest.raises(SystemExit) as excinfo:
        train_main(["--resume", str(run_dir), "-n", "512", "-v", "0"])
    assert excinfo.value.code == 2 and "must be larger" in capsys.readouterr().err
    train_main(["--resume", str(run_dir), "-n", "768", "-v", "0"])
    assert json.loads((run_dir / "final_eval.json").read_text())["num_timesteps"] == 768
    assert PPO.load(run_dir / "final_model.zip").num_timesteps == 768
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    assert config["n_timesteps"] == 768 and config["extended_from"] == [512]
    assert np.load(run_dir / "evaluations.npz")["timesteps"].tolist() == [256, 512, 768]
    assert list_checkpoints(run_dir / "checkpoints")[-1].step == 768
    with pytest.raises(SystemExit):
        train_main(["--resume", str(run_dir), "-v", "0"])
    assert "it is finished (768 of 768 steps)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("tool", "argv", "needles"),
    [
        ("train", ["--device", "tpu"], ["argument --device", "'tpu'"]),
        ("evaluate", ["runs/ppo/Kart-v1_1", "--seed", "-1"], ["argument --seed", "'-1'"]),
        (
            "train",
            ["--hyperparams", "policy=sb3_contrib.ppo_recurrent.policies:MlpLstmPolicy", *QUIET, "-n", "64"],
            ["the policy RecurrentActorCriticPolicy cannot act for PPO", "lstm_states"],
        ),
    ],
    ids=["train-device-tpu", "evaluate-seed-minus-1", "recurrent-policy-for-ppo"],
)
def test_what_was_a_traceback_is_one_line(tool: str, argv: list[str], needles: list[str], tmp_path: Path) -> None:
    result = (
        cli(tool, *argv, "--log-folder", "runs", cwd=tmp_path) if tool == "train" else cli(tool, *argv, cwd=tmp_path)
    )
    assert_one_line_error(result, f"{tool}.py", *needles)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/*")), "no half-written run folder"


def test_video_formats_are_checked_before_anything_is_written(finished_run: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = finished_run
    no_extension = cli("evaluate", str(run_dir), "-n", "1", "--video", "x", cwd=tmp_path)
    assert_one_line_error(no_extension, "evaluate.py", "--video writes .gif files", "'x'")
    assert not (tmp_path / "x").exists()
    mp4 = cli("evaluate", str(run_dir), "-n", "1", "--video", "x.mp4", cwd=tmp_path)
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        assert_one_line_error(mp4, "evaluate.py", "cannot write x.mp4", "pip install 'imageio[ffmpeg]'", ".gif works")
        assert not (tmp_path / "x.mp4").exists()
    else:
        assert mp4.returncode == 0, mp4.stderr
        assert (tmp_path / "x.mp4").stat().st_size > 1000


# --- the "Friction" list ----------------------------------------------------------------------------------


def test_train_output_is_progress_lines_and_a_summary_not_sb3_tables(finished_run: tuple[Path, str]) -> None:
    run_dir, printed = finished_run
    assert "| rollout/" not in printed and "ep_rew_mean" not in printed, "SB3's tables only with -v 2"
    progress = [line for line in printed.splitlines() if " steps | " in line]
    assert [line.split()[0] for line in progress] == ["50%", "100%"]
    assert all("steps/s" in line and "return" in line and "invalid 0.0%" in line for line in progress)
    assert "eval " in progress[-1]
    summary = printed.splitlines()[-6:]
    assert summary[0].startswith("done: 512 steps in ")
    assert summary[1] == f"run folder:  {run_dir}"
    assert summary[2].startswith("final model: return ") and "over 1 episodes" in summary[2]
    assert summary[3].startswith("best model:  return ") and "at step " in summary[3]
    assert summary[4].startswith("next:        ") and summary[4].endswith(str(run_dir))


def test_quiet_training_prints_the_summary_only(tmp_path: Path) -> None:
    printed = run_quietly(["--log-folder", str(tmp_path), "-n", "256", *KART, "-v", "0"])
    assert printed.splitlines()[0].startswith("done: 256 steps")
    assert len(printed.splitlines()) == 6


@pytest.mark.parametrize("algo", ["maskable_ppo", "ppo_nomask"])
def test_mask_metrics_are_logged_for_algos_that_do_not_see_the_mask(algo: str, tmp_path: Path) -> None:
    run_quietly(["--algo", algo, "--log-folder", str(tmp_path), "-n", "512", *KART, "-v", "0"])  # races end at 150
    tags = scalar_tags(tmp_path / algo / "Kart-v1_1")
    assert {"rollout/valid_actions_mean", "rollout/invalid_action_rate", "env/final_rank"} <= tags


def test_cartpole_trains_without_masks_and_evaluates(tmp_path: Path, capsys) -> None:
    run_quietly(["--algo", "ppo_nomask", "--env", "CartPole-v1", "--log-folder", str(tmp_path), "-n", "256", *QUIET])
    run_dir = tmp_path / "ppo_nomask" / "CartPole-v1_1"
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    assert config["hyperparams"]["policy"] == "stable_baselines3.common.policies:ActorCriticPolicy"
    capsys.readouterr()
    evaluate_main([str(run_dir), "--model", "final", "-n", "1"])
    captured = capsys.readouterr()
    assert "return" in captured.out and captured.err == ""


def test_taxi_masks_come_from_info_and_reach_the_policy(tmp_path: Path, capsys) -> None:
    assert describe_env("Taxi-v4").mask_source == "info"
    env = InfoActionMaskToObservation(gym.make("Taxi-v4"))
    obs, info = env.reset(seed=0)
    assert np.array_equal(obs["action_mask"], info["action_mask"]) and env.action_masks().dtype == bool
    obs, *_, info = env.step(int(np.flatnonzero(obs["action_mask"])[0]))
    assert np.array_equal(obs["action_mask"], info["action_mask"])

    run_quietly(
        ["--env", "Taxi-v4", "--log-folder", str(tmp_path), "-n", "256", *QUIET, "--hyperparams", "n_steps=256"]
    )
    run_dir = tmp_path / "ppo" / "Taxi-v4_1"
    assert "rollout/valid_actions_mean" in scalar_tags(run_dir)
    capsys.readouterr()
    evaluate_main([str(run_dir), "-n", "1", "--json", str(tmp_path / "eval.json")])
    assert json.loads((tmp_path / "eval.json").read_text())["invalid_action_rate"] == 0.0


def test_info_wrapper_refuses_an_env_without_the_mask_in_info() -> None:
    env = InfoActionMaskToObservation(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match=r"reset\(\) returned an info without 'action_mask'"):
        env.reset(seed=0)


def test_close_env_ids_are_suggested() -> None:
    assert suggest_env_ids("Kart-v0") == ["maskrl/Kart-v0"]
    assert suggest_env_ids("PandaGrid") == ["maskrl/PandaGrid-v0"]
    assert suggest_env_ids("Cartpole-v1")[0] == "CartPole-v1"
    assert suggest_env_ids("Zzyzx-v9") == []


def test_list_shows_algos_and_maskrl_envs() -> None:
    printed = run_quietly(["--list"])
    for algo in ALGOS:
        assert f"  {algo} " in printed
    assert "maskrl/Kart-v0             ppo (500,000)" in printed
    assert "maskrl/Kart-v1             ppo (200,000)" in printed
    lines = printed.splitlines()
    assert "Any other gymnasium env id works too" in lines[-3] and "ppo_nomask" in lines[-3]
    assert "pettingzoo:FAMILY/NAME" in lines[-1] and "pettingzoo:classic/connect_four_v3" in lines[-1]


def test_device_cuda_without_a_gpu_warns_and_records_the_cpu(tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    train_main(["--device", "cuda", "--log-folder", str(tmp_path), "-n", "256", *KART, "-v", "0"])
    err = capsys.readouterr().err
    assert err == "train.py: warning: --device cuda: no CUDA GPU is available; using the CPU\n"
    assert yaml.safe_load((tmp_path / "ppo" / "Kart-v1_1" / "config.yml").read_text())["device"] == "cpu"


def test_image_env_training_keeps_sb3_env_type_warnings_to_itself(tmp_path: Path) -> None:
    argv = ["--env", "maskrl/PandaGridImage-v0", "--log-folder", str(tmp_path), "-n", "128", "--n-envs", "2"]
    argv += ["--hyperparams", "n_steps=64", "batch_size=64", "n_epochs=1", "--eval-freq", "64", "--eval-episodes", "1"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_quietly([*argv, "--save-freq", "0", "-v", "0"])
    assert not [w for w in caught if "not of the same type" in str(w.message)]


def test_checkpoints_load_safely_even_with_algo_and_env(
    finished_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("evaluate.py unpickled a checkpoint")

    monkeypatch.setattr(PPO, "load", refuse)
    checkpoint = list_checkpoints(finished_run[0] / "checkpoints")[-1].model_path
    capsys.readouterr()
    evaluate_main([str(checkpoint), "--algo", "ppo", "--env", "maskrl/Kart-v1", "-n", "1"])
    captured = capsys.readouterr()
    assert "return" in captured.out and captured.err == ""


def test_render_ansi_prints_a_legend_once(finished_run: tuple[Path, str], capsys) -> None:
    evaluate_main([str(finished_run[0]), "-n", "2", "--render", "ansi"])
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("legend:")] == [lines[0]]
    assert "A you" in lines[0] and "? item box" in lines[0]


def test_render_ansi_on_a_terminal_redraws_in_place_at_the_env_pace(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("maskrl.agents.evaluation.time.sleep", sleeps.append)

    class TextEnv:
        def env_method(self, name: str, indices: int) -> list[str]:
            return ["row 1\nrow 2"]

    collector = EpisodeCollector(TextEnv(), "ansi", legend="legend: x", fps=4, live=True)  # type: ignore[arg-type]
    for _ in range(3):
        collector({"info": {}, "i": 0, "done": False}, {})
    out = capsys.readouterr().out
    assert out.count("legend: x") == 1
    assert out.count("\x1b[2F\x1b[J") == 2, "each view replaces the two lines of the previous one"
    assert sleeps == [0.25, 0.25, 0.25]
