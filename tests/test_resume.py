"""Runs that survive interruption: atomic checkpoints, ``--resume``, SIGINT/SIGTERM/SIGKILL, determinism."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from maskrl.agents.checkpoints import Checkpoint, capture_rng_state, list_checkpoints, save_checkpoint
from maskrl.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
# Rollouts of 2 x 64 steps: checkpoints (every 256 steps) land on rollout boundaries at 256, 512, 768, and a run that
# completes checkpoints its last step (1024) too.
TINY = [
    "--env-kwargs",
    "n_laps=1",
    "max_steps=150",
    "--n-envs",
    "2",
    "--hyperparams",
    "behaviour_cloning=null",  # the default agent's clone of the scripted driver takes a minute
    "n_steps=64",
    "batch_size=64",
    "n_epochs=1",
    "learning_rate=lin_0.001",
    "--eval-episodes",
    "1",
    "--save-freq",
    "256",
    "--keep-checkpoints",
    "3",
    "--seed",
    "7",
    "-v",
    "0",
]


def _run(log_folder: Path) -> Path:
    train_main(["--log-folder", str(log_folder), "-n", "1024", "--eval-freq", "512", *TINY])
    (run_dir,) = (log_folder / "ppo").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("runs"))


def _scalars(events: Path, tag: str) -> dict[int, float]:
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return {event.step: event.value for event in accumulator.Scalars(tag)}


def test_keeps_the_last_n_checkpoints_each_complete_the_last_step_included(full_run: Path) -> None:
    folder = full_run / "checkpoints"
    assert [c.step for c in list_checkpoints(folder)] == [512, 768, 1024]  # 256 deleted
    assert sorted(p.name for p in folder.iterdir()) == [
        "model_1024_steps.json",
        "model_1024_steps.zip",
        "model_512_steps.json",
        "model_512_steps.zip",
        "model_768_steps.json",
        "model_768_steps.zip",
    ]
    for checkpoint in list_checkpoints(folder):
        state = checkpoint.read_state()
        assert state["num_timesteps"] == checkpoint.step and state["resumes"] == 0
        assert PPO.load(checkpoint.model_path).num_timesteps == checkpoint.step


def test_a_crash_mid_write_leaves_the_previous_checkpoint_intact(full_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    shutil.copytree(full_run / "checkpoints", folder)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    model = PPO.load(folder / "model_768_steps.zip")

    def broken_save(file, *args, **kwargs) -> None:
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    model.save = broken_save  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, folder, 1280, capture_rng_state(), resumes=0)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before, "no temp file, nothing changed"
    assert Checkpoint(folder, 768).read_state()["num_timesteps"] == 768
    # A leftover temp file (as after kill -9 mid-write) is not a checkpoint.
    (folder / ".model_1280_steps.zip.tmp123").write_bytes(b"PK")
    assert [c.step for c in list_checkpoints(folder)] == [512, 768, 1024]


def test_resume_skips_a_corrupt_checkpoint_and_continues_the_schedule_and_curves(
    full_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(full_run, run_dir)
    # As if it had been killed between its checkpoints at 768 and 1024.
    for name in ("final_model.zip", "final_eval.json"):
        (run_dir / name).unlink()
    Checkpoint(run_dir / "checkpoints", 1024).delete()
    newest = run_dir / "checkpoints" / "model_768_steps.zip"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated: resume must fall back to step 512
    old_events = set((run_dir / "tb").glob("events.out.tfevents.*"))
    with pytest.warns(UserWarning, match="skipping checkpoint model_768_steps.zip"):
        train_main(["--resume", str(run_dir), "-v", "0"])

    assert PPO.load(run_dir / "final_model.zip").num_timesteps == 1024
    assert (run_dir / "final_eval.json").is_file()
    (new_events,) = set((run_dir / "tb").glob("events.out.tfevents.*")) - old_events
    (events,) = old_events
    resumed = _scalars(new_events, "train/learning_rate")
    uninterrupted = _scalars(events, "train/learning_rate")
    # The curve continues after the checkpoint, at the same steps and the same learning rates.
    assert resumed and min(resumed) > 512 and max(resumed) == 1024
    for step, lr in resumed.items():
        assert lr == pytest.approx(uninterrupted[step], rel=1e-6), step
    assert resumed[1024] == pytest.approx(1e-3 * (1 - 896 / 1024), rel=1e-6)  # lin_0.001, last update at 896
    # Evaluations continue in the same file: the one at 512 is kept, the one at 1024 redone.
    assert np.load(run_dir / "evaluations.npz")["timesteps"].tolist() == [512, 1024]
    # The resumed run's checkpoints record the resume, for the re-seeding of the next one.
    assert Checkpoint(run_dir / "checkpoints", 768).read_state()["resumes"] == 1


def test_same_seed_gives_identical_parameters(full_run: Path, tmp_path: Path) -> None:
    again = _run(tmp_path)
    first = PPO.load(full_run / "final_model.zip").policy.state_dict()
    second = PPO.load(again / "final_model.zip").policy.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


def _wait_for_checkpoint(folder: Path, after: int, process: subprocess.Popen, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while not any(c.step > after for c in list_checkpoints(folder)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def test_sigkill_then_sigterm_then_resume_to_completion(tmp_path: Path) -> None:
    command = [sys.executable, str(REPO / "train.py")]
    train = subprocess.Popen(
        [*command, "--log-folder", str(tmp_path), "-n", "2048", "--eval-freq", "0", *TINY],
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = tmp_path / "ppo" / "Kart-v1_1"
    _wait_for_checkpoint(run_dir / "checkpoints", 0, train)
    train.send_signal(signal.SIGKILL)
    train.wait()
    killed = list_checkpoints(run_dir / "checkpoints")
    assert killed
    for checkpoint in killed:  # every checkpoint a kill -9 leaves behind is complete and loadable
        checkpoint.read_state()
        PPO.load(checkpoint.model_path)

    resumed = subprocess.Popen([*command, "--resume", str(run_dir), "-v", "0"], stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(run_dir / "checkpoints", killed[-1].step, resumed)
    resumed.send_signal(signal.SIGTERM)
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 143, err
    # One line saying that resuming unpickles the checkpoints (see docs/safe_loading.md), one for the interruption.
    warning, *lines = err.strip().splitlines()
    assert warning.startswith("train.py: warning: --resume unpickles the checkpoints"), err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("interrupted at step ")
    assert lines[0].endswith(f"resume with: python train.py --resume {run_dir}")
    step = int(lines[0].split()[3].rstrip(";"))
    assert Checkpoint(run_dir / "checkpoints", step).read_state()["resumes"] == 1
    assert not (run_dir / "final_model.zip").exists()

    train_main(["--resume", str(run_dir), "-v", "0"])
    assert PPO.load(run_dir / "final_model.zip").num_timesteps == 2048


@pytest.mark.parametrize("make", ["empty", "config only"])
def test_resume_without_config_or_checkpoints_is_a_one_line_error(make: str, tmp_path: Path, capsys) -> None:
    if make == "config only":
        (tmp_path / "config.yml").write_text("algo: ppo\nseed: 0\n")
    with pytest.raises(SystemExit) as excinfo:
        train_main(["--resume", str(tmp_path)])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot resume" in err, err
    assert ("no checkpoints" if make == "config only" else "no config.yml") in err
