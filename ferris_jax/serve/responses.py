"""Response bodies, rendered to JSON bytes: pure functions of the vectors and counts.

Embeddings go through orjson: with the stdlib's json, rendering a response took as much of the
event loop's time per text as the whole pipeline does in `encode` (32 vectors of 384 floats:
19 ms as floats, 0.56 ms as base64; orjson: 1.0 and 0.23 ms).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson


def finish(
    vectors: np.ndarray, *, dimensions: int | None, normalize: bool, model_normalizes: bool
) -> np.ndarray:
    """Truncated to `dimensions` (Matryoshka) and L2-normalized as `Encoder.encode` does with
    `truncate_dim` and `normalize_embeddings`: re-normalized after truncation when the model
    normalizes, so a served vector equals `encode`'s."""
    if dimensions is not None:
        vectors = vectors[:, :dimensions]
    if normalize or (dimensions is not None and model_normalizes):
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return vectors


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _finite(vectors: np.ndarray) -> np.ndarray:
    # orjson writes NaN and infinities as null; a broken vector must fail loudly instead.
    if not np.isfinite(vectors).all():
        raise ValueError("the model returned a NaN or infinite value")
    return vectors


def openai_embeddings(vectors: np.ndarray, tokens: int, model: str, encoding_format: str) -> bytes:
    """OpenAI's `{"object": "list", "data": [...], "model", "usage"}`; base64 is the
    little-endian float32 bytes of each vector, as OpenAI's clients decode it."""
    vectors = _finite(vectors)
    if encoding_format == "base64":
        rows = np.ascontiguousarray(vectors, dtype="<f4")
        items: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in rows]
    else:
        items = vectors.tolist()
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(items)]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})


def tei_embeddings(vectors: np.ndarray) -> bytes:
    """text-embeddings-inference's `[[float, ...], ...]`, one row per input."""
    return orjson.dumps(_finite(vectors).tolist())


def search_results(hits: Sequence[Sequence[Any]], tokens: int, model: str) -> bytes:
    """One result list per query: each hit's id, score, text, metadata and document id (the
    stdlib's json: few hits, and metadata is whatever the index was given)."""
    data = [
        {
            "object": "search_result",
            "index": i,
            "hits": [
                {
                    "id": h.id,
                    "score": h.score,
                    "text": h.text,
                    "metadata": h.metadata,
                    "document_id": h.document_id,
                }
                for h in query_hits
            ],
        }
        for i, query_hits in enumerate(hits)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _dumps({"object": "list", "data": data, "model": model, "usage": usage})
