"""SB3 features extractor that runs a (pretrained) trajectory transformer over a window of recent steps.

The last stage of the representation pipeline (:mod:`maskrl.representation`). Use it with
:class:`maskrl.representation.window.TrajectoryWindow` and the masked PPO policy::

    env = TrajectoryWindow(make_masked_env("maskrl/Kart-v0"), window=4)
    policy_kwargs = dict(
        features_extractor_class=TrajectoryExtractor,
        features_extractor_kwargs=dict(pretrained="runs/pretrain", frozen=True),
    )
    model = PPO(MaskedMultiInputPolicy, env, policy_kwargs=policy_kwargs)

The window's ``K`` slots become the tokens ``o1 a1 o2 ... oK`` (slot ``i``'s observation, then slot ``i + 1``'s
previous action, which was taken at ``o(i)``), the layout the encoder was pretrained on. Padding slots at an episode's
start are hidden from the other tokens (:func:`~maskrl.policies.attention_masks.padding_attention_mask`). The
features are the encoder's output at the last token, the current observation ``oK``, which under causal attention
(:func:`~maskrl.policies.attention_masks.causal_mask`) has seen the whole window.

SB3's orthogonal re-initialisation of the features extractor (``ortho_init``) is skipped for the encoder (see
:meth:`TrajectoryExtractor.apply`), so pretrained weights survive the policy's construction.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

from maskrl.masks import WINDOW_ACTIONS_KEY, WINDOW_OBSERVATIONS_KEY, WINDOW_VALID_KEY
from maskrl.policies.attention_masks import causal_mask, trajectory_token_valid
from maskrl.policies.trajectory_transformer import TrajectoryConfig, TrajectoryTransformer, load_encoder

__all__ = ["TrajectoryExtractor"]


class TrajectoryExtractor(BaseFeaturesExtractor):
    """Encode the :class:`~maskrl.representation.window.TrajectoryWindow` keys with a :class:`TrajectoryTransformer`.

    :param observation_space: ``Dict`` with ``window_observations``, ``window_actions`` and ``window_valid``
        (other keys are ignored)
    :param pretrained: folder (or ``encoder.pt``) written by ``python -m maskrl.representation.pretrain``; ``None``
        builds a randomly initialised encoder from the architecture arguments below (the from-scratch baseline). The
        folder may come from someone else: it is read by
        :func:`~maskrl.policies.trajectory_transformer.load_encoder`, which unpickles nothing and refuses symlinks
        leading out of it, oversized files and architectures its weights do not match (``docs/safe_loading.md``)
    :param frozen: keep the encoder's weights fixed (no gradient reaches them)
    :param d_model: token width, for ``pretrained=None``
    :param n_layers: number of blocks, for ``pretrained=None``
    :param n_heads: attention heads, for ``pretrained=None``
    :raises ValueError: for a space without the window keys, or a pretrained encoder that does not fit it
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        pretrained: str | Path | None = None,
        frozen: bool = False,
        d_model: int = 32,
        n_layers: int = 2,
        n_heads: int = 2,
    ) -> None:
        missing = [
            key
            for key in (WINDOW_OBSERVATIONS_KEY, WINDOW_ACTIONS_KEY, WINDOW_VALID_KEY)
            if not isinstance(observation_space, spaces.Dict) or key not in observation_space.spaces
        ]
        if missing:
            raise ValueError(
                f"TrajectoryExtractor needs the TrajectoryWindow keys; missing: {', '.join(missing)} "
                "(wrap the env in maskrl.representation.window.TrajectoryWindow)"
            )
        window, obs_dim = observation_space[WINDOW_OBSERVATIONS_KEY].shape
        action_space = observation_space[WINDOW_ACTIONS_KEY]
        discrete = len(action_space.shape) == 1
        action_dim = int(action_space.high.max()) + 1 if discrete else int(action_space.shape[1])
        if pretrained is None:
            config = TrajectoryConfig(obs_dim, action_dim, discrete, window, d_model, n_layers, n_heads)
            encoder = TrajectoryTransformer(config)
        else:
            encoder, _ = load_encoder(pretrained)
            config = encoder.config
            expected = (obs_dim, action_dim, discrete)
            if (config.obs_dim, config.action_dim, config.discrete) != expected or config.max_window < window:
                raise ValueError(
                    f"the pretrained encoder at {pretrained} takes obs_dim {config.obs_dim}, action_dim "
                    f"{config.action_dim}, discrete {config.discrete}, windows up to {config.max_window}, but the env "
                    f"gives obs_dim {obs_dim}, action_dim {action_dim}, discrete {discrete}, window {window}"
                )
        super().__init__(observation_space, features_dim=config.d_model)
        self.encoder = encoder
        self.frozen = frozen
        self.window = window
        self.discrete = discrete
        self.register_buffer("attention_mask", causal_mask(2 * window - 1), persistent=False)
        if frozen:
            self.encoder.requires_grad_(False)

    def apply(self, fn: Callable[[nn.Module], None]) -> TrajectoryExtractor:
        """``nn.Module.apply`` on everything but the encoder.

        SB3's ``ActorCriticPolicy`` (with its default ``ortho_init=True``) re-initialises every ``Linear`` layer of
        the features extractor orthogonally, through ``apply``, after building it: that would silently overwrite the
        pretrained weights (and give the from-scratch encoder a different, much larger init than pretraining used).
        The encoder therefore keeps its weights: the pretrained ones, or its own GPT-style init.
        """
        for child in self.children():
            if child is not self.encoder:
                child.apply(fn)
        fn(self)
        return self

    def forward(self, observations: dict[str, Tensor]) -> Tensor:
        obs = observations[WINDOW_OBSERVATIONS_KEY]
        # SB3's preprocessing turned the integer actions and the validity into floats.
        actions = observations[WINDOW_ACTIONS_KEY][:, 1:]
        actions = actions.round().long() if self.discrete else actions
        token_valid = trajectory_token_valid(observations[WINDOW_VALID_KEY])
        if self.frozen:
            with torch.no_grad():
                return self.encoder(obs, actions, self.attention_mask, token_valid)[:, -1]
        return self.encoder(obs, actions, self.attention_mask, token_valid)[:, -1]
