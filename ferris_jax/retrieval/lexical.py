"""The lexical search backends: BM25 over the items' texts, with SQLite FTS5 (`LexicalSearch`,
the default: always in step, nothing to install) or with bm25s (`Bm25sSearch`, the "bm25s"
extra: a hundred times faster on large indexes, rebuilt after changes).

`LexicalSearch`, BM25 with SQLite FTS5:

The full-text table lives in the catalog's own database (an external-content FTS5 table over
`items.text`, keyed by row) and triggers keep it in step with every insert and delete, so the
catalog's savepoints, rollbacks, snapshots and restores carry it with the items: nothing else is
written, and a crash during a save leaves it as consistent as the items. It is built on the first
lexical search (or when the index asks for it up front), and from then on kept as rows change.

Scores are FTS5's `bm25()` (Okapi BM25, k1 = 1.2, b = 0.75, idf = ln((N - n + 0.5) / (n + 0.5)),
floored just above 0), negated so that larger is better. Texts are tokenized by FTS5's
`unicode61` tokenizer (Unicode letters and digits, case folded, diacritics removed); a query is
the OR of its distinct words, each quoted, so no query text is read as FTS5 query syntax.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferris_jax.retrieval.backends import RowFilter

TABLE = "items_fts"
# The full-text table and the triggers that keep it in step with the items table.
_CREATE = (
    f"CREATE VIRTUAL TABLE {TABLE} USING fts5(text, content='items', content_rowid='row', "
    "tokenize='unicode61 remove_diacritics 2')",
    f"""CREATE TRIGGER {TABLE}_insert AFTER INSERT ON items BEGIN
        INSERT INTO {TABLE}(rowid, text) VALUES (new.row, new.text);
    END""",
    f"""CREATE TRIGGER {TABLE}_delete AFTER DELETE ON items BEGIN
        INSERT INTO {TABLE}({TABLE}, rowid, text) VALUES ('delete', old.row, old.text);
    END""",
    f"""CREATE TRIGGER {TABLE}_update AFTER UPDATE OF text ON items BEGIN
        INSERT INTO {TABLE}({TABLE}, rowid, text) VALUES ('delete', old.row, old.text);
        INSERT INTO {TABLE}(rowid, text) VALUES (new.row, new.text);
    END""",
)
# FTS5's bm25() parameters, which `Bm25sSearch` uses too.
K1, B = 1.2, 0.75
# Words of a query: what unicode61 keeps (letters, digits), split at everything else.
_WORD = re.compile(r"[^\W_]+")


def query_terms(text: str) -> list[str]:
    """The distinct words of a query, in order, as FTS5 phrases."""
    words = dict.fromkeys(w.lower() for w in _WORD.findall(text))
    return ['"' + w.replace('"', '""') + '"' for w in words]


class LexicalSearch:
    """BM25 search over the texts of the catalog's items table (`db`); `lock` is the catalog's."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock):
        self._db = db
        self._lock = lock

    @property
    def built(self) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self._db.execute(query, (TABLE,)).fetchone() is not None

    def build(self) -> None:
        """Create the full-text table from the items (once; under the lock)."""
        if self.built:
            return
        self._db.execute("SAVEPOINT lexical")
        try:
            for statement in _CREATE:  # one by one: executescript would commit
                self._db.execute(statement)
            self._db.execute(f"INSERT INTO {TABLE}({TABLE}) VALUES ('rebuild')")
        except BaseException:
            self._db.execute("ROLLBACK TO lexical")
            self._db.execute("RELEASE lexical")
            raise
        self._db.execute("RELEASE lexical")

    # ------------------------------------------------------------------ changes
    def changed(self, rows: np.ndarray, *, data: bool) -> None:
        """Nothing to do: the triggers follow the items table."""

    def reset(self) -> None:
        """Rows were renumbered: index the texts again under their new rows."""
        if self.built:
            self._db.execute(f"INSERT INTO {TABLE}({TABLE}) VALUES ('rebuild')")

    # ------------------------------------------------------------------ searching
    def search(
        self, queries: Sequence[str], k: int, allowed: RowFilter | None, **_: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) `[Q, k]`: the best BM25 matches of each query text, -inf / -1 where
        fewer rows match."""
        scores = np.full((len(queries), k), -np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        select = f"SELECT {TABLE}.rowid, -bm25({TABLE}) AS score FROM {TABLE}"
        where = f" WHERE {TABLE} MATCH ?"
        params: list[Any] = []
        if allowed is not None:
            select += f" JOIN items ON items.row = {TABLE}.rowid"
            where += f" AND ({allowed.where})"
            params = list(allowed.params)
        # Ties (equal scores) in row order, as the dense search breaks them.
        order = f" ORDER BY bm25({TABLE}), {TABLE}.rowid LIMIT ?"
        with self._lock:
            self.build()
            for q, text in enumerate(queries):
                terms = query_terms(text)
                if not terms:
                    continue
                found = self._db.execute(
                    select + where + order, [" OR ".join(terms), *params, k]
                ).fetchall()
                for j, (row, score) in enumerate(found):
                    rows[q, j], scores[q, j] = row, score
        return scores, rows

    # ------------------------------------------------------------------ files
    def save(self, folder: Path) -> dict[str, Any]:
        """Nothing: the table is in the items database, saved with it."""
        return {}

    def load(self, folder: Path, manifest: Mapping[str, Any]) -> None:
        """Nothing: the items database brought the table (if it was built)."""


def text_tokens(text: str) -> list[str]:
    """FTS5's `unicode61 remove_diacritics 2` tokens of a text, in Python: Unicode letters and
    digits, diacritics removed, lowercased (`Bm25sSearch` indexes these)."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _WORD.findall(plain.lower())


class Bm25sSearch:
    """BM25 over the texts of the catalog's items table with bm25s (its scores computed once per
    text and term, in a sparse matrix, so a query sums a few columns instead of walking every
    posting in SQL): the same formula, tokens and results as `LexicalSearch` (idf floored at
    0 instead of 1e-6), scores in float32. It is built from the items at the first search
    after any change (seconds per million texts), in host memory, and not saved."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock):
        self._db = db
        self._lock = lock
        self._retriever: Any = None  # bm25s.BM25 over the texts of `_rows`, None when stale
        self._rows = np.zeros(0, np.int64)

    @property
    def built(self) -> bool:
        return self._retriever is not None

    def build(self) -> None:
        """Index the items' texts now (under the lock)."""
        try:
            import bm25s
        except ImportError as e:
            raise ImportError(
                'lexical_backend="bm25s" needs bm25s: pip install "ferris-jax[bm25s]"'
            ) from e
        found = self._db.execute("SELECT row, text FROM items ORDER BY row").fetchall()
        self._rows = np.array([r for r, _ in found], np.int64)
        retriever = bm25s.BM25(method="robertson", k1=K1, b=B)
        if found:
            retriever.index([text_tokens(t or "") for _, t in found], show_progress=False)
        self._retriever = retriever

    def changed(self, rows: np.ndarray, *, data: bool) -> None:
        self._retriever = None

    def reset(self) -> None:
        self._retriever = None

    def search(
        self, queries: Sequence[str], k: int, allowed: RowFilter | None, **_: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) `[Q, k]`, as `LexicalSearch.search` gives them."""
        scores = np.full((len(queries), k), -np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        with self._lock:
            if self._retriever is None:
                self.build()
            retriever, indexed = self._retriever, self._rows
            mask = None if allowed is None else allowed.mask()[indexed].astype(np.float32)
        if not len(indexed):
            return scores, rows
        for q, text in enumerate(queries):
            terms = list(dict.fromkeys(text_tokens(text)))
            ids = retriever.get_tokens_ids(terms)
            if not ids:
                continue
            found = retriever.get_scores(ids, weight_mask=mask)
            best = _top_k(found, k)
            n = len(best)
            # bm25s leaves out BM25's constant factor k1 + 1: scores on FTS5's scale.
            rows[q, :n], scores[q, :n] = indexed[best], found[best] * (K1 + 1)
        return scores, rows

    def save(self, folder: Path) -> dict[str, Any]:
        return {}

    def load(self, folder: Path, manifest: Mapping[str, Any]) -> None:
        self._retriever = None


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the `k` largest positive scores, best first, ties by position."""
    positive = np.flatnonzero(scores > 0)
    if len(positive) > k:
        kth = np.partition(scores[positive], len(positive) - k)[len(positive) - k]
        positive = positive[scores[positive] >= kth]
    order = np.lexsort((positive, -scores[positive]))
    return positive[order][:k]
