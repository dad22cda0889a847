"""LayerNorm as one JAX primitive.

Every LayerNorm in ferris-jax goes through `layer_norm`. The primitive
`layer_norm_p` has a default lowering (a float32-accumulating jnp decomposition
that every backend can run, including PJRT plugins we do not know about) and a
`custom_vjp` with an explicit float32 backward. Faster per-platform kernels
register an extra lowering for their platform and a name in `_IMPLS`; callers
do not change.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import partial

import jax
import jax.numpy as jnp
from jax.interpreters import batching, mlir

try:  # jax >= 0.4.36
    from jax.extend.core import Primitive
except ImportError:  # pragma: no cover - older jax
    from jax.core import Primitive

_F32 = jnp.float32
_IMPLS = ("xla",)  # "auto" resolves to one of these
_ENV_VAR = "FERRIS_JAX_LAYER_NORM"
_override: list[str] = []


def reference_layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """LayerNorm over the last axis with float32 statistics; output in x.dtype."""
    x32 = x.astype(_F32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centered = x32 - mean
    var = jnp.mean(centered * centered, axis=-1, keepdims=True)
    y = centered * jax.lax.rsqrt(var + eps)
    return (y * _as_rank(scale, x.ndim) + _as_rank(bias, x.ndim)).astype(x.dtype)


def _as_rank(p: jax.Array, ndim: int) -> jax.Array:
    """A float32 parameter `[..., H]` with leading unit axes to broadcast at rank `ndim`."""
    return p.astype(_F32).reshape((1,) * (ndim - p.ndim) + p.shape)


def _sum_to_shape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sum out the axes that broadcasting added or expanded, giving `shape`."""
    lead = x.ndim - len(shape)
    x = jnp.sum(x, axis=tuple(range(lead))) if lead else x
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return jnp.sum(x, axis=axes, keepdims=True) if axes else x


def reference_layer_norm_bwd(
    x: jax.Array, scale: jax.Array, bias: jax.Array, dy: jax.Array, eps: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Explicit float32 backward of `reference_layer_norm`: (dx, dscale, dbias)."""
    x32, dy32 = x.astype(_F32), dy.astype(_F32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centered = x32 - mean
    rstd = jax.lax.rsqrt(jnp.mean(centered * centered, axis=-1, keepdims=True) + eps)
    x_hat = centered * rstd
    g = dy32 * _as_rank(scale, x.ndim)
    dx = rstd * (
        g
        - jnp.mean(g, axis=-1, keepdims=True)
        - x_hat * jnp.mean(g * x_hat, axis=-1, keepdims=True)
    )
    dscale = _sum_to_shape(dy32 * x_hat, scale.shape)
    dbias = _sum_to_shape(dy32, bias.shape)
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


# ---------------------------------------------------------------- primitive
layer_norm_p = Primitive("ferris_layer_norm")


def _abstract_eval(x, scale, bias, *, eps, impl):
    del eps, impl
    if scale.shape[-1:] != x.shape[-1:] or bias.shape[-1:] != x.shape[-1:]:
        raise ValueError(
            f"layer_norm: scale {scale.shape} and bias {bias.shape} must end in x's "
            f"last dimension {x.shape[-1:]}"
        )
    return jax.core.ShapedArray(x.shape, x.dtype)


def _impl(x, scale, bias, *, eps, impl):
    del impl
    return reference_layer_norm(x, scale, bias, eps)


def _batch_rule(args, dims, *, eps, impl):
    """vmap: move every batch axis to the front; scale/bias broadcast against x."""
    x, scale, bias = args
    size = next(a.shape[d] for a, d in zip(args, dims, strict=False) if d is not None)
    x = batching.bdim_at_front(x, dims[0], size)
    moved = []
    for p, d in ((scale, dims[1]), (bias, dims[2])):
        if d is None:
            moved.append(p)
        else:  # a batched parameter [N, ..., H] broadcasts as [N, 1, ..., 1, H]
            p = jnp.moveaxis(p, d, 0)
            moved.append(p.reshape(p.shape[:1] + (1,) * (x.ndim - p.ndim) + p.shape[1:]))
    return layer_norm_p.bind(x, *moved, eps=eps, impl=impl), 0


layer_norm_p.def_impl(_impl)
layer_norm_p.def_abstract_eval(_abstract_eval)
batching.primitive_batchers[layer_norm_p] = _batch_rule
# Default lowering for every platform (no `platform=`): unknown PJRT plugins fall through to it.
mlir.register_lowering(layer_norm_p, mlir.lower_fun(_impl, multiple_results=False))


# ---------------------------------------------------------------- public API
def resolve_impl(impl: str | None = None) -> str:
    """The implementation a call will use: argument > context manager > env var > auto."""
    choice = impl or (_override[-1] if _override else None) or os.environ.get(_ENV_VAR) or "auto"
    if choice == "auto":
        return "xla"
    if choice not in _IMPLS:
        raise ValueError(
            f"layer_norm impl {choice!r} is not available; choose one of auto, {', '.join(_IMPLS)}"
        )
    return choice


@contextlib.contextmanager
def use_impl(impl: str) -> Iterator[None]:
    """Select the LayerNorm implementation for the calls traced inside this block."""
    resolve_impl(impl)
    _override.append(impl)
    try:
        yield
    finally:
        _override.pop()


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _layer_norm(x, scale, bias, eps, impl):
    return layer_norm_p.bind(x, scale, bias, eps=eps, impl=impl)


def _layer_norm_fwd(x, scale, bias, eps, impl):
    return layer_norm_p.bind(x, scale, bias, eps=eps, impl=impl), (x, scale, bias)


def _layer_norm_bwd(eps, impl, residuals, dy):
    del impl
    x, scale, bias = residuals
    return reference_layer_norm_bwd(x, scale, bias, dy, eps)


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


def layer_norm(
    x: jax.Array, scale: jax.Array, bias: jax.Array, *, eps: float, impl: str | None = None
) -> jax.Array:
    """LayerNorm over the last axis (float32 statistics), output in x.dtype.

    Args:
        x: input `[..., H]`.
        scale: `[H]` (or broadcastable to x, ending in H).
        bias: like scale.
        eps: added to the variance, as in `torch.nn.LayerNorm`.
        impl: `auto | xla`; default from `use_impl(...)` or `$FERRIS_JAX_LAYER_NORM`.
    """
    return _layer_norm(x, scale, bias, float(eps), resolve_impl(impl))


def add_layer_norm(
    x: jax.Array,
    residual: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    eps: float,
    impl: str | None = None,
) -> jax.Array:
    """`layer_norm(x + residual)`: the post-LN residual block of BERT-style encoders."""
    return layer_norm(x + residual, scale, bias, eps=eps, impl=impl)
