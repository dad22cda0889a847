"""`ferris-jax serve`: load the model (and index), compile, and run the app under uvicorn.

uvicorn handles SIGTERM (and SIGINT, where the console script has not taken it): it stops
accepting connections, lets the requests in flight finish (up to `--drain-timeout` seconds),
then leaves the app's lifespan, which runs the requests still queued and stops the batcher; the
process then ends by the signal (uvicorn re-raises it: status 143 in a shell for SIGTERM).
"""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from ferris_jax.encoder import Encoder
from ferris_jax.serve.app import create_app
from ferris_jax.serve.schemas import Limits

log = logging.getLogger("ferris_jax.serve")


def serve(
    encoder: Encoder,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    index: Any = None,
    limits: Limits | None = None,
    api_key: str | None = None,
    batch_size: int = 32,
    model_name: str | None = None,
    precompile: bool = True,
    drain_timeout: float = 30.0,
    log_level: str = "info",
) -> None:
    """Serve `encoder` over HTTP until SIGTERM or SIGINT (blocks; call from the main thread).

    Args:
        encoder: the loaded model.
        host, port: where to listen (loopback by default: nothing outside this machine).
        index: a loaded `Index` for `/v1/search`.
        limits: per-request limits, queue size and timeout (`Limits`).
        api_key: require `Authorization: Bearer <api_key>` on the API routes.
        batch_size: rows per batch, as `encode(batch_size=...)`.
        model_name: the name clients send as `model` (default: the model's).
        precompile: compile the programs of full batches before listening, so the first
            requests don't wait for XLA.
        drain_timeout: seconds in-flight requests get to finish on shutdown.
        log_level: uvicorn's log level.
    """
    if precompile:
        log.warning("compiling the batch shapes of batch size %d ...", batch_size)
        encoder.precompile(batch_size)
    app = create_app(
        encoder,
        index=index,
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
    uvicorn.Server(config).run()
