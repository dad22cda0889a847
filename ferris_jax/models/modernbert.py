"""ModernBERT (gte-modernbert, modernbert-embed): config, modules, weight names.

Differs from BERT in: no position embeddings but rotary ones (a different theta for global and
local layers), a fused QKV projection, a GeGLU feed-forward, pre-LN layers with a final norm,
optional biases, and sliding-window attention in every layer that is not a global one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ferris_jax import ops
from ferris_jax._compat import nnx_list
from ferris_jax.models.layers import LayerNorm, embed, linear
from ferris_jax.weights import EMBED, LINEAR, NORM, Rule

GLOBAL, LOCAL = "full_attention", "sliding_attention"


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
    """The fields of a Hugging Face ModernBERT `config.json` that change the forward pass."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    layer_types: tuple[str, ...]  # GLOBAL or LOCAL per layer
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    local_attention: int = 128  # total window: local layers see |i - j| <= local_attention // 2
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> ModernBertConfig:
        """Reads both spellings: transformers >= 5 (`layer_types`, `rope_parameters` per layer
        type) and the hub's older one (`global_attn_every_n_layers`, `*_rope_theta`)."""
        if config.get("rope_scaling"):
            raise ValueError(f"rope_scaling={config['rope_scaling']!r} is not supported")
        rope = config.get("rope_parameters") or {}
        if set(rope) - {GLOBAL, LOCAL}:
            raise ValueError(f"rope_parameters must be keyed by {GLOBAL!r} and {LOCAL!r}: {rope}")
        for params in rope.values():
            if (params or {}).get("rope_type", "default") != "default":
                raise ValueError(f"rope_parameters {params} are not supported (only 'default')")
        full, local = rope.get(GLOBAL) or {}, rope.get(LOCAL) or {}
        global_theta = full.get("rope_theta", config.get("global_rope_theta", 160_000.0))
        local_theta = local.get("rope_theta", config.get("local_rope_theta", 10_000.0))
        n = int(config.get("num_hidden_layers") or 0)  # if missing, cls() raises TypeError
        every = config.get("global_attn_every_n_layers") or 3
        types = config.get("layer_types") or [LOCAL if i % every else GLOBAL for i in range(n)]
        if len(types) != n or set(types) - {GLOBAL, LOCAL}:
            raise ValueError(f"layer_types must list {GLOBAL!r} or {LOCAL!r} for {n} layers")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in config.items() if k in fields and v is not None}
        return cls(
            **kwargs
            | dict(
                layer_types=tuple(types),
                global_rope_theta=float(global_theta),
                # transformers 4.x read a null local_rope_theta as "use the global theta"
                local_rope_theta=float(local_theta if local_theta is not None else global_theta),
            )
        )


class Attention(nnx.Module):
    """Self-attention with a fused QKV projection and rotary positions."""

    def __init__(self, cfg: ModernBertConfig, layer_type: str, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        D, N = cfg.hidden_size, cfg.num_attention_heads
        if D % N:
            raise ValueError(f"hidden_size {D} is not divisible by num_attention_heads {N}")
        self.num_heads = N
        self.qkv = linear(D, 3 * D, dtype=dtype, rngs=rngs, use_bias=cfg.attention_bias)
        self.out = linear(D, D, dtype=dtype, rngs=rngs, use_bias=cfg.attention_bias)
        local = layer_type == LOCAL
        self.theta = cfg.local_rope_theta if local else cfg.global_rope_theta
        self.window = cfg.local_attention // 2 if local else None

    def __call__(self, x: jax.Array, mask: jax.Array, positions: jax.Array | None) -> jax.Array:
        B, L, D = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q = ops.rotary_embedding(q, self.theta, positions)
        k = ops.rotary_embedding(k, self.theta, positions)
        y = ops.attention(q, k, v, mask, window=self.window)
        return self.out(y.reshape(B, L, D))


class GeGLU(nnx.Module):
    """`wo(act(a) * g)` where `[a, g] = wi(x)` splits into two halves."""

    def __init__(self, cfg: ModernBertConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        D, F = cfg.hidden_size, cfg.intermediate_size
        self.wi = linear(D, 2 * F, dtype=dtype, rngs=rngs, use_bias=cfg.mlp_bias)
        self.wo = linear(F, D, dtype=dtype, rngs=rngs, use_bias=cfg.mlp_bias)
        self.act = ops.activation(cfg.hidden_activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        a, gate = jnp.split(self.wi(x), 2, axis=-1)
        return self.wo(self.act(a) * gate)


def _norm(cfg: ModernBertConfig, dtype: jnp.dtype) -> LayerNorm:
    return LayerNorm(cfg.hidden_size, eps=cfg.norm_eps, dtype=dtype, use_bias=cfg.norm_bias)


class Layer(nnx.Module):
    """Pre-LN layer: x += attn(LN(x)); x += mlp(LN(x)). Layer 0 has no attention norm (the
    embedding norm directly precedes it)."""

    def __init__(self, cfg: ModernBertConfig, index: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.attn_norm = _norm(cfg, dtype) if index else None
        self.attn = Attention(cfg, cfg.layer_types[index], dtype=dtype, rngs=rngs)
        self.mlp_norm = _norm(cfg, dtype)
        self.mlp = GeGLU(cfg, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array, positions: jax.Array | None) -> jax.Array:
        h = x if self.attn_norm is None else self.attn_norm(x)
        x = x + self.attn(h, mask, positions)
        return x + self.mlp(self.mlp_norm(x))


class ModernBertModel(nnx.Module):
    """`(input_ids, attention_mask, token_type_ids, positions) -> last hidden state [B, L, D]`
    (arguments as `BertModel`'s; sliding windows count in-row distances, which equal in-text
    distances for packed texts)."""

    def __init__(self, cfg: ModernBertConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = cfg
        self.embeddings = embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, rngs=rngs)
        self.embedding_norm = _norm(cfg, dtype)
        self.layers = nnx_list(
            [Layer(cfg, i, dtype=dtype, rngs=rngs) for i in range(cfg.num_hidden_layers)]
        )
        self.final_norm = _norm(cfg, dtype)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
    ) -> jax.Array:
        del token_type_ids  # ModernBERT has no segment embeddings
        x = self.embedding_norm(self.embeddings(input_ids))
        mask = attention_mask.astype(bool)
        for layer in self.layers:
            x = layer(x, mask, positions)
        return self.final_norm(x)


# PyTorch name (after the optional "model." prefix) -> our module path.
WEIGHT_RULES = (
    Rule("embeddings.tok_embeddings", "embeddings", EMBED),
    Rule("embeddings.norm", "embedding_norm", NORM),
    Rule("layers.{i}.attn_norm", "layers.{i}.attn_norm", NORM),
    Rule("layers.{i}.attn.Wqkv", "layers.{i}.attn.qkv", LINEAR),
    Rule("layers.{i}.attn.Wo", "layers.{i}.attn.out", LINEAR),
    Rule("layers.{i}.mlp_norm", "layers.{i}.mlp_norm", NORM),
    Rule("layers.{i}.mlp.Wi", "layers.{i}.mlp.wi", LINEAR),
    Rule("layers.{i}.mlp.Wo", "layers.{i}.mlp.wo", LINEAR),
    Rule("final_norm", "final_norm", NORM),
)
# The masked-LM / classification heads of ModernBertFor* checkpoints.
IGNORED_WEIGHTS = (r"head\..*", r"decoder\..*", r"classifier\..*")
CHECKPOINT_PREFIXES = ("model.",)
