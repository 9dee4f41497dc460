"""Masked distributions (pure torch), their SB3 wrappers, masked policies and features extractors.

Attention-map plots and their TensorBoard callback live in :mod:`maskrl.policies.attention_plots`
(it imports matplotlib, so it is not loaded here).
"""

from maskrl.policies.actor_critic import MaskedActorCriticPolicy, MaskedMultiInputPolicy
from maskrl.policies.categorical_map import CategoricalMap, CategoricalMapDistribution
from maskrl.policies.distributions import MaskedCategorical, MaskedMultiCategorical
from maskrl.policies.entity_attention import EntityAttentionExtractor
from maskrl.policies.gridnet import GridNetPolicy
from maskrl.policies.naive_masking import NaiveMaskedMultiInputPolicy, NaiveMaskedPolicy
from maskrl.policies.q_policies import (
    MaskedDQNMultiInputPolicy,
    MaskedDQNPolicy,
    MaskedQRDQNMultiInputPolicy,
    MaskedQRDQNPolicy,
)
from maskrl.policies.recurrent import MaskedRecurrentActorCriticPolicy, MaskedRecurrentMultiInputPolicy
from maskrl.policies.sb3_distributions import (
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
    "NaiveMaskedMultiInputPolicy",
    "NaiveMaskedPolicy",
    "SmallCNN",
    "TrajectoryExtractor",
    "make_masked_distribution",
]
