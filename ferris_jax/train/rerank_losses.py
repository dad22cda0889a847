"""Cross-encoder (reranker) losses as pure functions of the model's logits, as
sentence-transformers' `cross_encoder.losses` define them (defaults included).

A reranker scores (query, document) pairs; every loss here takes those scores (logits, any
float dtype, computed in float32) and labels and returns a float32 scalar:

- pointwise: `binary_cross_entropy_loss(logits [n], labels [n])`,
  `cross_entropy_loss(logits [n, c], labels [n])`, `mse_loss(logits [n], labels [n])`;
- listwise, one row per query: `lambda_loss(logits [n, m], labels [n, m], mask=[n, m])`,
  `rank_net_loss(...)`, `list_net_loss(...)`;
- per query, the positive in column 0: `multiple_negatives_ranking_loss(logits [n, 1 + k])`,
  `margin_mse_loss(logits [n, 1 + k], labels)`.

Lists of unequal length: sentence-transformers pads each query's documents to the longest list
with logit -1e16 and label -inf. Here the caller passes `[n, m]` arrays padded with any finite
values and `mask [n, m]` (True for real documents); the loss puts -1e16 / -inf in the padded
places itself, so padding gets no gradient and changes nothing.

`activation_fn` is applied to the logits before the loss, as in sentence-transformers (where it
defaults to the identity for every loss but `multiple_negatives_ranking_loss`'s sigmoid). It is
not the activation a reranker applies at inference (a sigmoid for one label).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Activation = Callable[[jax.Array], jax.Array] | None
WeightingScheme = Literal["none", "ndcg_loss1", "ndcg_loss2", "lambda_rank", "ndcg_loss2pp"]
# (gain [n, m], discount [1, m], labels by predicted rank [n, m]) -> pair weights [n, m, m]
WeightingFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

_PAD_LOGIT = -1e16  # sentence-transformers' logit for a padded document
_IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss's default ignore_index


def _activate(logits: jax.Array, activation_fn: Activation) -> jax.Array:
    logits = jnp.asarray(logits).astype(jnp.float32)
    return logits if activation_fn is None else activation_fn(logits)


def _vector(logits: jax.Array, labels: jax.Array, what: str) -> tuple[jax.Array, jax.Array]:
    """Scores `[n]` (a `[n, 1]` model output is flattened) and `n` float labels."""
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.ndim != 1 or labels.size != logits.shape[0]:
        raise ValueError(
            f"{what} takes logits [n] (one score per pair) and n labels, got {logits.shape} and "
            f"{labels.shape}"
        )
    return logits, labels.reshape(-1).astype(jnp.float32)


# ---------------------------------------------------------------- pointwise
def binary_cross_entropy_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    pos_weight: float | jax.Array | None = None,
    activation_fn: Activation = None,
) -> jax.Array:
    """BinaryCrossEntropyLoss: `BCEWithLogits` of each pair's logit against its label.

    Args:
        logits: `[n]` (or `[n, 1]`) raw scores; the sigmoid is part of the loss.
        labels: `[n]`, 1 for relevant and 0 for irrelevant pairs, or soft targets in [0, 1].
        pos_weight: weight of the positive term (torch's `pos_weight`), e.g. the ratio of
            negatives to positives; None for 1.
        activation_fn: applied to the logits first; None (the identity) as in
            sentence-transformers.

    Returns:
        The mean over pairs of `-(w y log s(x) + (1 - y) log(1 - s(x)))`, a float32 scalar.
    """
    logits, labels = _vector(logits, labels, "binary_cross_entropy_loss")
    x = _activate(logits, activation_fn)
    log_weight = (
        1.0 if pos_weight is None else 1.0 + (jnp.asarray(pos_weight, jnp.float32) - 1.0) * labels
    )
    # softplus(-x) = -log s(x), stable for large |x|, as torch computes it.
    return jnp.mean((1.0 - labels) * x + log_weight * jax.nn.softplus(-x))


def cross_entropy_loss(
    logits: jax.Array, labels: jax.Array, *, activation_fn: Activation = None
) -> jax.Array:
    """CrossEntropyLoss: softmax cross-entropy over `c` classes (e.g. NLI's three labels).

    Args:
        logits: `[n, c]` raw scores per class.
        labels: `[n]` (or `[n, 1]`) integer classes, where -100 marks a pair to leave out
            (torch's `ignore_index`); or float class probabilities `[n, c]`.
        activation_fn: applied to the logits first; None (the identity) as in
            sentence-transformers.

    Returns:
        The mean cross-entropy over the pairs not left out, a float32 scalar.
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy_loss takes logits [n, c], got {logits.shape}")
    log_p = jax.nn.log_softmax(_activate(logits, activation_fn), axis=-1)  # [n, c]
    if jnp.issubdtype(labels.dtype, jnp.floating):
        if labels.shape != logits.shape:
            raise ValueError(
                f"float labels are class probabilities [n, c] = {logits.shape}, got "
                f"{labels.shape}; pass integer classes [n] otherwise"
            )
        return jnp.mean(-jnp.sum(labels.astype(jnp.float32) * log_p, axis=-1))
    if labels.shape == (logits.shape[0], 1):
        labels = labels[:, 0]
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must be [n] classes with n={logits.shape[0]}, got {labels.shape}")
    keep = labels != _IGNORE_INDEX
    picked = jnp.take_along_axis(log_p, jnp.where(keep, labels, 0)[:, None], axis=-1)[:, 0]
    return -jnp.sum(jnp.where(keep, picked, 0.0)) / jnp.sum(keep)


def mse_loss(
    logits: jax.Array, labels: jax.Array, *, activation_fn: Activation = None
) -> jax.Array:
    """MSELoss: mean squared error of each pair's score against a target score (distillation
    from a teacher's scores or gold labels).

    Args:
        logits: `[n]` (or `[n, 1]`) scores.
        labels: `[n]` target scores.
        activation_fn: applied to the logits first (e.g. `jax.nn.sigmoid` when the teacher's
            scores are in [0, 1]); None (the identity) as in sentence-transformers.
    """
    logits, labels = _vector(logits, labels, "mse_loss")
    return jnp.mean((_activate(logits, activation_fn) - labels) ** 2)


# ---------------------------------------------------------------- per query, positive first
def multiple_negatives_ranking_loss(
    logits: jax.Array,
    *,
    scale: float | None = 10.0,
    activation_fn: Activation = jax.nn.sigmoid,
) -> jax.Array:
    """MultipleNegativesRankingLoss of cross-encoders: each query must score its positive above
    its negatives, cross-entropy with the positive as the class.

    sentence-transformers scores, for each of the batch's n queries, the pair with its positive,
    `num_negatives` (default 4) pairs with documents of other rows drawn at random (see
    `in_batch_negatives`) and the pairs with its own hard negatives, in that order. Which pairs
    get scored is the caller's job; this loss takes their scores.

    Args:
        logits: `[n, 1 + k]` scores: column 0 the (query, positive) pair, the others the
            (query, negative) pairs.
        scale: multiplies the activated scores (1 / temperature); 10 as in sentence-transformers.
            None or 0 leaves them as they are.
        activation_fn: applied to the logits first; the sigmoid by default, as in
            sentence-transformers; None for none.

    Returns:
        The mean over queries of `logsumexp(scores) - scores[0]`, a float32 scalar.
    """
    logits = jnp.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(
            f"multiple_negatives_ranking_loss takes logits [n, 1 + k], got {logits.shape}"
        )
    scores = _activate(logits, activation_fn)
    if scale:
        scores = scores * scale
    return jnp.mean(jax.nn.logsumexp(scores, axis=-1) - scores[:, 0])


def in_batch_negatives(
    key: jax.Array | int,
    batch_size: int,
    *,
    num_columns: int = 1,
    num_negatives: int | None = 4,
) -> jax.Array:
    """Which of the batch's documents each query is scored against as in-batch negatives, as
    sentence-transformers' cross-encoder `MultipleNegativesRankingLoss` picks them.

    The candidates are the batch's document columns (the positives, then each hard-negative
    column) flattened column by column: candidate `c * batch_size + j` is column c of row j.
    Row i may take any candidate of another row. With `num_negatives` None or at least the
    `(batch_size - 1) * num_columns` candidates there are, every one is taken, in order
    (deterministic, as in sentence-transformers); otherwise `num_negatives` distinct ones are
    drawn uniformly at random without replacement. sentence-transformers draws with
    `torch.multinomial` on torch's generator, which no JAX key reproduces: the draw has the same
    distribution, not the same values, and the loss of the scored pairs is equal either way.

    Args:
        key: a `jax.random` key, or an int seed.
        batch_size: the number of (query, positive, ...) rows.
        num_columns: documents per row: 1 (the positive) + the number of hard negatives.
        num_negatives: in-batch negatives per query; None for all.

    Returns:
        int32 `[batch_size, k]` candidate numbers: score (query i, candidate `[i, j]`) as column
        `1 + j` of `multiple_negatives_ranking_loss`'s logits (the hard negatives follow).
    """
    B, C = int(batch_size), int(num_columns)
    if B < 1 or C < 1:
        raise ValueError(f"batch_size and num_columns must be >= 1, got {B} and {C}")
    own = np.tile(np.eye(B, dtype=bool), (1, C))  # [B, B * C]: row i's own documents
    valid = B * C - C
    if num_negatives is None or num_negatives >= valid:
        every = np.broadcast_to(np.arange(B * C, dtype=np.int32), (B, B * C))
        return jnp.asarray(every[~own].reshape(B, valid))
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0 or None, got {num_negatives}")
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(int(key))
    # Uniform without replacement: the k largest of independent uniform draws.
    priority = jnp.where(own, -1.0, jax.random.uniform(key, (B, B * C)))
    return jax.lax.top_k(priority, num_negatives)[1].astype(jnp.int32)


def margin_mse_loss(
    logits: jax.Array, labels: jax.Array, *, activation_fn: Activation = None
) -> jax.Array:
    """MarginMSELoss: mean squared error of the score margins `positive - negative` against
    gold margins.

    Args:
        logits: `[n, 1 + k]` scores, the (query, positive) pair in column 0.
        labels: gold margins `[n, k]` (or `[n]` for k = 1), or gold scores `[n, 1 + k]` from
            which the margins are taken, as sentence-transformers accepts them.
        activation_fn: applied to the logits first; None (the identity) as in
            sentence-transformers.
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels).astype(jnp.float32)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"margin_mse_loss takes logits [n, 1 + k] with k >= 1, got {logits.shape}")
    n, k = logits.shape[0], logits.shape[1] - 1
    if labels.shape == logits.shape:
        labels = labels[:, :1] - labels[:, 1:]
    if labels.shape == (n,):
        labels = labels[:, None]
    if labels.shape != (n, k):
        raise ValueError(
            f"labels must be margins [n, k] = {(n, k)} or scores [n, 1 + k], got {labels.shape}"
        )
    scores = _activate(logits, activation_fn)
    return jnp.mean((scores[:, :1] - scores[:, 1:] - labels) ** 2)


# ---------------------------------------------------------------- listwise
def _lists(
    logits: jax.Array, labels: jax.Array, mask: jax.Array | None, what: str
) -> tuple[jax.Array, jax.Array, jax.Array]:
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    mask = jnp.ones(logits.shape, bool) if mask is None else jnp.asarray(mask, bool)
    if logits.ndim != 2 or labels.shape != logits.shape or mask.shape != logits.shape:
        raise ValueError(
            f"{what} takes logits, labels and mask of one shape [n, m], got {logits.shape}, "
            f"{labels.shape} and {mask.shape}"
        )
    return logits, labels.astype(jnp.float32), mask


def _ndcg_loss2(gain: jax.Array, discount: jax.Array, _: jax.Array) -> jax.Array:
    m = gain.shape[1]
    pos = jnp.arange(1, m + 1)
    delta = jnp.abs(pos[:, None] - pos[None, :])  # [m, m] rank distance
    d = jnp.abs(discount[0])
    # delta - 1 is -1 on the diagonal; it wraps to the last position as in torch, then is zeroed.
    deltas = jnp.abs(1.0 / d[(delta - 1) % m] - 1.0 / d[delta % m])
    deltas = jnp.where(jnp.eye(m, dtype=bool), 0.0, deltas)
    return deltas[None, :, :] * jnp.abs(gain[:, :, None] - gain[:, None, :])


def _lambda_rank(gain: jax.Array, discount: jax.Array, _: jax.Array) -> jax.Array:
    return jnp.abs(1.0 / discount[:, :, None] - 1.0 / discount[:, None, :]) * jnp.abs(
        gain[:, :, None] - gain[:, None, :]
    )


def _weighting(scheme: WeightingScheme | WeightingFn | None, mu: float) -> WeightingFn:
    schemes: dict[str, WeightingFn] = {
        "none": lambda gain, discount, y: jnp.ones((1, 1, 1), jnp.float32),
        "ndcg_loss1": lambda gain, discount, y: (gain / discount)[:, :, None],
        "ndcg_loss2": _ndcg_loss2,
        "lambda_rank": _lambda_rank,
        "ndcg_loss2pp": lambda gain, discount, y: (
            mu * _ndcg_loss2(gain, discount, y) + _lambda_rank(gain, discount, y)
        ),
    }
    if scheme is None:
        return schemes["none"]
    if callable(scheme):
        return scheme
    if scheme not in schemes:
        raise ValueError(
            f"weighting_scheme must be one of {sorted(schemes)} or a function, got {scheme!r}"
        )
    return schemes[scheme]


def lambda_loss(
    logits: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None = None,
    *,
    weighting_scheme: WeightingScheme | WeightingFn | None = "ndcg_loss2pp",
    mu: float = 10.0,
    k: int | None = None,
    sigma: float = 1.0,
    eps: float = 1e-10,
    reduction_log: Literal["natural", "binary"] = "binary",
    activation_fn: Activation = None,
) -> jax.Array:
    """LambdaLoss (Wang et al. 2018): a weighted pairwise logistic loss over each query's
    documents that bounds a ranking metric (NDCG by default).

    Documents are ranked by their scores; for every two documents of a query whose labels differ
    (whose labels are both set, for "ndcg_loss1"), at least one of them in the top `k`, the loss
    adds `-weight * log sigmoid(sigma * (s_i - s_j))` (i ranked above j) and takes the mean over
    those pairs. Ties in the scores rank the earlier document first (a stable sort): what
    sentence-transformers' `torch.sort` does for up to 16 documents per query; on longer lists
    its order of tied scores is the unstable sort's, which the loss depends on.

    Args:
        logits: `[n, m]` scores of each query's (up to) m documents.
        labels: `[n, m]` relevance of each document (binary or graded; gains `2^label - 1`).
        mask: `[n, m]` bool, True for real documents and False for padding (lists shorter than
            m); None when every list is full. Padded places may hold any finite values.
        weighting_scheme: "ndcg_loss2pp" (NDCG-Loss2++, `mu * ndcg_loss2 + lambda_rank`, the
            default as in sentence-transformers), "ndcg_loss2", "lambda_rank", "ndcg_loss1",
            "none" or None (RankNet), or a function `(gain [n, m], discount [1, m], labels in
            predicted order [n, m]) -> weights [n, m, m]`.
        mu: the weight of NDCG-Loss2 in "ndcg_loss2pp"; 10 as in sentence-transformers.
        k: only pairs with a document in the top k count (NDCG@k); None or 0 for all.
        sigma: multiplies the score differences.
        eps: lower bound of each query's ideal DCG.
        reduction_log: "binary" (log2, the default) or "natural".
        activation_fn: applied to the real documents' logits first; None (the identity).

    Returns:
        A float32 scalar (0 when no pair counts).
    """
    logits, labels, mask = _lists(logits, labels, mask, "lambda_loss")
    if reduction_log not in ("natural", "binary"):
        raise ValueError(f"reduction_log must be 'natural' or 'binary', got {reduction_log!r}")
    weights_fn = _weighting(weighting_scheme, mu)
    _, m = logits.shape  # n queries, m documents each
    scores = jnp.where(mask, _activate(logits, activation_fn), _PAD_LOGIT)
    labels = jnp.where(mask, labels, -jnp.inf)

    order = jnp.argsort(scores, axis=-1, descending=True, stable=True)
    scores_sorted = jnp.take_along_axis(scores, order, axis=-1)
    true_by_pred = jnp.take_along_axis(labels, order, axis=-1)  # labels in predicted order
    true_sorted = -jnp.sort(-labels, axis=-1)  # ideal order

    true_diffs = true_by_pred[:, :, None] - true_by_pred[:, None, :]  # [n, m, m]
    pairs = jnp.isfinite(true_diffs)  # both documents real
    if weighting_scheme != "ndcg_loss1":
        pairs = pairs & (true_diffs > 0)
    top = k or m
    rank = jnp.arange(m)
    pairs = pairs & ((rank[:, None] < top) | (rank[None, :] < top))[None, :, :]

    true_by_pred = jnp.maximum(true_by_pred, 0.0)
    true_sorted = jnp.maximum(true_sorted, 0.0)
    discount = jnp.log2(1.0 + jnp.arange(1, m + 1, dtype=jnp.float32))[None, :]  # [1, m]
    ideal = ((2.0**true_sorted - 1.0) / discount)[:, :top]
    max_dcg = jnp.maximum(jnp.sum(ideal, axis=-1), eps)  # [n]
    gain = (2.0**true_by_pred - 1.0) / max_dcg[:, None]
    weights = weights_fn(gain, discount, true_by_pred)

    diffs = jnp.clip(scores_sorted[:, :, None] - scores_sorted[:, None, :], -1e8, 1e8)
    diffs = jnp.where(jnp.isnan(diffs), 0.0, diffs)
    losses = weights * jax.nn.log_sigmoid(sigma * diffs)
    if reduction_log == "binary":
        losses = losses / math.log(2)
    count = jnp.sum(pairs)
    return -jnp.sum(jnp.where(pairs, losses, 0.0)) / jnp.maximum(count, 1)


def rank_net_loss(
    logits: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None = None,
    *,
    k: int | None = None,
    sigma: float = 1.0,
    eps: float = 1e-10,
    reduction_log: Literal["natural", "binary"] = "binary",
    activation_fn: Activation = None,
) -> jax.Array:
    """RankNetLoss: `lambda_loss` without weights (every differently labelled pair counts
    alike). Args as in `lambda_loss`."""
    return lambda_loss(
        logits,
        labels,
        mask,
        weighting_scheme="none",
        k=k,
        sigma=sigma,
        eps=eps,
        reduction_log=reduction_log,
        activation_fn=activation_fn,
    )


def list_net_loss(
    logits: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None = None,
    *,
    activation_fn: Activation = None,
) -> jax.Array:
    """ListNetLoss: cross-entropy between the softmax of each query's scores and the softmax of
    its labels (top-one probabilities), averaged over queries.

    Args:
        logits, labels, mask: `[n, m]` as in `lambda_loss`.
        activation_fn: applied to the real documents' logits first; None (the identity).
    """
    logits, labels, mask = _lists(logits, labels, mask, "list_net_loss")
    scores = jnp.where(mask, _activate(logits, activation_fn), _PAD_LOGIT)
    target = jax.nn.softmax(jnp.where(mask, labels, -jnp.inf), axis=-1)
    return jnp.mean(-jnp.sum(target * jax.nn.log_softmax(scores, axis=-1), axis=-1))
