"""Evaluators as sentence-transformers writes them: information retrieval (accuracy, precision
and recall@k, MRR@k, NDCG@k, MAP@k) and embedding similarity (Pearson and Spearman).

`evaluator(encoder) -> dict[str, float]` embeds its texts and returns metrics keyed as
sentence-transformers keys them ("cosine_ndcg@10", "pearson_cosine"; with `name` as a prefix),
with the key to select models by in `evaluator.primary_metric`. The arithmetic is pure functions
of embeddings (`retrieval_hits`, `retrieval_metrics`, `pairwise_similarity`,
`similarity_metrics`), so the metrics of any embeddings can be computed without an encoder.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np

from ferris_jax.errors import require_int
from ferris_jax.similarity import semantic_search

if TYPE_CHECKING:
    from ferris_jax.encoder import Encoder

ScoreFunction = Callable[[Any, Any], Any]  # (a [n, d], b [m, d]) -> scores [n, m]
PAIRWISE_SIMILARITIES = ("cosine", "dot", "euclidean", "manhattan")


# ---------------------------------------------------------------- pure metric functions
def retrieval_hits(
    query_embeddings: Any,
    corpus_embeddings: Any,
    relevant: Sequence[Collection[int]],
    *,
    top_k: int,
    score_fn: ScoreFunction,
) -> np.ndarray:
    """Which of each query's `top_k` best corpus rows are relevant: bool `[n, min(top_k, m)]`,
    best first.

    Args:
        query_embeddings: `[n, d]`.
        corpus_embeddings: `[m, d]`.
        relevant: for each query, the corpus row numbers relevant to it.
        top_k: how many of the best rows to keep per query.
        score_fn: `(queries [n, d], corpus [m, d]) -> scores [n, m]`, larger is better.

    Equal scores rank the lower corpus row first (`similarity.semantic_search` does); order the
    corpus by id to break ties by id, as sentence-transformers does.
    """
    if len(relevant) != len(query_embeddings):
        raise ValueError(
            f"relevant has {len(relevant)} entries for {len(query_embeddings)} queries"
        )
    _, indices = semantic_search(
        jnp.asarray(query_embeddings),
        jnp.asarray(corpus_embeddings),
        top_k=top_k,
        score_fn=score_fn,
    )
    return np.array(
        [
            [i in rel for i in row]
            for row, rel in zip(np.asarray(indices).tolist(), relevant, strict=True)
        ],
        dtype=bool,
    ).reshape(len(relevant), -1)


def retrieval_metrics(
    hits: np.ndarray,
    num_relevant: np.ndarray,
    *,
    mrr_at_k: Sequence[int] = (10,),
    ndcg_at_k: Sequence[int] = (10,),
    accuracy_at_k: Sequence[int] = (1, 3, 5, 10),
    precision_recall_at_k: Sequence[int] = (1, 3, 5, 10),
    map_at_k: Sequence[int] = (100,),
) -> dict[str, float]:
    """Information-retrieval metrics averaged over queries, as sentence-transformers computes
    them (binary relevance).

    Args:
        hits: bool `[n, k]`, whether each query's ranked results are relevant, best first
            (`retrieval_hits`); k at least the largest cutoff unless the corpus is smaller.
        num_relevant: int `[n]`, how many documents are relevant to each query (>= 1).

    Returns:
        {"accuracy@1": ..., "precision@1": ..., "recall@1": ..., "ndcg@10": ..., "mrr@10": ...,
        "map@100": ...}: accuracy@k is the share of queries with a relevant document in their
        top k; precision@k divides a query's relevant results in its top k by k and recall@k by
        its number of relevant documents; MAP@k divides the sum of precisions at the relevant
        ranks by min(k, number relevant).
    """
    hits = np.asarray(hits, dtype=bool)
    num_relevant = np.asarray(num_relevant, dtype=np.int64)
    if hits.ndim != 2 or num_relevant.shape != hits.shape[:1]:
        raise ValueError(
            f"hits must be [n, k] and num_relevant [n], got {hits.shape} and {num_relevant.shape}"
        )
    if (num_relevant < 1).any():
        raise ValueError(f"query {int(np.argmax(num_relevant < 1))} has no relevant document")
    n, depth = hits.shape
    rank = np.arange(1, depth + 1)
    discount = 1.0 / np.log2(rank + 1)
    found = np.cumsum(hits, axis=1)  # [n, k] relevant results at or above each rank

    def correct_at(k: int) -> np.ndarray:
        return found[:, min(k, depth) - 1] if depth else np.zeros(n)

    out: dict[str, float] = {}
    for k in accuracy_at_k:
        out[f"accuracy@{k}"] = float(np.mean(correct_at(k) > 0))
    for k in precision_recall_at_k:
        out[f"precision@{k}"] = float(np.mean(correct_at(k) / k))
        out[f"recall@{k}"] = float(np.mean(correct_at(k) / num_relevant))
    for k in ndcg_at_k:
        dcg = (hits[:, :k] * discount[:k]).sum(axis=1)
        ideal = np.cumsum(1.0 / np.log2(np.arange(1, k + 1) + 1))[np.minimum(num_relevant, k) - 1]
        out[f"ndcg@{k}"] = float(np.mean(dcg / ideal))
    for k in mrr_at_k:
        top = hits[:, :k]
        first = np.argmax(top, axis=1)
        out[f"mrr@{k}"] = float(np.mean(np.where(top.any(axis=1), 1.0 / (first + 1), 0.0)))
    for k in map_at_k:
        precision = np.where(hits[:, :k], found[:, :k] / rank[:k], 0.0).sum(axis=1)
        out[f"map@{k}"] = float(np.mean(precision / np.minimum(k, num_relevant)))
    return out


def pairwise_similarity(a: Any, b: Any, similarity_fn_name: str = "cosine") -> np.ndarray:
    """Similarity of row i of `a [n, d]` with row i of `b [n, d]` -> float32 `[n]`, as
    sentence-transformers' `pairwise_*` functions compute it ("cosine", "dot", "euclidean"
    and "manhattan", the last two negated distances)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must both be [n, d], got {a.shape} and {b.shape}")
    if similarity_fn_name == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), np.float32(1e-12))
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), np.float32(1e-12))
        return (a * b).sum(axis=1)
    if similarity_fn_name == "dot":
        return (a * b).sum(axis=1)
    if similarity_fn_name == "euclidean":
        return -np.sqrt(((a - b) ** 2).sum(axis=1))
    if similarity_fn_name == "manhattan":
        return -np.abs(a - b).sum(axis=1)
    raise ValueError(
        f"similarity_fn_name must be one of {PAIRWISE_SIMILARITIES}, got {similarity_fn_name!r}"
    )


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (scipy's rankdata)."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    r = np.dot(x / np.linalg.norm(x), y / np.linalg.norm(y))
    return float(np.clip(r, -1.0, 1.0))


def similarity_metrics(predicted: Any, gold: Any) -> dict[str, float]:
    """Pearson and Spearman correlation of predicted similarities with gold scores (both `[n]`),
    in float64: `{"pearson": ..., "spearman": ...}` (Spearman: Pearson of average ranks)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    if predicted.shape != gold.shape or predicted.ndim != 1 or len(gold) < 2:
        raise ValueError(
            f"predicted and gold must both be [n] with n >= 2, got {predicted.shape} and "
            f"{gold.shape}"
        )
    return {
        "pearson": _pearson(predicted, gold),
        "spearman": _pearson(_average_ranks(predicted), _average_ranks(gold)),
    }


# ---------------------------------------------------------------- evaluators
def _prefixed(metrics: dict[str, float], name: str) -> dict[str, float]:
    return {f"{name}_{k}" if name else k: v for k, v in metrics.items()}


def _ks(option: str, ks: Sequence[int]) -> tuple[int, ...]:
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence) or not ks:
        raise ValueError(f"{option} must be a non-empty sequence of integers, got {ks!r}")
    return tuple(require_int(option, k) for k in ks)


class InformationRetrievalEvaluator:
    """Retrieval quality of an encoder on queries, a corpus and the documents relevant to each
    query, equal to sentence-transformers' `InformationRetrievalEvaluator`.

    Queries are embedded with `encoder.encode_query` and the corpus with
    `encoder.encode_document`. Unless `query_prompt(_name)` / `corpus_prompt(_name)` say
    otherwise, queries get the model's "query" prompt and the corpus its "document" prompt, and
    nothing else (not the default prompt, nor a "passage" prompt): what sentence-transformers 6
    does, since it gives every model "query" and "document" entries ("" unless saved).
    Queries without relevant documents are left out. Results tied in score rank by ascending
    corpus id.

    Args:
        queries: query id -> query text.
        corpus: document id -> document text.
        relevant_docs: query id -> the ids of the documents relevant to it.
        mrr_at_k, ndcg_at_k, accuracy_at_k, precision_recall_at_k, map_at_k: cutoffs.
        batch_size: texts per batch when embedding.
        name: prefix of every metric key ("{name}_cosine_ndcg@10").
        score_functions: score-function name -> `(a [n, d], b [m, d]) -> [n, m]`; default: the
            encoder's own similarity under its name (`similarity_fn_name`), e.g. "cosine".
        main_score_function: the score function `primary_metric` names; default: the one with
            the best NDCG at the largest cutoff on the first call.
        query_prompt, query_prompt_name, corpus_prompt, corpus_prompt_name: prompts as in
            `Encoder.encode`.
        truncate_dim: keep the first k dimensions of each embedding (Matryoshka).
    """

    def __init__(
        self,
        queries: Mapping[Hashable, str],
        corpus: Mapping[Hashable, str],
        relevant_docs: Mapping[Hashable, Collection[Hashable]],
        *,
        mrr_at_k: Sequence[int] = (10,),
        ndcg_at_k: Sequence[int] = (10,),
        accuracy_at_k: Sequence[int] = (1, 3, 5, 10),
        precision_recall_at_k: Sequence[int] = (1, 3, 5, 10),
        map_at_k: Sequence[int] = (100,),
        batch_size: int = 32,
        name: str = "",
        score_functions: Mapping[str, ScoreFunction] | None = None,
        main_score_function: str | None = None,
        query_prompt: str | None = None,
        query_prompt_name: str | None = None,
        corpus_prompt: str | None = None,
        corpus_prompt_name: str | None = None,
        truncate_dim: int | None = None,
    ):
        for option, value in (("queries", queries), ("corpus", corpus)):
            if not isinstance(value, Mapping):
                raise TypeError(f"{option} must map ids to texts, got {type(value).__name__}")
        if not isinstance(relevant_docs, Mapping):
            raise TypeError(
                f"relevant_docs must map query ids to sets of corpus ids, got "
                f"{type(relevant_docs).__name__}"
            )
        self.queries_ids = [q for q in queries if relevant_docs.get(q)]
        if not self.queries_ids:
            raise ValueError("no query in queries has a relevant document in relevant_docs")
        if not corpus:
            raise ValueError("corpus is empty")
        self.queries = [queries[q] for q in self.queries_ids]
        # Ranked by corpus position, ties go to the lower row: sorting by id makes that the
        # lower id, sentence-transformers' tie-break.
        self.corpus_ids = sorted(corpus)
        self.corpus = [corpus[c] for c in self.corpus_ids]
        row = {c: i for i, c in enumerate(self.corpus_ids)}
        self.relevant_rows = [
            frozenset(row[c] for c in relevant_docs[q] if c in row) for q in self.queries_ids
        ]
        self.num_relevant = np.array([len(relevant_docs[q]) for q in self.queries_ids])
        self.cutoffs = {
            "mrr_at_k": _ks("mrr_at_k", mrr_at_k),
            "ndcg_at_k": _ks("ndcg_at_k", ndcg_at_k),
            "accuracy_at_k": _ks("accuracy_at_k", accuracy_at_k),
            "precision_recall_at_k": _ks("precision_recall_at_k", precision_recall_at_k),
            "map_at_k": _ks("map_at_k", map_at_k),
        }
        self.batch_size = require_int("batch_size", batch_size)
        self.name = name
        self.score_functions = dict(score_functions) if score_functions is not None else None
        if (
            main_score_function is not None
            and score_functions is not None
            and main_score_function not in score_functions
        ):
            raise ValueError(
                f"main_score_function {main_score_function!r} is not one of score_functions "
                f"{sorted(score_functions)}"
            )
        self.main_score_function = main_score_function
        self.query_prompt, self.query_prompt_name = query_prompt, query_prompt_name
        self.corpus_prompt, self.corpus_prompt_name = corpus_prompt, corpus_prompt_name
        self.truncate_dim = truncate_dim
        self.primary_metric: str | None = None

    def embed(self, encoder: Encoder) -> tuple[np.ndarray, np.ndarray]:
        """(query embeddings `[n, d]`, corpus embeddings `[m, d]`, rows in sorted id order)."""
        common = dict(batch_size=self.batch_size, truncate_dim=self.truncate_dim)
        queries = encoder.encode_query(
            self.queries,
            **_prompt_kwargs(self.query_prompt, self.query_prompt_name, encoder, "query"),
            **common,
        )
        corpus = encoder.encode_document(
            self.corpus,
            **_prompt_kwargs(self.corpus_prompt, self.corpus_prompt_name, encoder, "document"),
            **common,
        )
        return queries, corpus

    def compute_metrics(
        self,
        query_embeddings: Any,
        corpus_embeddings: Any,
        score_functions: Mapping[str, ScoreFunction],
    ) -> dict[str, float]:
        """The metrics of given embeddings (rows: `queries_ids`, `corpus_ids`), unprefixed."""
        top_k = max(max(ks) for ks in self.cutoffs.values())
        out = {}
        for fn_name in sorted(score_functions):
            hits = retrieval_hits(
                query_embeddings,
                corpus_embeddings,
                self.relevant_rows,
                top_k=top_k,
                score_fn=score_functions[fn_name],
            )
            metrics = retrieval_metrics(hits, self.num_relevant, **self.cutoffs)
            out.update({f"{fn_name}_{k}": v for k, v in metrics.items()})
        return out

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        """Embed queries and corpus with `encoder` and score the rankings."""
        score_functions = self.score_functions or {
            encoder.settings.similarity_fn_name: encoder.similarity
        }
        metrics = self.compute_metrics(*self.embed(encoder), score_functions)
        if self.primary_metric is None:
            k = max(self.cutoffs["ndcg_at_k"])
            best = self.main_score_function or max(
                sorted(score_functions), key=lambda f: metrics[f"{f}_ndcg@{k}"]
            )
            self.primary_metric = (
                f"{self.name}_{best}_ndcg@{k}" if self.name else f"{best}_ndcg@{k}"
            )
        return _prefixed(metrics, self.name)


def _prompt_kwargs(
    prompt: str | None, prompt_name: str | None, encoder: Encoder, default_name: str
) -> dict[str, str]:
    """The prompt options given, else the model's `default_name` prompt or none at all."""
    if prompt is None and prompt_name is None:
        return {"prompt": encoder.prompts.get(default_name, "")}
    kwargs = {}
    if prompt is not None:
        kwargs["prompt"] = prompt
    if prompt_name is not None:
        kwargs["prompt_name"] = prompt_name
    return kwargs


class EmbeddingSimilarityEvaluator:
    """Correlation of an encoder's similarity of sentence pairs with gold scores (Pearson and
    Spearman), equal to sentence-transformers' `EmbeddingSimilarityEvaluator`.

    Sentences are embedded with `encoder.encode` (the model's default prompt, if any). Metric
    keys are "pearson_{fn}" and "spearman_{fn}" for each similarity function, plus
    "pearson_max"/"spearman_max" when there are several; `primary_metric` is the Spearman of
    `main_similarity`, else "spearman_max" or the one function's Spearman.

    Args:
        sentences1, sentences2: the pairs' sentences.
        scores: gold similarity of each pair.
        batch_size: texts per batch when embedding.
        main_similarity: the function `primary_metric` names.
        similarity_fn_names: any of "cosine", "dot", "euclidean", "manhattan"; default:
            `main_similarity`, else the encoder's `similarity_fn_name`.
        name: prefix of every metric key ("{name}_spearman_cosine").
        truncate_dim: keep the first k dimensions of each embedding (Matryoshka).
    """

    def __init__(
        self,
        sentences1: Sequence[str],
        sentences2: Sequence[str],
        scores: Sequence[float],
        *,
        batch_size: int = 16,
        main_similarity: str | None = None,
        similarity_fn_names: Sequence[str] | None = None,
        name: str = "",
        truncate_dim: int | None = None,
    ):
        self.sentences1, self.sentences2 = list(sentences1), list(sentences2)
        if not (len(self.sentences1) == len(self.sentences2) == len(scores)):
            raise ValueError(
                f"sentences1, sentences2 and scores must be as long as each other, got "
                f"{len(self.sentences1)}, {len(self.sentences2)} and {len(scores)}"
            )
        for i, s in enumerate(scores):
            if isinstance(s, bool) or not isinstance(s, numbers.Real):
                raise TypeError(f"scores[{i}] is {type(s).__name__} ({s!r:.40}), expected a number")
        self.scores = np.asarray(scores, dtype=np.float64)
        for option, fn_name in [("main_similarity", main_similarity)] + [
            ("similarity_fn_names", f) for f in similarity_fn_names or ()
        ]:
            if fn_name is not None and fn_name not in PAIRWISE_SIMILARITIES:
                raise ValueError(
                    f"{option} must name one of {PAIRWISE_SIMILARITIES}, got {fn_name!r}"
                )
        self.main_similarity = main_similarity
        self.similarity_fn_names = list(similarity_fn_names or ())
        if not self.similarity_fn_names and main_similarity is not None:
            self.similarity_fn_names = [main_similarity]
        self.batch_size = require_int("batch_size", batch_size)
        self.name = name
        self.truncate_dim = truncate_dim
        self.primary_metric: str | None = None

    def compute_metrics(
        self, embeddings1: Any, embeddings2: Any, similarity_fn_names: Sequence[str]
    ) -> dict[str, float]:
        """The metrics of given embeddings of `sentences1` and `sentences2`, unprefixed."""
        out = {}
        for fn_name in similarity_fn_names:
            m = similarity_metrics(
                pairwise_similarity(embeddings1, embeddings2, fn_name), self.scores
            )
            out[f"pearson_{fn_name}"] = m["pearson"]
            out[f"spearman_{fn_name}"] = m["spearman"]
        if len(similarity_fn_names) > 1:
            out["pearson_max"] = max(out[f"pearson_{f}"] for f in similarity_fn_names)
            out["spearman_max"] = max(out[f"spearman_{f}"] for f in similarity_fn_names)
        return out

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        """Embed both sides with `encoder` and correlate their similarity with the scores."""
        fn_names = self.similarity_fn_names or [encoder.settings.similarity_fn_name]
        kwargs = dict(batch_size=self.batch_size, truncate_dim=self.truncate_dim)
        metrics = self.compute_metrics(
            encoder.encode(self.sentences1, **kwargs),
            encoder.encode(self.sentences2, **kwargs),
            fn_names,
        )
        if self.main_similarity is not None:
            primary = f"spearman_{self.main_similarity}"
        else:
            primary = "spearman_max" if len(fn_names) > 1 else f"spearman_{fn_names[0]}"
        self.primary_metric = f"{self.name}_{primary}" if self.name else primary
        return _prefixed(metrics, self.name)
