"""The one bucket policy: which (batch, sequence) shapes get compiled, how texts fill them, and
padding token ids into those shapes.

Texts are sorted by token length so each batch pads little; each batch is then padded up to
the nearest shape of a small fixed grid, so a whole job compiles only a handful of programs.
Packed batches (`plan_packed`) put several texts in one row, back to back, so short texts fill
the padding a row of one text would leave.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from ferris_jax.tokenize import Tokenized


def _grid(limit: int, start: int) -> tuple[int, ...]:
    """start, 1.5*start, 2*start, 3*start, 4*start, ... below limit, then limit itself."""
    sizes, n = set(), start
    while n < limit:
        sizes.update((n, n * 3 // 2))
        n *= 2
    return (*tuple(sorted(s for s in sizes if s < limit)), limit)


@dataclasses.dataclass(frozen=True)
class BucketPolicy:
    """Allowed batch sizes and sequence lengths; a batch is padded to the smallest that fits."""

    batch_sizes: tuple[int, ...]
    seq_lengths: tuple[int, ...]
    max_batch_tokens: int | None = None  # cap on B * L: long texts go in smaller batches
    rows_multiple: int = 1  # every batch size is a multiple of it (the devices rows split over)
    segment_tokens: int = 12  # a packed row of L tokens holds at most L // segment_tokens texts

    @classmethod
    @functools.lru_cache(maxsize=64)  # policies are immutable; encode asks on every call
    def for_limits(
        cls,
        max_batch_size: int,
        max_seq_length: int,
        min_seq_length: int = 16,
        max_batch_tokens: int | None = None,
        rows_multiple: int = 1,
        segment_tokens: int = 12,
    ) -> BucketPolicy:
        """Powers of two for batch sizes; powers of two and their 1.5x for lengths.

        With `rows_multiple` n > 1 (a placement over n devices), `max_batch_size` and
        `max_batch_tokens` are per device: every batch size and the cap are n times the
        one-device policy's, so each device gets the batches one device would."""
        if max_batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {max_batch_size}")
        if rows_multiple < 1:
            raise ValueError(f"rows_multiple must be >= 1, got {rows_multiple}")
        if segment_tokens < 1:
            raise ValueError(f"segment_tokens must be >= 1, got {segment_tokens}")
        batches = tuple(
            b for b in (1 << k for k in range(max_batch_size.bit_length())) if b < max_batch_size
        )
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        n = rows_multiple
        return cls(
            tuple(b * n for b in (*batches, max_batch_size)),
            _grid(max_seq_length, min(min_seq_length, max_seq_length)),
            None if max_batch_tokens is None else max_batch_tokens * n,
            n,
            segment_tokens,
        )

    def rows_for(self, seq_length: int) -> int:
        """The most texts one batch of bucket length `seq_length` takes (a grid batch size)."""
        top = self.batch_sizes[-1]
        if self.max_batch_tokens is None or self.max_batch_tokens >= top * seq_length:
            return top
        fit = self.max_batch_tokens // seq_length
        return max((b for b in self.batch_sizes if b <= fit), default=self.batch_sizes[0])

    def shape_for(self, rows: int, longest: int) -> tuple[int, int]:
        """The (B, L) bucket for `rows` texts whose longest has `longest` tokens."""
        B = next((b for b in self.batch_sizes if b >= rows), None)
        L = next((s for s in self.seq_lengths if s >= longest), None)
        if B is None or L is None:
            raise ValueError(f"no bucket holds {rows} rows of {longest} tokens in {self}")
        return B, L

    def is_full(self, batch: Batch | PackedBatch) -> bool:
        """Whether `batch` uses every row a batch of its length may have."""
        return batch.rows_used >= self.rows_for(batch.shape[1])

    def segments_for(self, seq_length: int) -> int:
        """The most texts a packed row of `seq_length` tokens holds: one per `segment_tokens`
        (12, the default, is as dense as 8 on benchmarks/corpus.py's texts with a third fewer
        output slots; 2, the fewest tokens a text has, lets a row fill with one-word texts)."""
        return max(1, seq_length // self.segment_tokens)

    def holding_all(self, texts: int) -> BucketPolicy:
        """This policy's lengths, with row counts on the length grid's steps (8, 12, 16, 24,
        ...) up to `texts` and no token cap: `plan_packed` then puts `texts` texts in one
        batch (a train step's batch, which cannot be split)."""
        return dataclasses.replace(
            self, batch_sizes=_grid(max(texts, 1), min(8, texts)), max_batch_tokens=None
        )

    @property
    def max_programs(self) -> int:
        return len(self.batch_sizes) * len(self.seq_lengths)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Texts `texts` (indices into the planned lengths), one per row, padded to `shape`."""

    texts: np.ndarray
    shape: tuple[int, int]  # (B, L)

    @property
    def rows_used(self) -> int:
        return len(self.texts)


def plan_batches(lengths: np.ndarray, policy: BucketPolicy) -> list[Batch]:
    """Group texts, longest first, into batches of at most `policy.rows_for(bucket length)`."""
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        _, L = policy.shape_for(1, int(lengths[order[start]]))
        rows = order[start : start + policy.rows_for(L)]
        batches.append(Batch(rows, policy.shape_for(len(rows), int(lengths[rows].max()))))
        start += len(rows)
    return batches


@dataclasses.dataclass(frozen=True)
class PackedBatch:
    """Texts packed back to back in rows: text `texts[i]` fills row `row[i]` from column
    `offset[i]` on and is segment `segment[i]` (1..K) of that row."""

    texts: np.ndarray
    row: np.ndarray
    offset: np.ndarray
    segment: np.ndarray
    shape: tuple[int, int, int]  # (B, L, K): rows, row length, texts per row at most

    @property
    def rows_used(self) -> int:
        return int(self.row.max()) + 1


def plan_packed(
    lengths: np.ndarray, policy: BucketPolicy, min_length: int
) -> list[Batch | PackedBatch]:
    """Pack texts into rows of at least `min_length` tokens (a grid length).

    Each row starts with the longest text left and is topped up with the shortest ones while
    they fit; a batch takes `policy.rows_for(L)` rows, L being the bucket of its longest text
    (or of `min_length`, unless the texts left need less). A batch in which no row got a second
    text is planned as a plain padded `Batch`.
    """
    order = np.argsort(-lengths, kind="stable").tolist()
    size = np.maximum(lengths, 1).tolist()  # an empty text still gets a slot of its own
    left = sum(size)
    batches: list[Batch | PackedBatch] = []
    head, tail = 0, len(order) - 1
    while head <= tail:
        longest = size[order[head]]
        _, L = policy.shape_for(1, max(longest, min(min_length, left, policy.seq_lengths[-1])))
        K = policy.segments_for(L)
        texts, row, offset, segment = [], [], [], []
        rows = 0
        while rows < policy.rows_for(L) and head <= tail:
            placed = [order[head]]
            used = size[order[head]]
            head += 1
            while head <= tail and len(placed) < K and used + size[order[tail]] <= L:
                placed.append(order[tail])
                used += size[order[tail]]
                tail -= 1
            column = 0
            for k, i in enumerate(placed, start=1):
                texts.append(i)
                row.append(rows)
                offset.append(column)
                segment.append(k)
                column += size[i]
            left -= used
            rows += 1
        if len(texts) == rows:  # one text per row: nothing was packed
            batches.append(Batch(np.asarray(texts, np.int64), policy.shape_for(rows, longest)))
            continue
        B, _ = policy.shape_for(rows, L)
        batches.append(
            PackedBatch(
                np.asarray(texts, np.int64),
                np.asarray(row, np.int64),
                np.asarray(offset, np.int64),
                np.asarray(segment, np.int64),
                (B, L, K),
            )
        )
    return batches


# ---------------------------------------------------------------- padding
@dataclasses.dataclass(frozen=True)
class TokenBatch:
    """A padded batch as the model consumes it; rows past `len(lengths)` are padding rows."""

    input_ids: np.ndarray  # [B, L] int32
    attention_mask: np.ndarray  # [B, L] int32
    token_type_ids: np.ndarray  # [B, L] int32
    lengths: np.ndarray  # [n] tokens per text, special tokens included
    truncated: np.ndarray  # [n] bool: the text was cut at max_seq_length


@dataclasses.dataclass(frozen=True)
class PackedTokenBatch:
    """Texts packed back to back in rows (see `batching.plan_packed`), as the model consumes
    them; padding has segment 0."""

    input_ids: np.ndarray  # [B, L] int32
    token_type_ids: np.ndarray  # [B, L] int32
    segment_ids: np.ndarray  # [B, L] int32: 1..K, the text's number within its row
    positions: np.ndarray  # [B, L] int32: each token's index within its text


def pad(tok: Tokenized, rows: Sequence[int], shape: tuple[int, int], pad_id: int) -> TokenBatch:
    """Texts `rows` of `tok` padded (right, with `pad_id`) into a `shape = (B, L)` batch.

    Padding rows keep one unmasked pad token so no attention row is empty.
    """
    B, L = shape
    rows = np.asarray(rows, dtype=np.int64)
    lengths = tok.lengths[rows]
    real = np.arange(L) < lengths[:, None]  # [n, L]
    source = np.where(real, tok.starts[rows][:, None] + np.arange(L), 0)
    input_ids = np.full((B, L), pad_id, dtype=np.int32)
    token_type_ids = np.zeros((B, L), dtype=np.int32)
    attention_mask = np.zeros((B, L), dtype=np.int32)
    n = len(rows)
    if tok.ids.size:
        input_ids[:n] = np.where(real, tok.ids[source], pad_id)
        if tok.type_ids is not None:
            token_type_ids[:n] = np.where(real, tok.type_ids[source], 0)
    attention_mask[:n] = real
    attention_mask[n:, 0] = 1
    return TokenBatch(input_ids, attention_mask, token_type_ids, lengths, tok.truncated[rows])


def pad_packed(tok: Tokenized, batch: PackedBatch, pad_id: int) -> PackedTokenBatch:
    """The texts of a packed batch, placed in its rows (padding: `pad_id`, segment 0)."""
    B, L, _ = batch.shape
    text, position, source = tok.token_sources(batch.texts)
    target = (batch.row * L + batch.offset)[text] + position
    input_ids = np.full(B * L, pad_id, dtype=np.int32)
    token_type_ids = np.zeros(B * L, dtype=np.int32)
    segment_ids = np.zeros(B * L, dtype=np.int32)
    positions = np.zeros(B * L, dtype=np.int32)
    input_ids[target] = tok.ids[source]
    if tok.type_ids is not None:
        token_type_ids[target] = tok.type_ids[source]
    segment_ids[target] = batch.segment[text]
    positions[target] = position
    return PackedTokenBatch(
        *(a.reshape(B, L) for a in (input_ids, token_type_ids, segment_ids, positions))
    )
