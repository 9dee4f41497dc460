"""Masked DQN and QR-DQN: SB3's ``DQN`` and sb3-contrib's ``QRDQN`` where every chosen or valued action is valid.

The mask travels in the observation (``obs["action_mask"]``), so it is in the replay buffer with the rest of each
transition. The policies (:mod:`maskrl.policies.q_policies`) take care of the greedy action; the algorithms are thin
subclasses that change only the two places where the algorithm itself chooses or values actions:

- exploration (:meth:`predict` with ``deterministic=False`` and the warm-up before ``learning_starts``): the
  epsilon-greedy random action is uniform over the *valid* actions of the current observation, not
  ``action_space.sample()``;
- the TD target (:meth:`train`): ``max_a' Q_target(s', a')`` over the actions valid in ``s'`` (for QR-DQN, the
  quantiles of the valid action with the largest mean quantile). ``double_q=True`` takes the online network's greedy
  valid action and the target network's value of it (off by default, as in SB3). A next state without any valid
  action (some envs give terminal states an empty mask) bootstraps from 0, never from ``-inf``.

Everything else, including the epsilon schedule (one draw per ``predict`` call for the whole batch of envs, as
SB3 does), the Huber and quantile Huber losses and the target-network updates, is SB3's. The replay buffer is by
default :class:`~maskrl.agents.replay_buffers.MaskedReplayBuffer`, SB3's ``DictReplayBuffer`` storing the features
and the mask in one array each (``replay_buffer_class`` picks another).

**Resuming.** ``train.py``'s checkpoints do not hold the replay buffer (see :class:`RefillAfterResumeMixin`); a model
loaded from a checkpoint starts with an empty buffer, and instead of training on the first few transitions it
collects ``learning_starts`` new ones with its current epsilon-greedy policy first. ``dqn_nomask`` and
``qrdqn_nomask`` use :class:`ResumableDQN` and :class:`ResumableQRDQN`: unchanged SB3 algorithms except for that.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from sb3_contrib import QRDQN
from sb3_contrib.common.utils import quantile_huber_loss
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, ReplayBufferSamples
from torch.nn import functional as F

from maskrl.agents.replay_buffers import MaskedReplayBuffer
from maskrl.masks import ACTION_MASK_KEY
from maskrl.policies.q_policies import (
    MaskedDQNMultiInputPolicy,
    MaskedDQNPolicy,
    MaskedQRDQNMultiInputPolicy,
    MaskedQRDQNPolicy,
    masked_greedy_quantiles,
    masked_greedy_values,
    observation_mask,
    require_discrete,
)


def random_valid_actions(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One action per row of ``mask``, uniform over the row's valid actions.

    Each entry gets a uniform draw and invalid entries get -1, so the argmax is a uniformly random valid action:
    one vectorised draw for the whole batch instead of a ``sample(mask=...)`` call per env.

    :param mask: ``(batch, n)`` 0/1 or bool
    :param rng: the generator to draw from (the action space's, which SB3 seeds)
    :return: int64 ``(batch,)``
    :raises ValueError: naming the first row without any valid action
    """
    valid = np.asarray(mask) != 0
    empty = ~valid.any(axis=-1)
    if empty.any():
        raise ValueError(f"mask has no valid action in batch row {int(np.flatnonzero(empty)[0])}")
    draws = np.where(valid, rng.random(valid.shape), -1.0)
    return draws.argmax(axis=-1)


def _check_env_action_space(env: GymEnv | str | None, what: str) -> None:
    # Before SB3's own check (an AssertionError listing the supported space classes): one line with the reason.
    action_space = getattr(env, "action_space", None)
    if action_space is not None:
        require_discrete(action_space, what)


class RefillAfterResumeMixin:
    """Skip gradient steps while the replay buffer holds fewer than ``learning_starts`` transitions.

    A fresh run never notices (SB3 trains only after ``learning_starts`` steps, when the buffer holds as many
    transitions). A model loaded from a checkpoint has an empty buffer: checkpoints leave it out, because it is
    large (``buffer_size`` observations twice, e.g. 23 MB for Kart's 50k transitions, gigabytes for images) and would
    be rewritten at every checkpoint. Without this, the resumed run would take its first gradient steps on
    minibatches drawn from a handful of transitions; with it, the run first collects ``learning_starts`` transitions
    with its current (trained, epsilon-greedy) policy, as it would have kept doing uninterrupted.
    """

    replay_buffer: Any
    learning_starts: int
    n_envs: int

    def _refilling(self) -> bool:
        buffer = self.replay_buffer
        if buffer is None or buffer.full:
            return False
        return buffer.size() * self.n_envs < self.learning_starts

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        if self._refilling():
            return
        super().train(gradient_steps, batch_size)  # type: ignore[misc]


class _MaskedExplorationMixin:
    """Epsilon-greedy exploration and warm-up over the valid actions of the observation, what both masked
    algorithms check when they are built (a ``Discrete`` action space and a policy of :attr:`masked_policy_class`:
    the TD target reads the next observation's mask through it), and their replay buffer
    (:class:`~maskrl.agents.replay_buffers.MaskedReplayBuffer` by default, filled without SB3's per-step deep copy
    of the observation)."""

    masked_policy_class: ClassVar[type[BasePolicy]]
    exploration_rate: float
    policy: BasePolicy
    action_space: Any
    num_timesteps: int
    n_steps: int
    replay_buffer_class: type[ReplayBuffer] | None
    _last_obs: Any
    _last_original_obs: Any
    _vec_normalize_env: Any

    def __init__(self, policy: str | type[BasePolicy], env: GymEnv | str, *args: Any, double_q: bool = False, **kwargs):
        _check_env_action_space(env, type(self).__name__)
        self.double_q = bool(double_q)
        super().__init__(policy, env, *args, **kwargs)  # type: ignore[call-arg]

    def _setup_model(self) -> None:
        # MaskedReplayBuffer unless the user gave a buffer class (a loaded model keeps the class it was saved with).
        # n-step returns are left to SB3, which refuses them for Dict observations.
        if self.replay_buffer_class is None and self.n_steps == 1:
            self.replay_buffer_class = MaskedReplayBuffer
        super()._setup_model()  # type: ignore[misc]
        _check_masked_policy(self.policy, self.masked_policy_class, type(self).__name__)

    def predict(
        self,
        observation: dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The greedy valid action, or with probability ``exploration_rate`` (unless ``deterministic``) a uniformly
        random valid one, as SB3's ``DQN.predict`` with ``action_space.sample()`` replaced.

        :param observation: a ``Dict`` observation holding ``"action_mask"``, single or batched
        """
        if not deterministic and np.random.rand() < self.exploration_rate:
            if not isinstance(observation, dict) or ACTION_MASK_KEY not in observation:
                raise ValueError(f"masked DQN takes Dict observations with an '{ACTION_MASK_KEY}' key")
            mask = np.asarray(observation[ACTION_MASK_KEY])
            if self.policy.is_vectorized_observation(observation):
                return random_valid_actions(mask, self.action_space.np_random), state
            return np.array(random_valid_actions(mask[None], self.action_space.np_random)[0]), state
        return self.policy.predict(observation, state, episode_start, deterministic)

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        # SB3's, without its deep copy of the whole Dict observation at every step (tens of microseconds, where a
        # Box costs a third): MaskedReplayBuffer's own add copies what it stores and changes nothing it is given, so
        # only the next observations into which terminal observations are written need a copy of their own, and only
        # at the steps where an episode ended. Other buffers (DictReplayBuffer's add reshapes some keys in place)
        # and VecNormalize (stores the unnormalised observations) take SB3's path.
        if (
            self._vec_normalize_env is not None
            or not isinstance(replay_buffer, MaskedReplayBuffer)
            or replay_buffer.feature_key is None
        ):
            super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)  # type: ignore[misc]
            return
        next_obs = new_obs
        for i, done in enumerate(dones):
            terminal = infos[i].get("terminal_observation") if done else None
            if terminal is not None:
                if next_obs is new_obs:
                    next_obs = {key: np.array(value) for key, value in new_obs.items()}
                for key in next_obs:
                    next_obs[key][i] = terminal[key]
        self._last_original_obs = self._last_obs
        replay_buffer.add(self._last_obs, next_obs, buffer_action, reward, dones, infos)
        self._last_obs = new_obs

    def _sample_action(
        self, learning_starts: int, action_noise: Any = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.num_timesteps < learning_starts:
            # SB3 warms up with action_space.sample(), which ignores the mask.
            action = random_valid_actions(self._last_obs[ACTION_MASK_KEY], self.action_space.np_random)
        else:
            action, _ = self.predict(self._last_obs, deterministic=False)
        # Discrete actions: what is stored in the replay buffer is what is executed.
        return action, action


def _check_masked_policy(policy: BasePolicy, expected: type, algo: str) -> None:
    if not isinstance(policy, expected):
        raise ValueError(
            f"{algo} needs a masked policy ({expected.__name__} or a subclass), got {type(policy).__name__}: "
            "the TD target reads the next observation's mask"
        )


class MaskedDQN(RefillAfterResumeMixin, _MaskedExplorationMixin, DQN):
    """SB3's ``DQN`` with masked exploration and masked (optionally double-DQN) TD targets.

    Takes every argument of ``DQN``. The policy is :class:`~maskrl.policies.q_policies.MaskedDQNPolicy` (or a
    subclass); ``"MultiInputPolicy"`` names its ``CombinedExtractor`` variant. The env's
    observation is a ``Dict`` with ``"action_mask"``; the action space is ``Discrete``.

    :param double_q: double-DQN targets: the online network picks the next state's greedy valid action, the target
        network values it (van Hasselt et al., 2016). ``False`` (SB3's DQN) takes the target network's max.
    :raises UnsupportedActionSpaceError: for an env whose action space is not ``Discrete`` (a ``ValueError``)
    """

    # SB3 refuses the name "MlpPolicy" for Dict observations: pass MaskedDQNPolicy itself for one feature key.
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MultiInputPolicy": MaskedDQNMultiInputPolicy}
    masked_policy_class = MaskedDQNPolicy
    policy: MaskedDQNPolicy

    def next_values(self, next_observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """The bootstrap values ``(batch, 1)`` of the TD target: the best valid next action's target Q-value."""
        mask = observation_mask(next_observations)
        target_q = self.q_net_target(next_observations)
        online_q = self.q_net(next_observations) if self.double_q else None
        return masked_greedy_values(target_q, mask, online_q).reshape(-1, 1)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        # SB3's DQN.train, with the bootstrap value taken over the valid next actions (next_values).
        if self._refilling():
            return
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses = []
        for _ in range(gradient_steps):
            replay_data: ReplayBufferSamples = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            with torch.no_grad():
                next_q_values = self.next_values(replay_data.next_observations)  # type: ignore[arg-type]
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values
            current_q_values = torch.gather(
                self.q_net(replay_data.observations), dim=1, index=replay_data.actions.long()
            )
            loss = F.smooth_l1_loss(current_q_values, target_q_values)
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            # The online network's parameters: the target network's have no gradients (SB3 passes both).
            torch.nn.utils.clip_grad_norm_(self.q_net.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))


class MaskedQRDQN(RefillAfterResumeMixin, _MaskedExplorationMixin, QRDQN):
    """sb3-contrib's ``QRDQN`` with masked exploration and masked (optionally double) quantile TD targets.

    Takes every argument of ``QRDQN``. The policy is :class:`~maskrl.policies.q_policies.MaskedQRDQNPolicy` (or a
    subclass); ``"MultiInputPolicy"`` names its ``CombinedExtractor`` variant. Greedy actions,
    in acting and in the target, maximise the mean of the quantiles over the valid actions.

    :param double_q: the online network picks the next state's greedy valid action, the target network gives its
        quantiles; ``False`` (sb3-contrib's QR-DQN) lets the target network do both.
    :raises UnsupportedActionSpaceError: for an env whose action space is not ``Discrete`` (a ``ValueError``)
    """

    # SB3 refuses the name "MlpPolicy" for Dict observations: pass MaskedQRDQNPolicy itself for one feature key.
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MultiInputPolicy": MaskedQRDQNMultiInputPolicy}
    masked_policy_class = MaskedQRDQNPolicy
    policy: MaskedQRDQNPolicy

    def next_quantiles(self, next_observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """The bootstrap quantiles ``(batch, n_quantiles)``: those of the valid next action with the best mean."""
        mask = observation_mask(next_observations)
        target = self.quantile_net_target(next_observations)
        online = self.quantile_net(next_observations) if self.double_q else None
        return masked_greedy_quantiles(target, mask, online)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        # sb3-contrib's QRDQN.train, with the bootstrap quantiles of the best valid next action (next_quantiles).
        if self._refilling():
            return
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses = []
        for _ in range(gradient_steps):
            replay_data: ReplayBufferSamples = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            with torch.no_grad():
                next_quantiles = self.next_quantiles(replay_data.next_observations)  # type: ignore[arg-type]
                target_quantiles = replay_data.rewards + (1 - replay_data.dones) * discounts * next_quantiles
            current_quantiles = self.quantile_net(replay_data.observations)
            actions = replay_data.actions[..., None].long().expand(batch_size, self.n_quantiles, 1)
            current_quantiles = torch.gather(current_quantiles, dim=2, index=actions).squeeze(dim=2)
            loss = quantile_huber_loss(current_quantiles, target_quantiles, sum_over_quantiles=True)
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            if self.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.quantile_net.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))


class ResumableDQN(RefillAfterResumeMixin, DQN):
    """SB3's ``DQN`` unchanged (no mask), except that a resumed run refills its replay buffer before training.

    The ``dqn_nomask`` baseline. See :class:`RefillAfterResumeMixin`.
    """

    def __init__(self, policy: str | type[BasePolicy], env: GymEnv | str, *args: Any, **kwargs: Any):
        _check_env_action_space(env, "DQN")
        super().__init__(policy, env, *args, **kwargs)


class ResumableQRDQN(RefillAfterResumeMixin, QRDQN):
    """sb3-contrib's ``QRDQN`` unchanged (no mask), except that a resumed run refills its replay buffer first.

    The ``qrdqn_nomask`` baseline. See :class:`RefillAfterResumeMixin`.
    """

    def __init__(self, policy: str | type[BasePolicy], env: GymEnv | str, *args: Any, **kwargs: Any):
        _check_env_action_space(env, "QR-DQN")
        super().__init__(policy, env, *args, **kwargs)


__all__ = [
    "MaskedDQN",
    "MaskedQRDQN",
    "RefillAfterResumeMixin",
    "ResumableDQN",
    "ResumableQRDQN",
    "random_valid_actions",
]
