"""Training data: examples from Python lists, JSON Lines files or a `datasets.Dataset`; the
no-duplicates batch sampler; and batches of examples as padded token arrays per column.

Columns follow sentence-transformers: every text column in order (anchor, positive,
negatives...), and a "label"/"labels"/"score"/"scores" column, if any, as the float label (e.g.
CoSENT's similarity scores). A batch (`collate`, the one path from examples to the train step's
`TrainBatch`) is tokenized per column with its prompt, then packed several texts per row
(`batching.plan_packed`, as `encode` packs) where that computes fewer tokens than padding every
column, else padded; both forms use the encoder's bucket grid (`Encoder.bucket_policy`), so a
run compiles a handful of shapes.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ferris_jax.batching import Batch, BucketPolicy, PackedBatch, pad, pad_packed, plan_packed
from ferris_jax.errors import require_int
from ferris_jax.tokenize import validate_texts
from ferris_jax.train.step import Column, PackedColumns, TrainBatch

if TYPE_CHECKING:
    from ferris_jax.encoder import Encoder
    from ferris_jax.tokenize import Tokenized

# The columns sentence-transformers' data collator takes as the label, first found first.
LABEL_COLUMNS = ("label", "labels", "score", "scores")
# Packed rows have at least this many tokens (a bucket length; longer texts get longer rows).
PACK_LENGTH = 128


def default_column_names(n: int) -> tuple[str, ...]:
    """Names of `n` text columns as sentence-transformers' hard-negative mining writes them:
    anchor, positive, then negative (one) or negative_1, negative_2, ... (several)."""
    if n <= 2:
        return ("anchor", "positive")[:n]
    if n == 3:
        return ("anchor", "positive", "negative")
    return ("anchor", "positive", *(f"negative_{i}" for i in range(1, n - 1)))


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class TrainDataset:
    """Training examples held as columns: `columns[c][i]` is text column c of example i.

    Build with `from_list`, `from_jsonl`, `from_hf` or `load_train_data`.
    """

    column_names: tuple[str, ...]
    columns: tuple[tuple[str, ...], ...]
    labels: np.ndarray | None = None  # float32 [n]

    def __post_init__(self):
        if not self.columns or len(self.columns) != len(self.column_names):
            raise ValueError(
                f"need at least one text column and one name per column, got {len(self.columns)} "
                f"columns named {self.column_names}"
            )
        n = len(self.columns[0])
        sizes = [len(c) for c in self.columns] + ([] if self.labels is None else [len(self.labels)])
        if any(s != n for s in sizes):
            raise ValueError(f"columns {self.column_names} (and labels) differ in length: {sizes}")
        if self.labels is not None:
            _check_labels(self.labels, lambda i: f"labels[{i}] (example {i})")

    def __len__(self) -> int:
        return len(self.columns[0])

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        """Example i: its texts, then its label if the dataset has labels."""
        texts = tuple(c[i] for c in self.columns)
        return texts if self.labels is None else (*texts, float(self.labels[i]))

    def select(self, indices: Sequence[int]) -> TrainDataset:
        """The examples `indices`, in that order."""
        rows = np.asarray(indices, dtype=np.int64)
        return TrainDataset(
            self.column_names,
            tuple(tuple(c[i] for i in rows) for c in self.columns),
            None if self.labels is None else self.labels[rows],
        )

    @classmethod
    def from_list(
        cls, rows: Iterable[Sequence[Any]], column_names: Sequence[str] | None = None
    ) -> TrainDataset:
        """Examples from tuples of texts: pairs, triplets or (anchor, positive, negatives...),
        each optionally followed by a number, the label (e.g. `(s1, s2, 0.8)` for CoSENT).

        Args:
            rows: one tuple per example, all of the same form.
            column_names: names of the text columns (default: `default_column_names`).
        """
        rows = list(rows)
        if not rows:
            raise ValueError("rows is empty: training needs at least one example")
        first = rows[0]
        if isinstance(first, (str, bytes, Mapping)) or not isinstance(first, Sequence):
            raise TypeError(
                f"rows[0] is {type(first).__name__}; each example must be a tuple of texts, "
                "e.g. (anchor, positive) or (sentence1, sentence2, score)"
            )
        labelled = len(first) > 0 and _is_number(first[-1])
        width = len(first) - labelled
        if width < 1:
            raise ValueError(f"rows[0] = {first!r:.80} has no text")
        texts: list[list[str]] = [[] for _ in range(width)]
        labels: list[float] = []
        for i, row in enumerate(rows):
            if isinstance(row, (str, bytes, Mapping)) or not isinstance(row, Sequence):
                raise TypeError(f"rows[{i}] is {type(row).__name__}, expected a tuple of texts")
            if len(row) != len(first) or (labelled and not _is_number(row[-1])):
                raise ValueError(
                    f"rows[{i}] has {len(row)} items, rows[0] has {len(first)} "
                    f"({width} texts{' and a label' if labelled else ''}); every example must "
                    "have the same form"
                )
            for c in range(width):
                if not isinstance(row[c], str):
                    raise TypeError(
                        f"rows[{i}][{c}] is {type(row[c]).__name__} ({row[c]!r:.40}), expected "
                        "str (only the last item may be a number, the label)"
                    )
                texts[c].append(row[c])
            if labelled:
                labels.append(float(row[-1]))
        names = tuple(column_names) if column_names is not None else default_column_names(width)
        if len(names) != width:
            raise ValueError(f"column_names has {len(names)} names for {width} text columns")
        for c, column in enumerate(texts):
            _check_texts(column, lambda i, c=c: f"rows[{i}][{c}]")
        label_array = None
        if labelled:
            label_array = _labels(labels, lambda i: f"rows[{i}][{width}] (the label)")
        return cls(names, tuple(tuple(t) for t in texts), label_array)

    @classmethod
    def from_jsonl(
        cls,
        path: str | os.PathLike,
        columns: Sequence[str] | None = None,
        label_column: str | None = None,
    ) -> TrainDataset:
        """Examples from a JSON Lines file, one object per line (blank lines skipped).

        Args:
            path: the file.
            columns: the text columns, in order; default: every key of the first line that is
                not the label, in the order written (other keys on later lines are an error).
            label_column: the label's key; default: the first of "label", "labels", "score",
                "scores" on the first line, if any.

        Errors name the file and line.
        """
        path = os.fspath(path)
        records: list[tuple[int, dict]] = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(record, dict):
                    raise ValueError(
                        f"{path}:{lineno}: expected a JSON object of columns, got "
                        f"{type(record).__name__}"
                    )
                records.append((lineno, record))
        if not records:
            raise ValueError(f"{path}: no examples (the file is empty)")
        first_line, first = records[0]
        if label_column is None:
            label_column = next((k for k in LABEL_COLUMNS if k in first), None)
        inferred = columns is None
        names = tuple(k for k in first if k != label_column) if inferred else tuple(columns)
        if not names:
            raise ValueError(f"{path}:{first_line}: no text column")
        expected = set(names) | ({label_column} if label_column else set())
        texts: list[list[str]] = [[] for _ in names]
        labels: list[float] = []
        for lineno, record in records:
            where = f"{path}:{lineno}"
            missing = [k for k in expected if k not in record]
            if missing:
                raise ValueError(f"{where}: missing column(s) {sorted(missing)}")
            if inferred and len(record) != len(expected):
                extra = sorted(set(record) - expected)
                raise ValueError(
                    f"{where}: column(s) {extra} not on the first line; pass columns=[...] to "
                    "choose the text columns"
                )
            for c, name in enumerate(names):
                value = record[name]
                if not isinstance(value, str):
                    raise TypeError(
                        f"{where}: column {name!r} is {type(value).__name__} ({value!r:.40}), "
                        "expected a string"
                    )
                texts[c].append(value)
            if label_column is not None:
                value = record[label_column]
                if not _is_number(value):
                    raise TypeError(
                        f"{where}: label column {label_column!r} is {type(value).__name__} "
                        f"({value!r:.40}), expected a number"
                    )
                labels.append(float(value))
        lines = [lineno for lineno, _ in records]
        for c, name in enumerate(names):
            _check_texts(texts[c], lambda i, name=name: f"{path}:{lines[i]}: column {name!r}")
        label_array = None
        if label_column is not None:
            where = lambda i: f"{path}:{lines[i]}: label column {label_column!r}"  # noqa: E731
            label_array = _labels(labels, where)
        return cls(names, tuple(tuple(t) for t in texts), label_array)

    @classmethod
    def from_hf(cls, dataset: Any) -> TrainDataset:
        """Examples from a Hugging Face `datasets.Dataset`, its columns taken as
        sentence-transformers takes them: every column in order as text, except the first of
        "label", "labels", "score", "scores" (the label) and "dataset_name"."""
        if hasattr(dataset, "keys") and not hasattr(dataset, "column_names"):
            raise TypeError(f"expected one datasets.Dataset, got {type(dataset).__name__}")
        if isinstance(getattr(dataset, "column_names", None), dict):
            raise TypeError(
                f"expected one datasets.Dataset, got a DatasetDict with splits "
                f"{sorted(dataset.column_names)}; pass one split, e.g. dataset['train']"
            )
        if not hasattr(dataset, "column_names"):
            raise TypeError(f"expected a datasets.Dataset, got {type(dataset).__name__}")
        names = [c for c in dataset.column_names if c != "dataset_name"]
        label_column = next((k for k in LABEL_COLUMNS if k in names), None)
        names = tuple(c for c in names if c != label_column)
        if not names:
            raise ValueError(f"the dataset has no text column (columns: {dataset.column_names})")
        texts = []
        for name in names:
            column = list(dataset[name])
            for i, value in enumerate(column):
                if not isinstance(value, str):
                    raise TypeError(
                        f"dataset column {name!r} row {i} is {type(value).__name__} "
                        f"({value!r:.40}), expected str"
                    )
            _check_texts(column, lambda i, name=name: f"dataset column {name!r} row {i}")
            texts.append(tuple(column))
        labels = None
        if label_column is not None:
            labels = _labels(
                dataset[label_column], lambda i: f"dataset column {label_column!r} row {i}"
            )
        return cls(names, tuple(texts), labels)


def _check_texts(texts: list[str], where) -> None:
    """validate_texts' check of each text (UTF-8 encodable), its error naming `where(i)`."""
    try:
        validate_texts(texts)
    except ValueError as e:
        i = int(str(e).split("]", 1)[0].rsplit("[", 1)[1])
        raise ValueError(f"{where(i)} {str(e).split(' ', 1)[1]}") from None


def _labels(values: Any, where) -> np.ndarray:
    """`values` as float32 labels `[n]`, checked by `_check_labels`."""
    with np.errstate(over="ignore"):  # a number beyond float32 becomes inf: refused below
        labels = np.asarray(values, dtype=np.float32)
    _check_labels(labels, where)
    return labels


def _check_labels(labels: np.ndarray, where) -> None:
    """ValueError naming `where(i)` of the first label that is NaN or infinite in float32 (a
    loss trains on it silently to NaN, or ranks by it wrongly)."""
    bad = np.flatnonzero(~np.isfinite(labels))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{where(i)} is {labels[i]}: a label must be a finite number (float32); "
            f"{bad.size} label(s) are not, fix or drop those examples"
        )


def load_train_data(source: Any, **kwargs: Any) -> TrainDataset:
    """A `TrainDataset` from whatever holds the examples: a `TrainDataset` (returned as is), a
    list of tuples (`TrainDataset.from_list`), the path of a JSON Lines file
    (`TrainDataset.from_jsonl`) or a `datasets.Dataset` (`TrainDataset.from_hf`); `kwargs` go
    to the reader."""
    if isinstance(source, TrainDataset):
        return source
    if isinstance(source, (str, os.PathLike)):
        return TrainDataset.from_jsonl(source, **kwargs)
    if hasattr(source, "column_names"):
        return TrainDataset.from_hf(source, **kwargs)
    if isinstance(source, Sequence):
        return TrainDataset.from_list(source, **kwargs)
    raise TypeError(
        f"training data must be a list of tuples, a JSON Lines path or a datasets.Dataset, got "
        f"{type(source).__name__}"
    )


# ---------------------------------------------------------------- sampling
def no_duplicates_pass(
    order: Sequence[int], values: Sequence[frozenset[str]], batch_size: int, drop_last: bool
) -> Iterator[list[int]]:
    """One pass of sentence-transformers' no-duplicates batching over the examples in `order`.

    Each batch takes the next examples in `order` whose texts (`values[i]`) share none with the
    batch so far, deferring the others to later batches in their order. Batches short of
    `batch_size` (when duplicates are left over at the end) are yielded unless `drop_last`.
    """
    nxt = list(range(1, len(order) + 1))
    if nxt:
        nxt[-1] = -1
    head = 0 if len(order) else -1
    while head != -1:
        seen: set[str] = set()
        batch: list[int] = []
        current, previous, full = head, -1, False
        while current != -1:
            following = nxt[current]
            index = int(order[current])
            if not values[index].isdisjoint(seen):
                previous, current = current, following
                continue
            batch.append(index)
            if previous == -1:
                head = following
            else:
                nxt[previous] = following
            if len(batch) == batch_size:
                full = True
                yield batch
                break
            seen.update(values[index])
            current = following
        if not full and not drop_last:
            yield batch


class BatchSampler:
    """Seeded, shuffled batches of example indices: sentence-transformers' default
    (`BatchSamplers.BATCH_SAMPLER`), for losses without in-batch negatives (e.g. CoSENT).

    Each epoch is a permutation of the examples (numpy, seeded by `(seed, epoch)`) cut into
    batches of `batch_size`; the last one is shorter unless `drop_last`.

    Args:
        dataset: the examples.
        batch_size: examples per batch.
        drop_last: leave out a last batch short of `batch_size`.
        seed: the shuffle's seed; the same seed and epoch give the same batches.
    """

    def __init__(
        self, dataset: TrainDataset, batch_size: int, *, drop_last: bool = False, seed: int = 0
    ):
        self.dataset = dataset
        self.batch_size = require_int("batch_size", batch_size)
        self.drop_last = drop_last
        self.seed = require_int("seed", seed, minimum=0)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle as for epoch `epoch` (0-based) from now on."""
        self.epoch = require_int("epoch", epoch, minimum=0)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def permutations(self) -> Iterator[np.ndarray]:
        """The shuffles of this epoch, one per pass."""
        rng = np.random.default_rng((self.seed, self.epoch))
        while True:
            yield rng.permutation(len(self.dataset))

    def __iter__(self) -> Iterator[list[int]]:
        order = next(self.permutations())
        for b in range(len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size].tolist()


class NoDuplicatesBatchSampler(BatchSampler):
    """Seeded batches of example indices in which no text appears twice (across all text
    columns), so in-batch negatives never hold a positive's twin; equal in behaviour to
    sentence-transformers' `NoDuplicatesBatchSampler`.

    Each epoch shuffles the examples (numpy, seeded by `(seed, epoch)`) and fills batches in
    that order, deferring examples that repeat a text already in the batch. `len(sampler)` is
    `n // batch_size` with `drop_last`, else `ceil(n / batch_size)`; when a pass yields fewer
    batches than that (many duplicates), up to two more shuffled passes top it up, as
    sentence-transformers does.

    Args:
        dataset: the examples.
        batch_size: examples per batch.
        drop_last: leave out batches short of `batch_size`.
        seed: the shuffle's seed; the same seed and epoch give the same batches.
    """

    max_resample_passes = 2

    def __init__(
        self, dataset: TrainDataset, batch_size: int, *, drop_last: bool = False, seed: int = 0
    ):
        super().__init__(dataset, batch_size, drop_last=drop_last, seed=seed)
        self.values = [frozenset(texts) for texts in zip(*dataset.columns, strict=True)]

    def __iter__(self) -> Iterator[list[int]]:
        if not len(self.dataset):
            return
        expected = len(self)
        shuffles = self.permutations()
        yielded = 0
        for batch in no_duplicates_pass(
            next(shuffles), self.values, self.batch_size, self.drop_last
        ):
            yield batch
            yielded += 1
        if yielded == 0:
            return
        for _ in range(self.max_resample_passes):
            if yielded >= expected:
                return
            for batch in no_duplicates_pass(
                next(shuffles), self.values, self.batch_size, self.drop_last
            ):
                yield batch
                yielded += 1
                if yielded >= expected:
                    return


# ---------------------------------------------------------------- batches
def column_prompts(
    prompts: str | Mapping[str, str] | None, column_names: Sequence[str]
) -> tuple[str, ...]:
    """The prompt of each column, as sentence-transformers' training argument `prompts` gives
    them: one string for every column, or a mapping from column name to prompt (columns not
    named get none). No prompt by default: a model's saved prompts are not applied in
    training, as in sentence-transformers."""
    if prompts is None:
        return tuple("" for _ in column_names)
    if isinstance(prompts, str):
        return tuple(prompts for _ in column_names)
    if not isinstance(prompts, Mapping):
        raise TypeError(
            f"prompts must be a string or a mapping of column name to prompt, got "
            f"{type(prompts).__name__}"
        )
    unknown = sorted(set(prompts) - set(column_names))
    if unknown:
        raise ValueError(
            f"prompts names column(s) {unknown} that the data does not have; its columns are "
            f"{list(column_names)}"
        )
    for name, p in prompts.items():
        if not isinstance(p, str):
            raise TypeError(f"prompts[{name!r}] is {type(p).__name__}, expected a str")
    return tuple(prompts.get(name, "") for name in column_names)


def collate(
    encoder: Encoder,
    dataset: TrainDataset,
    indices: Sequence[int],
    *,
    prompts: str | Mapping[str, str] | None = None,
    pack: bool | None = None,
    mini_batch_size: int | None = None,
) -> TrainBatch:
    """Examples `indices` of `dataset` as the train step's `TrainBatch`: each column tokenized
    with its prompt prepended (as sentence-transformers' data collator does), then either
    every column padded to one length of the encoder's bucket grid (`encoder.bucket_policy`),
    one row per example, or all the columns' texts packed into rows of at least `PACK_LENGTH`
    tokens (`batching.plan_packed`), a grid number of rows. Either way the embeddings, loss and
    gradients are the same, and a run compiles a handful of shapes.

    Args:
        encoder: supplies the tokenizer, `max_seq_length` and the bucket policy.
        dataset: the examples.
        indices: which examples, in batch order.
        prompts: see `column_prompts`.
        pack: True: pack (an error where the model's pooling cannot be packed); False: pad;
            None: pack where the model can and packed rows hold fewer tokens than padded ones.
        mini_batch_size: for the cached step (`train_step(mini_batch_size=...)`): texts are
            packed in mini-batches of this many, each in rows of one shape, which the step
            embeds one at a time.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or not len(indices):
        raise ValueError(f"a batch takes a list of at least one example index, got {indices!r:.80}")
    bad = indices[(indices < 0) | (indices >= len(dataset))]
    if len(bad):
        raise IndexError(f"example index {int(bad[0])} is out of range for {len(dataset)} examples")
    if pack and not encoder.can_pack:
        pooling = encoder.checkpoint.head.pooling.modes
        raise ValueError(
            f"pack=True: {encoder.checkpoint.name}'s pooling {pooling} has no packed form "
            "(max pooling); use pack=False or None"
        )
    if mini_batch_size is not None:
        mini_batch_size = require_int("mini_batch_size", mini_batch_size)
    B = len(indices)
    tokenizer = encoder.tokenizer
    prompts = column_prompts(prompts, dataset.column_names)
    # Every text of every column, column by column: text c * B + b is column c, example b.
    tok = tokenizer.encode(
        [p + texts[i] for p, texts in zip(prompts, dataset.columns, strict=True) for i in indices]
    )
    prompt_lengths = np.repeat([tokenizer.prompt_length(p) for p in prompts], B).astype(np.int32)
    labels = None if dataset.labels is None else dataset.labels[indices]
    policy = encoder.bucket_policy(B)
    # One length for all columns: one program per bucket length, not per combination of the
    # columns' lengths, and the step embeds the columns in one pass.
    _, L = policy.shape_for(1, int(tok.lengths.max(initial=1)))
    if pack is not False and encoder.can_pack:
        packed = _pack(
            tok, prompt_lengths, policy, tokenizer.pad_token_id, len(prompts), mini_batch_size
        )
        if packed is not None and (pack or np.prod(packed.input_ids.shape) < len(tok) * L):
            return TrainBatch(packed, labels)
    columns = []
    for c in range(len(prompts)):
        padded = pad(tok, np.arange(c * B, (c + 1) * B), (B, L), tokenizer.pad_token_id)
        columns.append(
            Column(
                padded.input_ids,
                padded.attention_mask,
                padded.token_type_ids,
                prompt_lengths[c * B : (c + 1) * B],
            )
        )
    return TrainBatch(tuple(columns), labels)


def _pack(
    tok: Tokenized,
    prompt_lengths: np.ndarray,
    policy: BucketPolicy,
    pad_id: int,
    num_columns: int,
    mini_batch_size: int | None,
) -> PackedColumns | None:
    """The texts of `tok` (`num_columns` columns, column by column; `prompt_lengths` per text)
    packed in rows `[R, L]`, or with `mini_batch_size` in N mini-batches of that many texts
    in rows `[N, R, L]` of one shape; None where no row would hold two texts."""
    n = len(tok)
    chunk = min(mini_batch_size or n, n)
    plans = []
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        lengths = tok.lengths[start : start + count]
        plans.append((start, plan_packed(lengths, policy.holding_all(count), PACK_LENGTH)[0]))
    if not any(isinstance(plan, PackedBatch) for _, plan in plans):
        return None
    plans = [_as_packed(plan, start) for start, plan in plans]
    N = len(plans)
    R, L, K = (max(plan.shape[i] for plan in plans) for i in range(3))
    input_ids = np.full((N, R, L), pad_id, np.int32)
    token_type_ids, segment_ids, positions = (np.zeros((N, R, L), np.int32) for _ in range(3))
    slots = np.empty(n, np.int32)
    slot_prompt = np.zeros(N * R * K, np.int32)
    for i, plan in enumerate(plans):
        rows = pad_packed(tok, plan, pad_id)
        r, length, _ = plan.shape
        input_ids[i, :r, :length] = rows.input_ids
        token_type_ids[i, :r, :length] = rows.token_type_ids
        segment_ids[i, :r, :length] = rows.segment_ids
        positions[i, :r, :length] = rows.positions
        slot = (i * R + plan.row) * K + plan.segment - 1
        slots[plan.texts] = slot
        slot_prompt[slot] = prompt_lengths[plan.texts]
    row_start = np.arange(N * R).reshape(N, R, 1) * K
    token_slot = row_start + np.maximum(segment_ids - 1, 0)
    prompt_length = np.where(segment_ids > 0, slot_prompt[token_slot], 0).astype(np.int32)
    arrays = [input_ids, token_type_ids, segment_ids, positions, prompt_length]
    if mini_batch_size is None:
        arrays = [a[0] for a in arrays]
    return PackedColumns(*arrays, slots.reshape(num_columns, -1), K)


def _as_packed(plan: Batch | PackedBatch, start: int) -> PackedBatch:
    """`plan` with its texts counted from `start`; a padded `Batch` as rows of one text."""
    if isinstance(plan, PackedBatch):
        return dataclasses.replace(plan, texts=plan.texts + start)
    rows = np.arange(len(plan.texts))
    ones = np.ones_like(rows)
    return PackedBatch(plan.texts + start, rows, 0 * rows, ones, (*plan.shape, 1))


def make_batch(
    encoder: Encoder,
    examples: Sequence[Sequence[Any]],
    labels: Sequence[float] | np.ndarray | None = None,
    *,
    prompts: str | Mapping[str, str] | None = None,
    pack: bool | None = None,
    mini_batch_size: int | None = None,
) -> TrainBatch:
    """One `TrainBatch` of all `examples` (`collate` of `TrainDataset.from_list(examples)`).

    Args:
        encoder: supplies the tokenizer, `max_seq_length` and the bucket policy.
        examples: B tuples of texts, (anchor, positive[, negatives...]) or the two sides of a
            pair, each optionally followed by its label.
        labels: `[B]` floats (e.g. similarity scores for `cosent_loss`), for examples without.
        prompts: see `column_prompts`.
        pack, mini_batch_size: see `collate`.
    """
    dataset = TrainDataset.from_list(examples)
    if labels is not None:
        if dataset.labels is not None:
            raise ValueError("labels given twice: in the examples and as labels=")
        labels = np.asarray(labels, dtype=np.float32)
        if labels.shape != (len(dataset),):
            raise ValueError(
                f"labels must be one number per example ({len(dataset)}), got {labels.shape}"
            )
        dataset = dataclasses.replace(dataset, labels=labels)
    return collate(
        encoder,
        dataset,
        range(len(dataset)),
        prompts=prompts,
        pack=pack,
        mini_batch_size=mini_batch_size,
    )


def iter_batches(
    encoder: Encoder,
    dataset: TrainDataset,
    sampler: Iterable[Sequence[int]],
    *,
    prompts: str | Mapping[str, str] | None = None,
    pack: bool | None = None,
    mini_batch_size: int | None = None,
) -> Iterator[TrainBatch]:
    """`collate` over the batches of indices `sampler` yields (e.g. a
    `NoDuplicatesBatchSampler`)."""
    for indices in sampler:
        yield collate(
            encoder, dataset, indices, prompts=prompts, pack=pack, mini_batch_size=mini_batch_size
        )
