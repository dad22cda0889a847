"""The one attention function of every model family.

`impl` (or `$FERRIS_JAX_ATTENTION`) picks the formulation: "xla" (default: einsums in a
heads-major layout, fused by XLA), "jax" (`jax.nn.dot_product_attention`'s XLA path, the
reference) or "cudnn" (cuDNN fused attention with sequence lengths: half-precision CUDA only,
no bias or window, and it reads `key_mask` as right padding, as our tokenizer pads; other
calls use "xla").
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

IMPLS = ("xla", "jax", "cudnn")


def attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    key_mask: jax.Array,
    bias: jax.Array | None = None,
    window: int | None = None,
    impl: str | None = None,
) -> jax.Array:
    """Multi-head scaled dot-product attention over padded sequences.

    Args:
        query, key, value: `[B, L, N, Dh]`.
        key_mask: `[B, L]` bool, True for real tokens (padding keys get no weight).
        bias: optional additive logits bias broadcastable to `[B, N, L, L]`.
        window: if set, query i attends only to keys j with |i - j| <= window (sliding-window
            local attention, as in ModernBERT's local layers).
        impl: "xla", "jax" or "cudnn" (see the module docstring); default `$FERRIS_JAX_ATTENTION`
            or "xla".

    Returns:
        `[B, L, N, Dh]` in query's dtype. Logits, softmax and its normalizer are float32.
    """
    impl = impl or os.environ.get("FERRIS_JAX_ATTENTION") or "xla"
    if impl not in IMPLS:
        raise ValueError(f"attention impl {impl!r} is not one of {IMPLS}")
    L, Dh = query.shape[1], query.shape[3]
    local = None if window is None else (window, window)
    if impl == "jax":
        mask = key_mask[:, None, None, :]
        return jax.nn.dot_product_attention(
            query, key, value, bias=bias, mask=mask, local_window_size=local
        )
    half = query.dtype in (jnp.bfloat16, jnp.float16)
    if impl == "cudnn" and half and bias is None and window is None and Dh % 8 == 0:
        lengths = key_mask.sum(axis=-1, dtype=jnp.int32)
        return jax.nn.dot_product_attention(
            query,
            key,
            value,
            query_seq_lengths=lengths,
            key_value_seq_lengths=lengths,
            implementation="cudnn",
        )
    # Heads-major layout: XLA:CPU runs these batched matmuls 3x faster than on [B, L, N, Dh]
    # (jax.nn.dot_product_attention's layout).
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (query, key, value))
    logits = jnp.einsum("bnqd,bnkd->bnqk", q, k, preferred_element_type=jnp.float32)
    logits = logits * jnp.float32(Dh**-0.5)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    allowed = key_mask[:, None, None, :]
    if window is not None:
        i = jnp.arange(L)
        allowed = allowed & (jnp.abs(i[:, None] - i[None, :]) <= window)[None, None]
    logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
    weights = jnp.exp(logits - logits.max(axis=-1, keepdims=True))
    # Normalize after the value product: one pass over [B, N, L, Dh] instead of [B, N, L, L].
    out = jnp.einsum(
        "bnqk,bnkd->bnqd", weights.astype(value.dtype), v, preferred_element_type=jnp.float32
    )
    out = out / weights.sum(axis=-1, keepdims=True)
    return out.transpose(0, 2, 1, 3).astype(query.dtype)
