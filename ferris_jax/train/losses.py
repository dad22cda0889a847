"""Contrastive losses as pure functions of embeddings, as sentence-transformers defines them.

Every loss takes float embeddings (any float dtype; computed in float32) and returns a scalar:
`mnrl_loss(anchors [B, E], positives [B, E], negatives [B, K, E] | None)`,
`mnrl_symmetric_loss(...)`, `cosent_loss(a [B, E], b [B, E], labels [B])`, and
`matryoshka_loss(base_loss, dims)` builds a loss of the same signature from any other. The
train step calls a loss as `loss(anchors, positives)`, `loss(anchors, positives, negatives)`
(the batch's negative columns stacked on axis 1) or `loss(a, b, labels=labels)`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp

from ferris_jax.pooling import l2_normalize
from ferris_jax.similarity import cos_sim, dot_score

Similarity = Literal["cosine", "dot"]
_SIMILARITIES = {"cosine": cos_sim, "dot": dot_score}


def _similarity(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    if name not in _SIMILARITIES:
        raise ValueError(f"similarity must be one of {sorted(_SIMILARITIES)}, got {name!r}")
    return _SIMILARITIES[name]


def _documents(positives: jax.Array, negatives: jax.Array | None) -> jax.Array:
    """Candidates `[B * (1 + K), E]`: the positives, then each negative column in turn (the
    order sentence-transformers concatenates them in)."""
    B, E = positives.shape
    if negatives is None:
        return positives
    if negatives.ndim == 2:  # one negative per anchor
        negatives = negatives[:, None, :]
    if negatives.shape[0] != B or negatives.shape[-1] != E or negatives.ndim != 3:
        raise ValueError(
            f"negatives must be [B, E] or [B, K, E] with B={B}, E={E}; got {negatives.shape}"
        )
    columns = jnp.swapaxes(negatives, 0, 1).reshape(-1, E)  # [K * B, E], column-major
    return jnp.concatenate([positives, columns.astype(positives.dtype)], axis=0)


def _check_pairs(a: jax.Array, b: jax.Array, what: str) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"{what} must both be [B, E] of one shape, got {a.shape} and {b.shape}")


def mnrl_loss(
    anchors: jax.Array,
    positives: jax.Array,
    negatives: jax.Array | None = None,
    *,
    scale: float = 20.0,
    similarity: Similarity = "cosine",
) -> jax.Array:
    """MultipleNegativesRankingLoss (InfoNCE with in-batch negatives): each anchor must rank
    its own positive above every other candidate of the batch.

    Args:
        anchors: `[B, E]` anchor (query) embeddings.
        positives: `[B, E]`; row i is anchor i's positive and a negative for the others.
        negatives: optional hard negatives, `[B, E]` or `[B, K, E]`; every one is a candidate
            for every anchor.
        scale: multiplies the similarities (1 / temperature); 20 as in sentence-transformers.
        similarity: "cosine" or "dot" (then use a scale of about 1).

    Returns:
        The mean cross-entropy of each anchor's positive among all candidates, a float32 scalar.
    """
    _check_pairs(anchors, positives, "anchors and positives")
    sim = _similarity(similarity)
    anchors = anchors.astype(jnp.float32)
    docs = _documents(positives.astype(jnp.float32), negatives)
    B = anchors.shape[0]
    scores = sim(anchors, docs) * scale  # [B, B * (1 + K)]
    positive = jnp.diagonal(scores[:, :B])
    return jnp.mean(jax.nn.logsumexp(scores, axis=1) - positive)


mnrl_loss.in_batch_negatives = True


def mnrl_symmetric_loss(
    anchors: jax.Array,
    positives: jax.Array,
    negatives: jax.Array | None = None,
    *,
    scale: float = 20.0,
    similarity: Similarity = "cosine",
) -> jax.Array:
    """MultipleNegativesSymmetricRankingLoss: the mean of `mnrl_loss` (anchor -> candidates)
    and its backward term (each positive must rank its own anchor above the other anchors).

    Args and Returns as in `mnrl_loss`; hard negatives are candidates of the forward term only,
    as in sentence-transformers.
    """
    _check_pairs(anchors, positives, "anchors and positives")
    sim = _similarity(similarity)
    anchors = anchors.astype(jnp.float32)
    positives = positives.astype(jnp.float32)
    B = anchors.shape[0]
    forward = sim(anchors, _documents(positives, negatives)) * scale  # [B, B * (1 + K)]
    backward = sim(positives, anchors) * scale  # [B, B]: positive i against every anchor
    positive = jnp.diagonal(forward[:, :B])
    log_z = (jax.nn.logsumexp(forward, axis=1) + jax.nn.logsumexp(backward, axis=1)) / 2
    return jnp.mean(log_z - positive)


mnrl_symmetric_loss.in_batch_negatives = True


def uses_in_batch_negatives(loss: Callable[..., jax.Array]) -> bool:
    """Whether `loss` treats the other rows of a batch as negatives (`mnrl_loss`,
    `mnrl_symmetric_loss`, a `functools.partial` or `matryoshka_loss` of them), so that its
    batches must not hold one text twice (`fit` then samples them with
    `NoDuplicatesBatchSampler`). A custom loss says so with `loss.in_batch_negatives = True`."""
    while isinstance(loss, functools.partial):
        loss = loss.func
    return bool(getattr(loss, "in_batch_negatives", False))


def cosent_loss(a: jax.Array, b: jax.Array, labels: jax.Array, *, scale: float = 20.0) -> jax.Array:
    """CoSENTLoss: for every two pairs whose labels say i is less similar than j, penalize
    `cos(a_i, b_i) > cos(a_j, b_j)`: `log(1 + sum exp(scale * (cos_i - cos_j)))`.

    Args:
        a, b: `[B, E]` embeddings of the pairs' two sides.
        labels: `[B]` similarity scores (only their order matters), e.g. STS scores / 5.
        scale: multiplies the cosine similarities; 20 as in sentence-transformers.

    Returns:
        A float32 scalar (0 for a batch without two differently labelled pairs).
    """
    _check_pairs(a, b, "a and b")
    labels = jnp.asarray(labels)
    if labels.shape != (a.shape[0],):
        raise ValueError(f"labels must be [B] with B={a.shape[0]}, got {labels.shape}")
    cos = jnp.sum(l2_normalize(a.astype(jnp.float32)) * l2_normalize(b.astype(jnp.float32)), -1)
    scores = cos * scale  # [B]
    lower = labels[:, None] < labels[None, :]  # pair i ranks below pair j
    diffs = jnp.where(lower, scores[:, None] - scores[None, :], -jnp.inf)  # [B, B]
    return jax.nn.logsumexp(jnp.concatenate([jnp.zeros(1, jnp.float32), diffs.ravel()]))


def truncate(embeddings: jax.Array, dim: int) -> jax.Array:
    """The first `dim` dimensions, L2-normalized again (sentence-transformers' `shrink`)."""
    return l2_normalize(embeddings[..., :dim])


def matryoshka_loss(
    base_loss: Callable[..., jax.Array],
    dims: Sequence[int],
    weights: Sequence[float] | None = None,
) -> Callable[..., jax.Array]:
    """MatryoshkaLoss: `base_loss` on the embeddings truncated to each of `dims` (and
    re-normalized, as sentence-transformers' MatryoshkaLoss does), weighted and summed.

    Args:
        base_loss: any loss of embeddings, e.g. `mnrl_loss` or `cosent_loss` (configure it with
            `functools.partial`).
        dims: the embedding sizes to train, e.g. `[384, 256, 128, 64]`.
        weights: one weight per dim (default 1 each).

    Returns:
        A loss with `base_loss`'s signature: every positional array argument of two or more
        axes (embeddings) is truncated; keyword arguments (`labels=`) pass through unchanged.
    """
    dims = [int(d) for d in dims]
    if not dims or any(d <= 0 for d in dims):
        raise ValueError(f"matryoshka dims must be a non-empty list of positive sizes, got {dims}")
    weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
    if len(weights) != len(dims):
        raise ValueError(f"matryoshka weights ({len(weights)}) and dims ({len(dims)}) differ")

    def loss(*args: jax.Array | None, **kwargs) -> jax.Array:
        widest = max(a.shape[-1] for a in args if a is not None and jnp.ndim(a) >= 2)
        if max(dims) > widest:
            raise ValueError(f"matryoshka dim {max(dims)} exceeds the embedding size {widest}")
        total = jnp.zeros((), jnp.float32)
        for dim, weight in sorted(zip(dims, weights, strict=True), reverse=True):
            shrunk = [
                truncate(a.astype(jnp.float32), dim) if a is not None and jnp.ndim(a) >= 2 else a
                for a in args
            ]
            total = total + weight * base_loss(*shrunk, **kwargs)
        return total

    loss.in_batch_negatives = uses_in_batch_negatives(base_loss)
    with contextlib.suppress(TypeError, ValueError):  # the base loss's columns, for errors
        loss.__signature__ = inspect.signature(base_loss)
    loss.__name__ = f"matryoshka_loss({getattr(base_loss, '__name__', 'loss')})"
    return loss
