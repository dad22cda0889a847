"""The server's limits and failures: a full queue (429 + Retry-After), the request timeout (504),
a failing batch that fails only the request at fault, and shutdown while requests are in flight
(in a thread, and SIGTERM to a real `ferris-jax serve` process)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
from helpers.serving import free_port, running  # noqa: E402

pytestmark = pytest.mark.slow


class Gated:
    """The encoder, except that a job with a text containing WAIT waits for `gate`, and one
    with BOOM fails: a slow and a crashing batch on demand."""

    def __init__(self, encoder):
        self._encoder = encoder
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def prepare(self, texts, *args):
        if any("WAIT" in t for t in texts):
            self.entered.set()
            assert self.gate.wait(60)
        if any("BOOM" in t for t in texts):
            raise RuntimeError("the device caught fire")
        return self._encoder.prepare(texts, *args)


def _app(encoder, **limits):
    from ferris_jax.serve import Limits, create_app
    from ferris_jax.serve.engine import LocalEngine

    limits = Limits(**limits)
    engine = LocalEngine(encoder, batch_size=32, queue_size=limits.queue_size)
    app = create_app(engine, limits=limits)
    return app, app.state.service


def _wait_until(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _post(url, texts):
    return httpx.post(f"{url}/v1/embeddings", json={"input": texts}, timeout=60)


def test_a_full_queue_answers_429_with_retry_after(minilm):
    gated = Gated(minilm)
    app, service = _app(gated, queue_size=1)
    with running(app) as (url, _), concurrent.futures.ThreadPoolExecutor(2) as pool:
        running_one = pool.submit(_post, url, ["WAIT here"])
        assert gated.entered.wait(30)  # the worker is busy with it
        waiting = pool.submit(_post, url, ["second"])
        _wait_until(lambda: service.engine.depth == 1)
        refused = _post(url, ["third"])
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "queue_full"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        gated.gate.set()
        assert running_one.result().status_code == 200
        assert waiting.result().status_code == 200


def test_the_request_timeout(minilm):
    gated = Gated(minilm)
    app, service = _app(gated, timeout=0.3)
    with running(app) as (url, _), concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(_post, url, ["WAIT here"])
        assert gated.entered.wait(30)
        late = _post(url, ["behind the slow one"])
        assert late.status_code == 504 and late.json()["error"]["code"] == "timeout"
        assert service.engine.depth == 1  # still queued, cancelled: the worker will skip it
        gated.gate.set()
        assert slow.result().status_code == 504  # it too ran past the timeout
        assert _post(url, ["after"]).status_code == 200


def test_a_failing_batch_fails_only_the_request_at_fault(minilm):
    gated = Gated(minilm)
    app, service = _app(gated)
    with running(app) as (url, _), concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(_post, url, ["WAIT here"])
        assert gated.entered.wait(30)
        bad = pool.submit(_post, url, ["fine", "BOOM"])
        good = pool.submit(_post, url, ["a good text", "another"])
        _wait_until(lambda: service.engine.depth == 2)  # the next job takes both together
        gated.gate.set()
        assert first.result().status_code == 200
        failed = bad.result()
        assert failed.status_code == 500 and "Traceback" not in failed.text
        assert failed.json()["error"]["code"] == "embedding_failed"
        assert "caught fire" in failed.json()["error"]["message"]
        ok = good.result()
        assert ok.status_code == 200
        vectors = [d["embedding"] for d in ok.json()["data"]]
        np.testing.assert_allclose(vectors, minilm.encode(["a good text", "another"]), atol=1e-6)
        assert _post(url, ["still serving"]).status_code == 200


def test_shutdown_finishes_the_requests_in_flight(minilm):
    gated = Gated(minilm)
    app, service = _app(gated)
    with running(app) as (url, server), concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(_post, url, ["WAIT here", "and here"])
        assert gated.entered.wait(30)
        queued = pool.submit(_post, url, ["queued behind it"])
        _wait_until(lambda: service.engine.depth == 1)
        server.should_exit = True  # what SIGTERM does
        time.sleep(0.2)
        gated.gate.set()
        assert first.result().status_code == 200
        assert len(queued.result().json()["data"]) == 1
    with pytest.raises(httpx.ConnectError):
        _post(url, ["after shutdown"])


def test_sigterm_drains_a_real_server(tiny_st, tmp_path):
    directory, _ = tiny_st
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "ferris_jax", "serve", "-m", str(directory)]
    command += ["--port", str(port), "--no-precompile", "--log-level", "warning"]
    log = open(tmp_path / "server.log", "w+")  # noqa: SIM115
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    try:

        def up():
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                return httpx.get(f"{url}/health").status_code == 200
            except httpx.TransportError:
                return False

        _wait_until(up, 120)
        texts = [f"text number {i} " + "word " * (i % 50) for i in range(1024)]
        assert _post(url, texts[:8]).status_code == 200  # compiled, warm
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            replies = [pool.submit(_post, url, texts) for _ in range(3)]

            def in_flight():
                metrics = httpx.get(f"{url}/metrics").text
                line = next(
                    x for x in metrics.splitlines() if x.startswith("ferris_jax_requests_in_flight")
                )
                # All three, and this scrape: a request not yet read when the signal comes
                # is refused (uvicorn closes idle connections), as under load it may be.
                return float(line.split()[-1]) >= len(replies) + 1

            _wait_until(in_flight)
            process.send_signal(signal.SIGTERM)
            for reply in replies:
                assert reply.result().status_code == 200
                assert len(reply.result().json()["data"]) == len(texts)
        # uvicorn re-raises the signal once drained: the status of a process ended by SIGTERM
        assert process.wait(60) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
