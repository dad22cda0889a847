"""`ferris-jax serve` on the real all-MiniLM-L6-v2 (and a tiny random cross-encoder): OpenAI's own
client and plain HTTP against one server on a loopback port; served vectors equal `encode`'s,
/rerank equals `Reranker.rank`, hybrid and reranked search equal `Index.search`; every
malformed request gets a JSON error naming the field. Limits, failures and shutdown:
test_serve_limits.py."""

from __future__ import annotations

import base64

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
from helpers.checkpoints import make_bert_cross_encoder_checkpoint  # noqa: E402
from helpers.data import sts_sentences  # noqa: E402
from helpers.serving import running  # noqa: E402

pytestmark = pytest.mark.slow

KEY = "test-key"
TEXTS = [
    "A man is playing a guitar.",
    "The new movie is awesome, I loved every minute of it and would watch it again",
    "ok",
    "Résumé: naïve café owners in Zürich open late on Sundays.",
]
FAQ = [
    ("reset", "To reset your password, open Settings and choose Security.", {"topic": "account"}),
    ("billing", "Invoices are sent on the first day of each month.", {"topic": "billing"}),
    ("refund", "Refunds take five business days to reach your card.", {"topic": "billing"}),
    ("delete", "Deleting your account removes every file after thirty days.", {"topic": "account"}),
]


@pytest.fixture(scope="module")
def index(minilm):
    from ferris_jax.retrieval import Index

    index = Index(minilm)
    index.add([t for _, t, _ in FAQ], ids=[i for i, _, _ in FAQ], metadata=[m for *_, m in FAQ])
    return index


@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    import ferris_jax

    folder = make_bert_cross_encoder_checkpoint(tmp_path_factory.mktemp("ce") / "ce")
    return ferris_jax.load_reranker(folder)


@pytest.fixture(scope="module")
def server(minilm, index, reranker):
    from ferris_jax.serve import Limits, create_app

    limits = Limits(max_inputs=64, max_chars=20_000)
    app = create_app(
        minilm, index=index, reranker=reranker, limits=limits, api_key=KEY, batch_size=16
    )
    with running(app) as (url, _):
        yield url


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(
        base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    ) as client:
        yield client


def close(a, b):
    np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=0, atol=1e-6)


def test_the_openai_client_gets_encode_vectors(server, minilm):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    reply = client.embeddings.create(input=TEXTS, model="all-MiniLM-L6-v2")  # base64 by default
    close([d.embedding for d in reply.data], minilm.encode(TEXTS))
    assert [d.index for d in reply.data] == list(range(len(TEXTS)))
    assert reply.usage.prompt_tokens == int(minilm.tokenize(TEXTS).attention_mask.sum())
    short = client.embeddings.create(
        input="ok", model="all-MiniLM-L6-v2", dimensions=64, encoding_format="float"
    )
    close([short.data[0].embedding], minilm.encode(["ok"], truncate_dim=64))
    assert [m.id for m in client.models.list().data] == [minilm.checkpoint.name]


def test_plain_http_embeddings_forms(http, minilm):
    one = http.post("/v1/embeddings", json={"input": TEXTS[1], "model": "all-MiniLM-L6-v2"})
    assert one.status_code == 200, one.text
    assert one.json()["object"] == "list" and one.json()["model"] == minilm.checkpoint.name
    close([one.json()["data"][0]["embedding"]], minilm.encode([TEXTS[1]]))
    packed = http.post("/v1/embeddings", json={"input": TEXTS, "encoding_format": "base64"})
    rows = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in packed.json()["data"]]
    close(rows, minilm.encode(TEXTS))
    # Token ids of the model's own vocabulary: one list, or a list of lists.
    ids = minilm.tokenizer.tokenizer.encode("hello world", add_special_tokens=False).ids
    for form in (ids, [ids, ids]):
        reply = http.post("/v1/embeddings", json={"input": form})
        assert reply.status_code == 200, reply.text
        close([d["embedding"] for d in reply.json()["data"]][:1], minilm.encode(["hello world"]))
    # input_type picks the model's query/document prompt (MiniLM has none: encode's vectors).
    query = http.post("/v1/embeddings", json={"input": TEXTS[:2], "input_type": "query"})
    close([d["embedding"] for d in query.json()["data"]], minilm.encode_query(TEXTS[:2]))


def test_tei_embed(http, minilm):
    reply = http.post("/embed", json={"inputs": TEXTS[0]})
    assert reply.status_code == 200
    close(reply.json(), minilm.encode([TEXTS[0]], normalize_embeddings=True))
    reply = http.post("/embed", json={"inputs": TEXTS, "normalize": False, "dimensions": 32})
    close(reply.json(), minilm.encode(TEXTS, truncate_dim=32))
    long_text = "word " * 600
    refused = http.post("/embed", json={"inputs": ["fine", long_text]})
    assert refused.status_code == 413
    assert set(refused.json()) == {"error", "error_type"}
    assert refused.json()["error_type"] == "Validation"
    assert "inputs[1]" in refused.json()["error"] and "truncate" in refused.json()["error"]
    cut = http.post("/embed", json={"inputs": [long_text], "truncate": True})
    close(cut.json(), minilm.encode([long_text]))
    assert http.get("/info").json()["max_input_length"] == minilm.max_seq_length


def test_timing_headers_as_text_embeddings_inference_sends_them(http):
    reply = http.post("/v1/embeddings", json={"input": TEXTS})
    total, queue, inference = (
        float(reply.headers[f"x-{name}-time"]) for name in ("total", "queue", "inference")
    )
    assert queue >= 0 and inference > 0 and queue + inference <= total
    assert int(reply.headers["x-compute-tokens"]) == reply.json()["usage"]["prompt_tokens"]
    assert float(http.post("/embed", json={"inputs": "x"}).headers["x-inference-time"]) > 0
    assert float(http.get("/health").headers["x-total-time"]) >= 0


def test_search(http, index):
    body = {"query": "how do I change my password", "top_k": 2, "filter": {"topic": "account"}}
    reply = http.post("/v1/search", json=body)
    assert reply.status_code == 200, reply.text
    [result] = reply.json()["data"]
    expected = index.search(body["query"], top_k=2, filter=body["filter"])
    assert [h["id"] for h in result["hits"]] == [h.id for h in expected] == ["reset", "delete"]
    close([[h["score"] for h in result["hits"]]], [[h.score for h in expected]])
    assert result["hits"][0]["text"] == FAQ[0][1]
    assert result["hits"][0]["metadata"] == {"topic": "account"}
    many = http.post("/v1/search", json={"query": ["refund", "invoice"], "by_document": True})
    assert [r["index"] for r in many.json()["data"]] == [0, 1]


def test_tei_rerank_equals_rank(http, reranker):
    sentences = sts_sentences()
    query, texts = sentences[0], sentences[1:21]
    expected = reranker.rank(query, texts)
    reply = http.post("/rerank", json={"query": query, "texts": texts})
    assert reply.status_code == 200, reply.text
    ranks = reply.json()
    assert [r["index"] for r in ranks] == [e["corpus_id"] for e in expected]
    close([[r["score"] for r in ranks]], [[e["score"] for e in expected]])
    assert all(set(r) == {"index", "score"} for r in ranks)
    body = {"query": query, "texts": texts, "raw_scores": True, "return_text": True}
    raw = http.post("/rerank", json=body).json()
    logits = reranker.predict([(query, t) for t in texts], activation_fn="identity")
    assert [r["index"] for r in raw] == list(np.argsort(-logits, kind="stable"))
    close([[r["score"] for r in raw]], [logits[[r["index"] for r in raw]]])
    assert [r["text"] for r in raw] == [texts[r["index"]] for r in raw]
    # TEI refuses a pair longer than the model takes unless told to truncate.
    long_text = "word " * 200
    refused = http.post("/rerank", json={"query": query, "texts": ["fine", long_text]})
    assert refused.status_code == 413 and set(refused.json()) == {"error", "error_type"}
    assert "texts[1]" in refused.json()["error"] and "truncate" in refused.json()["error"]
    body = {"query": query, "texts": ["fine", long_text], "truncate": True}
    cut = http.post("/rerank", json=body).json()
    close(
        [sorted(r["score"] for r in cut)],
        [sorted(reranker.predict([(query, "fine"), (query, long_text)]))],
    )
    info = http.get("/info").json()["reranker"]
    assert info == {
        "model_id": reranker.checkpoint.name,
        "max_input_length": reranker.max_seq_length,
    }


def test_hybrid_reranked_search_equals_index_search(http, index, reranker):
    queries = ["how do I change my password", "when is the bill sent"]
    options = {"mode": "hybrid", "weights": [1.0, 0.5], "candidates": 3}
    body = {"query": queries, "top_k": 2, "rerank": True, **options}
    reply = http.post("/v1/search", json=body)
    assert reply.status_code == 200, reply.text
    expected = index.search(queries, top_k=2, rerank=reranker, **options)
    for result, hits in zip(reply.json()["data"], expected, strict=True):
        assert [h["id"] for h in result["hits"]] == [h.id for h in hits]
        close([[h["score"] for h in result["hits"]]], [[h.score for h in hits]])
    assert reply.json()["usage"]["prompt_tokens"] > 0
    lexical = http.post("/v1/search", json={"query": "refunds card", "mode": "lexical"}).json()
    [hits] = lexical["data"]
    assert [h["id"] for h in hits["hits"]] == [
        h.id for h in index.search("refunds card", mode="lexical")
    ]


def test_health_models_and_metrics(server, http):
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}  # no key needed
    text = httpx.get(f"{server}/metrics").text
    for name in (
        "ferris_jax_requests_total",
        "ferris_jax_request_seconds_bucket",
        "ferris_jax_queue_depth",
        "ferris_jax_batch_texts_bucket",
        "ferris_jax_tokens_total",
    ):
        assert name in text
    assert 'endpoint="embeddings",status="200"' in text


BAD = [
    # (path, body, status, param)
    ("/v1/embeddings", b"{not json", 400, None),
    ("/v1/embeddings", b"[1, 2]", 400, None),
    ("/v1/embeddings", {"model": "all-MiniLM-L6-v2"}, 400, "input"),
    ("/v1/embeddings", {"input": 3}, 400, "input"),
    ("/v1/embeddings", {"input": None}, 400, "input"),
    ("/v1/embeddings", {"input": []}, 400, "input"),
    ("/v1/embeddings", {"input": ""}, 400, "input"),
    ("/v1/embeddings", {"input": ["a", ""]}, 400, "input[1]"),
    ("/v1/embeddings", {"input": ["a", 5]}, 400, "input[1]"),
    ("/v1/embeddings", {"input": [[101, 102], "a"]}, 400, "input[1]"),
    ("/v1/embeddings", {"input": [[]]}, 400, "input[0]"),
    ("/v1/embeddings", {"input": [1, 10**9]}, 400, "input[0]"),
    ("/v1/embeddings", {"input": "a", "model": 7}, 400, "model"),
    ("/v1/embeddings", {"input": "a", "model": "text-embedding-3-small"}, 404, "model"),
    ("/v1/embeddings", {"input": "a", "encoding_format": "hex"}, 400, "encoding_format"),
    ("/v1/embeddings", {"input": "a", "dimensions": 0}, 400, "dimensions"),
    ("/v1/embeddings", {"input": "a", "dimensions": 385}, 400, "dimensions"),
    ("/v1/embeddings", {"input": "a", "dimensions": "8"}, 400, "dimensions"),
    ("/v1/embeddings", {"input": "a", "dimensions": True}, 400, "dimensions"),
    ("/v1/embeddings", {"input": "a", "prompt_name": "query"}, 400, "prompt_name"),
    ("/v1/embeddings", {"input": "a", "input_type": "passage"}, 400, "input_type"),
    ("/v1/embeddings", {"input": ["a"] * 65}, 413, "input"),
    ("/v1/embeddings", {"input": ["a" * 20_001]}, 413, "input"),
    ("/embed", {"inputs": "a", "normalize": "yes"}, 400, "normalize"),
    ("/embed", {"inputs": "a", "truncation_direction": "Left"}, 400, "truncation_direction"),
    ("/v1/search", {"query": "a", "top_k": 0}, 400, "top_k"),
    ("/v1/search", {"query": "a", "top_k": 1.5}, 400, "top_k"),
    ("/v1/search", {"query": "a", "filter": []}, 400, "filter"),
    ("/v1/search", {"query": "a", "filter": {"year": {"$bogus": 1}}}, 400, "filter"),
    ("/v1/search", {"query": "a", "filter": {"$or": "x"}}, 400, "filter"),
    ("/v1/search", {"query": []}, 400, "query"),
    ("/v1/search", {"query": "a", "mode": "sparse"}, 400, "mode"),
    ("/v1/search", {"query": "a", "mode": 1}, 400, "mode"),
    ("/v1/search", {"query": "a", "mode": "hybrid", "weights": [1]}, 400, "weights"),
    ("/v1/search", {"query": "a", "mode": "hybrid", "weights": [1, "x"]}, 400, "weights"),
    ("/v1/search", {"query": "a", "mode": "hybrid", "weights": [1, -1]}, 400, "weights"),
    ("/v1/search", {"query": "a", "weights": [1, 1]}, 400, "weights"),
    ("/v1/search", {"query": "a", "candidates": 0}, 400, "candidates"),
    ("/v1/search", {"query": "a", "candidates": 10**6}, 400, "candidates"),
    ("/v1/search", {"query": "a", "rerank": "yes"}, 400, "rerank"),
    ("/rerank", {"texts": ["a"]}, 400, "query"),
    ("/rerank", {"query": 3, "texts": ["a"]}, 400, "query"),
    ("/rerank", {"query": "", "texts": ["a"]}, 400, "query"),
    ("/rerank", {"query": "q"}, 400, "texts"),
    ("/rerank", {"query": "q", "texts": "a"}, 400, "texts"),
    ("/rerank", {"query": "q", "texts": []}, 400, "texts"),
    ("/rerank", {"query": "q", "texts": ["a", ""]}, 400, "texts[1]"),
    ("/rerank", {"query": "q", "texts": ["a", 5]}, 400, "texts[1]"),
    ("/rerank", {"query": "q", "texts": ["a"], "raw_scores": "yes"}, 400, "raw_scores"),
    ("/rerank", {"query": "q", "texts": ["a"], "return_text": 1}, 400, "return_text"),
    (
        "/rerank",
        {"query": "q", "texts": ["a"], "truncation_direction": "Left"},
        400,
        "truncation_direction",
    ),
    ("/rerank", {"query": "q", "texts": ["a"] * 65}, 413, "texts"),
    ("/rerank", {"query": "q" * 1000, "texts": ["a"] * 20}, 413, "texts"),
    ("/rerank", b"{not json", 400, None),
]


@pytest.mark.parametrize(("path", "body", "status", "param"), BAD)
def test_bad_requests_get_a_json_error_naming_the_field(http, path, body, status, param):
    if isinstance(body, bytes):
        reply = http.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        reply = http.post(path, json=body)
    assert reply.status_code == status, reply.text
    assert "Traceback" not in reply.text
    error = reply.json()["error"]
    if path in ("/embed", "/rerank"):  # text-embeddings-inference's shape
        assert set(reply.json()) == {"error", "error_type"}
        assert reply.json()["error_type"] == "Validation" and (param or "") in error
    else:
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] == param and error["message"]
        assert error["type"] == "invalid_request_error"


def test_the_api_key_is_required(server):
    body = {"input": "a"}
    assert httpx.post(f"{server}/v1/embeddings", json=body).status_code == 401
    wrong = httpx.post(
        f"{server}/v1/embeddings", json=body, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    missing = httpx.get(f"{server}/v2/nothing", headers={"Authorization": f"Bearer {KEY}"})
    assert missing.status_code == 404 and missing.json()["error"]["message"]
