"""`ferris-jax serve` on the real all-MiniLM-L6-v2: OpenAI's own client and plain HTTP against one
server on a loopback port; served vectors equal `encode`'s; every malformed request gets a JSON
error naming the field. Limits, failures and shutdown: test_serve_limits.py."""

from __future__ import annotations

import base64

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
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
def server(minilm, index):
    from ferris_jax.serve import Limits, create_app

    limits = Limits(max_inputs=64, max_chars=20_000)
    app = create_app(minilm, index=index, limits=limits, api_key=KEY, batch_size=16)
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
    if path == "/embed":  # text-embeddings-inference's shape
        assert reply.json()["error_type"] == "Validation" and param in error
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
