"""GridNet: grid-wise control with a convolutional encoder-decoder (Han et al., ICML 2019).

The observation is a ``Dict``: a feature map ``"grid"`` ``(C, H, W)``, the ``"agent_mask"`` ``(H, W)``
(1 where an agent stands) and optionally a per-cell ``"action_mask"`` ``(A, H, W)``. The action space is
``MultiDiscrete([A] * (H * W))``, the grid of actions flattened row-major, which is how SB3 stores it. The
policy outputs one action distribution per cell (:class:`~maskrl.policies.distributions.CategoricalMap`);
the agent mask makes the joint log-probability and the entropy count only the cells that hold an agent,
so unchanged SB3 ``PPO``/``A2C`` train it.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from maskrl.masks import ACTION_MASK_KEY, AGENT_MASK_KEY, GRID_KEY
from maskrl.policies.sb3_distributions import CategoricalMapDistribution, own_actions_log_prob

# SB3 ActorCriticPolicy arguments GridNet has no use for, with the only value it accepts (PPO passes use_sde).
_FIXED_SB3_KWARGS: dict[str, Any] = {
    "net_arch": None,
    "use_sde": False,
    "squash_output": False,
    "features_extractor_class": None,
    "features_extractor_kwargs": None,
    "share_features_extractor": True,
}
_IGNORED_SB3_KWARGS = ("log_std_init", "full_std", "use_expln")  # only meaningful with use_sde


def grid_spaces(
    observation_space: spaces.Space, action_space: spaces.Space, need_agent_mask: bool = True
) -> tuple[int, int, int, int]:
    """Check GridNet's observation and action spaces and return ``(C, A, H, W)``.

    :param observation_space: ``Dict`` with ``"grid"`` ``(C, H, W)``, ``"agent_mask"`` ``(H, W)`` and
        optionally ``"action_mask"`` ``(A, H, W)``
    :param action_space: ``MultiDiscrete([A] * (H * W))``
    :param need_agent_mask: require the ``"agent_mask"`` key
    :raises ValueError: if a space is missing or its shape does not fit the others
    """
    if not isinstance(observation_space, spaces.Dict) or GRID_KEY not in observation_space.spaces:
        raise ValueError(
            f"GridNetPolicy needs a Dict observation space with a '{GRID_KEY}' key, got {observation_space}"
        )
    grid = observation_space[GRID_KEY]
    if not isinstance(grid, spaces.Box) or len(grid.shape) != 3:
        raise ValueError(f"'{GRID_KEY}' must be a Box of shape (C, H, W), got {grid}")
    channels, height, width = grid.shape
    if not isinstance(action_space, spaces.MultiDiscrete) or action_space.nvec.shape != (height * width,):
        raise ValueError(
            f"GridNetPolicy needs the action space MultiDiscrete([A] * (H * W)) with H * W = {height * width} "
            f"(grid {height}x{width}, row-major), got {action_space}"
        )
    n_actions = int(action_space.nvec[0])
    if (action_space.nvec != n_actions).any():
        raise ValueError(f"every cell must have the same number of actions, got nvec {action_space.nvec.tolist()}")
    expected = {AGENT_MASK_KEY: (height, width), ACTION_MASK_KEY: (n_actions, height, width)}
    for key, shape in expected.items():
        if key in observation_space.spaces and observation_space[key].shape != shape:
            raise ValueError(f"'{key}' has shape {observation_space[key].shape}, expected {shape}")
    if need_agent_mask and AGENT_MASK_KEY not in observation_space.spaces:
        raise ValueError(f"the observation has no '{AGENT_MASK_KEY}' key (or pass use_agent_mask=False)")
    return channels, n_actions, height, width


def _conv_stack(
    in_channels: int, channels: tuple[int, ...], kernel_size: int, activation_fn: type[nn.Module]
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for out_channels in channels:
        # padding = k // 2 with an odd k keeps H and W, so cell (y, x) of the output is cell (y, x) of the input
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2), activation_fn()]
        in_channels = out_channels
    return nn.Sequential(*layers)


class GridEncoder(BaseFeaturesExtractor):
    """Same-resolution convolutions over ``obs["grid"]``, giving a ``(B, channels[-1], H, W)`` feature map.

    :param observation_space: GridNet's ``Dict`` observation space
    :param channels: output channels of each convolution
    :param kernel_size: odd kernel size (padding keeps the grid size)
    :param activation_fn: activation after each convolution
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        channels: tuple[int, ...] = (32, 64),
        kernel_size: int = 3,
        activation_fn: type[nn.Module] = nn.ReLU,
    ):
        super().__init__(observation_space, features_dim=channels[-1])
        self.convs = _conv_stack(observation_space[GRID_KEY].shape[0], channels, kernel_size, activation_fn)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return self.convs(grid)


class GridNetPolicy(ActorCriticPolicy):
    """Actor-critic for grid-wise control: a conv encoder-decoder gives one action distribution per cell.

    Architecture (all convolutions keep ``H x W``, so no striding, pooling or transposed convolution is needed
    and cell ``(y, x)`` of the logit map belongs to the agent at ``(y, x)``):

    * encoder: one ``kernel_size`` convolution per entry of ``channels`` over ``obs["grid"]``;
    * decoder: the encoder's channels in reverse order (``channels[-2::-1]``, at least one layer), then a 1x1
      convolution to the ``A`` logits of each cell;
    * value head: mean- and max-pooling of the encoder's map over the grid, concatenated, then an MLP with one
      hidden layer of ``value_hidden`` units.

    With ``ortho_init``, SB3's orthogonal initialisation: gain sqrt(2) for the hidden layers, 0.01 for the
    logit convolution and 1 for the value output.

    The agent mask ``obs["agent_mask"]`` selects the cells whose actions count in the log-probability (sum over
    agents) and the entropy (mean over agents); ``obs["action_mask"]``, if present, masks each cell's actions.
    Actions of empty cells are 0.

    :param observation_space: ``Dict`` with ``"grid"`` ``(C, H, W)`` (Box), ``"agent_mask"`` ``(H, W)`` and
        optionally ``"action_mask"`` ``(A, H, W)`` (MultiBinary or int8 Box)
    :param action_space: ``MultiDiscrete([A] * (H * W))``, the grid of actions flattened row-major
    :param lr_schedule: learning-rate schedule
    :param channels: channels of the encoder's convolutions
    :param kernel_size: odd kernel size of the encoder and decoder convolutions
    :param value_hidden: hidden units of the value MLP
    :param activation_fn: activation of the hidden layers
    :param ortho_init: orthogonal initialisation as in SB3
    :param use_agent_mask: ``False`` is the ablation "the same network without the agent mask": every cell counts
        in the log-probability and the entropy. Empty cells then get every action valid (their action-mask rows
        may be empty) and their sampled actions are ignored by the env; the agent mask is still read for that
        when the observation has it.
    :param normalize_images: as in SB3 (divides a uint8 image grid by 255)
    :param optimizer_class: optimiser
    :param optimizer_kwargs: optimiser arguments other than the learning rate
    :raises ValueError: on unfit spaces, an even kernel size, or an SB3 option GridNet does not support
        (e.g. ``net_arch``)
    """

    action_dist: CategoricalMapDistribution  # type: ignore[assignment]

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.MultiDiscrete,
        lr_schedule: Schedule,
        channels: tuple[int, ...] | list[int] = (32, 64),
        kernel_size: int = 3,
        value_hidden: int = 64,
        activation_fn: type[nn.Module] = nn.ReLU,
        ortho_init: bool = True,
        use_agent_mask: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        **sb3_kwargs: Any,
    ):
        for key, value in sb3_kwargs.items():
            if key in _FIXED_SB3_KWARGS:
                if value != _FIXED_SB3_KWARGS[key]:
                    raise ValueError(
                        f"GridNetPolicy does not support {key}={value!r}: it builds its own conv encoder-decoder "
                        "and value head (set channels, kernel_size, value_hidden instead)"
                    )
            elif key not in _IGNORED_SB3_KWARGS:
                raise TypeError(f"GridNetPolicy got an unexpected keyword argument {key!r}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd so the convolutions keep the grid size, got {kernel_size}")
        if len(channels) == 0:
            raise ValueError("channels must hold at least one entry")
        self.use_agent_mask = use_agent_mask
        self.grid_shape = grid_spaces(observation_space, action_space, need_agent_mask=use_agent_mask)
        self.channels = tuple(int(c) for c in channels)
        self.kernel_size = int(kernel_size)
        self.value_hidden = int(value_hidden)
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            activation_fn=activation_fn,
            ortho_init=ortho_init,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )

    def make_features_extractor(self) -> BaseFeaturesExtractor:
        return GridEncoder(self.observation_space, self.channels, self.kernel_size, self.activation_fn)

    def _build(self, lr_schedule: Schedule) -> None:
        # Replaces SB3's mlp_extractor/action_net/value_net building: the action head is convolutional.
        _, n_actions, height, width = self.grid_shape
        self.action_dist = CategoricalMapDistribution(n_actions, height, width)
        decoder_channels = self.channels[-2::-1] or self.channels[-1:]
        self.decoder = _conv_stack(self.channels[-1], decoder_channels, self.kernel_size, self.activation_fn)
        self.action_net = self.action_dist.proba_distribution_net(decoder_channels[-1])
        self.value_mlp = nn.Sequential(nn.Linear(2 * self.channels[-1], self.value_hidden), self.activation_fn())
        self.value_net = nn.Linear(self.value_hidden, 1)
        if self.ortho_init:
            gains = {
                self.features_extractor: 2**0.5,
                self.decoder: 2**0.5,
                self.value_mlp: 2**0.5,
                self.action_net: 0.01,
                self.value_net: 1.0,
            }
            for module, gain in gains.items():
                module.apply(lambda m, gain=gain: self.init_weights(m, gain=gain))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        # BasePolicy's (spaces, normalize_images), not ActorCriticPolicy's: those name arguments GridNet rejects.
        data = BasePolicy._get_constructor_parameters(self)
        data.update(
            lr_schedule=self._dummy_schedule,
            channels=self.channels,
            kernel_size=self.kernel_size,
            value_hidden=self.value_hidden,
            activation_fn=self.activation_fn,
            ortho_init=self.ortho_init,
            use_agent_mask=self.use_agent_mask,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )
        return data

    def _encode(self, obs: PyTorchObs) -> torch.Tensor:
        assert isinstance(obs, dict), f"GridNetPolicy takes Dict observations, got {type(obs)}"
        grid_space = self.observation_space[GRID_KEY]  # type: ignore[index]
        grid = preprocess_obs(obs[GRID_KEY], grid_space, normalize_images=self.normalize_images)
        return self.features_extractor(grid)

    def _values(self, encoding: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([encoding.mean(dim=(2, 3)), encoding.amax(dim=(2, 3))], dim=1)
        return self.value_net(self.value_mlp(pooled))

    def _distribution(self, encoding: torch.Tensor, obs: PyTorchObs) -> CategoricalMapDistribution:
        assert isinstance(obs, dict)
        logits = self.action_net(self.decoder(encoding))
        # The masks are read raw (not through preprocess_obs, which would turn them into floats).
        agent_mask = obs.get(AGENT_MASK_KEY)
        action_mask = obs.get(ACTION_MASK_KEY)
        if agent_mask is not None and not self.use_agent_mask:
            if action_mask is not None:
                # Ablation: every cell counts, so empty cells must have a valid action; give them all of them.
                action_mask = action_mask.bool() | ~agent_mask.bool().unsqueeze(1)
            agent_mask = None
        return self.action_dist.proba_distribution(logits, agent_mask, action_mask)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        encoding = self._encode(obs)
        distribution = self._distribution(encoding, obs)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions, self._values(encoding), own_actions_log_prob(distribution, actions)

    def evaluate_actions(
        self, obs: PyTorchObs, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        encoding = self._encode(obs)
        distribution = self._distribution(encoding, obs)
        return self._values(encoding), distribution.log_prob(actions), distribution.entropy()

    def get_distribution(self, obs: PyTorchObs) -> CategoricalMapDistribution:  # type: ignore[override]
        return self._distribution(self._encode(obs), obs)

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        return self._values(self._encode(obs))

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> torch.Tensor:
        return self.get_distribution(observation).get_actions(deterministic=deterministic)
