"""A run folder made by an attacker: every field and file the safe paths read, tried as an attacker would.

Each test builds a hostile copy of one tiny real run (trained once per session) and checks that the command or
function refuses it in one line (or loads it without running anything), with a canary file that the attacker's
payload would have written. The command-line ones run in a subprocess, as a user would run them, with an
address-space limit so that a regression (an alias bomb, ``/dev/zero``) fails the test instead of the machine.
``docs/safe_loading.md`` lists these vectors and the test of each.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import pathlib
import pickle
import resource
import shutil
import struct
import subprocess
import sys
import uuid
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from maskrl.agents import safe_load
from maskrl.agents.checkpoints import Checkpoint, list_checkpoints
from maskrl.agents.env_setup import make_masked_env
from maskrl.agents.hyperparams import resolve_algo_kwargs
from maskrl.agents.safe_load import SafeLoadError, check_env_id, import_allowed_class, load_model_safely
from maskrl.evaluate import main as evaluate_main
from maskrl.policies.trajectory_extractor import TrajectoryExtractor
from maskrl.policies.trajectory_transformer import TrajectoryConfig, TrajectoryTransformer, load_encoder, save_encoder
from maskrl.representation.dataset import load_dataset
from maskrl.representation.window import TrajectoryWindow
from maskrl.train import build_parser as train_parser

REPO = Path(__file__).resolve().parents[1]
#: Address space of the subprocesses: several times what an evaluation needs, far below the machine's memory.
SUBPROCESS_MEMORY = 4 << 30


@pytest.fixture
def run(kart_run: Path) -> Path:
    """The suite's tiny real run folder (conftest.py): config.yml, best and final models, evaluations, a checkpoint.
    Shared: a test copies it (:func:`hostile_copy`) before it doctors it."""
    assert list_checkpoints(kart_run / "checkpoints") and (kart_run / "evaluations.npz").is_file()
    return kart_run


def hostile_copy(run: Path, target: Path) -> Path:
    """A copy of the run folder for the attacker to doctor (TensorBoard files left out)."""
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("tb"))
    return target


def edit_config(folder: Path, **changes: Any) -> None:
    """Rewrite ``folder/config.yml`` with top-level fields changed."""
    config = yaml.safe_load((folder / "config.yml").read_text())
    config.update(changes)
    (folder / "config.yml").write_text(yaml.safe_dump(config))


def one_line(error: pytest.ExceptionInfo[BaseException], *fragments: str) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


class Payload:
    """Unpickling this writes the canary: stands for any code an attacker would run."""

    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return pathlib.Path.write_text, (self.canary, "ran")


class Unpickled(Exception):
    """Raised by a patched ``PPO.load``: an exception no loader code path catches."""


def payload_module(folder: Path, canary: Path) -> str:
    """A module in ``folder`` whose import writes ``canary``; returns its (unique) name."""
    name = f"payload_{uuid.uuid4().hex}"
    (folder / f"{name}.py").write_text(f"import pathlib\npathlib.Path({str(canary)!r}).write_text('ran')\n")
    return name


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (SUBPROCESS_MEMORY, SUBPROCESS_MEMORY))


def cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` as a user would (``cwd`` on ``sys.path`` too, as the repo root is for evaluate.py)."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limit_memory,
    )


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit status 2 and exactly one line on stderr, no traceback, containing ``fragments``."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# --- config.yml: the env id ------------------------------------------------------------------------------------


def test_env_id_with_a_module_prefix_is_refused_by_evaluate(run: Path, tmp_path: Path) -> None:
    # Issue #12 as reported: the run folder ships payload.py and names it in the env id.
    canary = tmp_path / "PWNED"
    evil = hostile_copy(run, tmp_path / "hostile_runs" / "evil")
    (evil / "payload.py").write_text(f"import pathlib\npathlib.Path({str(canary)!r}).write_text('ran')\n")
    edit_config(evil, env="hostile_runs.evil.payload:maskrl/Kart-v1")
    evaluate = [str(REPO / "evaluate.py"), str(evil), "-n", "1"]

    result = cli(evaluate, tmp_path)
    assert_refused(result, "env", "hostile_runs.evil.payload:maskrl/Kart-v1", "module prefix", "--unsafe-load")
    assert not canary.exists(), "evaluate.py imported a module named by the run folder"

    # The documented way out for a run one trusts does import it: proof that the payload above would have run.
    result = cli([*evaluate, "--unsafe-load"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert canary.exists() and "warning" in result.stderr


def test_env_id_with_a_module_prefix_is_refused_by_collect_trajectories(run: Path, tmp_path: Path) -> None:
    canary = tmp_path / "PWNED"
    evil = hostile_copy(run, tmp_path / "evil")
    edit_config(evil, env=f"{payload_module(tmp_path, canary)}:maskrl/Kart-v1")
    command = ["-m", "maskrl.representation.collect", "--model", str(evil), "--out", "out.npz", "-n", "10"]
    result = cli(command, tmp_path)
    assert_refused(result, "module prefix", "--unsafe-load")
    assert not canary.exists() and not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("{payload}:maskrl/Kart-v1", "module prefix"),
        ("{payload}:Kart-v1", "module prefix"),
        ("maskrl/NoSuchEnv-v0", "no env is registered"),
        ("maskrl/Kart", "no env is registered"),  # gymnasium would pick the latest version: not an exact id
        (42, "must be a gymnasium env id string"),
    ],
)
def test_only_registered_env_ids_are_accepted(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env_id: Any, message: str
) -> None:
    canary = tmp_path / "PWNED"
    monkeypatch.syspath_prepend(str(tmp_path))
    if isinstance(env_id, str):
        env_id = env_id.format(payload=payload_module(tmp_path, canary))
    config = yaml.safe_load((run / "config.yml").read_text())
    config["env"] = env_id
    with pytest.raises(SafeLoadError) as excinfo:
        load_model_safely(run / "final_model.zip", config)
    one_line(excinfo, message)
    assert not canary.exists()
    assert check_env_id("maskrl/Kart-v0") == "maskrl/Kart-v0"


# --- config.yml: YAML itself -----------------------------------------------------------------------------------


def billion_laughs(levels: int = 9) -> str:
    lines = ["algo: ppo", "env: maskrl/Kart-v0", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join([*lines, f"env_kwargs: {{n_laps: 1, bomb: *a{levels - 1}}}"]) + "\n"


def test_yaml_alias_bomb_is_refused_at_once(run: Path, tmp_path: Path) -> None:
    # 700 bytes that expand to 10^9 strings: anything that walks them (gymnasium formatting the kwargs of its
    # error message, a repr, a JSON dump) never returns.
    evil = hostile_copy(run, tmp_path / "evil")
    (evil / "config.yml").write_text(billion_laughs())
    result = cli([str(REPO / "evaluate.py"), str(evil), "-n", "1"], tmp_path, timeout=60)
    assert_refused(result, "expands to more than", "aliases")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("algo: ppo\nenv: maskrl/Kart-v0\nseed: !!python/object/apply:os.system ['touch {canary}']\n", "tag"),
        ("algo: ppo\nenv: maskrl/Kart-v0\nx: &a [1, *a]\n", "alias inside its own anchor"),
        ("algo: ppo\nenv: maskrl/Kart-v0\nx: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested too deeply"),
        ("algo: ppo\nenv: maskrl/Kart-v0\n" + "#" * (1 << 20) + "\n", "larger than"),
        (billion_laughs(levels=6), "expands to more than"),
    ],
    ids=["python-tag", "recursive-alias", "deep-nesting", "oversized", "small-alias-bomb"],
)
def test_yaml_that_is_not_small_plain_data_is_refused(run: Path, tmp_path: Path, text: str, message: str) -> None:
    canary = tmp_path / "PWNED"
    evil = hostile_copy(run, tmp_path / "evil")
    (evil / "config.yml").write_text(text.format(canary=canary) if "{canary}" in text else text)
    with pytest.raises(SafeLoadError) as excinfo:
        load_model_safely(evil)
    one_line(excinfo, message)
    assert not canary.exists()


# --- config.yml: the other fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algo": ["ppo"]}, "algo of config.yml must be a string"),
        ({"algo": "os.system"}, "unknown algo"),  # the algo is a registry name, never imported (regression guard)
        ({"env_kwargs": [1, 2]}, "env_kwargs of config.yml must be a mapping"),
        ({"env_kwargs": {"n_laps": datetime.date(2024, 1, 1)}}, "only plain YAML data"),
        ({"env_kwargs": {1: 2}}, "not a string"),
        ({"env_kwargs": {"n_laps": 10**9}}, "cannot make env"),
        ({"hyperparams": [1]}, "hyperparams of config.yml must be a mapping"),
        ({"hyperparams": {"policy_kwargs": "big"}}, "hyperparams.policy_kwargs of config.yml must be a mapping"),
        ({"hyperparams": {"_init_setup_model": False}}, "private constructor arguments"),
        ({"hyperparams": {"n_steps": 0}}, "bad hyperparameters"),  # an AssertionError inside SB3
        # 4e10 parameters (160 GB) asked for before the weights could be compared (was: allocation attempted).
        ({"hyperparams": {"policy_kwargs": {"net_arch": [200_000, 200_000]}}}, "implies at least 40000400000"),
        # Schedules are parsed, never evaluated (regression guard).
        ({"hyperparams": {"learning_rate": "__import__('os').system('x')"}}, "a schedule must be a number"),
    ],
)
def test_config_fields_of_the_wrong_kind_are_one_line_errors(
    run: Path, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    config = yaml.safe_load((run / "config.yml").read_text())
    config.update(change)
    with pytest.raises(SafeLoadError) as excinfo:
        load_model_safely(run / "final_model.zip", config)
    one_line(excinfo, message)


@pytest.mark.parametrize(
    ("policy_kwargs", "message"),
    [
        ({"features_extractor_class": "{payload}:Extractor"}, "refusing to import"),
        ({"activation_fn": "{payload}:Activation"}, "unknown activation_fn"),
        ({"optimizer_class": "{payload}:Optimizer"}, "bad hyperparameters"),
        ({"net_arch": [16], "features_extractor_kwargs": {"cls": "{payload}:X"}}, "bad hyperparameters"),
    ],
)
def test_hyperparameters_that_name_code_import_nothing_outside_the_allow_list(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy_kwargs: dict[str, Any], message: str
) -> None:
    canary = tmp_path / "PWNED"
    monkeypatch.syspath_prepend(str(tmp_path))
    name = payload_module(tmp_path, canary)
    policy_kwargs = json.loads(json.dumps(policy_kwargs).replace("{payload}", name))
    config = yaml.safe_load((run / "config.yml").read_text())
    config["hyperparams"]["policy_kwargs"] = policy_kwargs
    with pytest.raises(SafeLoadError) as excinfo:
        load_model_safely(run / "final_model.zip", config)
    one_line(excinfo, message)
    assert not canary.exists() and name not in sys.modules
    # resolve_algo_kwargs itself takes the allow-list's importer: it is refused there, before any import.
    with pytest.raises(SafeLoadError, match="refusing to import"):
        resolve_algo_kwargs(
            {"policy_kwargs": {"features_extractor_class": f"{name}:Extractor"}},
            lambda path: import_allowed_class(path, torch.nn.Module, "features_extractor_class"),
        )
    assert not canary.exists() and name not in sys.modules


# --- the model zip ---------------------------------------------------------------------------------------------


def rebuild_zip(source: Path, target: Path, replace: dict[str, bytes | zipfile.ZipInfo] | None = None) -> None:
    """Copy the model zip with entries replaced; a ``ZipInfo`` key-value pair is written as given."""
    replace = replace or {}
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            new.writestr(name, replace.get(name, old.read(name)))  # type: ignore[arg-type]


def deflated(name: str, data: bytes) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, data


def make_zip(source: Path, target: Path, kind: str, canary: Path) -> None:
    """Write the hostile model zip ``kind`` to ``target``."""
    with zipfile.ZipFile(source) as old:
        entries = [(name, old.read(name)) for name in old.namelist()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name: that is the point
        with zipfile.ZipFile(target, "w") as new:
            for name, data in entries:
                if name == "policy.pth" and kind == "bomb":
                    new.writestr(*deflated(name, bytes(8 << 20)))  # 8 MiB of zeros in 8 kB
                    continue
                new.writestr(name, data)
            if kind == "traversal":
                new.writestr(f"../../{canary.name}", b"print('escaped')")
            elif kind == "absolute":
                new.writestr(str(canary), b"print('escaped')")
            elif kind == "duplicate":
                new.writestr("policy.pth", b"second")
            elif kind == "many":
                for i in range(100):
                    new.writestr(f"pad/{i}", b"")
    if kind == "unsupported-method":
        # Compression method 97 (WavPack) in every header: zipfile cannot decompress it.
        raw = bytearray(target.read_bytes())
        for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
            start = raw.find(signature)
            while start != -1:
                struct.pack_into("<H", raw, start + offset, 97)
                start = raw.find(signature, start + 4)
        target.write_bytes(bytes(raw))
    elif kind == "truncated-member":
        raw = bytearray(target.read_bytes())
        at = raw.find(b"archive/data/0") + 200  # inside policy.pth's tensor data: its CRC no longer matches
        raw[at : at + 8] = b"\xff" * 8
        target.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("bomb", "a zip bomb"),
        ("traversal", "unsafe path"),
        ("absolute", "unsafe path"),
        ("duplicate", "two entries named 'policy.pth'"),
        ("many", "entries (at most 64"),
        ("unsupported-method", "corrupt or not a zip"),
        ("truncated-member", "corrupt or not a zip"),  # already caught by the CRC check: regression guard
    ],
)
def test_crafted_model_zips_are_refused_before_decompressing(
    run: Path, tmp_path: Path, kind: str, message: str
) -> None:
    canary = tmp_path / "escaped.py"
    folder = tmp_path / "deep" / "er" / "run"
    folder.mkdir(parents=True)
    shutil.copy(run / "config.yml", folder)
    make_zip(run / "final_model.zip", folder / "final_model.zip", kind, canary)
    with pytest.raises(SafeLoadError) as excinfo:
        load_model_safely(folder)
    one_line(excinfo, message)
    assert not canary.exists() and not list(tmp_path.rglob("escaped.py"))


def test_policy_pth_over_the_size_cap_is_refused_unread(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(safe_load, "MAX_WEIGHTS_BYTES", 4096)  # the real cap is 1 GiB
    with pytest.raises(SafeLoadError) as excinfo:
        load_model_safely(run / "final_model.zip")
    one_line(excinfo, "'policy.pth' is", "at most 4 KiB")


def nested_bomb(policy: bytes) -> bytes:
    """``policy.pth`` with a tensor record deflated from 8 MiB of zeros (torch never compresses its records)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(policy)) as inner, zipfile.ZipFile(out, "w") as new:
        for name in inner.namelist():
            if name.endswith("data/0"):
                new.writestr(*deflated(name, bytes(8 << 20)))
            else:
                new.writestr(name, inner.read(name))
    return out.getvalue()


@pytest.mark.parametrize("kind", ["legacy-pickle", "torch-pickle", "text", "list", "nested-bomb"])
def test_policy_pth_that_is_not_a_tensor_file_runs_nothing(run: Path, tmp_path: Path, kind: str) -> None:
    canary = tmp_path / "PWNED"
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(run / "config.yml", folder)
    with zipfile.ZipFile(run / "final_model.zip") as archive:
        policy = archive.read("policy.pth")
    buffer = io.BytesIO()
    if kind == "legacy-pickle":
        pickle.dump({"x": Payload(canary)}, buffer)
    elif kind == "torch-pickle":
        torch.save({"x": Payload(canary)}, buffer)
    elif kind == "text":
        buffer.write(b"import os; os.system('touch pwned')\n")
    elif kind == "list":
        torch.save([torch.zeros(1)], buffer)
    else:
        buffer.write(nested_bomb(policy))
    rebuild_zip(run / "final_model.zip", folder / "final_model.zip", {"policy.pth": buffer.getvalue()})
    with pytest.raises(SafeLoadError) as excinfo:
        load_model_safely(folder)
    message = one_line(excinfo, "policy.pth")
    assert not canary.exists()
    if kind in ("legacy-pickle", "text"):
        # Refused before torch's unpickler even sees it: only torch.save's zip format is read.
        assert "not a torch weights file" in message
    elif kind == "nested-bomb":
        assert "a zip bomb" in message
    # torch-pickle and list were already refused by weights_only=True: regression guards.


def test_a_data_entry_nested_too_deeply_is_ignored(run: Path, tmp_path: Path) -> None:
    # The zip's data JSON only gives num_timesteps: a crafted one must neither crash the loader nor be obeyed.
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(run / "config.yml", folder)
    rebuild_zip(run / "final_model.zip", folder / "final_model.zip", {"data": b"[" * 100_000 + b"]" * 100_000})
    model = load_model_safely(folder)
    assert model.num_timesteps == 0


# --- symlinks --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["config.yml", "best_model.zip"])
def test_symlinks_leading_out_of_the_run_folder_are_refused(run: Path, tmp_path: Path, which: str) -> None:
    evil = hostile_copy(run, tmp_path / "evil")
    outside = tmp_path / f"outside_{which}"
    shutil.move(evil / which, outside)
    (evil / which).symlink_to(outside)
    with pytest.raises(SafeLoadError) as excinfo:
        load_model_safely(evil)
    one_line(excinfo, "symlink", "outside")
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main([str(evil), "-n", "1"])
    assert exit_info.value.code == 2
    # A symlink that stays inside the folder is fine.
    (evil / which).unlink()
    shutil.move(outside, evil / f"real_{which}")
    (evil / which).symlink_to(evil / f"real_{which}")
    assert load_model_safely(evil).num_timesteps > 0


def test_config_linked_to_dev_zero_is_refused_not_read(run: Path, tmp_path: Path) -> None:
    evil = hostile_copy(run, tmp_path / "evil")
    (evil / "config.yml").unlink()
    (evil / "config.yml").symlink_to("/dev/zero")
    result = cli([str(REPO / "evaluate.py"), str(evil), "-n", "1"], tmp_path, timeout=60)
    assert_refused(result, "symlink", "/dev/zero")


def test_checkpoint_zips_are_loaded_safely_with_their_run_config(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A checkpoint's zip is unpickled by nobody: evaluate.py finds config.yml one folder up (it used to ask for
    # --algo and --env, and then load it with SB3).
    from stable_baselines3 import PPO

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise Unpickled("evaluate.py unpickled a checkpoint")

    monkeypatch.setattr(PPO, "load", refuse)
    checkpoint = list_checkpoints(run / "checkpoints")[-1]
    evaluate_main([str(checkpoint.model_path), "-n", "1"])
    captured = capsys.readouterr()
    assert "return" in captured.out and "warning" not in captured.err


# --- train.py --resume -----------------------------------------------------------------------------------------


def test_resume_refuses_a_pickled_evaluations_npz_before_unpickling_anything(run: Path, tmp_path: Path) -> None:
    canary = tmp_path / "PWNED"
    evil = hostile_copy(run, tmp_path / "evil")
    with np.load(evil / "evaluations.npz") as saved:
        arrays = dict(saved)
    arrays["results"] = np.array([[Payload(canary)]] * len(arrays["timesteps"]), dtype=object)
    np.savez(evil / "evaluations.npz", **arrays)
    result = cli([str(REPO / "train.py"), "--resume", str(evil), "-v", "0"], tmp_path)
    assert_refused(result, "evaluations.npz", "Python objects")
    assert not canary.exists()


def test_resume_says_it_unpickles() -> None:
    help_text = " ".join(train_parser().format_help().split())
    assert "--resume RUN_DIR" in help_text and "unpickled" in help_text


@pytest.mark.parametrize("kind", ["oversized", "deep"])
def test_checkpoint_sidecars_are_read_within_bounds(run: Path, tmp_path: Path, kind: str) -> None:
    folder = shutil.copytree(run / "checkpoints", tmp_path / "checkpoints")
    checkpoint = list_checkpoints(folder)[-1]
    if kind == "oversized":
        state = checkpoint.read_state()
        checkpoint.state_path.write_text(json.dumps(state) + " " * (2 << 20))
    else:
        checkpoint.state_path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError) as excinfo:
        Checkpoint(folder, checkpoint.step).read_state()
    one_line(excinfo, "unreadable", "larger than" if kind == "oversized" else "nested too deeply")


# --- trajectory datasets (maskrl-pretrain --data) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset_arrays() -> dict[str, np.ndarray]:
    metadata = {"format": "maskrl-trajectories-v1", "n_actions": 3, "action_space": "discrete"}
    return {
        "observations": np.zeros((6, 2), np.float32),
        "actions": np.array([0, 1, 2, 0, 1, 2]),
        "action_masks": np.ones((6, 3), bool),
        "episode_starts": np.array([1, 0, 0, 1, 0, 0], bool),
        "metadata": np.array(json.dumps(metadata)),
    }


def huge_header_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz whose observations header declares 2^40 floats over 16 bytes of data."""
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            if key == "observations":
                header = {"descr": "<f4", "fortran_order": False, "shape": (1 << 40, 2)}
                np.lib.format.write_array_header_1_0(buffer, header)
                buffer.write(bytes(16))
            else:
                np.lib.format.write_array(buffer, value)
            archive.writestr(f"{key}.npy", buffer.getvalue())


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("pickled-array", "Python objects"),
        ("huge-header", "declares shape"),
        ("deep-metadata", "nested too deeply"),
        ("string-observations", "observations must be real numbers"),
        ("negative-actions", "discrete actions must lie in"),
        ("float-masks", "action_masks must be booleans"),
        ("bad-n-actions", "n_actions must be a positive integer"),
    ],
)
def test_hostile_trajectory_datasets_are_one_line_errors(
    tmp_path: Path, dataset_arrays: dict[str, np.ndarray], kind: str, message: str
) -> None:
    canary = tmp_path / "PWNED"
    arrays = dict(dataset_arrays)
    path = tmp_path / "data.npz"
    if kind == "huge-header":
        huge_header_npz(path, arrays)
    else:
        if kind == "pickled-array":
            arrays["observations"] = np.array([[Payload(canary)] * 2] * 6, dtype=object)
        elif kind == "deep-metadata":
            arrays["metadata"] = np.array("[" * 100_000 + "]" * 100_000)
        elif kind == "string-observations":
            arrays["observations"] = np.full((6, 2), "x")
        elif kind == "negative-actions":
            arrays["actions"] = np.array([0, -5, 2, 0, 1, 2])
        elif kind == "float-masks":
            arrays["action_masks"] = np.full((6, 3), 0.5)
        else:
            arrays["metadata"] = np.array(json.dumps({"format": "maskrl-trajectories-v1", "n_actions": "3"}))
        np.savez(path, **arrays)
    with pytest.raises(ValueError) as excinfo:
        load_dataset(path)
    one_line(excinfo, message)
    assert not canary.exists()


def test_pretrain_refuses_a_hostile_dataset_in_one_line(tmp_path: Path, dataset_arrays: dict[str, np.ndarray]) -> None:
    canary = tmp_path / "PWNED"
    arrays = {**dataset_arrays, "actions": np.array([Payload(canary)] * 6, dtype=object)}
    np.savez(tmp_path / "data.npz", **arrays)
    result = cli(
        ["-m", "maskrl.representation.pretrain", "--data", "data.npz", "--out", "out", "--steps", "1"], tmp_path
    )
    assert_refused(result, "Python objects")
    assert not canary.exists() and not (tmp_path / "out").exists()


# --- pretrained encoders (fine-tuning with TrajectoryExtractor) -------------------------------------------------


@pytest.fixture
def encoder_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "encoder"
    save_encoder(TrajectoryTransformer(TrajectoryConfig(obs_dim=4, action_dim=3)), folder, {"objectives": []})
    return folder


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("deep-json", "nested too deeply"),
        ("oversized-json", "larger than"),
        ("huge-architecture", "do not fit"),
        ("many-layers", "n_layers 2000, 2 blocks"),
        ("overflowing-size", "bad architecture"),
        ("weights-symlink-out", "symlink"),
        ("pickled-weights", "not a torch weights file"),
        ("torch-pickled-weights", "cannot load"),  # already refused by weights_only=True: regression guard
    ],
)
def test_hostile_pretrained_encoders_are_refused(encoder_folder: Path, tmp_path: Path, kind: str, message: str) -> None:
    canary = tmp_path / "PWNED"
    info_path, weights = encoder_folder / "encoder.json", encoder_folder / "encoder.pt"
    info = json.loads(info_path.read_text())
    if kind == "deep-json":
        info_path.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "oversized-json":
        info_path.write_text(json.dumps(info) + " " * (2 << 20))
    elif kind == "huge-architecture":
        # ~1e11 parameters: building it would need 400 GB; it must be compared with the weights on paper first.
        info["config"].update(d_model=1 << 16, n_heads=1)
        info_path.write_text(json.dumps(info))
    elif kind == "many-layers":
        # Small layers, but many: even on the meta device each costs Python objects and time.
        info["config"].update(n_layers=2000)
        info_path.write_text(json.dumps(info))
    elif kind == "overflowing-size":
        info["config"].update(d_model=10**30, n_heads=1)  # torch cannot even describe the shape (was: traceback)
        info_path.write_text(json.dumps(info))
    elif kind == "weights-symlink-out":
        shutil.move(weights, tmp_path / "elsewhere.pt")
        weights.symlink_to(tmp_path / "elsewhere.pt")
    elif kind == "pickled-weights":
        weights.write_bytes(pickle.dumps({"x": Payload(canary)}))
    else:
        torch.save({"x": Payload(canary)}, weights)
    with pytest.raises(ValueError) as excinfo:
        load_encoder(encoder_folder)
    one_line(excinfo, message)
    assert not canary.exists()


def test_fine_tuning_from_a_hostile_encoder_folder_is_a_one_line_error(encoder_folder: Path) -> None:
    # The path a user meets: a downloaded encoder folder given to the features extractor (it used to crash with a
    # RecursionError on this encoder.json).
    (encoder_folder / "encoder.json").write_text("[" * 100_000 + "]" * 100_000)
    space = TrajectoryWindow(make_masked_env("maskrl/Kart-v0"), window=4).observation_space
    with pytest.raises(ValueError) as excinfo:
        TrajectoryExtractor(space, pretrained=encoder_folder)
    one_line(excinfo, "encoder.json", "nested too deeply")
