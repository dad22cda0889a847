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


def _local_placement(chosen: Any) -> dict[str, Any]:
    """What `ferris_jax.load(devices="local")` places a model on, on the chosen backend."""
    from ferris_jax.placement import Placement
    from ferris_jax.runtime import backend as backends

    placement = Placement.on(backends.devices_for(chosen, "local"))
    return {
        "platform": placement.platform,
        "count": len(placement.devices),
        "mesh": None if placement.mesh is None else dict(placement.mesh.shape),
        "devices": [str(d) for d in placement.devices],
    }


def report(backend: str | None = None, *, dtype: str = "float32") -> dict[str, Any]:
    """Versions, platforms and devices, this process among the processes, the chosen backend
    with its probe result, what `load(devices="local")` would use, the LayerNorm path on it
    and the persistent compilation cache."""
    import jax

    from ferris_jax import ops
    from ferris_jax.platforms import dtype_policy
    from ferris_jax.runtime import backend as backends

    available = backends.detect_platforms()
    chosen = backends.select_backend(backend, dtype=dtype, platforms=available)
    policy = dtype_policy(chosen.platform)
    listing = backends.device_listing(available)
    return {
        "ferris_jax": __version__,
        "python": sys.version.split()[0],
        "system": f"{platform.system()} {platform.machine()}",
        "packages": backends.runtime_versions(),
        "platforms": backends.describe(available),
        "process": {"index": listing["process_index"], "count": listing["process_count"]},
        "devices": listing["platforms"],
        "default_backend": jax.default_backend(),
        "requested": chosen.requested,
        "backend": chosen.platform,
        "device": str(chosen.device),
        "probe": chosen.probe.summary() if chosen.probe else "not needed (cpu)",
        "fallback_from": chosen.fallback_from,
        "devices_local": _local_placement(chosen),
        "dtypes": list(policy.supported),
        "layer_norm": ops.resolve_impl(platform=chosen.platform),
        "compilation_cache": _cache_report(),
    }


def text_lines(key: str, value: Any) -> list[str] | None:
    """The text form of the report's device entries, a line each (None for the other keys)."""
    if key == "process":
        one = " (one process)" if value["count"] == 1 else " (jax.distributed)"
        return [f"{value['index']} of {value['count']}{one}"]
    if key == "devices":
        lines = []
        for platform, found in value.items():
            lines.append(f"{platform}: {found['local']} in this process, {found['global']} in all")
            lines += [
                f"  {d['name']}  id={d['id']}  kind={d['kind']!r}  platform={d['platform']}  "
                f"process={d['process_index']}"
                for d in found["devices"]
            ]
        return lines or ["-"]
    if key == "devices_local":
        mesh = (
            "no mesh"
            if value["mesh"] is None
            else "mesh " + ", ".join(f"{axis}={size}" for axis, size in value["mesh"].items())
        )
        devices = ", ".join(value["devices"])
        return [
            f'load(devices="local") -> {value["count"]} x {value["platform"]}, {mesh}: {devices}'
        ]
    return None
