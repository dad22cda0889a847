"""Retrieval tasks built from real text, in the shape sentence-transformers' evaluators take."""

from __future__ import annotations

import dataclasses

from helpers.data import sts_benchmark


@dataclasses.dataclass(frozen=True)
class RetrievalTask:
    queries: dict[str, str]  # query id -> text
    corpus: dict[str, str]  # document id -> text
    relevant_docs: dict[str, set[str]]  # query id -> ids of relevant documents


def sts_retrieval_task(
    split: str = "test", min_score: float = 4.0, limit: int | None = None
) -> RetrievalTask:
    """Each distinct sentence1 of an STS-B split is a query, each distinct sentence2 a document;
    a document is relevant to a query when their pair is rated >= `min_score`. Queries without
    a relevant document are kept (the evaluators leave them out). `limit`: from the split's
    first `limit` pairs only. Ids are "q<n>" and "d<n>", so
    sorting them as strings differs from their numeric order."""
    queries, corpus, relevant = {}, {}, {}
    query_id, doc_id = {}, {}
    for pair in sts_benchmark(split)[:limit]:
        q = query_id.setdefault(pair.sentence1, f"q{len(query_id)}")
        d = doc_id.setdefault(pair.sentence2, f"d{len(doc_id)}")
        queries[q], corpus[d] = pair.sentence1, pair.sentence2
        if pair.score >= min_score:
            relevant.setdefault(q, set()).add(d)
    return RetrievalTask(queries, corpus, relevant)
