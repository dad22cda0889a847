"""NNX building blocks shared by every model family."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ferris_jax import ops


class LayerNorm(nnx.Module):
    """LayerNorm parameters; the math is the one primitive `ops.layer_norm`.

    `use_bias=False` (torch's `LayerNorm(bias=False)`) stores no bias and passes zeros.
    """

    def __init__(
        self, dim: int, *, eps: float, dtype: jnp.dtype = jnp.float32, use_bias: bool = True
    ):
        self.scale = nnx.Param(jnp.ones((dim,), dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), dtype)) if use_bias else None
        self.eps = eps

    def __call__(self, x: jax.Array, residual: jax.Array | None = None) -> jax.Array:
        scale = self.scale[...]
        bias = self.bias[...] if self.bias is not None else jnp.zeros_like(scale)
        if residual is None:
            return ops.layer_norm(x, scale, bias, eps=self.eps)
        return ops.add_layer_norm(x, residual, scale, bias, eps=self.eps)


class Linear(nnx.Linear):
    """`nnx.Linear` whose product is the one dense op `ops.dense` (so `ops.use_impl(matmul=...)`
    reaches the projections of every encoder layer)."""

    def __call__(self, inputs: jax.Array) -> jax.Array:
        kernel = self.kernel[...]
        dtype = self.dtype or jnp.result_type(inputs.dtype, kernel.dtype)  # flax's promotion
        bias = self.bias[...].astype(dtype) if self.bias is not None else None
        return ops.dense(inputs.astype(dtype), kernel.astype(dtype), bias)


def linear(
    d_in: int, d_out: int, *, dtype: jnp.dtype, rngs: nnx.Rngs, use_bias: bool = True
) -> Linear:
    """A dense layer computing and storing parameters in `dtype`."""
    return Linear(d_in, d_out, use_bias=use_bias, dtype=dtype, param_dtype=dtype, rngs=rngs)


class Embed(nnx.Embed):
    """An embedding table whose rows are looked up in the table's own dtype and then cast to
    the compute dtype. A float32 table under bfloat16 compute (training) thus sums its gradient
    in float32: flax's `nnx.Embed` casts the whole table first, making the backward a bfloat16
    scatter-add, which is slow on GPUs (and loses precision) where many rows repeat."""

    def __call__(self, inputs: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], inputs, axis=0).astype(self.dtype)


def embed(num: int, dim: int, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> Embed:
    """An embedding table stored in `dtype`."""
    return Embed(num, dim, dtype=dtype, param_dtype=dtype, rngs=rngs)


class SelfAttention(nnx.Module):
    """Multi-head self-attention with separate Q/K/V projections and an output projection."""

    def __init__(self, dim: int, num_heads: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(
                f"hidden_size {dim} is not divisible by num_attention_heads {num_heads}"
            )
        self.num_heads = num_heads
        self.query = linear(dim, dim, dtype=dtype, rngs=rngs)
        self.key = linear(dim, dim, dtype=dtype, rngs=rngs)
        self.value = linear(dim, dim, dtype=dtype, rngs=rngs)
        self.out = linear(dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array, bias: jax.Array | None = None) -> jax.Array:
        B, L, D = x.shape
        heads = lambda t: t.reshape(B, L, self.num_heads, D // self.num_heads)  # noqa: E731
        y = ops.attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), mask, bias
        )
        return self.out(y.reshape(B, L, D))
