"""`ferris_jax.load`: the entry point from a name to a ready Encoder."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from ferris_jax.checkpoint import load_checkpoint, resolve
from ferris_jax.compilation import enable_compilation_cache
from ferris_jax.encoder import Encoder


def load(
    name_or_path: str | os.PathLike = "sentence-transformers/all-MiniLM-L6-v2",
    *,
    dtype: str | jnp.dtype = "float32",
    max_seq_length: int | None = None,
    device: jax.Device | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    compilation_cache: bool | str | os.PathLike = True,
) -> Encoder:
    """Load a sentence-embedding model.

    Args:
        name_or_path: a local checkpoint directory, a preset name (`ferris-jax models`) or a
            Hugging Face hub id (local cache first; HF_HUB_OFFLINE respected).
        dtype: parameter and compute dtype: float32, bfloat16 or float16 (LayerNorm statistics
            and pooling are always float32).
        max_seq_length: override the model's maximum tokens per text.
        device: where parameters live and programs run (default: JAX's default device).
        revision, cache_dir: passed to huggingface_hub for hub ids.
        compilation_cache: True (default directory), False, or a directory for JAX's
            persistent compilation cache.

    Raises:
        ModelNotFoundError: the name resolves to nothing on this machine.
        CheckpointError: the checkpoint is incomplete or inconsistent (the message names the file).
    """
    if compilation_cache:
        enable_compilation_cache(None if compilation_cache is True else compilation_cache)
    path, preset = resolve(name_or_path, revision=revision, cache_dir=cache_dir)
    checkpoint = load_checkpoint(
        path, preset=preset, dtype=dtype, max_seq_length=max_seq_length, device=device
    )
    return Encoder(checkpoint, device=device)
