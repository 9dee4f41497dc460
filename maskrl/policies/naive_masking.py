"""Naive invalid action masking: act with the mask, learn without it (Huang & Ontañón 2020, section 5).

:class:`NaiveMaskedPolicy` samples its actions from the masked distribution, exactly like
:class:`~maskrl.policies.actor_critic.MaskedActorCriticPolicy`, so it never takes an invalid action. But the
log-probabilities and the entropy that PPO's update uses come from the *unmasked* distribution (the softmax over
all logits). The policy gradient is then the gradient of a policy the agent does not follow: it keeps pushing
probability mass around among invalid actions, and the entropy bonus rewards spreading mass over them.

It exists for the masking study (``benchmarks/masking_study.py``, ``--algo ppo_naive``), not for real use.
"""

from __future__ import annotations

import torch
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

from maskrl.policies.actor_critic import MaskedActorCriticPolicy, MaskedMultiInputPolicy
from maskrl.policies.sb3_distributions import MaskedDistribution, make_masked_distribution


class NaiveMaskedPolicy(MaskedActorCriticPolicy):
    """Masked sampling, unmasked PPO update: the paper's "naive invalid action masking".

    Takes the same arguments as :class:`~maskrl.policies.actor_critic.MaskedActorCriticPolicy`.

    - :meth:`forward` (the rollout) samples from the masked distribution, and returns the action's log-prob
      under the unmasked one, so that PPO's stored "old" log-prob and the new one of :meth:`evaluate_actions`
      come from the same distribution and the ratio starts at 1;
    - :meth:`evaluate_actions` (the update) returns the log-prob and entropy of the unmasked distribution;
    - :meth:`get_distribution` and so ``predict`` (evaluation) stay masked.
    """

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        # A second distribution object: the masked one (self.action_dist) keeps its state for sampling.
        self.unmasked_dist = make_masked_distribution(self.action_space)

    def _unmasked_distribution(self, latent_pi: torch.Tensor) -> MaskedDistribution:
        """The distribution over every action, invalid ones included (no mask)."""
        return self.unmasked_dist.proba_distribution(self.action_net(latent_pi), None)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latent_pi, latent_vf = self._latents(obs)
        values = self.value_net(latent_vf)
        actions = self._masked_distribution(latent_pi, obs).get_actions(deterministic=deterministic)
        log_prob = self._unmasked_distribution(latent_pi).log_prob(actions)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob

    def evaluate_actions(
        self, obs: PyTorchObs, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        latent_pi, latent_vf = self._latents(obs)
        distribution = self._unmasked_distribution(latent_pi)
        return self.value_net(latent_vf), distribution.log_prob(actions), distribution.entropy()


class NaiveMaskedMultiInputPolicy(NaiveMaskedPolicy, MaskedMultiInputPolicy):
    """:class:`NaiveMaskedPolicy` with SB3's ``CombinedExtractor`` by default, for several feature keys."""
