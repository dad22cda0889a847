"""Rotary position embeddings (RoPE), the rotate-half form used by Hugging Face models."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rotary_embedding(x: jax.Array, theta: float, positions: jax.Array | None = None) -> jax.Array:
    """Rotate query or key heads `x [B, L, N, Dh]` by their positions.

    Pairs dimension d with d + Dh/2 (`rotate_half`), frequencies `theta ** (-2k / Dh)`;
    computed in float32, returned in x's dtype.

    Args:
        positions: `[B, L]` position of each token; None means 0..L-1 in every row.
    """
    _, L, _, Dh = x.shape  # [B, L, N, Dh]
    if positions is None:
        positions = jnp.arange(L)[None]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, Dh, 2, dtype=jnp.float32) / Dh))  # [Dh/2]
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq[None, None]  # [B or 1, L, Dh/2]
    angles = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [B or 1, L, 1, Dh]
    x32 = x.astype(jnp.float32)
    rotated = jnp.concatenate([-x32[..., Dh // 2 :], x32[..., : Dh // 2]], axis=-1)
    return (x32 * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)
