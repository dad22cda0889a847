"""Similarity functions and top-k search over embeddings (pure; inputs are never modified)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ferris_jax.ops.top_k import top_k as exact_top_k
from ferris_jax.pooling import l2_normalize


def cos_sim(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine similarity of every row of `a [n, d]` with every row of `b [m, d]` -> `[n, m]`."""
    return dot_score(l2_normalize(jnp.atleast_2d(a)), l2_normalize(jnp.atleast_2d(b)))


def dot_score(a: jax.Array, b: jax.Array) -> jax.Array:
    """Dot product of every row of `a [n, d]` with every row of `b [m, d]` -> `[n, m]`."""
    return jnp.atleast_2d(a) @ jnp.atleast_2d(b).T


def euclidean_sim(a: jax.Array, b: jax.Array) -> jax.Array:
    """Negative Euclidean distance `[n, m]` (larger is more similar)."""
    a, b = jnp.atleast_2d(a), jnp.atleast_2d(b)
    return -jnp.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)


def manhattan_sim(a: jax.Array, b: jax.Array) -> jax.Array:
    """Negative Manhattan distance `[n, m]` (larger is more similar)."""
    a, b = jnp.atleast_2d(a), jnp.atleast_2d(b)
    return -jnp.sum(jnp.abs(a[:, None, :] - b[None, :, :]), axis=-1)


SIMILARITY_FUNCTIONS = {
    "cosine": cos_sim,
    "dot": dot_score,
    "euclidean": euclidean_sim,
    "manhattan": manhattan_sim,
}


def semantic_search(
    queries: jax.Array, corpus: jax.Array, *, top_k: int = 10, score_fn=cos_sim
) -> tuple[jax.Array, jax.Array]:
    """The `top_k` best corpus rows per query: `(scores [n, k], indices [n, k])`, best first
    (k = min(top_k, corpus rows); equal scores lower index first; `ops.top_k`)."""
    scores = score_fn(queries, corpus)
    return exact_top_k(scores, min(top_k, scores.shape[-1]))
