"""The ASGI app (Starlette): routes translate each API's shapes into one engine call and back.

    POST /v1/embeddings  OpenAI            POST /embed   text-embeddings-inference
    POST /v1/search      the loaded Index  POST /rerank  TEI's, with the served reranker
    GET  /v1/models      OpenAI            GET  /info    TEI's model description
    GET  /health, /metrics (Prometheus text)

Every failure is a JSON body (OpenAI's error object; TEI's on /embed and /rerank) with the
field at fault,
never a traceback. Work that grows with a request (decoding token ids, rendering large
responses, searching) runs in a thread, so no request holds up the event loop. Responses
carry text-embeddings-inference's timing headers in milliseconds: `x-total-time` (in the
server), and on the embedding routes `x-queue-time`, `x-inference-time` (taken from the queue
until the vectors were on the host) and `x-compute-tokens`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio.to_thread
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ferris_jax._version import __version__
from ferris_jax.encoder import Encoder
from ferris_jax.serve import responses, schemas
from ferris_jax.serve.batcher import Closed, Embedded, QueueFull
from ferris_jax.serve.engine import Engine, EngineDied, LocalEngine, Reranked
from ferris_jax.serve.errors import ApiError, bad_request
from ferris_jax.serve.metrics import Metrics
from ferris_jax.serve.schemas import Limits

log = logging.getLogger("ferris_jax.serve")

# Responses of more vectors than this are rendered on a thread, off the event loop.
RENDER_INLINE = 64

Handler = Callable[[Request], Awaitable[Response]]


class Service:
    """What the routes share: the engine (the model, batched, and the index), limits and
    metrics."""

    def __init__(
        self,
        engine: Engine,
        *,
        limits: Limits | None = None,
        api_key: str | None = None,
        model_name: str | None = None,
    ):
        self.engine = engine
        self.model = engine.model
        self.limits = limits or Limits()
        self.api_key = api_key
        self.model_name = model_name or self.model.name
        # Names a request's `model` may give: ours, and the hub id's last part.
        self.model_names = {self.model_name, self.model_name.rsplit("/", 1)[-1]}
        self.metrics = Metrics(lambda: self.engine.depth)
        self.engine.on_job = self.metrics.job
        self.dimension = self.model.dimension

    # ------------------------------------------------------------ shared steps
    async def body(self, request: Request) -> dict[str, Any]:
        """The JSON object of the body, read up to `max_body_bytes`."""
        limit = self.limits.max_body_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise ApiError(413, f"the body has {length} bytes, more than {limit}", code="too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the body has more than {limit} bytes", code="too_large")
            chunks.append(chunk)
        data = b"".join(chunks)
        if size > 65536:
            return await anyio.to_thread.run_sync(schemas.decode_json, data)
        return schemas.decode_json(data)

    def _closed(self) -> ApiError:
        if not self.engine.alive:
            return ApiError(503, "the engine process has exited; restart the server", code="dead")
        return ApiError(503, "the server is shutting down", code="shutting_down", retry_after=5)

    def check_model(self, model: str | None) -> None:
        if model is not None and model not in self.model_names:
            raise ApiError(
                404,
                f"model: {model!r} is not served here; this server serves {self.model_name!r}",
                param="model",
                code="model_not_found",
            )

    def prompt(self, role: str | None, prompt_name: str | None) -> str:
        """The prompt `encode` would prepend (`Encoder.prompt_for`)."""
        try:
            return self.model.prompt_for(role, prompt_name)  # type: ignore[arg-type]
        except ValueError as e:
            raise ApiError(400, str(e), param="prompt_name", code="unknown_prompt") from None

    async def embed(self, texts: list[str], prompt: str) -> Embedded:
        """The raw vectors of `texts`, through the engine, within the request timeout."""
        try:
            future = self.engine.submit(texts, prompt)
            return await asyncio.wait_for(asyncio.wrap_future(future), self.limits.timeout)
        except QueueFull:
            raise ApiError(
                429,
                f"the server is busy: {self.limits.queue_size} requests are waiting; retry later",
                code="queue_full",
                retry_after=1,
            ) from None
        except Closed:
            raise self._closed() from None
        except asyncio.TimeoutError:
            raise ApiError(
                504,
                f"the request took longer than this server's {self.limits.timeout:g} s timeout",
                code="timeout",
            ) from None
        except Exception as e:  # the job failed: this request's job only
            raise ApiError(
                500, f"embedding failed: {type(e).__name__}: {e}", code="embedding_failed"
            ) from e

    def decode_ids(self, token_ids: list[list[int]]) -> list[str]:
        """Token ids of the model's own vocabulary, as text (re-tokenized by the pipeline)."""
        tokenizer = self.model.tokenizer
        size = tokenizer.get_vocab_size()
        for i, ids in enumerate(token_ids):
            bad = next((x for x in ids if not 0 <= x < size), None)
            if bad is not None:
                raise bad_request(
                    f"input[{i}]",
                    f"has token id {bad}, outside this model's vocabulary 0..{size - 1}",
                )
        return tokenizer.decode_batch(token_ids, skip_special_tokens=True)

    # ------------------------------------------------------------ routes
    async def openai_embeddings(self, request: Request) -> Response:
        req = schemas.embeddings_request(await self.body(request), self.limits, self.dimension)
        self.check_model(req.model)
        prompt = self.prompt(req.input_type, req.prompt_name)
        texts = req.texts
        if texts is None:
            texts = await anyio.to_thread.run_sync(self.decode_ids, req.token_ids)
        result = await self.embed(texts, prompt)
        vectors = responses.finish(
            result.vectors,
            dimensions=req.dimensions,
            normalize=False,
            model_normalizes=self.model.normalizes,
        )
        args = (vectors, int(result.tokens.sum()), self.model_name, req.encoding_format)
        return await _render(responses.openai_embeddings, args, len(texts), result)

    async def tei_embed(self, request: Request) -> Response:
        req = schemas.embed_request(await self.body(request), self.limits, self.dimension)
        result = await self.embed(req.texts, self.prompt(None, req.prompt_name))
        if not req.truncate and result.truncated.any():
            i = int(np.argmax(result.truncated))
            raise ApiError(
                413,
                f"inputs[{i}] has more than this model's {self.model.max_seq_length} tokens; "
                'pass "truncate": true to cut it',
                param=f"inputs[{i}]",
                code="too_long",
            )
        vectors = responses.finish(
            result.vectors,
            dimensions=req.dimensions,
            normalize=req.normalize,
            model_normalizes=self.model.normalizes,
        )
        return await _render(responses.tei_embeddings, (vectors,), len(req.texts), result)

    async def search(self, request: Request) -> Response:
        if self.model.query_prompt is None:
            raise ApiError(
                404, "this server has no index: start it with --index DIR", code="no_index"
            )
        req = schemas.search_request(await self.body(request), self.limits)
        if req.rerank and self.model.reranker is None:
            raise ApiError(
                400,
                "rerank: this server has no reranker: start it with --reranker MODEL",
                param="rerank",
                code="no_reranker",
            )
        if (req.mode != "dense" or req.rerank) and not self.model.index_texts:
            field = "rerank" if req.mode == "dense" else "mode"
            raise bad_request(
                field,
                "needs the index's texts, and this index keeps none (built with store_text=False)",
            )
        if req.filter is not None:
            from ferris_jax.retrieval.filters import to_sql

            try:
                to_sql(req.filter)
            except (ValueError, TypeError) as e:
                raise ApiError(400, f"filter: {e}", param="filter", code="invalid_filter") from None
        options: dict[str, Any] = {"by_document": req.by_document, "rescore": req.rescore}
        if req.mode == "dense" and not req.rerank:
            # Dense search of vectors embedded by the batcher, with the embedding requests.
            result = await self.embed(req.queries, self.model.query_prompt)
            queries: Any = result.vectors
            tokens = int(result.tokens.sum())
        else:  # lexical search and reranking need the query texts: the index embeds them
            options.update(mode=req.mode, weights=req.weights, candidates=req.candidates)
            options["rerank"] = req.rerank
            queries = req.queries
            tokens = 0 if req.mode == "lexical" else self.count_tokens(req.queries)

        def run() -> list[Any]:
            return self.engine.search(queries, req.top_k, req.filter, **options)

        try:
            hits = await anyio.to_thread.run_sync(run)
        except ValueError as e:
            raise ApiError(400, f"filter: {e}", param="filter", code="invalid_filter") from None
        except Closed:
            raise self._closed() from None
        except EngineDied as e:
            raise ApiError(500, f"search failed: {e}", code="search_failed") from None
        body = responses.search_results(hits, tokens, self.model_name)
        return Response(body, media_type="application/json")

    def count_tokens(self, queries: list[str]) -> int:
        """Tokens of the query texts with the query prompt, as the model embeds them."""
        prompted = [self.model.query_prompt + q for q in queries]
        lengths = (len(e.ids) for e in self.model.tokenizer.encode_batch(prompted))
        return sum(min(n, self.model.max_seq_length) for n in lengths)

    async def rerank(self, request: Request) -> Response:
        if self.model.reranker is None:
            raise ApiError(
                404,
                "this server has no reranker: start it with --reranker MODEL",
                code="no_reranker",
            )
        req = schemas.rerank_request(await self.body(request), self.limits)

        def run() -> Reranked:
            return self.engine.rerank(
                req.query, req.texts,
                raw_scores=req.raw_scores, return_text=req.return_text, truncate=req.truncate,
            )  # fmt: skip

        try:
            result = await anyio.to_thread.run_sync(run)
        except Closed:
            raise self._closed() from None
        except EngineDied as e:
            raise ApiError(500, f"reranking failed: {e}", code="rerank_failed") from None
        if result.ranked is None:
            i = result.too_long
            raise ApiError(
                413,
                f"texts[{i}] with the query has more than the reranker's "
                f'{self.model.reranker_max_length} tokens; pass "truncate": true to cut it',
                param=f"texts[{i}]",
                code="too_long",
            )
        ranks = [
            {
                "index": r["corpus_id"],
                "score": r["score"],
                **({"text": r["text"]} if "text" in r else {}),
            }
            for r in result.ranked
        ]
        return JSONResponse(ranks)

    async def models(self, request: Request) -> Response:
        model = {"id": self.model_name, "object": "model", "created": 0, "owned_by": "ferris-jax"}
        return JSONResponse({"object": "list", "data": [model]})

    async def info(self, request: Request) -> Response:
        return JSONResponse(
            {
                "model_id": self.model_name,
                "model_dtype": self.model.dtype,
                "model_type": {"embedding": {"pooling": self.model.pooling}},
                "max_concurrent_requests": self.limits.queue_size,
                "max_input_length": self.model.max_seq_length,
                "max_client_batch_size": self.limits.max_inputs,
                "auto_truncate": False,
                "version": __version__,
                "embedding_dimension": self.dimension,
                "prompts": dict(self.model.prompts),
                "index": self.model.query_prompt is not None,
                "reranker": None
                if self.model.reranker is None
                else {
                    "model_id": self.model.reranker,
                    "max_input_length": self.model.reranker_max_length,
                },
            }
        )

    async def health(self, request: Request) -> Response:
        if not self.engine.alive:
            return JSONResponse({"status": "the engine process has exited"}, 503)
        return JSONResponse({"status": "ok"})

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    # ------------------------------------------------------------ the wrapper every route has
    def endpoint(
        self, name: str, handler: Handler, *, tei: bool = False, auth: bool = True
    ) -> Handler:
        """`handler` with the API key check, error bodies and metrics."""

        async def serve(request: Request) -> Response:
            start = time.perf_counter()
            self.metrics.in_flight.inc()
            try:
                if auth:
                    self.authorize(request)
                response = await handler(request)
            except ApiError as e:
                body = e.tei_body() if tei else e.openai_body()
                response = JSONResponse(body, e.status, headers=e.headers())
            except Exception:
                log.exception("%s failed", name)
                e = ApiError(500, "internal error (the server log has the details)")
                response = JSONResponse(e.tei_body() if tei else e.openai_body(), 500)
            finally:
                self.metrics.in_flight.dec()
            seconds = time.perf_counter() - start
            response.headers["x-total-time"] = f"{seconds * 1e3:.3f}"
            self.metrics.requests.labels(name, str(response.status_code)).inc()
            self.metrics.latency.labels(name).observe(seconds)
            return response

        return serve

    def authorize(self, request: Request) -> None:
        """The bearer token must equal the API key (compared in constant time)."""
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        ):
            raise ApiError(
                401,
                "a valid API key is required: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )


async def _render(
    render: Callable[..., bytes], args: tuple[Any, ...], n: int, result: Embedded
) -> Response:
    body = await anyio.to_thread.run_sync(render, *args) if n > RENDER_INLINE else render(*args)
    headers = {  # as text-embeddings-inference names them (milliseconds)
        "x-queue-time": f"{result.queue_seconds * 1e3:.3f}",
        "x-inference-time": f"{result.inference_seconds * 1e3:.3f}",
        "x-compute-tokens": str(int(result.tokens.sum())),
    }
    return Response(body, media_type="application/json", headers=headers)


def create_app(
    model: Encoder | Engine,
    *,
    index: Any = None,
    reranker: Any = None,
    limits: Limits | None = None,
    batch_size: int = 32,
    **options: Any,
) -> Starlette:
    """The server's ASGI app for a loaded encoder, or for an engine (an `EngineProcess`).

    Args:
        model: the model (`ferris_jax.load(...)`), run by a `LocalEngine` of this process's
            threads; or an `Engine` that runs it (and its index) elsewhere.
        index: a loaded `Index` for /v1/search (with an encoder only).
        reranker: a loaded `Reranker` (`ferris_jax.load_reranker`) for /rerank and
            /v1/search's `rerank` (with an encoder only; an engine loads its own).
        limits: `Limits` (their queue size is the batcher's made here for an encoder; an
            engine has its own).
        batch_size: rows per batch, as `encode(batch_size=...)` (with an encoder only).
        **options: `Service`'s: api_key, model_name (the name clients send as `model`).

    `app.state.service` holds the `Service`; leaving the app's lifespan (server shutdown)
    finishes the queued requests and stops the engine.
    """
    limits = limits or Limits()
    if isinstance(model, Encoder):
        engine: Engine = LocalEngine(
            model, index, reranker, batch_size=batch_size, queue_size=limits.queue_size
        )
    elif index is not None or reranker is not None:
        raise ValueError(
            "an engine serves its own index and reranker: pass index= and reranker= with an "
            "encoder only"
        )
    else:
        engine = model
    service = Service(engine, limits=limits, **options)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await anyio.to_thread.run_sync(service.engine.close)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = (
            f"{request.method} {request.url.path}: {exc.detail}"
            if isinstance(exc, HTTPException)
            else "internal error"
        )
        e = ApiError(status, message, code="not_found" if status == 404 else None)
        return JSONResponse(e.openai_body(), status)

    s = service
    routes = [
        Route("/v1/embeddings", s.endpoint("embeddings", s.openai_embeddings), methods=["POST"]),
        Route("/embed", s.endpoint("embed", s.tei_embed, tei=True), methods=["POST"]),
        Route("/v1/search", s.endpoint("search", s.search), methods=["POST"]),
        Route("/rerank", s.endpoint("rerank", s.rerank, tei=True), methods=["POST"]),
        Route("/v1/models", s.endpoint("models", s.models), methods=["GET"]),
        Route("/info", s.endpoint("info", s.info), methods=["GET"]),
        Route("/health", s.endpoint("health", s.health, auth=False), methods=["GET"]),
        Route("/metrics", s.endpoint("metrics", s.prometheus, auth=False), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
    app.state.service = service
    return app
