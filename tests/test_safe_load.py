"""The safe load path: models rebuilt from config.yml, only tensors read from the zip, nothing unpickled."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import pathlib
import shutil
import sys
import zipfile
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import PPO

from maskrl.agents.safe_load import SafeLoadError, is_allowed_import_path, load_model_safely
from maskrl.evaluate import main as evaluate_main


def rewrite_zip(source: Path, target: Path, replace: dict[str, bytes], drop: tuple[str, ...] = ()) -> None:
    """Copy the model zip ``source`` to ``target`` with some entries replaced or dropped."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            if name not in drop:
                new.writestr(name, replace.get(name, old.read(name)))


def copy_run(kart_run: Path, target: Path) -> Path:
    """A copy of the run's config.yml in ``target`` (a run folder to put doctored zips in)."""
    target.mkdir(exist_ok=True)
    (target / "config.yml").write_text((kart_run / "config.yml").read_text())
    return target


def test_safe_load_gives_the_same_actions_as_sb3_load(kart_run: Path, tmp_path: Path) -> None:
    safe = load_model_safely(kart_run / "final_model.zip")
    unsafe = PPO.load(kart_run / "final_model.zip", device="cpu")
    assert type(safe.policy) is type(unsafe.policy)
    assert safe.num_timesteps == unsafe.num_timesteps > 0
    for key, value in unsafe.policy.state_dict().items():
        assert torch.equal(safe.policy.state_dict()[key], value), key
    env = safe.get_env()
    obs = env.reset()
    for _ in range(20):
        action, _ = safe.predict(obs, deterministic=True)
        expected, _ = unsafe.predict(obs, deterministic=True)
        np.testing.assert_array_equal(action, expected)
        obs, *_ = env.step(action)
    # A run folder works too: its best model, else its final one.
    best = PPO.load(kart_run / "best_model.zip", device="cpu")
    assert load_model_safely(kart_run).num_timesteps == best.num_timesteps
    without_best = tmp_path / "run"
    shutil.copytree(kart_run, without_best)
    (without_best / "best_model.zip").unlink()
    assert load_model_safely(without_best).num_timesteps == safe.num_timesteps


def test_malicious_pickle_in_data_runs_with_sb3_load_not_with_safe_path(kart_run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with zipfile.ZipFile(kart_run / "final_model.zip") as archive:
        data = json.loads(archive.read("data"))
    # Unpickling this calls Path.touch(marker): stands for any code an attacker would run.
    payload = cloudpickle.dumps(_Payload(marker))
    data["policy_class"][":serialized:"] = base64.b64encode(payload).decode()
    run = copy_run(kart_run, tmp_path / "run")
    evil = run / "final_model.zip"
    rewrite_zip(kart_run / "final_model.zip", evil, {"data": json.dumps(data).encode()})

    model = load_model_safely(evil)
    assert not marker.exists(), "the safe path unpickled the zip's data"
    assert model.num_timesteps > 0
    evaluate_main([str(run), "-n", "1"])
    assert not marker.exists()

    # SB3's loader does unpickle it (whatever it does afterwards with the bogus policy class).
    with contextlib.suppress(Exception):  # only the side effect matters here
        PPO.load(evil, device="cpu")
    assert marker.exists()


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_broken_zips_are_one_line_errors(kart_run: Path, tmp_path: Path) -> None:
    source = kart_run / "final_model.zip"
    run = copy_run(kart_run, tmp_path / "run")

    truncated = run / "truncated.zip"
    truncated.write_bytes(source.read_bytes()[:500])
    with pytest.raises(SafeLoadError, match="corrupt or not a zip") as excinfo:
        load_model_safely(truncated)
    assert "\n" not in str(excinfo.value)

    no_policy = run / "no_policy.zip"
    rewrite_zip(source, no_policy, {}, drop=("policy.pth",))
    with pytest.raises(SafeLoadError, match=r"no policy\.pth"):
        load_model_safely(no_policy)

    with pytest.raises(SafeLoadError, match="model file not found"):
        load_model_safely(run / "missing.zip")

    # A pickle that is not just tensors (here: an object whose unpickling would run code) is refused by torch.
    not_tensors = run / "not_tensors.zip"
    buffer = io.BytesIO()
    torch.save({"x": _Payload(tmp_path / "pwned")}, buffer)
    rewrite_zip(source, not_tensors, {"policy.pth": buffer.getvalue()})
    with pytest.raises(SafeLoadError, match=r"cannot load policy\.pth") as excinfo:
        load_model_safely(not_tensors)
    assert "\n" not in str(excinfo.value) and not (tmp_path / "pwned").exists()


def test_weights_that_do_not_fit_the_config_are_one_line_errors(kart_run: Path, tmp_path: Path) -> None:
    source = kart_run / "final_model.zip"
    run = copy_run(kart_run, tmp_path / "run")
    with zipfile.ZipFile(source) as archive:
        state = torch.load(io.BytesIO(archive.read("policy.pth")), weights_only=True)
    key = next(k for k in state if k.endswith("weight"))
    state[key] = torch.zeros(3, 3)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    wrong = run / "wrong_shape.zip"
    rewrite_zip(source, wrong, {"policy.pth": buffer.getvalue()})
    with pytest.raises(SafeLoadError, match=rf"wrong shape \(zip vs rebuilt\): {key} \(3, 3\) vs") as excinfo:
        load_model_safely(wrong)
    assert "\n" not in str(excinfo.value)

    # The same weights under a config with another network: named mismatch, one line, through the CLI too.
    config = yaml.safe_load((kart_run / "config.yml").read_text())
    config["hyperparams"]["policy_kwargs"]["net_arch"] = [8, 8]
    (run / "config.yml").write_text(yaml.safe_dump(config))
    (run / "final_model.zip").write_bytes(source.read_bytes())
    with pytest.raises(SafeLoadError, match=r"do not fit the policy rebuilt from config\.yml"):
        load_model_safely(run / "final_model.zip")


def test_import_paths_outside_the_allowed_packages_are_refused_before_importing(kart_run: Path, tmp_path: Path) -> None:
    assert is_allowed_import_path("maskrl.policies:EntityAttentionExtractor")
    assert is_allowed_import_path("torch.nn.Linear")
    assert not is_allowed_import_path("maskrl_evil:Thing") and not is_allowed_import_path("torch:load")
    config = yaml.safe_load((kart_run / "config.yml").read_text())
    # Importing `this` prints the Zen of Python: a visible side effect of importing at all.
    assert "this" not in sys.modules
    config["hyperparams"]["policy_kwargs"]["features_extractor_class"] = "this:s"
    with pytest.raises(SafeLoadError, match=r"refusing to import policy_kwargs\.features_extractor_class 'this:s'"):
        load_model_safely(kart_run / "final_model.zip", config)
    assert "this" not in sys.modules
    config["hyperparams"]["policy_kwargs"] = {"net_arch": [16], "activation_fn": "relu"}
    config["hyperparams"]["policy"] = "os:system"
    with pytest.raises(SafeLoadError, match="refusing to import policy 'os:system'"):
        load_model_safely(kart_run / "final_model.zip", config)
    # Inside an allowed package, only a class of the right kind is accepted (not any callable).
    config["hyperparams"]["policy"] = "maskrl.agents.hyperparams:import_object"
    with pytest.raises(SafeLoadError, match="is not a subclass of BasePolicy"):
        load_model_safely(kart_run / "final_model.zip", config)

    # Through the CLI: one line, exit status 2.
    run = copy_run(kart_run, tmp_path / "run")
    (run / "final_model.zip").write_bytes((kart_run / "final_model.zip").read_bytes())
    config["hyperparams"]["policy"] = "subprocess:Popen"
    (run / "config.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as excinfo:
        evaluate_main([str(run), "-n", "1"])
    assert excinfo.value.code == 2


class Unpickled(Exception):
    """Raised by the patched ``PPO.load``: an exception no loader code path catches."""


def test_evaluate_uses_the_safe_path_for_a_run_folder(kart_run: Path, monkeypatch, capsys) -> None:
    def refuse(*args, **kwargs):
        raise Unpickled("evaluate.py unpickled a model of a run folder")

    monkeypatch.setattr(PPO, "load", refuse)
    evaluate_main([str(kart_run), "-n", "1"])
    evaluate_main([str(kart_run / "final_model.zip"), "-n", "1"])
    captured = capsys.readouterr()
    assert "return" in captured.out and "warning" not in captured.err
    with pytest.raises(Unpickled):
        evaluate_main([str(kart_run), "-n", "1", "--unsafe-load"])


def test_unsafe_load_warns_in_one_line(kart_run: Path, tmp_path: Path, capsys) -> None:
    evaluate_main([str(kart_run), "-n", "1", "--unsafe-load"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning" in err and "unpickles" in err
    bare = tmp_path / "model.zip"
    bare.write_bytes((kart_run / "final_model.zip").read_bytes())
    evaluate_main([str(bare), "--algo", "ppo", "--env", "maskrl/Kart-v1", "--env-kwargs", "n_laps=1", "-n", "1"])
    captured = capsys.readouterr()
    assert "return" in captured.out and "not in a run folder" in captured.err and captured.err.count("\n") == 1


def test_cli_reports_broken_run_zips_in_one_line(kart_run: Path, tmp_path: Path, capsys) -> None:
    run = copy_run(kart_run, tmp_path / "run")
    (run / "final_model.zip").write_bytes((kart_run / "final_model.zip").read_bytes()[:300])
    with pytest.raises(SystemExit) as excinfo:
        evaluate_main([str(run), "-n", "1"])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corrupt or not a zip" in err, err
