"""An index folder on disk: vector shards, a metadata database and the manifest naming them.

    INDEX/
      manifest.json               format version, model, dimension, precision, files + sha256
      vectors-<generation>-<n>.safetensors   float32 [rows, D]: rows start..start+rows-1
      items-<generation>.sqlite   row -> id, document id, text, metadata (JSON), deleted rows
                                  absent; per document ingested: content hash, chunks, source
      ann-<generation>.faiss      the HNSW graph of an approximate index
      write.lock, read.lock       OS locks: one writer at a time; readers opening a generation

Shards are written once and never changed; a save writes only the rows added since the last one
as a new shard, a new database snapshot, then replaces `manifest.json` atomically (its
`generation` counts the saves). A save killed at any moment leaves the previous manifest and
every file it names intact.

One writer at a time: a process writes to the folder only while it holds `write.lock`
(`WriteLock`), and refuses to save over a generation it did not start from. Readers hold
`read.lock` shared while they open one generation's files (`reading`); a save removes the files
its manifest no longer names (superseded ones, an interrupted save's) only when no reader holds
it, else the next save does. Nothing but these names is ever removed: files of the patterns
below, and only when the manifest of this format does not name them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import socket
import sqlite3
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from ferris_jax.errors import CheckpointError
from ferris_jax.files import (
    atomic_write,
    json_field,
    lock_descriptor,
    read_json_object,
    write_json,
)

FORMAT = "ferris-jax-index"
# Raised when the layout changes incompatibly; `load` refuses versions it does not know.
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WRITE_LOCK = "write.lock"
READ_LOCK = "read.lock"
# Seconds a save waits for readers that are opening the index before it leaves the files they
# may be reading to the next save.
READERS_WAIT = 1.0
# The names of the files an index writes; a manifest naming anything else is refused, and only
# these (and their temporary files) are ever removed from a folder.
SHARD_NAME = re.compile(r"vectors-\d{12}-[0-9a-f]{8}\.safetensors")
ITEMS_NAME = re.compile(r"items-[0-9a-f]{8}\.sqlite")
ANN_NAME = re.compile(r"ann-[0-9a-f]{8}\.faiss")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    document_id TEXT,
    text TEXT,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS items_document ON items(document_id);
CREATE TABLE IF NOT EXISTS documents (
    document_id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    chunks INTEGER,
    source TEXT
);
"""


class IndexFormatError(CheckpointError):
    """An index folder that cannot be read: missing, corrupted or from another version/model."""


@dataclasses.dataclass(frozen=True)
class Shard:
    """A vector file: rows `start .. start + rows - 1`, float32 `[rows, D]`."""

    file: str
    start: int
    rows: int
    sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def write_shard(folder: Path, name: str, vectors: np.ndarray, start: int) -> Shard:
    """Write float32 `vectors` as a new safetensors file (atomically) and describe it."""
    data = safetensors.numpy.save({"vectors": np.ascontiguousarray(vectors, np.float32)})
    with atomic_write(folder / name) as f:
        f.write(data)
    return Shard(name, start, len(vectors), hashlib.sha256(data).hexdigest())


def open_shard(folder: Path, shard: Shard, dimension: int) -> np.ndarray:
    """The shard's vectors, memory-mapped read-only (pages are read when touched)."""
    path = folder / shard.file
    try:
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        entry = header["vectors"]
        if entry["dtype"] != "F32" or entry["shape"] != [shard.rows, dimension]:
            raise ValueError(f"vectors are {entry['dtype']}{entry['shape']}")
        begin, end = entry["data_offsets"]
        if os.path.getsize(path) < 8 + size + end:
            raise ValueError("the file is shorter than its header says")
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: missing (named by {folder / MANIFEST})") from None
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        raise IndexFormatError(
            f"{path}: not the vector shard the manifest describes (float32 "
            f"[{shard.rows}, {dimension}]): {e}"
        ) from None
    return np.memmap(path, np.float32, "r", offset=8 + size + begin, shape=(shard.rows, dimension))


def connect(path: str | Path = ":memory:") -> sqlite3.Connection:
    """A scratch metadata database with the items table (shared across threads; callers lock).

    Nothing in it needs to survive a crash (`snapshot` writes what a save keeps), so it keeps
    its rollback journal in memory and never waits for the disk: with SQLite's defaults each
    statement outside a transaction was a journaled, fsynced write (0.5 ms a document).
    """
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode = MEMORY")
    db.execute("PRAGMA synchronous = OFF")
    db.executescript(_SCHEMA)
    return db


def snapshot(db: sqlite3.Connection, path: Path) -> str:
    """Copy the database into a new file at `path` (atomically); its sha256."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    target = sqlite3.connect(tmp)
    try:
        db.backup(target)
    except sqlite3.Error as e:  # e.g. "database or disk is full"
        target.close()
        tmp.unlink(missing_ok=True)
        raise OSError(f"{path}: cannot write the index's item database: {e}") from None
    finally:
        target.close()
    os.replace(tmp, path)
    return sha256_of(path)


def restore(path: Path, into: sqlite3.Connection) -> None:
    """Copy the database file `path` into the working database `into`."""
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        source.backup(into)
        into.execute("SELECT row, id, document_id, text, metadata FROM items LIMIT 0")
        into.executescript(_SCHEMA)  # tables added since the file was written
    except sqlite3.Error as e:
        raise IndexFormatError(
            f"{path}: not an index's item database (SQLite, table 'items'): {e}"
        ) from None
    finally:
        source.close()


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the index folder, checked for format, version and the type of every key
    this version reads (unknown keys are ignored); IndexFormatError naming the key otherwise."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise IndexFormatError(f"{folder}: no such index folder")
    try:
        manifest = read_json_object(path, required=True)
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"{path}: {e}") from None
    if manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path}: not a ferris-jax index manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: index format version {version!r}; this ferris-jax reads versions up to "
            f"{FORMAT_VERSION}: upgrade ferris-jax"
        )
    try:
        _check_manifest(path, manifest)
    except CheckpointError as e:
        raise IndexFormatError(str(e)) from None
    return manifest


def _check_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Each key's JSON type, the files' names (plain names of an index's files, never paths)
    and the probe's length."""

    def entry(where: str, data: Any, fields: dict[str, type], name: re.Pattern) -> None:
        if not isinstance(data, dict):
            raise CheckpointError(f"{path}: {where!r} must be an object")
        for key, kind in fields.items():
            json_field(path, data, key, kind, minimum=0 if kind is int else None)
        if not name.fullmatch(data["file"]):
            raise CheckpointError(
                f"{path}: {where!r} names the file {data['file']!r}: an index file is a plain "
                f"name like {name.pattern!r} in the index folder"
            )

    fields = {"dimension": int, "rows": int, "similarity": str, "precision": str}
    for key, kind in {**fields, "store_text": bool, "prompts": dict, "model": dict}.items():
        json_field(path, manifest, key, kind, minimum=0 if kind is int else None)
    json_field(path, manifest["model"], "name", str, None)
    json_field(path, manifest, "generation", int, 0, minimum=0)
    for role in ("query", "document"):
        json_field(path, manifest["prompts"], role, str)
    entry("items", manifest.get("items"), {"file": str, "sha256": str}, ITEMS_NAME)
    shards = json_field(path, manifest, "shards", list)
    for i, shard in enumerate(shards):
        entry(f"shards[{i}]", shard, {"file": str, "start": int, "rows": int, "sha256": str},
              SHARD_NAME)  # fmt: skip
    if manifest.get("ann") is not None:
        entry("ann", manifest["ann"], {"file": str, "sha256": str, "rows": int}, ANN_NAME)
    for key in ("chunking", "ann_options", "probe"):
        json_field(path, manifest, key, dict, None)
    probe = manifest.get("probe")
    if probe is not None:
        vector = json_field(path, probe, "vector", list)
        if len(vector) != manifest["dimension"] or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector
        ):
            raise CheckpointError(
                f"{path}: 'probe' must hold {manifest['dimension']} numbers (the dimension)"
            )
    ranges = json_field(path, manifest, "int8_ranges", list, None)
    if ranges is not None:
        shape = np.shape(np.asarray(ranges, dtype=object))
        if shape != (2, manifest["dimension"]):
            raise CheckpointError(f"{path}: 'int8_ranges' must be [2, dimension], got {shape}")
        json_field(path, manifest, "int8_ranges_rows", int, minimum=0)


def verify(folder: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest names exists and has its recorded sha256."""
    files = [(s["file"], s["sha256"]) for s in manifest["shards"]]
    files.append((manifest["items"]["file"], manifest["items"]["sha256"]))
    if manifest.get("ann"):
        files.append((manifest["ann"]["file"], manifest["ann"]["sha256"]))
    for name, digest in files:
        path = folder / name
        if not path.is_file():
            raise IndexFormatError(f"{path}: missing (named by {folder / MANIFEST})")
        if sha256_of(path) != digest:
            raise IndexFormatError(
                f"{path}: checksum mismatch: the file is corrupted or was changed after "
                f"{folder / MANIFEST} was written"
            )


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    write_json(folder / MANIFEST, manifest)


def remove_unreferenced(folder: Path, manifest: dict[str, Any] | None) -> None:
    """Remove the index files (by name: `is_index_file`) the manifest no longer names (None:
    all of them): superseded ones and an interrupted save's. Only while no reader is opening
    the folder's files (`reading`); otherwise they are left for the next save."""
    keep = set()
    if manifest is not None:
        keep = {manifest["items"]["file"], *(s["file"] for s in manifest["shards"])}
        if manifest.get("ann"):
            keep.add(manifest["ann"]["file"])
    # Readers hold it only while opening files: a gap comes soon even when they overlap.
    with _lock_file(folder / READ_LOCK, shared=False, timeout=READERS_WAIT) as free:
        if not free:
            return
        for path in folder.iterdir():
            if path.name not in keep and is_index_file(path.name) and path.is_file():
                with contextlib.suppress(OSError):
                    path.unlink()


def is_index_file(name: str) -> bool:
    """Whether `name` is a file an index writes (a shard, database or graph), or the temporary
    file of one being written (`.NAME.tmp`, `.NAME.XXXXXXXX.tmp`)."""
    candidates = [name]
    if name.startswith(".") and name.endswith(".tmp"):
        base = name[1:-4]
        candidates = [base, base.rsplit(".", 1)[0]]
    return any(p.fullmatch(c) for p in (SHARD_NAME, ITEMS_NAME, ANN_NAME) for c in candidates)


def generation_of(folder: Path, *, strict: bool = True) -> int | None:
    """The generation of the index saved in `folder` (None: there is none; not `strict`:
    also None for a manifest.json that is not a readable index manifest)."""
    if not (folder / MANIFEST).exists():
        return None
    try:
        return int(read_manifest(folder).get("generation", 0))
    except IndexFormatError:
        if strict:
            raise
        return None


def remove_unused_folder(folder: Path) -> None:
    """Remove a folder that holds nothing but an index's lock files (a build that never saved);
    any other folder is left as it is."""
    with contextlib.suppress(OSError):
        names = {p.name for p in folder.iterdir()}
        if names <= {WRITE_LOCK, READ_LOCK}:
            for name in names:
                (folder / name).unlink()
            folder.rmdir()


# ---------------------------------------------------------------------------- locks
@contextlib.contextmanager
def _lock_file(path: Path, *, shared: bool, timeout: float | None) -> Iterator[bool]:
    """Hold the OS lock on `path` (created if missing) for the block, waiting `timeout` seconds
    for it (None: as long as it takes); yields whether it was taken. A lock file that cannot be
    opened (a read-only folder) counts as taken: no one can be writing there."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield True
            return
    try:
        taken = lock_descriptor(fd, shared=shared, wait=timeout is None)
        deadline = time.monotonic() + (timeout or 0.0)
        while not taken and time.monotonic() < deadline:
            time.sleep(0.01)
            taken = lock_descriptor(fd, shared=shared)
        yield taken
    finally:
        os.close(fd)


@contextlib.contextmanager
def reading(folder: Path) -> Iterator[None]:
    """Hold the folder's reader lock (shared) while opening one generation's files, so that no
    save removes a file the manifest read here names."""
    with _lock_file(folder / READ_LOCK, shared=True, timeout=None):
        yield


class IndexLockedError(OSError):
    """Another writer holds an index folder's write lock."""


class IndexConflictError(RuntimeError):
    """An index folder was saved by another writer since this index read or wrote it."""


class WriteLock:
    """The write lock of an index folder: one writer (process, or `Index` within a process)
    at a time. The OS lock on `write.lock` is released when `release` is called, the lock is
    garbage-collected or the process ends, however it ends; the holder records who it is in the
    file, so a refused writer can name it.

    Args:
        folder: the index folder (it must exist).
        timeout: seconds to wait for another writer to finish (0: refuse at once).
    """

    def __init__(self, folder: Path, timeout: float = 0.0):
        self.folder = folder
        path = folder / WRITE_LOCK
        deadline = time.monotonic() + max(float(timeout), 0.0)
        while True:
            folder.mkdir(parents=True, exist_ok=True)  # a failed build may have removed it
            self._file = open(path, "a+b", buffering=0)  # noqa: SIM115 (held until release)
            if lock_descriptor(self._file.fileno()):
                if _same_file(self._file, path):
                    break
                # The file was replaced while we waited: the lock is on the new one.
            elif time.monotonic() >= deadline:
                holder = _holder(path)
                self._file.close()
                raise IndexLockedError(
                    f"{folder}: the index is being written by {holder}; wait for it to finish"
                    + (f" (waited {timeout:g} s)" if timeout else "")
                )
            else:
                time.sleep(0.05)
            self._file.close()
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.argv)[:300],
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        self._file.truncate(0)
        self._file.write(json.dumps(record).encode())

    @property
    def held(self) -> bool:
        return not self._file.closed

    def release(self) -> None:
        """Drop the lock (a no-op once dropped)."""
        self._file.close()


def _same_file(file: Any, path: Path) -> bool:
    try:
        a, b = os.fstat(file.fileno()), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _holder(path: Path) -> str:
    """Who holds the write lock at `path`, as its holder recorded it."""
    try:
        record = json.loads(path.read_bytes() or b"{}")
        where = "this process" if record["pid"] == os.getpid() else f"process {record['pid']}"
        if record.get("host") != socket.gethostname():
            where += f" on {record.get('host')}"
        return f"{where} ({record.get('command') or 'python'}, since {record.get('since')})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


# ---------------------------------------------------------------------------- documents
@dataclasses.dataclass(frozen=True)
class DocumentRecord:
    """What an index knows of a document it ingested (`retrieval.ingest`): the hash of its text
    and metadata, its chunk count (None while only some of its chunks are in the index) and the
    absolute path of the file it was read from (None if not from a file)."""

    document_id: str
    sha256: str
    chunks: int | None
    source: str | None


class DocumentRecords:
    """The documents table of an index's item database (callers hold the index's lock)."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def get(self, document_id: str) -> DocumentRecord | None:
        row = self._db.execute(
            "SELECT document_id, sha256, chunks, source FROM documents WHERE document_id = ?",
            (document_id,),
        ).fetchone()
        return DocumentRecord(*row) if row else None

    def __iter__(self) -> Iterator[DocumentRecord]:
        """Every record, by document id (streamed from the database)."""
        query = "SELECT document_id, sha256, chunks, source FROM documents ORDER BY document_id"
        for row in self._db.execute(query):
            yield DocumentRecord(*row)

    def get_many(self, document_ids: list[str]) -> dict[str, DocumentRecord]:
        """The records of those of these documents the index has, by document id."""
        found = {}
        for i in range(0, len(document_ids), 500):
            part = document_ids[i : i + 500]
            marks = ",".join("?" * len(part))
            query = "SELECT document_id, sha256, chunks, source FROM documents WHERE document_id"
            for row in self._db.execute(f"{query} IN ({marks})", part):
                found[row[0]] = DocumentRecord(*row)
        return found

    def put(self, record: DocumentRecord) -> None:
        self.put_many([record])

    def put_many(self, records: list[DocumentRecord]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?)",
            ((r.document_id, r.sha256, r.chunks, r.source) for r in records),
        )

    def drop(self, document_ids: list[str]) -> None:
        for i in range(0, len(document_ids), 500):
            part = document_ids[i : i + 500]
            marks = ",".join("?" * len(part))
            self._db.execute(f"DELETE FROM documents WHERE document_id IN ({marks})", part)

    def sources(self) -> list[tuple[str, str]]:
        """(document id, source) of every document read from a file."""
        query = "SELECT document_id, source FROM documents WHERE source IS NOT NULL"
        return self._db.execute(query).fetchall()
