"""Masked distributions (pure torch), their SB3 wrappers, and masked policies."""

from maskrl.policies.actor_critic import MaskedActorCriticPolicy, MaskedMultiInputPolicy
from maskrl.policies.distributions import MaskedCategorical, MaskedMultiCategorical
from maskrl.policies.sb3_distributions import (
    MaskedCategoricalDistribution,
    MaskedMultiCategoricalDistribution,
    make_masked_distribution,
)

__all__ = [
    "MaskedActorCriticPolicy",
    "MaskedCategorical",
    "MaskedCategoricalDistribution",
    "MaskedMultiCategorical",
    "MaskedMultiCategoricalDistribution",
    "MaskedMultiInputPolicy",
    "make_masked_distribution",
]
