"""`Index.add` / `search` arguments misread silently before: each is now one clear error naming
the argument, and a refused add leaves the index as it was."""

from __future__ import annotations

import numpy as np
import pytest

import ferris_jax
from ferris_jax.retrieval.index import Index


@pytest.fixture(scope="module")
def index(tiny_st) -> Index:
    index = Index(ferris_jax.load(tiny_st[0], compilation_cache=False))
    index.add(["The cat sat on the mat.", "A dog barked."], ids=["cat", "dog"])
    return index


def test_one_text_takes_one_id_and_one_metadata_dict(index):
    assert index.add("hello there", ids="doc1", metadata={"lang": "en"}) == ["doc1"]
    (hit,) = index.get("doc1")
    assert hit.id == "doc1" and hit.metadata == {"lang": "en"}
    index.remove("doc1")


@pytest.mark.parametrize(
    ("texts", "options", "error", "message"),
    [
        (["a", "b"], {"ids": "ab"}, TypeError, "ids must be a list of strings"),
        (["a", "b"], {"ids": ["x", "y", "z"]}, ValueError, "ids has more entries than the 2"),
        (["a", "b"], {"ids": ["x"]}, ValueError, "ids has fewer entries than texts"),
        (["a", "b"], {"metadata": [{"k": 1}]}, ValueError, "metadata has fewer entries"),
        (["a"], {"metadata": [{}, {}]}, ValueError, "metadata has more entries than the 1"),
        (["a", "b"], {"metadata": {"k": 1}}, TypeError, "metadata must be a list of dicts"),
        (["a", "b"], {"metadata": ["k", "v"]}, TypeError, r"metadata\[0\] must be a dict"),
    ],
)
def test_ids_and_metadata_must_match_the_texts(index, texts, options, error, message):
    before = index.info()
    with pytest.raises(error, match=message):
        index.add(texts, **options)
    assert index.info() == before


@pytest.mark.parametrize("top_k", [2.7, 0, -1, "3", True, None])
def test_top_k_must_be_a_positive_integer(index, top_k):
    with pytest.raises(ValueError, match=f"top_k must be an integer >= 1, got {top_k!r}"):
        index.search("cat", top_k=top_k)


def test_top_k_accepts_numpy_integers(index):
    assert len(index.search("cat", top_k=np.int64(1))) == 1


def test_non_finite_query_vectors_are_refused(index):
    queries = np.ones((3, index.dimension), np.float32)
    queries[1, 4] = np.nan
    with pytest.raises(ValueError, match="query vector 1 is not finite"):
        index.search(queries, top_k=1)
    with pytest.raises(ValueError, match="query vector 0 is not finite"):
        index.search(np.full(index.dimension, np.inf, np.float32))


def test_query_texts_embedded_to_non_finite_vectors_are_refused(index, monkeypatch):
    """A model whose vector for a query text is not finite is refused, naming the query: for
    several queries (through the host) and for one (it stays on the device for the search)."""
    encode = index.encoder.encode

    def broken(texts, **options):
        vectors = encode(texts, **options)
        if options.get("convert_to_tensor"):
            assert len(texts) == 1
            return vectors * np.inf
        vectors = vectors.copy()
        vectors[1] = np.nan
        return vectors

    monkeypatch.setattr(index.encoder, "encode", broken)
    with pytest.raises(ValueError, match="query vector 1 is not finite"):
        index.search(["cat", "dog", "mat"], top_k=1)
    with pytest.raises(ValueError, match="query vector 0 is not finite"):
        index.search("cat")


def test_a_query_text_finds_what_its_vector_finds(index):
    vector = index.encoder.encode("a cat", prompt=index.prompts["query"])
    by_text, by_vector = index.search("a cat", top_k=2), index.search(vector, top_k=2)
    assert [h.id for h in by_text] == [h.id for h in by_vector]
    np.testing.assert_allclose([h.score for h in by_text], [h.score for h in by_vector], atol=1e-6)
