"""`ExactSearch`: the exact search backend. A copy of the vectors on the device in equal blocks,
in the search precision (float32, bfloat16, int8 or binary; the last three re-ranked with the
float32 vectors), searched by the pure kernels of `retrieval.search`.

Blocks and their live masks are rebuilt lazily, only where rows changed since the last search.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ferris_jax.placement import Placement
from ferris_jax.quantization import quantization_ranges, quantize_embeddings
from ferris_jax.retrieval import search as kernels
from ferris_jax.retrieval.backends import RowFilter
from ferris_jax.retrieval.vectors import VectorStore

# Search precisions: how the device copy of the vectors is stored.
PRECISIONS = ("float32", "bfloat16", "int8", "binary")
# Rows per device block once the index is larger (smaller indexes use one block of the next power
# of two rows, at least MIN_BLOCK_ROWS), so a search compiles a few programs at most.
BLOCK_ROWS = 1 << 18
MIN_BLOCK_ROWS = 1 << 10
# Candidates per result re-ranked with float32 vectors after a bfloat16 search.
BFLOAT16_CANDIDATES = 2
# Rows whose vectors the int8 ranges are computed from (a sample of the live rows).
RANGE_SAMPLE_ROWS = 100_000


class ExactSearch:
    """Exact top-k over `vectors` on the device (`placement`), in `precision`.

    `lock` is the catalog's: held while the device copy is read or rebuilt, released while the
    device searches."""

    def __init__(
        self, vectors: VectorStore, precision: str, placement: Placement, lock: threading.RLock
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.vectors = vectors
        self.precision = precision
        self.placement = placement
        self.ranges: np.ndarray | None = None  # int8: the [2, D] quantization ranges
        self.ranges_rows = 0  # rows the ranges were computed over
        self._lock = lock
        self._blocks: dict[int, tuple[int, jax.Array]] = {}  # block -> (version, device array)
        self._masks: dict[int, tuple[int, jax.Array]] = {}
        self._versions: dict[int, int] = {}  # block -> version of its rows
        self._mask_versions: dict[int, int] = {}
        self.block_shape: tuple[int, int] | None = None

    # ------------------------------------------------------------------ changes
    def changed(self, rows: np.ndarray, *, data: bool) -> None:
        """Mark the blocks holding `rows` changed (their data, or only their live mask)."""
        for b in np.unique(np.asarray(rows, np.int64) // self.rows_per_block()).tolist():
            self._mask_versions[b] = self._mask_versions.get(b, 0) + 1
            if data:
                self._versions[b] = self._versions.get(b, 0) + 1

    def reset(self) -> None:
        self._blocks.clear()
        self._masks.clear()
        self._versions.clear()
        self._mask_versions.clear()
        self.block_shape = None

    # ------------------------------------------------------------------ searching
    def search(
        self,
        queries: np.ndarray | jax.Array,
        k: int,
        allowed: RowFilter | None,
        *,
        rescore: bool = True,
        finite: jax.Array | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) `[Q, k]`; queries `[Q, D]` (unit length for cosine). `finite`: a
        device flag per query, brought back with the results (`check_finite`)."""
        return self.begin_search(queries, k, allowed, rescore=rescore, finite=finite)()

    def begin_search(
        self,
        queries: np.ndarray | jax.Array,
        k: int,
        allowed: RowFilter | None,
        *,
        rescore: bool = True,
        finite: jax.Array | None = None,
    ) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """`search`, started on the device: the host is free (for a lexical search) until the
        returned function is called for the results."""
        with self._lock:
            if self.vectors.rows == 0:
                check_finite(finite)
                Q = len(queries)
                empty = np.full((Q, k), -np.inf, np.float32), np.full((Q, k), -1, np.int64)
                return lambda: empty
            blocks = self.blocks()
            masks = self._device_masks(allowed)
            ranges = self.ranges
        q = self.placement.put(queries)
        quantized = self.precision != "float32"
        if self.precision in ("int8", "binary"):
            precision = "int8" if self.precision == "int8" else "ubinary"
            scores, rows = kernels.search_blocks(
                q, blocks, k, valid=masks, precision=precision, ranges=ranges,
                candidates=rescore, mesh=self.placement.mesh,
            )  # fmt: skip
        else:
            n = k * BFLOAT16_CANDIDATES if quantized and rescore else k
            mesh = self.placement.mesh
            scores, rows = kernels.search_blocks(q, blocks, n, valid=masks, mesh=mesh)

        def finish() -> tuple[np.ndarray, np.ndarray]:
            nonlocal scores, rows
            if quantized and rescore:
                found = np.asarray(rows).astype(np.int64)
                with self._lock:
                    candidates = self.vectors.gather(np.maximum(found, 0).ravel())
                candidates = candidates.reshape(*found.shape, self.vectors.dimension)
                scores, rows = kernels.rescore(q, self.placement.put(candidates), rows, k)
            for result in (scores, rows) if finite is None else (scores, rows, finite):
                result.copy_to_host_async()  # every copy under way before waiting for any
            check_finite(finite)
            scores_np, rows_np = np.asarray(scores, np.float32), np.asarray(rows).astype(np.int64)
            return scores_np[:, :k], rows_np[:, :k]

        return finish

    # ------------------------------------------------------------------ the device copy
    def blocks(self) -> list[jax.Array]:
        """The vectors on the device in equal blocks, in the search precision (rebuilt where
        rows changed since the last search). Under the lock."""
        vectors = self.vectors
        if self.precision == "int8" and (
            self.ranges is None or vectors.rows > 2 * self.ranges_rows
        ):
            # Ranges from the vectors themselves, as sentence-transformers computes them; again
            # once the index has doubled, re-quantizing every block.
            alive = np.flatnonzero(vectors.live)
            sample = alive[:: max(1, len(alive) // RANGE_SAMPLE_ROWS)]
            self.ranges = quantization_ranges(
                vectors.gather(np.resize(sample, max(len(sample), 2)))
            )
            self.ranges_rows = vectors.rows
            self._blocks.clear()
        R = self.rows_per_block()
        if self.block_shape != (R, vectors.dimension):
            self.reset()
            self.block_shape = (R, vectors.dimension)
        blocks = []
        for b in range(math.ceil(vectors.rows / R)):
            version = self._versions.get(b, 0)
            cached = self._blocks.get(b)
            if cached is None or cached[0] != version:
                stop = min((b + 1) * R, vectors.rows)
                host = np.zeros((R, vectors.dimension), np.float32)
                host[: stop - b * R] = vectors.gather(np.arange(b * R, stop))
                cached = (version, self.placement.put_rows(self._quantize(host)))
                self._blocks[b] = cached
            blocks.append(cached[1])
        return blocks

    def _device_masks(self, allowed: RowFilter | None) -> list[jax.Array]:
        R = self.rows_per_block()
        n = math.ceil(self.vectors.rows / R)
        if allowed is not None:
            return [self.placement.put_rows(m) for m in np.split(allowed.mask(n * R), n)]
        alive = np.zeros(n * R, bool)
        alive[: self.vectors.rows] = self.vectors.live
        masks = []
        for b, mask in enumerate(np.split(alive, n)):
            version = self._mask_versions.get(b, 0)
            cached = self._masks.get(b)
            if cached is None or cached[0] != version:
                cached = (version, self.placement.put_rows(mask))
                self._masks[b] = cached
            masks.append(cached[1])
        return masks

    def _quantize(self, vectors: np.ndarray) -> np.ndarray | jax.Array:
        if self.precision == "bfloat16":
            return jnp.asarray(vectors, jnp.bfloat16)
        if self.precision == "int8":
            return quantize_embeddings(vectors, "int8", ranges=self.ranges)
        if self.precision == "binary":
            return quantize_embeddings(vectors, "ubinary")
        return vectors

    def rows_per_block(self) -> int:
        """Rows per device block: a power of two, rounded up to split over the devices."""
        rows = self.vectors.rows
        if rows > BLOCK_ROWS:
            per_block = BLOCK_ROWS
        else:
            per_block = max(MIN_BLOCK_ROWS, 1 << max(rows - 1, 0).bit_length())
        n = self.placement.rows_multiple
        return -(-per_block // n) * n

    # ------------------------------------------------------------------ files
    def save(self, folder: Path) -> dict[str, Any]:
        """Nothing beside the catalog but the int8 ranges, kept in the manifest."""
        return {
            "int8_ranges": self.ranges.tolist() if self.ranges is not None else None,
            "int8_ranges_rows": self.ranges_rows,
        }

    def load(self, folder: Path, manifest: Mapping[str, Any]) -> None:
        if manifest.get("int8_ranges") is not None:
            try:
                self.ranges = np.asarray(manifest["int8_ranges"], np.float32)
            except (TypeError, ValueError):
                raise ValueError("'int8_ranges' must hold numbers") from None
            self.ranges_rows = int(manifest["int8_ranges_rows"])


def check_finite(finite: jax.Array | None) -> None:
    """Raise if a device flag from `device_queries` says a query vector is not finite."""
    if finite is not None and not (ok := np.asarray(finite)).all():
        raise ValueError(f"query vector {int(np.argmin(ok))} is not finite (NaN or inf)")
