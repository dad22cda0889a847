"""Real MiniLM embeddings of the STS Benchmark sentences, computed once per test session and
shared by the search and quantization tests."""

from __future__ import annotations

import numpy as np

from helpers.data import sts_sentences

_CACHE: dict[str, np.ndarray] = {}


def sts_embeddings(minilm, split: str) -> np.ndarray:
    """float32 `[n, 384]` unit vectors of `sts_sentences(split)` from the `minilm` fixture."""
    if split not in _CACHE:
        _CACHE[split] = minilm.encode(sts_sentences(split), batch_size=64)
    return _CACHE[split]


def brute_force(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference top-k of a full sort: `(values, indices)` best first, equal values lower
    index first, -inf entries as index -1, rows shorter than k padded with (-inf, -1)."""
    n = scores.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(scores, order, axis=1)
    if n < k:
        order = np.pad(order, ((0, 0), (0, k - n)))
        values = np.pad(values, ((0, 0), (0, k - n)), constant_values=-np.inf)
    return values, np.where(values == -np.inf, -1, order)


def recall_at_k(got: np.ndarray, want: np.ndarray) -> float:
    """Mean fraction of each row of `want` found in the same row of `got`."""
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True)]))
