"""Where the model runs: Apple GPU plugin > CUDA/ROCm > TPU > CPU, checked before it is trusted.

`select_backend()` picks the first platform JAX can see in that order (or the one named by the
`backend=` argument / `$FERRIS_JAX_BACKEND`), then, for an accelerator, runs a capability probe:
a handful of small programs (the ops an encoder needs, then a tiny encoder) compiled and run on
the accelerator and compared with the CPU. If the probe fails, the CPU is used and ONE warning
names the platform and the failing operation. What each platform runs (dtypes and the rest)
is in `platforms.py`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ferris_jax.errors import BackendFallbackWarning
from ferris_jax.platforms import (
    APPLE_JAX_PLATFORMS,
    APPLE_PLATFORMS,
    PlatformDefaults,
    defaults_for,
    platform_of,
)

ENV_VAR = "FERRIS_JAX_BACKEND"
PREFERENCE = (*APPLE_PLATFORMS, "cuda", "rocm", "tpu", "cpu")  # `platform_of` names
# What `detect_platforms` asks JAX for, by JAX's names (metaljax's "metal" is not JAX's default
# backend: its plugin registers below the CPU).
_JAX_NAMES = (*APPLE_JAX_PLATFORMS, "cuda", "rocm", "tpu", "cpu")
# Distributions that provide a PJRT plugin or the JAX runtime, reported by `ferris-jax doctor`.
RUNTIME_PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "jax-metal",
    "jax-mps",
    "metaljax",
    "metal-pjrt-plugin",
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
    "jax-cuda13-plugin",
    "jax-cuda13-pjrt",
    "jax-rocm60-plugin",
    "jax-rocm7-plugin",
    "libtpu",
)


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What the capability probe found on one device."""

    platform: str
    ok: bool
    failed_op: str | None = None
    error: str | None = None
    max_abs_diff: float = 0.0
    seconds: float = 0.0

    def summary(self) -> str:
        if self.ok:
            return f"ok (max |accelerator - cpu| = {self.max_abs_diff:.1e}, {self.seconds:.2f} s)"
        return f"failed at {self.failed_op}: {self.error}"


@dataclasses.dataclass(frozen=True)
class Backend:
    """The platform and device chosen to run a model, and why."""

    platform: str
    device: jax.Device
    requested: str
    probe: ProbeResult | None = None
    fallback_from: str | None = None

    @property
    def defaults(self) -> PlatformDefaults:
        """The platform table's row for this backend."""
        return defaults_for(self.platform)


# ---------------------------------------------------------------- detection
def detect_platforms() -> dict[str, list[jax.Device]]:
    """Every platform JAX can initialise here -> this process's devices (an unknown plugin is
    included; after `jax.distributed.initialize`, other processes' devices are left out)."""
    found: dict[str, list[jax.Device]] = {}
    for device in jax.local_devices():  # the default backend, plugins included
        found.setdefault(platform_of(device), []).append(device)
    for name in _JAX_NAMES:
        if name in found:
            continue
        try:
            devices = jax.local_devices(backend=name)
        except RuntimeError:  # that backend is not installed or failed to initialise
            continue
        if devices:
            found.setdefault(platform_of(devices[0]), list(devices))
    return found


def _looks_apple(devices: Sequence[jax.Device]) -> bool:
    kind = " ".join(str(getattr(d, "device_kind", "")) for d in devices[:1]).lower()
    return any(word in kind for word in ("apple", "metal", " m1", " m2", " m3", " m4", "mps"))


def choose_platform(available: Mapping[str, Sequence[jax.Device]], requested: str = "auto") -> str:
    """The platform to use: `requested` if given, else by preference order.

    An unknown plugin whose devices look like Apple GPUs ranks with the Apple plugins.
    """
    if requested != "auto":
        aliases = {"gpu": ("cuda", "rocm"), "metal": ("metaljax", "METAL")}  # JAX's names
        if requested in aliases:  # whichever of those runtimes is present
            requested = next((p for p in aliases[requested] if p in available), requested)
        if requested not in available:
            raise ValueError(
                f"backend {requested!r} is not available here; available: "
                f"{', '.join(sorted(available))} (set backend= or ${ENV_VAR})"
            )
        return requested
    rank = {name: i for i, name in enumerate(PREFERENCE)}
    apple_rank = len(APPLE_PLATFORMS) - 0.5  # after the known Apple plugins, before CUDA

    def order(name: str) -> float:
        if name in rank:
            return rank[name]
        return apple_rank if _looks_apple(available[name]) else len(PREFERENCE)

    return min(available, key=order)


# ---------------------------------------------------------------- probe
def _probe_cases(dtype: jnp.dtype) -> list[tuple[str, Callable[..., jax.Array], tuple]]:
    """(operation name, function, numpy arguments): what an encoder runs, smallest first."""
    from ferris_jax import ops
    from ferris_jax.models.bert import BertConfig, BertModel
    from ferris_jax.pooling import l2_normalize

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 32)).astype(np.float32)
    w = rng.standard_normal((32, 32)).astype(np.float32) / 6
    ids = rng.integers(0, 50, (2, 8)).astype(np.int32)
    mask = np.ones((2, 8), np.int32)
    mask[1, 5:] = 0
    cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731

    def attention(x):
        q = cast(x).reshape(2, 8, 4, 8)
        return ops.attention(q, q, q, jnp.asarray(mask, bool))

    cfg = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    from flax import nnx

    with jax.default_device(jax.devices("cpu")[0]):  # not on the device being probed
        graphdef, state = nnx.split(BertModel(cfg, dtype=dtype, rngs=nnx.Rngs(0)))
    state = jax.tree.map(np.asarray, state)  # host arrays: placed on each device by jit

    def encoder(state, ids, mask):
        hidden = nnx.merge(graphdef, state)(ids, mask)
        m = mask[..., None].astype(jnp.float32)
        return l2_normalize(jnp.sum(hidden.astype(jnp.float32) * m, 1) / jnp.sum(m, 1))

    return [
        ("matmul (dot_general)", lambda x, w: cast(x) @ cast(w), (x, w)),
        ("embedding gather", lambda t, i: jnp.take(cast(t), i, axis=0), (w, ids % 32)),
        ("layer_norm", lambda x: ops.layer_norm(cast(x), cast(w[0]), cast(w[1]), eps=1e-12), (x,)),
        ("softmax attention", attention, (x,)),
        ("gelu", lambda x: ops.activation("gelu")(cast(x)), (x,)),
        ("tiny encoder (2-layer BERT + mean pooling)", encoder, (state, ids, mask)),
    ]


def _check(fn: Callable[..., jax.Array], args: tuple, device: jax.Device, dtype: jnp.dtype):
    """None if `fn` runs on `device` and matches the CPU, else (error message, max diff)."""
    platform = platform_of(device)
    try:
        got = np.asarray(jax.device_get(jax.jit(fn)(*jax.device_put(args, device))), np.float32)
    except Exception as e:  # unsupported op, dtype or custom call
        return _first_line(e), 0.0
    want = np.asarray(jax.jit(fn)(*jax.device_put(args, jax.devices("cpu")[0])), np.float32)
    diff = float(np.max(np.abs(got - want))) if got.size else 0.0
    tol = 1e-3 if dtype == jnp.float32 else 5e-2
    if not np.isfinite(diff) or diff > tol * max(1.0, float(np.max(np.abs(want)))):
        return f"wrong numbers (max |{platform} - cpu| = {diff:.3g})", diff
    return None, diff


def probe_device(device: jax.Device, dtype: str = "float32") -> ProbeResult:
    """Run a tiny encoder on `device` and on the CPU; on failure, name the first failing op.

    The success path compiles one program per device; the per-op cases only run to
    diagnose a failure.
    """
    platform = platform_of(device)
    start = time.perf_counter()
    *ops_cases, (encoder_name, encoder, encoder_args) = _probe_cases(jnp.dtype(dtype))
    error, diff = _check(encoder, encoder_args, device, jnp.dtype(dtype))
    if error is None:
        return ProbeResult(platform, True, max_abs_diff=diff, seconds=time.perf_counter() - start)
    failed = (encoder_name, error)
    for name, fn, args in ops_cases:
        op_error, _ = _check(fn, args, device, jnp.dtype(dtype))
        if op_error is not None:
            failed = (name, op_error)
            break
    return ProbeResult(platform, False, *failed, diff, time.perf_counter() - start)


def _first_line(e: Exception) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    line = next((s for s in text.splitlines() if s.strip()), text)
    return re.sub(r"\s+", " ", line)[:300]


# ---------------------------------------------------------------- selection
def requested_backend(backend: str | None = None) -> str:
    """The backend asked for: the argument, else `$FERRIS_JAX_BACKEND`, else "auto"."""
    return (backend or os.environ.get(ENV_VAR) or "auto").strip()


_probe_cache: dict[tuple[str, str], ProbeResult] = {}
_warned: set[tuple[str, str]] = set()

Probe = Callable[[jax.Device, str], ProbeResult]


def select_backend(
    backend: str | None = None,
    *,
    dtype: str = "float32",
    probe: Probe | bool = True,
    platforms: Mapping[str, Sequence[jax.Device]] | None = None,
) -> Backend:
    """Choose the platform and device for a model.

    Args:
        backend: a platform name ("cuda", "metaljax", "mps", "cpu", ...) or "auto" (default:
            `$FERRIS_JAX_BACKEND`, else auto: Apple GPU > CUDA/ROCm > TPU > CPU).
        dtype: the model dtype the probe checks.
        probe: True runs `probe_device` on an accelerator (cached per process), False trusts
            it, or a callable `(device, dtype) -> ProbeResult` (tests use a double).
        platforms: platform -> devices (default: `detect_platforms()`).

    Returns:
        A Backend; on a failed probe its platform is "cpu" and `fallback_from` names the
        accelerator, after one BackendFallbackWarning for that platform in this process.
    """
    requested = requested_backend(backend)
    available = detect_platforms() if platforms is None else platforms
    platform = choose_platform(available, requested)
    device = available[platform][0]
    if platform == "cpu" or probe is False:
        return Backend(platform, device, requested)
    run = probe_device if probe is True else probe
    key = (platform, dtype)
    result = _probe_cache.get(key) if probe is True else None
    if result is None:
        result = run(device, dtype)
        if probe is True:
            _probe_cache[key] = result
    if result.ok:
        return Backend(platform, device, requested, result)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"ferris-jax: {platform} cannot run the model ({result.failed_op}: {result.error}); "
            f"using the CPU. Set {ENV_VAR}=cpu to skip this check.",
            BackendFallbackWarning,
            stacklevel=2,
        )
    cpu = available.get("cpu") or jax.devices("cpu")
    return Backend("cpu", cpu[0], requested, result, fallback_from=platform)


DeviceChoice = int | str | Sequence[jax.Device] | None


def devices_for(chosen: Backend, devices: DeviceChoice) -> tuple[jax.Device, ...]:
    """The devices a model is placed on, on the chosen backend's platform.

    Args:
        devices: None (the chosen device alone), "local" (every device of this process),
            "all" (every device of every process, after `jax.distributed.initialize`), a
            count n (this process's first n), or the devices themselves.
    """
    if devices is None:
        return (chosen.device,)
    if isinstance(devices, str):
        if devices not in ("local", "all"):
            raise ValueError(f'devices must be "local", "all", a count or devices, got {devices!r}')
        platform = chosen.device.platform  # JAX's name ("gpu"), as jax.devices takes it
        if devices == "all":
            return tuple(jax.devices(platform))
        return tuple(jax.local_devices(backend=platform))
    if isinstance(devices, int) and not isinstance(devices, bool):
        local = jax.local_devices(backend=chosen.device.platform)
        if not 1 <= devices <= len(local):
            raise ValueError(
                f"devices={devices}: this process has {len(local)} {chosen.platform} device(s)"
            )
        return tuple(local[:devices])
    listed = tuple(devices)
    if not listed or not all(isinstance(d, jax.Device) for d in listed):
        raise ValueError(f'devices must be "local", "all", a count or devices, got {devices!r}')
    return listed


def runtime_versions() -> dict[str, str]:
    """Installed versions of JAX, Flax and every known PJRT plugin package."""
    found = {}
    for name in RUNTIME_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def device_listing(platforms: Mapping[str, Sequence[Any]] | None = None) -> dict[str, Any]:
    """This process among the processes, and each platform's devices, for reports.

    Returns:
        {"process_index", "process_count" (more than 1 after `jax.distributed.initialize`),
        "platforms": platform -> {"local": this process's device count, "global": every
        process's, "devices": [{"name", "id", "kind", "platform", "process_index"}, ...]
        (this process's)}}.
    """
    available = detect_platforms() if platforms is None else platforms
    listed = {}
    for name, devices in available.items():
        try:  # JAX's name of the platform ("gpu"), as device_count takes it
            everywhere = jax.device_count(backend=devices[0].platform)
        except RuntimeError:  # a plugin JAX does not know by that name
            everywhere = len(devices)
        listed[name] = {
            "local": len(devices),
            "global": everywhere,
            "devices": [
                {
                    "name": str(d),
                    "id": d.id,
                    "kind": d.device_kind,
                    "platform": platform_of(d),
                    "process_index": d.process_index,
                }
                for d in devices
            ],
        }
    return {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "platforms": listed,
    }


def describe(platforms: Mapping[str, Sequence[Any]] | None = None) -> dict[str, list[str]]:
    """platform -> device descriptions, for reports."""
    available = detect_platforms() if platforms is None else platforms
    return {
        p: [f"{d} ({getattr(d, 'device_kind', '?')})" for d in ds] for p, ds in available.items()
    }
