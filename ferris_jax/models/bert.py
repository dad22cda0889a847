"""BERT (also MiniLM, E5, BGE, GTE checkpoints): config, modules, weight names."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from ferris_jax import ops
from ferris_jax._compat import nnx_list
from ferris_jax.models.layers import LayerNorm, SelfAttention, embed, linear
from ferris_jax.weights import EMBED, LINEAR, NORM, Rule


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT `config.json` that change the forward pass."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # Not a Hugging Face field; set by a family's from_hf. "bert": positions 0..L-1. "roberta":
    # real tokens numbered from pad_token_id + 1, pad tokens at pad_token_id (fairseq).
    positions: Literal["bert", "roberta"] = "bert"

    @property
    def max_tokens(self) -> int:
        """The longest input the position table covers."""
        offset = self.pad_token_id + 1 if self.positions == "roberta" else 0
        return self.max_position_embeddings - offset

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> BertConfig:
        kind = config.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ValueError(f"position_embedding_type={kind!r} is not supported (only 'absolute')")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in fields and v is not None})


def position_ids(
    cfg: BertConfig, input_ids: jax.Array, positions: jax.Array | None = None
) -> jax.Array:
    """Rows of the position table for each token, `[1, L]` or `[B, L]`.

    `positions` (`[B, L]`, each token's index within its own text, for packed rows) is None for
    one text per row: then BERT numbers 0..L-1, RoBERTa counts only non-pad tokens as
    transformers' `create_position_ids_from_input_ids` does.
    """
    if cfg.positions == "roberta":
        real = input_ids != cfg.pad_token_id
        count = jnp.cumsum(real, axis=1, dtype=jnp.int32)
        if positions is not None:  # restart the count at each text's first column
            start = jnp.arange(input_ids.shape[1])[None] - positions
            before = jnp.take_along_axis(count, jnp.maximum(start - 1, 0), axis=1)
            count = count - jnp.where(start > 0, before, 0)
        return count * real + cfg.pad_token_id
    return jnp.arange(input_ids.shape[1])[None] if positions is None else positions


class Embeddings(nnx.Module):
    """Word + position (+ token type, absent when type_vocab_size is 0) embeddings, then LN."""

    def __init__(self, cfg: BertConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.config = cfg
        self.word = embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, rngs=rngs)
        self.position = embed(cfg.max_position_embeddings, cfg.hidden_size, dtype=dtype, rngs=rngs)
        self.token_type = (
            embed(cfg.type_vocab_size, cfg.hidden_size, dtype=dtype, rngs=rngs)
            if cfg.type_vocab_size
            else None
        )
        self.norm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dtype)

    def __call__(
        self,
        input_ids: jax.Array,
        token_type_ids: jax.Array | None,
        positions: jax.Array | None = None,
    ) -> jax.Array:
        x = self.word(input_ids) + self.position(position_ids(self.config, input_ids, positions))
        if self.token_type is not None:
            x = x + self.token_type(token_type_ids)
        return self.norm(x)


class Layer(nnx.Module):
    """Post-LN transformer layer: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, cfg: BertConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        D, F = cfg.hidden_size, cfg.intermediate_size
        self.attention = SelfAttention(D, cfg.num_attention_heads, dtype=dtype, rngs=rngs)
        self.attention_norm = LayerNorm(D, eps=cfg.layer_norm_eps, dtype=dtype)
        self.intermediate = linear(D, F, dtype=dtype, rngs=rngs)
        self.output = linear(F, D, dtype=dtype, rngs=rngs)
        self.output_norm = LayerNorm(D, eps=cfg.layer_norm_eps, dtype=dtype)
        self.act = ops.activation(cfg.hidden_act)

    def __call__(self, x: jax.Array, mask: jax.Array, bias: jax.Array | None = None) -> jax.Array:
        """`bias`: optional additive attention logits bias (MPNet's relative positions)."""
        x = self.attention_norm(self.attention(x, mask, bias), residual=x)
        return self.output_norm(self.output(self.act(self.intermediate(x))), residual=x)


class BertModel(nnx.Module):
    """`(input_ids, attention_mask, token_type_ids, positions) -> last hidden state [B, L, D]`.

    `attention_mask` is `[B, L]` (real tokens) or `[B, L, L]` (which keys each query sees, for
    packed rows; then `positions` gives each token's index within its text).
    """

    def __init__(self, cfg: BertConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = cfg
        self.embeddings = Embeddings(cfg, dtype=dtype, rngs=rngs)
        self.layers = nnx_list(
            [Layer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.num_hidden_layers)]
        )

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
    ) -> jax.Array:
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids, positions)
        mask = attention_mask.astype(bool)
        for layer in self.layers:
            x = layer(x, mask)
        return x


# PyTorch name (after the optional "bert." prefix) -> our module path; suffixes come from the kind.
WEIGHT_RULES = (
    Rule("embeddings.word_embeddings", "embeddings.word", EMBED),
    Rule("embeddings.position_embeddings", "embeddings.position", EMBED),
    Rule("embeddings.token_type_embeddings", "embeddings.token_type", EMBED),
    Rule("embeddings.LayerNorm", "embeddings.norm", NORM),
    Rule("encoder.layer.{i}.attention.self.query", "layers.{i}.attention.query", LINEAR),
    Rule("encoder.layer.{i}.attention.self.key", "layers.{i}.attention.key", LINEAR),
    Rule("encoder.layer.{i}.attention.self.value", "layers.{i}.attention.value", LINEAR),
    Rule("encoder.layer.{i}.attention.output.dense", "layers.{i}.attention.out", LINEAR),
    Rule("encoder.layer.{i}.attention.output.LayerNorm", "layers.{i}.attention_norm", NORM),
    Rule("encoder.layer.{i}.intermediate.dense", "layers.{i}.intermediate", LINEAR),
    Rule("encoder.layer.{i}.output.dense", "layers.{i}.output", LINEAR),
    Rule("encoder.layer.{i}.output.LayerNorm", "layers.{i}.output_norm", NORM),
)
# Tensors a BERT checkpoint may carry that sentence embeddings do not use.
IGNORED_WEIGHTS = (r"(.*\.)?position_ids", r"pooler\..*", r"cls\..*")
CHECKPOINT_PREFIXES = ("bert.",)
