"""A server on a free loopback port, in a thread of the test process; an engine's loader."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app: Any) -> Iterator[tuple[str, Any]]:
    """Serve `app` with uvicorn until the block ends; yields (base url, uvicorn.Server).
    Setting `server.should_exit` is what SIGTERM does (uvicorn installs no signal handlers
    outside the main thread)."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(30)


def load_for_serving(
    model: str, index_dir: str | None = None, reranker: str | None = None
) -> tuple[Any, Any, Any]:
    """An engine process's loader (module level, so that it pickles): the model, the index
    saved in `index_dir` and the cross-encoder `reranker` (a folder), each if given."""
    import ferris_jax
    from ferris_jax.retrieval import Index

    encoder = ferris_jax.load(model)
    index = Index.load(index_dir, encoder) if index_dir else None
    return encoder, index, (ferris_jax.load_reranker(reranker) if reranker else None)
