"""benchmarks/kart_baselines.py: trained agents of both Kart versions on the scripted drivers' races."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks.kart_baselines import POLICIES, main, model_policy, run
from maskrl.agents.env_setup import make_masked_vec_env
from maskrl.agents.hyperparams import resolve_algo_kwargs
from maskrl.agents.registry import build_model


def _as_run_of(kart_run: Path, tmp_path: Path, env_id: str) -> Path:
    """A copy of the shared run folder whose models are untrained ones of ``env_id``, as its config says."""
    run_dir = shutil.copytree(kart_run, tmp_path / "run")
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    env = make_masked_vec_env(env_id, 1, 0, "dummy", {})
    model = build_model("ppo", env, resolve_algo_kwargs(config["hyperparams"]))
    for name in ("best_model.zip", "final_model.zip"):
        model.save(run_dir / name)
    env.close()
    (run_dir / "config.yml").write_text(yaml.safe_dump({**config, "env": env_id}))
    return run_dir


def test_v1_agents_and_v0_agents_drive_the_same_races(kart_run: Path, tmp_path: Path) -> None:
    v0_run = _as_run_of(kart_run, tmp_path, "maskrl/Kart-v0")
    for path in (kart_run, v0_run):
        returns = run(model_policy(str(path)), 2, 0)["return"]
        assert returns.shape == (2,) and np.isfinite(returns).all()


def test_a_model_whose_observation_does_not_fit_its_env_is_refused(kart_run: Path, tmp_path: Path) -> None:
    run_dir = shutil.copytree(kart_run, tmp_path / "run")  # v1 models, but the config says v0
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    (run_dir / "config.yml").write_text(yaml.safe_dump({**config, "env": "maskrl/Kart-v0"}))
    with pytest.raises(ValueError, match=r"\(16, 59\) vs \(16, 57\)"):  # safe loading rebuilds the v0 policy
        model_policy(str(run_dir))


def test_main_adds_a_row_per_model(kart_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--episodes", "1", "--model", str(kart_run)])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 + len(POLICIES) and rows[-1].startswith(f"| {kart_run} | ")
