"""The algorithm registry: what each ``--algo`` name means.

``ppo`` and ``a2c`` are unchanged SB3 algorithms with maskrl's masked policy (the mask travels in the
observation). ``maskable_ppo`` is sb3-contrib's MaskablePPO, which reads ``env.action_masks()``
instead; ``ppo_nomask`` is plain PPO that never sees a mask (invalid actions become no-ops, usually
with a penalty set through the env's ``invalid_action_penalty``): the baseline of the masking study.
``ppo_naive`` is the study's "naive masking" (:mod:`maskrl.policies.naive_masking`): masked sampling, but
log-probs and entropy of the unmasked distribution in the PPO update. ``ppo_contrastive`` is PPO with the
masked policy plus the masked contrastive auxiliary loss (:mod:`maskrl.agents.contrastive`), for image observations.
``dqn`` and ``qrdqn`` are SB3's DQN and sb3-contrib's QR-DQN with the mask read from the observation in acting,
exploration and the TD target (:mod:`maskrl.agents.dqn`); ``dqn_nomask`` and ``qrdqn_nomask`` never see a mask.
``ppo_lstm`` is sb3-contrib's RecurrentPPO (rl-baselines3-zoo's name) with the masked recurrent policy
(:mod:`maskrl.policies.recurrent`), for partially observable envs; ``ppo_lstm_nomask`` is RecurrentPPO without a mask.

:func:`build_model` turns an algorithm name, an env and hyperparameters into an untrained model: ``train.py``, the safe
loader and the benchmarks build every model with it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from gymnasium import spaces
from sb3_contrib import QRDQN, MaskablePPO, RecurrentPPO
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.evaluation import evaluate_policy as maskable_evaluate_policy
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from maskrl.agents.contrastive import ContrastivePPO
from maskrl.agents.dqn import MaskedDQN, MaskedQRDQN, ResumableDQN, ResumableQRDQN
from maskrl.agents.env_setup import HOW_TO_ADD_MASKS
from maskrl.agents.hyperparams import HyperparameterError, import_object, resolve_algo_kwargs
from maskrl.masks import ACTION_MASK_KEY, MASK_KEYS
from maskrl.policies import MaskedActorCriticPolicy, MaskedMultiInputPolicy
from maskrl.policies.naive_masking import NaiveMaskedMultiInputPolicy, NaiveMaskedPolicy
from maskrl.policies.q_policies import (
    MaskedDQNMultiInputPolicy,
    MaskedDQNPolicy,
    MaskedQRDQNMultiInputPolicy,
    MaskedQRDQNPolicy,
)
from maskrl.policies.recurrent import MaskedRecurrentActorCriticPolicy, MaskedRecurrentMultiInputPolicy

#: The action spaces a mask can be given for (sb3-contrib's flat layouts).
MASKABLE_ACTION_SPACES: tuple[type[spaces.Space], ...] = (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


class IncompatibleEnvError(ValueError):
    """An env an algorithm cannot train on (its action space, or it has no masks): no hyperparameter fixes it."""


@dataclass(frozen=True)
class AlgoSpec:
    """How to build, evaluate and monitor one ``--algo``.

    :param algo_class: the SB3 algorithm class
    :param policy: the policy for a single feature key and for several feature keys
    :param sees_mask: whether the mask stays in the observation (else it is dropped from it)
    :param eval_callback_class: the ``EvalCallback`` that evaluates this algorithm correctly
    :param evaluate: the ``evaluate_policy`` function that evaluates it correctly
    :param description: one line for ``--help``
    :param needs_mask: whether the env must give action masks; ``None``: the same as ``sees_mask`` (MaskablePPO
        needs them without seeing them: it reads ``action_masks()``)
    :param action_spaces: the action-space classes it can act in; ``None``: derived from ``algo_class`` and
        ``needs_mask`` (see :meth:`supported_action_spaces`)
    :param observation_check: given the env's observation space (mask included), why the algorithm cannot use it,
        or ``None`` when it can
    """

    algo_class: type[BaseAlgorithm]
    policy: tuple[type | str, type | str]
    sees_mask: bool
    eval_callback_class: type[EvalCallback]
    evaluate: Callable[..., Any]
    description: str
    needs_mask: bool | None = None
    action_spaces: tuple[type[spaces.Space], ...] | None = None
    observation_check: Callable[[spaces.Space], str | None] | None = None

    def __post_init__(self) -> None:
        if self.needs_mask is None:
            object.__setattr__(self, "needs_mask", self.sees_mask)

    def policy_for(self, several_feature_keys: bool) -> type | str:
        """The policy for an observation with one feature key or with several."""
        return self.policy[1] if several_feature_keys else self.policy[0]

    def supported_action_spaces(self) -> tuple[type[spaces.Space], ...]:
        """The action-space classes this algorithm can act in.

        SB3 hands each algorithm's supported spaces to ``BaseAlgorithm.__init__`` only, so they cannot be read off the
        class: without an explicit ``action_spaces``, value-based algorithms (DQN, QR-DQN) act in ``Discrete`` spaces,
        the others in the spaces masks exist for, plus ``Box`` when they need no mask.
        """
        if self.action_spaces is not None:
            return self.action_spaces
        if issubclass(self.algo_class, DQN | QRDQN):
            return (spaces.Discrete,)
        return MASKABLE_ACTION_SPACES if self.needs_mask else (*MASKABLE_ACTION_SPACES, spaces.Box)

    def default_policy(
        self, observation_space: spaces.Space, policy_kwargs: dict[str, Any] | None = None
    ) -> type | str:
        """The policy for ``observation_space`` (as the algorithm sees it) when the hyperparameters name none.

        Masked policies take the mask out and give the rest to the features extractor: the multi-input policy when
        that rest is not a lone ``"observation"`` and no features extractor is given for it. Policies that see no
        mask need SB3's multi-input policy for any ``Dict`` observation.
        """
        if not self.sees_mask:
            return self.policy_for(isinstance(observation_space, spaces.Dict))
        if not isinstance(observation_space, spaces.Dict):
            return self.policy_for(False)  # the policy refuses it, with its own message
        features = [key for key in observation_space.spaces if key != ACTION_MASK_KEY]
        several = sum(key not in MASK_KEYS for key in features) > 1 or (
            features != ["observation"] and "features_extractor_class" not in (policy_kwargs or {})
        )
        return self.policy_for(several)


def _contrastive_observation_check(observation_space: spaces.Space) -> str | None:
    """ContrastivePPO encodes one ``"observation"`` key per frame: an env with other feature keys cannot feed it."""
    keys = list(observation_space.spaces) if isinstance(observation_space, spaces.Dict) else ["observation"]
    features = [key for key in keys if key != ACTION_MASK_KEY]
    if features != ["observation"]:
        return (
            f"its contrastive task encodes frames held in one 'observation' key (pictures, e.g. "
            f"maskrl/PandaGridImage-v0), and the observation has {', '.join(repr(key) for key in features)}"
        )
    return None


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
        needs_mask=True,
    ),
    "ppo_nomask": AlgoSpec(
        PPO,
        ("MlpPolicy", "MultiInputPolicy"),
        False,
        EvalCallback,
        evaluate_policy,
        "plain SB3 PPO that sees no mask; invalid actions are no-ops (penalised via env kwargs); any gymnasium env",
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
        observation_check=_contrastive_observation_check,
    ),
    "ppo_lstm": AlgoSpec(
        RecurrentPPO,
        (MaskedRecurrentActorCriticPolicy, MaskedRecurrentMultiInputPolicy),
        True,
        EvalCallback,
        evaluate_policy,
        "sb3-contrib RecurrentPPO (LSTM) with maskrl's masked recurrent policy (mask read from the observation)",
    ),
    "ppo_lstm_nomask": AlgoSpec(
        RecurrentPPO,
        ("MlpLstmPolicy", "MultiInputLstmPolicy"),
        False,
        EvalCallback,
        evaluate_policy,
        "plain sb3-contrib RecurrentPPO that sees no mask; invalid actions are no-ops (penalised via env kwargs)",
    ),
    "dqn": AlgoSpec(
        MaskedDQN,
        (MaskedDQNPolicy, MaskedDQNMultiInputPolicy),
        True,
        EvalCallback,
        evaluate_policy,
        "SB3 DQN with masked greedy actions, exploration and TD targets (mask read from the observation)",
    ),
    "qrdqn": AlgoSpec(
        MaskedQRDQN,
        (MaskedQRDQNPolicy, MaskedQRDQNMultiInputPolicy),
        True,
        EvalCallback,
        evaluate_policy,
        "sb3-contrib QR-DQN with masked greedy actions, exploration and TD targets (mask read from the observation)",
    ),
    "dqn_nomask": AlgoSpec(
        ResumableDQN,
        ("MlpPolicy", "MultiInputPolicy"),
        False,
        EvalCallback,
        evaluate_policy,
        "plain SB3 DQN that sees no mask; invalid actions are no-ops (penalised via env kwargs)",
    ),
    "qrdqn_nomask": AlgoSpec(
        ResumableQRDQN,
        ("MlpPolicy", "MultiInputPolicy"),
        False,
        EvalCallback,
        evaluate_policy,
        "plain sb3-contrib QR-DQN that sees no mask; invalid actions are no-ops (penalised via env kwargs)",
    ),
}


def check_algo_env(
    name: str,
    env_id: str,
    action_space: spaces.Space,
    has_mask: bool,
    observation_space: spaces.Space | None = None,
    preferred: Collection[str] = (),
) -> None:
    """Refuse, in one line that names what would work, an env that ``--algo name`` cannot train on.

    :param name: the ``--algo`` name
    :param env_id: the env, for the message
    :param action_space: its action space
    :param has_mask: whether it gives action masks (in its observation, ``action_masks()`` or ``info``)
    :param observation_space: its observation space, mask included (checked when the algorithm has an
        ``observation_check``)
    :param preferred: the algorithms to suggest first when several fit (those set up for the env)
    :raises IncompatibleEnvError: an action space the algorithm cannot act in, no masks for one that needs them, or
        an observation it cannot use
    """
    spec = get_algo(name)

    def others() -> str:
        fitting = [
            other
            for other, candidate in ALGOS.items()
            if isinstance(action_space, candidate.supported_action_spaces()) and (has_mask or not candidate.needs_mask)
        ]
        fitting = [other for other in fitting if other in preferred] or fitting
        return f"--algo {' or '.join(fitting)}" if fitting else "an algorithm for it (none of maskrl's fits)"

    supported = spec.supported_action_spaces()
    if not isinstance(action_space, supported):
        names = [kind.__name__ for kind in supported]
        kinds = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        what = "masks its actions, which needs" if spec.needs_mask else "acts in"
        raise IncompatibleEnvError(
            f"--algo {name} {what} a {kinds} action space, but {env_id} acts in {_short(action_space)}: use {others()}"
        )
    if spec.needs_mask and not has_mask:
        raise IncompatibleEnvError(
            f"--algo {name} needs action masks, but {env_id} has none: train it with {others()}, or add masks: "
            f"{HOW_TO_ADD_MASKS}"
        )
    if spec.observation_check is not None and observation_space is not None:
        reason = spec.observation_check(observation_space)
        if reason is not None:
            raise IncompatibleEnvError(f"--algo {name} cannot train on {env_id}: {reason}")


def _short(space: spaces.Space) -> str:
    """A space's repr, or its class and shape when the repr lists too many values (``MultiDiscrete([5 5 5 ...])``)."""
    text = " ".join(repr(space).split())
    return text if len(text) <= 80 else f"{type(space).__name__} of shape {space.shape}"


def get_algo(name: str) -> AlgoSpec:
    """Look up an algorithm by its ``--algo`` name.

    :raises ValueError: naming the known algorithms, for an unknown name
    """
    try:
        return ALGOS[name]
    except KeyError:
        raise ValueError(f"unknown algo '{name}'; known: {', '.join(ALGOS)}") from None


def build_model(
    algo: str,
    env: VecEnv,
    hyperparams: dict[str, Any],
    seed: int | None = None,
    device: str = "cpu",
    tensorboard_log: str | None = None,
    verbose: int = 0,
    import_class: Callable[[str], Any] = import_object,
) -> BaseAlgorithm:
    """Build the untrained model of ``--algo algo`` on ``env``.

    :param algo: an ``--algo`` name (:data:`ALGOS`)
    :param env: the training env, made for the algorithm (:func:`maskrl.agents.env_setup.make_masked_vec_env` with
        the spec's ``sees_mask`` and ``needs_mask``)
    :param hyperparams: a section of a hyperparameter file or a run config's ``hyperparams``: the algorithm's
        constructor arguments (schedules and names as :func:`maskrl.agents.hyperparams.resolve_algo_kwargs` reads
        them) plus our keys (``n_timesteps``, ``n_envs`` and ``env_kwargs`` are ignored here); ``policy`` is a policy
        class or its import path, by default the algorithm's policy for ``env``'s observation
        (:meth:`AlgoSpec.default_policy`)
    :param seed: seed of the algorithm (``None``: no seeding, which leaves the global random generators alone)
    :param device: torch device
    :param tensorboard_log: SB3's ``tensorboard_log`` folder
    :param verbose: SB3's verbosity
    :param import_class: imports the import paths of ``hyperparams`` (``policy``, ``features_extractor_class``); the
        safe loader gives one that refuses paths outside the packages it trusts before importing anything
    :raises ValueError: an unknown ``algo``
    :raises HyperparameterError: hyperparameters that cannot be resolved (an unknown activation or schedule, an import
        path that does not import), before anything is built
    :raises Exception: whatever the algorithm's constructor raises for arguments it refuses, unchanged (``TypeError``
        for an unknown one, ``ValueError`` or SB3's ``AssertionError`` for a value)
    """
    spec = get_algo(algo)
    try:
        algo_kwargs = resolve_algo_kwargs(hyperparams, import_class)
        policy = hyperparams.get("policy")
        if isinstance(policy, str):
            policy = import_class(policy)
        elif policy is None:
            policy = spec.default_policy(env.observation_space, hyperparams.get("policy_kwargs"))
    except ValueError as error:
        raise HyperparameterError(str(error)) from None
    return spec.algo_class(
        policy, env, seed=seed, device=device, tensorboard_log=tensorboard_log, verbose=verbose, **algo_kwargs
    )
