"""The search-backend interface: what exact device search, FAISS HNSW and the lexical index each
implement, as peers under the catalog (`Index`), which owns the rows, ids and metadata.

A backend is told which rows changed (`changed`, `reset`), searches among the allowed rows
(`search`), and saves and loads whatever it keeps beside the catalog (`save`, `load`), as
FAISS's and txtai's ANN backends do. Rows are the catalog's row numbers (int64); a result row of
-1 (score -inf) marks a place fewer rows filled.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ferris_jax.retrieval import filters


class RowFilter:
    """The rows a search may return: live rows whose metadata meets `filter`. Dense backends
    read it as a bool mask over the rows, the lexical one as an SQL condition on the items."""

    def __init__(self, db: sqlite3.Connection, filter: Mapping[str, Any], live: np.ndarray):
        self.where, self.params = filters.to_sql(filter)
        self._db = db
        self._live = live
        self._mask: np.ndarray | None = None

    def mask(self, size: int | None = None) -> np.ndarray:
        """bool `[size]` (default: the rows): live rows that pass, False beyond the rows."""
        if self._mask is None:
            query = f"SELECT row FROM items WHERE {self.where}"
            self._mask = np.zeros(len(self._live), bool)
            self._mask[[r[0] for r in self._db.execute(query, self.params)]] = True
            self._mask &= self._live
        size = len(self._live) if size is None else size
        out = np.zeros(size, bool)
        out[: len(self._mask)] = self._mask
        return out


class SearchBackend(Protocol):
    """One way of finding an index's best rows for a query."""

    def changed(self, rows: np.ndarray, *, data: bool) -> None:
        """These rows were added or dropped (`data`), or only removed (their vectors stay)."""

    def reset(self) -> None:
        """Every row may have changed (rows were renumbered)."""

    def search(
        self, queries: Any, k: int, allowed: RowFilter | None, **options: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) `[Q, k]` of the best allowed rows (None: every live row), best first."""

    def save(self, folder: Path) -> dict[str, Any]:
        """Write what the backend keeps beside the catalog into `folder`; its manifest fields."""

    def load(self, folder: Path, manifest: Mapping[str, Any]) -> None:
        """Read what `save` wrote (the manifest as saved)."""
