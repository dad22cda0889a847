"""Dynamic batching: requests wait in a bounded queue; two worker threads run them as jobs.

The preparing thread takes everything waiting (up to `max_texts` texts; one job per prompt)
and prepares it through the public pipeline (`Encoder.prepare`: tokenized, sorted by length,
planned by the token budget of `Encoder.bucket_policy`, padded, the same compiled programs as
`encode`). The device thread dispatches prepared jobs back to back and keeps up to
`MAX_IN_FLIGHT` batches queued on the device across jobs, so the device never waits while the
host tokenizes and plans the next job: the requests taken at once (one job per prompt among
them) are prepared ahead, while the device runs what was taken before. Each request's future
resolves as soon as its last text's batch is on the host. When a job fails (preparing it or on
the device), the batches of other jobs still in flight are delivered, then its unfinished
requests run again one by one, so only the request at fault fails; the threads go on with the
next job.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from ferris_jax.encoder import Encoder
from ferris_jax.pipeline import MAX_IN_FLIGHT, EmbeddedBatch, ReadyBatch

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
    included) and whether it was cut at max_seq_length; seconds it waited in the queue and
    from being taken until its vectors were on the host."""

    vectors: np.ndarray
    tokens: np.ndarray
    truncated: np.ndarray
    queue_seconds: float = 0.0
    inference_seconds: float = 0.0


@dataclasses.dataclass
class _Request:
    texts: list[str]  # prompt not yet prepended
    prompt: str
    future: Future
    submitted: float = dataclasses.field(default_factory=time.perf_counter)
    taken: float = 0.0


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
        encoder: the loaded model; only this batcher's threads run it.
        batch_size: rows per batch, as `encode(batch_size=...)`.
        queue_size: requests waiting at most (`submit` raises `QueueFull` past it).
        max_texts: texts per pipeline job at most.
        on_job: called on the device thread with each job's `JobStats` (must not raise).
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
        self._prepared: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._wanted = threading.Event()  # the device thread is ready for the next job
        self._wanted.set()
        # Batches dispatched and not yet delivered, of any job (the device thread's only).
        self._in_flight: collections.deque[tuple[_Job, EmbeddedBatch]] = collections.deque()
        self._threads = [
            threading.Thread(target=self._prepare_loop, name="ferris-serve-prepare", daemon=True),
            threading.Thread(target=self._device_loop, name="ferris-serve-device", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting to be taken into a job."""
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

    def close(self, timeout: float | None = None, *, drain: bool = True) -> None:
        """Take no new requests, finish those queued (or, with `drain=False`, cancel those
        not yet taken into a job), stop the threads."""
        with self._cond:
            self._closed = True
            if not drain:
                for request in self._waiting:
                    request.future.cancel()
                self._waiting.clear()
            self._cond.notify()
        for thread in self._threads:
            thread.join(timeout)

    # ------------------------------------------------------------ preparing thread
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
                    request.taken = time.perf_counter()
                    taken.append(request)
                    count += len(request.texts)
            return taken

    def _prepare_loop(self) -> None:
        while True:
            self._wanted.wait()
            taken = self._take()
            if taken is None:
                self._prepared.put(None)
                return
            if not taken:  # every request taken had timed out: the device still wants a job
                continue
            self._wanted.clear()  # before the put: the device sets it again when it takes one
            groups: dict[str, list[_Request]] = {}
            for request in taken:  # one job per prompt: the prompt's length is static
                groups.setdefault(request.prompt, []).append(request)
            for prompt, requests in groups.items():
                self._prepared.put(self._prepare(prompt, requests))

    def _prepare(self, prompt: str, requests: list[_Request]) -> _Job:
        job = _Job(prompt, requests, time.perf_counter())
        texts = [t for r in requests for t in r.texts]
        try:
            job.batches = self.encoder.prepare(texts, self.batch_size, prompt)
            job.output = _JobOutput(requests, self.encoder.embedding_dimension)
        except Exception as e:
            job.error = e
        job.undelivered = len(job.batches)
        return job

    # ------------------------------------------------------------ device thread
    def _device_loop(self) -> None:
        while (job := self._next_job()) is not None:
            self._wanted.set()  # prepare the next job while this one is dispatched and runs
            self._dispatch(job)
        self._deliver_in_flight()

    def _next_job(self) -> _Job | None:
        """The next prepared job; results in flight are delivered while it is not ready."""
        while self._in_flight:
            try:
                return self._prepared.get_nowait()
            except queue.Empty:
                self._deliver(*self._in_flight.popleft())
        return self._prepared.get()

    def _dispatch(self, job: _Job) -> None:
        """Start every batch of `job`; past `MAX_IN_FLIGHT` batches, deliver the oldest."""
        if job.error is not None:
            self._fail(job, job.error)
            return
        try:
            for ready in job.batches:
                self._in_flight.append((job, self.encoder.dispatch(ready)))
                if len(self._in_flight) > MAX_IN_FLIGHT:
                    self._deliver(*self._in_flight.popleft())
                if job.failed:
                    return
        except Exception as e:
            self._fail(job, e)

    def _deliver_in_flight(self) -> None:
        while self._in_flight:
            self._deliver(*self._in_flight.popleft())

    def _deliver(self, job: _Job, batch: EmbeddedBatch) -> None:
        """Hand a computed batch's rows to their requests (waits for the device)."""
        if job.failed:
            return
        try:
            job.tokens += job.output.deliver(batch)  # type: ignore[union-attr]
        except Exception as e:
            self._fail(job, e)
            return
        job.undelivered -= 1
        if job.undelivered == 0:
            self._report(job)

    def _fail(self, job: _Job, error: Exception) -> None:
        """`job` failed: a job of one request fails it; otherwise, once the batches of other
        jobs in flight are delivered (they hold device memory), each unfinished request runs
        again alone, so that only the one at fault fails."""
        if job.failed:
            return
        job.failed = True
        texts = sum(len(r.texts) for r in job.requests)
        log.error("an embedding job of %d texts failed", texts, exc_info=error)
        self._report(job)
        unfinished = [r for r in job.requests if not r.future.done()]
        if len(job.requests) == 1:
            for request in unfinished:
                request.future.set_exception(error)
            return
        self._deliver_in_flight()
        for request in unfinished:
            self._dispatch(self._prepare(job.prompt, [request]))
            self._deliver_in_flight()

    def _report(self, job: _Job) -> None:
        if self.on_job is not None:
            texts = sum(len(r.texts) for r in job.requests)
            seconds = time.perf_counter() - job.start
            self.on_job(JobStats(len(job.requests), texts, job.tokens, seconds, job.failed))


@dataclasses.dataclass
class _Job:
    """Requests of one prompt, prepared together: their batches, or why preparing failed."""

    prompt: str
    requests: list[_Request]
    start: float
    batches: list[ReadyBatch] = dataclasses.field(default_factory=list)
    output: _JobOutput | None = None
    error: Exception | None = None
    undelivered: int = 0  # batches not delivered yet
    tokens: int = 0
    failed: bool = False


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
        now = time.perf_counter()
        for k in np.flatnonzero((self.remaining == 0) & (touched > 0)):
            rows = slice(self.first[k], self.first[k + 1])
            request = self.requests[k]
            result = Embedded(
                self.vectors[rows],
                self.tokens[rows],
                self.truncated[rows],
                queue_seconds=request.taken - request.submitted,
                inference_seconds=now - request.taken,
            )
            request.future.set_result(result)
        return int(batch.lengths.sum())
