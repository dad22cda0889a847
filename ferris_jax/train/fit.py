"""`fit`: the training loop for the common case, a thin shell around `train_step`.

It orders the data (seeded, the same order on every run), steps, shows a bar, evaluates,
writes checkpoints (parameters and optimizer state as safetensors, the loop's position as
JSON, in one folder that appears whole) and resumes from the latest one exactly: a run
interrupted and resumed ends with the parameters an uninterrupted run ends with. Of the
checkpoint folder's entries it reads, replaces and removes only its own: `checkpoint-<step>`
folders that hold its trainer_state.json; a user's `checkpoint-best/` is never touched.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from ferris_jax.encoder import Encoder
from ferris_jax.errors import CheckpointError, require_int, require_number
from ferris_jax.files import atomic_directory, read_json_object, write_json
from ferris_jax.placement import Placement
from ferris_jax.train.data import (
    BatchSampler,
    NoDuplicatesBatchSampler,
    TrainDataset,
    collate,
    load_train_data,
)
from ferris_jax.train.losses import mnrl_loss, uses_in_batch_negatives
from ferris_jax.train.step import (
    Loss,
    TrainBatch,
    TrainState,
    adamw,
    check_learning_rate,
    check_loss_columns,
    init_state,
    linear_schedule_with_warmup,
    train_step,
)

Example = Sequence[Any]  # (text, text[, text...][, label])
# sentence-transformers' `BatchSamplers` names.
BATCH_SAMPLERS = {"batch_sampler": BatchSampler, "no_duplicates": NoDuplicatesBatchSampler}
CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "train_state.safetensors"
MANIFEST_FILE = "trainer_state.json"
FORMAT = 1


@dataclasses.dataclass
class History:
    """What `fit` measured: per batch step, and each evaluation (with its optimizer `step`)."""

    loss: list[float] = dataclasses.field(default_factory=list)
    learning_rate: list[float] = dataclasses.field(default_factory=list)
    grad_norm: list[float] = dataclasses.field(default_factory=list)
    evaluations: list[dict[str, float]] = dataclasses.field(default_factory=list)


def fit(
    encoder: Encoder,
    train_data: TrainDataset
    | Sequence[Example]
    | str
    | os.PathLike
    | Any
    | Sequence[TrainBatch]
    | Iterable[TrainBatch],
    *,
    loss: Loss = mnrl_loss,
    epochs: int = 1,
    steps: int | None = None,
    batch_size: int = 32,
    batch_sampler: Literal["batch_sampler", "no_duplicates"] | None = None,
    prompts: str | Mapping[str, str] | None = None,
    learning_rate: float = 5e-5,
    warmup: int | float = 0,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    accumulation_steps: int = 1,
    mini_batch_size: int | None = None,
    compute_dtype: str | None = None,
    seed: int = 0,
    evaluator: Callable[[Encoder], dict[str, float]] | None = None,
    evaluation_steps: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_steps: int = 500,
    resume: bool = True,
    callback: Callable[[int, dict[str, float]], Any] | None = None,
    show_progress_bar: bool | None = None,
) -> History:
    """Fine-tune `encoder` in place (`encoder.params`; save it with `encoder.save(path)`).

    Args:
        encoder: the model to train (loaded in float32: its parameters are the master weights).
        train_data: the examples, which `fit` samples (seeded) and batches itself: a
            `TrainDataset`, or anything `load_train_data` reads (a list of tuples of texts,
            e.g. (anchor, positive[, negatives...]), with an optional trailing number as the
            label ((a, b, 0.8) for `cosent_loss`); a JSON Lines path; a `datasets.Dataset`).
            Or ready `TrainBatch`es (a sequence, or an iterable with `set_epoch(epoch)` to
            reorder per epoch), taken in their order.
        loss: a loss of embeddings (`mnrl_loss`, `cosent_loss`, `matryoshka_loss(...)`, ...).
        epochs: passes over `train_data` (unless `steps` is given).
        steps: optimizer steps to run instead of whole epochs.
        batch_size: examples per batch when `fit` batches the examples.
        batch_sampler: "no_duplicates" (`NoDuplicatesBatchSampler`: no text twice in a batch)
            or "batch_sampler" (a plain seeded shuffle), as sentence-transformers names them.
            Default: "no_duplicates" for losses with in-batch negatives
            (`uses_in_batch_negatives(loss)`: MNRL and its variants), else "batch_sampler".
        prompts: a prompt for every text column, or a mapping from column name to prompt
            (see `column_prompts`), prepended as sentence-transformers' trainer does.
        learning_rate: peak AdamW learning rate.
        warmup: linear warmup, in optimizer steps (int) or as a fraction of them (float < 1).
        weight_decay: AdamW's decoupled weight decay (not on biases and LayerNorm weights).
        max_grad_norm: clip the global gradient norm to this (None: no clipping).
        accumulation_steps: batches whose gradients are averaged into one update.
        mini_batch_size: run the cached (GradCache) step, embedding this many texts at a time
            (batches are collated for it: packed in mini-batches of this many texts).
        compute_dtype: "float32" or "bfloat16"; default bfloat16 on GPUs, float32 elsewhere.
        seed: the data order's seed (the order of epoch e depends on (seed, e) only).
        evaluator: `evaluator(encoder) -> {metric: value}`, run every `evaluation_steps`
            optimizer steps (0: only at the end) with `encoder.params` set to the current ones.
        evaluation_steps: optimizer steps between evaluations.
        checkpoint_dir: where `checkpoint-<step>` folders go (the latest one is kept; other
            entries, e.g. a `checkpoint-best/` of the user's, are left alone).
        checkpoint_steps: optimizer steps between checkpoints (one is also written at the end).
        resume: continue from the latest checkpoint in `checkpoint_dir`, if there is one.
        callback: `callback(step, metrics)` after every batch: loss, learning_rate,
            grad_norm, epoch, and the evaluator's metrics when it ran.
        show_progress_bar: None shows a bar on a terminal only.

    Returns:
        The `History` of the whole run (a resumed run's includes the steps before the restart).
    """
    epochs = require_int("epochs", epochs)
    batch_size = require_int("batch_size", batch_size)
    accumulation_steps = require_int("accumulation_steps", accumulation_steps)
    checkpoint_steps = require_int("checkpoint_steps", checkpoint_steps)
    evaluation_steps = require_int("evaluation_steps", evaluation_steps, minimum=0)
    learning_rate = check_learning_rate(learning_rate)
    weight_decay = require_number("weight_decay", weight_decay)
    # Before any data is read or step taken:
    if (
        checkpoint_dir is not None
        and os.path.lexists(checkpoint_dir)
        and not os.path.isdir(checkpoint_dir)
    ):
        raise ValueError(
            f"checkpoint_dir {checkpoint_dir} is a file, not a folder: pass a folder (it "
            "is created if missing)"
        )
    if batch_sampler is None:
        batch_sampler = "no_duplicates" if uses_in_batch_negatives(loss) else "batch_sampler"
    if batch_sampler not in BATCH_SAMPLERS:
        raise ValueError(
            f"batch_sampler must be one of {sorted(BATCH_SAMPLERS)}, got {batch_sampler!r}"
        )
    data = _Data(encoder, train_data, batch_size, seed, batch_sampler, prompts, mini_batch_size)
    if data.dataset is not None:
        has_labels = data.dataset.labels is not None
        check_loss_columns(loss, data.dataset.column_names, has_labels, what="train_data")
    if steps is not None:
        total = require_int("steps", steps)
    elif data.batches_per_epoch is None:
        raise ValueError(
            "train_data has no length: give steps= (optimizer steps), or a sequence of batches"
        )
    else:
        total = epochs * data.batches_per_epoch // accumulation_steps
    if total < 1:
        raise ValueError(
            f"no optimizer step to run: {data.batches_per_epoch} batch(es) per epoch with "
            f"accumulation_steps={accumulation_steps}"
        )
    warmup_steps = _warmup_steps(warmup, total)
    schedule = linear_schedule_with_warmup(learning_rate, warmup_steps, total)
    optimizer = adamw(
        schedule,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        accumulation_steps=accumulation_steps,
    )
    step_fn = train_step(
        encoder, loss, optimizer, compute_dtype=compute_dtype, mini_batch_size=mini_batch_size
    )
    state = init_state(encoder.params, optimizer, encoder.placement)
    position = Position()
    history = History()
    run = {
        "seed": seed,
        "batch_size": batch_size,
        "accumulation_steps": accumulation_steps,
        "batch_sampler": batch_sampler if data.dataset is not None else None,
        "prompts": dict(prompts) if isinstance(prompts, Mapping) else prompts,
    }
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None and resume and (latest := latest_checkpoint(folder)) is not None:
        state, position, history = load_checkpoint(latest, state, run)
    if folder is not None:
        _check_checkpoint_dir(folder, position.step, total, checkpoint_steps)

    show = show_progress_bar if show_progress_bar is not None else _is_terminal(sys.stderr)
    pending: list[tuple[dict[str, jax.Array], float, int]] = []  # metrics not yet on the host

    def check_losses(count: int | None = None) -> None:
        """Stop on a non-finite loss among the first `count` pending steps' (all by default;
        read on the host), before anything of a diverged state is evaluated, saved or kept."""
        for i, (metrics, lr, epoch) in enumerate(pending[:count]):
            value = float(metrics["loss"])
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"the loss is {value} at step {len(history.loss) + i + 1} (epoch {epoch}, "
                    f"learning rate {lr:.3g}): training diverged, so fit stops without saving "
                    "or keeping this state (encoder.params are the last evaluated or the "
                    "initial ones). Lower learning_rate, check the labels and the loss, or "
                    "train with compute_dtype='float32'"
                )

    def flush(evaluation: dict[str, float] | None = None, keep: int = 0) -> None:
        """Move the pending metrics but the last `keep` to the history (waiting for their
        steps: keeping the newest lets the device run it while the host reads the others)."""
        done = pending[: len(pending) - keep]
        check_losses(len(done))  # the values read here anyway
        for i, (metrics, lr, epoch) in enumerate(done):
            values = {k: float(v) for k, v in metrics.items()}
            history.loss.append(values["loss"])
            history.grad_norm.append(values["grad_norm"])
            history.learning_rate.append(lr)
            if callback is not None:
                extra = evaluation if evaluation and i == len(done) - 1 else {}
                callback(
                    len(history.loss), {**values, "learning_rate": lr, "epoch": epoch, **extra}
                )
        del pending[: len(done)]

    started, examples = time.perf_counter(), 0
    bar = tqdm(total=total, initial=position.step, unit="step", disable=not show)
    with bar:
        while position.step < total:
            seen = 0
            for batch in data.epoch(position.epoch, skip=position.batch):
                seen += 1
                lr = float(schedule(position.step))
                state, metrics = step_fn(state, batch)
                position.batch += 1
                position.batches_done += 1
                examples += batch.size
                pending.append((metrics, lr, position.epoch))
                if position.batches_done % accumulation_steps:
                    continue
                position.step += 1
                last = position.step == total
                saving = folder is not None and (last or position.step % checkpoint_steps == 0)
                evaluating = evaluator is not None and (
                    last or bool(evaluation_steps and position.step % evaluation_steps == 0)
                )
                if evaluating or saving:
                    check_losses()  # the step's loss, read before its state is used
                evaluation = None
                if evaluating:
                    encoder.params = _params_for(encoder, state)
                    evaluation = {k: float(v) for k, v in evaluator(encoder).items()}
                    history.evaluations.append({"step": position.step, **evaluation})
                flush(evaluation, keep=0 if evaluation or saving or last else 1)
                if saving:
                    save_checkpoint(folder, state, position, history, run)
                elapsed = time.perf_counter() - started
                bar.set_postfix(
                    loss=f"{history.loss[-1]:.4f}" if history.loss else "-",
                    lr=f"{lr:.2e}",
                    pairs_per_s=f"{examples / max(elapsed, 1e-9):.0f}",
                    refresh=False,
                )
                bar.update(1)
                if last:
                    break
            else:
                if seen == 0 and position.batch == 0:
                    raise ValueError("train_data holds no batch")
                position.epoch += 1
                position.batch = 0
    flush()
    encoder.params = _params_for(encoder, state)
    return history


@dataclasses.dataclass
class Position:
    """Where a run is: optimizer `step`, batches done in all, and batch `batch` of `epoch`."""

    epoch: int = 0
    batch: int = 0
    batches_done: int = 0
    step: int = 0


class _Data:
    """The batches of each epoch: the examples sampled by (seed, epoch) and collated, or the
    caller's batches in their order."""

    def __init__(
        self,
        encoder: Encoder,
        data: Any,
        batch_size: int,
        seed: int,
        batch_sampler: str,
        prompts: str | Mapping[str, str] | None,
        mini_batch_size: int | None,
    ):
        self.encoder, self.prompts, self.batches = encoder, prompts, data
        self.mini_batch_size = mini_batch_size
        self.dataset: TrainDataset | None = None
        self.batches_per_epoch: int | None
        if _holds_batches(data):
            if prompts is not None:
                raise ValueError("prompts= applies to examples; ready TrainBatches have theirs")
            self.batches_per_epoch = len(data) if isinstance(data, Sequence) else None
            return
        try:
            self.dataset = load_train_data(data)
        except (TypeError, ValueError) as e:
            raise type(e)(f"train_data: {e}") from None
        if len(self.dataset.column_names) < 2:
            raise ValueError(
                f"train_data has one text column ({self.dataset.column_names[0]!r}); the losses "
                "take pairs, triplets or (anchor, positive, negatives...)"
            )
        self.sampler = BATCH_SAMPLERS[batch_sampler](self.dataset, batch_size, seed=seed)
        self.batches_per_epoch = len(self.sampler)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[TrainBatch]:
        """Epoch `epoch`'s batches after the first `skip`."""
        if self.dataset is None:
            if hasattr(self.batches, "set_epoch"):
                self.batches.set_epoch(epoch)
            for i, batch in enumerate(self.batches):
                if i >= skip:
                    yield batch
            return
        self.sampler.set_epoch(epoch)
        for i, indices in enumerate(self.sampler):
            if i >= skip:  # the sampler is seeded: an epoch's batches are the same every time
                yield collate(
                    self.encoder,
                    self.dataset,
                    indices,
                    prompts=self.prompts,
                    mini_batch_size=self.mini_batch_size,
                )


def _holds_batches(data: Any) -> bool:
    """Whether `data` is ready TrainBatches (a sequence of them, or an iterator)."""
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return len(data) > 0 and isinstance(data[0], TrainBatch)
    return isinstance(data, Iterator) or (
        isinstance(data, Iterable)
        and not isinstance(data, (str, bytes, TrainDataset))
        and not hasattr(data, "column_names")
    )


def _warmup_steps(warmup: int | float, total: int) -> int:
    """Warmup in optimizer steps from a step count or a fraction of `total` (transformers'
    warmup_ratio rounds up)."""
    if isinstance(warmup, float) and 0 <= warmup < 1:
        return math.ceil(warmup * total)
    return require_int("warmup", warmup, minimum=0)


def _params_for(encoder: Encoder, state: TrainState) -> Any:
    """The state's parameters as a copy in the encoder's dtype (the state's are donated)."""
    dtype = encoder.checkpoint.dtype
    return jax.tree.map(lambda x: jnp.array(x, dtype=dtype, copy=True), state.params)


def _is_terminal(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ---------------------------------------------------------------- checkpoints
def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The checkpoint `fit` wrote in `folder` with the highest step (`checkpoint-<step>`),
    or None."""
    found = [(step, sub) for step, sub in _checkpoints(Path(folder)) if is_checkpoint(sub)]
    return max(found)[1] if found else None


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, entry) of each entry of `folder` named `checkpoint-<step>`."""
    if not folder.is_dir():
        return []
    named = [(sub.name.removeprefix(CHECKPOINT_PREFIX), sub) for sub in folder.iterdir()]
    return [
        (int(number), sub)
        for number, sub in named
        if sub.name.startswith(CHECKPOINT_PREFIX) and number.isascii() and number.isdigit()
    ]


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a checkpoint `save_checkpoint` wrote: a folder whose trainer_state.json
    holds the keys ours writes (the Hugging Face trainer's file of that name holds others)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"format", "position", "tensors"} <= manifest.keys()


def _check_checkpoint_dir(folder: Path, step: int, total: int, every: int) -> None:
    """Refuse, before training, a `checkpoint_dir` that holds a `checkpoint-<step>` entry of
    someone else's where this run would write one."""
    saved = {s for s in range(step + 1, total + 1) if s % every == 0 or s == total}
    clash = [sub for number, sub in _checkpoints(folder) if number in saved]
    clash = [sub for sub in clash if not is_checkpoint(sub)]
    if clash:
        raise ValueError(
            f"checkpoint_dir {folder} holds {clash[0].name}, which fit did not write, where this "
            "run would save a checkpoint; move it away or pass another checkpoint_dir"
        )


def _named_leaves(state: TrainState) -> tuple[list[str], list[Any], Any]:
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(state)
    names = [jax.tree_util.keystr(path) for path, _ in with_paths]
    return names, [leaf for _, leaf in with_paths], treedef


def save_checkpoint(
    folder: str | os.PathLike,
    state: TrainState,
    position: Position,
    history: History,
    run: dict[str, Any],
) -> Path:
    """Write `folder/checkpoint-<step>` (parameters and optimizer state as safetensors, the
    position, history and run settings as JSON) atomically, then remove the older checkpoints
    `save_checkpoint` wrote (`is_checkpoint`), and nothing else."""
    from safetensors.numpy import save_file

    names, leaves, _ = _named_leaves(state)
    target = Path(folder) / f"{CHECKPOINT_PREFIX}{position.step}"
    if os.path.lexists(target) and not is_checkpoint(target):
        raise FileExistsError(
            f"{target} exists and fit did not write it; move it away or use another folder"
        )
    with atomic_directory(target) as staging:
        save_file(
            {
                n: np.ascontiguousarray(jax.device_get(x))
                for n, x in zip(names, leaves, strict=True)
            },
            str(staging / STATE_FILE),
        )
        write_json(
            staging / MANIFEST_FILE,
            {
                "format": FORMAT,
                "position": dataclasses.asdict(position),
                "run": run,
                "tensors": names,
                "history": dataclasses.asdict(history),
            },
        )
    for _, sub in _checkpoints(Path(folder)):
        if sub != target and is_checkpoint(sub):
            shutil.rmtree(sub, ignore_errors=True)
    return target


def load_checkpoint(
    path: str | os.PathLike, template: TrainState, run: dict[str, Any]
) -> tuple[TrainState, Position, History]:
    """A checkpoint written by `save_checkpoint`, into a state shaped like `template`.

    Raises:
        CheckpointError: naming the file and tensor, when the checkpoint is not this run's
            (other settings, another model or optimizer) or is unreadable.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    manifest = read_json_object(manifest_path, required=True)
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{manifest_path}: format {manifest.get('format')!r} is not {FORMAT}")
    if manifest.get("run") != run:
        raise CheckpointError(
            f"{manifest_path}: written by a run with {manifest.get('run')}, this one has {run}; "
            "resume with the same settings, or pass resume=False or another checkpoint_dir"
        )
    names, leaves, treedef = _named_leaves(template)
    try:
        tensors = load_file(str(path / STATE_FILE))
    except Exception as e:
        raise CheckpointError(f"{path / STATE_FILE}: not a readable safetensors file ({e})") from e
    # safetensors stores a scalar (a step count) as one element of shape [1].
    for name, leaf in zip(names, leaves, strict=True):
        if name in tensors and leaf.ndim == 0 and tensors[name].shape == (1,):
            tensors[name] = tensors[name].reshape(())
    problems = [f"missing tensor {n!r}" for n in names if n not in tensors]
    problems += [f"unexpected tensor {n!r}" for n in tensors if n not in set(names)]
    for name, leaf in zip(names, leaves, strict=True):
        got = tensors.get(name)
        if got is not None and (got.shape != leaf.shape or got.dtype != leaf.dtype):
            problems.append(
                f"tensor {name!r} is {got.dtype}{list(got.shape)}, the run needs "
                f"{leaf.dtype}{list(leaf.shape)}"
            )
    if problems:
        raise CheckpointError(
            f"{path / STATE_FILE} does not match this model and optimizer:\n  "
            + "\n  ".join(problems)
        )
    placement = Placement.of(template)
    # Copied on the device: the step donates the state, and buffers that alias numpy memory
    # cannot be donated (jax 0.4 aborts).
    arrays = [jnp.copy(placement.put(tensors[n])) for n in names]
    state = jax.tree.unflatten(treedef, arrays)
    history = History(**manifest["history"])
    return state, Position(**manifest["position"]), history
