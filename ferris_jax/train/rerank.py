"""Training rerankers (cross-encoders): a pure optax step over `Reranker.apply` and a loss of
its logits (`rerank_losses`), and `fit_reranker`, a small loop around it.

The step is `(params, opt_state, batch, labels) -> (params, opt_state, loss)`: a `PairBatch`
of P tokenized pairs gives logits `[P, num_labels]`; the loss sees them as the labels ask:
pointwise losses one score per pair (`labels [P]`), listwise ones `[n, m]` groups (`labels
[n, m]`: pair `i * m + j` is query i's document j). The optimizer is `step.adamw`, set up as
sentence-transformers' CrossEncoder trainer (transformers' Trainer) sets it up.

`fit` is not reused: its data, batching, step and checkpoints are built around an `Encoder`'s
text columns and embeddings; a reranker's examples are pairs with labels, one forward pass per
batch. Training runs without dropout (the models here have none; sentence-transformers trains
with the config's dropout, 0.1 for BERT).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from ferris_jax._compat import register_dataclass
from ferris_jax.batching import pad
from ferris_jax.errors import require_int
from ferris_jax.reranker import Reranker
from ferris_jax.tokenize import validate_pairs
from ferris_jax.train import rerank_losses
from ferris_jax.train.step import adamw

LossName = Literal["bce", "cross_entropy", "mse", "lambda", "mnrl"]
# (logits [P, num_labels], labels [P] or [n, m]) -> float32 scalar
RerankLoss = Callable[[jax.Array, jax.Array], jax.Array]


def _groups(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """One score per pair, shaped `[n, m]` as the labels."""
    if logits.shape[-1] != 1 or labels.ndim != 2 or logits.shape[0] != labels.size:
        raise ValueError(
            f"a listwise loss takes one logit per pair and labels [n, m] with n * m pairs, got "
            f"logits {logits.shape} and labels {labels.shape}"
        )
    return logits.reshape(labels.shape)


# sentence-transformers' CrossEncoder losses, with their defaults, as (logits, labels) losses.
LOSSES: dict[str, RerankLoss] = {
    "bce": rerank_losses.binary_cross_entropy_loss,
    "cross_entropy": rerank_losses.cross_entropy_loss,
    "mse": rerank_losses.mse_loss,
    "lambda": lambda logits, labels: rerank_losses.lambda_loss(_groups(logits, labels), labels),
    # labels [n, 1 + k] give the groups only: the positive is column 0.
    "mnrl": lambda logits, labels: rerank_losses.multiple_negatives_ranking_loss(
        _groups(logits, labels)
    ),
}


def resolve_loss(loss: LossName | RerankLoss) -> RerankLoss:
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r} is not one of {sorted(LOSSES)} (or pass a callable)")
    return LOSSES[loss]


@register_dataclass
@dataclasses.dataclass(frozen=True)
class PairBatch:
    """P tokenized text pairs, padded: `[P, L]` int32 arrays as `Reranker.apply` takes them."""

    input_ids: jax.Array
    attention_mask: jax.Array
    token_type_ids: jax.Array


def pair_batch(
    reranker: Reranker, pairs: Sequence[Sequence[str]], bucket: bool = False
) -> PairBatch:
    """The pairs tokenized as `predict` does, padded to the longest; with `bucket`, to the
    next power of two (at least 16, at most `max_seq_length`): few shapes to compile."""
    tok = reranker.tokenizer.encode_pairs(*validate_pairs(pairs))
    longest = int(tok.lengths.max(initial=1))
    L = min(max(16, 1 << (longest - 1).bit_length()), reranker.max_seq_length) if bucket else 0
    L = max(L, longest)
    batch = pad(tok, np.arange(len(tok)), (len(tok), L), reranker.tokenizer.pad_token_id)
    return PairBatch(batch.input_ids, batch.attention_mask, batch.token_type_ids)


def init(
    reranker: Reranker, optimizer: optax.GradientTransformation, params: nnx.State | None = None
) -> tuple[nnx.State, Any]:
    """Float32 copies of `params` (default `reranker.params`; the step donates them) and the
    optimizer's fresh state."""
    params = reranker.params if params is None else params
    params = jax.tree.map(lambda x: jnp.array(x, dtype=jnp.float32, copy=True), params)
    return params, optimizer.init(params)


def rerank_step(
    reranker: Reranker,
    loss: LossName | RerankLoss = "bce",
    optimizer: optax.GradientTransformation | None = None,
) -> Callable[[nnx.State, Any, PairBatch, jax.Array], tuple[nnx.State, Any, jax.Array]]:
    """The jitted step `(params, opt_state, batch, labels) -> (params, opt_state, loss)`.

    `params` and `opt_state` are donated (use the returned ones; start from `init`). One
    program is compiled per batch shape.

    Args:
        reranker: the model (its graph and implementation choices); single device.
        loss: "bce" (labels `[P]` in [0, 1]), "cross_entropy" (integer classes `[P]`), "mse",
            "lambda" (labels `[n, m]`), "mnrl" (`[n, 1 + k]` groups, the positive first), or a
            callable `(logits [P, num_labels], labels) -> scalar`.
        optimizer: default `adamw(2e-5, weight_decay=0.01)` (clipping at norm 1).
    """
    if reranker.placement.mesh is not None:
        raise NotImplementedError(
            "rerank_step runs on one device; load the reranker with one device"
        )
    loss_fn = resolve_loss(loss)
    optimizer = optimizer or adamw(2e-5, weight_decay=0.01)

    def value(params: nnx.State, batch: PairBatch, labels: jax.Array) -> jax.Array:
        logits = reranker.apply(params, batch.input_ids, batch.attention_mask, batch.token_type_ids)
        return loss_fn(logits.astype(jnp.float32), labels)

    def step(params: nnx.State, opt_state: Any, batch: PairBatch, labels: jax.Array):
        loss_value, grads = jax.value_and_grad(value)(params, batch, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss_value

    return jax.jit(step, donate_argnums=(0, 1))


def fit_reranker(
    reranker: Reranker,
    pairs: Sequence[Sequence[str]] | Sequence[Sequence[Sequence[str]]],
    labels: Sequence[Any] | np.ndarray,
    *,
    loss: LossName | RerankLoss = "bce",
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    weight_decay: float = 0.01,
    warmup_steps: int = 0,
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    shuffle: bool = True,
    show_progress_bar: bool | None = None,
) -> list[float]:
    """Fine-tune `reranker` in place (`reranker.params`; save with `save_pretrained`).

    Args:
        reranker: the cross-encoder (loaded in float32: its parameters are the master weights).
        pairs: the examples: (query, document) pairs with `labels [n]` (pointwise losses), or
            n groups of m pairs each with `labels [n, m]` (listwise losses).
        labels: one per pair, or one row of m per group.
        loss: see `rerank_step`.
        epochs: passes over the examples.
        batch_size: examples (pairs, or groups) per step.
        learning_rate, weight_decay, warmup_steps, max_grad_norm: AdamW as transformers'
            Trainer runs it: linear warmup, then linear decay to 0 at the last step. The
            defaults are sentence-transformers' `CrossEncoder.fit`'s (2e-5, 0.01, 0, 1.0);
            its newer trainer's are transformers' (5e-5, 0.0).
        seed: the shuffle's seed (epoch e shuffles with `seed + e`).
        shuffle: reorder the examples each epoch.
        show_progress_bar: a bar of steps when True.

    Returns:
        The loss of every step.
    """
    labels = np.asarray(labels)
    if len(pairs) != len(labels):
        raise ValueError(f"{len(pairs)} examples but {len(labels)} labels; give one per example")
    epochs, batch_size = require_int("epochs", epochs), require_int("batch_size", batch_size)
    grouped = labels.ndim == 2
    per_epoch = -(-len(pairs) // batch_size)
    optimizer = adamw(
        learning_rate,
        total_steps=epochs * per_epoch,
        warmup_steps=warmup_steps,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
    )
    step = rerank_step(reranker, loss, optimizer)
    params, opt_state = init(reranker, optimizer)
    dtype = np.float32 if np.issubdtype(labels.dtype, np.floating) else np.int32
    losses = []
    bar = tqdm(total=epochs * per_epoch, unit="step", disable=not show_progress_bar)
    for epoch in range(epochs):
        order = np.arange(len(pairs))
        if shuffle:
            order = np.random.default_rng(seed + epoch).permutation(len(pairs))
        for start in range(0, len(pairs), batch_size):
            rows = order[start : start + batch_size]
            chosen = [p for r in rows for p in pairs[r]] if grouped else [pairs[r] for r in rows]
            batch = pair_batch(reranker, chosen, bucket=True)
            params, opt_state, value = step(
                params, opt_state, batch, jnp.asarray(labels[rows], dtype)
            )
            losses.append(float(value))
            bar.update()
    bar.close()
    reranker.params = jax.tree.map(lambda x, p: x.astype(p.dtype), params, reranker.params)
    return losses
