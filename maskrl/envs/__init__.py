"""Environments whose observations carry their masks, registered with gymnasium under ``maskrl/``."""

from gymnasium.envs.registration import register, registry

from maskrl.envs.wrappers import ActionMasksToObservation, DropMasks

__all__ = ["ActionMasksToObservation", "DropMasks"]

# Entry points are strings so that importing maskrl stays cheap.
_ENVS = {
    "maskrl/Kart-v0": "maskrl.envs.kart:KartEnv",
    "maskrl/PandaGrid-v0": "maskrl.envs.panda_grid:PandaGridEnv",
}

for _env_id, _entry_point in _ENVS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point)
