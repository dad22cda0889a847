"""The `hidden_act` / activation names found in Hugging Face and sentence-transformers configs."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp


def _quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # Hugging Face `hidden_act` values
    "gelu": partial(jax.nn.gelu, approximate=False),  # exact erf GELU
    "gelu_new": partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": partial(jax.nn.gelu, approximate=True),
    "gelu_fast": partial(jax.nn.gelu, approximate=True),
    "quick_gelu": _quick_gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "linear": lambda x: x,
    # torch.nn class names used by sentence-transformers' Dense module
    "identity": lambda x: x,
    "relu6": jax.nn.relu6,
    "leakyrelu": jax.nn.leaky_relu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The function for a config name such as "gelu" or "torch.nn.modules.activation.Tanh"."""
    key = name.rsplit(".", 1)[-1].lower()
    if key not in _ACTIVATIONS:
        raise ValueError(
            f"unsupported activation {name!r}; supported: {', '.join(sorted(_ACTIVATIONS))}"
        )
    return _ACTIVATIONS[key]
