"""Documents kept fresh in an index: `ingest` adds what is new, replaces what changed and skips
the rest, as LangChain's indexing API does with its record manager.

Each document's text and metadata are hashed and the hash is recorded in the index with its
chunk count and source file (`Index.documents`). A run skips a document whose hash is recorded
complete; a changed one loses its old chunks (also those past its new end) before its new ones
are added; a document an interrupted run saved in part (same hash, no chunk count yet) resumes
after its last saved chunk, so saves may fall inside a long document. With `prune_sources`,
documents read earlier from those files or folders and not seen in this run are removed: their
files were deleted, or their JSON Lines records.

Chunks stream through: a document's chunks are never all held at once.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ferris_jax.retrieval.chunking import Chunk, chunk_documents
from ferris_jax.retrieval.index import Index
from ferris_jax.retrieval.sources import Document
from ferris_jax.retrieval.store import DocumentRecord


class DocumentTooLong(ValueError):
    """A document asked to be embedded whole does not fit the model (`whole_documents`)."""


@dataclasses.dataclass
class IngestCounts:
    """What a run did, in documents (and chunks embedded)."""

    read: int = 0
    added: int = 0  # new documents
    updated: int = 0  # changed documents, re-embedded
    resumed: int = 0  # documents a previous run saved in part, finished
    skipped: int = 0  # unchanged documents
    removed: int = 0  # documents pruned (their source is gone)
    chunks: int = 0


# Metadata that says where a document was read from, not what it holds: the same file named
# by another path, or a JSON Lines record moved to another line, is the same document.
WHERE_KEYS = ("source", "line")


def content_hash(document: Document) -> str:
    """The sha256 of a document's text and metadata (what its chunks are made of), but for
    `WHERE_KEYS`."""
    metadata = {k: v for k, v in document.metadata.items() if k not in WHERE_KEYS}
    digest = hashlib.sha256(document.text.encode("utf-8", "surrogatepass"))
    digest.update(b"\0" + json.dumps(metadata, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def ingest(
    index: Index,
    documents: Iterable[Document],
    *,
    chunking: dict[str, Any],
    folder: str | os.PathLike | None = None,
    save_every: int = 8192,
    batch_size: int = 64,
    prune_sources: Sequence[str | os.PathLike] | None = None,
    on_chunk: Callable[[IngestCounts], None] | None = None,
) -> IngestCounts:
    """Bring `documents` into `index`, chunked with `chunking` (`Index.chunking_for`), saving it
    to `folder` (default: its own) after about every `save_every` chunks and at the end.

    Args:
        prune_sources: the files and folders `documents` were read from: documents recorded
            from them that this run did not see are removed.
        on_chunk: called with the running counts after each chunk is fed to the encoder
            (progress).

    Raises:
        DocumentTooLong: with `chunking["whole_documents"]`, a document the model would
            truncate (what was saved before it stays saved).
    """
    folder = Path(folder).resolve() if folder is not None else index.path
    index.chunking = chunking  # saved with the index: later runs chunk the same way
    counts = IngestCounts()
    queued: collections.deque[_Queued] = collections.deque()
    seen: set[str] = set()
    pending: list[Chunk | Document] = []
    # Documents whose chunks are all queued: recorded complete once those are in the index.
    finished: list[DocumentRecord] = []
    # The document whose chunks are being queued: recorded in part if a save comes first.
    started: list[DocumentRecord] = []

    def fed() -> Iterator[Chunk | Document]:
        for item in pending:
            yield item
            counts.chunks += 1
            if on_chunk is not None:
                on_chunk(counts)

    def save() -> None:
        index.add(fed(), batch_size=batch_size, chunk_size=max(8 * batch_size, 1024),
                  show_progress_bar=False)  # fmt: skip
        pending.clear()
        index.documents.put_many(finished + started)
        finished.clear()
        index.save(folder)

    def changed(stream: Iterable[Document]) -> Iterator[Document]:
        """The documents to chunk (unchanged ones are counted and dropped here, unchunked),
        looked up LOOKUP_DOCUMENTS at a time."""
        stream = iter(stream)
        while batch := list(itertools.islice(stream, LOOKUP_DOCUMENTS)):
            records = index.documents.get_many([d.id for d in batch])
            digests = [content_hash(d) for d in batch]
            todo = [
                (document, digest)
                for document, digest in zip(batch, digests, strict=True)
                if not _complete(records.get(document.id), digest)
            ]
            chunked = index.chunk_ids([d.id for d, _ in todo])
            for document in batch:
                counts.read += 1
                seen.add(document.id)
            counts.skipped += len(batch) - len(todo)
            for document, digest in todo:
                source = document.metadata.get("source")
                path = os.path.abspath(source) if isinstance(source, str) else None
                record = records.get(document.id)
                queued.append(_Queued(document, digest, path, record, chunked.get(document.id)))
                yield document

    def start(item: _Queued) -> set[str]:
        """Make room for a document's chunks; the ids of those already in (a resumed one)."""
        document, digest, source, record, old = item
        if record is not None and record.sha256 == digest and record.chunks is None:
            counts.resumed += 1
            kept = set(old or ())
        else:
            if old:
                index.remove(old)  # the old version's chunks, also those past the new end
            kept = set()
            if record is None and not old:
                counts.added += 1
            else:
                counts.updated += 1
        started[:] = [DocumentRecord(document.id, digest, None, source)]
        return kept

    def finish(item: _Queued, chunks: int) -> None:
        started.clear()
        finished.append(DocumentRecord(item.document.id, item.digest, chunks, item.source))

    def finish_empty() -> None:
        """The next queued document, which has no chunk (no text)."""
        start(queued[0])
        finish(queued.popleft(), 0)

    chunks = chunk_documents(
        changed(documents),
        index.encoder,
        max_tokens=chunking["max_tokens"],
        overlap=chunking["overlap"],
        prompt=index.prompts["document"],
    )
    whole = bool(chunking.get("whole_documents"))
    for document_id, group in itertools.groupby(chunks, key=lambda c: c.document_id):
        while queued[0].document.id != document_id:
            finish_empty()
        item = queued.popleft()
        document = item.document
        kept = start(item)
        n = 0
        items: Iterator[Chunk | Document] = iter(group)
        if whole:
            first = next(items)
            if next(items, None) is not None:
                raise DocumentTooLong(
                    f"document {document.id!r} ({document.metadata.get('source', 'no source')})"
                    f" is longer than the {index.encoder.max_seq_length} tokens the model takes"
                    " and would be truncated; drop --no-chunk to split it into chunks"
                )
            items = iter([Document(document.id, first.text, first.metadata)])
        for chunk in items:
            n += 1
            if chunk.id not in kept:
                pending.append(chunk)
            if len(pending) >= save_every:
                save()
        finish(item, n)
    while queued:
        finish_empty()
    if prune_sources:
        counts.removed = _prune(index, prune_sources, seen)
    if counts.read != counts.skipped or counts.removed or index.path != folder:
        save()  # also records the documents finished since the last save
    return counts


# Documents looked up in the index's database at a time.
LOOKUP_DOCUMENTS = 256


class _Queued(NamedTuple):
    """A document to chunk, with what the index held of it when it was read."""

    document: Document
    digest: str
    source: str | None  # the absolute path of its file
    record: DocumentRecord | None
    old: list[str] | None  # the ids of its chunks in the index


def _complete(record: DocumentRecord | None, digest: str) -> bool:
    """Whether the index holds all of a document with this content hash."""
    return record is not None and record.sha256 == digest and record.chunks is not None


def _prune(index: Index, sources: Sequence[str | os.PathLike], seen: set[str]) -> int:
    """Remove the documents recorded from these files or folders that were not seen."""
    roots = [os.path.abspath(s) for s in sources]

    def under(path: str) -> bool:
        return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)

    gone = [d for d, source in index.documents.sources() if d not in seen and under(source)]
    index.remove(gone, by_document=True)
    return len(gone)
