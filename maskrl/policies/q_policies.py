"""Q-value policies that read the action mask from the observation, for SB3's ``DQN`` and sb3-contrib's ``QRDQN``.

The env puts the mask in a ``Dict`` observation under ``"action_mask"``, as for the actor-critic policies; the
Q-network takes it out before the features extractor, computes a value for every action as usual, and takes the
greedy action over the valid actions only. ``predict``, ``evaluate_policy`` and ``EvalCallback`` therefore act
greedily among valid actions without knowing the mask exists. The mask stays in the replay buffer with the rest of
the observation, so the TD target of :class:`maskrl.agents.dqn.MaskedDQN` can read the next state's mask too.

The pure functions :func:`masked_greedy_actions`, :func:`masked_greedy_values` and
:func:`masked_greedy_quantiles` hold the masking maths and need neither SB3 nor gymnasium.

Only ``Discrete`` action spaces: SB3's DQN and sb3-contrib's QR-DQN support no other (a Q-value per joint
``MultiDiscrete`` action would grow exponentially with the number of sub-actions).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.qrdqn.policies import QRDQNPolicy, QuantileNetwork
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork

from maskrl.masks import ACTION_MASK_KEY
from maskrl.policies.actor_critic import CombinedExtractorByDefault, MaskSplitMixin, features_without_mask
from maskrl.policies.distributions import mask_checks_enabled


class UnsupportedActionSpaceError(ValueError):
    """An algorithm was given an action space it does not support (SB3's DQN: ``Discrete`` only)."""


def require_discrete(action_space: spaces.Space, what: str) -> None:
    """Raise :class:`UnsupportedActionSpaceError` in one line unless ``action_space`` is ``Discrete``.

    :param action_space: the env's action space
    :param what: the algorithm or policy, for the message
    """
    if not isinstance(action_space, spaces.Discrete):
        raise UnsupportedActionSpaceError(
            f"{what} supports only Discrete action spaces (SB3's DQN and sb3-contrib's QR-DQN have no "
            f"MultiDiscrete version), got {action_space}; use a policy-gradient algo (ppo, a2c) for it"
        )


def masked_greedy_actions(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Index of the largest value among the valid entries of each row (the last dimension).

    Whatever ``values`` holds, the result is a valid action when the row has one: valid values are clamped to the
    dtype's most negative finite value and invalid ones become ``-inf``, so a valid ``-inf`` (an overflow) still
    beats every invalid entry, and a valid NaN, which ``argmax`` prefers to anything, is at a valid index too. A row
    with no valid action gives 0; callers that act check for such rows first, and targets replace their values.

    :param values: ``(*batch, n)`` Q-values (or mean quantiles)
    :param mask: bool ``(*batch, n)``, ``True`` for valid actions
    :return: int64 ``(*batch,)``
    """
    return _masked(values, mask).argmax(dim=-1)


def _masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` at valid entries (at least ``finfo.min``), ``-inf`` at invalid ones: only empty rows max at -inf."""
    return torch.where(mask, values.clamp(min=torch.finfo(values.dtype).min), float("-inf"))


def masked_greedy_values(
    target_values: torch.Tensor, mask: torch.Tensor, online_values: torch.Tensor | None = None
) -> torch.Tensor:
    """The bootstrap value ``max_a Q(s', a)`` over the valid actions of ``s'``, for the TD target.

    With ``online_values`` (double DQN), the action is the online network's greedy valid action and the value the
    target network's value of it. A row with no valid action (an empty mask, as some envs give terminal states)
    gets the value 0 rather than ``-inf``: the target stays finite, and for a terminal state it is multiplied by
    ``1 - done = 0`` anyway (``0 * -inf`` would be NaN). A row whose valid values are all ``-inf`` (an overflow) is
    treated the same way.

    :param target_values: ``(batch, n)`` target network's Q-values at ``s'``
    :param mask: bool ``(batch, n)``, the actions valid in ``s'``
    :param online_values: ``(batch, n)`` online network's Q-values at ``s'``, for double-DQN targets
    :return: ``(batch,)``
    """
    # Unlike acting, no clamp: the target only needs to stay finite, and each op counts at every gradient step.
    masked_target = torch.where(mask, target_values, float("-inf"))
    if online_values is None:
        best = masked_target.amax(dim=-1)
    else:
        best = masked_target.gather(-1, masked_greedy_actions(online_values, mask).unsqueeze(-1)).squeeze(-1)
    # -inf only where no valid action has a finite value; NaN and +inf are left for the loss to show.
    return torch.nan_to_num(best, nan=float("nan"), posinf=float("inf"), neginf=0.0)


def masked_greedy_quantiles(
    target_quantiles: torch.Tensor, mask: torch.Tensor, online_quantiles: torch.Tensor | None = None
) -> torch.Tensor:
    """QR-DQN's bootstrap quantiles: those of the valid action of ``s'`` with the largest mean quantile.

    As :func:`masked_greedy_values`, with the greedy action taken on the mean over the quantiles (of the online
    network's quantiles with ``online_quantiles``, double QR-DQN); a row with no valid action gets quantiles of 0.

    :param target_quantiles: ``(batch, n_quantiles, n)`` target network's quantiles at ``s'``
    :param mask: bool ``(batch, n)``, the actions valid in ``s'``
    :param online_quantiles: ``(batch, n_quantiles, n)`` online network's quantiles, for double QR-DQN
    :return: ``(batch, n_quantiles)``
    """
    chooser = target_quantiles if online_quantiles is None else online_quantiles
    actions = masked_greedy_actions(chooser.mean(dim=1), mask)
    index = actions.view(-1, 1, 1).expand(-1, target_quantiles.shape[1], 1)
    quantiles = target_quantiles.gather(2, index).squeeze(2)
    has_valid = mask.any(dim=-1, keepdim=True)
    return torch.where(has_valid, quantiles, torch.zeros((), dtype=quantiles.dtype, device=quantiles.device))


def observation_mask(obs: PyTorchObs) -> torch.Tensor:
    """The bool action mask of a (batched) observation, with a clear error if there is none.

    :raises ValueError: if ``obs`` is not a ``Dict`` observation holding ``"action_mask"``
    """
    if not isinstance(obs, dict) or ACTION_MASK_KEY not in obs:
        raise ValueError(f"masked Q-networks take Dict observations with an '{ACTION_MASK_KEY}' key")
    return obs[ACTION_MASK_KEY].bool()


class _MaskedNetworkMixin:
    """Features of the observation without its mask (for :class:`MaskedQNetwork` and :class:`MaskedQuantileNetwork`)."""

    features_space: spaces.Space
    normalize_images: bool

    def extract_features(self, obs: PyTorchObs, features_extractor: BaseFeaturesExtractor) -> torch.Tensor:
        return features_without_mask(obs, features_extractor, self.features_space, self.normalize_images)

    def _greedy(self, values: torch.Tensor, obs: PyTorchObs) -> torch.Tensor:
        # Rows without a valid action were refused by the policy's predict (a row given here directly gets 0).
        return masked_greedy_actions(values, observation_mask(obs)).reshape(-1)


class MaskedQNetwork(_MaskedNetworkMixin, QNetwork):
    """SB3's ``QNetwork`` whose features skip the mask and whose greedy action is the best *valid* one.

    Takes ``QNetwork``'s arguments plus ``features_space``, the observation space without the mask (what the
    features extractor was built for). ``forward`` returns the Q-values of every action, as SB3's does; only the
    action choice (``_predict``) applies the mask.
    """

    def __init__(self, *args: Any, features_space: spaces.Space, **kwargs: Any) -> None:
        self.features_space = features_space
        super().__init__(*args, **kwargs)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> torch.Tensor:
        return self._greedy(self(observation), observation)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "features_space": self.features_space}


class MaskedQuantileNetwork(_MaskedNetworkMixin, QuantileNetwork):
    """sb3-contrib's ``QuantileNetwork`` whose greedy action is the valid one with the largest mean quantile.

    Takes ``QuantileNetwork``'s arguments plus ``features_space`` (see :class:`MaskedQNetwork`).
    """

    def __init__(self, *args: Any, features_space: spaces.Space, **kwargs: Any) -> None:
        self.features_space = features_space
        super().__init__(*args, **kwargs)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> torch.Tensor:
        return self._greedy(self(observation).mean(dim=1), observation)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "features_space": self.features_space}


class _MaskedQPolicyMixin(MaskSplitMixin):
    """What the masked DQN and QR-DQN policies share: the checks, extractors built without the mask, ``predict``."""

    def _split_features(self, observation_space: spaces.Space, action_space: spaces.Space, kwargs: dict) -> None:
        require_discrete(action_space, type(self).__name__)
        super()._split_features(observation_space, action_space, kwargs)

    def predict(
        self,
        observation: dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``: the greedy valid action of each observation.

        :raises ValueError: naming the first observation without any valid action (with mask checks on, see
            :func:`maskrl.policies.distributions.set_mask_checks`): acting there is an env bug, not a choice
        """
        if isinstance(observation, dict) and ACTION_MASK_KEY in observation:
            # On the numpy mask: a few microseconds, where the same checks and cast as torch ops cost tens.
            valid = np.asarray(observation[ACTION_MASK_KEY]) != 0
            if mask_checks_enabled():
                has_valid = valid.any(axis=-1)
                if not has_valid.all():
                    row = "" if has_valid.ndim == 0 else f" in batch row {int(np.flatnonzero(~has_valid)[0])}"
                    raise ValueError(f"mask has no valid action{row}")
            actions = self._predict_batch(observation, valid, deterministic)
            if actions is not None:
                return actions, state
            observation = {**observation, ACTION_MASK_KEY: valid}
        return super().predict(observation, state, episode_start, deterministic)  # type: ignore[misc]

    def _predict_batch(self, observation: dict[str, Any], valid: np.ndarray, deterministic: bool) -> np.ndarray | None:
        """``predict``'s fast path, for what training gives it at every step: a batch of numpy observations of
        ``"observation"`` (a flat ``Box``, not an image) and the mask. ``None`` for anything else, which takes SB3's
        generic path.

        SB3's ``obs_to_tensor`` deep-copies the dict and checks, reshapes and copies each key; here the two arrays,
        once their shapes are known to be a batch, become tensors without a copy (the network only reads them).

        :param valid: the bool mask (``observation["action_mask"] != 0``)
        :return: int64 ``(batch,)``, as SB3's ``predict`` returns for a batch
        """
        space = self.features_space  # type: ignore[attr-defined]
        features = observation.get("observation")
        if (
            len(observation) != 2
            or not isinstance(features, np.ndarray)
            or features.dtype != np.float32  # SB3's path casts other dtypes to float
            or not isinstance(space, spaces.Box)
            or is_image_space(space)
            or features.ndim != len(space.shape) + 1
            or features.shape[1:] != space.shape
            or valid.shape != (len(features), *self.observation_space[ACTION_MASK_KEY].shape)  # type: ignore[attr-defined]
        ):
            return None
        self.set_training_mode(False)  # type: ignore[attr-defined]
        device = self.device  # type: ignore[attr-defined]
        obs = {
            "observation": torch.as_tensor(features, device=device),
            ACTION_MASK_KEY: torch.as_tensor(valid, device=device),
        }
        with torch.no_grad():
            actions = self._predict(obs, deterministic=deterministic)  # type: ignore[attr-defined]
        return actions.cpu().numpy().reshape(-1)


class MaskedDQNPolicy(_MaskedQPolicyMixin, DQNPolicy):
    """SB3's ``DQNPolicy`` (online and target Q-networks) reading the mask from ``obs["action_mask"]``.

    Takes every argument of ``DQNPolicy``. Greedy actions (``predict``, evaluation, ``EvalCallback``) are the best
    valid ones; the features extractor is built on the observation without the mask, as in
    :class:`~maskrl.policies.MaskedActorCriticPolicy`. Use it with :class:`maskrl.agents.dqn.MaskedDQN`, which
    also masks exploration and the TD target.

    :param observation_space: ``Dict`` with ``"action_mask"`` (int8 0/1, flat) and feature keys
    :param action_space: ``Discrete``
    :param lr_schedule: learning-rate schedule
    :raises UnsupportedActionSpaceError: for any other action space (a ``ValueError``)
    """

    q_net: MaskedQNetwork
    q_net_target: MaskedQNetwork

    multi_input_policy_name = "MaskedDQNMultiInputPolicy"

    def make_q_net(self) -> MaskedQNetwork:
        # A new features extractor per network, as SB3 does: the target network must not share the online one's.
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return MaskedQNetwork(**net_args, features_space=self.features_space).to(self.device)


class MaskedDQNMultiInputPolicy(CombinedExtractorByDefault, MaskedDQNPolicy):
    """:class:`MaskedDQNPolicy` with SB3's ``CombinedExtractor`` by default, for several feature keys."""


class MaskedQRDQNPolicy(_MaskedQPolicyMixin, QRDQNPolicy):
    """sb3-contrib's ``QRDQNPolicy`` reading the mask from ``obs["action_mask"]``.

    Takes every argument of ``QRDQNPolicy``. The greedy action is the valid action with the largest mean quantile.
    Use it with :class:`maskrl.agents.dqn.MaskedQRDQN`.

    :param observation_space: ``Dict`` with ``"action_mask"`` (int8 0/1, flat) and feature keys
    :param action_space: ``Discrete``
    :param lr_schedule: learning-rate schedule
    :raises UnsupportedActionSpaceError: for any other action space (a ``ValueError``)
    """

    quantile_net: MaskedQuantileNetwork
    quantile_net_target: MaskedQuantileNetwork

    multi_input_policy_name = "MaskedQRDQNMultiInputPolicy"

    def make_quantile_net(self) -> MaskedQuantileNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return MaskedQuantileNetwork(**net_args, features_space=self.features_space).to(self.device)


class MaskedQRDQNMultiInputPolicy(CombinedExtractorByDefault, MaskedQRDQNPolicy):
    """:class:`MaskedQRDQNPolicy` with SB3's ``CombinedExtractor`` by default, for several feature keys."""
