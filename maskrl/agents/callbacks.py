"""The callbacks of a training run beyond SB3's own: metrics about masks and env episodes, short progress lines,
and the callbacks the model's own parts ask for (:func:`extra_callbacks`)."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from typing import TextIO

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.vec_env import VecEnv

from maskrl.agents.env_setup import VALID_ACTIONS_KEY
from maskrl.agents.run_folder import RunFolder
from maskrl.masks import ACTION_MASK_KEY
from maskrl.policies.attention_plots import training_callbacks as attention_callbacks


class MaskStatsCallback(BaseCallback):
    """Log, once per rollout, how the agent deals with the mask and what its episodes looked like.

    Each value covers the steps since the logs were last written: one rollout for PPO, the many short rollouts
    between two writes for DQN (whose exploration steps count too).

    - ``rollout/invalid_action_rate``: fraction of steps whose action was invalid (from
      ``info["invalid_action"]``, which maskrl envs and ``ActionMasksToObservation`` report);
    - ``rollout/valid_actions_mean``: mean number of valid actions per step, for every algorithm on an env with
      masks (from ``info["valid_actions"]``, which the envs of :func:`~maskrl.agents.env_setup.make_masked_env`
      report whether the algorithm sees the mask or not; else from the mask in the observation);
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
        #: the counts as they were at the last record: (steps, invalid, valid sum, valid count, stats lengths)
        self._recorded: tuple[int, int, float, int, dict[str, int]] | None = None

    def _forget_written(self) -> None:
        """Drop the counts of the values recorded last, if they have been written since.

        PPO writes the logs after every rollout; off-policy algorithms (DQN) collect a few steps per rollout and
        write every few episodes, in the middle of a rollout. Writing clears the recorded values, so a missing
        value means the steps it covered are on disk: counting starts again after them.
        """
        if self._recorded is None or "rollout/invalid_action_rate" in self.logger.name_to_value:
            return
        steps, invalid, valid_sum, valid_count, lengths = self._recorded
        self._steps -= steps
        self._invalid -= invalid
        self._valid_sum -= valid_sum
        self._valid_count -= valid_count
        for key, length in lengths.items():
            del self._episode_stats[key][:length]
        self._recorded = None

    def _on_step(self) -> bool:
        counts = [info[VALID_ACTIONS_KEY] for info in self.locals["infos"] if VALID_ACTIONS_KEY in info]
        if counts:
            self._valid_sum += float(np.mean(counts))
            self._valid_count += 1
        elif isinstance(last_obs := self.model._last_obs, dict) and ACTION_MASK_KEY in last_obs:
            # An env made elsewhere: _last_obs is still the observation the actions were chosen from.
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
        self._forget_written()
        if not self._steps:
            return
        self.logger.record("rollout/invalid_action_rate", self._invalid / self._steps)
        if self._valid_count:
            self.logger.record("rollout/valid_actions_mean", self._valid_sum / self._valid_count)
        for key, values in self._episode_stats.items():
            if values:
                self.logger.record(f"env/{key}", float(np.mean(values)))
        lengths = {key: len(values) for key, values in self._episode_stats.items()}
        self._recorded = (self._steps, self._invalid, self._valid_sum, self._valid_count, lengths)


class ProgressLineCallback(BaseCallback):
    """Print one short line every ``fraction`` of the run: steps, speed, mean return, invalid actions, evaluation.

    The line is printed at the first rollout end past each boundary (and at the last one), e.g.::

         50% 251k/500k steps | 2,611 steps/s | ETA 1m32s | return +4.87 | invalid 0.0% | eval +5.10 (best +5.32)

    The return is the mean over SB3's last 100 training episodes; the invalid-action rate counts the steps since
    the previous line (``info["invalid_action"]``, for envs that report it); the evaluation is the last periodic
    one, when there is one.

    :param total_timesteps: the run's total steps
    :param fraction: print every this fraction of ``total_timesteps``
    :param evaluation: the run's ``EvalCallback``, if any
    :param file: where to print (standard output by default)
    """

    def __init__(
        self,
        total_timesteps: int,
        fraction: float = 0.1,
        evaluation: EvalCallback | None = None,
        file: TextIO | None = None,
    ) -> None:
        super().__init__()
        self.total_timesteps = total_timesteps
        self.every = max(int(total_timesteps * fraction), 1)
        self.evaluation = evaluation
        self.file = file
        self._next = self.every
        self._start_step = 0
        self._start_time = 0.0
        self._steps = self._invalid = 0

    def _on_training_start(self) -> None:
        self._start_step = self.model.num_timesteps
        self._start_time = time.monotonic()
        self._next = (self.model.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "invalid_action" in info:  # envs without masks say nothing: no rate to show for them
                self._steps += 1
                self._invalid += bool(info["invalid_action"])
        return True

    def _on_rollout_end(self) -> None:
        step = self.model.num_timesteps
        if step >= self._next or step >= self.total_timesteps:
            print(self.line(), file=self.file or sys.stdout, flush=True)
            self._next = (step // self.every + 1) * self.every
            self._steps = self._invalid = 0

    def line(self) -> str:
        """The progress line for the current state of training."""
        step, total = self.model.num_timesteps, self.total_timesteps
        elapsed = max(time.monotonic() - self._start_time, 1e-9)
        fps = (step - self._start_step) / elapsed
        parts = [f"{100 * step / total:3.0f}% {_compact(step)}/{_compact(total)} steps", f"{fps:,.0f} steps/s"]
        if step < total and fps > 0:
            parts.append(f"ETA {format_duration((total - step) / fps)}")
        episodes = self.model.ep_info_buffer
        parts.append(f"return {np.mean([e['r'] for e in episodes]):+.2f}" if episodes else "return -")
        if self._steps:
            parts.append(f"invalid {100 * self._invalid / self._steps:.1f}%")
        evaluation = self.evaluation
        if evaluation is not None and evaluation.evaluations_timesteps:
            parts.append(f"eval {evaluation.last_mean_reward:+.2f} (best {evaluation.best_mean_reward:+.2f})")
        return " | ".join(parts)


def _compact(steps: int) -> str:
    """``1024`` -> ``"1,024"``, ``250880`` -> ``"251k"``, ``2500000`` -> ``"2.5M"``: short enough for one line."""
    if steps < 10_000:
        return f"{steps:,}"
    if steps < 1_000_000:
        return f"{steps / 1000:.0f}k"
    return f"{steps / 1_000_000:.3g}M"


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1m15s"``, ``3700`` -> ``"1h01m"``, ``9.4`` -> ``"9s"``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def extra_callbacks(model: BaseAlgorithm, env: VecEnv, total_timesteps: int, run: RunFolder) -> list[BaseCallback]:
    """The callbacks a run gets from the parts of its model (a features extractor that logs what it attends to, ...).

    Each part's module says what it needs from a run given the model and its env: today the entity-attention
    extractor's maps (:func:`maskrl.policies.attention_plots.training_callbacks`), the last one saved as the run's
    ``attention_map.png``.

    :param model: the model about to train
    :param env: its training env
    :param total_timesteps: the run's total env steps
    :param run: the run folder, for the files the callbacks write
    """
    return [*attention_callbacks(model, env, total_timesteps, figure_path=run.attention_map)]
