"""The server with its model in an engine process (`EngineProcess`, what `ferris-jax serve`
runs by default): vectors, search results and reranking (a reranker loaded in the engine
process) equal to the models' own, the model's loading errors raised in the parent, and an
engine process that dies fails requests cleanly."""

from __future__ import annotations

import concurrent.futures
import functools
import os
import signal
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
from helpers.checkpoints import make_bert_cross_encoder_checkpoint  # noqa: E402
from helpers.data import sts_sentences  # noqa: E402
from helpers.serving import load_for_serving, running  # noqa: E402

pytestmark = pytest.mark.slow

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
FAQ = [
    ("reset", "To reset your password, open Settings and choose Security.", {"topic": "account"}),
    ("refund", "Refunds are paid to the original card within five days.", {"topic": "billing"}),
    ("export", "You can export your notes as Markdown or PDF.", {"topic": "notes"}),
]


@pytest.fixture(scope="module")
def index(minilm):
    from ferris_jax.retrieval import Index

    index = Index(minilm)
    index.add([t for _, t, _ in FAQ], ids=[i for i, _, _ in FAQ], metadata=[m for *_, m in FAQ])
    return index


@pytest.fixture(scope="module")
def reranker_folder(tmp_path_factory):
    return make_bert_cross_encoder_checkpoint(tmp_path_factory.mktemp("ce") / "ce", seed=1)


@pytest.fixture(scope="module")
def engine(index, reranker_folder, tmp_path_factory):
    from ferris_jax.serve.engine import EngineProcess

    folder = index.save(tmp_path_factory.mktemp("served") / "faq")
    load = functools.partial(load_for_serving, MINILM, str(folder), str(reranker_folder))
    engine = EngineProcess(load, batch_size=8)
    yield engine
    engine.close(60)


@pytest.fixture(scope="module")
def url(engine):
    from ferris_jax.serve import create_app

    with running(create_app(engine)) as (url, _):
        yield url


def test_vectors_and_search_through_the_engine_process_equal_the_models(url, engine, minilm):
    assert engine.pid != os.getpid() and engine.alive
    texts = [t for _, t, _ in FAQ] + ["How do I get my money back?", "a", "word " * 300]
    requests = [texts[: 1 + i % len(texts)] for i in range(12)]  # 1 to 6 texts, together

    def post(batch):
        return httpx.post(f"{url}/v1/embeddings", json={"input": batch}, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(post, requests))
    for batch, reply in zip(requests, replies, strict=True):
        assert reply.status_code == 200, reply.text
        assert float(reply.headers["x-inference-time"]) > 0
        got = [d["embedding"] for d in reply.json()["data"]]
        np.testing.assert_allclose(got, minilm.encode(batch), atol=1e-6, rtol=0)
    reply = httpx.post(f"{url}/v1/search", json={"query": "my money back", "top_k": 2})
    [result] = reply.json()["data"]
    scores = minilm.encode_query(["my money back"]) @ minilm.encode([t for _, t, _ in FAQ]).T
    best = np.argsort(-scores[0])[:2]
    assert [h["id"] for h in result["hits"]] == [FAQ[i][0] for i in best]
    np.testing.assert_allclose([h["score"] for h in result["hits"]], scores[0][best], atol=1e-5)
    assert result["hits"][0]["metadata"] == {"topic": "billing"}
    bad = httpx.post(f"{url}/v1/search", json={"query": "x", "filter": {"topic": {"$nope": 1}}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "filter"
    info = httpx.get(f"{url}/info").json()
    assert info["index"] is True and info["max_input_length"] == minilm.max_seq_length
    metrics = httpx.get(f"{url}/metrics").text
    assert "ferris_jax_texts_total" in metrics and "ferris_jax_batch_texts_bucket" in metrics


def test_rerank_and_reranked_search_in_the_engine_process(url, index, reranker_folder):
    import ferris_jax

    reranker = ferris_jax.load_reranker(reranker_folder)  # the engine loaded its own
    info = httpx.get(f"{url}/info").json()["reranker"]  # the child runs this worktree's code
    assert info["model_id"] == reranker.checkpoint.name
    sentences = sts_sentences()
    query, texts = sentences[30], sentences[31:47]
    body = {"query": query, "texts": texts, "return_text": True}
    ranks = httpx.post(f"{url}/rerank", json=body, timeout=60).json()
    expected = reranker.rank(query, texts, return_documents=True)
    assert [(r["index"], r["text"]) for r in ranks] == [
        (e["corpus_id"], e["text"]) for e in expected
    ]
    np.testing.assert_allclose(
        [r["score"] for r in ranks], [e["score"] for e in expected], atol=1e-6, rtol=0
    )
    body = {"query": "money back", "top_k": 2, "mode": "hybrid", "rerank": True, "candidates": 3}
    [result] = httpx.post(f"{url}/v1/search", json=body, timeout=60).json()["data"]
    hits = index.search("money back", top_k=2, mode="hybrid", rerank=reranker, candidates=3)
    assert [h["id"] for h in result["hits"]] == [h.id for h in hits]
    np.testing.assert_allclose(
        [h["score"] for h in result["hits"]], [h.score for h in hits], atol=1e-6, rtol=0
    )


def test_the_models_loading_error_is_raised_in_the_parent(tmp_path):
    from ferris_jax.serve.engine import EngineProcess

    missing = str(tmp_path / "no-such-model")
    with pytest.raises(OSError, match="no-such-model"):
        EngineProcess(functools.partial(load_for_serving, missing))


def test_a_dead_engine_process_fails_requests_cleanly(minilm):
    from ferris_jax.serve import create_app
    from ferris_jax.serve.engine import EngineProcess

    engine = EngineProcess(functools.partial(load_for_serving, MINILM), precompile=False)
    with running(create_app(engine)) as (url, _):
        assert httpx.post(f"{url}/v1/embeddings", json={"input": "hello"}).status_code == 200
        none = httpx.post(f"{url}/rerank", json={"query": "q", "texts": ["a"]})
        assert none.status_code == 404 and "--reranker" in none.json()["error"]  # TEI's shape
        os.kill(engine.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while engine.alive:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503
        refused = httpx.post(f"{url}/v1/embeddings", json={"input": "hello"})
        assert refused.status_code == 503 and "Traceback" not in refused.text
        assert refused.json()["error"]["code"] == "dead"
        assert "restart" in refused.json()["error"]["message"]
        search = httpx.post(f"{url}/v1/search", json={"query": "x"})
        assert search.status_code == 404  # this engine has no index
    engine.close(10)
