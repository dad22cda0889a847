"""LayerNorm as one JAX primitive, optionally fused with the residual add before it.

Every LayerNorm in ferris-jax goes through `layer_norm` or `add_layer_norm`, which bind the one
primitive `layer_norm_p` (forward, and with `backward=True` its float32 backward, used by a
`custom_vjp`). The implementation is a primitive parameter, requested through `ops.impl` while
tracing and resolved when the platform is known, at lowering:

- the default lowering (every platform, including PJRT plugins we do not know) runs the
  float32 jnp reference (`reference.py`), or the Pallas kernel in interpret mode;
- the "cuda" and "rocm" lowerings can also emit the Pallas Triton kernel (`pallas.py`).

"auto" is the platform table's `layer_norm` choice (`platforms.PLATFORM_DEFAULTS`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from jax.interpreters import batching, mlir

from ferris_jax.ops.impl import auto_impl, requested
from ferris_jax.ops.layer_norm.reference import reference_layer_norm, reference_layer_norm_bwd
from ferris_jax.platforms import default_platform

try:  # jax >= 0.4.36
    from jax.extend.core import Primitive
except ImportError:  # pragma: no cover - older jax
    from jax.core import Primitive

_PALLAS_GPU_PLATFORMS = ("cuda", "rocm")  # where impl="pallas" (the Triton kernel) can lower
_PALLAS_MAX_SIZE = 2**31 - 1  # elements of x that the kernel's int32 offsets reach


def resolve_impl(impl: str | None = None, platform: str | None = None) -> str:
    """The implementation a call will run on `platform` (default: JAX's default device's).

    Raises ValueError for an impl that cannot run there (e.g. "pallas" without a GPU);
    "auto" never raises.
    """
    choice = requested("layer_norm", impl)
    platform = platform or default_platform()
    if choice == "auto":
        return auto_impl("layer_norm", platform)
    if choice == "pallas" and platform not in _PALLAS_GPU_PLATFORMS:
        raise ValueError(
            f"layer_norm impl 'pallas' needs a GPU platform ({', '.join(_PALLAS_GPU_PLATFORMS)}), "
            f"but this computation is lowered for {platform!r}; there use impl 'auto', 'xla' "
            "or 'pallas_interpret' (the Pallas kernel in interpret mode, for tests)"
        )
    return choice


# ---------------------------------------------------------------- primitive
# Operands: x, [residual if has_residual], scale, bias, [dy if backward].
# Results: [y], or [dx, dscale, dbias] when backward.
layer_norm_p = Primitive("ferris_layer_norm")
layer_norm_p.multiple_results = True


def _unpack(args: Sequence, has_residual: bool, backward: bool):
    """(x, residual | None, scale, bias, dy | None) from the primitive's operands."""
    args = list(args)
    x = args.pop(0)
    residual = args.pop(0) if has_residual else None
    scale, bias = args.pop(0), args.pop(0)
    return x, residual, scale, bias, (args.pop(0) if backward else None)


def _abstract_eval(*avals, eps, impl, has_residual, backward):
    del eps, impl
    x, residual, scale, bias, dy = _unpack(avals, has_residual, backward)
    for name, p in (("scale", scale), ("bias", bias)):
        try:
            ok = p.shape[-1:] == x.shape[-1:] and jnp.broadcast_shapes(x.shape, p.shape) == x.shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"layer_norm: {name} {p.shape} must end in x's last dimension and broadcast "
                f"to x {x.shape}"
            )
    for name, a in (("residual", residual), ("cotangent", dy)):
        if a is not None and (a.shape, a.dtype) != (x.shape, x.dtype):
            raise ValueError(
                f"layer_norm: {name} {a.dtype}{list(a.shape)} must match x {x.dtype}{list(x.shape)}"
            )
    out = jax.core.ShapedArray(x.shape, x.dtype)
    if not backward:
        return [out]
    return [
        out,
        jax.core.ShapedArray(scale.shape, scale.dtype),
        jax.core.ShapedArray(bias.shape, bias.dtype),
    ]


def _reference(*args, eps, has_residual, backward):
    x, residual, scale, bias, dy = _unpack(args, has_residual, backward)
    if backward:
        return list(reference_layer_norm_bwd(x, scale, bias, dy, eps, residual))
    return [reference_layer_norm(x, scale, bias, eps, residual)]


def _pallas(*args, eps, has_residual, backward, interpret):
    from ferris_jax.ops.layer_norm import pallas  # Pallas is loaded only when lowered

    x, residual, scale, bias, dy = _unpack(args, has_residual, backward)
    if x.size == 0:  # nothing to launch a kernel for
        return _reference(*args, eps=eps, has_residual=has_residual, backward=backward)
    if backward:
        return list(pallas.backward(x, residual, scale, bias, dy, eps=eps, interpret=interpret))
    return [pallas.forward(x, residual, scale, bias, eps=eps, interpret=interpret)]


def _lowering(ctx, *args, impl, platform=None, **params):
    """Resolve `impl` for the platform(s) this rule lowers for, then lower that implementation."""
    platforms = [platform] if platform else (ctx.platforms or ctx.module_context.platforms)
    resolved = {resolve_impl(impl, p) for p in platforms}
    if len(resolved) != 1:  # pragma: no cover - one choice per platform table entry
        raise ValueError(f"layer_norm impl {impl!r} resolves differently on {platforms}")
    (chosen,) = resolved
    size = ctx.avals_in[0].size
    if chosen != "xla" and size > _PALLAS_MAX_SIZE:  # the kernel's offsets are int32
        if impl != "auto":
            raise ValueError(
                f"layer_norm impl {chosen!r} indexes with int32 offsets and x has {size} "
                f"elements (at most {_PALLAS_MAX_SIZE}); use impl 'auto' or 'xla', or split x"
            )
        chosen = "xla"
    if chosen == "xla":
        fn = partial(_reference, **params)
    else:
        fn = partial(_pallas, interpret=chosen == "pallas_interpret", **params)
    return mlir.lower_fun(fn, multiple_results=True)(ctx, *args)


@functools.cache
def _jitted(**params):
    return jax.jit(partial(layer_norm_p.bind, **params))


def _at_front(a: jax.Array, axis: int | None, size: int) -> jax.Array:
    """`a` with its batch axis first (broadcast to `size` where it has none)."""
    return jnp.broadcast_to(a, (size, *a.shape)) if axis is None else jnp.moveaxis(a, axis, 0)


def _batch_rule(args, dims, *, eps, impl, has_residual, backward):
    """vmap: batch axes to the front; batched parameters become `[N, 1, ..., 1, ...p]`.

    In the backward every parameter gets the batch axis, so dscale/dbias come out per example.
    """
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    x, residual, scale, bias, dy = _unpack(args, has_residual, backward)
    xd, rd, sd, bd, dyd = _unpack(dims, has_residual, backward)
    x = _at_front(x, xd, size)
    arrays = [x] + ([_at_front(residual, rd, size)] if has_residual else [])
    param_shapes = []
    for p, d in ((scale, sd), (bias, bd)):
        if d is not None or backward:
            p = _at_front(p, d, size)
            param_shapes.append(p.shape[1:])
            p = p.reshape(p.shape[:1] + (1,) * (x.ndim - p.ndim) + p.shape[1:])
        arrays.append(p)
    if backward:
        arrays.append(_at_front(dy, dyd, size))
    params = dict(eps=eps, impl=impl, has_residual=has_residual, backward=backward)
    out = layer_norm_p.bind(*arrays, **params)
    if backward:  # parameter gradients back to [N, ...p]
        out = [out[0]] + [g.reshape((size, *s)) for g, s in zip(out[1:], param_shapes, strict=True)]
    return out, [0] * len(out)


layer_norm_p.def_impl(lambda *args, **params: _jitted(**params)(*args))
layer_norm_p.def_abstract_eval(_abstract_eval)
batching.primitive_batchers[layer_norm_p] = _batch_rule
# Default lowering for every platform (no `platform=`): unknown PJRT plugins fall through to it.
mlir.register_lowering(layer_norm_p, _lowering)
for _platform in _PALLAS_GPU_PLATFORMS:  # names every supported jax version knows
    mlir.register_lowering(layer_norm_p, partial(_lowering, platform=_platform), platform=_platform)


# ---------------------------------------------------------------- public API
def _bind(x, residual, scale, bias, dy=None, *, eps, impl):
    args = [a for a in (x, residual, scale, bias, dy) if a is not None]
    return layer_norm_p.bind(
        *args, eps=eps, impl=impl, has_residual=residual is not None, backward=dy is not None
    )


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _layer_norm(x, residual, scale, bias, eps, impl):
    return _bind(x, residual, scale, bias, eps=eps, impl=impl)[0]


def _layer_norm_fwd(x, residual, scale, bias, eps, impl):
    return _layer_norm(x, residual, scale, bias, eps, impl), (x, residual, scale, bias)


def _layer_norm_bwd(eps, impl, saved, dy):
    x, residual, scale, bias = saved
    dx, dscale, dbias = _bind(x, residual, scale, bias, dy, eps=eps, impl=impl)
    return dx, (None if residual is None else dx), dscale, dbias


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
        impl: `auto | xla | pallas | pallas_interpret`; default from
            `ops.use_impl(layer_norm=...)`, else `$FERRIS_JAX_LAYER_NORM`, else auto.
            Resolved for the platform at lowering.
    """
    return _layer_norm(x, None, scale, bias, float(eps), requested("layer_norm", impl))


def add_layer_norm(
    x: jax.Array,
    residual: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    eps: float,
    impl: str | None = None,
) -> jax.Array:
    """`layer_norm(x + residual)` fused: the post-LN residual block of BERT-style encoders.

    The sum is float32 and never written to memory; x and residual must have the same shape
    and dtype, and both get the same gradient.
    """
    return _layer_norm(x, residual, scale, bias, float(eps), requested("layer_norm", impl))
