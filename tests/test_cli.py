"""End-to-end tests of train.py / evaluate.py and of the hyperparameter files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from maskrl.agents.env_setup import is_pettingzoo_id, resolve_pettingzoo_id
from maskrl.agents.hyperparams import (
    HYPERPARAMS_DIR,
    load_hyperparams,
    parse_key_values,
    parse_value,
    resolve_algo_kwargs,
)
from maskrl.agents.registry import ALGOS
from maskrl.evaluate import main as evaluate_main
from maskrl.train import main as train_main

REPO = Path(__file__).resolve().parents[1]


def test_train_writes_a_complete_run_folder(kart_run: Path) -> None:
    assert kart_run.name == "Kart-v1_1"
    for name in ("config.yml", "best_model.zip", "final_model.zip", "evaluations.npz", "final_eval.json"):
        assert (kart_run / name).is_file(), name
    assert sorted(p.name for p in (kart_run / "checkpoints").iterdir())
    config = yaml.safe_load((kart_run / "config.yml").read_text())
    assert config["algo"] == "ppo" and config["env"] == "maskrl/Kart-v1" and config["seed"] == 3
    assert config["env_kwargs"] == {"n_laps": 1, "max_steps": 60}
    assert config["n_timesteps"] == 512 and config["n_envs"] == 2
    # YAML values survive, command-line overrides win.
    assert config["hyperparams"]["n_steps"] == 128
    assert config["hyperparams"]["gamma"] == load_hyperparams("maskrl/Kart-v1", "ppo")["gamma"]
    assert {"torch", "stable-baselines3", "gymnasium", "python"} <= set(config["versions"])
    evaluations = np.load(kart_run / "evaluations.npz")
    assert evaluations["results"].shape[1] == 2


def test_train_logs_mask_and_env_metrics_to_tensorboard(kart_run: Path) -> None:
    (events,) = (kart_run / "tb").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"rollout/invalid_action_rate", "rollout/valid_actions_mean", "env/final_rank", "env/items_used"} <= tags
    assert {"train/approx_kl", "eval/mean_reward"} <= tags
    # The masked policy never picks an invalid action; Kart always allows at least coast and accelerate.
    assert all(event.value == 0.0 for event in accumulator.Scalars("rollout/invalid_action_rate"))
    assert all(event.value >= 2.0 for event in accumulator.Scalars("rollout/valid_actions_mean"))


def test_evaluate_a_run_folder_prints_and_writes_json(kart_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval.json"
    evaluate_main([str(kart_run), "-n", "3", "--json", str(out), "--model", "final"])
    printed = capsys.readouterr().out
    assert "return" in printed and "invalid-action rate" in printed and "final_rank" in printed
    results = json.loads(out.read_text())
    assert results["episodes"] == 3 and len(results["returns"]) == 3
    assert results["invalid_action_rate"] == 0.0
    assert results["return_mean"] == pytest.approx(np.mean(results["returns"]))
    assert {"final_rank", "items_used", "invalid_actions"} <= set(results["env_stats"])


def test_evaluate_a_model_zip_with_algo_and_env(kart_run: Path, tmp_path: Path, capsys) -> None:
    model = tmp_path / "model.zip"
    model.write_bytes((kart_run / "final_model.zip").read_bytes())
    evaluate_main([str(model), "--algo", "ppo", "--env", "maskrl/Kart-v1", "--env-kwargs", "n_laps=1", "-n", "1"])
    assert "return" in capsys.readouterr().out


def test_evaluate_render_ansi_prints_one_line_per_step(kart_run: Path, capsys) -> None:
    evaluate_main([str(kart_run), "-n", "1", "--render", "ansi"])
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if line.startswith("t=")]
    assert len(steps) > 10
    assert any(line.startswith("--- episode 1 ended") for line in lines)


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (train_main, ["--env", "Nope-v0"], "unknown env 'Nope-v0'"),
        (train_main, ["--env-kwargs", "bogus=1"], "unexpected keyword argument 'bogus'"),
        (train_main, ["--env-kwargs", "n_laps"], "--env-kwargs expects key=value"),
        (train_main, ["--env-kwargs", "n_laps=0"], "n_laps"),
        (train_main, ["--hyperparams", "bogus=1"], "unexpected keyword argument 'bogus'"),
        (train_main, ["-n", "0"], "expected a positive integer"),
        (train_main, ["--algo", "sac"], "invalid choice: 'sac'"),
        (evaluate_main, ["does/not/exist"], "no such model file or run folder"),
    ],
)
def test_bad_input_exits_2_with_one_line(main, argv, message, capsys, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main([*argv, "--log-folder", str(tmp_path)] if main is train_main else argv)
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not list(tmp_path.iterdir()), "a failed run must not leave a run folder"


def test_evaluate_rejects_a_corrupt_model_and_a_model_of_another_env(kart_run: Path, tmp_path: Path, capsys) -> None:
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes((kart_run / "final_model.zip").read_bytes()[:500])
    with pytest.raises(SystemExit) as excinfo:
        evaluate_main([str(corrupt), "--algo", "ppo", "--env", "maskrl/Kart-v0"])
    assert excinfo.value.code == 2
    assert "cannot load" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_main([str(kart_run), "--env-kwargs", "n_item_types=16"])
    assert "the model expects observations" in capsys.readouterr().err


def test_cli_shim_user_error_has_no_traceback() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--env", "Nope-v0"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]


def test_every_hyperparams_file_builds_every_algo() -> None:
    files = sorted(HYPERPARAMS_DIR.glob("*.yml"))
    assert files
    for path in files:
        sections = yaml.safe_load(path.read_text())
        assert set(sections) <= set(ALGOS), path
        for algo in sections:
            hyperparams = load_hyperparams(f"maskrl/{path.stem}", algo)
            kwargs = resolve_algo_kwargs(hyperparams)
            assert "n_timesteps" not in kwargs and "policy_kwargs" in kwargs


#: Every hyperparameter file's env, by file name.
FILE_ENVS = {env_id.split("/")[-1]: env_id for env_id in gym.registry if env_id.startswith(("maskrl/", "Taxi"))} | {
    "connect_four_v3": "pettingzoo:classic/connect_four_v3"
}


@pytest.mark.parametrize("path", sorted(HYPERPARAMS_DIR.glob("*.yml")), ids=lambda path: path.stem)
def test_every_env_with_discrete_actions_has_value_based_sections(path: Path) -> None:
    env_id = FILE_ENVS[path.stem]
    if is_pettingzoo_id(env_id):  # self-play trains the policy-gradient algos only
        assert resolve_pettingzoo_id(env_id).kind == "aec"
        return
    env = gym.make(env_id)
    sections = set(yaml.safe_load(path.read_text()))
    if isinstance(env.action_space, gym.spaces.Discrete):
        assert {"dqn", "qrdqn", "dqn_nomask", "qrdqn_nomask"} <= sections
    else:  # DQN and QR-DQN refuse other action spaces
        assert not {"dqn", "qrdqn"} & sections


def test_ppo_nomask_penalises_invalid_actions_by_default() -> None:
    assert load_hyperparams("maskrl/Kart-v0", "ppo_nomask")["env_kwargs"]["invalid_action_penalty"] < 0


def test_parse_values_without_eval() -> None:
    assert parse_value("3e-4") == pytest.approx(3e-4)
    assert parse_value("7") == 7 and isinstance(parse_value("7"), int)
    assert parse_value("[64, 64]") == [64, 64]
    assert parse_value("{pi: [32], vf: [16]}") == {"pi": [32], "vf": [16]}
    assert parse_value("true") is True and parse_value("null") is None
    assert parse_value("__import__('os').system('true')") == "__import__('os').system('true')"
    assert parse_key_values(["a=1", "b=relu"], "--x") == {"a": 1, "b": "relu"}
    with pytest.raises(ValueError, match="expects key=value"):
        parse_key_values(["oops"], "--x")


def test_resolve_schedules_and_names() -> None:
    kwargs = resolve_algo_kwargs(
        {"learning_rate": "lin_0.001", "n_envs": 4, "policy_kwargs": {"activation_fn": "relu", "net_arch": [8]}}
    )
    assert kwargs["learning_rate"](1.0) == pytest.approx(1e-3) and kwargs["learning_rate"](0.5) == pytest.approx(5e-4)
    assert kwargs["policy_kwargs"]["activation_fn"].__name__ == "ReLU"
    assert "n_envs" not in kwargs
    with pytest.raises(ValueError, match="unknown activation_fn"):
        resolve_algo_kwargs({"policy_kwargs": {"activation_fn": "nope"}})
    with pytest.raises(ValueError, match="schedule"):
        resolve_algo_kwargs({"learning_rate": "fast"})


def test_broken_yaml_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "Bad-v0.yml"
    path.write_text("ppo:\n  n_steps: [1, 2\n")
    with pytest.raises(ValueError, match=r"is not valid YAML \(line \d+\)"):
        load_hyperparams("maskrl/Bad-v0", "ppo", path)


def test_evaluate_video_writes_an_animated_gif_of_the_episodes(kart_run: Path, tmp_path: Path, capsys) -> None:
    gif = tmp_path / "race.gif"
    evaluate_main([str(kart_run), "-n", "1", "--video", str(gif)])
    results_length = capsys.readouterr().out
    frames = iio.imread(gif)
    assert "video written to" in results_length
    assert frames.ndim == 4 and frames.shape[0] > 10 and frames.shape[-1] in (3, 4)
    assert not np.array_equal(frames[0], frames[-1]), "the race must move"
    with pytest.raises(SystemExit):
        evaluate_main([str(kart_run), "-n", "1", "--video", str(gif), "--render", "ansi"])
    assert "cannot be used together" in capsys.readouterr().err


def test_train_panda_grid_logs_and_saves_attention_maps(tmp_path: Path) -> None:
    train_main(
        [
            "--env",
            "maskrl/PandaGrid-v0",
            "--log-folder",
            str(tmp_path),
            "-n",
            "512",
            "--n-envs",
            "2",
            "--hyperparams",
            "n_steps=64",
            "batch_size=64",
            "n_epochs=1",
            "policy_kwargs={features_extractor_class: 'maskrl.policies:EntityAttentionExtractor', "
            "features_extractor_kwargs: {embed_dim: 16, n_heads: 2, n_blocks: 1}}",
            "--eval-freq",
            "0",
            "--save-freq",
            "0",
            "--eval-episodes",
            "2",
            "-v",
            "0",
        ]
    )
    run_dir = tmp_path / "ppo" / "PandaGrid-v0_1"
    assert (run_dir / "attention_map.png").stat().st_size > 1000
    (events,) = (run_dir / "tb").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
    accumulator.Reload()
    assert "attention/map" in accumulator.Tags()["images"]
    assert "env/watermelons_eaten" in accumulator.Tags()["scalars"]


def test_train_and_evaluate_contrastive_ppo_on_image_observations(tmp_path: Path, capsys) -> None:
    train_main(
        [
            "--algo",
            "ppo_contrastive",
            "--env",
            "maskrl/PandaGridImage-v0",
            "--log-folder",
            str(tmp_path),
            "-n",
            "256",
            "--n-envs",
            "2",
            "--hyperparams",
            "n_steps=64",
            "batch_size=64",
            "n_epochs=1",
            "--eval-freq",
            "0",
            "--save-freq",
            "0",
            "--eval-episodes",
            "1",
            "-v",
            "0",
        ]
    )
    run_dir = tmp_path / "ppo_contrastive" / "PandaGridImage-v0_1"
    (events,) = (run_dir / "tb").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert "train/contrastive_loss" in accumulator.Tags()["scalars"]
    # The model's image space is channel-first (SB3 transposes it), the env's channel-last: evaluate must match them.
    capsys.readouterr()
    evaluate_main([str(run_dir), "-n", "1", "--model", "final"])
    assert "return" in capsys.readouterr().out
