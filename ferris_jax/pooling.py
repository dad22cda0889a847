"""Pooling token embeddings into one vector per text, as sentence-transformers does."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp

PoolingMode = Literal["cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
POOLING_MODES: tuple[str, ...] = PoolingMode.__args__

# sentence-transformers' 1_Pooling/config.json booleans, in its output-concatenation order.
_ST_FLAGS = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
    ("pooling_mode_weightedmean_tokens", "weightedmean"),
    ("pooling_mode_lasttoken", "lasttoken"),
)
_ST_ALIASES = {
    "mean_tokens": "mean",
    "cls_token": "cls",
    "max_tokens": "max",
    "weightedmean_tokens": "weightedmean",
}


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

    @classmethod
    def from_sentence_transformers(cls, config: dict[str, Any]) -> PoolingConfig:
        """Read sentence-transformers' `1_Pooling/config.json`."""
        if "pooling_mode" in config:  # sentence-transformers >= 6: a name or a list of names
            named = config["pooling_mode"]
            modes = tuple([named] if isinstance(named, str) else named)
            modes = tuple(_ST_ALIASES.get(m, m) for m in modes)
        else:  # older files: one boolean per mode
            modes = tuple(mode for key, mode in _ST_FLAGS if config.get(key, False)) or ("mean",)
        return cls(modes=modes, include_prompt=bool(config.get("include_prompt", True)))


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
    """`x / max(||x||, eps)` along the last axis (torch.nn.functional.normalize)."""
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, eps)
