"""The algorithm registry: what each ``--algo`` name means.

``ppo`` and ``a2c`` are unchanged SB3 algorithms with maskrl's masked policy (the mask travels in the
observation). ``maskable_ppo`` is sb3-contrib's MaskablePPO, which reads ``env.action_masks()``
instead; ``ppo_nomask`` is plain PPO that never sees a mask (invalid actions become no-ops, usually
with a penalty set through the env's ``invalid_action_penalty``): the baseline of the masking study.
``ppo_naive`` is the study's "naive masking" (:mod:`maskrl.policies.naive_masking`): masked sampling, but
log-probs and entropy of the unmasked distribution in the PPO update. ``ppo_contrastive`` is PPO with the
masked policy plus the masked contrastive auxiliary loss (:mod:`maskrl.agents.contrastive`), for image observations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.evaluation import evaluate_policy as maskable_evaluate_policy
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy

from maskrl.agents.contrastive import ContrastivePPO
from maskrl.policies import MaskedActorCriticPolicy, MaskedMultiInputPolicy
from maskrl.policies.naive_masking import NaiveMaskedMultiInputPolicy, NaiveMaskedPolicy


@dataclass(frozen=True)
class AlgoSpec:
    """How to build, evaluate and monitor one ``--algo``.

    :param algo_class: the SB3 algorithm class
    :param policy: the policy for a single feature key and for several feature keys
    :param sees_mask: whether the mask stays in the observation (else it is dropped from it)
    :param eval_callback_class: the ``EvalCallback`` that evaluates this algorithm correctly
    :param evaluate: the ``evaluate_policy`` function that evaluates it correctly
    :param description: one line for ``--help``
    """

    algo_class: type[BaseAlgorithm]
    policy: tuple[type | str, type | str]
    sees_mask: bool
    eval_callback_class: type[EvalCallback]
    evaluate: Callable[..., Any]
    description: str

    def policy_for(self, several_feature_keys: bool) -> type | str:
        """The policy for an observation with one feature key or with several."""
        return self.policy[1] if several_feature_keys else self.policy[0]


ALGOS: dict[str, AlgoSpec] = {
    "ppo": AlgoSpec(
        PPO,
        (MaskedActorCriticPolicy, MaskedMultiInputPolicy),
        True,
        EvalCallback,
        evaluate_policy,
        "SB3 PPO with maskrl's masked policy (mask read from the observation)",
    ),
    "a2c": AlgoSpec(
        A2C,
        (MaskedActorCriticPolicy, MaskedMultiInputPolicy),
        True,
        EvalCallback,
        evaluate_policy,
        "SB3 A2C with maskrl's masked policy (mask read from the observation)",
    ),
    "maskable_ppo": AlgoSpec(
        MaskablePPO,
        ("MlpPolicy", "MultiInputPolicy"),
        False,
        MaskableEvalCallback,
        maskable_evaluate_policy,
        "sb3-contrib MaskablePPO (mask read from env.action_masks()), for comparison",
    ),
    "ppo_nomask": AlgoSpec(
        PPO,
        ("MlpPolicy", "MultiInputPolicy"),
        False,
        EvalCallback,
        evaluate_policy,
        "plain SB3 PPO that sees no mask; invalid actions are no-ops (penalised via env kwargs)",
    ),
    "ppo_naive": AlgoSpec(
        PPO,
        (NaiveMaskedPolicy, NaiveMaskedMultiInputPolicy),
        True,
        EvalCallback,
        evaluate_policy,
        "SB3 PPO with naive masking: masked sampling, unmasked log-probs and entropy in the update (for studies)",
    ),
    "ppo_contrastive": AlgoSpec(
        ContrastivePPO,
        (MaskedActorCriticPolicy, MaskedMultiInputPolicy),
        True,
        EvalCallback,
        evaluate_policy,
        "PPO with the masked policy + masked contrastive auxiliary loss (M-CURL), for image observations",
    ),
}


def get_algo(name: str) -> AlgoSpec:
    """Look up an algorithm by its ``--algo`` name.

    :raises ValueError: naming the known algorithms, for an unknown name
    """
    try:
        return ALGOS[name]
    except KeyError:
        raise ValueError(f"unknown algo '{name}'; known: {', '.join(ALGOS)}") from None
