"""The one dense-layer product of every model family, `x @ kernel + bias`.

Two implementations: "xla" (one dot in the compute dtype, as `nnx.Linear` computes it) and
"bfloat16" (operands rounded to bfloat16, products summed in float32, then cast to the
compute dtype). "bfloat16" is an opt-in speed/precision trade for float32 models on
CPUs, where XLA runs such a dot about twice as fast as a float32 one (BENCHMARKS.md, "Matmuls
with bfloat16 operands on the CPU"). "auto" picks per platform from the platform table.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ferris_jax.ops.impl import lowered_per_platform, requested


def dense(
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, impl: str | None = None
) -> jax.Array:
    """`x @ kernel + bias` over the last axis of `x` (`[..., D_in] x [D_in, D_out]`), in the
    promoted dtype of x and kernel (a layer's compute dtype).

    impl: auto | xla | bfloat16 (see the module docstring); default from
    `ops.use_impl(matmul=...)`, else `$FERRIS_JAX_MATMUL`, else "auto".
    """
    impl = requested("matmul", impl)
    if impl != "auto":
        return _IMPLEMENTATIONS[impl](x, kernel, bias)
    return lowered_per_platform("matmul", _IMPLEMENTATIONS.__getitem__, x, kernel, bias)


def _with_bias(y: jax.Array, bias: jax.Array | None) -> jax.Array:
    return y if bias is None else y + bias.astype(y.dtype).reshape((1,) * (y.ndim - 1) + (-1,))


def _xla_dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    return _with_bias(y, bias)


def _bfloat16_dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    y = jax.lax.dot_general(
        x.astype(jnp.bfloat16),
        kernel.astype(jnp.bfloat16),
        (((x.ndim - 1,), (0,)), ((), ())),
        preferred_element_type=jnp.float32,
    )
    return _with_bias(y, bias).astype(jnp.result_type(x.dtype, kernel.dtype))


_IMPLEMENTATIONS = {"xla": _xla_dense, "bfloat16": _bfloat16_dense}
