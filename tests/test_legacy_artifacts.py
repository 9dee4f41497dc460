"""Run folders and encoders written by maskrl 0.1.0 (before the #13 restructuring) still load and compute the same.

``tests/fixtures/legacy_v0_1/`` holds files written by that code and ``reference.json``, the values that code computed
from them (``reference.py`` says how both were made). A change of module layout, class names or parameter names
must keep these loading, by a key remap or a format version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from maskrl.agents.registry import get_algo
from maskrl.agents.safe_load import load_model_safely
from maskrl.policies.trajectory_extractor import TrajectoryExtractor
from maskrl.representation.window import TrajectoryWindow

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "legacy_v0_1"
SEEDS = range(5)


def probe_run(run_dir: Path) -> dict[str, Any]:
    """Greedy actions and action log-probabilities of a run's model on the first observation of a few seeds."""
    model = load_model_safely(run_dir)
    config = model_config(run_dir)
    env = gym.make(config["env"], **config.get("env_kwargs", {}))
    actions, log_probs = [], []
    for seed in SEEDS:
        obs, _ = env.reset(seed=seed)
        action, _ = model.predict(obs, deterministic=True)
        actions.append(int(action))
        obs_tensor, _ = model.policy.obs_to_tensor(obs)
        with torch.no_grad():
            distribution = model.policy.get_distribution(obs_tensor)
            log_probs.append(distribution.distribution.logits[0].clamp(min=-1e4).tolist())
    probe: dict[str, Any] = {"actions": actions, "log_probs": log_probs}
    if config["algo"] == "ppo_contrastive":
        # SB3's own load (what --resume uses) restores the auxiliary model too; its parameters' norms, in order of
        # size, do not depend on how its modules are named.
        full = get_algo(config["algo"]).algo_class.load(run_dir / "final_model.zip", device="cpu")
        norms = sorted(float(p.detach().norm()) for p in full.contrastive.state_dict().values())
        probe["contrastive_norms"] = norms
    return probe


def probe_encoder(folder: Path) -> dict[str, Any]:
    """The pretrained encoder's features for the windows of a fixed Kart episode start."""
    env = TrajectoryWindow(gym.make("maskrl/Kart-v0"), window=4)
    obs, _ = env.reset(seed=0)
    extractor = TrajectoryExtractor(env.observation_space, pretrained=str(folder))
    features = []
    for _ in range(4):
        batch = {key: torch.as_tensor(np.asarray(value))[None].float() for key, value in obs.items()}
        with torch.no_grad():
            features.append(extractor({k: v for k, v in batch.items() if k != "action_mask"})[0].tolist())
        obs, *_ = env.step(0)
    return {"features": features}


def model_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((run_dir / "config.yml").read_text())


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return json.loads((FIXTURE / "reference.json").read_text())


@pytest.mark.parametrize(
    ("name", "run"),
    [
        ("ppo_panda_grid", "ppo/PandaGrid-v0_1"),
        ("ppo_contrastive_panda_grid_image", "ppo_contrastive/PandaGridImage-v0_1"),
    ],
)
def test_old_run_folder_loads_and_acts_the_same(reference: dict[str, Any], name: str, run: str) -> None:
    got = probe_run(FIXTURE / run)
    assert got["actions"] == reference[name]["actions"]
    np.testing.assert_allclose(got["log_probs"], reference[name]["log_probs"], rtol=1e-4, atol=1e-4)
    if "contrastive_norms" in reference[name]:
        np.testing.assert_allclose(got["contrastive_norms"], reference[name]["contrastive_norms"], rtol=1e-5)


def test_old_encoder_loads_and_encodes_the_same(reference: dict[str, Any]) -> None:
    got = probe_encoder(FIXTURE / "encoder")
    np.testing.assert_allclose(got["features"], reference["encoder"]["features"], rtol=1e-4, atol=1e-4)
