"""Dynamic batching: one worker thread owns the device and runs what requests left waiting.

Requests put their (prompted) texts in a bounded queue and get a `Future`. The worker takes
everything waiting, up to `max_texts`, and runs it as ONE job of the public pipeline
(`Encoder.embed_batches`: tokenized off the event loop, sorted by length, planned by the token
budget of `Encoder.bucket_policy`, the same compiled programs as `encode`). Each request's
future resolves as soon as its last text's batch is on the host, while later batches still
run. When a job fails, its unfinished requests run again one by one, so only the request at
fault fails; the worker goes on with the next job.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from ferris_jax.encoder import Encoder
from ferris_jax.pipeline import MAX_IN_FLIGHT, EmbeddedBatch

log = logging.getLogger("ferris_jax.serve")

# Texts per pipeline job at most: enough for full batches of every length bucket, few enough
# that a request arriving mid-job waits for a short job only.
MAX_JOB_TEXTS = 1024


class QueueFull(Exception):
    """The queue holds `queue_size` requests already."""


class Closed(Exception):
    """The batcher is shutting down and takes no new requests."""


@dataclasses.dataclass(frozen=True)
class Embedded:
    """A request's result: raw model vectors `[n, E]` and per text tokens (special tokens
    included) and whether it was cut at max_seq_length."""

    vectors: np.ndarray
    tokens: np.ndarray
    truncated: np.ndarray


@dataclasses.dataclass
class _Request:
    texts: list[str]  # prompt not yet prepended
    prompt: str
    future: Future


@dataclasses.dataclass(frozen=True)
class JobStats:
    """What one pipeline job did (for metrics): requests, texts, tokens and seconds."""

    requests: int
    texts: int
    tokens: int
    seconds: float
    failed: bool


class Batcher:
    """Batches concurrent requests onto one encoder.

    Args:
        encoder: the loaded model; only this batcher's worker runs it.
        batch_size: rows per batch, as `encode(batch_size=...)`.
        queue_size: requests waiting at most (`submit` raises `QueueFull` past it).
        max_texts: texts per pipeline job at most.
        on_job: called on the worker with each job's `JobStats`.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        batch_size: int = 32,
        queue_size: int = 512,
        max_texts: int = MAX_JOB_TEXTS,
        on_job: Callable[[JobStats], Any] | None = None,
    ):
        self.encoder = encoder
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.max_texts = max_texts
        self.on_job = on_job
        self._waiting: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="ferris-serve-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting for the worker."""
        return len(self._waiting)

    def submit(self, texts: list[str], prompt: str = "") -> Future:
        """Queue `texts` (with `prompt` prepended to each); the future gets an `Embedded`.

        Raises:
            QueueFull: `queue_size` requests are waiting already.
            Closed: `close()` was called.
        """
        request = _Request(list(texts), prompt, Future())
        with self._cond:
            if self._closed:
                raise Closed
            if len(self._waiting) >= self.queue_size:
                raise QueueFull
            self._waiting.append(request)
            self._cond.notify()
        return request.future

    def close(self, timeout: float | None = None) -> None:
        """Take no new requests, finish those queued, stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    # ------------------------------------------------------------ the worker
    def _take(self) -> list[_Request] | None:
        """Requests waiting now, up to `max_texts` texts (at least one request); None once
        closed and drained. Requests cancelled while waiting (timed out) are dropped."""
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if not self._waiting:
                return None
            taken: list[_Request] = []
            count = 0
            while self._waiting and (
                not taken or count + len(self._waiting[0].texts) <= self.max_texts
            ):
                request = self._waiting.popleft()
                if request.future.set_running_or_notify_cancel():
                    taken.append(request)
                    count += len(request.texts)
            return taken

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            groups: dict[str, list[_Request]] = {}
            for request in taken:  # one job per prompt: the prompt's length is static
                groups.setdefault(request.prompt, []).append(request)
            for prompt, requests in groups.items():
                self._job(prompt, requests)

    def _job(self, prompt: str, requests: list[_Request]) -> None:
        start = time.perf_counter()
        texts = [t for r in requests for t in r.texts]
        out = _JobOutput(requests, self.encoder.embedding_dimension)
        tokens = 0
        failed = False
        try:
            pending: collections.deque[EmbeddedBatch] = collections.deque()
            batches = self.encoder.embed_batches(texts, batch_size=self.batch_size, prompt=prompt)
            for batch in batches:
                pending.append(batch)  # hand results on while later batches are dispatched
                if len(pending) > MAX_IN_FLIGHT:
                    tokens += out.deliver(pending.popleft())
            while pending:
                tokens += out.deliver(pending.popleft())
        except Exception as e:
            failed = True
            log.exception("an embedding job of %d texts failed", len(texts))
            unfinished = [r for r in requests if not r.future.done()]
            if len(requests) == 1:
                for r in unfinished:
                    r.future.set_exception(e)
            else:  # each request again alone, so that only the one at fault fails
                for r in unfinished:
                    self._job(prompt, [r])
        if self.on_job is not None:
            seconds = time.perf_counter() - start
            self.on_job(JobStats(len(requests), len(texts), tokens, seconds, failed))


class _JobOutput:
    """A job's results in job order (request after request); each request gets its rows, as
    views, once its last text's batch is in."""

    def __init__(self, requests: list[_Request], dimension: int):
        self.requests = requests
        sizes = np.array([len(r.texts) for r in requests])
        self.owner = np.repeat(np.arange(len(requests)), sizes)  # text -> its request
        self.first = np.concatenate([[0], np.cumsum(sizes)])  # request -> its first text
        self.remaining = sizes.copy()
        self.vectors = np.empty((len(self.owner), dimension), np.float32)
        self.tokens = np.zeros(len(self.owner), np.int64)
        self.truncated = np.zeros(len(self.owner), bool)

    def deliver(self, batch: EmbeddedBatch) -> int:
        """Copy a batch's rows in; resolve the requests now complete. Returns the batch's
        tokens."""
        self.vectors[batch.indices] = batch.numpy()
        self.tokens[batch.indices] = batch.lengths
        self.truncated[batch.indices] = batch.truncated
        touched = np.bincount(self.owner[batch.indices], minlength=len(self.requests))
        self.remaining -= touched
        for k in np.flatnonzero((self.remaining == 0) & (touched > 0)):
            rows = slice(self.first[k], self.first[k + 1])
            result = Embedded(self.vectors[rows], self.tokens[rows], self.truncated[rows])
            self.requests[k].future.set_result(result)
        return int(batch.lengths.sum())
