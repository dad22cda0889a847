"""`Index`: a persistent index of texts over an encoder: the catalog and its search backends.

The catalog streams texts through `Encoder.encode_stream`, keeps ids, texts, metadata and
document records in SQLite and the float32 vectors in shards (`retrieval.vectors`), and saves
them atomically under a manifest. Searching is its backends' job, peers behind one interface
(`retrieval.backends`): the dense one is exact search on the device (`retrieval.exact`) or a
FAISS HNSW graph (`retrieval.ann`); the lexical one is BM25 over the texts
(`retrieval.lexical`); hybrid search fuses the two rankings (`retrieval.fusion`), and a
reranker can re-score the fused candidates.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import itertools
import json
import os
import secrets
import shutil
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ferris_jax import _version
from ferris_jax.encoder import STREAM_CHUNK_TEXTS, Encoder
from ferris_jax.errors import require_int
from ferris_jax.placement import Placement
from ferris_jax.retrieval import store
from ferris_jax.retrieval.ann import AnnSearch
from ferris_jax.retrieval.backends import RowFilter, SearchBackend
from ferris_jax.retrieval.chunking import Chunk, chunk_documents, chunk_sizes
from ferris_jax.retrieval.exact import (  # noqa: F401 (the index's constants, as before)
    BLOCK_ROWS,
    MIN_BLOCK_ROWS,
    PRECISIONS,
    ExactSearch,
)
from ferris_jax.retrieval.fusion import RRF_K, reciprocal_rank_fusion
from ferris_jax.retrieval.lexical import Bm25sSearch, LexicalSearch
from ferris_jax.retrieval.sources import Document
from ferris_jax.retrieval.store import (
    IndexConflictError,
    IndexFormatError,
    Shard,
    WriteLock,
)
from ferris_jax.retrieval.vectors import VectorStore

# Rows inserted into the item database by one statement (5 values each: within SQLite's
# oldest limit of 999 variables a statement).
INSERT_ROWS = 190
# Unsaved rows written to a shard file early when the index has a folder (bounds host memory).
SHARD_ROWS = 1 << 16
# The lexical backends by name.
LEXICAL_BACKENDS = {"fts5": LexicalSearch, "bm25s": Bm25sSearch}
# Search modes: the dense backend, the lexical one, or both fused.
MODES = ("dense", "lexical", "hybrid")
# Candidates per result each backend gives a hybrid search, and a reranker re-scores, by default.
HYBRID_CANDIDATES = 4
# The text whose embedding identifies the model an index was built with.
PROBE_TEXT = "A probe sentence: the quick brown fox jumps over the lazy dog."
PROBE_MIN_COSINE = 0.99


@dataclasses.dataclass(frozen=True)
class Hit:
    """One search result: the item's id, score, text (if stored) and metadata."""

    id: str
    score: float
    text: str | None
    metadata: dict[str, Any]
    document_id: str | None = None


class _Item(NamedTuple):  # a tuple: made once per text added, so it must cost little
    id: str
    document_id: str | None
    text: str | None
    metadata: dict[str, Any]


class _Columns(NamedTuple):
    """Items as one list per field. A window of texts waiting for its vectors is kept so:
    objects kept per item make Python's garbage collector walk them again and again (1 us a
    text in an `add` of short texts)."""

    ids: list[str]
    document_ids: list[str | None]
    texts: list[str | None]
    metadata: list[dict[str, Any]]

    @classmethod
    def of(cls, items: Sequence[_Item]) -> _Columns:
        return cls(*map(list, zip(*items, strict=True))) if items else cls([], [], [], [])

    def take(self, n: int) -> _Columns:
        """The first `n` items, removed from these lists."""
        first = _Columns(*(column[:n] for column in self))
        for column in self:
            del column[:n]
        return first


class ChunkingMismatch(ValueError):
    """Documents asked to be chunked otherwise than the documents already in an index."""

    def __init__(self, chunking: Mapping[str, Any], conflicts: Mapping[str, Any]):
        self.chunking = dict(chunking)
        self.conflicts = dict(conflicts)
        asked = ", ".join(f"{key}={value!r}" for key, value in conflicts.items())
        have = ", ".join(f"{key}={value!r}" for key, value in chunking.items())
        super().__init__(
            f"this index's documents were chunked with {have}; {asked} would mix two chunk sets "
            "in one index: leave the option out to continue with the index's, or build a new "
            "index"
        )


class Index:
    """Texts with ids, metadata and vectors; exact top-k search on the device (or approximate
    on the host), BM25 over the texts, and the two fused.

    Build over an encoder (`Index(enc)`), add texts, documents or chunks (`add`), `search`,
    `remove`, `save(path)`; `Index.load(path)` opens a saved one. Documents are embedded with the
    model's document prompt and queries with its query prompt (E5's "passage: " / "query: "),
    as recorded in the index. Thread-safe: searches may run from several threads.

    One writer at a time: an index takes its folder's write lock when it first writes there (a
    save, or vectors spilled to disk during a large `add`) and drops it when the save ends; a
    save refuses to replace a generation that another writer saved since this index read or
    wrote it (`IndexConflictError`: load it again and redo the change). `lock()` (or
    `Index.load(path, lock=True)`) holds the lock from before reading until `close()`, as a
    long-running writer should. `lock_timeout` is how long to wait for another writer.

    Args:
        encoder: the model that embeds texts and queries (None: vectors only, see
            `add_embeddings`; then `dimension` and `model` are required).
        precision: the device copy: "float32", "bfloat16", "int8" or "binary" (the last three
            are re-ranked with the float32 vectors, see `search(rescore=...)`).
        similarity: "cosine" (vectors normalized) or "dot"; default: the model's own.
        store_text: keep each item's text, so hits carry their passage.
        dimension, model: for an index of vectors without an encoder.
        ann: search approximately through a FAISS HNSW graph on the host (`retrieval.ann`,
            the "ann" extra) instead of exactly on the device: for corpora beyond device
            memory. True for the defaults, or a dict of `AnnIndex` options (m, ef_search...).
        lexical: build the BM25 full-text index of the texts now and keep it as texts are
            added (False: built on the first lexical or hybrid search, then kept).
        lexical_backend: "fts5" (SQLite FTS5 in the item database: always in step, saved
            with the items) or "bm25s" (the "bm25s" extra: a sparse matrix of BM25 scores in
            host memory, about 80x faster per query on 1M texts; rebuilt at the first lexical
            search after a change, not saved).
    """

    def __init__(
        self,
        encoder: Encoder | None = None,
        *,
        precision: str = "float32",
        similarity: str | None = None,
        store_text: bool = True,
        dimension: int | None = None,
        model: str | None = None,
        ann: bool | Mapping[str, Any] = False,
        lexical: bool = False,
        lexical_backend: str = "fts5",
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if encoder is None and (dimension is None or model is None):
            raise ValueError("an index without an encoder needs dimension= and model=")
        similarity = similarity or (encoder.settings.similarity_fn_name if encoder else "cosine")
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        self.encoder = encoder
        self.precision = precision
        self.similarity = similarity
        self.store_text = store_text
        self.dimension = int(encoder.embedding_dimension if encoder else dimension)
        self.model = {
            "name": encoder.checkpoint.name if encoder else model,
            "path": str(encoder.checkpoint.path) if encoder else None,
            "revision": _revision(encoder.checkpoint.path) if encoder else None,
        }
        self.prompts = {
            "query": encoder.prompt_for("query") if encoder else "",
            "document": encoder.prompt_for("document") if encoder else "",
        }
        self.probe = self._probe_vector() if encoder else None
        # Where the device copy of the vectors and the queries live: the encoder's placement.
        self.placement = encoder.placement if encoder else Placement.default()
        # How the documents in the index were cut into chunks (`chunking_for`); None until the
        # first documents are chunked into it.
        self.chunking: dict[str, Any] | None = None
        self.path: Path | None = None
        self._lock = threading.RLock()
        self.vectors = VectorStore(self.dimension)
        self._db, db_file = _working_database()
        weakref.finalize(self, _close_database, self._db, db_file)
        self.ann_options: dict[str, Any] | None = (
            None if ann is False else dict(ann) if isinstance(ann, Mapping) else {}
        )
        # The search backends: one dense (exact on the device, or the HNSW graph), one lexical.
        self._dense: ExactSearch | AnnSearch = (
            ExactSearch(self.vectors, precision, self.placement, self._lock)
            if self.ann_options is None
            else AnnSearch(self.vectors, self.ann_options, self._lock, SHARD_ROWS)
        )
        if lexical_backend not in LEXICAL_BACKENDS:
            raise ValueError(
                f"lexical_backend must be one of {', '.join(LEXICAL_BACKENDS)}, "
                f"got {lexical_backend!r}"
            )
        self.lexical_backend = lexical_backend
        self._lexical = LEXICAL_BACKENDS[lexical_backend](self._db, self._lock)
        if lexical:
            self._lexical.build()
        # Writing the folder: the generation on disk this index continues (None: never saved
        # or loaded), the write lock while held, and whether it is held until close().
        self._generation: int | None = None
        self._writer: WriteLock | None = None
        self._writer_session = False
        self.lock_timeout = 0.0
        self._saved_shards: set[str] = set()  # the shard files the last manifest names

    @property
    def ranges(self) -> np.ndarray | None:
        """int8 search: the `[2, D]` quantization ranges (None until the first search)."""
        return getattr(self._dense, "ranges", None)

    @property
    def _backends(self) -> tuple[SearchBackend, ...]:
        return (self._dense, self._lexical)

    # ------------------------------------------------------------------ size and lookup
    def __len__(self) -> int:
        """Items in the index (removed ones not counted)."""
        with self._lock:
            return self.vectors.live_count()

    def __contains__(self, id: str) -> bool:
        with self._lock:
            return (
                self._db.execute("SELECT 1 FROM items WHERE id = ?", (id,)).fetchone() is not None
            )

    @property
    def documents(self) -> store.DocumentRecords:
        """The content hash, chunk count and source of each document ingested with
        `retrieval.ingest` (saved with the index)."""
        return store.DocumentRecords(self._db)

    def find_documents(self, name: str) -> list[str]:
        """The documents `name` names: the document with that id, else those read from the
        file `name` (a path as given when they were added, relative to the working directory,
        or absolute; a .jsonl file names each of its records)."""
        with self._lock:
            query = "SELECT 1 FROM items WHERE document_id = ? LIMIT 1"
            if self._db.execute(query, (name,)).fetchone() or self.documents.get(name):
                return [name]  # (a recorded document may have no chunks: an empty one)
            path = os.path.abspath(name)
            query = "SELECT document_id FROM documents WHERE source = ?"
            found = [r[0] for r in self._db.execute(query, (path,))]
            if not found:  # documents added without a record: their "source" metadata
                paths = {name, os.path.normpath(name), path}
                with contextlib.suppress(ValueError):  # Windows: another drive
                    paths.add(os.path.relpath(path))
                paths = sorted(paths)
                marks = ",".join("?" * len(paths))
                query = "SELECT DISTINCT document_id FROM items WHERE "
                query += f"json_extract(metadata, '$.source') IN ({marks})"
                found = [r[0] for r in self._db.execute(query, paths)]
            return found

    def ids_of_documents(self, document_ids: Sequence[str]) -> list[str]:
        """The ids of the items (chunks) of these documents."""
        return [id for ids in self.chunk_ids(document_ids).values() for id in ids]

    def chunk_ids(self, document_ids: Sequence[str]) -> dict[str, list[str]]:
        """The ids of each document's items (chunks), for the documents that have any."""
        found: dict[str, list[str]] = {}
        with self._lock:
            for id, document_id in self._select("document_id", document_ids, "id, document_id"):
                found.setdefault(document_id, []).append(id)
        return found

    def get(self, ids: str | Sequence[str]) -> list[Hit | None]:
        """The stored items with these ids (None for ids not in the index); score 0."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        with self._lock:
            found = {r[1]: _hit(r, 0.0) for r in self._select("id", ids)}
        return [found.get(i) for i in ids]

    def info(self) -> dict[str, Any]:
        """What the index holds and how it searches (for `ferris-jax index info`)."""
        with self._lock:
            return {
                "path": str(self.path) if self.path else None,
                "model": self.model["name"],
                "dimension": self.dimension,
                "similarity": self.similarity,
                "precision": self.precision,
                "items": len(self),
                "rows": self.vectors.rows,
                "removed": self.vectors.rows - len(self),
                "documents": self._db.execute(
                    "SELECT COUNT(DISTINCT document_id) FROM items"
                ).fetchone()[0],
                "shards": len(self.vectors.shards) + bool(self.vectors.pending_rows),
                "lexical": self._lexical.built,
                "prompts": dict(self.prompts),
                "chunking": dict(self.chunking) if self.chunking else None,
                "format_version": store.FORMAT_VERSION,
            }

    # ------------------------------------------------------------------ adding
    def add(
        self,
        texts: str | Iterable[str | Document | Chunk],
        ids: Iterable[str] | None = None,
        metadata: Iterable[Mapping[str, Any] | None] | None = None,
        *,
        batch_size: int = 64,
        chunk_size: int = STREAM_CHUNK_TEXTS,
        show_progress_bar: bool | None = None,
    ) -> list[str]:
        """Embed and add texts (or `Document`s / `Chunk`s, which bring their own ids, texts and
        metadata), streaming: any iterable, in bounded host memory.

        Args:
            texts: strings, `Document`s or `Chunk`s (a chunk's document id is kept, so
                `search(by_document=True)` can group its chunks).
            ids: one unique string per text (default: `Document.id` / `Chunk.id`, else new
                random ids).
            metadata: one dict (or None) per text, JSON-serializable.
            batch_size, chunk_size, show_progress_bar: as in `Encoder.encode_stream`.

        Returns:
            The ids added, in order. An id already in the index (or twice in the input) is an
            error naming it; a failing add leaves the index as it was. An add to a saved index
            that spills vectors to its folder (past `SHARD_ROWS` unsaved rows) takes the
            folder's write lock then (`IndexLockedError` if another writer holds it longer than
            `lock_timeout`), held until the next `save`.
        """
        if self.encoder is None:
            raise ValueError("this index has no encoder: add vectors with add_embeddings")
        items = _items(texts, ids, metadata)
        queue = _Columns([], [], [], [])

        def prompted() -> Iterator[str]:
            for id, document_id, text, meta in items:
                queue.ids.append(id)
                queue.document_ids.append(document_id)
                queue.texts.append(text)
                queue.metadata.append(meta)
                yield text

        added: list[str] = []
        # A writer thread stores each window (database rows, shard files) while the next one is
        # embedded, so the device is not left waiting on the host.
        writer = ThreadPoolExecutor(1, thread_name_prefix="ferris-index-writer")
        with self._lock, self._rollback_on_error(), writer:
            vectors = self.encoder.encode_stream(
                prompted(),
                batch_size=batch_size,
                prompt=self.prompts["document"],
                chunk_size=chunk_size,
                show_progress_bar=show_progress_bar,
            )
            writing: collections.deque[Future] = collections.deque()
            for window in vectors:
                batch = queue.take(len(window))
                writing.append(writer.submit(self._append, window, batch))
                added += batch.ids
                if len(writing) > 1:  # one window stored while the next is embedded
                    writing.popleft().result()
            while writing:
                writing.popleft().result()
        return added

    def add_documents(
        self,
        documents: Iterable[Document],
        *,
        max_tokens: int | None = None,
        overlap: int | None = None,
        **options: Any,
    ) -> list[str]:
        """Split documents into token-bounded, overlapping chunks (`chunk_documents`, with the
        model's own tokenizer and document prompt) and add the chunks; see `add`. The chunk
        sizes are the index's own once it holds chunked documents (`chunking_for`)."""
        if self.encoder is None:
            raise ValueError("this index has no encoder: add vectors with add_embeddings")
        chunking = self.chunking_for(max_tokens, overlap)
        chunks = chunk_documents(
            documents, self.encoder, max_tokens=chunking["max_tokens"],
            overlap=chunking["overlap"], prompt=self.prompts["document"],
        )  # fmt: skip
        self.chunking = chunking
        return self.add(chunks, **options)

    def chunking_for(
        self,
        max_tokens: int | None = None,
        overlap: int | None = None,
        whole_documents: bool | None = None,
    ) -> dict[str, Any]:
        """The chunking the next documents get: the index's own, recorded when its first
        documents were chunked (and saved with it), so that one index holds one chunk set;
        for a new index, the options given or `chunk_documents`' defaults.

        `whole_documents`: one chunk per document (the command line's --no-chunk).

        Raises:
            ChunkingMismatch: an option differs from the index's own chunking.
        """
        requested = {
            "max_tokens": max_tokens,
            "overlap": overlap,
            "whole_documents": whole_documents,
        }
        if self.chunking is not None:
            conflicts = {
                key: value
                for key, value in requested.items()
                if value is not None and value != self.chunking.get(key)
            }
            if conflicts:
                raise ChunkingMismatch(self.chunking, conflicts)
            return dict(self.chunking)
        if self.encoder is None:
            raise ValueError("this index has no encoder to count tokens with")
        whole = bool(whole_documents)
        size, overlap = chunk_sizes(
            self.encoder, max_tokens, 0 if whole else overlap, prompt=self.prompts["document"]
        )
        return {"max_tokens": size, "overlap": overlap, "whole_documents": whole}

    def add_embeddings(
        self,
        embeddings: np.ndarray,
        ids: Iterable[str] | None = None,
        metadata: Iterable[Mapping[str, Any] | None] | None = None,
        *,
        model: str,
        texts: Iterable[str | None] | None = None,
    ) -> list[str]:
        """Add vectors computed elsewhere by `model` (which must be the index's model).

        Args:
            embeddings: float `[n, dimension]`.
            model: the name of the model that computed them (refused if not the index's).
            ids, metadata, texts: as in `add` (texts only stored).
        """
        if model != self.model["name"]:
            raise ValueError(
                f"these vectors are from model {model!r}, the index holds {self.model['name']!r}'s:"
                " vectors of another model are not comparable"
            )
        vectors = np.asarray(embeddings, np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise ValueError(
                f"embeddings must be [n, {self.dimension}], got {list(np.shape(embeddings))}"
            )
        if not np.isfinite(vectors).all():
            bad = int(np.argmax(~np.isfinite(vectors).all(axis=1)))
            raise ValueError(f"embeddings[{bad}] is not finite")
        texts_list = list(texts) if texts is not None else [None] * len(vectors)
        items = list(_items(texts_list, ids, metadata, allow_none=True))
        if len(items) != len(vectors):
            raise ValueError(f"{len(items)} ids/texts for {len(vectors)} embeddings")
        with self._lock, self._rollback_on_error():
            self._append(vectors, _Columns.of(items))
        return [item.id for item in items]

    def _append(self, vectors: np.ndarray, items: _Columns, *, stored: bool = False) -> None:
        """Add rows (under the lock): vectors to the pending shard, items to the database.
        `stored`: the vectors are another index's rows (`_stored_rows`), kept bit for bit."""
        new = items.ids
        if len(set(new)) != len(new):
            seen = set()
            twice = next(i for i in new if i in seen or seen.add(i))
            raise ValueError(f"id {twice!r} appears twice in the input")
        if self.similarity == "cosine" and not stored:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        start = self.vectors.rows
        texts = items.texts if self.store_text else [None] * len(new)
        metadata = [_dump(m, id) if m else "{}" for m, id in zip(items.metadata, new, strict=True)]
        columns = (range(start, start + len(new)), new, items.document_ids, texts, metadata)
        values = list(itertools.chain.from_iterable(zip(*columns, strict=True)))
        self._db.execute("SAVEPOINT window")
        try:
            # Many rows a statement: a third less time than a statement a row (executemany).
            for at in range(0, len(values), 5 * INSERT_ROWS):
                part = values[at : at + 5 * INSERT_ROWS]
                self._db.execute(
                    "INSERT INTO items (row, id, document_id, text, metadata) VALUES "
                    + ",".join(["(?, ?, ?, ?, ?)"] * (len(part) // 5)),
                    part,
                )
        except sqlite3.IntegrityError:
            self._db.execute("ROLLBACK TO window")
            self._db.execute("RELEASE window")
            existing = self._select("id", new, columns="id")
            raise ValueError(
                f"id {existing[0][0]!r} is already in the index (remove it first to replace it)"
            ) from None
        self._db.execute("RELEASE window")
        added = self.vectors.append(vectors)
        self._changed(np.arange(added.start, added.stop), data=True)
        if self.path is not None and self.vectors.pending_rows >= SHARD_ROWS:
            self.vectors.flush(self.path, self._claim)

    def _stored_rows(
        self, size: int = SHARD_ROWS, *, vectors: bool = True
    ) -> Iterator[tuple[np.ndarray | None, _Columns]]:
        """The live rows in row order, `size` at a time: (float32 `[n, D]` vectors as stored,
        or None without `vectors`; their items). Host memory stays flat."""
        last = -1
        while True:
            with self._lock:
                query = "SELECT row, id, document_id, text, metadata FROM items WHERE row > ? "
                rows = self._db.execute(query + "ORDER BY row LIMIT ?", (last, size)).fetchall()
                if not rows:
                    return
                found = self.vectors.gather([r[0] for r in rows]) if vectors else None
            last = rows[-1][0]
            _, ids, document_ids, texts, metadata = map(list, zip(*rows, strict=True))
            yield found, _Columns(ids, document_ids, texts, [json.loads(m) for m in metadata])

    @contextlib.contextmanager
    def _rollback_on_error(self) -> Iterator[None]:
        """Undo the rows added in the block if it raises (including KeyboardInterrupt)."""
        mark = self.vectors.mark()
        self._db.execute("SAVEPOINT adding")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK TO adding")
            self._db.execute("RELEASE adding")
            dropped = self.vectors.rollback(mark, self.path)
            self._changed(np.arange(dropped.start, dropped.stop), data=True)
            if {s.file for s in self.vectors.shards} <= self._saved_shards:  # none unsaved on disk
                self._release_unless_session()
            raise
        self._db.execute("RELEASE adding")

    # ------------------------------------------------------------------ removing
    def remove(self, ids: str | Iterable[str], *, by_document: bool = False) -> int:
        """Remove items by id (ids not in the index are ignored); the number removed. Their
        vectors stay on disk, unsearchable, until `compact()`. With `by_document=True` the ids
        are document ids and every item (chunk) of those documents is removed."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        column = "document_id" if by_document else "id"
        with self._lock:
            rows = np.array([r[0] for r in self._select(column, ids, columns="row")], np.int64)
            for part in _parts(rows.tolist()):
                marks = ",".join("?" * len(part))
                self._db.execute(f"DELETE FROM items WHERE row IN ({marks})", part)
            if by_document:
                self.documents.drop(ids)
            self.vectors.kill(rows)
            self._changed(rows, data=False)
            return len(rows)

    def compact(self) -> None:
        """Drop removed rows from the vectors (new shards, rows renumbered); saved at the next
        `save`, so searches and the store stop paying for deletions."""
        with self._lock:
            keep = np.flatnonzero(self.vectors.live)
            if len(keep) == self.vectors.rows:
                return
            self._db.execute("CREATE TEMP TABLE renumber (old INTEGER PRIMARY KEY, new INTEGER)")
            self._db.executemany(
                "INSERT INTO renumber VALUES (?, ?)", zip(keep.tolist(), itertools.count())
            )
            self._db.execute(
                "UPDATE items SET row = -1 - (SELECT new FROM renumber WHERE old = items.row)"
            )
            self._db.execute("UPDATE items SET row = -1 - row")
            self._db.execute("DROP TABLE renumber")
            self.vectors.compact()
            for backend in self._backends:
                backend.reset()
            if self.path is not None:
                self.vectors.flush(self.path, self._claim)

    # ------------------------------------------------------------------ searching
    def search(
        self,
        queries: str | Sequence[str] | np.ndarray | jax.Array,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        *,
        by_document: bool = False,
        rescore: bool = True,
        batch_size: int = 64,
        mode: str = "dense",
        weights: Sequence[float] | None = None,
        rerank: Any = None,
        candidates: int | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """The `top_k` best items for each query, best first.

        Args:
            queries: a string, a list of strings (embedded with the model's query prompt), or
                query vectors `[D]` / `[Q, D]` (dense search only).
            top_k: results per query (fewer if fewer items match).
            filter: metadata conditions every hit must meet, applied before the top-k (see
                `retrieval.filters`: {"source": "a.md"}, {"year": {"$gte": 2020}}, $and/$or).
            by_document: return the best chunk of each of the `top_k` best documents.
            rescore: for bfloat16, int8 and binary indexes, re-rank candidates with the float32
                vectors (False: the quantized scores as they are).
            mode: "dense" (the vectors), "lexical" (BM25 over the texts) or "hybrid" (both,
                fused by reciprocal rank; a hit's score is its fused score).
            weights: hybrid: the (dense, lexical) weights of the fusion (default (1, 1)).
            rerank: a cross-encoder (`ferris_jax.load_reranker`, or anything with
                sentence-transformers' `CrossEncoder.predict`) that re-scores the `candidates`
                best hits against the query text; hits then carry its scores.
            candidates: how many rows each backend gives a hybrid search, and how many hits
                the reranker re-scores (default `HYBRID_CANDIDATES * top_k`).

        Returns:
            A list of `Hit`s for a single query (a string or `[D]`), else one list per query.
        """
        top_k = require_int("top_k", top_k)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if candidates is not None:
            candidates = require_int("candidates", candidates, minimum=1)
        pool = max(top_k, candidates or HYBRID_CANDIDATES * top_k)
        single = isinstance(queries, str) or (
            not isinstance(queries, str) and hasattr(queries, "ndim") and queries.ndim == 1
        )
        texts = _query_texts(queries)
        if texts is None and (mode != "dense" or rerank is not None):
            what = f"mode={mode!r}" if mode != "dense" else "rerank"
            raise ValueError(f"{what} needs query texts (strings), not query vectors")
        if (mode != "dense" or rerank is not None) and not self.store_text:
            raise ValueError(
                "this index keeps no texts (store_text=False): lexical search and reranking "
                "need them"
            )
        vectors, finite = (None, None)
        if mode != "lexical":
            vectors, finite = self._query_vectors(queries, batch_size)
        with self._lock:
            allowed = self._row_filter(filter)
        need = pool if rerank is not None else top_k  # hits (or documents) wanted
        want = need
        while True:
            scores, rows = self._ranked(
                mode, vectors, finite, texts, want, pool, allowed, rescore, weights
            )
            hits = self._hits(scores, rows)
            if not by_document:
                break
            grouped = [_best_per_document(h, need) for h in hits]
            rows_in_index = self.vectors.rows
            exhausted = all(len(h) < want for h in hits)
            if exhausted or all(len(g) >= need for g in grouped) or want >= rows_in_index:
                hits = grouped
                break
            want, pool = min(4 * want, max(rows_in_index, 1)), 4 * pool
        if rerank is not None:
            hits = _reranked(rerank, texts, hits, batch_size)
        hits = [h[:top_k] for h in hits]
        return hits[0] if single else hits

    def _ranked(
        self,
        mode: str,
        vectors: np.ndarray | jax.Array | None,
        finite: jax.Array | None,
        texts: list[str] | None,
        k: int,
        pool: int,
        allowed: RowFilter | None,
        rescore: bool,
        weights: Sequence[float] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) `[Q, k]` of the chosen backend, or of both fused (each giving `pool`
        rows at least); -1 where fewer rows match."""
        if mode == "dense":
            return self._dense.search(vectors, k, allowed, rescore=rescore, finite=finite)
        if mode == "lexical":
            return self._lexical.search(texts, k, allowed)
        n = max(k, pool)
        # The device searches the vectors while the host searches the texts.
        dense_results = self._dense.begin_search(
            vectors, n, allowed, rescore=rescore, finite=finite
        )
        _, lexical = self._lexical.search(texts, n, allowed)
        _, dense = dense_results()
        return reciprocal_rank_fusion([dense, lexical], k, weights=weights, rrf_k=RRF_K)

    def _row_filter(self, filter: Mapping[str, Any] | None) -> RowFilter | None:
        """The rows a search may return (under the lock); None: every live row."""
        if filter is None:
            return None
        return RowFilter(self._db, filter, self.vectors.live.copy())

    def _query_vectors(
        self, queries: Any, batch_size: int
    ) -> tuple[np.ndarray | jax.Array, jax.Array | None]:
        """Query vectors `[Q, D]`, unit length for cosine, and None; or, for one query text
        embedded for the exact search, which stays on the device (no round trip through the
        host), whether it is finite (bool `[1]` on the device, checked by the search with its
        results). Vectors that are not finite are refused here otherwise."""
        texts = _query_texts(queries)
        if texts is not None:
            if self.encoder is None:
                raise ValueError("this index has no encoder: search with query vectors")
            # One query (the latency case, one program shape) stays on the device; a batch of
            # them comes through the host, where any number of queries compiles nothing new.
            on_device = self.ann_options is None and len(texts) == 1
            vectors = self.encoder.encode(
                texts,
                batch_size=batch_size,
                prompt=self.prompts["query"],
                convert_to_tensor=on_device,
            )
            if on_device:
                return _device_queries(vectors, self.similarity == "cosine")
        else:
            vectors = np.asarray(queries, np.float32)
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise ValueError(
                f"query vectors must be [Q, {self.dimension}], got {list(np.shape(queries))}"
            )
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            raise ValueError(f"query vector {int(np.argmin(finite))} is not finite (NaN or inf)")
        if self.similarity == "cosine":
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors, None

    def _hits(self, scores: np.ndarray, rows: np.ndarray) -> list[list[Hit]]:
        with self._lock:
            found = {r[0]: r for r in self._select("row", np.unique(rows[rows >= 0]).tolist())}
        return [
            [_hit(found[r], float(s)) for s, r in zip(qs, qr, strict=True) if r in found]
            for qs, qr in zip(scores, rows, strict=True)
        ]

    def _changed(self, rows: np.ndarray, *, data: bool) -> None:
        """Tell the backends that rows were added or dropped (`data`), or only removed."""
        for backend in self._backends:
            backend.changed(rows, data=data)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the index to the folder `path` (default: where it was loaded or last saved).

        Only what changed is written: new vector shards and a snapshot of the item database,
        then the manifest is replaced atomically; a save interrupted at any point leaves the
        previous index loadable. A new folder must be empty (or not exist); nothing there but
        the index's own files is ever touched.

        Raises:
            IndexLockedError: another writer holds the folder (waits `lock_timeout` first).
            IndexConflictError: another writer saved the folder since this index read it.
        """
        with self._lock:
            if path is None and self.path is None:
                raise ValueError("this index was never saved: pass a folder to save it to")
            folder = Path(path).resolve() if path is not None else self.path
            moving = folder != self.path
            before = self.vectors.mark()
            try:
                self._save(folder)
            except BaseException:
                held = self._writer is not None and self._writer.folder == folder
                if moving and held and not (folder / store.MANIFEST).exists():
                    # A failed move leaves this index as it was and the new folder empty.
                    self.vectors.rollback(before, None)
                    store.remove_unreferenced(folder, None)
                raise
            finally:
                self._release_unless_session()
            return folder

    def _save(self, folder: Path) -> None:
        self._claim(folder)
        if folder != self.path:
            for shard in self.vectors.shards:  # a new home: bring the saved shards along
                _link_or_copy(self.path / shard.file, folder / shard.file)
        self.vectors.flush(folder, self._claim)
        items_file = f"items-{secrets.token_hex(4)}.sqlite"
        items_sha = store.snapshot(self._db, folder / items_file)
        backends = {"int8_ranges": None, "int8_ranges_rows": 0, "ann": None}
        for backend in self._backends:
            backends.update(backend.save(folder))
        generation = (self._generation if folder == self.path else None) or 0
        manifest = {
            "format": store.FORMAT,
            "format_version": store.FORMAT_VERSION,
            "created_by": f"ferris-jax {_version.__version__}",
            "generation": generation + 1,
            "model": self.model,
            "dimension": self.dimension,
            "similarity": self.similarity,
            "normalized": self.similarity == "cosine",
            "precision": self.precision,
            "store_text": self.store_text,
            "prompts": self.prompts,
            "chunking": self.chunking,
            "probe": {"text": PROBE_TEXT, "vector": self.probe} if self.probe else None,
            "int8_ranges": backends["int8_ranges"],
            "int8_ranges_rows": backends["int8_ranges_rows"],
            "rows": self.vectors.rows,
            "items": {"file": items_file, "sha256": items_sha, "count": len(self)},
            "shards": [dataclasses.asdict(s) for s in self.vectors.shards],
            "ann_options": self.ann_options,
            "ann": backends["ann"],
            "lexical_backend": self.lexical_backend,
        }
        store.write_manifest(folder, manifest)
        if self.path != folder:
            self.vectors.remap(folder)
        self.path = folder
        self._generation = generation + 1
        self._saved_shards = {s.file for s in self.vectors.shards}
        store.remove_unreferenced(folder, manifest)

    # ------------------------------------------------------------------ writing the folder
    def lock(self, path: str | os.PathLike | None = None, *, timeout: float | None = None) -> None:
        """Hold the write lock of the folder `path` (default: the index's own) until `close()`,
        so that no other writer changes it meanwhile; a new folder is created.

        Args:
            timeout: seconds to wait for another writer (default: `lock_timeout`).

        Raises:
            IndexLockedError, IndexConflictError: as in `save`.
        """
        if path is None and self.path is None:
            raise ValueError("this index was never saved: pass the folder to lock")
        folder = Path(path).resolve() if path is not None else self.path
        with self._lock:
            self._claim(folder, timeout)
            self._writer_session = True

    def close(self) -> None:
        """Drop the folder's write lock if this index holds it (unsaved changes stay in memory
        and can still be saved)."""
        with self._lock:
            self._writer_session = False
            self._release_unless_session()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _claim(self, folder: Path, timeout: float | None = None) -> None:
        """Hold `folder`'s write lock (taken now if not yet held) and check that the folder is
        this index's own at the generation it last read or wrote, or a new one."""
        if self._writer is not None:
            if self._writer.folder != folder:
                raise ValueError(
                    f"this index holds the write lock of {self._writer.folder}: close() it "
                    f"before writing {folder}"
                )
            return
        _check_index_folder(folder)
        if folder != self.path and folder.is_dir():
            _check_new_folder(folder)  # before the lock file is made in someone else's folder
        folder.mkdir(parents=True, exist_ok=True)
        writer = WriteLock(folder, self.lock_timeout if timeout is None else timeout)
        try:
            on_disk = store.generation_of(folder)
            if folder == self.path and on_disk != self._generation:
                raise IndexConflictError(
                    f"{folder}: another writer saved this index (generation {on_disk}) since "
                    f"this one read or wrote it (generation {self._generation}); both changes "
                    "cannot be kept: load the index again and repeat this one"
                )
            if folder != self.path:
                _check_new_folder(folder)
        except BaseException:
            writer.release()
            raise
        self._writer = writer

    def _release_unless_session(self) -> None:
        if self._writer is not None and not self._writer_session:
            self._writer.release()
            self._writer = None

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        encoder: Encoder | None = None,
        *,
        verify: bool = True,
        lock: bool = False,
        lock_timeout: float = 0.0,
        **load_options: Any,
    ) -> Index:
        """Open a saved index.

        Args:
            path: the index folder.
            encoder: the model to embed queries and new texts with (default: load the model
                the manifest names, with `load_options` for `ferris_jax.load`; none for an
                index of vectors built without one). A model whose vectors differ from the
                index's is refused.
            verify: check every file's sha256 against the manifest first.
            lock: take the folder's write lock before reading and hold it until `close()`
                (see `lock`), for a writer that must not race another.
            lock_timeout: seconds to wait for another writer's lock (`IndexLockedError`
                after); also the index's `lock_timeout` for later saves.
        """
        folder = Path(path).resolve()
        if not folder.is_dir():
            raise IndexFormatError(f"{folder}: no such index folder")
        writer = WriteLock(folder, lock_timeout) if lock else None
        try:
            with store.reading(folder):  # no save removes the files of the manifest read here
                self = cls._open(folder, encoder, verify, load_options)
        except BaseException:
            if writer is not None:
                writer.release()
            raise
        self._writer, self._writer_session = writer, writer is not None
        self.lock_timeout = lock_timeout
        return self

    @classmethod
    def merge(
        cls,
        parts: Sequence[str | os.PathLike],
        path: str | os.PathLike,
        *,
        encoder: Encoder | None = None,
        verify: bool = True,
        lock_timeout: float = 0.0,
        **load_options: Any,
    ) -> Index:
        """Merge index folders built separately (by several processes or hosts, each over its
        own share of a corpus) into a new index at `path`: the one a single process would
        build from the shares in this order, then `compact` (removed rows are left out).

        The parts must share their model (name and probe vector), dimension, similarity,
        precision, `store_text`, prompts, ANN options and chunking (a part with no chunked
        documents fits any); no item id or document id may be in two parts. They are only
        read. Vectors are copied bit for bit, with the ids, texts, metadata and document
        records (so `ingest` / `ferris-jax index add` skips unchanged documents).

        Args:
            parts: the index folders, in the order their rows follow in the merged index.
            path: the merged index's folder: new or empty. It is written under its write
                lock; a merge that fails leaves no index and none of its files there.
            encoder: the model (default: loaded once, from the first part's manifest, with
                `load_options` for `ferris_jax.load`, and used for every part).
            verify: check every part's files against their sha256 first.
            lock_timeout: seconds to wait for another writer of `path`; also the merged
                index's `lock_timeout`.

        Returns:
            The merged index, saved at `path` (its lock released).

        Raises:
            MergeError: parts that cannot be merged (naming the part and the field or id),
                no parts, a part named twice, `path` inside a part or a non-empty folder.
            IndexFormatError: a part that cannot be read, or a model that embeds otherwise.
            IndexLockedError: another writer holds `path` longer than `lock_timeout`.
        """
        from ferris_jax.retrieval import merge

        return merge.merge(
            cls, parts, path, encoder=encoder, verify=verify, lock_timeout=lock_timeout,
            min_cosine=PROBE_MIN_COSINE, load_options=load_options,
        )  # fmt: skip

    @classmethod
    def _open(
        cls,
        folder: Path,
        encoder: Encoder | None,
        verify: bool,
        load_options: dict[str, Any],
    ) -> Index:
        manifest = store.read_manifest(folder)
        where = folder / store.MANIFEST
        try:
            if verify:
                store.verify(folder, manifest)
            dimension = int(manifest["dimension"])
            model = manifest["model"]
            # An index built without an encoder (vectors only) has no probe: none is loaded.
            if encoder is None and model.get("name") is not None and manifest.get("probe"):
                from ferris_jax.api import load

                source = model["name"]
                if model.get("path") and Path(model["path"]).is_dir():
                    source = model["path"]
                encoder = load(source, **load_options)
            self = cls(
                encoder,
                precision=manifest["precision"],
                similarity=manifest["similarity"],
                store_text=manifest["store_text"],
                dimension=dimension,
                model=model["name"],
                ann=False if manifest.get("ann_options") is None else manifest["ann_options"],
                lexical_backend=manifest.get("lexical_backend", "fts5"),
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, IndexFormatError):
                raise
            raise IndexFormatError(f"{where}: {type(e).__name__}: {e}") from None
        if self.dimension != dimension:
            raise IndexFormatError(
                f"{where}: the index holds {dimension}-dimensional vectors; the encoder "
                f"{self.model['name']!r} makes {self.dimension}"
            )
        probe = manifest.get("probe")
        if encoder is not None and probe:
            cosine = float(np.dot(self.probe, probe["vector"]))
            cosine /= float(np.linalg.norm(self.probe) * np.linalg.norm(probe["vector"]))
            if cosine < PROBE_MIN_COSINE:
                raise IndexFormatError(
                    f"{where}: built with model {model['name']!r}; {self.model['name']!r} embeds "
                    f"differently (probe cosine {cosine:.3f}): load the index with its own model"
                )
        self.model = model
        self.prompts = dict(manifest["prompts"])
        self.chunking = manifest.get("chunking")
        self.probe = probe["vector"] if probe else None
        fields = [f.name for f in dataclasses.fields(Shard)]  # unknown keys are ignored
        shards = [Shard(**{f: s[f] for f in fields}) for s in manifest["shards"]]
        rows_in_shards = int(manifest["rows"])
        if sum(s.rows for s in shards) != rows_in_shards:
            raise IndexFormatError(f"{where}: the shards hold a different number of rows")
        store.restore(folder / manifest["items"]["file"], self._db)
        rows = np.fromiter((r for (r,) in self._db.execute("SELECT row FROM items")), np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= rows_in_shards):
            raise IndexFormatError(f"{folder / manifest['items']['file']}: rows out of range")
        self.vectors.open(folder, shards, rows_in_shards, rows)
        for backend in self._backends:
            try:
                backend.load(folder, manifest)
            except ValueError as e:
                raise IndexFormatError(f"{where}: {e}") from None
        self.path = folder
        self._generation = int(manifest.get("generation", 0))
        self._saved_shards = {s.file for s in self.vectors.shards}
        return self

    # ------------------------------------------------------------------ helpers
    def _select(self, column: str, values: Sequence[Any], columns: str = "*") -> list[tuple]:
        """Rows of the items table whose `column` is one of `values` (in parts of 500), as
        (row, id, document_id, text, metadata) for `columns="*"`."""
        out: list[tuple] = []
        for part in _parts(list(values)):
            marks = ",".join("?" * len(part))
            query = f"SELECT {columns} FROM items WHERE {column} IN ({marks})"
            out += self._db.execute(query, part).fetchall()
        return out

    def _probe_vector(self) -> list[float]:
        return [float(x) for x in self.encoder.encode([PROBE_TEXT])[0]]

    def __repr__(self) -> str:
        return (
            f"Index({self.model['name']!r}, items={len(self)}, dim={self.dimension}, "
            f"{self.similarity}, {self.precision}, path={str(self.path) if self.path else None})"
        )


def _items(
    texts: Any,
    ids: Iterable[str] | None,
    metadata: Iterable[Mapping[str, Any] | None] | None,
    *,
    allow_none: bool = False,
) -> Iterator[_Item]:
    """The items of an `add`: (id, document id, text, metadata) per input, checked lazily;
    ids and metadata must have one entry per text, no fewer and no more."""
    single = isinstance(texts, (str, Document, Chunk))
    if single:
        texts = [texts]
    if isinstance(ids, str):
        if not single:
            raise TypeError(f"ids must be a list of strings, one per text, got the str {ids!r}")
        ids = [ids]
    if isinstance(metadata, Mapping):
        if not single:
            raise TypeError("metadata must be a list of dicts, one per text, got one dict")
        metadata = [metadata]
    ids_it = iter(ids) if ids is not None else None
    prefix = secrets.token_hex(6)  # new ids: random per call, numbered within it
    meta_it = iter(metadata) if metadata is not None else None
    end = object()
    i = -1
    plain = ids_it is None and meta_it is None
    for i, value in enumerate(texts):
        if plain and type(value) is str:  # the common case, first: a text, a new id
            item_id = f"{prefix}-{i}"
            yield _Item(item_id, item_id, value, {})
            continue
        meta = {}
        if meta_it is not None:
            meta = next(meta_it, end)
            if meta is end:
                raise ValueError(f"metadata has fewer entries than texts (none for text {i})")
            if meta is not None and not isinstance(meta, Mapping):
                raise TypeError(f"metadata[{i}] must be a dict or None, got {type(meta).__name__}")
            meta = dict(meta or {})
        given = next(ids_it, None) if ids_it is not None else None
        if ids_it is not None and given is None:
            raise ValueError(f"ids has fewer entries than texts (none for text {i})")
        if isinstance(value, str) or (allow_none and value is None):
            document_id, text, default_id = None, value, None
        elif isinstance(value, Chunk):
            meta = {
                **value.metadata, **meta, "document_id": value.document_id,
                "chunk_index": value.chunk_index, "start": value.start, "end": value.end,
            }  # fmt: skip
            document_id, text, default_id = value.document_id, value.text, value.id
        elif isinstance(value, Document):
            meta = {**value.metadata, **meta}
            document_id, text, default_id = value.id, value.text, value.id
        else:
            raise TypeError(
                f"texts[{i}] is {type(value).__name__}, expected str, Document or Chunk"
            )
        item_id = given if given is not None else default_id or f"{prefix}-{i}"
        if not isinstance(item_id, str) or not item_id:
            raise ValueError(f"ids[{i}] must be a non-empty string, got {item_id!r}")
        if document_id is None:
            document_id = item_id
        yield _Item(item_id, document_id, text, meta)
    for name, rest in (("ids", ids_it), ("metadata", meta_it)):
        if rest is not None and next(rest, end) is not end:
            raise ValueError(f"{name} has more entries than the {i + 1} texts")


@functools.partial(jax.jit, static_argnums=1)
def _device_queries(vectors: jax.Array, unit: bool) -> tuple[jax.Array, jax.Array]:
    """Query vectors on the device, scaled to unit length if `unit` (as `_query_vectors` does
    on the host), and whether each is finite: one program."""
    finite = jnp.isfinite(vectors).all(axis=1)
    if unit:
        vectors = vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors, finite


def _query_texts(queries: Any) -> list[str] | None:
    """The query texts of a search (None for query vectors)."""
    if isinstance(queries, str):
        return [queries]
    if isinstance(queries, Sequence) and queries and isinstance(queries[0], str):
        for i, query in enumerate(queries):
            if not isinstance(query, str):
                raise TypeError(f"queries[{i}] is {type(query).__name__}, expected str")
        return list(queries)
    return None


def _reranked(reranker: Any, queries: list[str], hits: list[list[Hit]], batch_size: int):
    """Each query's hits re-scored by a cross-encoder over (query, hit text) and sorted by those
    scores (ties in the order found); all queries' pairs go through one `predict` call."""
    pairs = [(query, hit.text) for query, found in zip(queries, hits, strict=True) for hit in found]
    if not pairs:
        return hits
    scores = np.asarray(reranker.predict(pairs, batch_size=batch_size), np.float64)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.shape != (len(pairs),):
        raise ValueError(
            f"the reranker gave scores of shape {list(scores.shape)} for {len(pairs)} pairs: "
            "reranking needs one score per pair (a model with one label)"
        )
    out, at = [], 0
    for found in hits:
        mine = scores[at : at + len(found)]
        at += len(found)
        order = np.argsort(-mine, kind="stable")
        out.append([dataclasses.replace(found[i], score=float(mine[i])) for i in order])
    return out


def _hit(row: tuple, score: float) -> Hit:
    """A `Hit` from an items row (row, id, document_id, text, metadata)."""
    return Hit(row[1], score, row[3], json.loads(row[4]), row[2])


def _dump(metadata: dict[str, Any], id: str) -> str:
    try:
        return json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata of {id!r} is not JSON-serializable: {e}") from None


def _best_per_document(hits: list[Hit], k: int) -> list[Hit]:
    best: dict[str, Hit] = {}
    for hit in hits:
        best.setdefault(hit.document_id or hit.id, hit)
    return list(best.values())[:k]


def _parts(values: list[Any], size: int = 500) -> Iterator[list[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _working_database() -> tuple[Any, str]:
    """A scratch SQLite file (host memory stays flat however many items), removed with it."""
    fd, name = tempfile.mkstemp(prefix="ferris-index-", suffix=".sqlite")
    os.close(fd)
    return store.connect(name), name


def _close_database(db: Any, name: str) -> None:
    db.close()
    with contextlib.suppress(OSError):
        os.unlink(name)


def _check_index_folder(folder: Path) -> None:
    if folder == Path.cwd().resolve():
        raise ValueError("refusing to save an index into the working directory: name a folder")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} exists and is not a folder")


def _check_new_folder(folder: Path) -> None:
    """A folder an index moves into must hold nothing (but the lock files): another index
    there, or anyone's other files, would be replaced or mixed with this one."""
    others = sorted(
        p.name for p in folder.iterdir() if p.name not in (store.WRITE_LOCK, store.READ_LOCK)
    )
    if store.generation_of(folder, strict=False) is not None:
        raise ValueError(f"{folder} holds another index: load it to add to it, or remove it first")
    if others:
        raise ValueError(
            f"{folder} is a non-empty folder that holds no index ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}): choose another"
        )


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _revision(path: Path) -> str | None:
    """The Hugging Face snapshot a model was loaded from (its commit), when known."""
    parts = Path(path).parts
    if "snapshots" in parts and parts.index("snapshots") + 1 < len(parts):
        return parts[parts.index("snapshots") + 1]
    return None
