"""Actor-critic policies that read the action mask from the observation.

The env puts the mask in a ``Dict`` observation under ``"action_mask"``; the policy takes it out
before the features extractor and applies it to the action distribution. Because the mask is part
of the observation, unchanged SB3 algorithms (``PPO``, ``A2C``), their rollout buffers, ``predict``,
``evaluate_policy`` and ``EvalCallback`` all use it without knowing it exists.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

from maskrl.masks import ACTION_MASK_KEY, action_mask_size
from maskrl.policies.sb3_distributions import MaskedDistribution, make_masked_distribution, own_actions_log_prob


def split_observation_space(
    observation_space: spaces.Space, action_space: spaces.Space, keep_dict: bool = False
) -> spaces.Space:
    """Check a masked observation space and return the part the features extractor sees.

    :param observation_space: ``Dict`` holding ``"action_mask"`` and the feature keys
    :param action_space: ``Discrete`` or ``MultiDiscrete``
    :param keep_dict: always return a ``Dict``, even when ``"observation"`` is the only other key
    :return: the lone ``"observation"`` sub-space if it is the only other key (and not ``keep_dict``),
        else a ``Dict`` of the other keys
    :raises ValueError: if the space holds no action mask or one of the wrong size
    """
    if not isinstance(observation_space, spaces.Dict) or ACTION_MASK_KEY not in observation_space.spaces:
        raise ValueError(
            f"masked policies need a Dict observation space with an '{ACTION_MASK_KEY}' key, got {observation_space}; "
            "wrap envs that have action_masks() in maskrl.envs.ActionMasksToObservation"
        )
    mask_space = observation_space[ACTION_MASK_KEY]
    expected = action_mask_size(action_space)
    if mask_space.shape != (expected,):
        raise ValueError(
            f"'{ACTION_MASK_KEY}' has shape {mask_space.shape}, "
            f"but {action_space} needs a flat mask of shape ({expected},)"
        )
    features = {key: space for key, space in observation_space.spaces.items() if key != ACTION_MASK_KEY}
    if list(features) == ["observation"] and not keep_dict:
        return features["observation"]
    return spaces.Dict(features)


def features_without_mask(
    obs: PyTorchObs, extractor: BaseFeaturesExtractor, features_space: spaces.Space, normalize_images: bool
) -> torch.Tensor:
    """Run ``extractor`` on the observation without its action mask (as :func:`split_observation_space` split it).

    :param obs: a batched ``Dict`` observation holding ``"action_mask"``
    :param extractor: a features extractor built on ``features_space``
    :param features_space: what :func:`split_observation_space` returned
    :param normalize_images: SB3's image normalisation flag
    """
    assert isinstance(obs, dict), f"masked policies take Dict observations, got {type(obs)}"
    if isinstance(features_space, spaces.Dict):
        inputs: PyTorchObs = {key: value for key, value in obs.items() if key != ACTION_MASK_KEY}
    else:
        inputs = obs["observation"]
    return extractor(preprocess_obs(inputs, features_space, normalize_images=normalize_images))


class CombinedExtractorByDefault:
    """SB3's ``CombinedExtractor`` unless another features extractor is given: the ``MultiInput`` policies.

    Put it first in the bases of a masked policy; like SB3's ``MultiInputPolicy``, the features extractor then sees
    every feature key of the observation as a ``Dict``, even a lone ``"observation"``.
    """

    keep_dict_features = True

    def __init__(
        self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor, **kwargs: Any
    ) -> None:
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)  # type: ignore[call-arg]


class MaskSplitMixin:
    """Every masked policy's first step: check the spaces and build the features extractor without the mask.

    Put it before the SB3 policy class in the bases; its ``__init__`` sets :attr:`features_space` (the observation
    without the mask, what :func:`split_observation_space` returns) before the SB3 policy's ``__init__`` builds the
    features extractor on it.
    """

    #: give the features extractor a Dict even when it holds only "observation" (for Dict extractors)
    keep_dict_features = False
    #: the policy to suggest for several feature keys, in the error message
    multi_input_policy_name = "MaskedMultiInputPolicy"
    features_space: spaces.Space
    features_extractor_class: type[BaseFeaturesExtractor]
    features_extractor_kwargs: dict[str, Any]

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self._split_features(observation_space, action_space, kwargs)
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)  # type: ignore[call-arg]

    def _split_features(self, observation_space: spaces.Space, action_space: spaces.Space, kwargs: dict) -> None:
        """Check the spaces and set :attr:`features_space` (the observation without the mask).

        :param kwargs: the keyword arguments the policy was given (for ``features_extractor_class``)
        :raises ValueError: no or a badly sized mask, or several feature keys for ``FlattenExtractor``
        """
        self.features_space = split_observation_space(observation_space, action_space, self.keep_dict_features)
        extractor = kwargs.get("features_extractor_class", FlattenExtractor)
        if isinstance(self.features_space, spaces.Dict) and extractor is FlattenExtractor:
            raise ValueError(
                f"the observation has several feature keys {list(self.features_space.spaces)}: "
                f"use {self.multi_input_policy_name} or a features extractor for Dict spaces"
            )

    def make_features_extractor(self) -> BaseFeaturesExtractor:
        return self.features_extractor_class(self.features_space, **self.features_extractor_kwargs)


class MaskedFeaturesMixin(MaskSplitMixin):
    """The features side of the masked actor-critic policies: the extractors are built and run without the mask.

    Shared by :class:`MaskedActorCriticPolicy` and
    :class:`~maskrl.policies.recurrent.MaskedRecurrentActorCriticPolicy`; put it before the SB3 policy class in the
    bases.
    """

    normalize_images: bool
    share_features_extractor: bool
    features_extractor: BaseFeaturesExtractor
    pi_features_extractor: BaseFeaturesExtractor
    vf_features_extractor: BaseFeaturesExtractor
    action_space: spaces.Space

    def _build(self, lr_schedule: Schedule) -> None:
        # Swap in the masked distribution before the parent builds the action head for it.
        self.action_dist = make_masked_distribution(self.action_space)
        super()._build(lr_schedule)  # type: ignore[misc]

    def _features(self, obs: PyTorchObs, extractor: BaseFeaturesExtractor) -> torch.Tensor:
        return features_without_mask(obs, extractor, self.features_space, self.normalize_images)

    def extract_features(
        self, obs: PyTorchObs, features_extractor: BaseFeaturesExtractor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.share_features_extractor:
            return self._features(obs, self.features_extractor if features_extractor is None else features_extractor)
        return self._features(obs, self.pi_features_extractor), self._features(obs, self.vf_features_extractor)


class MaskedActorCriticPolicy(MaskedFeaturesMixin, ActorCriticPolicy):
    """``ActorCriticPolicy`` whose action distribution is masked by ``obs["action_mask"]``.

    Takes every argument of SB3's ``ActorCriticPolicy``. The features extractor is built on the
    observation without the mask: the lone ``"observation"`` space when that is the only other key
    (so ``FlattenExtractor``/``NatureCNN`` apply), otherwise a ``Dict`` of the remaining keys (use
    :class:`MaskedMultiInputPolicy` or another ``Dict`` extractor for those).

    :param observation_space: ``Dict`` with ``"action_mask"`` (int8 0/1, flat) and feature keys
    :param action_space: ``Discrete`` or ``MultiDiscrete``
    :param lr_schedule: learning-rate schedule
    """

    action_dist: MaskedDistribution

    def _latents(self, obs: PyTorchObs) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.extract_features(obs)
        if self.share_features_extractor:
            return self.mlp_extractor(features)
        pi_features, vf_features = features
        return self.mlp_extractor.forward_actor(pi_features), self.mlp_extractor.forward_critic(vf_features)

    def _masked_distribution(self, latent_pi: torch.Tensor, obs: PyTorchObs) -> MaskedDistribution:
        assert isinstance(obs, dict)
        return self.action_dist.proba_distribution(self.action_net(latent_pi), obs[ACTION_MASK_KEY])

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latent_pi, latent_vf = self._latents(obs)
        values = self.value_net(latent_vf)
        distribution = self._masked_distribution(latent_pi, obs)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = own_actions_log_prob(distribution, actions)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob

    def evaluate_actions(
        self, obs: PyTorchObs, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        latent_pi, latent_vf = self._latents(obs)
        distribution = self._masked_distribution(latent_pi, obs)
        return self.value_net(latent_vf), distribution.log_prob(actions), distribution.entropy()

    def get_distribution(self, obs: PyTorchObs) -> MaskedDistribution:
        latent_pi = self.mlp_extractor.forward_actor(self._features(obs, self.pi_features_extractor))
        return self._masked_distribution(latent_pi, obs)

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        latent_vf = self.mlp_extractor.forward_critic(self._features(obs, self.vf_features_extractor))
        return self.value_net(latent_vf)


class MaskedMultiInputPolicy(CombinedExtractorByDefault, MaskedActorCriticPolicy):
    """:class:`MaskedActorCriticPolicy` with SB3's ``CombinedExtractor`` by default, for several feature keys.

    Like SB3's ``MultiInputPolicy``; takes the same arguments as :class:`MaskedActorCriticPolicy`.
    """
