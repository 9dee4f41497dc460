"""Masked distributions (pure torch), their SB3 wrappers, masked policies and features extractors.

Attention-map plots and their TensorBoard callback live in :mod:`maskrl.policies.attention_plots`
(it imports matplotlib, so it is not loaded here).

Ablations, for studies only (not exported here): :mod:`maskrl.policies.naive_masking` (masked sampling, unmasked
update; ``--algo ppo_naive``).
"""

from maskrl.policies.actor_critic import MaskedActorCriticPolicy, MaskedMultiInputPolicy
from maskrl.policies.distributions import CategoricalMap, MaskedCategorical, MaskedMultiCategorical
from maskrl.policies.entity_attention import EntityAttentionExtractor
from maskrl.policies.gridnet import GridNetPolicy
from maskrl.policies.q_policies import (
    MaskedDQNMultiInputPolicy,
    MaskedDQNPolicy,
    MaskedQRDQNMultiInputPolicy,
    MaskedQRDQNPolicy,
)
from maskrl.policies.recurrent import MaskedRecurrentActorCriticPolicy, MaskedRecurrentMultiInputPolicy
from maskrl.policies.sb3_distributions import (
    CategoricalMapDistribution,
    MaskedCategoricalDistribution,
    MaskedMultiCategoricalDistribution,
    make_masked_distribution,
)
from maskrl.policies.small_cnn import SmallCNN
from maskrl.policies.trajectory_extractor import TrajectoryExtractor

__all__ = [
    "CategoricalMap",
    "CategoricalMapDistribution",
    "EntityAttentionExtractor",
    "GridNetPolicy",
    "MaskedActorCriticPolicy",
    "MaskedCategorical",
    "MaskedCategoricalDistribution",
    "MaskedDQNMultiInputPolicy",
    "MaskedDQNPolicy",
    "MaskedMultiCategorical",
    "MaskedMultiCategoricalDistribution",
    "MaskedMultiInputPolicy",
    "MaskedQRDQNMultiInputPolicy",
    "MaskedQRDQNPolicy",
    "MaskedRecurrentActorCriticPolicy",
    "MaskedRecurrentMultiInputPolicy",
    "SmallCNN",
    "TrajectoryExtractor",
    "make_masked_distribution",
]
