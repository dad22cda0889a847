"""Pure array operations shared by every model family, and the one mechanism that chooses
how LayerNorm, attention and dense matmuls are implemented (`impl.py`)."""

from ferris_jax.ops.activations import activation
from ferris_jax.ops.attention import attention
from ferris_jax.ops.impl import requested_impls, use_impl
from ferris_jax.ops.layer_norm import (
    add_layer_norm,
    layer_norm,
    reference_layer_norm,
    resolve_impl,
)
from ferris_jax.ops.matmul import dense
from ferris_jax.ops.rotary import rotary_embedding

__all__ = [
    "activation",
    "add_layer_norm",
    "attention",
    "dense",
    "layer_norm",
    "reference_layer_norm",
    "requested_impls",
    "resolve_impl",
    "rotary_embedding",
    "use_impl",
]
