"""Pooling token embeddings into one vector per text, as sentence-transformers does."""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

PoolingMode = Literal["cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
POOLING_MODES: tuple[str, ...] = PoolingMode.__args__


@dataclasses.dataclass(frozen=True)
class PoolingConfig:
    """Pooling modes (outputs concatenated in order) and whether prompt tokens count."""

    modes: tuple[PoolingMode, ...] = ("mean",)
    include_prompt: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "modes", tuple(self.modes))
        bad = [m for m in self.modes if m not in POOLING_MODES]
        if bad or not self.modes:
            raise ValueError(f"unknown pooling mode(s) {bad or '[]'}; choose from {POOLING_MODES}")

    @property
    def can_pack(self) -> bool:
        """Whether texts packed several per row can be pooled (max pooling has no packed form:
        it would need a `[B, K, L, D]` intermediate)."""
        return "max" not in self.modes


def pool(
    hidden: jax.Array, mask: jax.Array, mode: PoolingMode, positions: jax.Array | None = None
) -> jax.Array:
    """Pool `hidden [B, L, D]` where `mask` is set, in float32.

    Args:
        mask: `[B, L]` (one text per row; returns `[B, D]`) or `[B, K, L]` (K texts packed per
            row, one mask per text; returns `[B, K, D]`).
        positions: `[B, L]` index of each token within its text, for "weightedmean"'s weights;
            None means 0..L-1 in every row.

    Matches sentence-transformers' padded (right-padding) path, including its all-masked edge
    cases.
    """
    if mask.ndim == 2:
        return pool(hidden, mask[:, None], mode, positions)[:, 0]
    L = hidden.shape[1]
    x = hidden.astype(jnp.float32)  # [B, L, D]
    keep = mask.astype(bool)  # [B, K, L]
    m = keep.astype(jnp.float32)

    def at(index: jax.Array) -> jax.Array:  # [B, K] token indices -> [B, K, D]
        return jnp.take_along_axis(x, index[..., None], axis=1)

    if mode == "cls":  # the first pooled position: [CLS], or the first token after a prompt
        return at(jnp.argmax(keep, axis=-1))
    if mode == "max":
        return jnp.max(jnp.where(keep[..., None], x[:, None], -jnp.inf), axis=2)
    if mode == "lasttoken":
        from_end = jnp.where(keep.any(axis=-1), jnp.argmax(keep[..., ::-1], axis=-1), L - 1)
        last = L - 1 - from_end
        return at(last) * jnp.take_along_axis(m, last[..., None], axis=-1)
    if mode == "weightedmean":
        weights = jnp.arange(L)[None] if positions is None else positions
        m = m * (weights.astype(jnp.float32) + 1)[:, None, :]
    summed = jnp.einsum("bkl,bld->bkd", m, x, precision=jax.lax.Precision.HIGHEST)
    count = jnp.maximum(jnp.sum(m, axis=-1), 1e-9)[..., None]
    if mode == "mean_sqrt_len_tokens":
        return summed / jnp.sqrt(count)
    return summed / count


def pool_all(
    hidden: jax.Array,
    mask: jax.Array,
    config: PoolingConfig,
    positions: jax.Array | None = None,
) -> jax.Array:
    """Every configured mode, concatenated as sentence-transformers does: `[B, (K,) k*D]`."""
    outs = [pool(hidden, mask, mode, positions) for mode in config.modes]
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """`x / max(||x||, eps)` along the last axis (torch.nn.functional.normalize), with the
    norm in float32 and taken as `sqrt(max(||x||^2, eps^2))`, whose gradient is finite at a
    zero vector (an empty slot of a packed row)."""
    sum_sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True, dtype=jnp.float32)
    return (x / jnp.sqrt(jnp.maximum(sum_sq, eps * eps))).astype(x.dtype)
