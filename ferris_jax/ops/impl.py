"""One mechanism to choose how an op is implemented (LayerNorm, attention, dense matmuls).

A request is, in order of precedence: the op's `impl=` argument, the innermost
`use_impl(...)` block, the op's environment variable, else "auto". Requests are read while a
program is traced, and "auto" is resolved for the platform the program is lowered for, from
`platforms.defaults_for(platform)`. `requested_impls()` is the whole request as a hashable key:
the encoder's compiled programs are cached under it, so a new choice compiles a new program
instead of being ignored.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax

from ferris_jax.platforms import (
    UNKNOWN_PLATFORM,
    defaults_for,
    lowering_platforms,
    table_name,
)

# op -> the implementations it has ("auto" first: resolved per platform).
IMPLS: dict[str, tuple[str, ...]] = {
    "layer_norm": ("auto", "xla", "pallas", "pallas_interpret"),
    "attention": ("auto", "einsum", "jax", "cudnn"),
    "matmul": ("auto", "xla", "bfloat16"),
}
ENV_VARS = {
    "layer_norm": "FERRIS_JAX_LAYER_NORM",
    "attention": "FERRIS_JAX_ATTENTION",
    "matmul": "FERRIS_JAX_MATMUL",
}

ImplChoice = tuple[tuple[str, str], ...]  # sorted (op, requested impl) pairs

_overrides: contextvars.ContextVar[ImplChoice] = contextvars.ContextVar(
    "ferris_jax_impl_overrides", default=()
)


def check_impls(choices: Mapping[str, str | None]) -> dict[str, str]:
    """`choices` without None values; ValueError naming an unknown op or implementation."""
    checked = {}
    for op, impl in choices.items():
        if op not in IMPLS:
            raise ValueError(f"unknown op {op!r} in an implementation choice; ops: {sorted(IMPLS)}")
        if impl is None:
            continue
        if impl not in IMPLS[op]:
            raise ValueError(
                f"{op} impl {impl!r} is not available; choose one of {', '.join(IMPLS[op])} "
                f"(argument `impl=`, `ferris_jax.ops.use_impl({op}=...)`, "
                f"`load(..., impls={{{op!r}: ...}})` or ${ENV_VARS[op]})"
            )
        checked[op] = impl
    return checked


def requested(op: str, impl: str | None = None) -> str:
    """What is asked for `op` now: `impl` > `use_impl` block > environment > "auto"."""
    choice = impl or dict(_overrides.get()).get(op) or os.environ.get(ENV_VARS[op]) or "auto"
    return check_impls({op: choice})[op]


def requested_impls(fixed: Mapping[str, str | None] | None = None) -> ImplChoice:
    """Every op's request now, with `fixed` (e.g. an encoder's `impls`) taking precedence."""
    fixed = check_impls(fixed or {})
    return tuple(sorted((op, fixed.get(op) or requested(op)) for op in IMPLS))


@contextlib.contextmanager
def use_impl(layer_norm_impl: str | None = None, /, **choices: str | None) -> Iterator[None]:
    """Select implementations for the calls traced inside this block, e.g.
    `use_impl(layer_norm="xla", attention="einsum")`; None leaves an op as it is."""
    if layer_norm_impl is not None:  # the old LayerNorm-only form, use_impl("xla")
        warnings.warn(
            "use_impl(impl) is deprecated: use use_impl(layer_norm=impl)",
            DeprecationWarning,
            stacklevel=3,
        )
        choices.setdefault("layer_norm", layer_norm_impl)
    token = _overrides.set(tuple({**dict(_overrides.get()), **check_impls(choices)}.items()))
    try:
        yield
    finally:
        _overrides.reset(token)


def auto_impl(op: str, platform: str) -> str:
    """What "auto" runs for `op` on `platform` (a table name, or the name JAX lowers for)."""
    return getattr(defaults_for(table_name(platform)), op)


def lowered_per_platform(
    op: str, function_for: Callable[[str], Callable], *args: Any, **overrides: str
) -> Any:
    """`function_for(name)(*args)` with `name` the "auto" choice of `op` (or `overrides[platform]`)
    for the platform the program is lowered for; one branch per platform that differs from the
    choice for unknown platforms (the default)."""
    default = getattr(UNKNOWN_PLATFORM, op)
    names = {p: overrides.get(p) or auto_impl(op, p) for p in lowering_platforms()}
    branches = {p: function_for(name) for p, name in names.items() if name != default}
    if not branches:
        return function_for(default)(*args)
    return jax.lax.platform_dependent(*args, default=function_for(default), **branches)
