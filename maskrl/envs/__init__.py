"""Environments whose observations carry their masks, registered with gymnasium under ``maskrl/``."""

from gymnasium.envs.registration import register, registry

from maskrl.envs import panda_herd as panda_herd_v0
from maskrl.envs.wrappers import ActionMasksToObservation, DropMasks
from maskrl.representation.window import TrajectoryWindow

# PettingZoo style: ``from maskrl.envs import panda_herd_v0; panda_herd_v0.parallel_env()`` (importing the
# module also registers ``maskrl/panda_herd_v0`` in PettingZoo's registries). Any masked PettingZoo env trains
# through ``maskrl.envs.pettingzoo_vec_env.PettingZooVecEnv`` (parallel envs: one slot per agent, one shared policy)
# or ``maskrl.envs.pettingzoo_aec.PettingZooAECEnv`` (turn-based games: one seat against opponents); neither is
# imported here: they need SB3 and torch.
__all__ = ["ActionMasksToObservation", "DropMasks", "TrajectoryWindow", "panda_herd_v0"]

# Entry points are strings: an env's module is imported when the env is made. Each id maps to (entry point, kwargs).
_ENVS: dict[str, tuple[str, dict[str, object]]] = {
    "maskrl/Kart-v1": ("maskrl.envs.kart:KartEnv", {}),
    # v0 has no skid warnings in its observation; the studies in docs/ were measured on it.
    "maskrl/Kart-v0": ("maskrl.envs.kart:KartEnv", {"skid_warnings": False}),
    "maskrl/PandaGrid-v0": ("maskrl.envs.panda_grid:PandaGridEnv", {}),
    # The same world seen as a small fogged picture for pixel policies; 5 px per cell (40 x 40) is the smallest
    # size SB3's default NatureCNN accepts, so MultiInputPolicy works on it out of the box.
    "maskrl/PandaGridImage-v0": ("maskrl.envs.panda_grid:PandaGridEnv", {"obs_mode": "image", "image_cell_px": 5}),
    "maskrl/PandaHerd-v0": ("maskrl.envs.panda_herd:PandaHerdGridEnv", {}),
    # A contextual bandit to test masked policies on; action_type= discrete, multidiscrete or multibinary.
    "maskrl/ToyMasked-v0": ("maskrl.envs.toy:ToyMaskedEnv", {}),
}

for _env_id, (_entry_point, _kwargs) in _ENVS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point, kwargs=_kwargs)
