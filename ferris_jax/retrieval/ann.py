"""Approximate nearest-neighbour search through FAISS's HNSW graph (the optional `ann` extra).

`AnnIndex` maps the Index's int64 row numbers to vectors in a `faiss.IndexHNSWFlat` (inner
product; cosine normalizes vectors and queries), so its scores are the exact dot products of the
stored float32 vectors, on the scale of exact search. Chosen over usearch and LanceDB by
benchmarks/ann.py (BENCHMARKS.md): equal recall to usearch at equal graph size, and its filtered
search (an `IDSelector` in the search parameters) takes the top-k among the allowed rows, which
usearch's Python binding does not expose.

- Removal marks a tombstone (HNSW graphs cannot drop a node); searches skip tombstones and
  `compact()` rebuilds the graph from the live vectors.
- A filter (`allowed`) restricts the graph search to the allowed rows; the search beam widens by
  the inverse of the allowed fraction, and few allowed rows (`exact_below`), or a query the
  graph search left short of k, are searched exactly among the allowed rows instead.
- `save` writes one file atomically: a header, the rows and tombstones, FAISS's own
  serialization of the graph, and a SHA-256 of all of it, which `load` checks first.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import struct
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ferris_jax.errors import CheckpointError, require_int
from ferris_jax.files import atomic_write
from ferris_jax.retrieval import store

Metric = Literal["dot", "cosine"]

_MAGIC = b"FJANN\x00v1"
_TRAILER = b"FJANNEND"
_DIGEST = 32  # SHA-256
_BLOCK = 16384  # vectors per block of exact search
_COPY = 1 << 20  # bytes per read while checking a file


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError(
            'Approximate search needs FAISS: pip install "ferris-jax[ann]" (faiss-cpu)'
        ) from e
    return faiss


class AnnIndex:
    """Approximate top-k search over vectors keyed by int64 row numbers (FAISS HNSW).

    Args:
        dimension: Length of every vector.
        metric: "dot" (inner product, for normalized embeddings) or "cosine" (vectors and
            queries are normalized first).
        m: HNSW neighbours per node (FAISS's `M`); more raises recall, memory and build time.
        ef_construction: Beam width while building the graph.
        ef_search: Beam width while searching (recall against speed).
        exact_below: Searches restricted (by a filter or by removals) to at most this many
            rows compare the query with each of their vectors instead of walking the graph.
            None: sqrt(2 * m * ef_search * rows in the graph), where the two cost about the
            same (45,000 of 1M rows with the defaults).
    """

    def __init__(
        self,
        dimension: int,
        *,
        metric: Metric = "dot",
        m: int = 16,
        ef_construction: int = 128,
        ef_search: int = 64,
        exact_below: int | None = None,
    ):
        if metric not in ("dot", "cosine"):
            raise ValueError(f'metric must be "dot" or "cosine", got {metric!r}')
        self.dimension = require_int("dimension", dimension)
        self.metric = metric
        self.options = {
            "m": require_int("m", m, 2),
            "ef_construction": require_int("ef_construction", ef_construction),
            "ef_search": require_int("ef_search", ef_search),
            "exact_below": None
            if exact_below is None
            else require_int("exact_below", exact_below, 0),
        }
        self._index = self._new_graph()
        self._rows = np.empty(0, np.int64)  # graph position -> row
        self._live = np.empty(0, bool)  # graph position -> not removed
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None  # rows sorted, their positions

    def _new_graph(self):
        faiss = _faiss()
        index = faiss.IndexHNSWFlat(self.dimension, self.options["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.options["ef_construction"]
        return index

    def __len__(self) -> int:
        """The number of live (added and not removed) rows."""
        return int(self._live.sum())

    @property
    def tombstones(self) -> int:
        """Removed rows still in the graph (until `compact`)."""
        return len(self._live) - len(self)

    # -- rows ----------------------------------------------------------------------------------

    def _positions(self, rows: np.ndarray) -> np.ndarray:
        """Graph positions of `rows` (-1 where a row was never added or was compacted away)."""
        if self._sorted is None:
            order = np.argsort(self._rows, kind="stable")
            self._sorted = (self._rows[order], order)
        keys, order = self._sorted
        if not len(keys):
            return np.full(len(rows), -1, np.int64)
        at = np.minimum(np.searchsorted(keys, rows), len(keys) - 1)
        return np.where(keys[at] == rows, order[at], -1)

    def add(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Add `vectors` [n, dimension] under the int64 row numbers `rows` [n].

        Raises:
            ValueError: naming the argument or row at fault: shapes that disagree, a row number
                that is negative, repeated or already present, a non-finite vector, or (cosine)
                a zero vector.
        """
        rows = _as_rows(rows, "rows")
        vectors = self._as_vectors(vectors, "vectors")
        if len(rows) != len(vectors):
            raise ValueError(f"add got {len(rows)} rows but {len(vectors)} vectors")
        unique, counts = np.unique(rows, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"rows repeats row {int(unique[counts > 1][0])}")
        present = self._positions(rows) >= 0
        if present.any():
            raise ValueError(
                f"row {int(rows[present][0])} is already in the index (remove it and compact "
                "before adding it again)"
            )
        if not len(rows):
            return
        self._index.add(vectors)
        self._rows = np.concatenate([self._rows, rows])
        self._live = np.concatenate([self._live, np.ones(len(rows), bool)])
        self._sorted = None

    def remove(self, rows: np.ndarray) -> None:
        """Remove `rows` from every later search (tombstones until `compact`).

        Raises:
            ValueError: naming the first row that is not in the index.
        """
        rows = _as_rows(rows, "rows")
        positions = self._positions(rows)
        missing = positions < 0
        missing[~missing] = ~self._live[positions[~missing]]
        if missing.any():
            raise ValueError(f"row {int(rows[missing][0])} is not in the index")
        self._live[positions] = False

    def compact(self) -> None:
        """Rebuild the graph from the live vectors, dropping the tombstones."""
        keep = np.flatnonzero(self._live)
        vectors = _reconstruct(self._index, keep)
        self._index = self._new_graph()
        if len(keep):
            self._index.add(vectors)
        self._rows, self._live = self._rows[keep], np.ones(len(keep), bool)
        self._sorted = None

    # -- search --------------------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best rows per query, best first.

        Args:
            queries: [Q, dimension] float32.
            k: Results per query.
            allowed: Optional bool mask over row numbers; only rows `r` with `allowed[r]` are
                candidates (rows past its end are not), and the top-k is taken among them.

        Returns:
            (scores [Q, k] float32, rows [Q, k] int64): dot products (cosine similarities for
            metric "cosine") of the stored vectors, larger first; where fewer than k rows are
            allowed, rows are padded with -1 and scores with -inf.
        """
        k = require_int("k", k)
        queries = self._as_vectors(queries, "queries")
        selected = self._selection(allowed)
        n_selected = len(self._live) if selected is None else int(selected.sum())
        scores = np.full((len(queries), k), -np.inf, np.float32)
        positions = np.full((len(queries), k), -1, np.int64)
        if n_selected and len(queries):
            if selected is not None and n_selected <= self._exact_below():
                scores, positions = self._exact(queries, k, np.flatnonzero(selected))
            else:
                scores, positions = self._graph_search(queries, k, selected, n_selected)
        rows = np.full(positions.shape, -1, np.int64)
        rows[positions >= 0] = self._rows[positions[positions >= 0]]
        return scores, rows

    def _exact_below(self) -> float:
        if self.options["exact_below"] is not None:
            return self.options["exact_below"]
        # A filtered graph walk with its beam widened to ef / fraction computes about
        # 2 * m * ef / fraction distances; comparing with each allowed row costs fraction * N.
        return np.sqrt(2 * self.options["m"] * self.options["ef_search"] * len(self._live))

    def _selection(self, allowed: np.ndarray | None) -> np.ndarray | None:
        """Mask over graph positions of the rows a search may return (None: all of them)."""
        if allowed is None:
            return None if self._live.all() else self._live
        allowed = np.asarray(allowed)
        if allowed.dtype != bool or allowed.ndim != 1:
            raise ValueError(
                f"allowed must be a 1-D bool mask over row numbers, got {allowed.dtype} "
                f"of shape {allowed.shape}"
            )
        inside = self._rows < len(allowed)
        return self._live & inside & allowed[np.where(inside, self._rows, 0)]

    def _graph_search(self, queries, k, selected, n_selected):
        faiss = _faiss()
        # The beam widens by the inverse of the allowed fraction, so that about ef_search of
        # the nodes it keeps are allowed rows.
        ef = max(self.options["ef_search"], k)
        params = faiss.SearchParametersHNSW(efSearch=ef)
        if selected is not None:
            ef = max(ef, min(int(np.ceil(ef * len(selected) / n_selected)), len(selected)))
            bitmap = np.packbits(selected, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(selected), faiss.swig_ptr(bitmap))
            params = faiss.SearchParametersHNSW(efSearch=ef, sel=selector)
        scores, positions = self._index.search(queries, k, params=params)
        # A graph walk can end with fewer than k allowed rows: those queries are searched exactly.
        short = (positions >= 0).sum(axis=1) < min(k, n_selected)
        if short.any():
            among = np.arange(len(self._live)) if selected is None else np.flatnonzero(selected)
            scores[short], positions[short] = self._exact(queries[short], k, among)
        scores[positions < 0] = -np.inf
        return scores, positions

    def _exact(self, queries, k, among):
        """Exact top-k of `queries` among graph positions `among`, block by block."""
        best_s = np.full((len(queries), k), -np.inf, np.float32)
        best_p = np.full((len(queries), k), -1, np.int64)
        for start in range(0, len(among), _BLOCK):
            block = among[start : start + _BLOCK]
            s = np.concatenate([best_s, queries @ _reconstruct(self._index, block).T], axis=1)
            p = np.concatenate([best_p, np.broadcast_to(block, (len(queries), len(block)))], 1)
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            best_s, best_p = np.take_along_axis(s, top, 1), np.take_along_axis(p, top, 1)
        order = np.argsort(-best_s, axis=1, kind="stable")
        return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_p, order, 1)

    def _as_vectors(self, x: np.ndarray, name: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dimension:
            raise ValueError(f"{name} must have shape [n, {self.dimension}], got {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise ValueError(f"{name}[{int(np.flatnonzero(bad)[0])}] is not finite")
        if self.metric == "cosine":
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            if (norms == 0).any():
                i = int(np.flatnonzero(norms[:, 0] == 0)[0])
                raise ValueError(f"{name}[{i}] is a zero vector: it has no cosine similarity")
            x = x / norms
        return x

    # -- files ---------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> str:
        """Write the index to `path` atomically (an interrupted save leaves the old file).

        Returns:
            The SHA-256 (hex) of the file written, as stored in its last bytes.
        """
        faiss = _faiss()
        header = json.dumps(
            {
                "format": "ferris-jax ann",
                "library": "faiss",
                "faiss": faiss.__version__,
                "dimension": self.dimension,
                "metric": self.metric,
                "count": len(self._rows),
                **self.options,
            }
        ).encode()
        digest = hashlib.sha256()
        with atomic_write(path) as f:

            def write(data: bytes) -> int:
                digest.update(data)
                return f.write(data)

            write(_MAGIC + struct.pack("<Q", len(header)) + header)
            write(self._rows.astype("<i8").tobytes())
            write(self._live.astype(np.uint8).tobytes())
            faiss.write_index(self._index, faiss.PyCallbackIOWriter(write))
            f.write(digest.digest() + _TRAILER)
        return digest.hexdigest()

    @classmethod
    def load(cls, path: str | os.PathLike, **options: Any) -> AnnIndex:
        """An index saved by `save`, after checking its SHA-256.

        Args:
            path: The file.
            **options: Search options to change (`ef_search`, `exact_below`).

        Raises:
            CheckpointError: naming `path` when it is truncated, corrupt or not an index file.
        """
        faiss = _faiss()
        path = Path(path)
        try:
            with path.open("rb") as f:
                return cls._read(f, path, faiss, options)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read the index: {e}") from e

    @classmethod
    def _read(cls, f: io.BufferedReader, path: Path, faiss: Any, options: dict) -> AnnIndex:
        size = os.fstat(f.fileno()).st_size
        end = size - _DIGEST - len(_TRAILER)
        if end < len(_MAGIC) + 8 or f.read(len(_MAGIC)) != _MAGIC:
            raise CheckpointError(f"{path}: not a ferris-jax ANN index (wrong or no header)")
        f.seek(end)
        stored, trailer = f.read(_DIGEST), f.read()
        if trailer != _TRAILER:
            raise CheckpointError(f"{path}: truncated ANN index (its end marker is missing)")
        digest, left = hashlib.sha256(), end
        f.seek(0)
        while left:
            chunk = f.read(min(_COPY, left))
            digest.update(chunk)
            left -= len(chunk)
        if digest.digest() != stored:
            raise CheckpointError(f"{path}: corrupt ANN index (SHA-256 does not match)")
        f.seek(len(_MAGIC))
        (n_header,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n_header))
        unknown = set(options) - {"ef_search", "exact_below"}
        if unknown:
            raise ValueError(f"load can change ef_search and exact_below, not {sorted(unknown)}")
        keys = ("m", "ef_construction", "ef_search", "exact_below")
        self = cls(
            header["dimension"],
            metric=header["metric"],
            **{key: options.get(key, header[key]) for key in keys},
        )
        n = header["count"]
        self._rows = np.frombuffer(f.read(8 * n), "<i8").astype(np.int64)
        self._live = np.frombuffer(f.read(n), np.uint8).astype(bool)
        payload = end - f.tell()
        if len(self._rows) != n or len(self._live) != n or payload <= 0:
            raise CheckpointError(f"{path}: truncated ANN index (rows or graph missing)")
        try:
            self._index = faiss.read_index(
                faiss.PyCallbackIOReader(lambda count: f.read(min(count, end - f.tell())))
            )
        except RuntimeError as e:
            raise CheckpointError(f"{path}: FAISS cannot read the graph: {e}") from e
        if self._index.ntotal != n or self._index.d != self.dimension:
            raise CheckpointError(f"{path}: the graph holds {self._index.ntotal} vectors, not {n}")
        return self


def _as_rows(rows: np.ndarray, name: str) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 1 or not (np.issubdtype(rows.dtype, np.integer) or rows.size == 0):
        raise ValueError(
            f"{name} must be a 1-D array of int64 row numbers, got {rows.dtype} "
            f"of shape {rows.shape}"
        )
    rows = rows.astype(np.int64)
    if (rows < 0).any():
        raise ValueError(f"{name} holds a negative row number {int(rows[rows < 0][0])}")
    return rows


def _reconstruct(index: Any, positions: np.ndarray) -> np.ndarray:
    """The stored vectors at graph `positions` [n] -> [n, d] float32."""
    if not len(positions):
        return np.empty((0, index.d), np.float32)
    return index.reconstruct_batch(positions.astype(np.int64))


class AnnSearch:
    """The approximate search backend of an index: an `AnnIndex` over its vectors, built on the
    first search and extended with the rows added since at each later one; searches among the
    live (and filtered) rows. `lock` is the catalog's."""

    def __init__(self, vectors: Any, options: dict[str, Any], lock: Any, batch_rows: int = 1 << 16):
        self.vectors = vectors  # a retrieval.vectors.VectorStore
        self.options = options
        self._lock = lock
        self._batch_rows = batch_rows
        self._graph: AnnIndex | None = None
        self._graph_rows = 0  # rows < this are in the graph

    def changed(self, rows: np.ndarray, *, data: bool) -> None:
        """Removed rows are left out by the search's allowed rows; rows dropped by a rollback
        are rebuilt (only rows past the graph's are ever dropped, but be safe)."""
        if data and len(rows) and int(np.min(rows)) < self._graph_rows:
            self.reset()

    def reset(self) -> None:
        self._graph, self._graph_rows = None, 0

    def search(
        self, queries: np.ndarray, k: int, allowed: Any, **_: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) from the HNSW graph, among live rows that pass the filter."""
        with self._lock:
            graph = self.graph()
            mask = allowed.mask() if allowed is not None else self.vectors.live.copy()
        return graph.search(queries, k, allowed=mask)

    def begin_search(self, queries: np.ndarray, k: int, allowed: Any, **options: Any):
        """`search` (on the host, done before this returns), for the same calls as the
        exact backend's."""
        found = self.search(queries, k, allowed, **options)
        return lambda: found

    def graph(self) -> AnnIndex:
        """The HNSW graph, with the rows added since it was last extended (under the lock)."""
        if self._graph is None:
            self._graph = AnnIndex(self.vectors.dimension, metric="dot", **self.options)
            self._graph_rows = 0
        for start in range(self._graph_rows, self.vectors.rows, self._batch_rows):
            rows = np.arange(start, min(start + self._batch_rows, self.vectors.rows))
            self._graph.add(rows, self.vectors.gather(rows))
        self._graph_rows = self.vectors.rows
        return self._graph

    def save(self, folder: Path) -> dict[str, Any]:
        if not self.vectors.rows:
            return {"ann": None}
        name = f"ann-{secrets.token_hex(4)}.faiss"
        self.graph().save(folder / name)
        entry = {"file": name, "sha256": store.sha256_of(folder / name), "rows": self._graph_rows}
        return {"ann": entry}

    def load(self, folder: Path, manifest: Any) -> None:
        if manifest.get("ann"):
            self._graph = AnnIndex.load(folder / manifest["ann"]["file"])
            self._graph_rows = int(manifest["ann"]["rows"])
