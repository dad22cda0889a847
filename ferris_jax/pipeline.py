"""The host pipeline, public: texts -> token chunks -> batch plans -> padded arrays -> dispatch.

`Pipeline.run(...)` yields one `EmbeddedBatch` per dispatched batch: which texts it holds and
their vectors, still on the device and already copying to the host. `Encoder.encode` gathers
them into one array; a retrieval index, a training step or several devices consume the same
iterator (or watch it through `on_batch`).

Texts are sorted by length and tokenized in chunks, the next chunk on a worker thread while the
current one is padded and dispatched (the Rust tokenizer releases the GIL). A chunk's last,
partly filled batch is carried into the next chunk, so only the job's last batch is short.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
from flax import nnx

from ferris_jax.batching import (
    Batch,
    BucketPolicy,
    PackedBatch,
    pad,
    pad_packed,
    plan_batches,
    plan_packed,
)
from ferris_jax.ops.impl import ImplChoice
from ferris_jax.placement import to_host
from ferris_jax.programs import Programs
from ferris_jax.tokenize import TextTokenizer, Tokenized

# Texts tokenized per chunk: large enough for the tokenizer's own parallelism and full batches,
# small enough that the device starts early and works while later chunks are tokenized.
CHUNK_TEXTS = 1024
# Batches dispatched but not yet computed, at most: enough to keep the device busy while the
# host pads the next ones; it bounds the device memory of results in flight and the work still
# queued when the job is interrupted.
MAX_IN_FLIGHT = 8


@dataclasses.dataclass(frozen=True)
class PlannedBatch:
    """One batch before dispatch: texts `indices` (positions in the job's input), their tokens
    and the plan that places them in a padded or packed shape."""

    indices: np.ndarray  # [n] input positions of the batch's texts, in plan order
    tokens: Tokenized  # the tokens of the batch's chunk
    plan: Batch | PackedBatch  # `plan.texts` index `tokens`

    @property
    def shape(self) -> tuple[int, ...]:
        return self.plan.shape


@dataclasses.dataclass(frozen=True)
class ReadyBatch:
    """A planned batch with its padded token arrays, its program compiled: all that is left is
    `Pipeline.dispatch`, on any thread."""

    planned: PlannedBatch
    arrays: tuple[np.ndarray, ...]  # as `Pipeline.model_inputs` pads them
    impls: ImplChoice
    prompt_length: int
    copy_to_host: bool


@dataclasses.dataclass(frozen=True)
class EmbeddedBatch:
    """One dispatched batch: the vectors of texts `indices`, computed on the device."""

    indices: np.ndarray  # [n] input positions
    shape: tuple[int, ...]  # the compiled shape: (B, L), or (B, L, K) when packed
    lengths: np.ndarray  # [n] tokens per text (special tokens included)
    truncated: np.ndarray  # [n] bool: the text was cut at max_seq_length
    output: jax.Array  # [B, E], or [B, K, E] when packed: the program's raw output
    slots: np.ndarray  # [n] row of each text in `output` flattened to [B * K, E]

    def vectors(self) -> jax.Array:
        """`[n, E]` in the order of `indices`, as a device array."""
        flat = self.output.reshape(-1, self.output.shape[-1])
        if len(self.slots) == len(flat) and (self.slots == np.arange(len(flat))).all():
            return flat  # every row, in order: no gather to dispatch
        return flat[self.slots]

    def numpy(self) -> np.ndarray:
        """`[n, E]` float32 in the order of `indices` (waits for the device)."""
        host = to_host(self.output).astype(np.float32, copy=False)
        return host.reshape(-1, host.shape[-1])[self.slots]


class Pipeline:
    """Tokenizing, planning, padding and dispatching texts for one model's programs.

    Holds one worker thread for tokenizing ahead (started on the first job of several chunks);
    `close()` stops it.
    """

    def __init__(self, tokenizer: TextTokenizer, programs: Programs):
        self.tokenizer = tokenizer
        self.programs = programs
        self._worker: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop the tokenizer thread (a later job starts a new one)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._worker = None

    def tokenized_chunks(
        self, windows: Iterable[Sequence[str]], chunk_size: int, strided: bool
    ) -> Iterator[tuple[np.ndarray, Tokenized, int]]:
        """(text indices, their tokens, window number) in chunks of at most `chunk_size` texts.

        `windows` are consecutive slices of the job's texts (one window: the whole job; a
        stream: a window at a time, pulled as needed); indices count from the job's first text.
        Each window is cut in its texts' order by character length: consecutive runs, longest
        first, or (`strided`, for packing) every n-th text, so each chunk has short texts to
        fill the rows its long ones start. The next chunk is tokenized on a worker thread,
        across window boundaries too.
        """
        chunks = _chunks_of(windows, chunk_size, strided)
        current = next(chunks, None)
        if current is None:
            return
        upcoming = next(chunks, None)
        if upcoming is None:  # a job of one chunk uses no thread
            yield current[0], self.tokenizer.encode(current[1]), current[2]
            return
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="ferris-tokenize")
        future = self._worker.submit(self.tokenizer.encode, current[1])
        while current is not None:
            tok = future.result()
            if upcoming is not None:
                future = self._worker.submit(self.tokenizer.encode, upcoming[1])
            yield current[0], tok, current[2]
            current, upcoming = upcoming, next(chunks, None) if upcoming is not None else None

    def planned_chunks(
        self,
        windows: Iterable[Sequence[str]],
        policy: BucketPolicy,
        packing: int | None = None,
        chunk_size: int = CHUNK_TEXTS,
    ) -> Iterator[list[PlannedBatch]]:
        """Every batch of the job, planned (packed in rows of at least `packing` tokens when
        set), a tokenized chunk's batches at a time. A chunk's last batch, when not full, is
        planned again with the next chunk's texts of the same window. (Not across windows:
        planning sorts by length, so a window's shortest texts could be carried on and on, past
        texts that come after them.)"""
        carry: tuple[np.ndarray, Tokenized] | None = None
        chunks = self.tokenized_chunks(windows, chunk_size, strided=packing is not None)
        upcoming = next(chunks, None)
        while upcoming is not None:
            indices, tok, window = upcoming
            upcoming = next(chunks, None)
            if carry is not None:
                indices = np.concatenate([carry[0], indices])
                tok = Tokenized.concat([carry[1], tok])
            plan = (
                plan_packed(tok.lengths, policy, packing)
                if packing
                else plan_batches(tok.lengths, policy)
            )
            carry = None
            if upcoming is not None and upcoming[2] == window and not policy.is_full(plan[-1]):
                rest = plan.pop().texts
                carry = indices[rest], tok.take(rest)
            if plan:
                yield [PlannedBatch(indices[batch.texts], tok, batch) for batch in plan]

    def model_inputs(self, batch: PlannedBatch) -> tuple[np.ndarray, ...]:
        """The padded (or packed) token arrays of a batch, as its program takes them."""
        pad_id = self.tokenizer.pad_token_id
        if isinstance(batch.plan, PackedBatch):
            b = pad_packed(batch.tokens, batch.plan, pad_id)
            return b.input_ids, b.segment_ids, b.positions, b.token_type_ids
        b = pad(batch.tokens, batch.plan.texts, batch.plan.shape, pad_id)
        return b.input_ids, b.attention_mask, b.token_type_ids

    def run(
        self, texts: Sequence[str], params: nnx.State, **options: Any
    ) -> Iterator[EmbeddedBatch]:
        """Embed `texts` (prompts already prepended): `run_windows` over one window."""
        return self.run_windows((texts,), params, **options)

    def run_windows(
        self,
        windows: Iterable[Sequence[str]],
        params: nnx.State,
        *,
        policy: BucketPolicy,
        impls: ImplChoice,
        prompt_length: int = 0,
        packing: int | None = None,
        copy_to_host: bool = True,
        on_batch: Callable[[EmbeddedBatch], Any] | None = None,
    ) -> Iterator[EmbeddedBatch]:
        """Embed the texts of consecutive `windows` (prompts already prepended), yielding each
        batch once dispatched; `indices` count from the first window's first text. Windows are
        pulled one at a time, so a stream of any length runs in bounded host memory, through
        the same batches and programs as one window of all texts.

        Dispatch is asynchronous: the host pads the next batch while this one runs, and with
        `copy_to_host` each result starts its copy to host memory as soon as it is computed.
        At most `MAX_IN_FLIGHT` batches are queued on the device: past that, dispatching waits
        for the oldest to finish.

        Args:
            params: the parameters to run with (e.g. `enc.params`).
            policy: the bucket policy (`Encoder.bucket_policy(batch_size)`).
            impls: the implementation choice (`ops.requested_impls(...)`).
            prompt_length: prompt tokens excluded from pooling where the model says so.
            packing: pack texts into rows of at least this many tokens (None: one per row).
            copy_to_host: start each result's device-to-host copy at once.
            on_batch: called with each batch right after it is dispatched.
        """
        in_flight: collections.deque[jax.Array] = collections.deque()
        options = dict(policy=policy, impls=impls, prompt_length=prompt_length)
        options |= dict(packing=packing, copy_to_host=copy_to_host)
        for ready in self.ready_batches(windows, params, **options):
            embedded = self.dispatch(ready, params)
            in_flight.append(embedded.output)
            if len(in_flight) > MAX_IN_FLIGHT:
                in_flight.popleft().block_until_ready()
            if on_batch is not None:
                on_batch(embedded)
            yield embedded

    def ready_batches(
        self,
        windows: Iterable[Sequence[str]],
        params: nnx.State,
        *,
        policy: BucketPolicy,
        impls: ImplChoice,
        prompt_length: int = 0,
        packing: int | None = None,
        copy_to_host: bool = True,
    ) -> Iterator[ReadyBatch]:
        """Every batch of the windows' texts, planned, its program compiled (a chunk's new
        shapes at once, in parallel threads) and padded when it is pulled: one at a time,
        while the device runs the last (`run_windows`), or all ahead (`Encoder.prepare`, for the
        server's batcher: one thread prepares while another dispatches)."""
        chunk_size = max(CHUNK_TEXTS, 2 * policy.batch_sizes[-1])  # room for two full batches
        for planned in self.planned_chunks(windows, policy, packing, chunk_size):
            self.programs.compile_all(params, [batch.shape for batch in planned], impls)
            for batch in planned:
                arrays = self.model_inputs(batch)
                yield ReadyBatch(batch, arrays, impls, prompt_length, copy_to_host)

    def dispatch(self, ready: ReadyBatch, params: nnx.State) -> EmbeddedBatch:
        """Start one batch on the device (asynchronous: the result is still being computed)."""
        leaves, _ = self.programs.flat_params(params)
        batch = ready.planned
        program = self.programs.get(params, batch.shape, ready.impls)
        output = program(leaves, *self.programs.inputs(ready.arrays, ready.prompt_length))
        if ready.copy_to_host:
            output.copy_to_host_async()
        plan = batch.plan
        if isinstance(plan, PackedBatch):
            slots = plan.row * plan.shape[2] + plan.segment - 1
        else:
            slots = np.arange(len(plan.texts))
        return EmbeddedBatch(
            batch.indices,
            batch.shape,
            batch.tokens.lengths[plan.texts],
            batch.tokens.truncated[plan.texts],
            output,
            slots,
        )


def _chunks_of(
    windows: Iterable[Sequence[str]], chunk_size: int, strided: bool
) -> Iterator[tuple[np.ndarray, list[str], int]]:
    """(job indices, texts, window number) of each chunk, window by window (see
    `tokenized_chunks`)."""
    start = 0
    for window, texts in enumerate(windows):
        if not len(texts):
            continue
        order = np.argsort(-np.fromiter(map(len, texts), np.int64, len(texts)), kind="stable")
        n = -(-len(order) // chunk_size)
        for i in range(n):
            rows = order[i::n] if strided else order[i * chunk_size :][:chunk_size]
            yield start + rows, [texts[j] for j in rows], window
        start += len(texts)
