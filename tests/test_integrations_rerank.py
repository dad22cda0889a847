"""The rerankers of the LangChain and LlamaIndex adapters, offline, on a tiny random BERT
cross-encoder that transformers writes and STS Benchmark sentences: each adapter keeps
`Reranker.rank`'s order and scores (and so sentence-transformers' `CrossEncoder`'s, and
llama-index's own `SentenceTransformerRerank`'s), and works inside its framework's pipeline."""

from __future__ import annotations

import asyncio
import copy

import numpy as np
import pytest
from helpers.checkpoints import make_bert_cross_encoder_checkpoint
from helpers.data import sts_sentences

import ferris_jax

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from ferris_jax.integrations.langchain import FerrisReranker
from ferris_jax.integrations.llama_index import FerrisRerank

BATCH = 8  # the adapters' and rank's batch size alike, so the padded shapes (and scores) match
# Against torch: the bound test_hybrid holds the reranker's scores to.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def cross_encoder_path(tmp_path_factory):
    return make_bert_cross_encoder_checkpoint(tmp_path_factory.mktemp("ce") / "ce")


@pytest.fixture(scope="module")
def reranker(cross_encoder_path):
    return ferris_jax.load_reranker(cross_encoder_path)


@pytest.fixture(scope="module")
def texts():
    return sts_sentences("test")[:20]


@pytest.fixture(scope="module")
def query():
    return sts_sentences("test")[40]


@pytest.fixture(scope="module")
def torch_rank(cross_encoder_path, query, texts):
    """sentence-transformers' `CrossEncoder.rank` of all the texts on the same folder."""
    st = pytest.importorskip("sentence_transformers")
    return st.CrossEncoder(str(cross_encoder_path), device="cpu").rank(query, texts)


def _check_ranking(got_ids, got_scores, want, torch_rank):
    """The adapter's (ids, scores) are `rank`'s exactly, and torch's to float32 rounding."""
    assert got_ids == [r["corpus_id"] for r in want]
    assert got_scores == [r["score"] for r in want]
    assert all(isinstance(s, float) for s in got_scores)
    assert got_ids == [r["corpus_id"] for r in torch_rank[: len(got_ids)]]
    want_torch = [r["score"] for r in torch_rank[: len(got_ids)]]
    np.testing.assert_allclose(got_scores, want_torch, rtol=RTOL, atol=ATOL)


def _documents(texts):
    return [
        Document(page_content=t, metadata={"row": i}, id=f"doc-{i}") for i, t in enumerate(texts)
    ]


def test_langchain_reranker_keeps_ranks_order_and_scores(
    reranker, cross_encoder_path, query, texts, torch_rank
):
    compressor = FerrisReranker(reranker, top_n=5, batch_size=BATCH)
    assert isinstance(compressor, BaseDocumentCompressor) and compressor.model is reranker
    documents = _documents(texts)
    kept = compressor.compress_documents(documents, query)
    want = reranker.rank(query, texts, top_k=5, batch_size=BATCH)
    scores = [d.metadata["relevance_score"] for d in kept]
    _check_ranking([d.metadata["row"] for d in kept], scores, want, torch_rank)
    assert [d.page_content for d in kept] == [texts[r["corpus_id"]] for r in want]
    assert [d.id for d in kept] == [f"doc-{r['corpus_id']}" for r in want]
    assert all("relevance_score" not in d.metadata for d in documents)  # copies, not the input

    everything = FerrisReranker(reranker, top_n=None, batch_size=BATCH)
    ranked = everything.compress_documents(documents, query)
    _check_ranking(
        [d.metadata["row"] for d in ranked],
        [d.metadata["relevance_score"] for d in ranked],
        reranker.rank(query, texts, batch_size=BATCH),
        torch_rank,
    )
    assert len(FerrisReranker(reranker, top_n=50).compress_documents(documents, query)) == 20
    assert len(FerrisReranker(reranker).compress_documents(documents, query)) == 3  # top_n=3
    assert compressor.compress_documents([], query) == []
    again = asyncio.run(compressor.acompress_documents(documents, query))
    assert [d.metadata for d in again] == [d.metadata for d in kept]

    loaded = FerrisReranker(str(cross_encoder_path), max_length=32)  # by load_reranker
    assert loaded.model.max_seq_length == 32
    with pytest.raises(TypeError, match=r"load options \['dtype'\] given with a loaded Reranker"):
        FerrisReranker(reranker, dtype="bfloat16")
    with pytest.raises(ValueError, match="top_n"):
        FerrisReranker(reranker, top_n=-1)
    with pytest.raises(ValueError, match="batch_size"):
        FerrisReranker(reranker, batch_size=0)
    with pytest.raises(TypeError, match="query is list"):
        compressor.compress_documents(documents, [query])


class _CompressionRetriever(BaseRetriever):
    """ContextualCompressionRetriever's retrieval, line for line, for when langchain (which
    has it; langchain-core has not) is not installed: a langchain-core retriever that passes
    the run's child callbacks down as the real one does."""

    base_compressor: BaseDocumentCompressor
    base_retriever: BaseRetriever

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        docs = self.base_retriever.invoke(query, config={"callbacks": run_manager.get_child()})
        if docs:
            compressed = self.base_compressor.compress_documents(
                docs, query, callbacks=run_manager.get_child()
            )
            return list(compressed)
        return []


def _contextual_compression_retriever():
    for module in ("langchain_classic.retrievers", "langchain.retrievers"):
        try:
            return __import__(module, fromlist=["x"]).ContextualCompressionRetriever
        except ImportError:
            continue
    pytest.skip("ContextualCompressionRetriever needs langchain (or langchain-classic)")


@pytest.mark.parametrize("retriever_class", ["langchain", "stand-in"])
def test_langchain_reranker_in_a_compression_retriever(reranker, query, texts, retriever_class):
    cls = _contextual_compression_retriever() if retriever_class == "langchain" else None
    cls = cls or _CompressionRetriever
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents(_documents(texts))
    base = store.as_retriever(search_kwargs={"k": 12})
    retriever = cls(
        base_compressor=FerrisReranker(reranker, top_n=4, batch_size=BATCH), base_retriever=base
    )
    candidates = base.invoke(query)
    want = reranker.rank(query, [d.page_content for d in candidates], top_k=4, batch_size=BATCH)
    for got in (retriever.invoke(query), asyncio.run(retriever.ainvoke(query))):
        assert [d.id for d in got] == [candidates[r["corpus_id"]].id for r in want]
        assert [d.metadata["relevance_score"] for d in got] == [r["score"] for r in want]


def _nodes(texts):
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"node-{i}", metadata={"row": i}), score=i / 100)
        for i, t in enumerate(texts)
    ]


def test_llama_index_rerank_keeps_ranks_order_and_scores(
    reranker, cross_encoder_path, query, texts, torch_rank
):
    post = FerrisRerank(reranker=reranker, top_n=5, batch_size=BATCH)
    assert isinstance(post, BaseNodePostprocessor) and post.class_name() == "FerrisRerank"
    assert post.reranker is reranker and post.model == reranker.checkpoint.name
    nodes = _nodes(texts)
    # Scored on the text as embedded, metadata included, as SentenceTransformerRerank does.
    embedded = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    assert embedded[0] != texts[0] and texts[0] in embedded[0]
    kept = post.postprocess_nodes(nodes, QueryBundle(query))
    want = reranker.rank(query, embedded, top_k=5, batch_size=BATCH)
    assert [n.node.node_id for n in kept] == [f"node-{r['corpus_id']}" for r in want]
    assert [n.score for n in kept] == [r["score"] for r in want]
    assert [n.score for n in nodes] == [i / 100 for i in range(20)]  # the input is left as is
    by_str = post.postprocess_nodes(nodes, query_str=query)
    assert [(n.node.node_id, n.score) for n in by_str] == [(n.node.node_id, n.score) for n in kept]
    again = asyncio.run(post.apostprocess_nodes(nodes, QueryBundle(query)))
    assert [(n.node.node_id, n.score) for n in again] == [(n.node.node_id, n.score) for n in kept]

    # Bare text: rank's order and scores, and torch's.
    plain = [NodeWithScore(node=TextNode(text=t), score=None) for t in texts]
    everything = FerrisRerank(reranker=reranker, top_n=None, batch_size=BATCH)
    ranked = everything.postprocess_nodes(plain, QueryBundle(query))
    by_node = {id(n.node): i for i, n in enumerate(plain)}
    _check_ranking(
        [by_node[id(n.node)] for n in ranked],
        [n.score for n in ranked],
        reranker.rank(query, texts, batch_size=BATCH),
        torch_rank,
    )

    assert post.postprocess_nodes([], QueryBundle(query)) == []
    with pytest.raises(ValueError, match="needs the query"):
        post.postprocess_nodes(nodes)
    assert len(FerrisRerank(reranker=reranker).postprocess_nodes(nodes, query_str=query)) == 2

    keeping = FerrisRerank(reranker=reranker, top_n=3, batch_size=BATCH, keep_retrieval_score=True)
    top = keeping.postprocess_nodes(nodes, QueryBundle(query))
    assert [n.node.metadata["retrieval_score"] for n in top] == [
        nodes[int(n.node.node_id.split("-")[1])].score for n in top
    ]
    assert all("retrieval_score" not in n.node.metadata for n in nodes)

    loaded = FerrisRerank(model=str(cross_encoder_path), load_kwargs={"max_length": 32})
    assert loaded.reranker.max_seq_length == 32 and loaded.model == str(cross_encoder_path)
    payload = post.to_dict()
    assert payload["top_n"] == 5 and payload["model"] == reranker.checkpoint.name
    with pytest.raises(ValueError, match="top_n"):
        FerrisRerank(reranker=reranker, top_n=-1)
    with pytest.raises(TypeError, match="reranker must be a ferris_jax Reranker"):
        FerrisRerank(reranker="ce")
    with pytest.raises(TypeError, match="load_kwargs given with a loaded reranker"):
        FerrisRerank(reranker=reranker, load_kwargs={"dtype": "bfloat16"})


def test_llama_index_rerank_matches_sentence_transformer_rerank(cross_encoder_path, reranker):
    """llama-index's own cross-encoder postprocessor on the same folder: same nodes, same
    order, scores to float32 rounding."""
    pytest.importorskip("sentence_transformers")
    from llama_index.core.postprocessor import SentenceTransformerRerank

    query, texts = sts_sentences("test")[41], sts_sentences("test")[20:36]
    nodes = _nodes(texts)
    theirs = SentenceTransformerRerank(top_n=6, model=str(cross_encoder_path), device="cpu")
    want = theirs.postprocess_nodes(copy.deepcopy(nodes), QueryBundle(query))  # it sets scores
    got = FerrisRerank(reranker=reranker, top_n=6).postprocess_nodes(nodes, QueryBundle(query))
    assert [n.node.node_id for n in got] == [n.node.node_id for n in want]
    np.testing.assert_allclose(
        [n.score for n in got], [float(n.score) for n in want], rtol=RTOL, atol=ATOL
    )


def test_llama_index_rerank_in_a_query_engine(reranker, query, texts):
    """A retriever query engine over a vector index applies the postprocessor to what it
    retrieves; its source nodes are the reranked ones."""
    from llama_index.core import VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.response_synthesizers.no_text import NoText

    index = VectorStoreIndex(
        [n.node for n in _nodes(texts)], embed_model=MockEmbedding(embed_dim=8)
    )
    retriever = index.as_retriever(similarity_top_k=10)
    engine = RetrieverQueryEngine(
        retriever,
        response_synthesizer=NoText(llm=MockLLM()),  # no LLM call: the sources are the answer
        node_postprocessors=[FerrisRerank(reranker=reranker, top_n=3, batch_size=BATCH)],
    )
    candidates = retriever.retrieve(query)
    embedded = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in candidates]
    want = reranker.rank(query, embedded, top_k=3, batch_size=BATCH)
    response = engine.query(query)
    assert [n.node.node_id for n in response.source_nodes] == [
        candidates[r["corpus_id"]].node.node_id for r in want
    ]
    assert [n.score for n in response.source_nodes] == [r["score"] for r in want]
