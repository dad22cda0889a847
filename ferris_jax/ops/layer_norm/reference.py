"""The LayerNorm reference: pure jnp, float32 statistics, forward and explicit backward.

Every implementation of the primitive (`primitive.py`) is tested against these two functions;
the default lowering runs them as they are.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_F32 = jnp.float32


def reference_layer_norm(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    eps: float,
    residual: jax.Array | None = None,
) -> jax.Array:
    """LayerNorm of `x [+ residual]` over the last axis, float32 statistics, output in x.dtype.

    The residual is added in float32 (torch's `LayerNorm(x + residual)` rounds the sum to
    x.dtype first; XLA may or may not, so we fix the more accurate choice for every impl).
    """
    x32 = summed_f32(x, residual)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centered = x32 - mean
    var = jnp.mean(centered * centered, axis=-1, keepdims=True)
    y = centered * jax.lax.rsqrt(var + eps)
    return (y * as_rank(scale, x.ndim) + as_rank(bias, x.ndim)).astype(x.dtype)


def summed_f32(x: jax.Array, residual: jax.Array | None) -> jax.Array:
    """x [+ residual] in float32."""
    return x.astype(_F32) if residual is None else x.astype(_F32) + residual.astype(_F32)


def as_rank(p: jax.Array, ndim: int) -> jax.Array:
    """A float32 parameter `[..., H]` with leading unit axes to broadcast at rank `ndim`."""
    return p.astype(_F32).reshape((1,) * (ndim - p.ndim) + p.shape)


def sum_to_shape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sum out the axes that broadcasting added or expanded, giving `shape`."""
    lead = x.ndim - len(shape)
    x = jnp.sum(x, axis=tuple(range(lead))) if lead else x
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return jnp.sum(x, axis=axes, keepdims=True) if axes else x


def reference_layer_norm_bwd(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    dy: jax.Array,
    eps: float,
    residual: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Explicit float32 backward of `reference_layer_norm`: (dx, dscale, dbias).

    dx is also the gradient of the residual."""
    x32, dy32 = summed_f32(x, residual), dy.astype(_F32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centered = x32 - mean
    rstd = jax.lax.rsqrt(jnp.mean(centered * centered, axis=-1, keepdims=True) + eps)
    x_hat = centered * rstd
    g = dy32 * as_rank(scale, x.ndim)
    dx = rstd * (
        g
        - jnp.mean(g, axis=-1, keepdims=True)
        - x_hat * jnp.mean(g * x_hat, axis=-1, keepdims=True)
    )
    dscale = sum_to_shape(dy32 * x_hat, scale.shape)
    dbias = sum_to_shape(dy32, bias.shape)
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)
