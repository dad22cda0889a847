"""`VectorStore`: an index's float32 vectors by row number, and which rows are live.

Saved rows sit in shard files (safetensors, memory-mapped once written); rows added since sit in
host memory ("pending") until `flush` writes them as a new shard. Rows are numbered in the order
they were added; a removed row stays (not live) until `compact` renumbers the live ones. The
search backends read vectors from here; the catalog (`Index`) decides which rows exist.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ferris_jax.retrieval import store
from ferris_jax.retrieval.store import Shard


class _Saved(NamedTuple):
    """What `rollback` returns the store to."""

    rows: int
    shards: list[Shard]
    mapped: list[np.ndarray]
    pending: list[np.ndarray]


class VectorStore:
    """float32 vectors `[rows, dimension]` in shards, then pending rows; a live flag per row."""

    def __init__(self, dimension: int):
        self.dimension = dimension
        self.rows = 0
        self.shards: list[Shard] = []
        self._mapped: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []  # unsaved float32 rows after the last shard
        self._alive = np.zeros(0, bool)

    # ------------------------------------------------------------------ rows
    @property
    def pending_rows(self) -> int:
        return sum(map(len, self._pending))

    @property
    def live(self) -> np.ndarray:
        """bool `[rows]`: the rows not removed (a view: copy it to keep it)."""
        return self._alive[: self.rows]

    def live_count(self) -> int:
        return int(self.live.sum())

    def append(self, vectors: np.ndarray) -> range:
        """Add rows (live); the row numbers they got."""
        start = self.rows
        self._pending.append(np.ascontiguousarray(vectors, np.float32))
        self.rows += len(vectors)
        if len(self._alive) < self.rows:
            grown = np.zeros(max(self.rows, 2 * len(self._alive), 1024), bool)
            grown[: len(self._alive)] = self._alive
            self._alive = grown
        self._alive[start : self.rows] = True
        return range(start, self.rows)

    def kill(self, rows: np.ndarray) -> None:
        """Mark rows removed (their vectors stay until `compact`)."""
        self._alive[rows] = False

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """float32 `[len(rows), D]`: the vectors of these rows, from shards and pending rows."""
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), self.dimension), np.float32)
        pieces = [*self._mapped, *self._pending]
        starts = np.cumsum([0, *map(len, pieces)])
        owner = np.searchsorted(starts, rows, side="right") - 1
        for p in np.unique(owner):
            at = owner == p
            out[at] = pieces[p][rows[at] - starts[p]]
        return out

    def compact(self) -> np.ndarray:
        """Keep only the live rows, renumbered in order (pending, not yet in a shard); the old
        row numbers of the rows kept."""
        keep = np.flatnonzero(self.live)
        vectors = self.gather(keep) if len(keep) else np.zeros((0, self.dimension), np.float32)
        self.shards, self._mapped = [], []
        self._pending = [np.asarray(vectors, np.float32)]
        self.rows = len(keep)
        self._alive = np.zeros(max(len(keep), 1024), bool)
        self._alive[: len(keep)] = True
        return keep

    # ------------------------------------------------------------------ rolling back
    def mark(self) -> _Saved:
        return _Saved(self.rows, list(self.shards), list(self._mapped), list(self._pending))

    def rollback(self, saved: _Saved, folder: Path | None) -> range:
        """Return to `saved` (from `mark`): rows added since are dropped, and the shard files
        written for them since deleted from `folder`; the row numbers dropped."""
        for shard in self.shards[len(saved.shards) :]:
            if folder is not None:
                (folder / shard.file).unlink(missing_ok=True)
        self.shards, self._mapped, self._pending = saved.shards, saved.mapped, saved.pending
        dropped = range(saved.rows, self.rows)
        self._alive[saved.rows :] = False
        self.rows = saved.rows
        return dropped

    # ------------------------------------------------------------------ files
    def flush(self, folder: Path, claim: Callable[[Path], None]) -> None:
        """Write the pending rows as a new shard file in `folder` (not yet named by a manifest),
        after `claim(folder)` (the folder's write lock)."""
        if not self._pending:
            return
        claim(folder)
        vectors = np.concatenate(self._pending)
        start = self.rows - len(vectors)
        name = f"vectors-{start:012d}-{secrets.token_hex(4)}.safetensors"
        shard = store.write_shard(folder, name, vectors, start)
        self.shards.append(shard)
        self._mapped.append(store.open_shard(folder, shard, self.dimension))
        self._pending = []

    def remap(self, folder: Path) -> None:
        """Read the shards from `folder` (where they were just saved)."""
        self._mapped = [store.open_shard(folder, s, self.dimension) for s in self.shards]

    def open(self, folder: Path, shards: list[Shard], rows: int, live: np.ndarray) -> None:
        """The saved rows of `folder`: its shards (memory-mapped) and the live row numbers."""
        self.shards = shards
        self.remap(folder)
        self.rows = rows
        self._pending = []
        self._alive = np.zeros(max(rows, 1024), bool)
        self._alive[live] = True
