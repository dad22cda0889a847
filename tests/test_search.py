"""`retrieval.search`: blocked exact search against a numpy brute force (several blocks, a padded
last block, filters), every precision, query batches split to the score budget, float
rescoring, recall of quantized search with rescoring on real MiniLM embeddings, and FAISS."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from helpers.embeddings import brute_force, recall_at_k, sts_embeddings

from ferris_jax.quantization import (
    dequantize_embeddings,
    quantization_ranges,
    quantize_embeddings,
)
from ferris_jax.retrieval.search import RESCORE_MULTIPLIER, rescore, search_blocks

R = 1024  # block rows


def _blocks(corpus: np.ndarray, keep: np.ndarray | None = None):
    """`corpus` as device blocks of R rows, the last padded with zeros and marked invalid."""
    n = len(corpus)
    nb = -(-n // R)
    padded = np.concatenate([corpus, np.zeros((nb * R - n, *corpus.shape[1:]), corpus.dtype)])
    keep = np.ones(n, bool) if keep is None else keep
    valid = np.concatenate([keep, np.zeros(nb * R - n, bool)])
    return (
        [jnp.asarray(padded[i * R : (i + 1) * R]) for i in range(nb)],
        [jnp.asarray(valid[i * R : (i + 1) * R]) for i in range(nb)],
    )


def _random(n=3000, d=48, q=20, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n, d)).astype(np.float32),
        rng.standard_normal((q, d)).astype(np.float32),
    )


def _assert_exact(scores, rows, reference: np.ndarray, k: int, atol: float) -> None:
    """Rows equal to a full sort of `reference` scores (float64), scores within `atol`."""
    want_values, want_rows = brute_force(reference, k)
    np.testing.assert_array_equal(np.asarray(rows), want_rows)
    np.testing.assert_allclose(np.asarray(scores), want_values, rtol=0, atol=atol)


def test_float32_blocks_equal_brute_force_with_filters():
    corpus, queries = _random()
    keep = np.random.default_rng(1).random(len(corpus)) < 0.5
    blocks, valid = _blocks(corpus, keep)
    scores, rows = search_blocks(queries, blocks, 10, valid=valid)
    reference = np.where(keep, queries.astype(np.float64) @ corpus.T, -np.inf)
    _assert_exact(scores, rows, reference, 10, atol=1e-5)
    assert rows.dtype == jnp.int32 and scores.dtype == jnp.float32


def test_more_results_than_valid_rows_and_one_query():
    corpus, queries = _random(n=1500)
    keep = np.zeros(len(corpus), bool)
    keep[[3, 1100, 1499]] = True
    blocks, valid = _blocks(corpus, keep)
    scores, rows = search_blocks(queries[0], blocks, 5, valid=valid)
    reference = np.where(keep, queries[:1].astype(np.float64) @ corpus.T, -np.inf)
    _assert_exact(scores[None], rows[None], reference, 5, atol=1e-5)
    assert list(np.asarray(rows)[3:]) == [-1, -1]


def test_query_batches_split_to_the_score_budget():
    corpus, queries = _random(q=300)
    blocks, valid = _blocks(corpus)
    whole = search_blocks(queries, blocks, 7, valid=valid)
    split = search_blocks(queries, blocks, 7, valid=valid, score_budget_bytes=8 * 4 * R)  # 8 rows
    np.testing.assert_array_equal(np.asarray(split[1]), np.asarray(whole[1]))
    np.testing.assert_array_equal(np.asarray(split[0]), np.asarray(whole[0]))
    _assert_exact(*whole, queries.astype(np.float64) @ corpus.T, 7, atol=1e-5)


def test_bfloat16_blocks():
    corpus, queries = _random()
    blocks, valid = _blocks(corpus.astype(jnp.bfloat16))
    scores, rows = search_blocks(queries, blocks, 10, valid=valid)
    c16 = np.asarray(jnp.asarray(corpus, jnp.bfloat16), np.float64)
    q16 = np.asarray(jnp.asarray(queries, jnp.bfloat16), np.float64)
    _assert_exact(scores, rows, q16 @ c16.T, 10, atol=1e-4)  # float32 sums of 48 products


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_scalar_quantized_scores_are_dot_products_with_the_dequantized_corpus(precision):
    corpus, queries = _random()
    ranges = quantization_ranges(corpus)
    quantized = quantize_embeddings(corpus, precision, ranges=ranges)
    blocks, valid = _blocks(quantized)
    scores, rows = search_blocks(
        queries, blocks, 10, valid=valid, precision=precision, ranges=ranges
    )
    reference = queries.astype(np.float64) @ dequantize_embeddings(quantized, precision, ranges).T
    _assert_exact(scores, rows, reference, 10, atol=1e-4)


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
@pytest.mark.parametrize("n_queries", [3, 40])  # XOR + popcount, and the +-1 matmul
def test_binary_scores_are_minus_hamming_distances(precision, n_queries):
    corpus, queries = _random(d=45, q=n_queries)  # 45 bits: the last byte is padded
    blocks, valid = _blocks(quantize_embeddings(corpus, precision))
    scores, rows = search_blocks(queries, blocks, 25, valid=valid, precision=precision)
    hamming = ((queries[:, None, :] > 0) != (corpus[None, :, :] > 0)).sum(-1)
    _assert_exact(scores, rows, -hamming.astype(np.float64), 25, atol=0)  # ties: lower row first


def test_candidates_for_rescoring():
    corpus, queries = _random()
    blocks, valid = _blocks(quantize_embeddings(corpus, "ubinary"))
    _, rows = search_blocks(queries, blocks, 10, valid=valid, precision="ubinary", candidates=True)
    assert rows.shape == (len(queries), 10 * RESCORE_MULTIPLIER["ubinary"])
    _, rows = search_blocks(
        queries, blocks, 10, valid=valid, precision="ubinary", candidates=True, rescore_multiplier=3
    )
    assert rows.shape == (len(queries), 30)


def test_rescore_orders_by_float_scores_and_keeps_empty_places_last():
    corpus, queries = _random(q=4)
    rows = np.random.default_rng(2).choice(len(corpus), (4, 12), replace=False).astype(np.int32)
    rows[1, 5:] = -1
    scores, best = rescore(queries, corpus[np.maximum(rows, 0)], rows, 8)
    dots = np.einsum("qd,qcd->qc", queries.astype(np.float64), corpus[rows])
    want_values, want_pos = brute_force(np.where(rows >= 0, dots, -np.inf), 8)
    want_rows = np.where(want_pos >= 0, np.take_along_axis(rows, np.maximum(want_pos, 0), 1), -1)
    np.testing.assert_array_equal(np.asarray(best), want_rows)
    np.testing.assert_allclose(np.asarray(scores), want_values, rtol=0, atol=1e-5)
    assert list(np.asarray(best)[1, 5:]) == [-1, -1, -1]


def test_bad_input_names_the_argument():
    corpus, queries = _random()
    blocks, valid = _blocks(corpus)
    with pytest.raises(ValueError, match="precision must be one of"):
        search_blocks(queries, blocks, 10, precision="int4")
    with pytest.raises(ValueError, match=r"blocks\[1\]"):
        search_blocks(queries, [blocks[0], blocks[1][:10]], 10)
    with pytest.raises(ValueError, match="ranges"):
        search_blocks(
            queries, _blocks(quantize_embeddings(corpus, "int8"))[0], 10, precision="int8"
        )
    with pytest.raises(ValueError, match=r"valid\[0\] must be bool"):
        search_blocks(queries, blocks, 10, valid=[v.astype(jnp.int32) for v in valid])
    with pytest.raises(ValueError, match="k must be"):
        search_blocks(queries, blocks, 0)


@pytest.fixture(scope="module")
def real(minilm):
    """MiniLM vectors of STS train (corpus, ~10.5k) and STS test (queries)."""
    return sts_embeddings(minilm, "train"), sts_embeddings(minilm, "test")


@pytest.mark.slow
@pytest.mark.parametrize(("precision", "target"), [("int8", 0.99), ("binary", 0.95)])
def test_quantized_search_with_rescoring_recall(real, precision, target):
    corpus, queries = real
    exact = search_blocks(queries, *_blocks(corpus)[:1], 10, valid=_blocks(corpus)[1])
    ranges = quantization_ranges(corpus)
    blocks, valid = _blocks(quantize_embeddings(corpus, precision, ranges=ranges))
    _, cand = search_blocks(
        queries, blocks, 10, valid=valid, precision=precision, ranges=ranges, candidates=True
    )
    cand = np.asarray(cand)
    _, rows = rescore(queries, corpus[np.maximum(cand, 0)], cand, 10)
    recall = recall_at_k(np.asarray(rows), np.asarray(exact[1]))
    assert recall >= target, f"{precision} recall@10 {recall:.4f} < {target}"


@pytest.mark.slow
def test_float32_equal_to_faiss_flat_ip(real):
    faiss = pytest.importorskip("faiss")
    corpus, queries = real
    blocks, valid = _blocks(corpus)
    scores, rows = search_blocks(queries, blocks, 10, valid=valid)
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    want_scores, want_rows = index.search(queries, 11)  # the 11th tells whether the 10th is tied
    np.testing.assert_allclose(np.asarray(scores), want_scores[:, :10], rtol=0, atol=1e-5)
    # Ids agree wherever a score is more than float32 rounding away from its neighbours (STS
    # has repeated sentences; FAISS orders exact ties by its heap, we lower row first).
    gaps = np.abs(np.diff(want_scores, axis=1))  # [Q, 10]
    separated = (gaps[:, 1:] > 1e-5) & (gaps[:, :-1] > 1e-5)
    separated = np.concatenate([gaps[:, :1] > 1e-5, separated], axis=1)
    assert separated.mean() > 0.95
    np.testing.assert_array_equal(np.asarray(rows)[separated], want_rows[:, :10][separated])
