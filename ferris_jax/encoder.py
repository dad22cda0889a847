"""The Encoder: texts -> tokens -> bucketed batches -> device -> vectors.

`Encoder.apply(params, ...)` is the pure functional core; `encode(...)` is the imperative shell
around it (validation, prompts, tokenization, bucketing, compiled-program cache, ordering).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from ferris_jax import ops
from ferris_jax.backend import Backend, platform_of
from ferris_jax.batching import Batch, BucketPolicy, PackedBatch, plan_batches, plan_packed
from ferris_jax.checkpoint import Checkpoint
from ferris_jax.similarity import SIMILARITY_FUNCTIONS
from ferris_jax.tokenize import TokenBatch, Tokenized, validate_texts

_DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
# Texts tokenized per chunk: large enough for the tokenizer's own parallelism and full batches,
# small enough that the device starts early and works while later chunks are tokenized.
_CHUNK_TEXTS = 1024
# Packed row length per platform (Encoder.pack_length), measured best with benchmarks/run.py
# (BENCHMARKS.md); other platforms get the CPU's. Packing trades host work for device work: on
# an H100 it only pays for models that keep the device busy (bert-base +20-35%; all-MiniLM-L6,
# whose GPU time is mostly tokenizing, -5% to -24% on sentences), hence a size floor there.
PACK_LENGTH = {"cpu": 64, "cuda": 128}
PACK_MIN_PARAMS = {"cuda": 50_000_000}


class Encoder:
    """A loaded sentence-embedding model. Build with `ferris_jax.load(...)`."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        device: jax.Device | None = None,
        backend: Backend | None = None,
    ):
        self.checkpoint = checkpoint
        self.graphdef = checkpoint.graphdef
        self.params: nnx.State = checkpoint.params
        self.tokenizer = checkpoint.tokenizer
        self.settings = checkpoint.settings
        self.device = device or next(iter(jax.tree.leaves(self.params))).devices().pop()
        self.backend = backend or Backend(platform_of(self.device), self.device, requested="device")
        # Compiled programs take the parameters as a flat tuple of arrays: flattening an
        # nnx.State on every call costs more than a small batch's compute.
        self._jitted = jax.jit(self._apply_flat, static_argnums=0)
        self._jitted_packed = jax.jit(self._apply_packed_flat, static_argnums=(0, 1))
        self._flat: tuple[nnx.State, tuple[jax.Array, ...], Any] | None = None
        self._programs: dict[tuple[int, ...], Any] = {}
        self._tokenizer_thread: ThreadPoolExecutor | None = None
        # Cap on padded tokens per batch: long texts then go in smaller batches (None: no cap).
        # On CPU 2048 was faster on every corpus of benchmarks/run.py (BENCHMARKS.md).
        self.max_batch_tokens: int | None = 2048 if self.device.platform == "cpu" else None
        # Pack several texts into rows of at least this many tokens (None: one text per row).
        # Max pooling has no packed form (it would need a [B, K, L, D] intermediate).
        platform = self.device.platform
        n_params = sum(x.size for x in jax.tree.leaves(self.params))
        self.pack_length: int | None = (
            PACK_LENGTH.get(platform, PACK_LENGTH["cpu"])
            if n_params >= PACK_MIN_PARAMS.get(platform, 0)
            else None
        )
        self.can_pack = "max" not in checkpoint.head.pooling.modes
        self.compile_seconds = 0.0
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
        """Pure: sentence embeddings `[B, E]` (pooling, Dense and Normalize applied).

        Args:
            params: a parameter pytree shaped like `enc.params`.
            input_ids, attention_mask, token_type_ids: `[B, L]` integer arrays.
            prompt_length: leading tokens excluded from pooling when the model's pooling has
                `include_prompt=False` (see `Tokenizer.prompt_length`).
        """
        model = nnx.merge(self.graphdef, params)
        return model(input_ids, attention_mask, token_type_ids, prompt_length)

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
        model = nnx.merge(self.graphdef, params)
        return model.packed(
            input_ids, segment_ids, positions, token_type_ids, prompt_length, num_segments
        )

    def token_embeddings(
        self,
        params: nnx.State,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Pure: the backbone's last hidden state `[B, L, D]`."""
        model = nnx.merge(self.graphdef, params)
        return model.token_embeddings(input_ids, attention_mask, token_type_ids)

    # ------------------------------------------------------------ imperative shell
    @property
    def max_seq_length(self) -> int:
        return self.settings.max_seq_length

    @property
    def prompts(self) -> dict[str, str]:
        return dict(self.settings.prompts)

    @property
    def compiled_programs(self) -> list[tuple[int, ...]]:
        """The shapes compiled so far in this process: (batch, sequence), and (batch,
        sequence, texts per row) for packed batches."""
        return sorted(self._programs)

    def tokenize(self, texts: str | Sequence[str], prompt: str | None = None) -> TokenBatch:
        """The padded batch `encode` would feed for these texts (padded to the longest)."""
        texts = validate_texts(texts)
        return self.tokenizer([(prompt or "") + t for t in texts])

    def similarity(self, a: Any, b: Any) -> jax.Array:
        """The model's similarity function (`similarity_fn_name`) between two sets of embeddings."""
        return SIMILARITY_FUNCTIONS[self.settings.similarity_fn_name](
            jnp.asarray(a), jnp.asarray(b)
        )

    def _flat_params(self) -> tuple[tuple[jax.Array, ...], Any]:
        """`self.params` as (leaves, treedef), recomputed only when `params` is replaced."""
        if self._flat is None or self._flat[0] is not self.params:
            leaves, treedef = jax.tree.flatten(self.params)
            if self._flat is not None and treedef != self._flat[2]:
                self._programs.clear()  # programs are per parameter structure
            self._flat = (self.params, tuple(leaves), treedef)
        return self._flat[1], self._flat[2]

    def _apply_flat(self, treedef: Any, leaves: tuple[jax.Array, ...], *args: Any) -> jax.Array:
        return self.apply(jax.tree.unflatten(treedef, leaves), *args)

    def _apply_packed_flat(
        self, treedef: Any, num_segments: int, leaves: tuple[jax.Array, ...], *args: Any
    ) -> jax.Array:
        return self.apply_packed(jax.tree.unflatten(treedef, leaves), *args, num_segments)

    def lower(self, shape: tuple[int, ...]) -> jax.stages.Lowered:
        """The `apply` program for a `(batch, seq_len)` shape, or the `apply_packed` one for
        `(batch, seq_len, texts_per_row)`, lowered (`.as_text()`: StableHLO)."""
        spec = jax.ShapeDtypeStruct(shape[:2], jnp.int32)
        scalar = jax.ShapeDtypeStruct((), jnp.int32)
        leaves, treedef = self._flat_params()
        if len(shape) == 3:
            return self._jitted_packed.lower(
                treedef, shape[2], leaves, spec, spec, spec, spec, scalar
            )
        return self._jitted.lower(treedef, leaves, spec, spec, spec, scalar)

    def bucket_policy(self, batch_size: int) -> BucketPolicy:
        """The shapes `encode(batch_size=...)` uses (see `max_batch_tokens`)."""
        return BucketPolicy.for_limits(
            batch_size, self.max_seq_length, max_batch_tokens=self.max_batch_tokens
        )

    def _program(self, shape: tuple[int, ...]):
        if shape not in self._programs:
            start = time.perf_counter()
            self._programs[shape] = self.lower(shape).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._programs[shape]

    def precompile(self, batch_size: int = 32, seq_lengths: Sequence[int] | None = None) -> None:
        """Compile the programs full batches of these lengths use now (e.g. at a service's
        start-up): one text per row for every length, and packed rows from `pack_length` on."""
        policy = self.bucket_policy(batch_size)
        packing = self._packing()
        for L in seq_lengths or policy.seq_lengths:
            shape = policy.shape_for(policy.rows_for(L), L)
            self._program(shape)
            if packing and min(packing, policy.seq_lengths[-1]) <= L:
                self._program((*shape, policy.segments_for(L)))

    def _packing(self) -> int | None:
        """The packed row length `encode` uses now (None: one text per row)."""
        return self.pack_length if self.can_pack else None

    def _resolve_prompt(self, prompt_name: str | None, prompt: str | None) -> str:
        if prompt is not None:
            if prompt_name is not None:
                warnings.warn("both prompt and prompt_name given; using prompt", stacklevel=3)
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
            return prompt
        name = prompt_name if prompt_name is not None else self.settings.default_prompt_name
        if name is None:
            return ""
        if name not in self.settings.prompts:
            raise ValueError(
                f"prompt_name {name!r} is not one of this model's prompts "
                f"{sorted(self.settings.prompts)}"
            )
        return self.settings.prompts[name]

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize_embeddings: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
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
            show_progress_bar: None shows a bar only for jobs of several batches that last more
                than two seconds.
        """
        single = isinstance(texts, str)
        texts = validate_texts(texts)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if truncate_dim is not None and not (
            isinstance(truncate_dim, int) and 0 < truncate_dim <= self.embedding_dimension
        ):
            raise ValueError(
                f"truncate_dim must be in 1..{self.embedding_dimension}, got {truncate_dim!r}"
            )
        prompt_text = self._resolve_prompt(prompt_name, prompt)
        out = np.empty((len(texts), self.embedding_dimension), dtype=np.float32)
        if texts:
            self._embed_into(
                out, [prompt_text + t for t in texts], prompt_text, batch_size, show_progress_bar
            )
        if truncate_dim is not None:
            out = out[:, :truncate_dim]
        if normalize_embeddings or (truncate_dim is not None and self.checkpoint.head.normalize):
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out[0] if single else out

    def _tokenized_chunks(
        self, texts: list[str], chunk_size: int, strided: bool
    ) -> Iterator[tuple[np.ndarray, Tokenized]]:
        """(text indices, their tokens) in chunks cut from the texts' order by character length:
        consecutive runs, longest first, or (`strided`, for packing) every n-th text, so each
        chunk has short texts to fill the rows its long ones start.

        The next chunk is tokenized on a worker thread (the Rust tokenizer releases the GIL)
        while the caller pads and dispatches this one; a job of one chunk uses no thread.
        """
        order = np.argsort(-np.fromiter(map(len, texts), np.int64, len(texts)), kind="stable")
        n = -(-len(order) // chunk_size)
        chunks = [
            order[i::n] if strided else order[i * chunk_size :][:chunk_size] for i in range(n)
        ]
        encode = lambda rows: self.tokenizer.encode([texts[i] for i in rows])  # noqa: E731
        if len(chunks) == 1:
            yield chunks[0], encode(chunks[0])
            return
        if self._tokenizer_thread is None:
            self._tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix="ferris-tokenize")
        future = self._tokenizer_thread.submit(encode, chunks[0])
        for i, rows in enumerate(chunks):
            tok = future.result()
            if i + 1 < len(chunks):
                future = self._tokenizer_thread.submit(encode, chunks[i + 1])
            yield rows, tok

    def _planned_batches(
        self, texts: list[str], policy: BucketPolicy, chunk_size: int, packing: int | None
    ) -> Iterator[tuple[np.ndarray, Tokenized, Batch | PackedBatch]]:
        """(text indices, their tokens, a batch over them) for every batch of the job.

        A chunk's last batch, when not full, is carried over and planned again with the next
        chunk's texts, so only the job's very last batch is padded with empty rows.
        """
        carry: tuple[np.ndarray, Tokenized] | None = None
        chunks = self._tokenized_chunks(texts, chunk_size, strided=packing is not None)
        upcoming = next(chunks)
        while upcoming is not None:
            indices, tok = upcoming
            upcoming = next(chunks, None)
            if carry is not None:
                indices = np.concatenate([carry[0], indices])
                tok = Tokenized.concat([carry[1], tok])
            if packing:
                plan = plan_packed(tok.lengths, policy, packing)
            else:
                plan = plan_batches(tok.lengths, policy)
            carry = None
            if upcoming is not None and not policy.is_full(plan[-1]):
                rest = plan.pop().texts
                carry = indices[rest], tok.take(rest)
            for batch in plan:
                yield indices, tok, batch

    def _embed_into(
        self, out: np.ndarray, texts: list[str], prompt: str, batch_size: int, show: bool | None
    ) -> None:
        prompt_length = np.int32(self.tokenizer.prompt_length(prompt))
        policy = self.bucket_policy(batch_size)
        params, _ = self._flat_params()
        truncated = np.zeros(len(texts), dtype=bool)
        pending = []
        # A job of one batch gets no bar unless asked for: even a disabled one costs ~50 us.
        hide = show is False or (show is None and len(texts) <= batch_size)
        bar = None if hide else tqdm(total=len(texts), unit="text", delay=0 if show else 2.0)
        packing = self._packing() if len(texts) > 1 else None  # one text never shares a row
        chunk_size = max(_CHUNK_TEXTS, 2 * batch_size)
        with bar or contextlib.nullcontext():
            for indices, tok, batch in self._planned_batches(texts, policy, chunk_size, packing):
                # Dispatch is asynchronous: the host pads the next batch while this one runs,
                # and each result starts its copy to the host as soon as it is computed.
                if isinstance(batch, PackedBatch):
                    b = self.tokenizer.pad_packed(tok, batch)
                    args = (b.input_ids, b.segment_ids, b.positions, b.token_type_ids)
                    slots = batch.row * batch.shape[2] + batch.segment - 1
                else:
                    b = self.tokenizer.pad(tok, batch.texts, batch.shape)
                    args = (b.input_ids, b.attention_mask, b.token_type_ids)
                    slots = slice(len(batch.texts))
                emb = self._program(batch.shape)(params, *args, prompt_length)
                if self.device.platform != "cpu":  # a CPU result already is in host memory
                    emb.copy_to_host_async()
                rows = indices[batch.texts]
                truncated[rows] = tok.truncated[batch.texts]
                pending.append((rows, emb, slots))
                if bar is not None:
                    bar.update(len(rows))
            for rows, emb, slots in pending:
                vectors = np.asarray(emb, dtype=np.float32)
                out[rows] = vectors.reshape(-1, vectors.shape[-1])[slots]
        if truncated.any():
            warnings.warn(
                f"{int(truncated.sum())} of {len(texts)} texts exceed max_seq_length="
                f"{self.max_seq_length} tokens and were truncated (first: index "
                f"{int(np.argmax(truncated))}); enc.tokenize(texts).truncated flags each one",
                stacklevel=3,
            )

    def encode_query(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray:
        """`encode` with the model's "query" prompt (if it has one)."""
        if (
            "prompt" not in kwargs
            and "prompt_name" not in kwargs
            and self.settings.prompts.get("query")
        ):
            kwargs["prompt_name"] = "query"
        return self.encode(texts, **kwargs)

    def encode_document(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray:
        """`encode` with the model's document prompt ("document", "passage" or "corpus")."""
        if "prompt" not in kwargs and "prompt_name" not in kwargs:
            name = next((n for n in _DOCUMENT_PROMPT_NAMES if self.settings.prompts.get(n)), None)
            if name is not None:
                kwargs["prompt_name"] = name
        return self.encode(texts, **kwargs)

    def info(self) -> dict[str, Any]:
        """What this encoder is and where it runs (for `ferris-jax info`)."""
        from ferris_jax.compilation import cache_stats, compilation_cache_dir

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
            "platform": self.backend.platform,
            "backend_requested": self.backend.requested,
            "probe": self.backend.probe.summary() if self.backend.probe else None,
            "fallback_from": self.backend.fallback_from,
            "layer_norm": ops.resolve_impl(platform=self.backend.platform),
            "compilation_cache": str(compilation_cache_dir() or "off"),
            "compilation_cache_hits": cache_stats()["hits"],
            "compiled_programs": len(self._programs),
        }

    def __repr__(self) -> str:
        return (
            f"Encoder({self.checkpoint.name!r}, {self.checkpoint.model_type}, "
            f"dim={self.embedding_dimension}, "
            f"max_seq_length={self.max_seq_length}, device={self.device})"
        )
