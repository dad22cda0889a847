"""MPNet (all-mpnet-base-v2, multi-qa-mpnet-base): BERT's post-LN layers plus one relative
position bias shared by every layer, and RoBERTa-style position ids."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ferris_jax._compat import nnx_list
from ferris_jax.models.bert import BertConfig, Embeddings, Layer
from ferris_jax.models.layers import embed
from ferris_jax.weights import EMBED, LINEAR, NORM, Rule

# transformers' MPNetEmbeddings fixes padding_idx = 1 whatever config.pad_token_id says: tokens
# with id 1 get position 1, the others count up from 2.
PADDING_IDX = 1
# MPNetEncoder.compute_position_bias is called with its defaults, so every checkpoint buckets
# relative positions into 32 buckets (16 per direction) up to distance 128, whatever
# relative_attention_num_buckets (the rows of the bias table) says.
NUM_BUCKETS = 32
MAX_DISTANCE = 128


@dataclasses.dataclass(frozen=True)
class MPNetConfig(BertConfig):
    """BERT's fields plus the rows of the relative-bias table; no token types, and RoBERTa-style
    positions counted from PADDING_IDX (transformers ignores config.pad_token_id there)."""

    relative_attention_num_buckets: int = 32

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> MPNetConfig:
        fixed = {"type_vocab_size": 0, "pad_token_id": PADDING_IDX, "positions": "roberta"}
        fields = {f.name for f in dataclasses.fields(cls)} - set(fixed)
        cfg = cls(**{k: v for k, v in config.items() if k in fields and v is not None}, **fixed)
        if cfg.relative_attention_num_buckets < NUM_BUCKETS:
            raise ValueError(
                f"relative_attention_num_buckets={cfg.relative_attention_num_buckets} is below "
                f"the {NUM_BUCKETS} buckets MPNet's position bias indexes (as transformers does)"
            )
        return cfg


def relative_position_bucket(
    relative_position: np.ndarray, num_buckets: int = NUM_BUCKETS, max_distance: int = MAX_DISTANCE
) -> np.ndarray:
    """transformers' MPNetEncoder.relative_position_bucket in numpy, float32 like torch.

    Exact buckets below `num_buckets // 4` tokens apart, logarithmic ones up to `max_distance`,
    one per direction. Numpy (not XLA) so the table is the same on every backend.
    """
    n = -np.asarray(relative_position, dtype=np.int64)
    half = num_buckets // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    scaled = (
        np.log(np.maximum(n, max_exact).astype(np.float32) / np.float32(max_exact))
        / np.float32(math.log(max_distance / max_exact))
        * np.float32(half - max_exact)
    )
    large = np.minimum(max_exact + scaled.astype(np.int64), half - 1)
    return ret + np.where(n < max_exact, n, large)


class MPNetModel(nnx.Module):
    """`(input_ids, attention_mask, token_type_ids, positions) -> last hidden state [B, L, D]`
    (arguments as `BertModel`'s).

    The relative bias uses in-row distances, equal to in-text distances for packed texts (each
    text's tokens are contiguous and texts do not see each other). MPNet has no token types;
    `token_type_ids` is accepted for the common signature and unused,
    as transformers' MPNetModel does not take it.
    """

    def __init__(self, cfg: MPNetConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = cfg
        self.embeddings = Embeddings(cfg, dtype=dtype, rngs=rngs)  # BERT's, without token types
        self.relative_attention_bias = embed(
            cfg.relative_attention_num_buckets, cfg.num_attention_heads, dtype=dtype, rngs=rngs
        )
        self.layers = nnx_list(
            [Layer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.num_hidden_layers)]
        )

    def position_bias(self, L: int) -> jax.Array:
        """Additive attention bias `[1, N, L, L]` from key-minus-query distances."""
        table = jnp.asarray(relative_position_bucket(np.arange(-(L - 1), L)), jnp.int32)
        pos = jnp.arange(L)
        buckets = table[pos[None, :] - pos[:, None] + (L - 1)]  # [L(query), L(key)]
        return jnp.transpose(self.relative_attention_bias(buckets), (2, 0, 1))[None]

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
    ) -> jax.Array:
        x = self.embeddings(input_ids, None, positions)
        bias = self.position_bias(input_ids.shape[1])  # computed once, shared by every layer
        mask = attention_mask.astype(bool)
        for layer in self.layers:
            x = layer(x, mask, bias)
        return x


# PyTorch name (after the optional "mpnet." prefix) -> our module path.
WEIGHT_RULES = (
    Rule("embeddings.word_embeddings", "embeddings.word", EMBED),
    Rule("embeddings.position_embeddings", "embeddings.position", EMBED),
    Rule("embeddings.LayerNorm", "embeddings.norm", NORM),
    Rule("encoder.relative_attention_bias", "relative_attention_bias", EMBED),
    Rule("encoder.layer.{i}.attention.attn.q", "layers.{i}.attention.query", LINEAR),
    Rule("encoder.layer.{i}.attention.attn.k", "layers.{i}.attention.key", LINEAR),
    Rule("encoder.layer.{i}.attention.attn.v", "layers.{i}.attention.value", LINEAR),
    Rule("encoder.layer.{i}.attention.attn.o", "layers.{i}.attention.out", LINEAR),
    Rule("encoder.layer.{i}.attention.LayerNorm", "layers.{i}.attention_norm", NORM),
    Rule("encoder.layer.{i}.intermediate.dense", "layers.{i}.intermediate", LINEAR),
    Rule("encoder.layer.{i}.output.dense", "layers.{i}.output", LINEAR),
    Rule("encoder.layer.{i}.output.LayerNorm", "layers.{i}.output_norm", NORM),
)
# Tensors an MPNet checkpoint may carry that sentence embeddings do not use.
IGNORED_WEIGHTS = (r"(.*\.)?position_ids", r"pooler\..*", r"lm_head\..*")
CHECKPOINT_PREFIXES = ("mpnet.",)
