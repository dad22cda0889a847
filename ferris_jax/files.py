"""Files in and out: JSON that names its file when it is bad, text lines, atomic writes.

A write to a regular file goes to a temporary file (or folder) beside its target and is renamed
over it once complete, so an interrupted write leaves the previous state usable and never a
partial one. Anything else (a device, a FIFO, /dev/stdout, process substitution) is written
straight through, never replaced; a symbolic link is followed to its target.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ferris_jax.errors import CheckpointError


def read_json(path: Path, *, required: bool = False) -> Any:
    """The JSON value in `path` (None if absent and not `required`); CheckpointError naming the
    file when it is missing but required, unreadable or not JSON."""
    if not path.is_file():
        if required:
            raise CheckpointError(
                f"{path} is missing; a Hugging Face checkpoint directory needs it"
            )
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: invalid JSON: {e}") from e


def read_json_object(path: Path, *, required: bool = False) -> dict[str, Any] | None:
    """`read_json`, and CheckpointError naming the file unless it holds a JSON object."""
    data = read_json(path, required=required)
    if data is not None and not isinstance(data, dict):
        raise CheckpointError(f"{path}: must hold a JSON object, got {_json_type(data)}")
    return data


_REQUIRED = object()
_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_KINDS |= {list: "a list", dict: "an object"}


def json_field(
    path: Path,
    data: dict[str, Any],
    key: str,
    kind: type,
    default: Any = _REQUIRED,
    *,
    minimum: float | None = None,
) -> Any:
    """`data[key]` checked to be of JSON `kind` (true/false is not a number) and at least
    `minimum`; `default` when absent or null, or CheckpointError naming `path` and `key`."""
    value = data.get(key)
    if value is None:
        if default is _REQUIRED:
            raise CheckpointError(f"{path}: missing required key {key!r}")
        return default
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        raise CheckpointError(
            f"{path}: {key!r} must be {_KINDS[kind]}, got {_json_type(value)} {value!r:.40}"
        )
    if kind is float and value != value:  # NaN passes every comparison below
        raise CheckpointError(f"{path}: {key!r} must be a number, got NaN")
    if minimum is not None and value < minimum:
        raise CheckpointError(f"{path}: {key!r} must be at least {minimum}, got {value!r}")
    return value


def _json_type(value: Any) -> str:
    names = {bool: "true/false", int: "a number", float: "a number", str: "a string"}
    return names.get(type(value)) or {list: "a list", dict: "an object"}.get(type(value), "null")


def split_lines(text: str) -> list[str]:
    """One text per line: strip each line's ending (\\n or \\r\\n) only, keep blank lines."""
    lines = text.split("\n")
    if lines[-1] == "":  # the newline ending the last line starts no new text
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def new_file_mode(target: Path) -> int:
    """The old file's mode, else what open() would give (temporary files are created 0600)."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux says it (setting it to read it
    races with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Temporary files of writes in progress: an interrupt handler that must exit at once
# (`os._exit`) removes them first (`remove_pending_files`).
_pending: set[str] = set()


def remove_pending_files() -> None:
    """Remove the temporary files of atomic writes still in progress (before a hard exit)."""
    for name in list(_pending):
        with contextlib.suppress(OSError):
            os.unlink(name)
        _pending.discard(name)


# Paths that name a file descriptor this process already has open: written through that
# descriptor (never reopened, which would truncate a `>>` redirect or replace its file).
_FD_PATH = re.compile(r"/dev/(?P<name>stdout|stderr|fd/(?P<fd>\d+))|/proc/self/fd/(?P<proc>\d+)")


def descriptor_of(path: str | os.PathLike) -> int | None:
    """The file descriptor `path` names (/dev/stdout, /dev/fd/3, ...), or None."""
    m = _FD_PATH.fullmatch(os.fspath(path))
    if m is None:
        return None
    if m["name"] in ("stdout", "stderr"):
        return 1 if m["name"] == "stdout" else 2
    return int(m["fd"] or m["proc"])


def is_replaceable(path: str | os.PathLike) -> bool:
    """Whether writing `path` means replacing a regular file (or creating one): False for an
    open descriptor's name, a device, FIFO, socket or other special file, which must be
    written through instead."""
    if descriptor_of(path) is not None:
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True


def write_output(
    path: str | os.PathLike, write: Callable[[IO], None], *, binary: bool = True
) -> None:
    """Write an output with `write(file)`: atomically for a regular file or a new path (a symlink
    is followed, so the link stays and its target is replaced), straight through otherwise.

    Raises OSError naming `path` when it cannot be written (e.g. a full device).
    """
    if not is_replaceable(path):
        mode = "wb" if binary else "w"
        text_args = {} if binary else {"encoding": "utf-8", "newline": "\n"}
        fd = descriptor_of(path)
        if fd == 1:
            sys.stdout.flush()  # what Python printed comes first
        target = os.fdopen(os.dup(fd), mode, **text_args) if fd is not None else None
        with target or open(path, mode, **text_args) as f:
            write(_Stream(f))
        return
    with atomic_write(os.path.realpath(path), binary=binary) as f:
        write(f)


class _Stream:
    """Only `write` and `flush` of a file: a FIFO or device cannot seek, and libraries that
    special-case real files (numpy's `tofile`) then fall back to plain writes."""

    def __init__(self, file: IO):
        self._file = file

    def write(self, data: Any) -> int:
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, binary: bool = True) -> Iterator[IO]:
    """A file object whose contents replace `path` only when the block completes.

    Readers see the old file or the complete new one; the temporary file is removed on any
    failure (the exception propagates).
    """
    target = Path(path)
    text_args = {} if binary else {"encoding": "utf-8", "newline": "\n"}
    f = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed by the with below)
        "wb" if binary else "w",
        dir=target.parent,
        prefix=f".{target.name}.",
        suffix=".tmp",
        delete=False,
        **text_args,
    )
    _pending.add(f.name)
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(f.name, new_file_mode(target))
        os.replace(f.name, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(f.name)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            raise type(e)(e.errno, e.strerror, str(target)) from e  # a full disk names no file
        raise
    finally:
        _pending.discard(f.name)


def write_json(path: Path, value: Any) -> None:
    """`value` as indented JSON in `path` (written atomically)."""
    with atomic_write(path, binary=False) as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh folder to fill, which replaces `path` only when the block completes.

    An existing `path` is swapped out with two renames and removed only after the new folder
    is in place; on failure the new folder is removed and `path` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield staging
        if not target.exists():
            os.replace(staging, target)
            return
        backup = staging.with_suffix(".old")
        os.replace(target, backup)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(backup, target)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def lock_descriptor(fd: int, *, shared: bool = False, wait: bool = False) -> bool:
    """Take the OS's advisory lock on an open file: flock (shared or exclusive), or on Windows
    msvcrt's exclusive byte lock (where `shared` takes none). True if taken; with `wait`, block
    until it is. The OS drops it when the descriptor closes or the process ends, however."""
    try:
        import fcntl
    except ImportError:  # Windows
        if shared:
            return True
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(fd, flags)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in _NO_LOCKS:  # a filesystem without locks (some SMB/FUSE mounts)
            return True
        raise
    return True


# What flock raises where the filesystem cannot lock: such a lock is treated as taken.
_NO_LOCKS = {errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL}
