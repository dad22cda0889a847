"""The one LayerNorm primitive: forward and gradients vs torch.nn.LayerNorm, under jit/vmap/grad."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ferris_jax import ops
from ferris_jax.ops.layer_norm import layer_norm_p

# Tolerances scale with dtype resolution and sqrt of the reduction length.
TOL = {jnp.float32: 2e-6, jnp.bfloat16: 1e-2}


def _inputs(shape, dtype, seed=0):
    kx, ks, kb = jax.random.split(jax.random.key(seed), 3)
    H = shape[-1]
    x = (3.0 * jax.random.normal(kx, shape) + 0.5).astype(dtype)
    return (
        x,
        (1 + 0.1 * jax.random.normal(ks, (H,))).astype(dtype),
        (0.1 * jax.random.normal(kb, (H,))).astype(dtype),
    )


def _torch_reference(x, scale, bias, eps, dy):
    t = lambda a: torch.tensor(np.asarray(a, np.float32), dtype=torch.float64, requires_grad=True)  # noqa: E731
    tx, ts, tb = t(x), t(scale), t(bias)
    y = torch.nn.functional.layer_norm(tx, (tx.shape[-1],), ts, tb, eps)
    y.backward(torch.tensor(np.asarray(dy, np.float32), dtype=torch.float64))
    return y.detach().numpy(), tx.grad.numpy(), ts.grad.numpy(), tb.grad.numpy()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("H", [32, 384, 768])
def test_forward_and_backward_match_torch(dtype, H):
    x, scale, bias = _inputs((3, 5, H), dtype)
    dy = jax.random.normal(jax.random.key(9), x.shape).astype(dtype)
    y, vjp = jax.vjp(lambda x, s, b: ops.layer_norm(x, s, b, eps=1e-5), x, scale, bias)
    dx, ds, db = vjp(dy)
    ry, rdx, rds, rdb = _torch_reference(x, scale, bias, 1e-5, dy)
    assert y.dtype == dtype and dx.dtype == dtype and ds.dtype == dtype
    tol = TOL[dtype] * np.sqrt(H / 32)
    scale_of = lambda r: max(1.0, float(np.abs(r).max()))  # noqa: E731
    for got, want in ((y, ry), (dx, rdx), (ds, rds), (db, rdb)):
        err = np.abs(np.asarray(got, np.float64) - want).max() / scale_of(want)
        assert err <= tol * (15 if got is ds else 1)


def test_jit_vmap_grad_compose():
    x, scale, bias = _inputs((4, 6, 32), jnp.float32)
    f = lambda x, s, b: ops.layer_norm(x, s, b, eps=1e-12)  # noqa: E731
    ref = ops.reference_layer_norm(x, scale, bias, 1e-12)
    np.testing.assert_allclose(jax.jit(f)(x, scale, bias), ref, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(f, in_axes=(0, None, None))(x, scale, bias), ref, atol=1e-6)
    np.testing.assert_allclose(
        jax.vmap(f, in_axes=(1, None, None), out_axes=1)(x, scale, bias), ref, atol=1e-6
    )
    # vmap over a stack of parameters, and grad through that
    S, B = jnp.stack([scale, 2 * scale]), jnp.stack([bias, -bias])
    both = jax.vmap(f, in_axes=(None, 0, 0))(x, S, B)
    np.testing.assert_allclose(
        both[1], ops.reference_layer_norm(x, 2 * scale, -bias, 1e-12), atol=1e-5
    )
    loss = lambda s, b: jnp.sum(jax.vmap(f, in_axes=(None, 0, 0))(x, s, b) ** 3)  # noqa: E731
    ref_loss = lambda s, b: jnp.sum(  # noqa: E731
        jax.vmap(lambda s, b: ops.reference_layer_norm(x, s, b, 1e-12))(s, b) ** 3
    )
    for g, r in zip(jax.grad(loss, (0, 1))(S, B), jax.grad(ref_loss, (0, 1))(S, B), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


def test_every_layer_norm_is_the_primitive():
    x, scale, bias = _inputs((2, 3, 32), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda x: ops.add_layer_norm(x, x, scale, bias, eps=1e-5))(x)
    assert layer_norm_p.name in str(jaxpr)


def test_impl_selection(monkeypatch):
    assert ops.resolve_impl() == "xla"
    assert ops.resolve_impl("auto") == "xla"
    with ops.use_impl("xla"):
        assert ops.resolve_impl() == "xla"
    with pytest.raises(ValueError, match="impl 'nope' is not available"):
        ops.resolve_impl("nope")
    monkeypatch.setenv("FERRIS_JAX_LAYER_NORM", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        ops.resolve_impl()
