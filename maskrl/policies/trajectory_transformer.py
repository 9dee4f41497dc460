"""A small GPT-style transformer over interleaved observation/action tokens ``o1 a1 o2 a2 ... oK``.

This is the encoder that masked trajectory pretraining (:mod:`maskrl.representation`) trains and that fine-tuning
reuses as an SB3 features extractor (:mod:`maskrl.policies.trajectory_extractor`).

**Token layout.** A window of ``K`` observations and the ``K - 1`` actions between them is laid out as
``o1 a1 o2 a2 ... a(K-1) oK`` (``T = 2K - 1`` tokens, even positions are observations, odd are actions), the layout
of :mod:`maskrl.policies.attention_masks`. The action ``a(i)`` is the one taken at ``o(i)``, so ``o(i+1)`` is its
consequence. Ending on an observation means the same window works for pretraining and for acting, where the last
token is the current observation whose action is still to be chosen.

**Tokens.** Observations go through an MLP (:attr:`TrajectoryTransformer.obs_encoder`), discrete actions through an
embedding table, continuous ones through a linear layer. Every token gets a learned modality embedding
(observation / action) and a learned timestep embedding (its step index inside the window, ``0..K-1``).

**Attention masks** come from :mod:`maskrl.policies.attention_masks` (a boolean tensor, ``True`` = *may attend*).
The blocks are :class:`~maskrl.policies.attention_block.MaskedSelfAttentionBlock` (pre-LayerNorm, no dropout, so
that hidden positions get exactly zero gradient; GELU MLP of ``4 * d_model``), followed by a final LayerNorm.

**Files** (:func:`save_encoder`, :func:`load_encoder`): ``encoder.pt`` (the ``state_dict``) and ``encoder.json``
(the :class:`TrajectoryConfig` and what made the encoder). Encoders written by maskrl 0.1.0 load unchanged: their
block parameters are renamed (:data:`~maskrl.policies.attention_block.LEGACY_KEYS`) and their config's
``mlp_ratio`` (always 4 then) is dropped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from maskrl.checks import check_int
from maskrl.files import atomic_write
from maskrl.policies.attention_block import MaskedSelfAttentionBlock, current_key
from maskrl.policies.attention_masks import padding_attention_mask
from maskrl.untrusted import (
    MAX_WEIGHTS_BYTES,
    check_inside,
    first_line,
    load_state_dict_bytes,
    read_bytes,
    read_json,
)

__all__ = [
    "TrajectoryConfig",
    "TrajectoryTransformer",
    "interleave",
    "load_encoder",
    "save_encoder",
]

#: Hidden size of the blocks' MLPs, as a multiple of ``d_model``.
MLP_RATIO = 4


@dataclass(frozen=True)
class TrajectoryConfig:
    """Everything needed to rebuild a :class:`TrajectoryTransformer` (saved as JSON next to its weights).

    :param obs_dim: size of the flat observation vector
    :param action_dim: number of actions for discrete actions, the action vector's size for continuous ones
    :param discrete: discrete actions (embedding table) or continuous ones (linear embedding)
    :param max_window: largest number of observations ``K`` per window (size of the timestep embedding)
    :param d_model: token width
    :param n_layers: number of transformer blocks
    :param n_heads: attention heads per block (must divide ``d_model``)
    """

    obs_dim: int
    action_dim: int
    discrete: bool = True
    max_window: int = 4
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 2

    def __post_init__(self) -> None:
        for name in ("obs_dim", "action_dim", "max_window", "d_model", "n_layers", "n_heads"):
            check_int(name, getattr(self, name), 1)
        if not isinstance(self.discrete, bool):
            raise ValueError(f"discrete must be a bool, got {self.discrete!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TrajectoryConfig:
        """Rebuild from :meth:`to_dict`'s output; unknown or missing keys are a one-line ``ValueError``.

        A maskrl 0.1.0 config also holds ``"mlp_ratio": 4`` (the only width there is): it is dropped.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a trajectory model config must be a mapping, got {type(data).__name__}")
        if "mlp_ratio" in data:
            data = dict(data)
            if data.pop("mlp_ratio") != MLP_RATIO:
                raise ValueError(f"trajectory models have mlp_ratio {MLP_RATIO} only")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown trajectory model config keys: {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as error:
            raise ValueError(f"bad trajectory model config: {error}") from None


def interleave(obs_tokens: Tensor, action_tokens: Tensor) -> Tensor:
    """Lay out ``(B, K, D)`` observation tokens and ``(B, K - 1, D)`` action tokens as ``o1 a1 ... a(K-1) oK``.

    :return: ``(B, 2K - 1, D)``
    """
    B, K, D = obs_tokens.shape
    if action_tokens.shape != (B, K - 1, D):
        raise ValueError(f"expected {K - 1} action tokens of shape {(B, K - 1, D)}, got {tuple(action_tokens.shape)}")
    tokens = obs_tokens.new_empty(B, 2 * K - 1, D)
    tokens[:, 0::2] = obs_tokens
    tokens[:, 1::2] = action_tokens
    return tokens


class TrajectoryTransformer(nn.Module):
    """GPT-style encoder of ``o1 a1 ... a(K-1) oK`` windows (see the module's docstring).

    :param config: the architecture
    """

    def __init__(self, config: TrajectoryConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        #: The observation MLP.
        self.obs_encoder = nn.Sequential(nn.Linear(config.obs_dim, d), nn.GELU(), nn.Linear(d, d))
        if config.discrete:
            self.action_embedding: nn.Module = nn.Embedding(config.action_dim, d)
        else:
            self.action_embedding = nn.Linear(config.action_dim, d)
        self.modality_embedding = nn.Embedding(2, d)
        self.timestep_embedding = nn.Embedding(config.max_window, d)
        self.blocks = nn.ModuleList(
            MaskedSelfAttentionBlock(d, config.n_heads, MLP_RATIO) for _ in range(config.n_layers)
        )
        self.ln_final = nn.LayerNorm(d)
        self.apply(self._init_weights)
        for block in self.blocks:
            block.init_like_multihead_attention()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2 style small init keeps the residual stream well scaled at the start (but for the attention's qkv
        # projection, initialised as nn.MultiheadAttention does: see __init__).
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    # ----------------------------------------------------------------------------------------- tokens

    def embed_actions(self, actions: Tensor) -> Tensor:
        """Action embeddings (no position/modality yet): ``(B, n)`` int indices or ``(B, n, action_dim)`` floats."""
        if self.config.discrete:
            return self.action_embedding(actions.long())
        return self.action_embedding(actions.float())

    def tokenize(self, observations: Tensor, actions: Tensor) -> Tensor:
        """Embed a window and lay it out as ``o1 a1 ... oK``, without modality/timestep embeddings.

        :param observations: ``(B, K, obs_dim)``
        :param actions: ``(B, K - 1)`` action indices (discrete) or ``(B, K - 1, action_dim)`` (continuous)
        :return: ``(B, 2K - 1, d_model)``
        """
        if observations.ndim != 3 or observations.shape[-1] != self.config.obs_dim:
            raise ValueError(
                f"observations must have shape (B, K, {self.config.obs_dim}), got {tuple(observations.shape)}"
            )
        window = observations.shape[1]
        if window > self.config.max_window:
            raise ValueError(f"window of {window} observations exceeds the model's max_window {self.config.max_window}")
        return interleave(self.obs_encoder(observations.float()), self.embed_actions(actions))

    def add_embeddings(self, tokens: Tensor) -> Tensor:
        """Add the modality and timestep embeddings to ``(B, 2K - 1, d)`` interleaved tokens."""
        T = tokens.shape[1]
        position = torch.arange(T, device=tokens.device)
        modality = self.modality_embedding(position % 2)  # even = observation, odd = action
        timestep = self.timestep_embedding(position // 2)  # a(i) shares o(i)'s step index
        return tokens + modality + timestep

    def encode(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Run the blocks over already embedded tokens (after :meth:`add_embeddings`).

        :param tokens: ``(B, T, d_model)``
        :param mask: ``(T, T)`` or ``(B, T, T)`` boolean, ``True`` = may attend
        :return: ``(B, T, d_model)`` after the final LayerNorm
        """
        x = tokens
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_final(x)

    def forward(self, observations: Tensor, actions: Tensor, mask: Tensor, token_valid: Tensor | None = None) -> Tensor:
        """Encode a window.

        :param observations: ``(B, K, obs_dim)``
        :param actions: ``(B, K - 1)`` or ``(B, K - 1, action_dim)``
        :param mask: ``(2K - 1, 2K - 1)`` boolean attention mask, ``True`` = may attend
        :param token_valid: optional ``(B, 2K - 1)`` boolean; padding tokens are hidden from the others
        :return: ``(B, 2K - 1, d_model)``
        """
        tokens = self.add_embeddings(self.tokenize(observations, actions))
        if token_valid is not None:
            mask = padding_attention_mask(mask, token_valid)
        return self.encode(tokens, mask)


# --------------------------------------------------------------------------------------------- files

ENCODER_WEIGHTS = "encoder.pt"
ENCODER_CONFIG = "encoder.json"
#: Largest encoder.json read (it holds the architecture and a few metrics: about 2 kB).
MAX_ENCODER_CONFIG_BYTES = 1 << 20


def save_encoder(encoder: TrajectoryTransformer, folder: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``encoder.pt`` (its ``state_dict``) and ``encoder.json`` (its config plus ``extra``) into ``folder``.

    Both are written atomically; the JSON last, so a folder with an ``encoder.json`` has complete weights.

    :return: the weights' path
    """
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / ENCODER_WEIGHTS
    state = {key: value.detach().cpu().clone() for key, value in encoder.state_dict().items()}
    atomic_write(weights, lambda file: torch.save(state, file))
    info = {"config": encoder.config.to_dict(), **(extra or {})}
    atomic_write(folder / ENCODER_CONFIG, lambda file: file.write(json.dumps(info, indent=1).encode()))
    return weights


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> tuple[TrajectoryTransformer, dict]:
    """Rebuild a pretrained encoder from a folder written by :func:`save_encoder` (or its ``encoder.pt``).

    The folder may come from someone else, so it is read as hostile (:mod:`maskrl.untrusted`): neither file may be
    a symlink leading out of it, ``encoder.json`` is size-bounded, the weights are read with
    ``torch.load(weights_only=True)`` (tensors only, nothing unpickled) after their zip directory is checked, and the
    architecture ``encoder.json`` declares is built on the ``meta`` device (no memory) and compared with the weights
    before it is built for real, so a config declaring a huge network fails instead of exhausting memory.

    :return: the encoder and the content of ``encoder.json``
    :raises ValueError: in one line, for a missing folder or file, a bad config or weights that do not fit
    """
    path = Path(path)
    folder = path.parent if path.name == ENCODER_WEIGHTS and path.is_file() else path
    weights, config_path = folder / ENCODER_WEIGHTS, folder / ENCODER_CONFIG
    if not weights.is_file() or not config_path.is_file():
        raise ValueError(f"no pretrained encoder at {path} (expected {ENCODER_WEIGHTS} and {ENCODER_CONFIG})")
    check_inside(config_path, folder, ENCODER_CONFIG)
    check_inside(weights, folder, ENCODER_WEIGHTS)
    info = read_json(config_path, ENCODER_CONFIG, MAX_ENCODER_CONFIG_BYTES)
    if not isinstance(info, dict):
        raise ValueError(f"{config_path} is not a JSON object")
    config = TrajectoryConfig.from_dict(info.get("config"))
    state = load_state_dict_bytes(read_bytes(weights, MAX_WEIGHTS_BYTES, ENCODER_WEIGHTS), str(weights), device)
    # Checked before anything is built, even on the meta device: the layer count must match the weights'.
    n_blocks = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    if config.n_layers != n_blocks:
        raise ValueError(
            f"the weights in {weights} do not fit its {ENCODER_CONFIG}: n_layers {config.n_layers}, {n_blocks} blocks"
        )
    state = {_current_key(key): value for key, value in state.items()}  # maskrl 0.1.0 names -> today's
    try:
        with torch.device("meta"):
            expected = {key: value.shape for key, value in TrajectoryTransformer(config).state_dict().items()}
    except (RuntimeError, TypeError, ValueError, OverflowError) as error:  # sizes torch cannot even describe
        raise ValueError(f"bad architecture in {config_path}: {first_line(error)}") from None
    if expected != {key: value.shape for key, value in state.items()}:
        differing = sorted(set(expected) ^ set(state)) or [k for k in expected if expected[k] != state[k].shape]
        raise ValueError(f"the weights in {weights} do not fit its {ENCODER_CONFIG}: {differing[0]} differs")
    encoder = TrajectoryTransformer(config)
    encoder.load_state_dict(state, strict=True)
    return encoder.to(device), info


def _current_key(key: str) -> str:
    """Today's name of an encoder ``state_dict`` key (block parameters were renamed after maskrl 0.1.0)."""
    parts = key.split(".", 2)
    if parts[0] != "blocks" or len(parts) < 3:
        return key
    return f"blocks.{parts[1]}.{current_key(parts[2])}"
