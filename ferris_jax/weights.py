"""One weight-mapping mechanism for every family, both directions: PyTorch tensor names <->
NNX parameter paths.

A family declares a table of `Rule(source, target, kind)`; `{i}` stands for a layer index.
The kind says which tensor suffixes exist and how each is transformed (linear weights are
transposed between torch's `[out, in]` and Flax's `[in, out]` kernel; a transpose is its own
inverse, so loading and saving use the same transform). `lookup` maps a checkpoint name to a
parameter path (loading), `source_name` a parameter path back to its checkpoint name (saving);
`fill_params` and `to_tensors` apply them to a whole checkpoint.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ferris_jax.errors import CheckpointError
from ferris_jax.placement import Placement

Transform = Callable[[Any], Any] | None


def _T(a):
    return a.T  # torch Linear [out, in] -> Flax kernel [in, out]


# kind -> {torch suffix: (our leaf name, transform)}; saving uses each leaf's first suffix.
LINEAR = "linear"
EMBED = "embed"
NORM = "norm"
_SUFFIXES: dict[str, dict[str, tuple[str, Transform]]] = {
    LINEAR: {"weight": ("kernel", _T), "bias": ("bias", None)},
    EMBED: {"weight": ("embedding", None)},
    NORM: {
        "weight": ("scale", None),
        "gamma": ("scale", None),
        "bias": ("bias", None),
        "beta": ("bias", None),
    },
}

Path = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Rule:
    """Maps torch module `source` (e.g. "encoder.layer.{i}.output.dense") to our `target`."""

    source: str
    target: str
    kind: str


@dataclasses.dataclass(frozen=True)
class WeightMap:
    """A compiled rule table plus the names a checkpoint may carry that we deliberately skip."""

    rules: Sequence[Rule]
    ignored: Sequence[str] = ()
    prefixes: Sequence[str] = ()
    target_prefix: Path = ()

    def __post_init__(self) -> None:
        compiled = []
        for rule in self.rules:
            pattern = re.escape(rule.source).replace(re.escape("{i}"), r"(?P<i>\d+)")
            suffixes = "|".join(_SUFFIXES[rule.kind])
            compiled.append((re.compile(rf"{pattern}\.(?P<suffix>{suffixes})"), rule))
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "_ignored", [re.compile(p) for p in self.ignored])
        targets = []
        for rule in self.rules:
            pattern = re.escape(rule.target).replace(re.escape("{i}"), r"(?P<i>\d+)")
            targets.append((re.compile(pattern), rule))
        object.__setattr__(self, "_targets", targets)

    def strip_prefix(self, name: str) -> str:
        for prefix in self.prefixes:
            if name.startswith(prefix):
                return name[len(prefix) :]
        return name

    def is_ignored(self, name: str) -> bool:
        name = self.strip_prefix(name)
        return any(p.fullmatch(name) for p in self._ignored)

    def lookup(self, name: str) -> tuple[Path, Transform] | None:
        """The parameter path and transform for checkpoint tensor `name`, or None if unknown."""
        name = self.strip_prefix(name)
        for regex, rule in self._compiled:
            m = regex.fullmatch(name)
            if m:
                leaf, transform = _SUFFIXES[rule.kind][m["suffix"]]
                target = rule.target.replace("{i}", m["i"]) if "{i}" in rule.target else rule.target
                path = tuple(int(p) if p.isdigit() else p for p in target.split(".") if p)
                return (*self.target_prefix, *path, leaf), transform
        return None

    def source_name(self, path: Path) -> tuple[str, Transform] | None:
        """The checkpoint tensor name (without a prefix) that parameter `path` is saved as, and
        the transform to torch's layout; None if no rule maps the path."""
        n = len(self.target_prefix)
        if tuple(path[:n]) != tuple(self.target_prefix) or len(path) <= n:
            return None
        *module, leaf = path[n:]
        target = format_path(module)
        for regex, rule in self._targets:
            m = regex.fullmatch(target)
            if m is None:
                continue
            for suffix, (name, transform) in _SUFFIXES[rule.kind].items():
                if name == leaf:
                    source = (
                        rule.source.replace("{i}", m["i"]) if "{i}" in rule.source else rule.source
                    )
                    return (f"{source}.{suffix}" if source else suffix), transform
        return None


def dense_weight_map(index: int) -> WeightMap:
    """sentence-transformers' Dense module number `index` (its own file: linear.weight, .bias)."""
    return WeightMap([Rule("linear", "", LINEAR)], target_prefix=("dense", index))


def format_path(path: Iterable[str | int]) -> str:
    return ".".join(str(p) for p in path)


@dataclasses.dataclass(frozen=True)
class TensorSource:
    """One tensor of a checkpoint file, read only when it is needed."""

    file: str
    name: str
    shape: tuple[int, ...]
    read: Callable[[], jax.Array]
    weight_map: WeightMap


def fill_params(
    expected: dict[Path, jax.ShapeDtypeStruct],
    sources: Iterable[TensorSource],
    *,
    dtype: jnp.dtype,
    placement: Placement | None = None,
) -> dict[Path, jax.Array]:
    """Read every tensor into the parameter it maps to; strict, one error listing every problem.

    Tensors are read one at a time and placed by `placement` (default: JAX's default device,
    uncommitted) in `dtype`, so the host never holds a second full copy of the weights.
    Raises `CheckpointError` naming each unexpected, misshapen or missing tensor.
    """
    filled: dict[Path, jax.Array] = {}
    misshapen: set[Path] = set()
    problems: list[str] = []
    for src in sources:
        if src.weight_map.is_ignored(src.name):
            continue
        found = src.weight_map.lookup(src.name)
        if found is None or found[0] not in expected:
            problems.append(f"unexpected tensor {src.name!r} {src.shape} in {src.file}")
            continue
        path, transform = found
        want = expected[path].shape
        got = tuple(reversed(src.shape)) if transform is not None else src.shape
        if got != want:
            problems.append(
                f"tensor {src.name!r} in {src.file} has shape {src.shape}; parameter "
                f"{format_path(path)} needs {want}" + (" (after transposing)" if transform else "")
            )
            misshapen.add(path)
            continue
        if path in filled:
            problems.append(
                f"tensor {src.name!r} in {src.file} fills {format_path(path)} a second time"
            )
            continue
        try:
            array = src.read()
        except Exception as e:  # corrupt or truncated data
            raise CheckpointError(f"{src.file}: cannot read tensor {src.name!r}: {e}") from e
        array = transform(array) if transform else array
        value = jnp.asarray(array, dtype=dtype)
        filled[path] = placement.put(value) if placement is not None else value
        del array
    missing = [p for p in expected if p not in filled and p not in misshapen]
    problems += [
        f"missing parameter {format_path(p)} {expected[p].shape}: "
        "no tensor in the checkpoint maps to it"
        for p in missing
    ]
    if problems:
        raise CheckpointError(
            f"checkpoint does not match the model ({len(problems)} problem(s)):\n  "
            + "\n  ".join(problems)
        )
    return filled


def to_tensors(
    params: Iterable[tuple[Path, Any]], weight_maps: Sequence[WeightMap]
) -> list[dict[str, np.ndarray]]:
    """The inverse of `fill_params`: every parameter as the checkpoint tensor it is saved as.

    Returns one `{tensor name: host array}` dict per weight map (the first map naming a path
    takes it), in torch's layout and the parameter's own dtype. Nothing is dropped: raises
    `CheckpointError` listing every parameter no map names and every name given twice.
    """
    tensors: list[dict[str, np.ndarray]] = [{} for _ in weight_maps]
    problems: list[str] = []
    for path, value in params:
        found = next(
            ((i, named) for i, m in enumerate(weight_maps) if (named := m.source_name(path))),
            None,
        )
        if found is None:
            problems.append(
                f"parameter {format_path(path)} {tuple(value.shape)}: no weight-map rule names it"
            )
            continue
        i, (name, transform) = found
        if name in tensors[i]:
            problems.append(f"parameter {format_path(path)} is saved as {name!r} a second time")
            continue
        array = np.asarray(value)  # to the host, dtype kept (bfloat16 through ml_dtypes)
        # safetensors writes the raw buffer: a transposed view must be made contiguous.
        tensors[i][name] = np.ascontiguousarray(transform(array) if transform else array)
    if problems:
        raise CheckpointError(
            f"parameters cannot be saved ({len(problems)} problem(s)); add a weight-map rule "
            "for each:\n  " + "\n  ".join(problems)
        )
    return tensors
