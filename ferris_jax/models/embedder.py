"""The sentence-embedding model: a backbone encoder followed by sentence-transformers' head
(Pooling -> Dense* -> Normalize)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from ferris_jax import ops
from ferris_jax._compat import nnx_list
from ferris_jax.pooling import PoolingConfig, l2_normalize, pool_all


@dataclasses.dataclass(frozen=True)
class DenseConfig:
    """sentence-transformers' Dense module: `activation(x @ W + b)`."""

    in_features: int
    out_features: int
    bias: bool = True
    activation: str = "torch.nn.modules.activation.Tanh"


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Everything after the backbone, in sentence-transformers' module order."""

    pooling: PoolingConfig = dataclasses.field(default_factory=PoolingConfig)
    dense: tuple[DenseConfig, ...] = ()
    normalize: bool = False


class SentenceEmbedder(nnx.Module):
    """`(input_ids, attention_mask, token_type_ids, prompt_length) -> embeddings [B, E]`."""

    def __init__(self, backbone: nnx.Module, head: HeadConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.backbone = backbone
        self.head = head
        # Dense layers are stored in the model dtype and computed in float32, like pooling.
        self.dense = nnx_list(
            [
                nnx.Linear(
                    d.in_features,
                    d.out_features,
                    use_bias=d.bias,
                    dtype=jnp.float32,
                    param_dtype=dtype,
                    rngs=rngs,
                )
                for d in head.dense
            ]
        )

    def token_embeddings(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Last hidden state `[B, L, D]` of the backbone."""
        return self.backbone(input_ids, attention_mask, token_type_ids)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        prompt_length: jax.Array | int = 0,
    ) -> jax.Array:
        hidden = self.token_embeddings(input_ids, attention_mask, token_type_ids)
        pool_mask = attention_mask.astype(bool)
        if not self.head.pooling.include_prompt:  # prompt tokens (with [CLS]) do not count
            pool_mask &= jnp.arange(input_ids.shape[1])[None, :] >= prompt_length
        return self._head(pool_all(hidden, pool_mask, self.head.pooling))

    def packed(
        self,
        input_ids: jax.Array,
        segment_ids: jax.Array,
        positions: jax.Array,
        token_type_ids: jax.Array | None,
        prompt_length: jax.Array | int,
        num_segments: int,
    ) -> jax.Array:
        """Embeddings `[B, K, E]` of up to K = `num_segments` texts packed in each row.

        `segment_ids [B, L]` numbers the texts of a row 1..K (0: padding) and `positions [B, L]`
        gives each token's index within its text. A text attends only to its own tokens and is
        pooled over them, so its vector equals the one-text-per-row result.
        """
        same_text = segment_ids[:, :, None] == segment_ids[:, None, :]  # [B, L, L]
        hidden = self.backbone(input_ids, same_text, token_type_ids, positions)
        slots = jnp.arange(1, num_segments + 1)[None, :, None]
        pool_mask = segment_ids[:, None, :] == slots  # [B, K, L]
        if not self.head.pooling.include_prompt:
            pool_mask &= (positions >= prompt_length)[:, None, :]
        return self._head(pool_all(hidden, pool_mask, self.head.pooling, positions))

    def _head(self, pooled: jax.Array) -> jax.Array:
        """Dense layers and Normalize on pooled vectors `[..., D]`."""
        x = pooled
        for layer, cfg in zip(self.dense, self.head.dense, strict=False):
            x = ops.activation(cfg.activation)(layer(x))
        return l2_normalize(x) if self.head.normalize else x
