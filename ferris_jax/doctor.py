"""`ferris-jax doctor`: what this machine offers and what ferris-jax will do with it."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from ferris_jax._version import __version__


def _cache_report() -> dict[str, Any]:
    from ferris_jax.runtime.compilation import compilation_cache_dir, default_cache_dir

    path = compilation_cache_dir() or default_cache_dir()
    entries = sum(1 for p in path.iterdir() if p.is_file()) if path.is_dir() else 0
    existing = next(p for p in (path, *path.parents) if p.exists())
    writable = os.access(existing, os.W_OK)
    return {"directory": str(path), "entries": entries, "writable": writable}


def report(backend: str | None = None, *, dtype: str = "float32") -> dict[str, Any]:
    """Versions, platforms and devices, the chosen backend with its probe result, the
    LayerNorm path on it and the persistent compilation cache."""
    import jax

    from ferris_jax import ops
    from ferris_jax.platforms import dtype_policy
    from ferris_jax.runtime import backend as backends

    available = backends.detect_platforms()
    chosen = backends.select_backend(backend, dtype=dtype, platforms=available)
    policy = dtype_policy(chosen.platform)
    return {
        "ferris_jax": __version__,
        "python": sys.version.split()[0],
        "system": f"{platform.system()} {platform.machine()}",
        "packages": backends.runtime_versions(),
        "platforms": backends.describe(available),
        "default_backend": jax.default_backend(),
        "requested": chosen.requested,
        "backend": chosen.platform,
        "device": str(chosen.device),
        "probe": chosen.probe.summary() if chosen.probe else "not needed (cpu)",
        "fallback_from": chosen.fallback_from,
        "dtypes": list(policy.supported),
        "layer_norm": ops.resolve_impl(platform=chosen.platform),
        "compilation_cache": _cache_report(),
    }
