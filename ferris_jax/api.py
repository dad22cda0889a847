"""`ferris_jax.load` and `ferris_jax.load_reranker`: the entry points from a name to a ready
Encoder or Reranker."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from ferris_jax.encoder import Encoder
from ferris_jax.loading import load_checkpoint, load_classifier, resolve
from ferris_jax.ops.impl import check_impls
from ferris_jax.placement import Placement
from ferris_jax.platforms import defaults_for, dtype_policy, parse_dtype, platform_of
from ferris_jax.reranker import Reranker
from ferris_jax.runtime import backend as backends
from ferris_jax.runtime.compilation import enable_compilation_cache, repairing_cache


def load(
    name_or_path: str | os.PathLike = "sentence-transformers/all-MiniLM-L6-v2",
    *,
    dtype: str | jnp.dtype = "float32",
    max_seq_length: int | None = None,
    backend: str | None = None,
    device: jax.Device | None = None,
    devices: backends.DeviceChoice = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    compilation_cache: bool | str | os.PathLike = True,
    impls: Mapping[str, str] | None = None,
) -> Encoder:
    """Load a sentence-embedding model.

    Args:
        name_or_path: a local checkpoint directory, a preset name (`ferris-jax models`) or a
            Hugging Face hub id (local cache first; HF_HUB_OFFLINE respected).
        dtype: parameter and compute dtype: float32, bfloat16 or float16 (LayerNorm statistics
            and pooling are always float32).
        max_seq_length: override the model's maximum tokens per text.
        backend: "auto" (default, or `$FERRIS_JAX_BACKEND`): Apple GPU plugin > CUDA/ROCm >
            TPU > CPU, an accelerator being used only if it passes a capability probe (else one
            warning and the CPU); or a platform name such as "cuda", "metaljax", "mps", "cpu".
        device: a specific device (skips backend selection and the probe).
        devices: run over several devices, data parallel (parameters replicated, each batch
            split by rows; `encode`'s `batch_size` is then per device): "local" (every device
            of this process on the chosen platform), "all" (every device of every process,
            after `jax.distributed.initialize`: for training across hosts), a count n (this
            process's first n) or a list of devices. Default: one device.
        revision, cache_dir: passed to huggingface_hub for hub ids.
        compilation_cache: True (default directory), False, or a directory for JAX's
            persistent compilation cache.
        impls: how this encoder's programs implement ops, e.g. `{"layer_norm": "xla",
            "attention": "einsum"}` (see `ferris_jax.ops.impl`); ops left out follow
            `ops.use_impl(...)` and the environment, else "auto" (the platform's choice).

    Raises:
        ModelNotFoundError: the name resolves to nothing on this machine.
        CheckpointError: the checkpoint is incomplete or inconsistent (the message names the file).
    """
    impls = check_impls(impls or {})
    if device is not None and devices is not None:
        raise ValueError("pass device= (one device) or devices= (several), not both")
    path, preset = resolve(name_or_path, revision=revision, cache_dir=cache_dir)
    with repairing_cache():  # the probe and the parameter casts compile too
        dtype_name, chosen, placement = _runtime(dtype, backend, device, devices, compilation_cache)
        checkpoint = load_checkpoint(
            path,
            preset=preset,
            dtype=dtype_name,
            max_seq_length=max_seq_length,
            placement=placement,
        )
        return Encoder(checkpoint, placement=placement, backend=chosen, impls=impls)


def _runtime(
    dtype: str | jnp.dtype,
    backend: str | None,
    device: jax.Device | None,
    devices: backends.DeviceChoice,
    compilation_cache: bool | str | os.PathLike,
) -> tuple[str, backends.Backend, Placement]:
    """The dtype, backend and placement a model loads with (called inside `repairing_cache`)."""
    dtype_name = jnp.dtype(parse_dtype(dtype)).name
    if device is not None:
        platform, available = platform_of(device), None
    else:
        available = backends.detect_platforms()
        platform = backends.choose_platform(available, backends.requested_backend(backend))
    # The platform's dtype policy applies before the probe, which checks that dtype; the cache
    # is on before the probe compiles, so a second process reuses the probe too.
    dtype_name = dtype_policy(platform).resolve(dtype_name, platform)
    if compilation_cache and defaults_for(platform).compilation_cache:
        enable_compilation_cache(None if compilation_cache is True else compilation_cache)
    if device is not None:
        chosen = backends.Backend(platform, device, requested="device")
    else:
        chosen = backends.select_backend(backend, dtype=dtype_name, platforms=available)
    # Where this model's arrays live, from here down.
    return dtype_name, chosen, Placement.on(backends.devices_for(chosen, devices))


def load_reranker(
    name_or_path: str | os.PathLike,
    *,
    max_length: int | None = None,
    activation_fn: str | Callable[[jax.Array], jax.Array] | None = None,
    dtype: str | jnp.dtype = "float32",
    backend: str | None = None,
    device: jax.Device | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    compilation_cache: bool | str | os.PathLike = True,
    impls: Mapping[str, str] | None = None,
) -> Reranker:
    """Load a cross-encoder reranker (a `*ForSequenceClassification` checkpoint of BERT/MiniLM,
    RoBERTa/XLM-R or ModernBERT), as sentence-transformers' `CrossEncoder(name_or_path)`.

    Args:
        name_or_path: a local checkpoint directory or a Hugging Face hub id (local cache first;
            HF_HUB_OFFLINE respected).
        max_length: tokens per (query, document) pair at most, special tokens included (default:
            the tokenizer's `model_max_length`, capped at the model's positions); longer pairs
            are cut `longest_first`, as transformers cuts a pair.
        activation_fn: applied to the logits by `predict`/`rank`: a name ("sigmoid",
            "identity", a torch class path) or a callable on arrays; default: the checkpoint's
            saved one, else sigmoid for one label and identity for several.
        dtype, backend, device, revision, cache_dir, compilation_cache, impls: as in `load`.

    Raises:
        ModelNotFoundError: the name resolves to nothing on this machine.
        CheckpointError: the checkpoint is incomplete or inconsistent (the message names the file).
    """
    impls = check_impls(impls or {})
    path, preset = resolve(name_or_path, revision=revision, cache_dir=cache_dir)
    if preset is not None:
        raise ValueError(
            f"{name_or_path!r} names an embedding-model preset; load_reranker takes a "
            "cross-encoder's directory or hub id (use ferris_jax.load for embeddings)"
        )
    with repairing_cache():
        dtype_name, chosen, placement = _runtime(dtype, backend, device, None, compilation_cache)
        checkpoint = load_classifier(
            path, dtype=dtype_name, max_seq_length=max_length, placement=placement
        )
        return Reranker(
            checkpoint,
            placement=placement,
            backend=chosen,
            impls=impls,
            activation_fn=activation_fn,
        )
