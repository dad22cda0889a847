"""Pallas (Triton) LayerNorm kernels for GPUs, beside the jnp reference in `reference.py`.

Rows are tiled in blocks of `rows` x `width` (width = H padded to a power of two; padding lanes
are masked), statistics are float32, and the optional residual is added in float32 as in the
reference. The backward writes dx per row and per-program
partial sums of dscale and dbias, which are then summed. Parameters may be `[H]` or, after
`vmap` over them, one `[H]` row per group of consecutive rows (`[G, H]`).

Only the primitive (`primitive.py`) calls these, from its cuda/rocm lowering (or anywhere in
interpret mode); this module is imported lazily so that a CPU-only import never loads Pallas.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from ferris_jax.ops.layer_norm.reference import as_rank, sum_to_shape

try:  # newer jax (0.10, 0.11)
    _TritonParams = plgpu.CompilerParams
except AttributeError:  # pragma: no cover - jax 0.4.35
    _TritonParams = plgpu.TritonCompilerParams

_F32 = jnp.float32
# Tiling (not yet tuned on a GPU; benchmarks/layer_norm_gpu.py measures it):
_TILE = 4096  # elements per program and step (rows x width): 16 per thread at 8 warps
_MAX_WARPS = 8
_BWD_PROGRAMS = 512  # backward programs per group: more = fewer rows each, more partial sums


if hasattr(plgpu, "load"):  # newer jax: masked access is `plgpu.load(ref.at[idx], ...)`

    def _load(ref, idx, mask):
        return plgpu.load(ref.at[idx], mask=mask, other=0.0).astype(_F32)

    def _store(ref, idx, val, mask):
        plgpu.store(ref.at[idx], val.astype(ref.dtype), mask=mask)

else:  # pragma: no cover - jax 0.4.35

    def _load(ref, idx, mask):
        return pl.load(ref, idx, mask=mask, other=0.0).astype(_F32)

    def _store(ref, idx, val, mask):
        pl.store(ref, idx, val.astype(ref.dtype), mask=mask)


class Blocks(NamedTuple):
    """How rows of width H are tiled: `rows` x `width` elements per program and step."""

    width: int  # H rounded up to a power of two (Triton tensors have power-of-two shapes)
    rows: int
    num_warps: int


def block_config(H: int) -> Blocks:
    """The one block-size rule for both kernels: about `_TILE` elements per step."""
    width = pl.next_power_of_2(H)
    rows = max(1, _TILE // width)
    return Blocks(width, rows, min(max(rows * width // 512, 1), _MAX_WARPS))


class _Layout(NamedTuple):
    """x as `[G * R, H]` rows and the parameters as `[G, H]`: group g uses parameter row g."""

    groups: int  # G
    rows: int  # R, rows per group
    lead: tuple[int, ...]  # x.shape[:k], the leading axes that the parameters vary along


def _layout(x_shape: tuple[int, ...], *param_shapes: tuple[int, ...]) -> _Layout:
    """Group x's rows by the leading axes along which any parameter is not broadcast."""
    ndim = len(x_shape)
    k = 0
    for shape in param_shapes:
        lead = ((1,) * (ndim - len(shape)) + tuple(shape))[:-1]
        k = max([k] + [i + 1 for i, n in enumerate(lead) if n != 1])
    lead = tuple(x_shape[:k])
    groups = math.prod(lead)
    return _Layout(groups, math.prod(x_shape[:-1]) // groups, lead)


def _grouped(p: jax.Array, x_shape: tuple[int, ...], layout: _Layout) -> jax.Array:
    """A parameter as `[G, H]` float32 (broadcast where it is shared between groups)."""
    p = as_rank(p, len(x_shape))
    k = len(layout.lead)
    p = p.reshape(p.shape[:k] + p.shape[-1:])  # the axes after k are all 1 (see _layout)
    return jnp.broadcast_to(p, layout.lead + p.shape[-1:]).reshape(layout.groups, -1)


def _tile(layout: _Layout, blocks: Blocks, H: int, g, block):
    """Indices and mask of one `rows x width` tile: rows `block * rows + [0, rows)` of group g."""
    local = block * blocks.rows + jnp.arange(blocks.rows)
    cols = jnp.arange(blocks.width)
    row_ok, col_ok = local < layout.rows, cols < H
    idx = ((g * layout.rows + local)[:, None], cols[None, :])
    return idx, row_ok[:, None] & col_ok[None, :], cols, col_ok


def _normalize(x_ref, r_ref, idx, mask, H: int, eps: float):
    """float32 (x_hat, rstd) of a tile of x [+ residual]; x_hat is 0 on masked lanes."""
    x = _load(x_ref, idx, mask)
    if r_ref is not None:
        x = x + _load(r_ref, idx, mask)
    mean = jnp.sum(x, axis=1, keepdims=True) / H
    centered = jnp.where(mask, x - mean, 0.0)
    rstd = lax.rsqrt(jnp.sum(centered * centered, axis=1, keepdims=True) / H + eps)
    return jnp.where(mask, centered * rstd, 0.0), rstd


def _forward_kernel(*refs, layout: _Layout, blocks: Blocks, H: int, eps: float, residual: bool):
    x_ref, r_ref, scale_ref, bias_ref, y_ref = refs if residual else (refs[0], None, *refs[1:])
    n_blocks = pl.cdiv(layout.rows, blocks.rows)
    pid = pl.program_id(0)
    g, block = pid // n_blocks, pid % n_blocks
    idx, mask, cols, col_ok = _tile(layout, blocks, H, g, block)
    x_hat, _ = _normalize(x_ref, r_ref, idx, mask, H, eps)
    scale = _load(scale_ref, (g, cols), col_ok)[None, :]
    bias = _load(bias_ref, (g, cols), col_ok)[None, :]
    _store(y_ref, idx, x_hat * scale + bias, mask)


def _backward_kernel(
    *refs, layout: _Layout, blocks: Blocks, H: int, eps: float, residual: bool, steps: int
):
    x_ref, r_ref, scale_ref, dy_ref, dx_ref, dscale_ref, dbias_ref = (
        refs if residual else (refs[0], None, *refs[1:])
    )
    programs = dscale_ref.shape[1]
    pid = pl.program_id(0)
    g, p = pid // programs, pid % programs
    cols = jnp.arange(blocks.width)
    col_ok = cols < H
    scale = _load(scale_ref, (g, cols), col_ok)[None, :]

    def step(i, sums):
        idx, mask, _, _ = _tile(layout, blocks, H, g, p * steps + i)
        x_hat, rstd = _normalize(x_ref, r_ref, idx, mask, H, eps)
        dy = _load(dy_ref, idx, mask)  # 0 on masked lanes, so the sums below need no mask
        g_hat = dy * scale
        dx = rstd * (
            g_hat
            - jnp.sum(g_hat, axis=1, keepdims=True) / H
            - x_hat * (jnp.sum(g_hat * x_hat, axis=1, keepdims=True) / H)
        )
        _store(dx_ref, idx, dx, mask)
        return sums[0] + jnp.sum(dy * x_hat, axis=0), sums[1] + jnp.sum(dy, axis=0)

    zeros = jnp.zeros((blocks.width,), _F32)
    dscale, dbias = lax.fori_loop(0, steps, step, (zeros, zeros))
    _store(dscale_ref, (g, p, cols), dscale, col_ok)
    _store(dbias_ref, (g, p, cols), dbias, col_ok)


def _call(kernel, out_shape, grid: int, blocks: Blocks, stages: int, interpret: bool, name: str):
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(grid,),  # 1-D: Triton's second and third grid axes stop at 65535
        interpret=interpret,
        name=name,
        compiler_params=_TritonParams(num_warps=blocks.num_warps, num_stages=stages),
    )


def forward(
    x: jax.Array,
    residual: jax.Array | None,
    scale: jax.Array,
    bias: jax.Array,
    *,
    eps: float,
    interpret: bool,
) -> jax.Array:
    """`LayerNorm(x [+ residual])` over the last axis, output in x.dtype."""
    H = x.shape[-1]
    layout = _layout(x.shape, scale.shape, bias.shape)
    blocks = block_config(H)
    kernel = partial(
        _forward_kernel,
        layout=layout,
        blocks=blocks,
        H=H,
        eps=eps,
        residual=residual is not None,
    )
    operands = [a.reshape(-1, H) for a in (x, residual) if a is not None]
    operands += [_grouped(p, x.shape, layout) for p in (scale, bias)]
    grid = layout.groups * pl.cdiv(layout.rows, blocks.rows)
    out = jax.ShapeDtypeStruct((layout.groups * layout.rows, H), x.dtype)
    y = _call(kernel, out, grid, blocks, 1, interpret, "ferris_layer_norm_fwd")(*operands)
    return y.reshape(x.shape)


def backward(
    x: jax.Array,
    residual: jax.Array | None,
    scale: jax.Array,
    bias: jax.Array,
    dy: jax.Array,
    *,
    eps: float,
    interpret: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dx, dscale, dbias) of `forward`; dx is also the gradient of the residual."""
    H = x.shape[-1]
    layout = _layout(x.shape, scale.shape, bias.shape)
    blocks = block_config(H)
    n_blocks = pl.cdiv(layout.rows, blocks.rows)
    steps = pl.cdiv(n_blocks, _BWD_PROGRAMS)
    programs = pl.cdiv(n_blocks, steps)
    kernel = partial(
        _backward_kernel,
        layout=layout,
        blocks=blocks,
        H=H,
        eps=eps,
        residual=residual is not None,
        steps=steps,
    )
    operands = [a.reshape(-1, H) for a in (x, residual) if a is not None]
    operands += [_grouped(scale, x.shape, layout), dy.reshape(-1, H)]
    partial_sums = jax.ShapeDtypeStruct((layout.groups, programs, H), _F32)
    out = (jax.ShapeDtypeStruct((layout.groups * layout.rows, H), x.dtype),) + (partial_sums,) * 2
    call = _call(
        kernel, out, layout.groups * programs, blocks, 2, interpret, "ferris_layer_norm_bwd"
    )
    dx, dscale, dbias = call(*operands)

    def param_grad(partials: jax.Array, p: jax.Array) -> jax.Array:
        at_rank = partials.sum(axis=1).reshape(
            layout.lead + (1,) * (x.ndim - 1 - len(layout.lead)) + (H,)
        )
        return sum_to_shape(at_rank, p.shape).astype(p.dtype)

    return dx.reshape(x.shape), param_grad(dscale, scale), param_grad(dbias, bias)
