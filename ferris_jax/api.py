"""`ferris_jax.load`: the entry point from a name to a ready Encoder."""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from ferris_jax.encoder import Encoder
from ferris_jax.loading import load_checkpoint, resolve
from ferris_jax.ops.impl import check_impls
from ferris_jax.placement import Placement
from ferris_jax.platforms import defaults_for, dtype_policy, parse_dtype, platform_of
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
    with repairing_cache():  # the probe and the parameter casts compile too
        if device is not None:
            chosen = backends.Backend(platform, device, requested="device")
        else:
            chosen = backends.select_backend(backend, dtype=dtype_name, platforms=available)
        # Where this model's arrays live, from here down.
        placement = Placement.on(backends.devices_for(chosen, devices))
        checkpoint = load_checkpoint(
            path,
            preset=preset,
            dtype=dtype_name,
            max_seq_length=max_seq_length,
            placement=placement,
        )
        return Encoder(checkpoint, placement=placement, backend=chosen, impls=impls)
