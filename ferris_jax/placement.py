"""Where arrays live: the one owner of placement.

A `Placement` is made once, when a model is loaded (`ferris_jax.load` picks the devices; see
`runtime.backend`), and passed down: the weights are put through it, the encoder's batches and
results, the index's device blocks and queries, and the train state and batches. Nothing else
picks a device (no `jax.devices()`, no reading an array's `.devices()` to decide where work
goes; tests/test_layering.py checks it).

A placement is one device, or several (of one process or of several, after
`jax.distributed.initialize`) in a one-axis `Mesh` named "data": parameters are replicated on
every device and batches are split by rows (data parallel), so a batch's rows must divide over
the devices (`rows_multiple`; the bucket policy asks it). On one device every method is a plain
`jax.device_put` to it, as before there was a mesh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ferris_jax.platforms import platform_of

T = TypeVar("T")

AXIS = "data"  # the mesh axis batches (and an index's corpus rows) are split along


@dataclasses.dataclass(frozen=True)
class Placement:
    """The devices a model's arrays live on.

    Attributes:
        devices: one device, or several of one platform forming the data-parallel mesh.
    """

    devices: tuple[jax.Device, ...]
    mesh: Mesh | None = dataclasses.field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        devices = tuple(self.devices)
        if not devices:
            raise ValueError("a placement needs at least one device")
        object.__setattr__(self, "devices", devices)
        if len(devices) > 1:
            if len(set(devices)) != len(devices):
                raise ValueError(f"devices must be distinct, got {list(devices)}")
            platforms = {platform_of(d) for d in devices}
            if len(platforms) > 1:
                raise ValueError(f"devices must share one platform, got {sorted(platforms)}")
            object.__setattr__(self, "mesh", Mesh(np.array(devices), (AXIS,)))

    @classmethod
    def on(cls, devices: jax.Device | Sequence[jax.Device]) -> Placement:
        """A placement on one device or over several."""
        if isinstance(devices, (list, tuple)):
            return cls(tuple(devices))
        return cls((devices,))

    @classmethod
    def default(cls) -> Placement:
        """JAX's default device (for arrays not tied to a model, e.g. an index of vectors)."""
        return cls((jax.devices()[0],))

    @classmethod
    def of(cls, value: Any) -> Placement:
        """Where the arrays of `value` (an array or a pytree) live: its first array's devices."""
        leaf = next(x for x in jax.tree.leaves(value) if isinstance(x, jax.Array))
        sharding = leaf.sharding
        if isinstance(sharding, NamedSharding) and sharding.mesh.size > 1:
            return cls(tuple(sharding.mesh.devices.flat))
        return cls((next(iter(leaf.devices())),))

    @property
    def device(self) -> jax.Device:
        """The first device (the only one, on one device)."""
        return self.devices[0]

    @property
    def platform(self) -> str:
        """The platform table's name of the devices ("cuda", not JAX's "gpu")."""
        return platform_of(self.device)

    @property
    def rows_multiple(self) -> int:
        """A batch's (or corpus block's) rows must be a multiple of this: the device count."""
        return len(self.devices)

    @property
    def replicated(self) -> jax.sharding.Sharding:
        """The sharding of parameters and queries: a whole copy on every device."""
        if self.mesh is None:
            return jax.sharding.SingleDeviceSharding(self.device)
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def rows(self) -> jax.sharding.Sharding:
        """The sharding of batches and corpus blocks: split by rows (the first axis)."""
        return self.split(0)

    def split(self, axis: int) -> jax.sharding.Sharding:
        """The sharding that splits arrays along `axis` over the devices."""
        if self.mesh is None:
            return jax.sharding.SingleDeviceSharding(self.device)
        return NamedSharding(self.mesh, PartitionSpec(*[None] * axis, AXIS))

    @property
    def is_multi_process(self) -> bool:
        """Whether some devices belong to other processes (`jax.distributed`)."""
        return any(d.process_index != jax.process_index() for d in self.devices)

    def put(self, value: T) -> T:
        """`value` (an array or a pytree of them, host or device) whole on every device."""
        return self._put(value, self.replicated)

    def put_rows(self, value: T) -> T:
        """`value`'s arrays split by their first axis over the devices (each leaf's first
        dimension a multiple of `rows_multiple`)."""
        return self._put(value, self.rows)

    def _put(self, value: T, sharding: jax.sharding.Sharding) -> T:
        if self.mesh is None:
            return jax.device_put(value, self.device)
        if self.is_multi_process:  # every process passes the same host value; each puts its part
            return jax.tree.map(lambda x: _global_from_host(np.asarray(x), sharding), value)
        return jax.device_put(value, sharding)

    def __str__(self) -> str:
        if self.mesh is None:
            return str(self.device)
        return f"{len(self.devices)} x {self.device.platform} ({', '.join(map(str, self.devices))})"


def to_host(array: jax.Array) -> np.ndarray:
    """`array` whole on the host. An array split over the devices of several processes is
    gathered from all of them first (a collective: every process must call this)."""
    if not array.is_fully_addressable and not array.is_fully_replicated:
        from jax.experimental import multihost_utils

        array = multihost_utils.process_allgather(array, tiled=True)
    return np.asarray(array)


def _global_from_host(x: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
