"""The model as pure functions of (graph, parameters, token arrays), and their compiled programs.

`embed`, `embed_packed`, `token_embeddings` and `score` are the functional core. `Programs` compiles
them once per key: the batch shape, the implementation choice of every op
(`ops.requested_impls`), the parameter structure and the placement (on several devices a
program takes its batch split by rows and the parameters replicated: one SPMD program).
Compiled programs take the parameters as a flat tuple of arrays, since flattening an
`nnx.State` on every call costs more than a small batch's compute. Several new programs
compile in parallel threads (`compile_all`: XLA compiles without holding the GIL),
`$FERRIS_JAX_COMPILE_THREADS` at a time (default: one per CPU).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ferris_jax import ops
from ferris_jax.ops.impl import ImplChoice
from ferris_jax.placement import Placement
from ferris_jax.runtime.compilation import repairing_cache

Shape = tuple[int, ...]  # (batch, length), or (batch, length, texts per row) when packed


def embed(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    token_type_ids: jax.Array | None = None,
    prompt_length: jax.Array | int = 0,
) -> jax.Array:
    """Sentence embeddings `[B, E]` of one text per row (pooling, Dense and Normalize applied)."""
    model = nnx.merge(graphdef, params)
    return model(input_ids, attention_mask, token_type_ids, prompt_length)


def embed_packed(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    input_ids: jax.Array,
    segment_ids: jax.Array,
    positions: jax.Array,
    token_type_ids: jax.Array | None,
    prompt_length: jax.Array | int,
    num_segments: int,
) -> jax.Array:
    """Embeddings `[B, K, E]` of texts packed K = `num_segments` per row at most."""
    model = nnx.merge(graphdef, params)
    return model.packed(
        input_ids, segment_ids, positions, token_type_ids, prompt_length, num_segments
    )


def token_embeddings(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    token_type_ids: jax.Array | None = None,
) -> jax.Array:
    """The backbone's last hidden state `[B, L, D]`."""
    model = nnx.merge(graphdef, params)
    return model.token_embeddings(input_ids, attention_mask, token_type_ids)


def score(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    token_type_ids: jax.Array | None = None,
) -> jax.Array:
    """Logits `[B, num_labels]` of a sequence classifier (a cross-encoder), one text pair per
    row. A `SequenceClassifier` is called as an embedder is, so `Programs` compiles it too."""
    model = nnx.merge(graphdef, params)
    return model(input_ids, attention_mask, token_type_ids)


def _embed_flat(
    graphdef: nnx.GraphDef, treedef: Any, impls: ImplChoice, leaves: tuple, *args: Any
) -> jax.Array:
    with ops.use_impl(**dict(impls)):
        return embed(graphdef, jax.tree.unflatten(treedef, leaves), *args)


def _embed_packed_flat(
    graphdef: nnx.GraphDef,
    treedef: Any,
    impls: ImplChoice,
    num_segments: int,
    leaves: tuple,
    *args: Any,
) -> jax.Array:
    with ops.use_impl(**dict(impls)):
        return embed_packed(graphdef, jax.tree.unflatten(treedef, leaves), *args, num_segments)


def compile_threads() -> int:
    """How many programs compile at once: `$FERRIS_JAX_COMPILE_THREADS`, else one per CPU."""
    value = os.environ.get("FERRIS_JAX_COMPILE_THREADS")
    if value is None:
        return os.cpu_count() or 1
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"FERRIS_JAX_COMPILE_THREADS={value!r}: expected a whole number >= 1")
    return threads


class Programs:
    """The compiled programs of one model, one per (shape, implementation choice): a
    `SentenceEmbedder`'s embeddings, or a `SequenceClassifier`'s logits (same call signature).

    A program is called as `program(leaves, *inputs)` with `leaves` from `flat_params(params)`
    and `inputs(token arrays, prompt length)`. Replacing the parameters by
    arrays of another structure drops the programs compiled for the old one.
    """

    def __init__(self, graphdef: nnx.GraphDef, placement: Placement):
        self.graphdef = graphdef
        self.placement = placement
        self._jitted = jax.jit(functools.partial(_embed_flat, graphdef), static_argnums=(0, 1))
        self._jitted_packed = jax.jit(
            functools.partial(_embed_packed_flat, graphdef), static_argnums=(0, 1, 2)
        )
        self.compile_seconds = 0.0
        self._compiled: dict[tuple[Shape, ImplChoice, Placement], Any] = {}
        self._flat: tuple[nnx.State, tuple[jax.Array, ...], tuple[Any, tuple]] | None = None

    def flat_params(self, params: nnx.State) -> tuple[tuple[jax.Array, ...], Any]:
        """`params` as (leaves, treedef), recomputed only when another object is passed.
        Parameters of another structure, shape or dtype drop the programs compiled so far."""
        if self._flat is None or self._flat[0] is not params:
            leaves, treedef = jax.tree.flatten(params)
            signature = (treedef, tuple((x.shape, x.dtype) for x in leaves))
            if self._flat is not None and signature != self._flat[2]:
                self._compiled.clear()  # programs are per parameter structure and dtype
            self._flat = (params, tuple(leaves), signature)
        return self._flat[1], self._flat[2][0]

    def lower(self, params: nnx.State, shape: Shape, impls: ImplChoice) -> jax.stages.Lowered:
        """The program for `shape` under `impls`, lowered (`.as_text()`: StableHLO)."""
        # One device: the arrays' device decides (as it always did); several: rows split.
        mesh = self.placement.mesh is not None
        rows, whole = (self.placement.rows, self.placement.replicated) if mesh else (None, None)
        spec = jax.ShapeDtypeStruct(shape[:2], jnp.int32, sharding=rows)
        scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=whole)
        leaves, treedef = self.flat_params(params)
        if len(shape) == 3:
            return self._jitted_packed.lower(
                treedef, impls, shape[2], leaves, spec, spec, spec, spec, scalar
            )
        return self._jitted.lower(treedef, impls, leaves, spec, spec, spec, scalar)

    def get(self, params: nnx.State, shape: Shape, impls: ImplChoice) -> Any:
        """The compiled program for `shape` under `impls`, compiled on first use."""
        key = (shape, impls, self.placement)
        program = self._compiled.get(key)
        if program is None:
            start = time.perf_counter()
            with repairing_cache():
                program = self._compiled[key] = self.lower(params, shape, impls).compile()
            self.compile_seconds += time.perf_counter() - start
        return program

    def has(self, shape: Shape, impls: ImplChoice) -> bool:
        """Whether the program for `shape` under `impls` is compiled."""
        return (shape, impls, self.placement) in self._compiled

    def compile_all(self, params: nnx.State, shapes: Iterable[Shape], impls: ImplChoice) -> None:
        """Compile the programs of `shapes` not compiled yet, in parallel threads: a job's
        first batches then wait for its slowest new program, not for the sum of them."""
        self.flat_params(params)  # once, before the threads read it
        missing = sorted({shape for shape in shapes if not self.has(shape, impls)})
        workers = min(len(missing), compile_threads())
        if workers <= 1:
            for shape in missing:
                self.get(params, shape, impls)
            return
        start = time.perf_counter()
        pool = ThreadPoolExecutor(workers, thread_name_prefix="ferris-compile")
        try:
            with repairing_cache():
                futures = [
                    pool.submit(lambda s: self.lower(params, s, impls).compile(), shape)
                    for shape in missing
                ]
                compiled = [future.result() for future in futures]
        finally:  # on Ctrl-C, return at once; compiles already running finish in the background
            pool.shutdown(wait=False, cancel_futures=True)
        for shape, program in zip(missing, compiled, strict=True):
            self._compiled[(shape, impls, self.placement)] = program
        self.compile_seconds += time.perf_counter() - start

    def inputs(self, arrays: tuple[np.ndarray, ...], prompt_length: int) -> tuple[Any, ...]:
        """A batch's host token arrays and prompt length as its program takes them: as they
        are on one device (the call copies them), split by rows over several devices."""
        prompt = np.int32(prompt_length)
        if self.placement.mesh is None:
            return (*arrays, prompt)
        return (*self.placement.put_rows(arrays), self.placement.put(prompt))

    @property
    def keys(self) -> list[tuple[Shape, ImplChoice]]:
        """Every (shape, implementation choice) compiled so far, sorted."""
        return sorted((shape, impls) for shape, impls, _ in self._compiled)

    @property
    def shapes(self) -> list[Shape]:
        """The distinct shapes compiled so far, sorted."""
        return sorted({shape for shape, _, _ in self._compiled})

    def __len__(self) -> int:
        return len(self._compiled)
