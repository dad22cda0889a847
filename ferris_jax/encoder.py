"""The Encoder: a loaded model and the thin shell around its pure functions.

`Encoder.apply(params, ...)` is the functional core (`programs.embed`); `encode(...)` validates
its arguments, resolves prompts and gathers what the public `Pipeline` yields (tokenize ->
plan -> pad -> dispatch) into one array in input order. Per-platform defaults come from the
platform table (`platforms.PLATFORM_DEFAULTS`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set, Sized
from pathlib import Path
from typing import Any, Literal, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from ferris_jax import ops, programs
from ferris_jax.batching import BucketPolicy, TokenBatch, pad
from ferris_jax.errors import require_int
from ferris_jax.loading.checkpoint import Checkpoint
from ferris_jax.loading.export import save_pretrained
from ferris_jax.ops.impl import check_impls, requested_impls
from ferris_jax.pipeline import MAX_IN_FLIGHT, EmbeddedBatch, Pipeline, ReadyBatch
from ferris_jax.placement import Placement
from ferris_jax.programs import Programs
from ferris_jax.quantization import PRECISIONS, quantize_embeddings
from ferris_jax.runtime.backend import Backend
from ferris_jax.similarity import SIMILARITY_FUNCTIONS
from ferris_jax.tokenize import validate_texts

# The prompt names `encode_document` looks for, in order (sentence-transformers' names).
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


def choose_prompt(
    prompts: Mapping[str, str],
    default_prompt_name: str | None,
    role: Literal["query", "document"] | None,
    prompt_name: str | None,
) -> str:
    """The prompt of `prompt_name`, else the role's prompt (the model's "query" prompt; its
    "document", "passage" or "corpus" prompt) if it has one, else the default prompt's, else
    none (`Encoder.prompt_for` without a literal prompt)."""
    if prompt_name is None and role is not None:
        names = ("query",) if role == "query" else DOCUMENT_PROMPT_NAMES
        prompt_name = next((n for n in names if prompts.get(n)), None)
    name = prompt_name if prompt_name is not None else default_prompt_name
    if name is None:
        return ""
    if name not in prompts:
        raise ValueError(
            f"prompt_name {name!r} is not one of this model's prompts {sorted(prompts)}"
        )
    return prompts[name]


# Texts per window of `encode_stream`: each is sorted by length and batched like one `encode`
# call, so larger windows pad less; two windows of texts and vectors are held at once.
STREAM_CHUNK_TEXTS = 16384

ArrayT = TypeVar("ArrayT", np.ndarray, jax.Array)


@dataclasses.dataclass
class _Window:
    """A window of `encode_stream`: its first text's index, its vectors, texts not yet done."""

    start: int
    out: np.ndarray
    remaining: int

    @classmethod
    def empty(cls, start: int, count: int, dimension: int) -> _Window:
        return cls(start, np.empty((count, dimension), np.float32), count)


class Encoder:
    """A loaded sentence-embedding model. Build with `ferris_jax.load(...)`; `close()` (or a
    `with` block) stops its tokenizer thread."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        placement: Placement | None = None,
        device: jax.Device | None = None,
        backend: Backend | None = None,
        impls: Mapping[str, str] | None = None,
    ):
        self.checkpoint = checkpoint
        self.graphdef = checkpoint.graphdef
        self.params: nnx.State = checkpoint.params
        self.tokenizer = checkpoint.tokenizer
        self.settings = checkpoint.settings
        # Where the parameters, batches and results live (`device=`: that one device).
        self.placement = placement or (
            Placement.on(device) if device else Placement.of(self.params)
        )
        self.backend = backend or Backend(self.placement.platform, self.device, requested="device")
        # How LayerNorm and attention are implemented in this encoder's programs, e.g.
        # {"attention": "einsum"}; ops left out follow `ops.use_impl` / the environment.
        self.impls: dict[str, str] = check_impls(impls or {})
        self.programs = Programs(self.graphdef, self.placement)
        self.pipeline = Pipeline(self.tokenizer, self.programs)
        defaults = self.backend.defaults
        # Cap on padded tokens per batch: long texts then go in smaller batches (None: no cap).
        self.max_batch_tokens: int | None = defaults.max_batch_tokens
        # Pack several texts into rows of at least this many tokens (None: one text per row).
        n_params = sum(x.size for x in jax.tree.leaves(self.params))
        self.pack_length: int | None = (
            defaults.pack_length if n_params >= defaults.pack_min_params else None
        )
        # A packed row of L tokens holds at most L // this many texts.
        self.pack_segment_tokens: int = defaults.pack_segment_tokens
        self.can_pack = checkpoint.head.pooling.can_pack
        self.embedding_dimension = int(
            jax.eval_shape(
                self.apply, self.params, *[jax.ShapeDtypeStruct((1, 2), jnp.int32)] * 3
            ).shape[-1]
        )

    # ------------------------------------------------------------ functional core
    def apply(
        self,
        params: nnx.State,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        prompt_length: jax.Array | int = 0,
    ) -> jax.Array:
        """Pure: sentence embeddings `[B, E]` (pooling, Dense and Normalize applied), traced
        with this encoder's `impls`.

        Args:
            params: a parameter pytree shaped like `enc.params`.
            input_ids, attention_mask, token_type_ids: `[B, L]` integer arrays.
            prompt_length: leading tokens excluded from pooling when the model's pooling has
                `include_prompt=False` (see `Tokenizer.prompt_length`).
        """
        with ops.use_impl(**self.impls):
            return programs.embed(
                self.graphdef, params, input_ids, attention_mask, token_type_ids, prompt_length
            )

    def apply_packed(
        self,
        params: nnx.State,
        input_ids: jax.Array,
        segment_ids: jax.Array,
        positions: jax.Array,
        token_type_ids: jax.Array | None,
        prompt_length: jax.Array | int,
        num_segments: int,
    ) -> jax.Array:
        """Pure: embeddings `[B, K, E]` of texts packed K = `num_segments` per row at most.

        Args:
            input_ids, token_type_ids: `[B, L]`, several texts back to back in each row.
            segment_ids: `[B, L]`, 1..K numbering the texts of a row, 0 for padding.
            positions: `[B, L]`, each token's index within its own text.
            prompt_length, num_segments: as in `apply`; K static.

        Slot `[b, k]` holds the embedding of segment k + 1 of row b (garbage where that
        segment is empty). Each text sees only its own tokens, so it gets the vector `apply`
        gives it alone in a row.
        """
        with ops.use_impl(**self.impls):
            return programs.embed_packed(
                self.graphdef,
                params,
                input_ids,
                segment_ids,
                positions,
                token_type_ids,
                prompt_length,
                num_segments,
            )

    def token_embeddings(
        self,
        params: nnx.State,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Pure: the backbone's last hidden state `[B, L, D]`."""
        with ops.use_impl(**self.impls):
            return programs.token_embeddings(
                self.graphdef, params, input_ids, attention_mask, token_type_ids
            )

    # ------------------------------------------------------------ imperative shell
    @property
    def device(self) -> jax.Device:
        """The device the model runs on (`placement.device`)."""
        return self.placement.device

    @property
    def max_seq_length(self) -> int:
        """Tokens per text at most (longer texts are truncated); settable, as in
        sentence-transformers, up to the model's position limit."""
        return self.settings.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        limit = self.checkpoint.max_positions
        value = require_int("max_seq_length", value, minimum=2)
        if limit is not None and value > limit:
            raise ValueError(f"max_seq_length {value} exceeds the model's {limit} positions")
        self.settings = dataclasses.replace(self.settings, max_seq_length=value)
        self.tokenizer.set_max_seq_length(value)

    @property
    def prompts(self) -> dict[str, str]:
        return dict(self.settings.prompts)

    @property
    def compiled_programs(self) -> list[tuple[int, ...]]:
        """The shapes compiled so far in this process: (batch, sequence), and (batch,
        sequence, texts per row) for packed batches."""
        return self.programs.shapes

    @property
    def compile_seconds(self) -> float:
        """Seconds spent compiling this encoder's programs so far."""
        return self.programs.compile_seconds

    def requested_impls(self) -> tuple[tuple[str, str], ...]:
        """The implementation choice this encoder's programs are compiled with now: its own
        `impls`, then `ops.use_impl` blocks and the environment, else "auto"."""
        return requested_impls(self.impls)

    def tokenize(self, texts: str | Sequence[str], prompt: str | None = None) -> TokenBatch:
        """The padded batch `encode` would feed for these texts (padded to the longest)."""
        texts = validate_texts(texts)
        tok = self.tokenizer.encode([(prompt or "") + t for t in texts])
        longest = int(tok.lengths.max(initial=1))
        return pad(tok, np.arange(len(tok)), (len(tok), longest), self.tokenizer.pad_token_id)

    def similarity(self, a: Any, b: Any) -> jax.Array:
        """The model's similarity function (`similarity_fn_name`) between two sets of embeddings."""
        return SIMILARITY_FUNCTIONS[self.settings.similarity_fn_name](
            jnp.asarray(a), jnp.asarray(b)
        )

    def lower(self, shape: tuple[int, ...]) -> jax.stages.Lowered:
        """The `apply` program for a `(batch, seq_len)` shape, or the `apply_packed` one for
        `(batch, seq_len, texts_per_row)`, lowered (`.as_text()`: StableHLO)."""
        return self.programs.lower(self.params, shape, self.requested_impls())

    def bucket_policy(self, batch_size: int) -> BucketPolicy:
        """The shapes `encode(batch_size=...)` uses (see `max_batch_tokens`); on several
        devices `batch_size` rows go to each device."""
        return BucketPolicy.for_limits(
            batch_size,
            self.max_seq_length,
            max_batch_tokens=self.max_batch_tokens,
            rows_multiple=self.placement.rows_multiple,
            segment_tokens=self.pack_segment_tokens,
        )

    def precompile(
        self,
        batch_size: int = 32,
        seq_lengths: Sequence[int] | None = None,
        *,
        partial_batches: bool = False,
    ) -> list[tuple[int, ...]]:
        """Compile the programs full batches of these lengths use now (e.g. at a service's
        start-up), in parallel: one text per row for every length, and packed rows from
        `pack_length` on. With `partial_batches`, also every smaller batch size (a job's last
        batches, a single query): every program `encode(batch_size=...)` can use, so that with
        the persistent compilation cache a later process compiles nothing (`ferris-jax warmup`).
        Returns the shapes."""
        policy = self.bucket_policy(batch_size)
        packing = self.packing()
        shapes = []
        for L in seq_lengths or policy.seq_lengths:
            top = policy.rows_for(L)
            for B in [b for b in policy.batch_sizes if b <= top] if partial_batches else [top]:
                shapes.append((B, L))
                if packing and min(packing, policy.seq_lengths[-1]) <= L:
                    shapes.append((B, L, policy.segments_for(L)))
        self.programs.compile_all(self.params, shapes, self.requested_impls())
        return shapes

    def packing(self) -> int | None:
        """The packed row length `encode` uses now (None: one text per row)."""
        return self.pack_length if self.can_pack else None

    def prompt_for(
        self,
        role: Literal["query", "document"] | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ) -> str:
        """The prompt `encode` (role None), `encode_query` or `encode_document` prepends.

        A literal `prompt` wins over `prompt_name`; without either, the role's prompt (the
        model's "query" prompt; its "document", "passage" or "corpus" prompt) if it has one,
        else the model's default prompt, else none.
        """
        if prompt is not None:
            if prompt_name is not None:
                warnings.warn("both prompt and prompt_name given; using prompt", stacklevel=3)
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
            return prompt
        return choose_prompt(
            self.settings.prompts, self.settings.default_prompt_name, role, prompt_name
        )

    def embed_batches(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        prompt_name: str | None = None,
        prompt: str | None = None,
        on_batch: Callable[[EmbeddedBatch], Any] | None = None,
    ) -> Iterator[EmbeddedBatch]:
        """Embed texts batch by batch, in the order the pipeline runs them (not input order):
        each `EmbeddedBatch` says which texts it holds (`indices`) and has their vectors on the
        device (`vectors()`) or on the host (`numpy()`). `encode` is this, gathered."""
        texts = validate_texts(texts)
        batch_size = require_int("batch_size", batch_size)
        prompt = self.prompt_for(None, prompt_name, prompt)
        return self._run([[prompt + t for t in texts]], batch_size, prompt, on_batch, len(texts))

    def _run(
        self,
        windows: Iterable[list[str]],
        batch_size: int,
        prompt: str,
        on_batch: Callable[[EmbeddedBatch], Any] | None,
        count: int | None,
        copy_to_host: bool = True,
    ) -> Iterator[EmbeddedBatch]:
        """The pipeline over validated, prompted texts (`count` of them, None if unknown), with
        this encoder's settings."""
        options = self._pipeline_options(batch_size, prompt, count, copy_to_host)
        return self.pipeline.run_windows(windows, self.params, on_batch=on_batch, **options)

    def _pipeline_options(
        self, batch_size: int, prompt: str, count: int | None, copy_to_host: bool = True
    ) -> dict[str, Any]:
        """This encoder's settings for a pipeline job of `count` texts (None if unknown)."""
        return dict(
            policy=self.bucket_policy(batch_size),
            impls=self.requested_impls(),
            prompt_length=self.tokenizer.prompt_length(prompt),
            packing=self.packing() if count != 1 else None,  # one text never shares a row
            # A CPU result already is on the host.
            copy_to_host=copy_to_host and self.backend.platform != "cpu",
        )

    def prepare(
        self, texts: Sequence[str], batch_size: int = 32, prompt: str = ""
    ) -> list[ReadyBatch]:
        """The batches `embed_batches` would run for `texts` (strings, checked by the caller,
        without their `prompt`), tokenized, planned, padded and compiled, to `dispatch` later,
        perhaps from another thread (the server prepares a job while the device runs one)."""
        options = self._pipeline_options(batch_size, prompt, len(texts))
        windows = ([prompt + t for t in texts],)
        return list(self.pipeline.ready_batches(windows, self.params, **options))

    def dispatch(self, ready: ReadyBatch) -> EmbeddedBatch:
        """Start a prepared batch on the device; its `indices` count `prepare`'s texts."""
        return self.pipeline.dispatch(ready, self.params)

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize_embeddings: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        show_progress_bar: bool | None = None,
        on_batch: Callable[[EmbeddedBatch], Any] | None = None,
        *,
        precision: str = "float32",
        convert_to_tensor: bool = False,
    ) -> np.ndarray | jax.Array:
        """Embed texts; float32 numpy `[n, E]` in input order (`[E]` for a single string).

        Args:
            texts: a string or a sequence of strings.
            batch_size: texts per batch (batches are padded to a few fixed shapes).
            normalize_embeddings: True L2-normalizes the output; None/False keep the model's own
                choice (a model with a Normalize module always returns unit vectors).
            prompt_name: key of `enc.prompts` to prepend (default: the model's default prompt).
            prompt: a literal prompt string to prepend (overrides prompt_name).
            truncate_dim: keep the first k dimensions (Matryoshka); re-normalized if the model
                normalizes or `normalize_embeddings` is True.
            show_progress_bar: None shows a bar (of finished texts) on a terminal only, for jobs
                of several batches that last more than two seconds.
            on_batch: called with each `EmbeddedBatch` right after it is dispatched (e.g. to
                record batch shapes).
            precision: "float32", or quantized as sentence-transformers' `encode(precision=...)`
                does: "int8"/"uint8" (scaled by each dimension's range over these embeddings)
                or "binary"/"ubinary" (signs packed 8 per byte), see `quantize_embeddings`.
            convert_to_tensor: return a `jax.Array` on the encoder's device instead of numpy;
                the vectors are never copied to the host (for JAX pipelines).
        """
        single = isinstance(texts, str)
        texts = validate_texts(texts)
        batch_size = require_int("batch_size", batch_size)
        truncate_dim = self._check_truncate_dim(truncate_dim)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        truncated = np.zeros(len(texts), dtype=bool)
        if convert_to_tensor:
            parts: list[jax.Array] = []
            order: list[np.ndarray] = []
        else:
            out = np.empty((len(texts), self.embedding_dimension), dtype=np.float32)
        # A job of one batch gets no bar unless asked for: even a disabled one costs ~50 us.
        bar = self._progress_bar(show_progress_bar, len(texts), len(texts) <= batch_size)

        def finish(batch: EmbeddedBatch) -> None:
            if convert_to_tensor:
                parts.append(batch.vectors())
                order.append(batch.indices)
            else:
                out[batch.indices] = batch.numpy()
            if bar is not None:
                bar.update(len(batch.indices))

        with bar or contextlib.nullcontext():
            prompt_text = self.prompt_for(None, prompt_name, prompt)
            windows = [[prompt_text + t for t in texts]]
            batches = self._run(
                windows, batch_size, prompt_text, on_batch, len(texts), not convert_to_tensor
            )
            for batch in _as_finished(batches):
                truncated[batch.indices] = batch.truncated
                finish(batch)
        if truncated.any():
            self._warn_truncated(truncated.sum(), len(texts), np.argmax(truncated))
        if convert_to_tensor:
            rows = np.argsort(np.concatenate(order)) if order else np.zeros(0, np.int64)
            if len(parts) == 1 and (rows == np.arange(len(rows))).all():
                vectors = parts[0].astype(jnp.float32)  # one batch in order (one query)
            elif parts:
                vectors = jnp.concatenate(parts)[rows].astype(jnp.float32)
            else:
                vectors = self.placement.put(jnp.zeros((0, self.embedding_dimension), jnp.float32))
            vectors = self._finish(vectors, normalize_embeddings, truncate_dim)
            if precision != "float32":
                quantized = quantize_embeddings(np.asarray(vectors), precision)
                vectors = self.placement.put(quantized)
        else:
            vectors = self._finish(out, normalize_embeddings, truncate_dim)
            if precision != "float32":
                vectors = quantize_embeddings(vectors, precision)
        return vectors[0] if single else vectors

    def encode_stream(
        self,
        texts: Iterable[str],
        batch_size: int = 32,
        normalize_embeddings: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        show_progress_bar: bool | None = None,
        *,
        chunk_size: int = STREAM_CHUNK_TEXTS,
    ) -> Iterator[np.ndarray]:
        """Embed an iterable of texts of any length in bounded host memory: a generator, a
        file read lazily, a `datasets` column.

        Yields float32 `[n, E]` arrays for `chunk_size` consecutive texts at a time (the last
        may be shorter), in input order; together they equal `encode(list(texts), ...)` with
        the same options. Texts are pulled `chunk_size` at a time and run through the same
        pipeline and programs as `encode`, so the device stays as busy; only about two chunks
        of texts and vectors are held at once.

        Args:
            texts: any iterable of str (a str alone is refused: wrap it in a list).
            chunk_size: texts per yielded array (and per window sorted by length for batching).
            batch_size, normalize_embeddings, prompt_name, prompt, truncate_dim,
            show_progress_bar: as in `encode` (the bar counts texts; its total is known when
                `texts` has a length).
        """
        if isinstance(texts, (str, bytes, bytearray, Set, Mapping)) or not hasattr(
            texts, "__iter__"
        ):
            raise TypeError(
                f"texts must be an iterable of strings in order, got {type(texts).__name__}"
                + ("; wrap a single text in a list" if isinstance(texts, str) else "")
            )
        batch_size = require_int("batch_size", batch_size)
        chunk_size = require_int("chunk_size", chunk_size)
        truncate_dim = self._check_truncate_dim(truncate_dim)
        prompt_text = self.prompt_for(None, prompt_name, prompt)
        total = len(texts) if isinstance(texts, Sized) else None
        bar = self._progress_bar(show_progress_bar, total, total is not None and total <= 1)
        return self._stream(
            iter(texts),
            batch_size,
            prompt_text,
            chunk_size,
            normalize_embeddings,
            truncate_dim,
            bar,
        )

    def _stream(
        self,
        texts: Iterator[str],
        batch_size: int,
        prompt: str,
        chunk_size: int,
        normalize_embeddings: bool | None,
        truncate_dim: int | None,
        bar: tqdm | None,
    ) -> Iterator[np.ndarray]:
        """`encode_stream`'s generator: windows pulled by the pipeline, yielded when complete."""
        open_windows: collections.deque[_Window] = collections.deque()
        truncated = [0, 0, -1]  # texts truncated, texts seen, first truncated index

        def windows() -> Iterator[list[str]]:
            start = 0
            while window := validate_texts(list(itertools.islice(texts, chunk_size)), start):
                open_windows.append(_Window.empty(start, len(window), self.embedding_dimension))
                yield [prompt + t for t in window]
                start += len(window)
            truncated[1] = start

        def finish(batch: EmbeddedBatch) -> None:
            vectors, indices = batch.numpy(), batch.indices
            for window in open_windows:  # a batch spans at most two windows
                inside = (indices >= window.start) & (indices < window.start + len(window.out))
                if inside.any():
                    window.out[indices[inside] - window.start] = vectors[inside]
                    window.remaining -= int(inside.sum())
            if bar is not None:
                bar.update(len(indices))

        def completed() -> Iterator[np.ndarray]:
            while open_windows and open_windows[0].remaining == 0:
                window = open_windows.popleft()
                yield self._finish(window.out, normalize_embeddings, truncate_dim)

        with bar or contextlib.nullcontext():
            for batch in _as_finished(self._run(windows(), batch_size, prompt, None, None)):
                if batch.truncated.any():
                    first = int(batch.indices[batch.truncated].min())
                    truncated[2] = first if truncated[0] == 0 else min(truncated[2], first)
                    truncated[0] += int(batch.truncated.sum())
                finish(batch)
                yield from completed()
            yield from completed()  # windows of no texts
        self._warn_truncated(truncated[0], truncated[1], truncated[2], stacklevel=3)

    def _check_truncate_dim(self, truncate_dim: int | None) -> int | None:
        if truncate_dim is None:
            return None
        truncate_dim = require_int("truncate_dim", truncate_dim)
        if truncate_dim > self.embedding_dimension:
            raise ValueError(
                f"truncate_dim must be in 1..{self.embedding_dimension}, got {truncate_dim!r}"
            )
        return truncate_dim

    def _progress_bar(self, show: bool | None, total: int | None, one_batch: bool) -> tqdm | None:
        """A bar of finished texts, or None: shown when asked, or (None) on a terminal for jobs
        of several batches that last more than two seconds."""
        if show is False or (show is None and (one_batch or not _is_terminal(sys.stderr))):
            return None
        return tqdm(total=total, unit="text", delay=0 if show else 2.0)

    def _warn_truncated(self, count: int, total: int, first: int, stacklevel: int = 3) -> None:
        if count:
            warnings.warn(
                f"{int(count)} of {total} texts exceed max_seq_length={self.max_seq_length} "
                f"tokens and were truncated (first: index {int(first)}); "
                "enc.tokenize(texts).truncated flags each one",
                stacklevel=stacklevel,
            )

    def _finish(
        self, vectors: ArrayT, normalize_embeddings: bool | None, truncate_dim: int | None
    ) -> ArrayT:
        """Truncated to `truncate_dim` and L2-normalized as `encode` documents (numpy or JAX)."""
        xp = jnp if isinstance(vectors, jax.Array) else np
        if truncate_dim is not None:
            vectors = vectors[:, :truncate_dim]
        if normalize_embeddings or (truncate_dim is not None and self.checkpoint.head.normalize):
            norms = xp.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / xp.maximum(norms, 1e-12)
        return vectors

    def encode_query(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray | jax.Array:
        """`encode` with the model's "query" prompt (if it has one)."""
        return self._encode_as("query", texts, kwargs)

    def encode_document(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray | jax.Array:
        """`encode` with the model's document prompt ("document", "passage" or "corpus")."""
        return self._encode_as("document", texts, kwargs)

    def _encode_as(
        self, role: Literal["query", "document"], texts: Any, kwargs: dict[str, Any]
    ) -> np.ndarray | jax.Array:
        prompt = self.prompt_for(role, kwargs.pop("prompt_name", None), kwargs.pop("prompt", None))
        return self.encode(texts, prompt=prompt, **kwargs)

    def save(self, path: str | os.PathLike) -> Path:
        """Write this model with its current `params` and settings (`max_seq_length`, prompts,
        similarity) to the folder `path`, which sentence-transformers, transformers'
        `AutoModel` and `ferris_jax.load` all read. The folder may be new, empty or an earlier
        save's; the files the save does not write are kept (see `save_pretrained`)."""
        return save_pretrained(path, self.checkpoint, self.params, self.settings)

    def info(self) -> dict[str, Any]:
        """What this encoder is and where it runs (for `ferris-jax info`)."""
        from ferris_jax.runtime.compilation import cache_stats, compilation_cache_dir

        return {
            "model": self.checkpoint.name,
            "path": str(self.checkpoint.path),
            "model_type": self.checkpoint.model_type,
            "dtype": jnp.dtype(self.checkpoint.dtype).name,
            "embedding_dimension": self.embedding_dimension,
            "max_seq_length": self.max_seq_length,
            "pooling": list(self.checkpoint.head.pooling.modes),
            "normalize": self.checkpoint.head.normalize,
            "prompts": self.prompts,
            "similarity": self.settings.similarity_fn_name,
            "device": str(self.device),
            "devices": [str(d) for d in self.placement.devices],
            "platform": self.backend.platform,
            "backend_requested": self.backend.requested,
            "probe": self.backend.probe.summary() if self.backend.probe else None,
            "fallback_from": self.backend.fallback_from,
            "layer_norm": ops.resolve_impl(
                dict(self.requested_impls())["layer_norm"], platform=self.backend.platform
            ),
            "compilation_cache": str(compilation_cache_dir() or "off"),
            "compilation_cache_hits": cache_stats()["hits"],
            "compiled_programs": len(self.programs),
        }

    def __repr__(self) -> str:
        return (
            f"Encoder({self.checkpoint.name!r}, {self.checkpoint.model_type}, "
            f"dim={self.embedding_dimension}, "
            f"max_seq_length={self.max_seq_length}, "
            + (
                f"device={self.device})"
                if self.placement.mesh is None
                else f"devices={self.placement})"
            )
        )

    def close(self) -> None:
        """Stop the tokenizer thread (the encoder stays usable: a later job starts it again)."""
        self.pipeline.close()

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_finished(batches: Iterator[EmbeddedBatch]) -> Iterator[EmbeddedBatch]:
    """The pipeline's batches, each handed on once `MAX_IN_FLIGHT` later ones are dispatched (or
    the job ends): the host gathers results about as they finish, without stalling dispatch, so
    a progress bar counts finished texts."""
    pending: collections.deque[EmbeddedBatch] = collections.deque()
    for batch in batches:
        pending.append(batch)
        if len(pending) > MAX_IN_FLIGHT:
            yield pending.popleft()
    yield from pending


def _is_terminal(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False
