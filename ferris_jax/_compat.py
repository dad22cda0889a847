"""Version shims, in one place: ferris-jax supports jax >= 0.4.35 and flax >= 0.10.4
(the stack Apple's jax-metal runs) as well as current releases."""

from __future__ import annotations

from typing import Any

from flax import nnx

# flax < 0.11 has no nnx.List; there a plain list of Modules is already part of the graph
# (parameter paths `layers.0.…` are the same).
nnx_list = getattr(nnx, "List", list)


def variable_value(var: Any) -> Any:
    """The array held by an nnx Variable (flax >= 0.12: `get_value()`; flax 0.10: `.value`)."""
    return var.get_value() if hasattr(var, "get_value") else var.value


def register_dataclass(cls: type | None = None, *, meta: tuple[str, ...] = ()) -> Any:
    """`jax.tree_util.register_dataclass` with every field a child but the static ones named
    in `meta` (jax < 0.4.36 needs the field lists spelled out). A class decorator, bare or
    called: `@register_dataclass` or `@register_dataclass(meta=("n",))`."""
    import dataclasses

    import jax

    def register(cls: type) -> type:
        fields = [f.name for f in dataclasses.fields(cls) if f.name not in meta]
        return jax.tree_util.register_dataclass(cls, data_fields=fields, meta_fields=list(meta))

    return register if cls is None else register(cls)


def shard_map(f: Any, mesh: Any, in_specs: Any, out_specs: Any) -> Any:
    """`jax.shard_map` (jax >= 0.7), else `jax.experimental.shard_map.shard_map`, without the
    replication check: outputs declared replicated (`P()`) are ones every device computes
    alike from gathered values, which the check cannot always infer (e.g. through a sort)."""
    import jax

    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map as experimental_shard_map

    return experimental_shard_map(f, mesh, in_specs, out_specs, check_rep=False)
