"""TensorBoard metrics about masks and env episodes, beyond SB3's own."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from maskrl.envs.wrappers import ACTION_MASK_KEY


class MaskStatsCallback(BaseCallback):
    """Log, once per rollout, how the agent deals with the mask and what its episodes looked like.

    - ``rollout/invalid_action_rate``: fraction of steps whose action was invalid (from
      ``info["invalid_action"]``, which maskrl envs and ``ActionMasksToObservation`` report);
    - ``rollout/valid_actions_mean``: mean number of valid actions per step, when the mask is in
      the observation;
    - ``env/<key>``: mean of each ``info["episode_stats"][key]`` over the episodes that ended.

    It only reads what the rollout already has: no extra call into the envs.
    """

    def __init__(self, verbose: int = 0):
        super().__init__(verbose)
        self._steps = 0
        self._invalid = 0
        self._valid_sum = 0.0
        self._valid_count = 0
        self._episode_stats: dict[str, list[float]] = defaultdict(list)

    def _on_rollout_start(self) -> None:
        self._steps = self._invalid = self._valid_count = 0
        self._valid_sum = 0.0
        self._episode_stats.clear()

    def _on_step(self) -> bool:
        # _last_obs is still the observation the actions were chosen from.
        last_obs = self.model._last_obs
        if isinstance(last_obs, dict) and ACTION_MASK_KEY in last_obs:
            mask = last_obs[ACTION_MASK_KEY]
            self._valid_sum += float(np.count_nonzero(mask)) / mask.shape[0]
            self._valid_count += 1
        for info in self.locals["infos"]:
            self._steps += 1
            self._invalid += bool(info.get("invalid_action", False))
            stats = info.get("episode_stats")
            if stats:
                for key, value in stats.items():
                    self._episode_stats[key].append(float(value))
        return True

    def _on_rollout_end(self) -> None:
        if self._steps:
            self.logger.record("rollout/invalid_action_rate", self._invalid / self._steps)
        if self._valid_count:
            self.logger.record("rollout/valid_actions_mean", self._valid_sum / self._valid_count)
        for key, values in self._episode_stats.items():
            self.logger.record(f"env/{key}", float(np.mean(values)))
