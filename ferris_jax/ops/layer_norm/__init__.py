"""The one LayerNorm primitive: `reference.py` (jnp forward and backward), `pallas.py` (the
Triton kernels, loaded only when lowered for a GPU) and `primitive.py` (the primitive, its
lowerings and the public functions)."""

from ferris_jax.ops.layer_norm.primitive import add_layer_norm, layer_norm, resolve_impl
from ferris_jax.ops.layer_norm.reference import reference_layer_norm, reference_layer_norm_bwd

__all__ = [
    "add_layer_norm",
    "layer_norm",
    "reference_layer_norm",
    "reference_layer_norm_bwd",
    "resolve_impl",
]
