"""ferris-jax: JAX-native sentence embeddings.

>>> import ferris_jax
>>> enc = ferris_jax.load("sentence-transformers/all-MiniLM-L6-v2")
>>> vectors = enc.encode(["A sentence.", "Another one."])
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

from ferris_jax._version import __version__ as __version__
from ferris_jax.errors import CheckpointError, ModelNotFoundError

# jax-metal above jax 0.4.34 loads only with this set, before JAX starts its backends.
if sys.platform == "darwin":
    os.environ.setdefault("ENABLE_PJRT_COMPATIBILITY", "1")

# jax and flax load on first use, so `ferris-jax --help` and `import ferris_jax` stay fast.
_LAZY = {
    "load": "ferris_jax.api",
    "load_reranker": "ferris_jax.api",
    "Reranker": "ferris_jax.reranker",
    "Encoder": "ferris_jax.encoder",
    "cos_sim": "ferris_jax.similarity",
    "dot_score": "ferris_jax.similarity",
    "semantic_search": "ferris_jax.similarity",
    "quantize_embeddings": "ferris_jax.quantization",
    "Index": "ferris_jax.retrieval.index",
    "retrieval": "ferris_jax.retrieval",
    "train": "ferris_jax.train",
}

if TYPE_CHECKING:
    from ferris_jax.api import load, load_reranker
    from ferris_jax.encoder import Encoder
    from ferris_jax.quantization import quantize_embeddings
    from ferris_jax.reranker import Reranker
    from ferris_jax.retrieval.index import Index
    from ferris_jax.similarity import cos_sim, dot_score, semantic_search


def __getattr__(name: str):
    if name in ("retrieval", "train"):
        return importlib.import_module(_LAZY[name])
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ferris_jax' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "Encoder",
    "Index",
    "ModelNotFoundError",
    "Reranker",
    "cos_sim",
    "dot_score",
    "load",
    "load_reranker",
    "quantize_embeddings",
    "semantic_search",
]
