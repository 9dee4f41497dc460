"""Masked recurrent (LSTM) actor-critic policies for unchanged sb3-contrib ``RecurrentPPO``.

The mask travels in the observation, so nothing of ``RecurrentPPO`` changes: its rollout buffer stores the mask with
the other observation keys, cuts the rollout into sequences and pads them, and hands the padded observations, mask
included, back to :meth:`MaskedRecurrentActorCriticPolicy.evaluate_actions`. Every method of the policy takes the
mask from the very ``obs`` batch whose features it computes, so mask and logits are aligned by construction: in the
rollout (``forward``), the update (``evaluate_actions`` over padded sequences), ``predict`` with LSTM states and
episode starts, and evaluation (SB3's ``evaluate_policy`` passes the states along).

Padding is the one thing the update adds: sb3-contrib pads sequences with zeros, so a padded row's mask is all
zeros, which no real mask can be (every mask was checked when it was acted on in the rollout). Such rows get an
all-valid mask in ``evaluate_actions``; ``RecurrentPPO`` leaves them out of every loss term anyway.
"""

from __future__ import annotations

from typing import Any

import torch
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.type_aliases import PyTorchObs

from maskrl.masks import ACTION_MASK_KEY
from maskrl.policies.actor_critic import CombinedExtractorByDefault, MaskedFeaturesMixin
from maskrl.policies.sb3_distributions import MaskedDistribution, own_actions_log_prob

__all__ = ["MaskedRecurrentActorCriticPolicy", "MaskedRecurrentMultiInputPolicy", "open_padding_rows"]

LSTMState = tuple[torch.Tensor, torch.Tensor]


def open_padding_rows(mask: torch.Tensor) -> torch.Tensor:
    """Give the rows of ``mask`` that have no valid entry at all an all-valid mask.

    For the padded sequences of sb3-contrib's recurrent rollout buffers: padding rows are zeros, observation and
    mask alike. Scored under an all-valid mask they get finite log-probabilities and entropies (which the algorithm
    then leaves out of its losses) instead of the distribution's "no valid action" error.

    :param mask: flat masks ``(batch, mask_size)``, 0/1 or bool
    :return: ``mask`` with every all-zero row set to ones (same dtype)
    """
    padding = (mask == 0).all(dim=-1, keepdim=True)
    return torch.where(padding, torch.ones((), dtype=mask.dtype, device=mask.device), mask)


class MaskedRecurrentActorCriticPolicy(MaskedFeaturesMixin, RecurrentActorCriticPolicy):
    """sb3-contrib's ``RecurrentActorCriticPolicy`` whose action distribution is masked by ``obs["action_mask"]``.

    Takes every argument of ``RecurrentActorCriticPolicy`` (``lstm_hidden_size``, ``n_lstm_layers``,
    ``shared_lstm``, ``enable_critic_lstm``, ...). As in :class:`~maskrl.policies.MaskedActorCriticPolicy`, the
    features extractor is built on and fed the observation without the mask (the lone ``"observation"`` space, or a
    ``Dict`` of the other keys, e.g. ``entities`` and ``visibility`` for
    :class:`~maskrl.policies.EntityAttentionExtractor`); the LSTMs run on its features; the mask only shapes the
    action distribution. Use it with unchanged ``sb3_contrib.RecurrentPPO``.

    :param observation_space: ``Dict`` with ``"action_mask"`` (int8 0/1, flat) and feature keys
    :param action_space: ``Discrete``, ``MultiDiscrete`` or ``MultiBinary``
    :param lr_schedule: learning-rate schedule
    """

    action_dist: MaskedDistribution
    multi_input_policy_name = "MaskedRecurrentMultiInputPolicy"

    def _get_constructor_parameters(self) -> dict[str, Any]:
        # sb3-contrib leaves the LSTM's shape out, so policy.save()/load() would rebuild a default-sized LSTM.
        return {
            **super()._get_constructor_parameters(),
            "lstm_hidden_size": self.lstm_actor.hidden_size,
            "n_lstm_layers": self.lstm_actor.num_layers,
            "shared_lstm": self.shared_lstm,
            "enable_critic_lstm": self.enable_critic_lstm,
            "lstm_kwargs": self.lstm_kwargs,
        }

    def _masked_distribution(
        self, latent_pi: torch.Tensor, obs: PyTorchObs, padded: bool = False
    ) -> MaskedDistribution:
        """The action distribution of ``latent_pi`` under the mask of the same ``obs`` batch.

        :param padded: ``obs`` comes from padded sequences (see :func:`open_padding_rows`)
        """
        assert isinstance(obs, dict), f"masked policies take Dict observations, got {type(obs)}"
        mask = obs[ACTION_MASK_KEY]
        if padded:
            mask = open_padding_rows(mask)
        return self.action_dist.proba_distribution(self.action_net(latent_pi), mask)

    def _latents(
        self, obs: PyTorchObs, lstm_states: RNNStates, episode_starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, RNNStates]:
        """Actor and critic latents (after the LSTMs and the MLP extractor) and the new LSTM states.

        The critic follows ``RecurrentActorCriticPolicy``: its own LSTM, the actor's (``shared_lstm``, without
        gradient) or a linear layer.
        """
        features = self.extract_features(obs)
        pi_features, vf_features = (features, features) if self.share_features_extractor else features
        latent_pi, states_pi = self._process_sequence(pi_features, lstm_states.pi, episode_starts, self.lstm_actor)
        if self.lstm_critic is not None:
            latent_vf, states_vf = self._process_sequence(vf_features, lstm_states.vf, episode_starts, self.lstm_critic)
        elif self.shared_lstm:
            latent_vf = latent_pi.detach()
            states_vf = (states_pi[0].detach(), states_pi[1].detach())
        else:
            latent_vf = self.critic(vf_features)
            states_vf = states_pi
        return (
            self.mlp_extractor.forward_actor(latent_pi),
            self.mlp_extractor.forward_critic(latent_vf),
            RNNStates(states_pi, states_vf),
        )

    def forward(
        self,
        obs: PyTorchObs,
        lstm_states: RNNStates,
        episode_starts: torch.Tensor,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, RNNStates]:
        """Actions (valid ones only), values, log-probs and new LSTM states: what the rollout calls."""
        latent_pi, latent_vf, states = self._latents(obs, lstm_states, episode_starts)
        values = self.value_net(latent_vf)
        distribution = self._masked_distribution(latent_pi, obs)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = own_actions_log_prob(distribution, actions)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob, states

    def evaluate_actions(  # type: ignore[override]
        self, obs: PyTorchObs, actions: torch.Tensor, lstm_states: RNNStates, episode_starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Values, log-probs and entropies for the update, over padded sequences; padding rows count as all-valid."""
        latent_pi, latent_vf, _ = self._latents(obs, lstm_states, episode_starts)
        distribution = self._masked_distribution(latent_pi, obs, padded=True)
        return self.value_net(latent_vf), distribution.log_prob(actions), distribution.entropy()

    def get_distribution(  # type: ignore[override]
        self, obs: PyTorchObs, lstm_states: LSTMState, episode_starts: torch.Tensor
    ) -> tuple[MaskedDistribution, LSTMState]:
        """The masked action distribution and the actor's new LSTM state (what ``predict`` uses)."""
        features = self._features(obs, self.pi_features_extractor)
        latent_pi, states = self._process_sequence(features, lstm_states, episode_starts, self.lstm_actor)
        return self._masked_distribution(self.mlp_extractor.forward_actor(latent_pi), obs), states

    def predict_values(  # type: ignore[override]
        self, obs: PyTorchObs, lstm_states: LSTMState, episode_starts: torch.Tensor
    ) -> torch.Tensor:
        """The values of ``obs`` given the critic's LSTM state (the mask plays no part)."""
        features = self._features(obs, self.vf_features_extractor)
        if self.lstm_critic is not None:
            latent_vf, _ = self._process_sequence(features, lstm_states, episode_starts, self.lstm_critic)
        elif self.shared_lstm:
            latent_pi, _ = self._process_sequence(features, lstm_states, episode_starts, self.lstm_actor)
            latent_vf = latent_pi.detach()
        else:
            latent_vf = self.critic(features)
        return self.value_net(self.mlp_extractor.forward_critic(latent_vf))


class MaskedRecurrentMultiInputPolicy(CombinedExtractorByDefault, MaskedRecurrentActorCriticPolicy):
    """:class:`MaskedRecurrentActorCriticPolicy` with SB3's ``CombinedExtractor`` by default, for several feature keys.

    Like sb3-contrib's ``MultiInputLstmPolicy``; takes the same arguments as
    :class:`MaskedRecurrentActorCriticPolicy`.
    """
