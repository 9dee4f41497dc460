"""The mask contract: which observation key carries which mask, its shape, its convention, who writes and who reads it.

Masks travel in the observation, as PettingZoo does it: an env returns a ``Dict`` observation whose mask keys hold
int8 0/1 arrays next to the feature keys. SB3's algorithms, buffers, ``predict`` and ``EvalCallback`` carry them
unchanged; maskrl's policies pop them before the features extractor and apply them. In every mask, **1 (True) means
valid / visible / may attend**, 0 means invalid / hidden / padding.

``"action_mask"``: the valid actions
    int8 ``(action_mask_size(action_space),)``, flat (layout below). Produced by Kart, PandaGrid and ToyMasked,
    by :class:`~maskrl.envs.wrappers.ActionMasksToObservation` (an env's ``action_masks()`` method) and
    :class:`~maskrl.envs.wrappers.InfoActionMaskToObservation` (``info["action_mask"]``, e.g. Taxi). Consumed by
    the masked distributions of every masked policy (PPO, A2C, TRPO, DQN, QR-DQN, RecurrentPPO).
``"action_mask"`` of a grid: the valid actions of each cell
    int8 ``(A, H, W)``. Produced by PandaHerd's GridNet view; consumed by ``GridNetPolicy`` / ``CategoricalMap``.
``"agent_mask"``: the cells holding an agent
    int8 ``(H, W)``, next to the ``"grid"`` features ``(C, H, W)``. Produced by PandaHerd's GridNet view; consumed
    by ``GridNetPolicy``: only those cells' actions count in the log-probability and the entropy.
``"visibility"``: the entities the agent sees
    int8 ``(N,)``, one per row of the ``"entities"`` features ``(N, F)``; slot 0, the agent itself, is always
    visible. Produced by PandaGrid (trees block sight); consumed by ``EntityAttentionExtractor`` (hidden entities
    are neither attended to nor pooled).
``"window_valid"``: the real steps of a trajectory window
    int8 ``(T,)``, one per row of ``"window_observations"`` ``(T, D)`` and ``"window_actions"``; 0 for the padding
    before an episode's first step. Produced by :class:`~maskrl.representation.window.TrajectoryWindow`; consumed
    by ``TrajectoryExtractor`` and the trajectory pretraining (attention over valid steps only).

The flat action mask follows sb3-contrib's layout: ``n`` entries for ``Discrete(n)``, the concatenated per-dimension
masks (``sum(nvec)``) for ``MultiDiscrete(nvec)``, and two entries per bit ("may be 0", "may be 1") for
``MultiBinary(n)``. Envs also offer sb3-contrib's ``action_masks()`` method (the same mask, as bool), so
``MaskablePPO`` works on them unchanged.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

ACTION_MASK_KEY = "action_mask"
AGENT_MASK_KEY = "agent_mask"
VISIBILITY_KEY = "visibility"
WINDOW_VALID_KEY = "window_valid"

#: Feature keys that the masks above refer to.
ENTITIES_KEY = "entities"
GRID_KEY = "grid"
WINDOW_OBSERVATIONS_KEY = "window_observations"
WINDOW_ACTIONS_KEY = "window_actions"

#: Keys of a step's observation that carry masks rather than features (stacked without history, never normalised).
MASK_KEYS = (ACTION_MASK_KEY, VISIBILITY_KEY, AGENT_MASK_KEY)


def action_mask_size(action_space: spaces.Space) -> int:
    """Length of the flat action mask for ``action_space`` (sb3-contrib's layout).

    :param action_space: a ``Discrete``, ``MultiDiscrete`` or (1-D) ``MultiBinary`` space
    :return: ``n`` for ``Discrete(n)``, ``sum(nvec)`` for ``MultiDiscrete(nvec)``, ``2 * n`` for ``MultiBinary(n)``
    """
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.MultiDiscrete):
        return int(np.sum(action_space.nvec))
    if isinstance(action_space, spaces.MultiBinary) and len(action_space.shape) == 1:
        return 2 * int(action_space.shape[0])
    raise TypeError(f"action masks need a Discrete, MultiDiscrete or 1-D MultiBinary action space, got {action_space}")
