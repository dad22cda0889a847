"""The one attention function of every model family."""

from __future__ import annotations

import jax


def attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    key_mask: jax.Array,
    bias: jax.Array | None = None,
    window: int | None = None,
) -> jax.Array:
    """Multi-head scaled dot-product attention over padded sequences.

    Args:
        query, key, value: `[B, L, N, Dh]`.
        key_mask: `[B, L]` bool, True for real tokens (padding keys get no weight).
        bias: optional additive logits bias broadcastable to `[B, N, L, L]`.
        window: if set, query i attends only to keys j with |i - j| <= window (sliding-window
            local attention, as in ModernBERT's local layers).

    Returns:
        `[B, L, N, Dh]` in query's dtype; softmax statistics are computed in float32 by XLA.
    """
    mask = key_mask[:, None, None, :]
    local = None if window is None else (window, window)
    return jax.nn.dot_product_attention(
        query, key, value, bias=bias, mask=mask, local_window_size=local
    )
