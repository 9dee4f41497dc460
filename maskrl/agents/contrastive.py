"""PPO with a masked contrastive auxiliary loss trained in the same backward pass (M-CURL, Zhu et al. 2020).

``total loss = PPO loss + contrastive_coef * InfoNCE``: for every PPO minibatch, sample ``sequences_per_batch``
windows of ``sequence_length`` consecutive observations from the current rollout (one env, never across an episode
start), mask a fraction of the frames, encode every frame with the policy's own features extractor, rebuild the
masked positions with a small transformer and score them against a momentum key encoder's features of the original
frames (:class:`~maskrl.representation.contrastive.MaskedContrastiveModel`). The gradient of the auxiliary term
reaches the policy's features extractor, so the representation is shaped by both losses; the transformer and projection
heads have their own Adam optimiser with the same learning rate; the key encoder follows the policy's extractor by
an exponential moving average after every optimiser step.

Use it like ``PPO`` with maskrl's masked policy (the action mask travels in the observation)::

    from maskrl.agents.contrastive import ContrastivePPO
    from maskrl.agents.env_setup import make_masked_vec_env
    from maskrl.policies import MaskedMultiInputPolicy
    from maskrl.policies.small_cnn import SmallCNN

    env = make_masked_vec_env("maskrl/PandaGridImage-v0", 8)
    model = ContrastivePPO(MaskedMultiInputPolicy, env, policy_kwargs={"features_extractor_class": SmallCNN})

It logs ``train/contrastive_loss`` and ``train/contrastive_accuracy`` (how often a rebuilt position's nearest key
is its own original frame). ``contrastive_coef=0`` skips the auxiliary task entirely and trains exactly like
``PPO`` (bit for bit, given the same seed).

Note that the auxiliary gradient on the shared encoder also counts in PPO's gradient-norm clipping
(``max_grad_norm``): a large ``contrastive_coef`` shrinks the effective PPO step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.utils import explained_variance
from torch import Tensor, nn

from maskrl.checks import check_int, check_number
from maskrl.policies.actor_critic import MaskedActorCriticPolicy
from maskrl.representation.contrastive import MASK_MODES, MaskedContrastiveModel

__all__ = ["ContrastivePPO"]


class ContrastivePPO(PPO):
    """SB3 ``PPO`` whose ``train()`` adds ``contrastive_coef`` x the masked contrastive loss to every minibatch loss.

    Takes every argument of ``PPO``, plus:

    :param contrastive_coef: lambda, the weight of the auxiliary loss (``0`` disables it).
    :param contrastive_key: observation key of the image frames.
    :param sequence_length: frames per sampled sequence (``<= n_steps``).
    :param sequences_per_batch: sequences sampled for each PPO minibatch.
    :param mask_ratio: fraction of each sequence to mask, in ``(0, 1)``.
    :param temperature: InfoNCE temperature.
    :param momentum: EMA momentum of the key encoder, in ``[0, 1]`` (``1`` freezes it;
        :func:`~maskrl.representation.momentum.momentum_update`).
    :param contrastive_kwargs: extra arguments of :class:`~maskrl.representation.contrastive.MaskedContrastiveModel`
        (``proj_dim``, ``reconstructor_kwargs``).

    Ablation:

    :param mask_mode: ``"zeros"`` (M-CURL), or ``"frames"``: replace masked frames by other frames of the batch.
    """

    def __init__(
        self,
        policy: type[MaskedActorCriticPolicy] | str,
        env: Any,
        *args: Any,
        contrastive_coef: float = 0.05,
        contrastive_key: str = "observation",
        sequence_length: int = 8,
        sequences_per_batch: int = 16,
        mask_ratio: float = 0.25,
        mask_mode: str = "zeros",
        temperature: float = 0.1,
        momentum: float = 0.95,
        contrastive_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        check_number("contrastive_coef", contrastive_coef)
        if contrastive_coef < 0:
            raise ValueError(f"contrastive_coef must be >= 0, got {contrastive_coef}")
        # At least two frames: one masked frame and its context.
        check_int("sequence_length", sequence_length, 2)
        check_int("sequences_per_batch", sequences_per_batch, 1)
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
        check_number("momentum", momentum)
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.contrastive_coef = float(contrastive_coef)
        self.contrastive_key = contrastive_key
        self.sequence_length = sequence_length
        self.sequences_per_batch = sequences_per_batch
        self.mask_ratio = mask_ratio
        self.mask_mode = mask_mode
        self.temperature = temperature
        self.momentum = float(momentum)
        self.contrastive_kwargs = dict(contrastive_kwargs or {})
        super().__init__(policy, env, *args, **kwargs)

    # ------------------------------------------------------------------ setup, save/load
    def _setup_model(self) -> None:
        super()._setup_model()
        if self.contrastive_coef == 0:
            return  # plain PPO: build nothing, draw no random numbers
        if not isinstance(self.policy, MaskedActorCriticPolicy):
            raise ValueError(f"ContrastivePPO needs maskrl's masked policy, got {type(self.policy).__name__}")
        if not self.policy.share_features_extractor:
            raise ValueError("ContrastivePPO needs share_features_extractor=True (one encoder for actor and critic)")
        space = self.observation_space
        if not isinstance(space, spaces.Dict) or self.contrastive_key not in space.spaces:
            raise ValueError(f"the observation has no '{self.contrastive_key}' key for the contrastive task: {space}")
        feature_space = self.policy.features_space
        feature_keys = list(feature_space.spaces) if isinstance(feature_space, spaces.Dict) else ["observation"]
        if feature_keys != [self.contrastive_key]:
            raise ValueError(f"the features extractor must read only '{self.contrastive_key}', it reads {feature_keys}")
        if self.sequence_length > self.n_steps:
            raise ValueError(f"sequence_length={self.sequence_length} exceeds n_steps={self.n_steps}")
        self.contrastive = MaskedContrastiveModel(
            self.policy.features_extractor,
            self.policy.features_extractor.features_dim,
            max_len=self.sequence_length,
            mask_ratio=self.mask_ratio,
            mask_mode=self.mask_mode,  # type: ignore[arg-type]
            temperature=self.temperature,
            **self.contrastive_kwargs,
        ).to(self.device)
        trainable = [p for p in self.contrastive.parameters() if p.requires_grad]
        self.contrastive_optimizer = torch.optim.Adam(trainable, lr=self.lr_schedule(1))
        # Own random streams, seeded from the model's seed: which windows and positions the aux task sees.
        self._window_rng = np.random.default_rng(self.seed)
        self._mask_generator = torch.Generator(device=self.device)
        if self.seed is not None:
            self._mask_generator.manual_seed(self.seed)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "contrastive", "contrastive_optimizer", "_mask_generator"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        if self.contrastive_coef > 0:
            state_dicts = [*state_dicts, "contrastive", "contrastive_optimizer"]
        return state_dicts, variables

    # ------------------------------------------------------------------ the auxiliary task
    def _rollout_frames(self) -> tuple[Tensor, np.ndarray, np.ndarray]:
        """The rollout's frames as ``(n_envs, n_steps, ...)`` and the valid window starts ``(env, step)``."""
        buffer = self.rollout_buffer
        obs = buffer.observations[self.contrastive_key]  # type: ignore[index]
        n_steps, n_envs, T = buffer.buffer_size, buffer.n_envs, self.sequence_length
        # Before the first get() the buffer is (n_steps, n_envs, ...); after it, env-major and flattened.
        frames = obs.reshape(n_envs, n_steps, *obs.shape[1:]) if buffer.generator_ready else obs.swapaxes(0, 1)
        starts = buffer.episode_starts.T  # (n_envs, n_steps); episode_starts is never flattened
        # Window [t, t + T) is valid when no episode starts at t+1 .. t+T-1.
        counts = np.concatenate([np.zeros((n_envs, 1)), np.cumsum(starts, axis=1)], axis=1)
        inner = counts[:, T : n_steps + 1] - counts[:, 1 : n_steps - T + 2]
        env_idx, step_idx = np.nonzero(inner == 0)
        if len(env_idx) == 0:  # only very short episodes: accept windows that cross an episode start
            env_idx, step_idx = np.divmod(np.arange(n_envs * (n_steps - T + 1)), n_steps - T + 1)
        # Float frames (images are stored as uint8): masking writes zeros or other frames, preprocessing rescales.
        return torch.as_tensor(frames, device=self.device).float(), env_idx, step_idx

    def _sample_sequences(self, frames: Tensor, env_idx: np.ndarray, step_idx: np.ndarray) -> Tensor:
        """``sequences_per_batch`` windows of ``sequence_length`` consecutive frames: ``(S, T, ...)``."""
        n = self.sequences_per_batch
        pick = self._window_rng.choice(len(env_idx), size=n, replace=len(env_idx) < n)
        envs = torch.as_tensor(env_idx[pick], device=self.device)
        steps = torch.as_tensor(step_idx[pick], device=self.device)[:, None] + torch.arange(
            self.sequence_length, device=self.device
        )
        return frames[envs[:, None], steps]

    def _encode(self, flat_frames: Tensor, extractor: nn.Module) -> Tensor:
        # The policy's own path (observation preprocessing, e.g. uint8 -> [0, 1]) with the given extractor.
        return self.policy._features({self.contrastive_key: flat_frames}, extractor)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ training
    def train(self) -> None:
        """One PPO update over the rollout buffer; each minibatch loss also gets the contrastive term."""
        self.policy.set_training_mode(True)
        use_aux = self.contrastive_coef > 0
        optimizers = [self.policy.optimizer] + ([self.contrastive_optimizer] if use_aux else [])
        self._update_learning_rate(optimizers)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        clip_range_vf = None
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        if use_aux:
            frames, env_idx, step_idx = self._rollout_frames()

        pg_losses, value_losses, entropy_losses, clip_fractions, approx_kls = [], [], [], [], []
        aux_losses, aux_accuracies = [], []
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kls = []
            for batch in self.rollout_buffer.get(self.batch_size):
                actions = batch.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = actions.long().flatten()
                values, log_prob, entropy = self.policy.evaluate_actions(batch.observations, actions)
                values = values.flatten()

                advantages = batch.advantages
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                ratio = torch.exp(log_prob - batch.old_log_prob)
                policy_loss = -torch.min(
                    advantages * ratio, advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
                ).mean()
                if clip_range_vf is None:
                    values_pred = values
                else:
                    values_pred = batch.old_values + torch.clamp(
                        values - batch.old_values, -clip_range_vf, clip_range_vf
                    )
                value_loss = F.mse_loss(batch.returns, values_pred)
                entropy_loss = -torch.mean(-log_prob) if entropy is None else -torch.mean(entropy)
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

                if use_aux:
                    sequences = self._sample_sequences(frames, env_idx, step_idx)
                    aux = self.contrastive(
                        sequences, self.policy.features_extractor, self._encode, generator=self._mask_generator
                    )
                    loss = loss + self.contrastive_coef * aux.loss
                    aux_losses.append(aux.loss.item())
                    aux_accuracies.append(aux.accuracy.item())

                pg_losses.append(policy_loss.item())
                value_losses.append(value_loss.item())
                entropy_losses.append(entropy_loss.item())
                clip_fractions.append(torch.mean((torch.abs(ratio - 1) > clip_range).float()).item())
                with torch.no_grad():
                    log_ratio = log_prob - batch.old_log_prob
                    approx_kl = torch.mean((torch.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                approx_kls.append(approx_kl)
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl:.2f}")
                    break

                # One backward pass for both losses; each optimiser clips and steps its own parameters.
                for optimizer in optimizers:
                    optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
                if use_aux:
                    nn.utils.clip_grad_norm_(self.contrastive_optimizer.param_groups[0]["params"], self.max_grad_norm)
                    self.contrastive_optimizer.step()
                    self.contrastive.update_keys(self.policy.features_extractor, self.momentum)
            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kls))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if aux_losses:
            self.logger.record("train/contrastive_loss", np.mean(aux_losses))
            self.logger.record("train/contrastive_accuracy", np.mean(aux_accuracies))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
