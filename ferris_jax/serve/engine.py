"""Where the model runs for the server: the `Engine` interface and its two implementations.

    LocalEngine    the encoder's batcher (and the index and reranker) in this process, on threads
    EngineProcess  a LocalEngine in a child process that owns the device, reached over a pipe

The HTTP side (event loop, JSON, validation, rendering) and the device's host path (tokenizing,
planning, padding, dispatching) are both Python: in one process they take turns on one GIL,
and on a fast GPU the device then waits for the host (BENCHMARKS.md, "Serving"). An
`EngineProcess` gives the device's host path an interpreter of its own, as vLLM's engine core
and text-embeddings-inference's router/backend split do. Requests and results cross the pipe
pickled (a request's texts; its vectors, tokens and timings).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing
import pickle
import queue
import signal
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, Protocol

import numpy as np

from ferris_jax.encoder import Encoder, choose_prompt
from ferris_jax.serve.batcher import Batcher, Closed, JobStats

log = logging.getLogger("ferris_jax.serve")

# What a child process's loader returns: the encoder and the index (or None) it serves, and
# optionally a third item, the reranker (or None).
Loader = Callable[[], "tuple[Encoder, Any] | tuple[Encoder, Any, Any]"]


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """What the HTTP side needs to know about the model, without the model (picklable)."""

    name: str
    dimension: int
    max_seq_length: int
    normalizes: bool  # the model's head L2-normalizes
    dtype: str
    pooling: str
    prompts: Mapping[str, str]
    default_prompt_name: str | None
    tokenizer: Any  # the `tokenizers.Tokenizer` (token ids in requests are decoded with it)
    query_prompt: str | None  # the index's query prompt; None: no index
    index_texts: bool = False  # the index keeps texts (lexical and hybrid search, reranking)
    reranker: str | None = None  # the reranker's name; None: no reranker
    reranker_max_length: int | None = None  # tokens per (query, text) pair

    @staticmethod
    def of(encoder: Encoder, index: Any = None, reranker: Any = None) -> ServedModel:
        return ServedModel(
            name=encoder.checkpoint.name,
            dimension=encoder.embedding_dimension,
            max_seq_length=encoder.max_seq_length,
            normalizes=encoder.checkpoint.head.normalize,
            dtype=str(encoder.checkpoint.dtype),
            pooling="+".join(encoder.checkpoint.head.pooling.modes),
            prompts=dict(encoder.prompts),
            default_prompt_name=encoder.settings.default_prompt_name,
            tokenizer=encoder.tokenizer.tokenizer,
            query_prompt=None if index is None else index.prompts["query"],
            index_texts=index is not None and index.store_text,
            reranker=None if reranker is None else reranker.checkpoint.name,
            reranker_max_length=None if reranker is None else reranker.max_seq_length,
        )

    def prompt_for(self, role: Literal["query", "document"] | None, prompt_name: str | None) -> str:
        """The prompt `encode` would prepend (as `Encoder.prompt_for`)."""
        return choose_prompt(self.prompts, self.default_prompt_name, role, prompt_name)


@dataclasses.dataclass(frozen=True)
class Reranked:
    """A rerank's result: `Reranker.rank`'s dicts, or None when `too_long` (the first text
    whose pair with the query is longer than the reranker takes, refused without truncate)."""

    ranked: list[dict[str, Any]] | None
    too_long: int | None = None


class Engine(Protocol):
    """Runs embedding requests (batched) and index searches for the server."""

    model: ServedModel
    on_job: Callable[[JobStats], Any] | None

    @property
    def depth(self) -> int:
        """Requests waiting for the device."""

    @property
    def alive(self) -> bool:
        """Whether requests can still be served."""

    def submit(self, texts: list[str], prompt: str) -> Future:
        """A future of the `Embedded` result. `QueueFull` or `Closed` is raised here or
        through the future (an engine process learns of them from its child)."""

    def search(self, vectors: np.ndarray, top_k: int, filter: Any, **options: Any) -> list:
        """`Index.search` of query vectors, or of query texts (blocks: call it from a thread).
        `rerank=True` re-scores the hits with the served reranker."""

    def rerank(
        self, query: str, texts: list[str], *, raw_scores: bool, return_text: bool, truncate: bool
    ) -> Reranked:
        """`Reranker.rank` of the texts against the query (blocks: call it from a thread);
        `raw_scores`: the logits, without the activation."""

    def close(self, timeout: float | None = None) -> None:
        """Take no new requests, finish those queued, stop."""


class LocalEngine:
    """The encoder's batcher, the index and the reranker, in this process. The reranker runs
    where the encoder does (in the engine process by default): it needs the device, and
    `Index.search(rerank=...)` calls it beside the index."""

    def __init__(
        self,
        encoder: Encoder,
        index: Any = None,
        reranker: Any = None,
        *,
        batch_size: int,
        queue_size: int,
    ):
        self.model = ServedModel.of(encoder, index, reranker)
        self.index = index
        self.reranker = reranker
        self.batcher = Batcher(encoder, batch_size=batch_size, queue_size=queue_size)

    @property
    def on_job(self) -> Callable[[JobStats], Any] | None:
        return self.batcher.on_job

    @on_job.setter
    def on_job(self, value: Callable[[JobStats], Any] | None) -> None:
        self.batcher.on_job = value

    @property
    def depth(self) -> int:
        return self.batcher.depth

    @property
    def alive(self) -> bool:
        return True

    def submit(self, texts: list[str], prompt: str) -> Future:
        return self.batcher.submit(texts, prompt)

    def search(self, vectors: np.ndarray, top_k: int, filter: Any, **options: Any) -> list:
        if options.pop("rerank", False):
            options["rerank"] = self.reranker
        return self.index.search(vectors, top_k, filter, **options)

    def rerank(
        self, query: str, texts: list[str], *, raw_scores: bool, return_text: bool, truncate: bool
    ) -> Reranked:
        if not truncate:  # TEI refuses what it would cut, unless told to truncate
            pairs = self.reranker.tokenizer.encode_pairs([query] * len(texts), texts)
            if pairs.truncated.any():
                return Reranked(None, int(np.argmax(pairs.truncated)))
        ranked = self.reranker.rank(
            query,
            texts,
            return_documents=return_text,
            activation_fn="identity" if raw_scores else None,
        )
        return Reranked(ranked)

    def close(self, timeout: float | None = None, *, drain: bool = True) -> None:
        self.batcher.close(timeout, drain=drain)


class EngineDied(RuntimeError):
    """The engine process ended while requests were in flight."""


class EngineProcess:
    """A `LocalEngine` in a child process (spawned), which loads the model itself with
    `load` (a picklable callable: the parent never touches the device) and compiles. As with
    any spawned process, a script that starts one needs `if __name__ == "__main__":`.

    Args:
        load: returns `(encoder, index or None)`, or `(encoder, index or None, reranker or
            None)`, in the child.
        batch_size, queue_size: the batcher's.
        precompile: compile the full batch shapes before serving.
        start_timeout: seconds loading and compiling may take.
    """

    def __init__(
        self,
        load: Loader,
        *,
        batch_size: int = 32,
        queue_size: int = 512,
        precompile: bool = True,
        start_timeout: float = 1800.0,
    ):
        self.on_job: Callable[[JobStats], Any] | None = None
        self._depth = 0
        self._futures: dict[int, Future] = {}
        self._ids = itertools.count()
        self._send_lock = threading.Lock()
        self._futures_lock = threading.Lock()
        self._closed = False
        self._dead = False
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        options = {"batch_size": batch_size, "queue_size": queue_size, "precompile": precompile}
        self._process = context.Process(
            target=_engine_main,
            args=(child_conn, load, options),
            name="ferris-serve-engine",
            daemon=True,
        )
        self._process.start()
        child_conn.close()
        if not self._conn.poll(start_timeout):
            self._process.kill()
            raise TimeoutError(f"the engine process did not start within {start_timeout:g} s")
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            self._process.join(5)
            raise EngineDied(
                f"the engine process exited while starting (status {self._process.exitcode})"
            ) from None
        if kind == "failed":
            self._process.join(30)
            raise payload
        self.model: ServedModel = payload
        self._receiver = threading.Thread(
            target=self._receive, name="ferris-serve-engine-results", daemon=True
        )
        self._receiver.start()

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def alive(self) -> bool:
        return not self._dead

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def submit(self, texts: list[str], prompt: str) -> Future:
        return self._call("embed", list(texts), prompt)

    def search(self, vectors: np.ndarray, top_k: int, filter: Any, **options: Any) -> list:
        return self._call("search", vectors, top_k, filter, options).result()

    def rerank(
        self, query: str, texts: list[str], *, raw_scores: bool, return_text: bool, truncate: bool
    ) -> Reranked:
        options = {"raw_scores": raw_scores, "return_text": return_text, "truncate": truncate}
        return self._call("rerank", query, texts, options).result()

    def close(self, timeout: float | None = None) -> None:
        """Let the engine finish what it was sent and exit (killed if it has not after
        `timeout` seconds)."""
        with self._futures_lock:
            first, self._closed = not self._closed, True
        if first:
            self._send(("close",))
        self._process.join(timeout)
        if self._process.is_alive():
            log.error("the engine process did not exit within %g s: killed", timeout)
            self._process.kill()
            self._process.join(5)
        self._receiver.join(timeout)

    # ------------------------------------------------------------ the pipe
    def _call(self, kind: str, *args: Any) -> Future:
        future: Future = Future()
        key = next(self._ids)
        with self._futures_lock:
            if self._dead or self._closed:
                future.set_exception(Closed())
                return future
            self._futures[key] = future
        if not self._send((kind, key, *args)):
            with self._futures_lock:
                mine = self._futures.pop(key, None) is not None
            if mine:  # else the receiver has failed it already
                future.set_exception(Closed())
            return future
        future.add_done_callback(lambda f: self._cancel_if_cancelled(key, f))
        return future

    def _send(self, message: tuple) -> bool:
        try:
            with self._send_lock:
                self._conn.send(message)
            return True
        except (OSError, ValueError):  # the engine is gone
            return False

    def _cancel_if_cancelled(self, key: int, future: Future) -> None:
        """A request that timed out is dropped by the engine if it still waits."""
        if future.cancelled():
            with self._futures_lock:
                self._futures.pop(key, None)
            self._send(("cancel", key))

    def _receive(self) -> None:
        """Results, in whatever order they come; job stats for the metrics."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # a message that does not unpickle: its request times out
                log.exception("a message from the engine process could not be read")
                continue
            kind = message[0]
            if kind == "job":
                self._depth = message[2]
                if self.on_job is not None:
                    self.on_job(message[1])
                continue
            _, key, ok, value, self._depth = message
            with self._futures_lock:
                future = self._futures.pop(key, None)
            # A future the event loop cancels (its timeout) between here and set_result
            # would make set_result raise: claim it first.
            if future is None or not future.set_running_or_notify_cancel():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self._process.join(5)
        with self._futures_lock:
            self._dead = True
            left, self._futures = list(self._futures.values()), {}
        error = EngineDied(
            f"the engine process exited (status {self._process.exitcode}) with "
            f"{len(left)} requests in flight"
        )
        if left and not self._closed:
            log.error("%s", error)
        for future in left:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)


# ---------------------------------------------------------------- the child process
def _engine_main(conn: Any, load: Loader, options: dict[str, Any]) -> None:
    """The engine process: load, compile, then serve the pipe until "close" or the parent
    goes away. Signals are the parent's to handle: it drains, then sends "close"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s ferris-serve-engine: %(message)s"
    )
    try:
        encoder, index, *rest = load()
        if options["precompile"]:
            encoder.precompile(options["batch_size"])
        engine = LocalEngine(
            encoder,
            index,
            rest[0] if rest else None,
            batch_size=options["batch_size"],
            queue_size=options["queue_size"],
        )
    except BaseException as e:  # the parent raises it, as if it had loaded the model itself
        conn.send(("failed", _picklable(e)))
        conn.close()
        return
    outbox: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
    engine.on_job = lambda stats: outbox.put(("job", stats, engine.depth))
    conn.send(("ready", engine.model))
    sender = threading.Thread(target=_send_all, args=(conn, outbox), daemon=True)
    sender.start()
    searches = ThreadPoolExecutor(2, thread_name_prefix="ferris-serve-search")
    requests: dict[int, Future] = {}

    def reply(key: int, future: Future) -> None:
        requests.pop(key, None)
        if future.cancelled():
            return
        error = future.exception()
        value = (True, future.result()) if error is None else (False, _picklable(error))
        outbox.put(("result", key, *value, engine.depth))

    drain = True
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone: no one will read the results
            drain = False
            break
        kind = message[0]
        if kind == "close":
            break
        key = message[1]
        if kind == "embed":
            try:
                future = requests[key] = engine.submit(message[2], message[3])
            except Exception as e:  # QueueFull, Closed
                outbox.put(("result", key, False, e, engine.depth))
                continue
            future.add_done_callback(lambda f, key=key: reply(key, f))
        elif kind == "search":
            vectors, top_k, filter, options_ = message[2:]
            future = searches.submit(engine.search, vectors, top_k, filter, **options_)
            future.add_done_callback(lambda f, key=key: reply(key, f))
        elif kind == "rerank":
            query, texts, options_ = message[2:]
            future = searches.submit(engine.rerank, query, texts, **options_)
            future.add_done_callback(lambda f, key=key: reply(key, f))
        elif kind == "cancel" and (future := requests.get(key)) is not None:
            future.cancel()  # only while it waits in the queue
    engine.close(drain=drain)  # without draining, the device is freed soon for a restart
    searches.shutdown(wait=drain, cancel_futures=not drain)
    outbox.put(None)
    sender.join()
    conn.close()


def _send_all(conn: Any, outbox: queue.SimpleQueue) -> None:
    while (message := outbox.get()) is not None:
        try:
            conn.send(message)
        except (OSError, ValueError):  # the parent is gone
            return
        except Exception as e:  # a result that does not pickle fails its own request only
            if message[0] == "result":
                error = RuntimeError(f"the result could not be sent: {type(e).__name__}: {e}")
                conn.send(("result", message[1], False, error, message[4]))


def _picklable(error: BaseException) -> BaseException:
    """`error` if it survives pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
