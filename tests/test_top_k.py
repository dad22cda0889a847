"""`ops.top_k` equals a full sort: values, indices and the tie rule (lower index first), with
masked (-inf) entries and rows holding fewer than k valid entries."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.embeddings import brute_force

from ferris_jax.ops.top_k import bin_size, top_k
from ferris_jax.similarity import semantic_search

top_k_jit = jax.jit(top_k, static_argnums=1)

# (rows, N, k): two-stage shapes (N a multiple of the bin size or not) and lax.top_k shapes.
SHAPES = [(3, 1000, 3), (2, 4096, 1), (5, 20_011, 10), (1, 100_003, 17), (4, 50, 5), (2, 7, 10)]


def _check(scores: np.ndarray, k: int) -> None:
    values, indices = top_k_jit(jnp.asarray(scores), k)
    want_values, want_indices = brute_force(scores, k)
    assert indices.dtype == jnp.int32 and values.shape == indices.shape == (scores.shape[0], k)
    np.testing.assert_array_equal(np.asarray(indices), want_indices)
    np.testing.assert_array_equal(np.asarray(values), want_values)


def test_the_two_stage_path_is_taken_for_long_rows():
    assert bin_size(1000, 3) is not None and bin_size(20_011, 10) is not None
    assert bin_size(50, 5) is None  # short rows: one lax.top_k


@pytest.mark.parametrize("shape", SHAPES)
def test_equal_to_a_full_sort(shape):
    q, n, k = shape
    _check(np.random.default_rng(n).standard_normal((q, n)).astype(np.float32), k)


@pytest.mark.parametrize("shape", SHAPES)
def test_ties_come_lower_index_first(shape):
    q, n, k = shape
    # Few distinct values: every top-k crosses ties, inside bins and across them.
    _check(np.random.default_rng(n).integers(0, 4, (q, n)).astype(np.float32), k)


def test_all_equal_rows():
    _check(np.zeros((2, 5000), np.float32), 10)


@pytest.mark.parametrize("shape", SHAPES)
def test_masked_entries_are_never_returned(shape):
    q, n, k = shape
    rng = np.random.default_rng(n + 1)
    scores = rng.standard_normal((q, n)).astype(np.float32)
    scores[rng.random((q, n)) < 0.7] = -np.inf
    _check(scores, k)


def test_fewer_valid_entries_than_k_give_minus_one():
    scores = np.full((3, 20_000), -np.inf, np.float32)
    scores[0, [5, 19_999, 7000]] = [1.0, 2.0, 1.0]
    scores[1, 12_345] = -1e30
    values, indices = top_k(jnp.asarray(scores), 5)
    np.testing.assert_array_equal(
        np.asarray(indices), [[19_999, 5, 7000, -1, -1], [12_345, -1, -1, -1, -1], [-1] * 5]
    )
    assert np.isneginf(np.asarray(values)[:, 3:]).all()


def test_bfloat16_and_one_dimensional_scores():
    scores = np.random.default_rng(3).standard_normal(30_000).astype(np.float32)
    values, indices = top_k(jnp.asarray(scores, jnp.bfloat16), 10)
    rounded = np.asarray(jnp.asarray(scores, jnp.bfloat16).astype(jnp.float32))
    want_values, want_indices = brute_force(rounded[None], 10)
    np.testing.assert_array_equal(np.asarray(indices), want_indices[0])
    np.testing.assert_array_equal(np.asarray(values, np.float32), want_values[0])


def test_bad_k_names_the_argument():
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        top_k(jnp.zeros((1, 10)), 0)


def test_semantic_search_uses_the_exact_top_k():
    rng = np.random.default_rng(4)
    queries = rng.standard_normal((3, 16)).astype(np.float32)
    corpus = rng.standard_normal((9000, 16)).astype(np.float32)
    scores, indices = semantic_search(queries, corpus, top_k=10)
    normed = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    cos = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ normed.T
    want_values, want_indices = brute_force(cos, 10)
    np.testing.assert_array_equal(np.asarray(indices), want_indices)
    np.testing.assert_allclose(np.asarray(scores), want_values, rtol=1e-5, atol=1e-6)
    assert semantic_search(queries, corpus[:4], top_k=10)[1].shape == (3, 4)
