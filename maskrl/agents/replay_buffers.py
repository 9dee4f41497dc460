"""The replay buffer of the masked DQN and QR-DQN: SB3's ``DictReplayBuffer`` specialised to the mask contract.

A masked env's observation is a ``Dict`` of ``"action_mask"`` and, most often, one ``Box`` of features (see
:mod:`maskrl.masks`). SB3's ``DictReplayBuffer`` treats every key alike: per key and per side (observation, next
observation) an array, an extra copy when adding, a gather and a tensor copy when sampling, eight gathers and copies
for one minibatch where a ``Box`` observation takes two. :class:`MaskedReplayBuffer` keeps each transition's
observation and next observation side by side in one features array and one mask array, so that a minibatch is one
gather per array, wrapped as tensors without another copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from maskrl.masks import ACTION_MASK_KEY


def lone_feature_key(observation_space: spaces.Space) -> str | None:
    """The feature key of a ``Dict`` observation made of ``"action_mask"`` and one ``Box`` of features, else ``None``.

    :param observation_space: the env's observation space
    """
    if not isinstance(observation_space, spaces.Dict) or ACTION_MASK_KEY not in observation_space.spaces:
        return None
    others = [key for key in observation_space.spaces if key != ACTION_MASK_KEY]
    if len(others) != 1 or not isinstance(observation_space[others[0]], spaces.Box):
        return None
    return others[0]


class MaskedReplayBuffer(DictReplayBuffer):
    """``DictReplayBuffer`` storing ``"action_mask"`` + one ``Box`` of features in two arrays: the default buffer of
    :class:`~maskrl.agents.dqn.MaskedDQN` and :class:`~maskrl.agents.dqn.MaskedQRDQN`.

    Takes ``DictReplayBuffer``'s arguments (and, like it, refuses ``optimize_memory_usage``). For such an
    observation space, the features of a transition's observation and next observation are stored side by side in
    :attr:`features` ``(buffer_size, n_envs, 2, *feature_shape)``, the masks in :attr:`masks`
    ``(buffer_size, n_envs, 2, *mask_shape)`` as **bool** (the contract's int8 0/1: nonzero is valid). A minibatch
    is one gather per array, turned into tensors without a copy; its masks are bool tensors, which the masked
    networks would cast them to anyway. ``observations`` and ``next_observations`` are still
    ``DictReplayBuffer``'s per-key dicts, as views of the two arrays, so code that reads or writes them works
    unchanged.

    Any other observation space (several feature keys, a ``Discrete`` one, no mask) is stored and sampled as
    ``DictReplayBuffer`` does, and so is a minibatch sampled with a ``VecNormalize`` env (which normalises per key).
    With the same numpy seed, the minibatches are those ``DictReplayBuffer`` draws.
    """

    #: the key of the features, or ``None`` when the buffer stores and samples as ``DictReplayBuffer``
    feature_key: str | None
    #: ``(buffer_size, n_envs, 2, *feature_shape)``: the observation's features at ``[..., 0, :]``, the next's at 1
    features: np.ndarray
    #: bool ``(buffer_size, n_envs, 2, *mask_shape)``: the observation's mask at ``[..., 0, :]``, the next's at 1
    masks: np.ndarray

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
    ) -> None:
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
        )
        self.feature_key = lone_feature_key(observation_space)
        if self.feature_key is None:
            return
        # The per-key arrays DictReplayBuffer allocated are replaced before anything is written to them (np.zeros
        # does not touch their pages, so they never used memory).
        feature_space = observation_space[self.feature_key]
        mask_shape = observation_space[ACTION_MASK_KEY].shape
        self.features = np.zeros((self.buffer_size, self.n_envs, 2, *feature_space.shape), dtype=feature_space.dtype)
        self.masks = np.zeros((self.buffer_size, self.n_envs, 2, *mask_shape), dtype=bool)
        self._set_views()

    def _set_views(self) -> None:
        """Point ``observations`` and ``next_observations`` (in the space's key order) at the two arrays."""
        assert self.feature_key is not None
        arrays = {self.feature_key: self.features, ACTION_MASK_KEY: self.masks}
        self.observations = {key: arrays[key][:, :, 0] for key in self.obs_shape}
        self.next_observations = {key: arrays[key][:, :, 1] for key in self.obs_shape}

    def add(  # type: ignore[override]
        self,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store one step of the ``n_envs`` envs, as ``DictReplayBuffer.add``.

        :param obs: the observations (each key ``(n_envs, *shape)``)
        :param next_obs: the next observations (the terminal ones where an episode ended)
        """
        if self.feature_key is None:
            super().add(obs, next_obs, action, reward, done, infos)
            return
        # Assigning copies (DictReplayBuffer copies once more before), and casts the int8 masks to bool.
        key, pos = self.feature_key, self.pos
        self.features[pos, :, 0] = obs[key]
        self.features[pos, :, 1] = next_obs[key]
        self.masks[pos, :, 0] = obs[ACTION_MASK_KEY]
        self.masks[pos, :, 1] = next_obs[ACTION_MASK_KEY]
        # As DictReplayBuffer: reshaped for multi-dimensional and Discrete action spaces (SB3 #970, #1392).
        self.actions[pos] = action.reshape((self.n_envs, self.action_dim))
        self.rewards[pos] = reward
        self.dones[pos] = done
        if self.handle_timeout_termination:
            self.timeouts[pos] = [info.get("TimeLimit.truncated", False) for info in infos]
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True
            self.pos = 0

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> DictReplayBufferSamples:
        if self.feature_key is None or env is not None:
            return super()._get_samples(batch_inds, env)
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        # Each gather is a new array: the tensors may share its memory (SB3's to_torch copies it again). Split into
        # observation and next observation by unbind, a third of the cost of indexing the tensor twice.
        features = self.to_torch(self.features[batch_inds, env_indices], copy=False).unbind(1)
        masks = self.to_torch(self.masks[batch_inds, env_indices], copy=False).unbind(1)
        arrays = {self.feature_key: features, ACTION_MASK_KEY: masks}
        # Only dones that are not timeouts end the bootstrap, as in DictReplayBuffer.
        dones = self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])
        return DictReplayBufferSamples(
            observations={key: arrays[key][0] for key in self.obs_shape},
            actions=self.to_torch(self.actions[batch_inds, env_indices], copy=False),
            next_observations={key: arrays[key][1] for key in self.obs_shape},
            dones=self.to_torch(dones, copy=False).reshape(-1, 1),
            rewards=self.to_torch(self.rewards[batch_inds, env_indices].reshape(-1, 1), copy=False),
        )

    def __getstate__(self) -> dict[str, Any]:
        # save_replay_buffer pickles the buffer: the per-key views would be pickled as copies of their own (twice the
        # size, and no longer views of the arrays the buffer writes to); they are made again when unpickled.
        state = self.__dict__.copy()
        if state.get("feature_key") is not None:
            del state["observations"], state["next_observations"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.feature_key is not None:
            self._set_views()


__all__ = ["MaskedReplayBuffer", "lone_feature_key"]
