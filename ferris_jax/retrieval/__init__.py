"""Retrieval for RAG: documents -> chunks -> vectors -> a persistent index -> search.

`Index` and its pieces load lazily, so importing the package costs nothing until used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_LAZY = {
    "Index": "ferris_jax.retrieval.index",
    "Hit": "ferris_jax.retrieval.index",
    "IndexConflictError": "ferris_jax.retrieval.store",
    "IndexFormatError": "ferris_jax.retrieval.store",
    "IndexLockedError": "ferris_jax.retrieval.store",
    "MergeError": "ferris_jax.retrieval.merge",
    "Document": "ferris_jax.retrieval.sources",
    "read_documents": "ferris_jax.retrieval.sources",
    "Chunk": "ferris_jax.retrieval.chunking",
    "chunk_documents": "ferris_jax.retrieval.chunking",
    "search_blocks": "ferris_jax.retrieval.search",
    "rescore": "ferris_jax.retrieval.search",
}

if TYPE_CHECKING:
    from ferris_jax.retrieval.chunking import Chunk, chunk_documents
    from ferris_jax.retrieval.index import Hit, Index
    from ferris_jax.retrieval.merge import MergeError
    from ferris_jax.retrieval.search import rescore, search_blocks
    from ferris_jax.retrieval.sources import Document, read_documents
    from ferris_jax.retrieval.store import (
        IndexConflictError,
        IndexFormatError,
        IndexLockedError,
    )


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ferris_jax.retrieval' has no attribute {name!r}")


__all__ = [
    "Chunk",
    "Document",
    "Hit",
    "Index",
    "IndexConflictError",
    "IndexFormatError",
    "IndexLockedError",
    "MergeError",
    "chunk_documents",
    "read_documents",
    "rescore",
    "search_blocks",
]
