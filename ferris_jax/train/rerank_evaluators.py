"""Evaluators of rerankers (cross-encoders) as sentence-transformers writes them: reranking
(MAP, MRR@k, NDCG@k) and correlation with gold scores (Pearson, Spearman).

`evaluator(model) -> dict[str, float]` scores its (query, document) pairs with
`model.predict(pairs, batch_size=...)` (sentence-transformers' `CrossEncoder.predict`
signature; any object with that method will do) and returns metrics keyed as
sentence-transformers keys them ("{name}_ndcg@10", "{name}_spearman"), with the key to select
models by in `evaluator.primary_metric`. The arithmetic is pure functions of scores
(`reranking_metrics`, `similarity_metrics`), and `evaluator.compute_metrics(scores)` takes the
scores of the evaluator's own `pairs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ferris_jax.errors import require_int
from ferris_jax.train.evaluators import _prefixed, similarity_metrics


class Reranker(Protocol):
    def predict(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = ...) -> Any: ...


def _dcg_at_k(relevant: np.ndarray, scores: np.ndarray, k: int) -> float:
    """DCG@k of the ranking by `scores`, tied scores sharing the mean gain of their group
    (scikit-learn's `dcg_score`, which sentence-transformers calls)."""
    discount = 1.0 / np.log2(np.arange(len(scores)) + 2.0)
    discount[k:] = 0.0
    _, group, counts = np.unique(-scores, return_inverse=True, return_counts=True)
    gain = np.zeros(len(counts))
    np.add.at(gain, group.reshape(-1), relevant)
    discount_sums = np.diff(np.r_[0.0, np.cumsum(discount)[np.cumsum(counts) - 1]])
    return float(np.sum(gain / counts * discount_sums))


def _average_precision(relevant: np.ndarray, scores: np.ndarray) -> float:
    """Precision averaged over the recall steps of the ranking by `scores`, tied scores taken
    as one step (scikit-learn's `average_precision_score`)."""
    order = np.argsort(-scores, kind="stable")
    ends = np.r_[np.flatnonzero(np.diff(scores[order])), len(scores) - 1]  # last of each tie
    found = np.cumsum(relevant[order])[ends]
    precision = found / (ends + 1.0)
    return float(np.sum(np.diff(np.r_[0.0, found]) / found[-1] * precision))


def reranking_metrics(
    relevant: Any, scores: Any, *, at_k: int = 10, num_positives: int | None = None
) -> dict[str, float]:
    """MRR@k, NDCG@k and average precision of one query's documents ranked by their scores, as
    sentence-transformers' `CrossEncoderRerankingEvaluator.compute_metrics` computes them.

    Args:
        relevant: `[m]` 0/1, whether each document is relevant.
        scores: `[m]` the reranker's scores, larger is better.
        at_k: cutoff of MRR and NDCG.
        num_positives: how many relevant documents the query has, counting any missing from the
            list (they lower NDCG's ideal and scale AP by found / all); at least those found.

    Returns:
        `{"mrr": ..., "ndcg": ..., "ap": ...}`, all 0 when no document is relevant. MRR ranks
        tied scores as `np.argsort(scores)[::-1]` does; NDCG and AP average over ties.
    """
    relevant = np.asarray(relevant, dtype=np.int64)
    scores = np.asarray(scores)
    if relevant.ndim != 1 or scores.shape != relevant.shape:
        raise ValueError(
            f"relevant and scores must both be [m], got {relevant.shape} and {scores.shape}"
        )
    found = int(relevant.sum())
    if found == 0:
        return {"mrr": 0.0, "ndcg": 0.0, "ap": 0.0}
    num_positives = max(num_positives or 0, found)
    top = relevant[np.argsort(scores)[::-1][:at_k]]
    mrr = 1.0 / (np.argmax(top) + 1) if top.any() else 0.0
    dcg = _dcg_at_k(relevant, scores, at_k) if len(relevant) > 1 else float(relevant[0])
    ideal = np.sum(1.0 / np.log2(np.arange(2, min(num_positives, at_k) + 2)))
    ap = _average_precision(relevant, scores) * found / num_positives
    return {"mrr": float(mrr), "ndcg": float(dcg / ideal), "ap": float(ap)}


class CrossEncoderRerankingEvaluator:
    """Reranking quality of a reranker on queries with relevant and irrelevant documents,
    equal to sentence-transformers' `CrossEncoderRerankingEvaluator`.

    Each sample is `{"query": str, "positive": [str], "negative": [str]}` or
    `{"query": ..., "positive": ..., "documents": [str]}`, the documents a first-stage ranking
    (best first) that may hold the positives. With "documents" the metrics of that first-stage
    order come too ("base_map", ...), and `always_rerank_positives` puts every positive among the
    documents reranked (else only those the first stage found). Metrics are averaged over all
    samples, a sample without a relevant document to rerank counting 0.

    Args:
        samples: a list of sample dicts (or a dict of them).
        at_k: cutoff of MRR and NDCG.
        always_rerank_positives: rerank every positive, not only those in "documents".
        name: prefix of every metric key ("{name}_ndcg@10").
        prompt_name: passed to `model.predict` when set.
        batch_size: pairs per batch of `model.predict`.

    Metric keys: "map", "mrr@{at_k}", "ndcg@{at_k}" (and "base_..." for "documents" samples);
    `primary_metric` is "ndcg@{at_k}", prefixed.
    """

    def __init__(
        self,
        samples: Sequence[Mapping[str, Any]] | Mapping[Any, Mapping[str, Any]],
        *,
        at_k: int = 10,
        always_rerank_positives: bool = True,
        name: str = "",
        prompt_name: str | None = None,
        batch_size: int = 64,
    ):
        if isinstance(samples, Mapping):
            samples = list(samples.values())
        self.samples = list(samples)
        self.at_k = require_int("at_k", at_k)
        self.always_rerank_positives = always_rerank_positives
        self.name = name
        self.prompt_name = prompt_name
        self.batch_size = require_int("batch_size", batch_size)
        self.primary_metric = f"{name}_ndcg@{self.at_k}" if name else f"ndcg@{self.at_k}"

        self.pairs: list[tuple[str, str]] = []  # every sample's (query, document), in order
        # per sample: (relevance of its reranked documents, its number of positives) or None
        self.lists: list[tuple[np.ndarray, int] | None] = []
        base = []  # metrics of the first-stage order of "documents" samples
        for i, sample in enumerate(self.samples):
            for key in ("query", "positive"):
                if key not in sample:
                    raise ValueError(
                        f"sample {i} has no {key!r} key: each needs 'query' and 'positive'"
                    )
            if ("negative" in sample) == ("documents" in sample):
                raise ValueError(
                    f"sample {i} must have exactly one of 'negative' (irrelevant documents) and "
                    f"'documents' (a first-stage ranking)"
                )
            query, positive = sample["query"], _texts(sample["positive"])
            if "documents" in sample:
                documents = _texts(sample["documents"])
                in_order = np.array([int(d in positive) for d in documents])
                first_stage = np.arange(len(documents), 0, -1)
                base.append(
                    reranking_metrics(
                        in_order, first_stage, at_k=self.at_k, num_positives=len(positive)
                    )
                )
                if always_rerank_positives:
                    docs = positive + [d for d in documents if d not in positive]
                    relevant = np.array([1] * len(positive) + [0] * (len(docs) - len(positive)))
                else:
                    docs, relevant = documents, in_order
            else:
                docs = positive + _texts(sample["negative"])
                relevant = np.array([1] * len(positive) + [0] * (len(docs) - len(positive)))
            if relevant.sum() == 0:
                self.lists.append(None)
                continue
            self.lists.append((relevant, len(positive)))
            self.pairs.extend((query, d) for d in docs)
        self.base_metrics = _means(base, self.at_k) if base else {}

    def compute_metrics(self, scores: Any) -> dict[str, float]:
        """The metrics of given scores of `self.pairs` (`[len(pairs)]`), unprefixed."""
        scores = np.asarray(scores)
        if scores.shape != (len(self.pairs),):
            raise ValueError(
                f"scores must be [{len(self.pairs)}], one per pair, got {scores.shape} (a "
                f"reranker of several labels has no single score per pair)"
            )
        per_sample, offset = [], 0
        for entry in self.lists:
            if entry is None:
                per_sample.append({"mrr": 0.0, "ndcg": 0.0, "ap": 0.0})
                continue
            relevant, num_positives = entry
            part = scores[offset : offset + len(relevant)]
            offset += len(relevant)
            per_sample.append(
                reranking_metrics(relevant, part, at_k=self.at_k, num_positives=num_positives)
            )
        metrics = _means(per_sample, self.at_k)
        return metrics | {f"base_{k}": v for k, v in self.base_metrics.items()}

    def __call__(self, model: Reranker) -> dict[str, float]:
        """Score every (query, document) pair with `model.predict` and rank each query's."""
        scores = _predict(model, self.pairs, self.batch_size, self.prompt_name)
        return _prefixed(self.compute_metrics(scores), self.name)


def _texts(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _means(per_sample: list[dict[str, float]], at_k: int) -> dict[str, float]:
    return {
        "map": float(np.mean([m["ap"] for m in per_sample])),
        f"mrr@{at_k}": float(np.mean([m["mrr"] for m in per_sample])),
        f"ndcg@{at_k}": float(np.mean([m["ndcg"] for m in per_sample])),
    }


def _predict(
    model: Reranker, pairs: list[tuple[str, str]], batch_size: int, prompt_name: str | None
) -> np.ndarray:
    if not pairs:
        return np.zeros(0)
    kwargs = {"prompt_name": prompt_name} if prompt_name is not None else {}
    return np.asarray(model.predict(pairs, batch_size=batch_size, **kwargs))


class CrossEncoderCorrelationEvaluator:
    """Correlation of a reranker's scores of sentence pairs with gold scores (Pearson and
    Spearman), equal to sentence-transformers' `CrossEncoderCorrelationEvaluator`.

    Args:
        sentence_pairs: the (sentence1, sentence2) pairs.
        scores: the gold score of each pair.
        name: prefix of every metric key ("{name}_spearman").
        prompt_name: passed to `model.predict` when set.
        batch_size: pairs per batch of `model.predict`.

    Metric keys: "pearson", "spearman"; `primary_metric` is "spearman", prefixed.
    """

    def __init__(
        self,
        sentence_pairs: Sequence[Sequence[str]],
        scores: Sequence[float],
        *,
        name: str = "",
        prompt_name: str | None = None,
        batch_size: int = 32,
    ):
        self.pairs = [tuple(p) for p in sentence_pairs]
        if any(len(p) != 2 for p in self.pairs):
            raise ValueError("sentence_pairs must be pairs of two texts each")
        self.scores = np.asarray(scores, dtype=np.float64)
        if self.scores.shape != (len(self.pairs),):
            raise ValueError(
                f"scores must hold one gold score per pair ({len(self.pairs)}), got "
                f"{self.scores.shape}"
            )
        self.name = name
        self.prompt_name = prompt_name
        self.batch_size = require_int("batch_size", batch_size)
        self.primary_metric = f"{name}_spearman" if name else "spearman"

    def compute_metrics(self, predicted: Any) -> dict[str, float]:
        """Pearson and Spearman of given scores of `self.pairs` with the gold scores."""
        return similarity_metrics(predicted, self.scores)

    def __call__(self, model: Reranker) -> dict[str, float]:
        """Score every pair with `model.predict` and correlate with the gold scores."""
        predicted = _predict(model, self.pairs, self.batch_size, self.prompt_name)
        return _prefixed(self.compute_metrics(predicted), self.name)
