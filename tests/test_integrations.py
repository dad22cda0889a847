"""The LangChain and LlamaIndex adapters, offline, through the frameworks' own public
interfaces: queries get the query prompt and documents the document prompt (a tiny E5-style
model makes the difference visible), vectors equal the Encoder's."""

from __future__ import annotations

import asyncio
import importlib
import sys

import numpy as np
import pytest
from helpers.data import sts_sentences
from helpers.retrieval import make_e5_style_model

import ferris_jax

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.embeddings import Embeddings
from llama_index.core.base.embeddings.base import BaseEmbedding

from ferris_jax.integrations.langchain import FerrisEmbeddings
from ferris_jax.integrations.llama_index import FerrisEmbedding

ATOL = 1e-6


@pytest.fixture(scope="module")
def e5_path(tmp_path_factory):
    return make_e5_style_model(tmp_path_factory.mktemp("e5") / "e5")


@pytest.fixture(scope="module")
def e5(e5_path):
    return ferris_jax.load(e5_path)


@pytest.fixture(scope="module")
def texts():
    return sts_sentences("test")[:40]


def _check_routing(enc, queries, documents, texts):
    """Vectors equal encode_query / encode_document, and differ from the other prompt's."""
    np.testing.assert_allclose(np.asarray(queries), enc.encode_query(texts), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(documents), enc.encode_document(texts), atol=ATOL, rtol=0)
    assert np.abs(np.asarray(queries) - np.asarray(documents)).max() > 1e-3


def test_langchain_routes_queries_and_documents_through_their_prompts(e5, e5_path, texts):
    embeddings = FerrisEmbeddings(e5, batch_size=8)
    assert isinstance(embeddings, Embeddings)
    documents = embeddings.embed_documents(texts)
    queries = [embeddings.embed_query(t) for t in texts]
    assert isinstance(documents, list) and isinstance(documents[0], list)
    assert isinstance(documents[0][0], float) and len(documents[0]) == e5.embedding_dimension
    _check_routing(e5, queries, documents, texts)

    async_documents = asyncio.run(embeddings.aembed_documents(texts))
    async_query = asyncio.run(embeddings.aembed_query(texts[0]))
    np.testing.assert_allclose(async_documents, documents, atol=ATOL, rtol=0)
    np.testing.assert_allclose(async_query, queries[0], atol=ATOL, rtol=0)
    assert embeddings.embed_documents([]) == []

    loaded = FerrisEmbeddings(str(e5_path), max_seq_length=32)  # built by ferris_jax.load
    assert loaded.encoder.max_seq_length == 32
    np.testing.assert_allclose(
        loaded.embed_query(texts[1]), e5.encode_query(texts[1]), atol=ATOL, rtol=0
    )
    plain = FerrisEmbeddings(e5, query_prompt_name="passage")
    np.testing.assert_allclose(plain.embed_query(texts[2]), documents[2], atol=ATOL, rtol=0)
    with pytest.raises(TypeError, match=r"load options \['dtype'\] given with a loaded Encoder"):
        FerrisEmbeddings(e5, dtype="bfloat16")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        FerrisEmbeddings(e5, batch_size=0)
    with pytest.raises(TypeError, match="embed_query takes one str"):
        embeddings.embed_query(texts[:2])


def test_llama_index_routes_queries_and_texts_through_their_prompts(e5, e5_path, texts):
    embed = FerrisEmbedding(encoder=e5, embed_batch_size=16)
    assert isinstance(embed, BaseEmbedding) and embed.class_name() == "FerrisEmbedding"
    assert embed.model_name == e5.checkpoint.name
    documents = embed.get_text_embedding_batch(texts)
    queries = [embed.get_query_embedding(t) for t in texts]
    _check_routing(e5, queries, documents, texts)
    np.testing.assert_allclose(embed.get_text_embedding(texts[3]), documents[3], atol=ATOL, rtol=0)

    async_query = asyncio.run(embed.aget_query_embedding(texts[0]))
    async_documents = asyncio.run(embed.aget_text_embedding_batch(texts))
    np.testing.assert_allclose(async_query, queries[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(async_documents, documents, atol=ATOL, rtol=0)

    loaded = FerrisEmbedding(model_name=str(e5_path), load_kwargs={"max_seq_length": 32})
    assert loaded.encoder.max_seq_length == 32 and loaded.model_name == str(e5_path)
    np.testing.assert_allclose(
        loaded.get_query_embedding(texts[1]), e5.encode_query(texts[1]), atol=ATOL, rtol=0
    )
    normalized = FerrisEmbedding(encoder=e5, normalize=True, text_prompt_name="query")
    np.testing.assert_allclose(
        normalized.get_text_embedding(texts[2]), queries[2], atol=ATOL, rtol=0
    )  # the tiny model normalizes already
    payload = embed.to_dict()
    assert payload["model_name"] == e5.checkpoint.name and payload["embed_batch_size"] == 16
    with pytest.raises(ValueError, match="embed_batch_size"):
        FerrisEmbedding(encoder=e5, embed_batch_size=0)
    with pytest.raises(TypeError, match="encoder must be a ferris_jax Encoder"):
        FerrisEmbedding(encoder="e5")


@pytest.mark.slow
def test_both_adapters_give_minilm_vectors(minilm):
    """The real all-MiniLM-L6-v2 (no prompts): both frameworks get `encode`'s vectors."""
    texts = sts_sentences("test")[:16]
    want = minilm.encode(texts)
    np.testing.assert_allclose(
        FerrisEmbeddings(minilm).embed_documents(texts), want, atol=ATOL, rtol=0
    )
    np.testing.assert_allclose(
        FerrisEmbedding(encoder=minilm).get_query_embedding(texts[0]), want[0], atol=ATOL, rtol=0
    )


@pytest.mark.parametrize(
    "module, framework, extra",
    [("langchain", "langchain_core", "langchain"), ("llama_index", "llama_index", "llama-index")],
)
def test_a_missing_framework_names_the_extra(monkeypatch, module, framework, extra):
    name = f"ferris_jax.integrations.{module}"
    monkeypatch.delitem(sys.modules, name)
    for loaded in [m for m in sys.modules if m == framework or m.startswith(framework + ".")]:
        monkeypatch.setitem(sys.modules, loaded, None)
    monkeypatch.setitem(sys.modules, framework, None)
    with pytest.raises(ImportError, match=rf'pip install "ferris-jax\[{extra}\]"'):
        importlib.import_module(name)


def test_one_str_where_a_list_is_expected_is_refused(e5):
    """`embed_documents("hello")` would embed five one-letter texts: both adapters refuse a str
    where they take a list, and anything but a str where they take one text."""
    embeddings = FerrisEmbeddings(e5)
    with pytest.raises(TypeError, match="embed_documents takes a list of str, got one str"):
        embeddings.embed_documents("hello")
    with pytest.raises(TypeError, match="embed_documents takes a list of str, got one str"):
        asyncio.run(embeddings.aembed_documents("hello"))
    with pytest.raises(TypeError, match=r"takes a list of str, got int at \[1\]"):
        embeddings.embed_documents(["hello", 3])
    texts = ["hello", "world"]
    assert embeddings.embed_documents(iter(texts)) == embeddings.embed_documents(texts)

    embed = FerrisEmbedding(encoder=e5)
    with pytest.raises(TypeError, match="get_text_embedding_batch takes a list of str, got one"):
        embed.get_text_embedding_batch("hello")
    with pytest.raises(TypeError, match="aget_text_embedding_batch takes a list of str, got one"):
        asyncio.run(embed.aget_text_embedding_batch("hello"))
    with pytest.raises(TypeError, match="get_text_embedding takes one str, got list"):
        embed.get_text_embedding(texts)
    with pytest.raises(TypeError, match="get_query_embedding takes one str, got list"):
        embed.get_query_embedding(texts)
