"""What the retrieval and integration tests share: a tiny E5-style model (query/passage
prompts) and the checks every set of chunks must pass."""

from __future__ import annotations

import itertools
from pathlib import Path

from helpers.checkpoints import make_sentence_transformer

E5_PROMPTS = {"query": "query: ", "passage": "passage: "}


def make_e5_style_model(directory: Path, max_seq_length: int = 48) -> Path:
    """A small random sentence-transformers model with E5's prompts, mean pooling, Normalize."""
    path, _ = make_sentence_transformer(
        directory, prompts=E5_PROMPTS, normalize=True, max_seq_length=max_seq_length
    )
    return path


def assert_chunks_cover(documents, chunks, *, overlap: int | None = None, count=None) -> None:
    """Each document's chunks are numbered 0.., hold exactly `text[start:end]`, are non-empty
    and trimmed, move forward, and together cover every non-whitespace character; the text two
    neighbours share is at most `overlap` tokens by `count(text)` (without special tokens)."""
    by_id: dict[str, list] = {}
    for chunk in chunks:
        by_id.setdefault(chunk.document_id, []).append(chunk)
    for doc in documents:
        mine = by_id.pop(doc.id, [])
        assert [c.chunk_index for c in mine] == list(range(len(mine))), doc.id
        covered = bytearray(len(doc.text))
        for c in mine:
            assert c.text and c.text == doc.text[c.start : c.end], (doc.id, c.chunk_index)
            assert c.text == c.text.strip(), (doc.id, c.chunk_index)
            assert c.metadata == doc.metadata
            covered[c.start : c.end] = b"\x01" * (c.end - c.start)
        for a, b in itertools.pairwise(mine):
            assert a.start < b.start and a.end < b.end, (doc.id, b.chunk_index)
            if overlap is not None:
                shared = doc.text[b.start : a.end] if b.start < a.end else ""
                assert count(shared) <= overlap, (doc.id, b.chunk_index, shared)
        missed = [ch for ch, hit in zip(doc.text, covered, strict=True) if not hit]
        assert all(ch.isspace() for ch in missed), (doc.id, "".join(missed)[:80])
    assert not by_id, f"chunks of unknown documents {sorted(by_id)[:5]}"
