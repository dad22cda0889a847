"""AnnIndex (FAISS HNSW) against exact numpy search on real all-MiniLM-L6-v2 embeddings of STS
Benchmark sentences: recall, scores, removals, filters, persistence and bad input."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
from helpers.data import sts_sentences

from ferris_jax.errors import CheckpointError

pytest.importorskip("faiss")
from ferris_jax.retrieval.ann import AnnIndex

K = 10
CORPUS = 2500  # STS train sentences (of about 10k), to keep the embedding fixture short
QUERIES = 200  # STS test sentences
# HNSW (M=16, ef_search=64) finds 99.7% of the exact top-10 on 15k of these vectors
# (benchmarks/ann.py); the bound leaves room for graph randomness, not for a broken search.
RECALL = 0.97
# Scores are float32 dot products of 384-d unit vectors: FAISS's SIMD sums and numpy's BLAS
# differ by rounding only.
SCORE_ATOL = 1e-5


@pytest.fixture(scope="module")
def vectors(minilm):
    """(corpus [2500, 384], queries [200, 384]): normalized MiniLM vectors of STS sentences."""
    corpus = minilm.encode(sts_sentences("train")[:CORPUS], normalize_embeddings=True)
    queries = minilm.encode(sts_sentences("test")[:QUERIES], normalize_embeddings=True)
    return np.asarray(corpus, np.float32), np.asarray(queries, np.float32)


@pytest.fixture(scope="module")
def index(vectors):
    """All of the corpus under rows 0..n-1 (not modified by tests: they copy it first)."""
    corpus, _ = vectors
    ann = AnnIndex(corpus.shape[1])
    ann.add(np.arange(len(corpus)), corpus)
    return ann


def exact(corpus, queries, k, allowed=None):
    """numpy top-k (scores, rows) by dot product among the `allowed` rows."""
    scores = queries @ corpus.T
    if allowed is not None:
        scores = np.where(allowed[: len(corpus)], scores, -np.inf)
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, 1), rows


def recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])


def fresh(corpus, rows=None, **options):
    ann = AnnIndex(corpus.shape[1], **options)
    ann.add(np.arange(len(corpus)) if rows is None else rows, corpus)
    return ann


def test_recall_and_scores_against_exact_search(vectors, index):
    corpus, queries = vectors
    scores, rows = index.search(queries, K)
    assert scores.shape == rows.shape == (QUERIES, K)
    assert scores.dtype == np.float32 and rows.dtype == np.int64
    assert recall(rows, exact(corpus, queries, K)[1]) >= RECALL
    np.testing.assert_allclose(
        scores, np.einsum("qd,qkd->qk", queries, corpus[rows]), rtol=0, atol=SCORE_ATOL
    )
    assert (np.diff(scores, axis=1) <= 0).all()


def test_rows_are_the_callers_numbers(vectors):
    corpus, queries = vectors
    order = np.random.default_rng(0).permutation(len(corpus))
    ann = fresh(corpus[order], rows=3 * order + 1_000_000_007)
    _, rows = ann.search(queries, K)
    assert recall((rows - 1_000_000_007) // 3, exact(corpus, queries, K)[1]) >= RECALL


def test_removed_rows_are_never_returned(vectors):
    corpus, queries = vectors
    ann = fresh(corpus, exact_below=0)  # the graph search, which walks through tombstones
    removed = np.random.default_rng(1).random(len(corpus)) < 0.3
    ann.remove(np.flatnonzero(removed))
    assert len(ann) == (~removed).sum() and ann.tombstones == removed.sum()
    for _ in range(2):  # with tombstones, then after compact
        _, rows = ann.search(queries, K)
        assert (rows >= 0).all() and not removed[rows].any()
        assert recall(rows, exact(corpus, queries, K, allowed=~removed)[1]) >= RECALL
        ann.compact()
    assert ann.tombstones == 0 and len(ann) == (~removed).sum()
    with pytest.raises(ValueError, match=f"row {np.flatnonzero(removed)[0]} is not in the index"):
        ann.remove(np.flatnonzero(removed)[:1])
    ann.add(np.flatnonzero(removed)[:5], corpus[removed][:5])  # a compacted row can come back
    assert len(ann) == (~removed).sum() + 5
    empty = AnnIndex(corpus.shape[1])
    with pytest.raises(ValueError, match="row 3 is not in the index"):
        empty.remove(np.array([3]))
    assert empty.search(queries[:2], K)[1].tolist() == [[-1] * K] * 2


# The default compares with each allowed row (25 here: fewer than sqrt(2 m ef_search n)); 0 forces
# the graph walk with FAISS's IDSelector and a widened beam.
@pytest.mark.parametrize("exact_below", [None, 0], ids=["default-exact-among-allowed", "graph"])
def test_filter_of_one_percent_still_gives_k_allowed_rows(vectors, exact_below):
    corpus, queries = vectors
    ann = fresh(corpus, exact_below=exact_below)
    allowed = np.zeros(len(corpus) + 100, bool)  # longer than the index: extra rows unknown
    allowed[np.random.default_rng(2).choice(len(corpus), len(corpus) // 100, replace=False)] = 1
    ann.remove(np.flatnonzero(allowed)[:3])  # removals and the filter combine
    live_allowed = allowed.copy()
    live_allowed[np.flatnonzero(allowed)[:3]] = False
    scores, rows = ann.search(queries, K, allowed=allowed)
    assert (rows >= 0).all() and live_allowed[rows].all()
    want_scores, want_rows = exact(corpus, queries, K, allowed=live_allowed)
    if exact_below is None:
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=SCORE_ATOL)
    else:
        assert recall(rows, want_rows) >= RECALL


def test_fewer_allowed_rows_than_k_are_padded(vectors, index):
    corpus, queries = vectors
    allowed = np.zeros(len(corpus), bool)
    allowed[[5, 17, 2000]] = True
    scores, rows = index.search(queries[:4], K, allowed=allowed)
    assert (np.sort(rows[:, :3], axis=1) == [5, 17, 2000]).all()
    assert (rows[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    scores, rows = index.search(queries[:2], K, allowed=np.zeros(len(corpus), bool))
    assert (rows == -1).all() and np.isneginf(scores).all()


def test_cosine_metric_normalizes(vectors):
    corpus, queries = vectors
    scale = np.random.default_rng(3).uniform(0.5, 4.0, (len(corpus), 1)).astype(np.float32)
    ann = fresh(corpus * scale, metric="cosine")
    scores, rows = ann.search(queries * 7.0, K)
    assert recall(rows, exact(corpus, queries, K)[1]) >= RECALL
    want = np.einsum("qd,qkd->qk", queries, corpus[rows])
    np.testing.assert_allclose(scores, want, rtol=0, atol=SCORE_ATOL)


def test_save_load_round_trip(vectors, tmp_path):
    corpus, queries = vectors
    ann = fresh(corpus, ef_search=48)
    ann.remove(np.arange(0, len(corpus), 7))
    allowed = np.arange(len(corpus)) % 3 != 0
    path = tmp_path / "vectors.ann"
    checksum = ann.save(path)
    assert checksum == hashlib.sha256(path.read_bytes()[:-40]).hexdigest()
    assert path.read_bytes()[-40:-8] == bytes.fromhex(checksum)
    loaded = AnnIndex.load(path)
    assert (len(loaded), loaded.tombstones, loaded.options) == (
        len(ann),
        ann.tombstones,
        ann.options,
    )
    for mask in (None, allowed):
        got, want = loaded.search(queries, K, allowed=mask), ann.search(queries, K, allowed=mask)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert AnnIndex.load(path, ef_search=200).options["ef_search"] == 200


def test_interrupted_save_leaves_the_previous_file(vectors, tmp_path, monkeypatch):
    import faiss

    corpus, _ = vectors
    path = tmp_path / "vectors.ann"
    fresh(corpus[:500]).save(path)
    before = path.read_bytes()

    def interrupted(index, writer):  # the header and rows are written by then
        raise KeyboardInterrupt

    monkeypatch.setattr(faiss, "write_index", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fresh(corpus[:800]).save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert len(AnnIndex.load(path)) == 500


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], "SHA-256 does not match"),
        (lambda b: b"not an index at all, just some text " * 3, "not a ferris-jax ANN index"),
        (lambda b: b"", "not a ferris-jax ANN index"),
    ],
    ids=["half", "last-byte", "flipped-bit", "other-file", "empty"],
)
def test_damaged_file_is_refused_naming_it(vectors, tmp_path, damage, message):
    corpus, _ = vectors
    path = tmp_path / "damaged.ann"
    fresh(corpus[:300]).save(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=f"damaged.ann.*{message}"):
        AnnIndex.load(path)


def test_bad_input_names_what_is_wrong(vectors):
    corpus, queries = vectors
    ann = fresh(corpus[:100])
    cases = [
        (lambda: ann.add(np.array([100, 101]), corpus[:3]), "2 rows but 3 vectors"),
        (lambda: ann.add(np.array([200, 200]), corpus[:2]), "repeats row 200"),
        (lambda: ann.add(np.array([5]), corpus[:1]), "row 5 is already in the index"),
        (lambda: ann.add(np.array([-4]), corpus[:1]), "negative row number -4"),
        (lambda: ann.add(np.array([1.5]), corpus[:1]), "rows must be a 1-D array of int64"),
        (lambda: ann.add(np.array([300]), corpus[:1, :10]), r"vectors must have shape \[n, 384\]"),
        (lambda: ann.remove(np.array([1, 999])), "row 999 is not in the index"),
        (lambda: ann.search(queries[0], K), r"queries must have shape \[n, 384\]"),
        (lambda: ann.search(queries, 0), "k must be an integer >= 1"),
        (lambda: ann.search(queries, K, allowed=np.ones(100)), "allowed must be a 1-D bool"),
        (lambda: AnnIndex(384, metric="l2"), 'metric must be "dot" or "cosine"'),
        (lambda: AnnIndex(384, m=1), "m must be an integer >= 2"),
    ]
    nan = corpus[:2].copy()
    nan[1, 7] = np.nan
    cases.append((lambda: ann.add(np.array([400, 401]), nan), r"vectors\[1\] is not finite"))
    zero = np.zeros((1, 384), np.float32)
    cases.append((lambda: fresh(zero, metric="cosine"), r"vectors\[0\] is a zero vector"))
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert len(ann) == 100  # nothing half-added


def test_missing_faiss_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r'pip install "ferris-jax\[ann\]"'):
        AnnIndex(384)
