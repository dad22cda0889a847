"""JAX's persistent compilation cache, so a second process does not compile again."""

from __future__ import annotations

import os
from pathlib import Path

import jax

_ENV_VAR = "FERRIS_JAX_CACHE_DIR"
_EVENTS = {
    "/jax/compilation_cache/cache_hits": "hits",
    "/jax/compilation_cache/cache_misses": "misses",
}
_stats = {"hits": 0, "misses": 0}
_listening = False


def _count(event: str, **_: object) -> None:
    if event in _EVENTS:
        _stats[_EVENTS[event]] += 1


def cache_stats() -> dict[str, int]:
    """Persistent-cache hits and misses of this process (counted once the cache is enabled)."""
    return dict(_stats)


def default_cache_dir() -> Path:
    """$FERRIS_JAX_CACHE_DIR, else $XDG_CACHE_HOME/ferris-jax/xla, else ~/.cache/ferris-jax/xla."""
    if os.environ.get(_ENV_VAR):
        return Path(os.environ[_ENV_VAR]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ferris-jax" / "xla"


def enable_compilation_cache(cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Turn on the persistent cache (keeping a directory the user already configured).

    Returns the cache directory, or None if it cannot be created (compilation still works).
    """
    global _listening
    if not _listening:
        jax.monitoring.register_event_listener(_count)
        _listening = True
    current = jax.config.jax_compilation_cache_dir
    if current and cache_dir is None:
        return Path(current)
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Small encoders compile in well under JAX's default 1 s threshold: cache them all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def compilation_cache_dir() -> Path | None:
    current = jax.config.jax_compilation_cache_dir
    return Path(current) if current else None
