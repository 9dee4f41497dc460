"""Entity self-attention features extractor with a visibility mask (OpenAI hide-and-seek style).

The observation is a set of entity tokens ``{"entities": (B, N, F), "visibility": (B, N)}``; slot 0 is
the agent itself. Each entity is embedded by one shared layer, then goes through ``n_blocks`` residual
blocks of multi-head self-attention in which hidden and padding entities can never be attended to (as
keys), and the result is the agent's own token concatenated with a masked mean over the visible entities.

Nothing depends on the slot order of entities ``1..N-1`` (no positional encoding, attention is
permutation-equivariant and the pooling is a mean), nor on the features of hidden or padding entities,
nor on how many padding slots there are.
"""

from __future__ import annotations

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from maskrl.checks import check_int
from maskrl.masks import ENTITIES_KEY, VISIBILITY_KEY
from maskrl.policies.attention_block import MaskedSelfAttentionBlock
from maskrl.policies.attention_masks import key_mask

__all__ = ["EntityAttentionExtractor"]

#: Hidden size of each block's MLP, as a multiple of ``embed_dim``.
MLP_RATIO = 2


class EntityAttentionExtractor(BaseFeaturesExtractor):
    """Masked residual self-attention over entity tokens (OpenAI hide-and-seek's entity encoder).

    Takes the ``Dict`` the masked policies hand to their features extractor (the observation without
    ``"action_mask"``), after SB3's ``preprocess_obs``:

    - ``entities``: ``(B, N, F)`` float, one row per entity slot; slot 0 is the agent's own token;
    - ``visibility``: ``(B, N)`` 0/1 (``MultiBinary`` becomes float): 1 for the entities the agent sees.
      Hidden and padding slots have visibility 0 (and, by the env's convention, all-zero rows).

    Each entity is embedded by a shared ``Linear(F, embed_dim)`` + ReLU, then passes through ``n_blocks``
    pre-LayerNorm residual blocks of multi-head self-attention
    (:class:`~maskrl.policies.attention_block.MaskedSelfAttentionBlock`, ReLU MLP of ``2 * embed_dim``) whose
    boolean attention mask (:func:`~maskrl.policies.attention_masks.key_mask`) lets every token attend only to
    visible entities; slot 0 is always treated as visible, so no query is left without a key (no NaN, even for a
    scene with nothing but the agent). A final LayerNorm follows the blocks (the pre-LN residual stream is otherwise
    un-normalised). The features are the agent's token concatenated with the mean of the visible tokens (agent
    included): ``features_dim = 2 * embed_dim``.

    So the features depend neither on hidden/padding entities' rows nor on the number of padding slots,
    and, there being no positional encoding, are invariant to permutations of slots ``1..N-1``.

    :param observation_space: ``Dict`` with ``"entities"`` (``Box`` of shape ``(N, F)``) and, when
        ``use_visibility``, ``"visibility"`` (``MultiBinary(N)`` or ``Box`` of shape ``(N,)``); no other key
    :param embed_dim: token size; the features are ``2 * embed_dim``
    :param n_heads: attention heads; must divide ``embed_dim``
    :param n_blocks: number of self-attention blocks (0 gives a Deep Sets-like embed-and-pool encoder)

    Ablation (for studies of the mask itself, not for use):

    :param use_visibility: ``False`` builds the same extractor without the visibility mask: every slot (hidden and
        padding ones included, fed as their zero rows) is attended to and pooled; the visibility key is then ignored
        (and optional)
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        embed_dim: int = 64,
        n_heads: int = 4,
        n_blocks: int = 2,
        use_visibility: bool = True,
    ):
        n_entities, n_features = _check_space(observation_space, use_visibility)
        for name, value, minimum in (("embed_dim", embed_dim, 1), ("n_heads", n_heads, 1), ("n_blocks", n_blocks, 0)):
            check_int(name, value, minimum)
        if embed_dim % n_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by n_heads ({n_heads})")
        super().__init__(observation_space, features_dim=2 * embed_dim)
        self.n_entities = n_entities
        self.n_entity_features = n_features
        self.embed_dim = embed_dim
        self.n_heads = n_heads
        self.use_visibility = use_visibility
        self.embed = nn.Sequential(nn.Linear(n_features, embed_dim), nn.ReLU())
        self.blocks = nn.ModuleList(
            MaskedSelfAttentionBlock(embed_dim, n_heads, MLP_RATIO, activation=nn.ReLU) for _ in range(n_blocks)
        )
        self.out_norm = nn.LayerNorm(embed_dim)

    def visible_mask(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """The boolean mask of the entities that may be attended to and are pooled.

        :param observations: the extractor's input (see the class docstring)
        :return: ``(B, N)`` bool: the visibility (any nonzero value counts as visible) with slot 0 forced
            ``True``; all ``True`` when ``use_visibility`` is ``False``
        """
        entities = observations[ENTITIES_KEY]
        batch, n = entities.shape[:2]
        if not self.use_visibility:
            return torch.ones(batch, n, dtype=torch.bool, device=entities.device)
        visible = observations[VISIBILITY_KEY] != 0
        if visible.shape != (batch, n):
            raise ValueError(f"'{VISIBILITY_KEY}' has shape {tuple(visible.shape)}, expected {(batch, n)}")
        # The agent always sees itself: this keeps every softmax row non-empty (no NaN) and the pooled
        # mean's count >= 1, whatever the env sends.
        visible = visible.clone()
        visible[:, 0] = True
        return visible

    def _encode(
        self, observations: dict[str, torch.Tensor], with_weights: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        entities = observations[ENTITIES_KEY]
        if entities.dim() != 3 or entities.shape[-1] != self.n_entity_features:
            raise ValueError(
                f"'{ENTITIES_KEY}' must have shape (batch, n_entities, {self.n_entity_features}), "
                f"got {tuple(entities.shape)}"
            )
        visible = self.visible_mask(observations)
        mask = key_mask(visible)
        x = self.embed(entities)
        all_weights = []
        for block in self.blocks:
            if with_weights:
                x, weights = block.forward_with_weights(x, mask)
                all_weights.append(weights)
            else:
                x = block(x, mask)
        x = self.out_norm(x)
        # Masked mean: hidden/padding tokens are multiplied by exactly 0 (so they pass no gradient either).
        # Their query rows were computed above, but nothing downstream reads them.
        weight = visible.to(x.dtype).unsqueeze(-1)
        pooled = (x * weight).sum(dim=1) / weight.sum(dim=1)
        return torch.cat([x[:, 0], pooled], dim=-1), all_weights

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features ``(B, 2 * embed_dim)``.

        :param observations: ``{"entities": (B, N, F), "visibility": (B, N)}`` (``N`` may differ from
            the observation space's: extra padding slots change nothing)
        """
        return self._encode(observations, with_weights=False)[0]

    def attention_maps(self, observations: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Attention weights of every block, for inspection, computed with an explicit softmax under the same mask.

        :param observations: as for :meth:`forward`
        :return: per block, the weights ``(B, n_heads, N, N)`` (rows: queries, columns: keys; the columns of
            masked entities are exactly 0, rows sum to 1)
        """
        return self._encode(observations, with_weights=True)[1]


def _check_space(observation_space: spaces.Space, use_visibility: bool) -> tuple[int, int]:
    """Validate the extractor's observation space and return ``(n_entities, n_entity_features)``."""
    entities_key, visibility_key = ENTITIES_KEY, VISIBILITY_KEY
    if not isinstance(observation_space, spaces.Dict):
        raise ValueError(
            f"EntityAttentionExtractor needs a Dict observation space with '{entities_key}' "
            f"and '{visibility_key}' keys, got {observation_space}"
        )
    keys = set(observation_space.spaces)
    if entities_key not in keys:
        raise ValueError(f"the observation space has no '{entities_key}' key (keys: {sorted(keys)})")
    entities = observation_space[entities_key]
    if not isinstance(entities, spaces.Box) or len(entities.shape) != 2 or min(entities.shape) < 1:
        raise ValueError(f"'{entities_key}' must be a Box of shape (n_entities, n_features), got {entities}")
    n_entities, n_features = entities.shape
    expected = {entities_key}
    if visibility_key in keys or use_visibility:
        if visibility_key not in keys:
            raise ValueError(
                f"the observation space has no '{visibility_key}' key (keys: {sorted(keys)}); "
                "pass use_visibility=False to attend to every entity"
            )
        visibility = observation_space[visibility_key]
        if not isinstance(visibility, (spaces.MultiBinary, spaces.Box)) or visibility.shape != (n_entities,):
            raise ValueError(
                f"'{visibility_key}' must be a MultiBinary or Box of shape ({n_entities},) to match "
                f"'{entities_key}' {entities.shape}, got {visibility}"
            )
        expected.add(visibility_key)
    # Other keys would be silently ignored: refuse them rather than drop observation features.
    if keys - expected:
        raise ValueError(
            f"EntityAttentionExtractor reads only '{entities_key}' and '{visibility_key}', "
            f"but the observation also has {sorted(keys - expected)}"
        )
    return n_entities, n_features
