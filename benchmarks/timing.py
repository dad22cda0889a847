"""Waiting for results before a clock is read, on every platform.

On metaljax `jax.block_until_ready` returns at once (its README: "a no-op on this backend"), so on
the Apple GPU plugins a timed result is copied to the host instead, which waits for it.
"""

from __future__ import annotations

from typing import Any

import jax

from ferris_jax.platforms import APPLE_PLATFORMS, platform_of


def on_apple_gpu(tree: Any) -> bool:
    """Whether any array of `tree` lives on an Apple GPU plugin's device."""
    return any(
        platform_of(d) in APPLE_PLATFORMS
        for leaf in jax.tree.leaves(tree)
        if isinstance(leaf, jax.Array)
        for d in leaf.devices()
    )


def ready(tree: Any) -> Any:
    """`tree` once computed: a host copy on Apple GPU plugins, `block_until_ready` elsewhere."""
    if on_apple_gpu(tree):
        jax.device_get(tree)
        return tree
    return jax.block_until_ready(tree)
