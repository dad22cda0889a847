"""Lexical (BM25) and hybrid search in the `Index`: BM25 equal to an independent implementation
(rank_bm25) on real text, filters and removals applied, kept in step through compact, failed
adds, save and load; reciprocal-rank fusion as defined; reranking by a cross-encoder."""

from __future__ import annotations

import collections
import json
import re

import numpy as np
import pytest
from helpers.data import sts_sentences

import ferris_jax
from ferris_jax.retrieval.fusion import reciprocal_rank_fusion
from ferris_jax.retrieval.index import Index

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# FTS5 computes BM25 in double precision (results come back as float32); bm25s sums float32
# scores of each term.
RTOL = {"fts5": 1e-6, "bm25s": 1e-5}
BACKENDS = ("fts5", "bm25s")


def _words(text: str) -> list[str]:
    """FTS5's unicode61 tokens of an ASCII text: letters and digits, lowercased."""
    return re.findall(r"[a-z0-9]+", text.lower())


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """STS-B train sentences (ASCII, so that the reference tokenizes exactly as FTS5 does)."""
    return [s for s in sts_sentences("train")[:3000] if s.isascii()]


@pytest.fixture(scope="module")
def queries() -> list[str]:
    return [s for s in sts_sentences("test")[:200] if s.isascii()]


def _text_index(corpus: list[str], **options) -> Index:
    """An index of the texts with random vectors (lexical search needs no model)."""
    index = Index(dimension=8, model="random", **options)
    vectors = np.random.default_rng(0).normal(size=(len(corpus), 8)).astype(np.float32)
    ids = [f"s{i}" for i in range(len(corpus))]
    metadata = [{"n": i % 3} for i in range(len(corpus))]
    index.add_embeddings(vectors, ids=ids, texts=corpus, metadata=metadata, model="random")
    return index


def assert_top_k(found, scores: np.ndarray, k: int, rtol: float) -> None:
    """`found` (hits with ids "s<i>") are the `k` best positive `scores`, best first, each with
    its score (ties at the cut: either row)."""
    got = [int(h.id[1:]) for h in found]
    assert len(got) == min(k, int((scores > 0).sum()))
    np.testing.assert_allclose([h.score for h in found], scores[got], rtol=rtol)
    assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)
    rest = np.delete(scores, got)
    if got and len(rest):
        assert scores[got].min() >= rest.max() * (1 - rtol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bm25_equals_rank_bm25_on_real_text(corpus, queries, backend):
    rank_bm25 = pytest.importorskip("rank_bm25")
    tokens = [_words(t) for t in corpus]
    # FTS5's defaults; its idf and rank_bm25's agree for words in at most half of the texts.
    reference = rank_bm25.BM25Okapi(tokens, k1=1.2, b=0.75)
    # Words in most texts ("a", "is") are left out of the queries: the two idf floors differ
    # there (rank_bm25: a fraction of the mean idf; FTS5: 1e-6).
    texts_with = collections.Counter(w for t in tokens for w in set(t))
    common = {w for w, n in texts_with.items() if 2 * n > len(tokens)}
    asked = [" ".join(w for w in dict.fromkeys(_words(q)) if w not in common) for q in queries]
    hits = _text_index(corpus, lexical_backend=backend).search(asked, top_k=10, mode="lexical")
    for query, found in zip(asked, hits, strict=True):
        scores = reference.get_scores(query.split())
        if backend == "fts5":  # exactly: ties by lower row
            order = np.lexsort((np.arange(len(scores)), -scores))
            want = [i for i in order[:10] if scores[i] > 0]
            assert [h.id for h in found] == [f"s{i}" for i in want], query
        assert_top_k(found, scores, 10, RTOL[backend])
    assert common and sum(map(len, hits)) > 5 * len(queries)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lexical_search_applies_filters_and_removals(corpus, queries, backend):
    index = _text_index(corpus, lexical_backend=backend)
    query = queries[0]
    every = index.search(query, top_k=50, mode="lexical")
    filtered = index.search(query, top_k=50, mode="lexical", filter={"n": 1})
    assert filtered and all(h.metadata["n"] == 1 for h in filtered)
    passing = [h for h in every if h.metadata["n"] == 1]  # the filter applies before the top-k
    assert len(filtered) == 50 and filtered[: len(passing)] == passing
    gone = every[0].id
    assert index.remove(gone) == 1
    assert gone not in [h.id for h in index.search(query, top_k=50, mode="lexical")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_lexical_results_survive_compact_save_load_and_a_failed_add(
    corpus, queries, tmp_path, backend
):
    index = _text_index(corpus, lexical=True, lexical_backend=backend)
    index.remove([f"s{i}" for i in range(0, len(corpus), 2)])
    before = index.search(queries[:20], top_k=10, mode="lexical")
    index.compact()  # rows renumbered: the full-text index follows
    assert index.search(queries[:20], top_k=10, mode="lexical") == before
    with pytest.raises(ValueError, match="already in the index"):
        index.add_embeddings(np.ones((2, 8), np.float32), ids=["new", "s1"],
                             texts=["zebra zebra", "x"], model="random")  # fmt: skip
    assert index.search("zebra", mode="lexical") == []  # the failed add left no text behind
    index.save(tmp_path / "index")
    loaded = Index.load(tmp_path / "index")
    assert loaded.lexical_backend == backend and loaded.info()["lexical"] == (backend == "fts5")
    assert loaded.search(queries[:20], top_k=10, mode="lexical") == before
    loaded.add_embeddings(np.ones((1, 8), np.float32), ids=["z"], texts=["zebra crossing"],
                          model="random")  # fmt: skip
    assert [h.id for h in loaded.search("Zebra!", mode="lexical")] == ["z"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_query_syntax_is_never_read_as_fts5_syntax(corpus, backend):
    index = _text_index(corpus, lexical_backend=backend)
    for query in ('"unbalanced', "NEAR(a b) OR", "a* -b AND ^c", "what?!", "(", "::"):
        index.search(query, top_k=5, mode="lexical")  # no sqlite3.OperationalError
    assert index.search("?!", mode="lexical") == []


def test_reciprocal_rank_fusion_follows_its_definition():
    dense = np.array([[4, 2, 7, -1], [1, 2, 3, 4]])
    lexical = np.array([[2, 9, 4, 5], [-1, -1, -1, -1]])
    scores, rows = reciprocal_rank_fusion([dense, lexical], 3, weights=[1.0, 0.5], rrf_k=60)
    want = {4: 1 / 61 + 0.5 / 63, 2: 1 / 62 + 0.5 / 61, 7: 1 / 63, 9: 0.5 / 62, 5: 0.5 / 64}
    best = sorted(want, key=lambda r: -want[r])[:3]
    assert rows[0].tolist() == best
    np.testing.assert_allclose(scores[0], [want[r] for r in best], rtol=1e-6)
    assert rows[1].tolist() == [1, 2, 3]  # one ranking empty: the other's order
    with pytest.raises(ValueError, match="weights"):
        reciprocal_rank_fusion([dense, lexical], 3, weights=[1.0])


@pytest.fixture(scope="module")
def sts_index(minilm):
    corpus = sts_sentences("train")[:2000]
    index = Index(minilm)
    index.add(corpus, ids=[f"s{i}" for i in range(len(corpus))])
    return index


def test_hybrid_search_fuses_the_dense_and_lexical_rankings(sts_index):
    queries = sts_sentences("test")[:20]
    k, pool = 5, 20
    hybrid = sts_index.search(queries, top_k=k, mode="hybrid", candidates=pool)
    dense = sts_index.search(queries, top_k=pool)
    lexical = sts_index.search(queries, top_k=pool, mode="lexical")
    for got, d, lx in zip(hybrid, dense, lexical, strict=True):
        fused: dict[str, float] = {}
        for ranking in (d, lx):
            for rank, hit in enumerate(ranking, 1):
                fused[hit.id] = fused.get(hit.id, 0.0) + 1 / (60 + rank)
        want = sorted(fused, key=lambda i: -fused[i])[:k]
        assert [h.id for h in got] == want
        np.testing.assert_allclose([h.score for h in got], [fused[i] for i in want], rtol=1e-6)
    # weights (1, 0): the dense order; (0, 1): the lexical order
    only_dense = sts_index.search(queries[0], top_k=k, mode="hybrid", weights=(1, 0))
    assert [h.id for h in only_dense] == [h.id for h in dense[0][:k]]


def test_search_refuses_what_lexical_search_cannot_do(sts_index):
    with pytest.raises(ValueError, match="mode must be one of"):
        sts_index.search("a dog", mode="sparse")
    with pytest.raises(ValueError, match="needs query texts"):
        sts_index.search(np.ones(384, np.float32), mode="hybrid")
    vectors_only = Index(dimension=4, model="m", store_text=False)
    vectors_only.add_embeddings(np.ones((1, 4), np.float32), ids=["a"], model="m")
    with pytest.raises(ValueError, match="store_text=False"):
        vectors_only.search("a", mode="lexical")


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory):
    from helpers.checkpoints import make_bert_cross_encoder_checkpoint

    return make_bert_cross_encoder_checkpoint(tmp_path_factory.mktemp("cross-encoder") / "ce")


def test_a_cross_encoder_reranks_the_candidates(sts_index, cross_encoder):
    st = pytest.importorskip("sentence_transformers")
    reference = st.CrossEncoder(str(cross_encoder), device="cpu")
    ours = ferris_jax.load_reranker(cross_encoder)
    queries = sts_sentences("test")[3:5]
    first = sts_index.search(queries, top_k=20, mode="hybrid", candidates=20)
    for reranker in (reference, ours):  # anything with CrossEncoder.predict, and ours
        reranked = sts_index.search(queries, top_k=5, mode="hybrid", rerank=reranker, candidates=20)
        for query, found, got in zip(queries, first, reranked, strict=True):
            # The 5 best candidates by the reference's scores, best first (ties in any order).
            given = reference.predict([(query, h.text) for h in found])
            scores = dict(zip([h.id for h in found], given.tolist(), strict=True))
            kept = [h.score for h in got]
            np.testing.assert_allclose(kept, [scores[h.id] for h in got], rtol=1e-5, atol=1e-6)
            assert kept == sorted(kept, reverse=True) and len(got) == 5
            left_out = [s for i, s in scores.items() if i not in {h.id for h in got}]
            assert min(kept) >= max(left_out) - 1e-6


def test_the_command_line_reranks_a_hybrid_search(sts_index, cross_encoder, tmp_path, capsys):
    from ferris_jax.cli import main

    sts_index.save(tmp_path / "index")
    query = sts_sentences("test")[7]
    expected = Index.load(tmp_path / "index").search(
        query, top_k=3, mode="hybrid", rerank=ferris_jax.load_reranker(cross_encoder), candidates=10
    )
    argv = ["search", str(tmp_path / "index"), query, "-k", "3", "--json", "--mode", "hybrid",
            "--rerank", str(cross_encoder), "--candidates", "10"]  # fmt: skip
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in lines] == [h.id for h in expected]
    np.testing.assert_allclose([r["score"] for r in lines], [h.score for h in expected], rtol=1e-6)
