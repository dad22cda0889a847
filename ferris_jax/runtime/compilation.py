"""JAX's persistent compilation cache, so a second process does not compile again.

JAX warns about an unreadable entry (a truncated or corrupt file) on every run and never
rewrites it; compiling inside `repairing_cache()` removes such entries instead, with one warning
naming the cache directory, so the next compile writes them anew.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import warnings
from collections.abc import Iterator
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


# JAX's warning for an entry it cannot read (jax 0.4.35 to 0.10), naming the program's module.
_JAX_READ_ERROR = re.compile(r"Error reading persistent compilation cache entry for '([^']+)'")
_ENTRY_SUFFIX = "-cache"
_repairing = threading.RLock()  # catch_warnings is process-wide: one block at a time


def _decompresses(entry: Path) -> bool:
    """Whether a cache entry passes JAX's own decompression (its first check on reading)."""
    try:
        from jax._src.compilation_cache import decompress_executable

        decompress_executable(entry.read_bytes())
        return True
    except Exception:
        return False


def remove_unreadable_entries(modules: set[str], cache_dir: Path | None = None) -> list[Path]:
    """Delete the cache entries JAX cannot read, once one was found: every entry that does not
    decompress (a truncated file spoils others too), and, for a module in `modules` none of
    whose entries was broken that way (a payload this jaxlib cannot load), all of its entries,
    so the warning does not come back. Returns the removed files."""
    cache_dir = cache_dir or compilation_cache_dir()
    if cache_dir is None or not cache_dir.is_dir():
        return []
    entries = sorted(cache_dir.glob(f"*{_ENTRY_SUFFIX}"))
    broken = [e for e in entries if not _decompresses(e)]
    for module in modules:
        mine = [e for e in entries if e.name.startswith(f"{module}-")]
        if not set(mine) & set(broken):
            broken += mine
    removed = []
    for entry in broken:
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
        with contextlib.suppress(OSError):
            entry.with_name(entry.name.removesuffix(_ENTRY_SUFFIX) + "-atime").unlink()
    return removed


@contextlib.contextmanager
def repairing_cache() -> Iterator[None]:
    """Compile inside this block: JAX's warnings about cache entries it cannot read (repeated
    on every run, since JAX never rewrites them) become the removal of those entries and one
    warning naming the directory; every other warning is passed on, also when the block
    raises."""
    with _repairing:
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield
        finally:
            modules = set()
            for w in caught:
                m = _JAX_READ_ERROR.match(str(w.message))
                if m:
                    modules.add(m[1])
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            if modules:
                removed = remove_unreadable_entries(modules)
                warnings.warn(
                    f"ferris-jax: the compilation cache {compilation_cache_dir()} had entries "
                    f"JAX could not read ({', '.join(sorted(modules))}); removed {len(removed)}: "
                    "they are compiled and cached again on the next run (nothing else to do)",
                    stacklevel=3,
                )
