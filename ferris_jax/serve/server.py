"""`ferris-jax serve`: load the model (and index), compile, and run the app under uvicorn.

uvicorn handles SIGTERM (and SIGINT, where the console script has not taken it): it stops
accepting connections, lets the requests in flight finish (up to `--drain-timeout` seconds),
then leaves the app's lifespan, which runs the requests still queued and stops the engine (and
its process); the process then ends by the signal (uvicorn re-raises it: status 143 in a shell
for SIGTERM).
"""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from ferris_jax.encoder import Encoder
from ferris_jax.serve.app import create_app
from ferris_jax.serve.engine import Engine
from ferris_jax.serve.schemas import Limits

log = logging.getLogger("ferris_jax.serve")


def serve(
    model: Encoder | Engine,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    index: Any = None,
    reranker: Any = None,
    limits: Limits | None = None,
    api_key: str | None = None,
    batch_size: int = 32,
    model_name: str | None = None,
    precompile: bool = True,
    drain_timeout: float = 30.0,
    log_level: str = "info",
) -> None:
    """Serve a model over HTTP until SIGTERM or SIGINT (blocks; call from the main thread).

    Args:
        model: the loaded model (run on this process's threads), or an `Engine` that runs it
            (`EngineProcess`: in a process of its own; it loads and compiles by itself).
        host, port: where to listen (loopback by default: nothing outside this machine).
        index: a loaded `Index` for `/v1/search` (with a loaded model; an engine has its own).
        reranker: a loaded `Reranker` for `/rerank` and search's `rerank` (likewise).
        limits: per-request limits, queue size and timeout (`Limits`).
        api_key: require `Authorization: Bearer <api_key>` on the API routes.
        batch_size: rows per batch, as `encode(batch_size=...)`.
        model_name: the name clients send as `model` (default: the model's).
        precompile: compile the programs of full batches of a loaded model before listening,
            so the first requests don't wait for XLA.
        drain_timeout: seconds in-flight requests get to finish on shutdown.
        log_level: uvicorn's log level.
    """
    if precompile and isinstance(model, Encoder):
        log.warning("compiling the batch shapes of batch size %d ...", batch_size)
        model.precompile(batch_size)
    app = create_app(
        model,
        index=index,
        reranker=reranker,
        limits=limits,
        api_key=api_key,
        batch_size=batch_size,
        model_name=model_name,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=drain_timeout,
        lifespan="on",
    )
    try:
        uvicorn.Server(config).run()
    finally:  # also when uvicorn could not start (the port is taken): stop the engine process
        app.state.service.engine.close(drain_timeout)
