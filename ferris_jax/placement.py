"""Where arrays live: the one owner of placement.

A `Placement` is made once, when a model is loaded (`ferris_jax.load` picks the device; see
`runtime.backend`), and passed down: the weights are put through it, the encoder's results, the
index's device blocks and queries, and the train state. Nothing else picks a device (no
`jax.devices()`, no reading an array's `.devices()` to decide where work goes;
tests/test_layering.py checks it), so that placing a model over several devices (a `Mesh`
with data-parallel batches) changes this file and not ten others.

Today a placement is one device.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax

from ferris_jax.platforms import platform_of

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Placement:
    """The devices a model's arrays live on (one, for now).

    Attributes:
        device: the device parameters, batches and results are put on.
    """

    device: jax.Device

    @classmethod
    def default(cls) -> Placement:
        """JAX's default device (for arrays not tied to a model, e.g. an index of vectors)."""
        return cls(jax.devices()[0])

    @classmethod
    def of(cls, value: Any) -> Placement:
        """Where the arrays of `value` (an array or a pytree) live: its first array's device."""
        leaf = next(x for x in jax.tree.leaves(value) if isinstance(x, jax.Array))
        return cls(next(iter(leaf.devices())))

    @property
    def platform(self) -> str:
        """The platform table's name of the device ("cuda", not JAX's "gpu")."""
        return platform_of(self.device)

    def put(self, value: T) -> T:
        """`value` (an array or a pytree of them, host or device) placed here."""
        return jax.device_put(value, self.device)

    def __str__(self) -> str:
        return str(self.device)
