"""Bad inputs and the answers they get; every test here is a row of ``docs/bad_inputs.md``.

CLI cases go through ``maskrl.train.main`` / ``maskrl.evaluate.main`` and must exit with status 2 and one
``error:`` line on stderr, without a traceback. The wording of the messages may still change: the tests match
short, stable substrings.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO

from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.agents.hyperparams import load_hyperparams, parse_key_values, parse_value
from maskrl.agents.registry import build_model
from maskrl.envs import ActionMasksToObservation
from maskrl.evaluate import main as evaluate_main
from maskrl.policies import MaskedActorCriticPolicy
from maskrl.policies.distributions import MaskedCategorical, MaskedMultiCategorical
from maskrl.train import main as train_main

# A run that would be quick if it ever got as far as training (it must not).
QUICK = ["-n", "64", "--n-envs", "1", "--eval-freq", "0", "--save-freq", "0", "-v", "0"]
QUICK_HP = ["n_steps=32", "batch_size=32", "n_epochs=1"]


def assert_cli_error(main, argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """Run a CLI, require exit status 2 and exactly one ``error:`` line holding every needle; return that line."""
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    # evaluate.py may print a one-line "warning:" (loading an untrusted zip) before its error; nothing else.
    assert len(errors) == 1 and all("warning:" in line for line in lines if line not in errors), err
    for needle in needles:
        assert needle in errors[0], err
    return errors[0]


def train_error(argv: list[str], tmp_path: Path, capsys, *needles: str) -> str:
    log_folder = tmp_path / "runs"
    line = assert_cli_error(train_main, [*QUICK, "--log-folder", str(log_folder), *argv], capsys, *needles)
    assert not list(log_folder.glob("*/*")), "a failed run must not leave a run folder"
    return line


# ---------------------------------------------------------------------------------------------------------------------
# Masks given to the distributions and the policy
# ---------------------------------------------------------------------------------------------------------------------
def test_mask_of_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"mask shape \(2, 5\) does not match logits shape \(2, 4\)"):
        MaskedCategorical(torch.zeros(2, 4), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not match"):
        MaskedMultiCategorical(torch.zeros(2, 5), [2, 3], torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize("bad", [2, -1])
def test_mask_values_other_than_0_1(bad: int) -> None:
    mask = torch.tensor([[1, bad, 0]])
    with pytest.raises(ValueError, match=f"mask values must be 0/1 or booleans, found {bad}"):
        MaskedCategorical(torch.zeros(1, 3), mask)


@pytest.mark.parametrize("bad", [float("nan"), 0.5])
def test_float_mask_with_nan_or_fraction(bad: float) -> None:
    with pytest.raises(ValueError, match="mask values must be 0/1"):
        MaskedCategorical(torch.zeros(1, 3), torch.tensor([[1.0, bad, 0.0]]))


def test_state_with_no_valid_action() -> None:
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[2] = False
    with pytest.raises(ValueError, match=r"no valid action in batch row 2"):
        MaskedCategorical(torch.zeros(4, 3), mask)
    multi = torch.tensor([[1, 1, 0, 0, 0]])
    with pytest.raises(ValueError, match="no valid choice for sub-action 1"):
        MaskedMultiCategorical(torch.zeros(1, 5), [2, 3], multi)


def test_state_with_no_valid_action_without_validation_never_samples_an_invalid_action() -> None:
    # validate_args=False (or set_mask_checks(False)) skips the diagnosis, but an all-False row still gives no
    # probability to its invalid actions: sampling it raises rather than choosing one.
    dist = MaskedCategorical(torch.zeros(2, 3), torch.tensor([[0, 0, 0], [0, 1, 0]]), validate_args=False)
    assert dist.probs[0].sum() == 0
    assert torch.equal(dist.probs[1], torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(RuntimeError):
        dist.sample()


def test_nan_logits_at_a_valid_action() -> None:
    with pytest.raises(ValueError, match="NaN"):
        MaskedCategorical(torch.tensor([[float("nan"), 0.0]]), torch.tensor([[True, True]]))


class FixedMaskEnv(gym.Env):
    """Box observations, ``Discrete(n)``; ``action_masks()`` returns whatever array it was given."""

    def __init__(self, mask, n: int = 3) -> None:
        self.mask = np.asarray(mask)
        self.observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(n)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}

    def action_masks(self) -> np.ndarray:
        return self.mask


def make_model(mask=(1, 1, 1)) -> PPO:
    env = ActionMasksToObservation(FixedMaskEnv(mask))
    return PPO(MaskedActorCriticPolicy, env, n_steps=8, batch_size=8, n_epochs=1, device="cpu")


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        ([1, 2, 0], "mask values must be 0/1 or booleans, found 2"),
        ([1, -1, 1], "mask values must be 0/1 or booleans, found -1"),
        ([1.0, float("nan"), 1.0], "found nan"),
        ([0, 0, 0], "no valid action in batch row 0"),
        ([1, 1], "Unexpected observation shape (2,)"),
    ],
    ids=["2", "-1", "nan", "all-zero", "short"],
)
def test_policy_predict_with_a_bad_mask(mask, message) -> None:
    model = make_model()
    with pytest.raises(ValueError) as error:
        model.predict({"observation": np.zeros(2, np.float32), "action_mask": np.array(mask)})
    assert message in str(error.value)


def test_training_reaches_a_state_with_no_valid_action() -> None:
    model = make_model(mask=(0, 0, 0))
    with pytest.raises(ValueError, match="no valid action"):
        model.learn(8)


def test_mask_length_disagrees_with_action_space_in_the_wrapper() -> None:
    env = ActionMasksToObservation(FixedMaskEnv([1, 1], n=3))
    with pytest.raises(ValueError, match=r"action_masks\(\) returned shape \(2,\), expected \(3,\)"):
        env.reset(seed=0)


def test_mask_length_disagrees_with_action_space_in_the_policy() -> None:
    space = spaces.Dict({"observation": spaces.Box(0, 1, (2,)), "action_mask": spaces.MultiBinary(4)})
    with pytest.raises(ValueError, match=r"'action_mask' has shape \(4,\).*\(3,\)"):
        MaskedActorCriticPolicy(space, spaces.Discrete(3), lambda _: 1e-3)


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("bad", [2.0, -1.0, float("nan"), 0.5])
def test_wrapper_rejects_mask_values_other_than_0_1(bad: float) -> None:
    env = ActionMasksToObservation(FixedMaskEnv([1.0, bad, 1.0]))
    with pytest.raises(ValueError):
        env.reset(seed=0)


def test_wrapper_passes_an_all_false_mask_and_the_policy_refuses_it() -> None:
    env = ActionMasksToObservation(FixedMaskEnv([0, 0, 0]))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)  # a valid observation; the state itself is the problem
    with pytest.raises(ValueError, match="no valid action"):
        make_model().predict(obs)


# ---------------------------------------------------------------------------------------------------------------------
# Hyperparameter files
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ppo:\n  n_steps: [1, 2\n", r"is not valid YAML \(line \d+\)"),
        ("ppo: {n_steps: 8\n", r"is not valid YAML"),
        ("- ppo\n- a2c\n", "must map algo names to hyperparameters, got list"),
        ("just a string\n", "must map algo names to hyperparameters, got str"),
        ("ppo: [1, 2]\n", "section 'ppo' must be a mapping, got list"),
        ("ppo: 7\n", "section 'ppo' must be a mapping, got int"),
    ],
    ids=["syntax-list", "syntax-flow", "top-list", "top-str", "section-list", "section-int"],
)
def test_broken_hyperparameter_yaml(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "Bad-v0.yml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        load_hyperparams("maskrl/Bad-v0", "ppo", path=path)
    assert "\n" not in str(error.value)


def test_empty_or_missing_hyperparameter_yaml_means_no_hyperparameters(tmp_path: Path) -> None:
    empty = tmp_path / "Empty-v0.yml"
    empty.write_text("")
    assert load_hyperparams("maskrl/Empty-v0", "ppo", path=empty) == {}
    assert load_hyperparams("maskrl/Missing-v0", "ppo", path=tmp_path / "missing.yml") == {}


def test_key_value_parsing() -> None:
    for item in ("n_laps", "=3", " =3"):
        with pytest.raises(ValueError, match="--x expects key=value"):
            parse_key_values([item], "--x")
    with pytest.raises(ValueError, match="cannot parse value"):
        parse_value("[1, 2")
    assert parse_value("__import__('os')") == "__import__('os')"  # stays a string, never evaluated


# ---------------------------------------------------------------------------------------------------------------------
# train.py
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--env", "Nope-v0"], ["unknown env 'Nope-v0'"]),
        (["--algo", "nope"], ["invalid choice: 'nope'"]),
        (["--env-kwargs", "n_laps"], ["--env-kwargs expects key=value"]),
        (["--env-kwargs", "=3"], ["--env-kwargs expects key=value"]),
        (["--env-kwargs", "n_laps=[1"], ["cannot parse value"]),
        (["--env-kwargs", "bogus=1"], ["unexpected keyword argument 'bogus'"]),
        (["--env-kwargs", "n_laps=abc"], ["n_laps must be an int"]),
        (["--env-kwargs", "n_laps=1.5"], ["n_laps must be an int"]),
        (["--env-kwargs", "n_laps=0"], ["n_laps must be >= 1"]),
        (["--hyperparams", "n_steps"], ["--hyperparams expects key=value"]),
        (["--hyperparams", "net_arch=[64"], ["cannot parse value"]),
        (["--hyperparams", "bogus=1"], ["bad hyperparameters for ppo", "bogus"]),
        (["--hyperparams", "n_steps=abc"], ["hyperparameter n_steps must be a number"]),
        (["--hyperparams", "learning_rate=fast"], ["schedule", "'fast'"]),
        (["--hyperparams", "policy_kwargs={activation_fn: nope}"], ["unknown activation_fn 'nope'"]),
        (["--hyperparams", "policy=nope.module:Policy"], ["cannot import 'nope.module:Policy'"]),
        (["-n", "0"], ["expected a positive integer"]),
        (["-n", "-5"], ["expected a positive integer"]),
        (["-n", "abc"], ["expected a positive integer"]),
        (["--n-envs", "0"], ["expected a positive integer"]),
        (["--n-envs", "-1"], ["expected a positive integer"]),
        (["--eval-episodes", "0"], ["expected a positive integer"]),
        (["-n", "1.5"], ["expected a positive integer, got '1.5'"]),
        (["--seed", "-1"], ["argument --seed: expected an integer from 0 to 2147483647, got '-1'"]),
        (["--seed", "abc"], ["argument --seed"]),
        (["--device", "tpu"], ["argument --device: expected auto, cpu, cuda, cuda:N or mps, got 'tpu'"]),
        (["--device", "meta"], ["argument --device"]),
        (["--env", "Kart-v0"], ["unknown env 'Kart-v0': did you mean 'maskrl/Kart-v0'?", "--list"]),
        (["--env", "nope:Foo-v0"], ["unknown env 'nope:Foo-v0'", "No module named 'nope'"]),
        (["--env", "CartPole-v1"], ["--algo ppo needs action masks, but CartPole-v1 has none", "ppo_nomask"]),
        (
            ["--env", "Pendulum-v1"],
            ["--algo ppo masks its actions, which needs a Discrete, MultiDiscrete or MultiBinary", "ppo_nomask"],
        ),
        (["--algo", "maskable_ppo", "--env", "CartPole-v1"], ["--algo maskable_ppo needs action masks"]),
        (
            ["--algo", "ppo_contrastive", "--env", "maskrl/PandaGrid-v0"],
            ["cannot train on maskrl/PandaGrid-v0", "one 'observation' key"],
        ),
        (["--algo", "dqn", "--env", "maskrl/PandaHerd-v0"], ["needs a Discrete action space", "MultiDiscrete"]),
        (
            ["--algo", "ppo_naive", "--env", "maskrl/PandaHerd-v0", "--env-kwargs", "flat_action_mask=false"],
            ["--algo ppo_naive reads flat action masks", "shape (5, 8, 8)", "use --algo ppo or a2c"],
        ),
        (
            ["--hyperparams", "policy=sb3_contrib.ppo_recurrent.policies:MlpLstmPolicy"],
            ["the policy RecurrentActorCriticPolicy cannot act for PPO"],
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("-") else None,
)
def test_train_bad_arguments(argv, needles, tmp_path: Path, capsys) -> None:
    train_error(argv, tmp_path, capsys, *needles)


def test_train_error_about_the_yaml_file_does_not_blame_the_command_line(tmp_path: Path, capsys, monkeypatch) -> None:
    # A YAML section the algo refuses (here made up: the shipped files build every algo they name).
    import maskrl.agents.training

    monkeypatch.setattr(
        maskrl.agents.training, "load_hyperparams", lambda env, algo, path=None: {"n_steps": 64, "batch_size": 0}
    )
    line = train_error([], tmp_path, capsys, "--algo ppo cannot train on maskrl/Kart-v1 with the hyperparameters of")
    assert "Kart-v1.yml (section ppo)" in line and "bad hyperparameters" not in line


@pytest.mark.parametrize(
    ("override", "needle"),
    [("n_timesteps=0", "must be positive"), ("n_timesteps=-5", "must be positive"), ("n_envs=0", "must be positive")],
)
def test_train_zero_or_negative_timesteps_or_envs_from_hyperparams(override, needle, tmp_path: Path, capsys) -> None:
    log_folder = tmp_path / "runs"
    argv = ["--log-folder", str(log_folder), "--eval-freq", "0", "-v", "0", "--hyperparams", override]
    assert_cli_error(train_main, argv, capsys, needle)
    assert not log_folder.exists() or not list(log_folder.glob("*/*"))


def test_train_log_folder_inside_a_regular_file(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    argv = [*QUICK, "--hyperparams", *QUICK_HP, "--log-folder", str(blocker / "runs")]
    assert_cli_error(train_main, argv, capsys, "cannot create log folder", "not_a_dir")


@pytest.mark.parametrize(
    "override",
    ["n_timesteps=abc", "n_envs=abc", "n_timesteps=[1]", "env_kwargs=5", "env_kwargs=[1]", "policy_kwargs=5"],
)
def test_train_bad_value_type_of_our_keys(override, tmp_path: Path, capsys) -> None:
    argv = ["--log-folder", str(tmp_path), "--eval-freq", "0", "-v", "0", "--hyperparams", *QUICK_HP, override]
    assert_cli_error(train_main, argv, capsys, override.split("=")[0])


@pytest.mark.parametrize("override", ["batch_size=0", "n_steps=-3"])
def test_train_out_of_range_algo_arguments(override, tmp_path: Path, capsys) -> None:
    argv = [*QUICK, "--log-folder", str(tmp_path / "runs"), "--hyperparams", *QUICK_HP, override]
    assert_cli_error(train_main, argv, capsys, "bad hyperparameters")


def test_train_algo_argument_of_wrong_type_used_late(tmp_path: Path, capsys) -> None:
    argv = [*QUICK, "--log-folder", str(tmp_path / "runs"), "--hyperparams", *QUICK_HP, "gamma=abc"]
    assert_cli_error(train_main, [*argv, "--env-kwargs", "max_steps=10"], capsys, "gamma")


# ---------------------------------------------------------------------------------------------------------------------
# evaluate.py
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kart_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained ppo model of ``maskrl/Kart-v0`` saved outside any run folder."""
    env = make_masked_vec_env("maskrl/Kart-v0", 1, 0, "dummy", {"max_steps": 10})
    model = build_model("ppo", env, {"n_steps": 16, "batch_size": 16})
    path = tmp_path_factory.mktemp("model") / "kart.zip"
    model.save(path)
    env.close()
    return path


KART = ["--algo", "ppo", "--env", "maskrl/Kart-v0", "-n", "1", "--env-kwargs", "max_steps=10"]


def test_evaluate_missing_model(tmp_path: Path, capsys) -> None:
    assert_cli_error(evaluate_main, [str(tmp_path / "nope.zip"), *KART], capsys, "no such model file", "nope.zip")
    assert_cli_error(evaluate_main, [str(tmp_path)], capsys, "no model in")


@pytest.mark.parametrize("kind", ["truncated-500", "empty", "garbage", "no-policy"])
def test_evaluate_truncated_or_corrupt_model(kind: str, kart_model: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / f"{kind}.zip"
    data = kart_model.read_bytes()
    if kind == "truncated-500":
        bad.write_bytes(data[:500])
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "garbage":
        bad.write_bytes(b"not a zip file " * 64)
    else:
        with zipfile.ZipFile(kart_model) as src, zipfile.ZipFile(bad, "w") as dst:
            for name in src.namelist():
                if name != "policy.pth":
                    dst.writestr(name, src.read(name))
    line = assert_cli_error(evaluate_main, [str(bad), *KART], capsys, bad.name)
    assert "load" in line or "corrupt" in line, line


@pytest.mark.parametrize("kind", ["other-zip", "no-data", "truncated-half"])
def test_evaluate_zip_that_is_not_an_sb3_model(kind: str, kart_model: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / f"{kind}.zip"
    with zipfile.ZipFile(kart_model) as src, zipfile.ZipFile(bad, "w") as dst:
        if kind == "other-zip":
            dst.writestr("readme.txt", "hello")
        elif kind == "truncated-half":
            # Cut in the middle, zipfile finds the central directory of the zip *inside* policy.pth instead.
            pass
        else:
            for name in src.namelist():
                if name != "data":
                    dst.writestr(name, src.read(name))
    if kind == "truncated-half":
        data = kart_model.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    assert_cli_error(evaluate_main, [str(bad), *KART], capsys, bad.name)


@pytest.mark.parametrize(
    ("env_args", "needle"),
    [
        (["--env", "maskrl/PandaGrid-v0"], "the model expects observations"),
        (["--env", "maskrl/Kart-v0", "--env-kwargs", "n_item_types=8"], "the model expects observations"),
        (["--env", "CartPole-v1"], "CartPole-v1 has no action masks"),
    ],
    ids=["PandaGrid", "Kart-more-items", "CartPole"],
)
def test_evaluate_model_of_another_env(env_args, needle, kart_model: Path, capsys) -> None:
    assert_cli_error(evaluate_main, [str(kart_model), "--algo", "ppo", "-n", "1", *env_args], capsys, needle)


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        ([], ["pass --algo and --env"]),
        (["--algo", "ppo", "--env", "Nope-v0"], ["unknown env 'Nope-v0'"]),
        (["--algo", "nope", "--env", "maskrl/Kart-v0"], ["invalid choice: 'nope'"]),
        ([*KART, "--env-kwargs", "n_laps=0"], ["n_laps must be >= 1"]),
        ([*KART, "--env-kwargs", "n_laps"], ["--env-kwargs expects key=value"]),
        ([*KART, "-n", "0"], ["expected a positive integer"]),
        ([*KART, "--video", "x.gif", "--render", "ansi"], ["--video and --render"]),
        ([*KART, "--seed", "-1"], ["argument --seed: expected an integer from 0"]),
        ([*KART, "--device", "tpu"], ["argument --device: expected auto, cpu, cuda, cuda:N or mps, got 'tpu'"]),
        ([*KART, "--video", "x"], ["--video writes .gif files", "'x'"]),
        ([*KART, "--video", "x.avi"], ["--video writes .gif files", "x.avi"]),
        ([*KART, "--env", "Kart-v0"], ["unknown env 'Kart-v0': did you mean 'maskrl/Kart-v0'?"]),
    ],
    ids=[
        "no-algo-env",
        "unknown-env",
        "unknown-algo",
        "bad-env-kwarg",
        "no-equals",
        "zero-episodes",
        "video+render",
        "seed-minus-1",
        "device-tpu",
        "video-no-extension",
        "video-avi",
        "env-without-namespace",
    ],
)
def test_evaluate_bad_arguments(argv, needles, kart_model: Path, capsys) -> None:
    assert_cli_error(evaluate_main, [str(kart_model), *argv], capsys, *needles)


@pytest.mark.parametrize(
    ("config", "needle"),
    [("algo: [ppo\n", "is not valid YAML"), ("- ppo\n", "is not a maskrl run config"), ("algo: ppo\n", "needs")],
    ids=["syntax", "list", "no-env"],
)
def test_evaluate_run_folder_with_broken_config(config: str, needle: str, kart_model: Path, tmp_path: Path, capsys):
    (tmp_path / "final_model.zip").write_bytes(kart_model.read_bytes())
    (tmp_path / "config.yml").write_text(config)
    assert_cli_error(evaluate_main, [str(tmp_path)], capsys, needle)


def test_evaluate_unwritable_json(kart_model: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = [str(kart_model), *KART, "--json", str(blocker / "r.json")]
    assert_cli_error(evaluate_main, argv, capsys, "cannot write", "r.json")


def test_evaluate_mp4_without_ffmpeg(kart_model: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("imageio", reason="imageio is a dependency")
    import importlib.util

    if importlib.util.find_spec("imageio_ffmpeg") or importlib.util.find_spec("av"):
        pytest.skip("an MP4 plugin is installed here")
    video = tmp_path / "race.mp4"
    assert_cli_error(evaluate_main, [str(kart_model), *KART, "--video", str(video)], capsys, "imageio[ffmpeg]")
    assert not video.exists()


def test_evaluate_unwritable_video(kart_model: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = [str(kart_model), *KART, "--video", str(blocker / "v.gif")]
    result = subprocess.run([sys.executable, "-m", "maskrl.evaluate", *argv], capture_output=True, text=True)
    assert result.returncode == 2
    assert "cannot write" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
