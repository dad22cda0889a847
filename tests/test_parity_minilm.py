"""The real all-MiniLM-L6-v2 checkpoint: ferris_jax vs sentence-transformers on varied text."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.assertions import assert_embeddings_match
from helpers.texts import varied_texts


@pytest.fixture(scope="module")
def st_minilm(minilm_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path), device="cpu")


@pytest.mark.slow
def test_minilm_matches_sentence_transformers(minilm, st_minilm):
    texts = varied_texts()
    assert minilm.tokenize(texts).truncated.sum() > 10  # long inputs really are cut
    got = minilm.encode(texts)
    want = st_minilm.encode(texts, batch_size=32)
    assert got.shape == (len(texts), 384)
    assert_embeddings_match(got, want)


@pytest.mark.slow
def test_minilm_token_ids_match_sentence_transformers(minilm, st_minilm):
    texts = varied_texts(80, seed=1)
    ours = minilm.tokenize(texts)
    theirs = st_minilm.tokenize(texts)
    np.testing.assert_array_equal(ours.input_ids, theirs["input_ids"].numpy())
    np.testing.assert_array_equal(ours.attention_mask, theirs["attention_mask"].numpy())


@pytest.mark.slow
def test_same_text_same_vector_whatever_the_neighbours(minilm):
    """A text's vector does not depend on its batch, its padding or its position."""
    texts = varied_texts(120, seed=2)
    probe = "The quick brown fox jumps over the lazy dog."
    alone = minilm.encode([probe])[0]
    for neighbours, batch_size in ((texts[:3], 4), (texts[:60], 16), (texts, 64), ([], 1)):
        mixed = [*neighbours[: len(neighbours) // 2], probe, *neighbours[len(neighbours) // 2 :]]
        got = minilm.encode(mixed, batch_size=batch_size)[len(neighbours) // 2]
        assert np.abs(got - alone).max() <= 1e-6


@pytest.mark.slow
def test_single_string_and_query_api(minilm, st_minilm):
    v = minilm.encode("hello world")
    assert v.shape == (384,)
    np.testing.assert_allclose(v, st_minilm.encode("hello world"), atol=1e-5)
    np.testing.assert_allclose(minilm.encode_query("hello world"), v, atol=1e-6)
    assert minilm.encode([]).shape == (0, 384)
