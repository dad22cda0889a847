"""The attention function against a float64 NumPy reference: padding masks, additive bias and
sliding windows, in float32 and bfloat16, for our formulation ("einsum"), JAX's ("jax") and the
per-platform choice ("auto")."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferris_jax import ops

B, L, N, DH = 3, 24, 4, 16


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((B, L, N, DH)) for _ in range(3))
    lengths = np.array([L, 9, 1])  # a full row, a padded row, a padding row with one token
    mask = np.arange(L)[None, :] < lengths[:, None]
    bias = rng.standard_normal((1, N, L, L))
    return q, k, v, mask, bias


def _reference(q, k, v, mask, bias=None, window=None):
    logits = np.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(DH)
    if bias is not None:
        logits = logits + bias
    allowed = mask[:, None, None, :]
    if window is not None:
        i = np.arange(L)
        allowed = allowed & (np.abs(i[:, None] - i[None, :]) <= window)
    logits = np.where(allowed, logits, -1e300)  # rows with no key allowed are never compared
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bnqk,bknd->bqnd", weights, v)


CASES = {"mask": {}, "bias": {"bias": True}, "window": {"window": 3}}
TOLERANCE = {jnp.float32: 2e-6, jnp.bfloat16: 6e-2}


@pytest.mark.parametrize("impl", ["einsum", "jax", "auto"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_float64_reference(impl, dtype, case):
    q, k, v, mask, bias = _inputs()
    options = CASES[case]
    bias = bias if options.get("bias") else None
    window = options.get("window")
    want = _reference(q, k, v, mask, bias, window)
    cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    fn = jax.jit(lambda q, k, v, b: ops.attention(q, k, v, mask, b, window, impl=impl))
    got = fn(cast(q), cast(k), cast(v), None if bias is None else cast(bias))
    assert got.dtype == dtype and got.shape == (B, L, N, DH)
    real = mask[:, :, None, None]  # outputs at padded query positions are never used
    err = np.abs(np.where(real, np.asarray(got, np.float64) - want, 0)).max()
    assert err <= TOLERANCE[dtype], err


def test_gradients_match_jax_formulation():
    q, k, v, mask, bias = _inputs(1)
    w = np.random.default_rng(2).standard_normal((B, L, N, DH)) * mask[:, :, None, None]

    def loss(impl):
        f = lambda q, k, v: (ops.attention(q, k, v, mask, bias, impl=impl) * w).sum()  # noqa: E731
        return jax.grad(f, argnums=(0, 1, 2))(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)))

    for ours, theirs in zip(loss("einsum"), loss("jax"), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5)


def test_env_var_picks_the_implementation_and_unknown_names_fail(monkeypatch):
    q, k, v = (jnp.asarray(a, jnp.float32) for a in _inputs()[:3])
    mask = _inputs()[3]
    monkeypatch.setenv("FERRIS_JAX_ATTENTION", "flash")
    with pytest.raises(ValueError, match="'flash'"):
        ops.attention(q, k, v, mask)
    monkeypatch.setenv("FERRIS_JAX_ATTENTION", "jax")
    np.testing.assert_allclose(
        ops.attention(q, k, v, mask), ops.attention(q, k, v, mask, impl="einsum"), atol=2e-6
    )


def test_cudnn_request_off_cuda_runs_the_platforms_choice():
    q, k, v = (jnp.asarray(a, jnp.bfloat16) for a in _inputs()[:3])
    mask = _inputs()[3]
    got = jax.jit(lambda q, k, v: ops.attention(q, k, v, mask, impl="cudnn"))(q, k, v)
    want = ops.attention(q, k, v, mask, impl="einsum")
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


@pytest.mark.parametrize("case", ["mask", "bias", "per-row bias", "window", "pair mask"])
@pytest.mark.parametrize("rows", [1, 2])  # logits budget for one row, for two of four
def test_einsum_in_groups_of_rows_equals_the_whole_batch(case, rows):
    import importlib

    attention = importlib.import_module("ferris_jax.ops.attention")
    rng = np.random.default_rng(3)
    b = 4
    q, k, v = (jnp.asarray(rng.standard_normal((b, L, N, DH)), jnp.float32) for _ in range(3))
    mask = np.arange(L)[None, :] < np.array([L, 9, 1, 17])[:, None]
    bias = window = None
    if case == "bias":
        bias = jnp.asarray(rng.standard_normal((1, N, L, L)), jnp.float32)
    elif case == "per-row bias":
        bias = jnp.asarray(rng.standard_normal((b, N, L, L)), jnp.float32)
    elif case == "window":
        window = 3
    elif case == "pair mask":  # two texts packed per row
        segment = np.where(np.arange(L) < L // 2, 1, 2)[None] * mask
        mask = (segment[:, :, None] == segment[:, None, :]) & (segment[:, :, None] > 0)
    mask = jnp.asarray(mask)
    budget = rows * N * L * L * 4

    def loss(q, k, v, logits_bytes):
        out = attention._einsum_attention(q, k, v, mask, bias, window, logits_bytes=logits_bytes)
        return jnp.sum(jnp.where(mask.any(-1)[:, :, None, None] if mask.ndim == 3 else
                                 mask[:, :, None, None], out, 0.0) ** 2), out  # fmt: skip

    (whole_loss, whole), whole_grads = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(
        q, k, v, 1 << 40
    )
    (grouped_loss, grouped), grads = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(
        q, k, v, budget
    )
    np.testing.assert_allclose(np.asarray(grouped), np.asarray(whole), rtol=0, atol=1e-6)
    np.testing.assert_allclose(float(grouped_loss), float(whole_loss), rtol=1e-6)
    for got, want in zip(grads, whole_grads, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-5)
    lowered = jax.jit(lambda q: attention._einsum_attention(
        q, k, v, mask, bias, window, logits_bytes=budget)).lower(q).as_text()  # fmt: skip
    assert "while" in lowered  # the groups run as a loop, not as one batch
