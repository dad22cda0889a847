"""Evaluators vs sentence-transformers' own on real text (STS Benchmark), and the metric
functions on hand-made rankings with known answers.

Tolerance: 1e-6 absolute on every metric. The embeddings of the two libraries differ by up to
1e-5, so a ranking could differ where two documents score within that of each other; on these
tasks none does where it changes a metric (a change would show as a 1/n step, far above 1e-6).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.data import sts_benchmark
from helpers.reference import Recorded, one_torch_thread, sentence_transformer
from helpers.retrieval_tasks import sts_retrieval_task

from ferris_jax.similarity import cos_sim, dot_score
from ferris_jax.train.evaluators import (
    EmbeddingSimilarityEvaluator,
    InformationRetrievalEvaluator,
    pairwise_similarity,
    retrieval_hits,
    retrieval_metrics,
    similarity_metrics,
)

ATOL = 1e-6
ALL_K = dict(
    mrr_at_k=[1, 5, 10],
    ndcg_at_k=[1, 3, 10],
    accuracy_at_k=[1, 3, 5, 10],
    precision_recall_at_k=[1, 3, 5, 10],
    map_at_k=[5, 100],
)


def assert_metrics_equal(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    bad = {k: (got[k], want[k]) for k in want if abs(got[k] - want[k]) > ATOL}
    assert not bad, bad


@pytest.fixture(scope="module")
def st_minilm(minilm_path):
    with one_torch_thread():
        yield sentence_transformer(minilm_path)


# ---------------------------------------------------------------- metric functions
def test_perfect_ranking_scores_one():
    hits = np.array([[True, True, False, False], [True, False, False, False]])
    m = retrieval_metrics(
        hits,
        np.array([2, 1]),
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1],
        precision_recall_at_k=[1, 4],
        map_at_k=[100],
    )
    assert m["ndcg@10"] == 1.0 and m["mrr@10"] == 1.0 and m["map@100"] == 1.0
    assert m["accuracy@1"] == 1.0 and m["recall@4"] == 1.0 and m["precision@1"] == 1.0
    assert m["precision@4"] == (2 / 4 + 1 / 4) / 2


def test_known_values_of_a_ranking():
    # One relevant document, found at rank 3 of 4; a second relevant document never found.
    hits = np.array([[False, False, True, False]])
    m = retrieval_metrics(
        hits,
        np.array([2]),
        mrr_at_k=[2, 10],
        ndcg_at_k=[10],
        accuracy_at_k=[2, 3],
        precision_recall_at_k=[3],
        map_at_k=[1, 10],
    )
    assert m["mrr@2"] == 0.0 and m["mrr@10"] == pytest.approx(1 / 3, abs=1e-15)
    assert m["accuracy@2"] == 0.0 and m["accuracy@3"] == 1.0
    assert m["precision@3"] == pytest.approx(1 / 3) and m["recall@3"] == 0.5
    assert m["ndcg@10"] == pytest.approx((1 / np.log2(4)) / (1 + 1 / np.log2(3)), abs=1e-15)
    assert m["map@10"] == pytest.approx((1 / 3) / 2) and m["map@1"] == 0.0


def test_metrics_equal_sentence_transformers_on_random_rankings():
    """The arithmetic alone, against sentence-transformers' `compute_metrics` on the same
    rankings: 200 queries, 1-6 relevant documents each, some never retrieved."""
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator as StIR,
    )

    rng = np.random.default_rng(0)
    n, depth, m = 200, 100, 400
    relevant = [set(rng.choice(m + 20, rng.integers(1, 7), replace=False)) for _ in range(n)]
    ranked = [rng.permutation(m)[:depth] for _ in range(n)]
    queries = {str(q): "q" for q in range(n)}
    st = StIR(
        queries,
        {str(c): "d" for c in range(m)},
        {str(q): {str(c) for c in relevant[q]} for q in range(n)},
        **ALL_K,
    )
    results = [[{"corpus_id": str(c), "score": -r} for r, c in enumerate(row)] for row in ranked]
    want = st.compute_metrics(results)
    want = {
        f"{name.replace('@k', '@' + str(k))}": v for name, d in want.items() for k, v in d.items()
    }
    hits = np.array([[c in rel for c in row] for row, rel in zip(ranked, relevant, strict=True)])
    got = retrieval_metrics(hits, np.array([len(r) for r in relevant]), **ALL_K)
    assert_metrics_equal(got, want)


def test_ties_rank_the_lower_corpus_row_first():
    q = np.array([[1.0, 0.0]])
    corpus = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [1.0, 0.0]])  # rows 1-3 tie (cosine)
    hits = retrieval_hits(q, corpus, [{3}], top_k=3, score_fn=cos_sim)
    np.testing.assert_array_equal(hits, [[False, False, True]])
    hits = retrieval_hits(q, corpus, [{3}], top_k=2, score_fn=cos_sim)
    np.testing.assert_array_equal(hits, [[False, False]])
    # Under the dot product row 2 leads alone.
    np.testing.assert_array_equal(
        retrieval_hits(q, corpus, [{2}], top_k=1, score_fn=dot_score), [[True]]
    )


def test_evaluator_breaks_ties_by_corpus_id_as_sentence_transformers(minilm, st_minilm):
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator as StIR,
    )

    """Identical documents tie exactly; the lower id (as a string: "d10" < "d9") wins."""
    queries = {"q1": "A man is playing a guitar."}
    corpus = {"d9": "A man plays the guitar.", "d10": "A man plays the guitar.", "d2": "Rain."}
    kwargs = dict(
        mrr_at_k=[1], ndcg_at_k=[1], accuracy_at_k=[1], precision_recall_at_k=[1], map_at_k=[1]
    )
    for relevant in ("d9", "d10"):
        ours = InformationRetrievalEvaluator(queries, corpus, {"q1": {relevant}}, **kwargs)
        theirs = StIR(queries, corpus, {"q1": {relevant}}, write_csv=False, **kwargs)
        got, want = ours(minilm), theirs(st_minilm)
        assert_metrics_equal(got, want)
        assert got["cosine_accuracy@1"] == (1.0 if relevant == "d10" else 0.0)


def test_similarity_metrics_known_values():
    gold = np.array([0.0, 1.0, 2.0, 3.0])
    assert similarity_metrics(np.array([1.0, 2.0, 3.0, 4.0]), gold) == {
        "pearson": pytest.approx(1.0),
        "spearman": pytest.approx(1.0),
    }
    # Monotone but not linear: Spearman 1, Pearson below 1; ties share their mean rank.
    m = similarity_metrics(np.array([0.0, 1.0, 8.0, 27.0]), gold)
    assert m["spearman"] == pytest.approx(1.0) and m["pearson"] < 0.99
    tied = similarity_metrics(np.array([1.0, 1.0, 2.0, 3.0]), gold)
    assert tied["spearman"] == pytest.approx(np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1])


def test_pairwise_similarities_equal_sentence_transformers():
    import torch
    from sentence_transformers import util

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 50, 16)).astype(np.float32)
    for name, fn in {
        "cosine": util.pairwise_cos_sim,
        "dot": util.pairwise_dot_score,
        "euclidean": util.pairwise_euclidean_sim,
        "manhattan": util.pairwise_manhattan_sim,
    }.items():
        want = fn(torch.from_numpy(a), torch.from_numpy(b)).numpy()
        np.testing.assert_allclose(pairwise_similarity(a, b, name), want, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- against sentence-transformers
@pytest.mark.slow
def test_information_retrieval_equals_sentence_transformers(minilm, st_minilm):
    """STS-B test's first 600 pairs as a retrieval task (128 queries with relevant documents,
    577 documents)."""
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator as StIR,
    )

    task = sts_retrieval_task("test", limit=600)
    ours = InformationRetrievalEvaluator(
        task.queries, task.corpus, task.relevant_docs, name="sts-test", **ALL_K
    )
    theirs = StIR(
        task.queries, task.corpus, task.relevant_docs, name="sts-test", write_csv=False, **ALL_K
    )
    reference = Recorded(st_minilm)
    want = theirs(reference)
    assert_metrics_equal(ours(minilm), want)
    assert ours.primary_metric == theirs.primary_metric == "sts-test_cosine_ndcg@10"
    assert 0.5 < want["sts-test_cosine_ndcg@10"] < 1.0  # a real task: neither trivial nor broken

    # The arithmetic alone: the reference's own embeddings through our metric functions.
    (_, queries, q), (_, corpus, c) = reference.outputs
    assert queries == ours.queries
    c = c[[corpus.index(task.corpus[d]) for d in ours.corpus_ids]]  # rows in sorted id order
    got = ours.compute_metrics(q, c, {"cosine": cos_sim})
    assert_metrics_equal({f"sts-test_{k}": v for k, v in got.items()}, want)


@pytest.mark.slow
def test_embedding_similarity_equals_sentence_transformers(minilm, st_minilm):
    """The first 500 pairs of STS-B dev, all four similarity functions."""
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator as StSim,
    )

    pairs = sts_benchmark("dev")[:500]
    args = ([p.sentence1 for p in pairs], [p.sentence2 for p in pairs], [p.score for p in pairs])
    fns = ["cosine", "dot", "euclidean", "manhattan"]
    ours = EmbeddingSimilarityEvaluator(*args, similarity_fn_names=fns, name="sts-dev")
    theirs = StSim(*args, similarity_fn_names=fns, name="sts-dev", write_csv=False)
    reference = Recorded(st_minilm)
    want = theirs(reference)
    assert_metrics_equal(ours(minilm), want)
    assert ours.primary_metric == theirs.primary_metric == "sts-dev_spearman_max"
    assert 0.8 < want["sts-dev_spearman_cosine"] < 0.95  # MiniLM's STS-B quality

    # The arithmetic alone, on the reference's own embeddings.
    (_, _, e1), (_, _, e2) = reference.outputs
    got = ours.compute_metrics(e1, e2, fns)
    assert_metrics_equal({f"sts-dev_{k}": v for k, v in got.items()}, want)


def test_default_similarity_and_primary_metric_follow_the_model(minilm, st_minilm):
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator as StSim,
    )

    pairs = sts_benchmark("dev")[:40]
    args = ([p.sentence1 for p in pairs], [p.sentence2 for p in pairs], [p.score for p in pairs])
    ours, theirs = EmbeddingSimilarityEvaluator(*args), StSim(*args, write_csv=False)
    assert_metrics_equal(ours(minilm), theirs(st_minilm))
    assert ours.primary_metric == theirs.primary_metric == "spearman_cosine"


@pytest.mark.parametrize(
    "prompts",
    [{"query": "query: ", "passage": "passage: "}, {"query": "query: ", "document": "document: "}],
)
def test_query_and_document_prompts_as_sentence_transformers(tmp_path, prompts):
    """Models with a query prompt and a passage or document prompt (pooled without them), as
    sentence-transformers 6 uses them: "query" for queries, "document" (not "passage") for
    the corpus."""
    from helpers.checkpoints import make_sentence_transformer
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator as StIR,
    )

    import ferris_jax

    path, st = make_sentence_transformer(
        tmp_path / "prompted",
        prompts=prompts,
        include_prompt=False,
    )
    enc = ferris_jax.load(path)
    task = sts_retrieval_task("test")
    qids = list(task.relevant_docs)[:60]
    queries = {q: task.queries[q] for q in qids}
    relevant = {q: task.relevant_docs[q] for q in qids}
    corpus = dict(list(task.corpus.items())[:300]) | {
        d: task.corpus[d] for q in qids for d in relevant[q]
    }
    ours = InformationRetrievalEvaluator(queries, corpus, relevant)
    theirs = StIR(queries, corpus, relevant, write_csv=False)
    got = ours(enc)
    # The same prompt on each side: the texts each evaluator embeds give equal vectors. (Their
    # metrics are compared on the real MiniLM above; this random model's vectors are so alike
    # that rounding reorders near-ties.)
    query_texts = [queries[q] for q in ours.queries_ids]
    corpus_texts = [corpus[c] for c in ours.corpus_ids]
    q_ours, c_ours = ours.embed(enc)
    with one_torch_thread():
        # What sentence-transformers' evaluator calls with its default prompt options.
        q_st = st.encode_query(query_texts, prompt_name=theirs.query_prompt_name)
        c_st = st.encode_document(corpus_texts, prompt_name=theirs.corpus_prompt_name)
    np.testing.assert_allclose(q_ours, q_st, atol=1e-5)
    np.testing.assert_allclose(c_ours, c_st, atol=1e-5)
    # The prompts matter: without them the rankings differ.
    plain = InformationRetrievalEvaluator(
        queries, corpus, relevant, query_prompt="", corpus_prompt=""
    )
    assert plain(enc) != got


def test_bad_input_names_the_option():
    with pytest.raises(ValueError, match="sentences1, sentences2 and scores"):
        EmbeddingSimilarityEvaluator(["a", "b"], ["c"], [1.0, 2.0])
    with pytest.raises(TypeError, match=r"scores\[1\]"):
        EmbeddingSimilarityEvaluator(["a", "b"], ["c", "d"], [1.0, "2"])
    with pytest.raises(ValueError, match="similarity_fn_names"):
        EmbeddingSimilarityEvaluator(["a"], ["c"], [1.0], similarity_fn_names=["cos"])
    with pytest.raises(ValueError, match="no query"):
        InformationRetrievalEvaluator({"q": "x"}, {"d": "y"}, {"q": set()})
    with pytest.raises(ValueError, match="ndcg_at_k"):
        InformationRetrievalEvaluator({"q": "x"}, {"d": "y"}, {"q": {"d"}}, ndcg_at_k=[0])
    with pytest.raises(ValueError, match="main_score_function"):
        InformationRetrievalEvaluator(
            {"q": "x"},
            {"d": "y"},
            {"q": {"d"}},
            score_functions={"cosine": cos_sim},
            main_score_function="dot",
        )
