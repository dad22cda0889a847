"""Serving: `ferris-jax serve`, an HTTP server of embeddings, search and reranking that OpenAI
and text-embeddings-inference clients speak to, with dynamic batching onto the device.

    POST /v1/embeddings (OpenAI), /embed and /rerank (text-embeddings-inference; /rerank with
    a reranker), /v1/search (with an index: dense, lexical or hybrid, optionally reranked);
    GET /v1/models, /info, /health, /metrics

    schemas   request bodies checked, limits          errors     the error bodies
    batcher   the threads that prepare and dispatch    metrics    Prometheus metrics
    engine    where the models run: these threads, or a process of its own (the default)
    responses response bodies                          app        the Starlette app
    server    uvicorn, start-up and shutdown

Needs the `serve` extra (`pip install "ferris-jax[serve]"`): Starlette, uvicorn and
prometheus_client. Modules load lazily, so importing this package costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_LAZY = {
    "create_app": "ferris_jax.serve.app",
    "Service": "ferris_jax.serve.app",
    "Batcher": "ferris_jax.serve.batcher",
    "EngineProcess": "ferris_jax.serve.engine",
    "LocalEngine": "ferris_jax.serve.engine",
    "Limits": "ferris_jax.serve.schemas",
    "ApiError": "ferris_jax.serve.errors",
    "serve": "ferris_jax.serve.server",
}

if TYPE_CHECKING:
    from ferris_jax.serve.app import Service, create_app
    from ferris_jax.serve.batcher import Batcher
    from ferris_jax.serve.engine import EngineProcess, LocalEngine
    from ferris_jax.serve.errors import ApiError
    from ferris_jax.serve.schemas import Limits
    from ferris_jax.serve.server import serve


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ferris_jax.serve' has no attribute {name!r}")


__all__ = [
    "ApiError",
    "Batcher",
    "EngineProcess",
    "Limits",
    "LocalEngine",
    "Service",
    "create_app",
    "serve",
]
