"""The one attention function of every model family.

Three formulations of the same math: "einsum" (heads-major einsums fused by XLA, float32 softmax
normalized after the value product; 3x faster than "jax" on XLA:CPU), "jax"
(`jax.nn.dot_product_attention`'s XLA path; 10-15% faster than "einsum" on an H100; the Apple
plugins metaljax and jax-mps fuse it into MLX's attention kernel) and "cudnn"
(cuDNN fused attention; CUDA in half precision without bias or window only, other calls fall back
to "jax"; 1.2-1.8x faster than "jax" on an H100). "auto" picks per platform when the program is
lowered (the platform table's `attention` choice; measurements in BENCHMARKS.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ferris_jax.ops.impl import lowered_per_platform, requested


def attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: jax.Array,
    bias: jax.Array | None = None,
    window: int | None = None,
    impl: str | None = None,
) -> jax.Array:
    """Multi-head scaled dot-product attention over padded sequences.

    Args:
        query, key, value: `[B, L, N, Dh]`.
        mask: `[B, L]` bool, True for real tokens (padding keys get no weight), or `[B, L, L]`
            bool, True where query i may attend key j (several texts packed in one row).
        bias: optional additive logits bias broadcastable to `[B, N, L, L]`.
        window: if set, query i attends only to keys j with |i - j| <= window (sliding-window
            local attention, as in ModernBERT's local layers).
        impl: auto | einsum | jax | cudnn (see the module docstring); default from
            `ops.use_impl(attention=...)`, else `$FERRIS_JAX_ATTENTION`, else "auto".

    Returns:
        `[B, L, N, Dh]` in query's dtype. Logits, softmax and its normalizer are float32.
    """
    impl = requested("attention", impl)
    args = (query, key, value, mask, bias, window)
    if impl == "einsum":
        return _einsum_attention(*args)
    if impl == "jax":
        return _jax_attention(*args)
    # "auto" (and "cudnn", which only CUDA can run) is chosen per platform when lowered.
    overrides = {"cuda": "cudnn"} if impl == "cudnn" else {}
    return lowered_per_platform(
        "attention", lambda name: _implementation(name, *args), *args, **overrides
    )


def _implementation(name, query, key, value, mask, bias, window):
    """The function for impl `name` on these arguments ("cudnn" falls back to "jax")."""
    if name == "cudnn":
        half = query.dtype in (jnp.bfloat16, jnp.float16)
        # Tracing cuDNN attention needs the CUDA runtime, so only a CUDA process gets it.
        if half and bias is None and window is None and query.shape[-1] % 8 == 0 and _has_cuda():
            return _cudnn_attention
        return _jax_attention
    return {"einsum": _einsum_attention, "jax": _jax_attention}[name]


@functools.cache
def _has_cuda() -> bool:
    try:
        return bool(jax.devices("cuda"))
    except RuntimeError:
        return False


def _pair_mask(mask: jax.Array) -> jax.Array:
    """A `[B, L]` key mask or `[B, L, L]` pair mask as `[B, 1, L or 1, L]` (heads broadcast)."""
    return mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]


def _jax_attention(query, key, value, mask, bias, window):
    local = None if window is None else (window, window)
    # jax-mps 0.11.1 replaces this function with MLX's fused kernel, but reads a 4-D mask as
    # [B, L, N, L] where JAX's is [B, N, L, L]: pair masks (packed rows) would fail or, with as
    # many heads as tokens, attend wrongly. Naming JAX's own implementation keeps them on it;
    # key masks ([B, 1, 1, L], the same either way) take the fused path.
    implementation = "xla" if mask.ndim == 3 else None
    return jax.nn.dot_product_attention(
        query,
        key,
        value,
        bias=bias,
        mask=_pair_mask(mask),
        local_window_size=local,
        implementation=implementation,
    )


def _cudnn_attention(query, key, value, mask, bias, window):
    # Sequence lengths up to each row's last real key let cuDNN skip trailing padding; the
    # mask itself still applies, so any mask (not only right padding) gives the exact result.
    B, L = mask.shape[0], mask.shape[-1]
    any_query = mask if mask.ndim == 2 else mask.any(axis=1)
    lengths = (L - jnp.argmax(any_query[:, ::-1], axis=-1)).astype(jnp.int32)
    return jax.nn.dot_product_attention(
        query,
        key,
        value,
        mask=jnp.broadcast_to(_pair_mask(mask), (B, 1, L, L)),  # cuDNN wants [B, 1, L, L]
        query_seq_lengths=lengths,
        key_value_seq_lengths=lengths,
        implementation="cudnn",
    )


# Float32 logits the "einsum" formulation computes at once: a batch whose `[B, N, L, L]` logits
# are larger runs in groups of rows (`lax.map`) that stay in the CPU's caches. On a 2-core
# AVX-512 CPU, limited to AVX2 or not, attention alone ran 2-3x faster at 256 and 512 tokens and
# bert-base's 512-token documents 9-11% faster end to end; nothing measurable changed at 64-128
# tokens or for MiniLM (BENCHMARKS.md, "The CPU at each model's max_seq_length").
EINSUM_LOGITS_BYTES = 8 << 20


def _einsum_attention(query, key, value, mask, bias, window, logits_bytes=None):
    B, L, N, _ = query.shape
    budget = EINSUM_LOGITS_BYTES if logits_bytes is None else logits_bytes
    rows = max(1, min(B, budget // (N * L * L * 4)))
    while B % rows:
        rows -= 1
    if rows == B:
        return _einsum_rows(query, key, value, mask, bias, window)
    per_row_bias = bias is not None and bias.shape[0] == B and B > 1
    # One row at a time maps over the batch axis itself: slicing `[1, ...]` groups out of a
    # `[B, 1, ...]` reshape ran 1.6x slower on XLA:CPU at 512 tokens.
    group = (lambda t: t) if rows == 1 else (lambda t: t.reshape(B // rows, rows, *t.shape[1:]))
    ungroup = (lambda t: t[None]) if rows == 1 else (lambda t: t)

    def one(args):
        q, k, v, m, *b = map(ungroup, args)
        out = _einsum_rows(q, k, v, m, b[0] if per_row_bias else bias, window)
        return out[0] if rows == 1 else out

    mapped = (query, key, value, mask, *([bias] if per_row_bias else []))
    return jax.lax.map(one, tuple(group(t) for t in mapped)).reshape(query.shape)


def _einsum_rows(query, key, value, mask, bias, window):
    L, Dh = query.shape[1], query.shape[3]
    # Heads-major layout: XLA:CPU runs these batched matmuls 3x faster than on [B, L, N, Dh]
    # (jax.nn.dot_product_attention's layout).
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (query, key, value))
    logits = jnp.einsum("bnqd,bnkd->bnqk", q, k, preferred_element_type=jnp.float32)
    logits = logits * jnp.float32(Dh**-0.5)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    allowed = _pair_mask(mask)
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
