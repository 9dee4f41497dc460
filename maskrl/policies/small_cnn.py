"""A tiny CNN features extractor for small images (SB3's ``NatureCNN`` needs at least 36 x 36 pixels).

Made for grid worlds drawn with a few pixels per cell (e.g. ``maskrl/PandaGridImage-v0``, 24 x 24 at 3 px per
cell): the first convolution has kernel = stride = ``cell_px``, so it embeds each cell on its own; the second mixes
neighbouring cells; a linear layer gives ``features_dim`` features.
"""

from __future__ import annotations

import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

__all__ = ["SmallCNN"]


class SmallCNN(BaseFeaturesExtractor):
    """Conv(k=cell_px, s=cell_px) -> ReLU -> Conv(3x3) -> ReLU -> Linear -> ReLU, over a channel-first image.

    Takes either the image ``Box`` itself or a ``Dict`` holding it under ``image_key`` as its only key (what
    :class:`~maskrl.policies.MaskedMultiInputPolicy` passes once it has popped ``"action_mask"``). Images must be
    channel-first here (SB3 transposes channel-last image spaces before the policy is built), and the policy
    scales uint8 images to ``[0, 1]`` before they get here.

    :param observation_space: channel-first image ``Box``, or a ``Dict`` with it under ``image_key``.
    :param features_dim: output size.
    :param cell_px: kernel size and stride of the first convolution (pixels per grid cell).
    :param channels: output channels of the two convolutions.
    :param second_stride: stride of the second convolution (2 shrinks the linear layer for larger images).
    :param image_key: the image's key when ``observation_space`` is a ``Dict``.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        features_dim: int = 64,
        cell_px: int = 3,
        channels: tuple[int, int] = (16, 32),
        second_stride: int = 1,
        image_key: str = "observation",
    ) -> None:
        self.image_key: str | None = None
        if isinstance(observation_space, spaces.Dict):
            if list(observation_space.spaces) != [image_key]:
                raise ValueError(
                    f"SmallCNN takes a Dict with the single key '{image_key}', got {list(observation_space.spaces)}"
                )
            self.image_key = image_key
            image_space = observation_space[image_key]
        else:
            image_space = observation_space
        if not isinstance(image_space, spaces.Box) or len(image_space.shape) != 3:
            raise ValueError(f"SmallCNN needs a (C, H, W) image Box, got {image_space}")
        if is_image_space(image_space, check_channels=False) and image_space.shape[0] > image_space.shape[2]:
            raise ValueError(f"SmallCNN needs a channel-first image, got shape {image_space.shape}")
        c, h, w = image_space.shape
        if min(h, w) < cell_px + 2 * cell_px:
            raise ValueError(f"image {h}x{w} is too small for SmallCNN with cell_px={cell_px} (needs >= {3 * cell_px})")
        super().__init__(observation_space, features_dim)
        self.cnn = nn.Sequential(
            nn.Conv2d(c, channels[0], kernel_size=cell_px, stride=cell_px),
            nn.ReLU(),
            nn.Conv2d(channels[0], channels[1], kernel_size=3, stride=second_stride),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.cnn(torch.zeros(1, c, h, w)).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())

    def forward(self, observations: Tensor | dict[str, Tensor]) -> Tensor:
        image = observations[self.image_key] if self.image_key is not None else observations
        assert isinstance(image, Tensor)
        return self.linear(self.cnn(image))
