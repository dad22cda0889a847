"""Fusion of several backends' rankings into one: reciprocal-rank fusion (Cormack et al., 2009),
as Elasticsearch, OpenSearch, Weaviate and LangChain's EnsembleRetriever combine lexical and
dense results. A pure function of the rankings: scores of different backends (BM25, cosine)
need no common scale, only their ranks count."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The constant of reciprocal-rank fusion: 60, from the paper, is every engine's default.
RRF_K = 60


def reciprocal_rank_fusion(
    rankings: Sequence[np.ndarray],
    k: int,
    *,
    weights: Sequence[float] | None = None,
    rrf_k: int = RRF_K,
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best rows of several rankings fused: a row's score is the sum, over the rankings
    that hold it, of `weight / (rrf_k + rank)` (rank 1 for the best).

    Args:
        rankings: rows `[Q, n_i]` per backend, best first, -1 where a ranking ended.
        k: rows kept per query.
        weights: one per ranking (default: all 1).
        rrf_k: the fusion constant.

    Returns:
        (scores `[Q, k]` float32, rows `[Q, k]` int64), best first; ties keep the order in
        which rows first appear (the first ranking's first); -inf / -1 past the rows found.
    """
    weights = [1.0] * len(rankings) if weights is None else [float(w) for w in weights]
    if len(weights) != len(rankings):
        raise ValueError(f"weights has {len(weights)} entries for {len(rankings)} rankings")
    if any(not np.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be finite and non-negative, got {weights}")
    Q = len(rankings[0]) if rankings else 0
    scores = np.full((Q, k), -np.inf, np.float32)
    rows = np.full((Q, k), -1, np.int64)
    for q in range(Q):
        fused: dict[int, float] = {}
        for ranking, weight in zip(rankings, weights, strict=True):
            for rank, row in enumerate(ranking[q].tolist(), 1):
                if row >= 0:
                    fused[row] = fused.get(row, 0.0) + weight / (rrf_k + rank)
        best = sorted(fused.items(), key=lambda item: -item[1])[:k]  # stable: first seen first
        for j, (row, score) in enumerate(best):
            rows[q, j], scores[q, j] = row, score
    return scores, rows
