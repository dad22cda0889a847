"""An index folder on disk: vector shards, a metadata database and the manifest naming them.

    INDEX/
      manifest.json               format version, model, dimension, precision, files + sha256
      vectors-<generation>-<n>.safetensors   float32 [rows, D]: rows start..start+rows-1
      items-<generation>.sqlite   row -> id, document id, text, metadata (JSON); deleted rows absent

Shards are written once and never changed; a save writes only the rows added since the last one
as a new shard, a new database snapshot, then replaces `manifest.json` atomically. Files the
manifest does not name (an interrupted save's, or superseded ones) are removed after a save, so
a save killed at any moment leaves the previous manifest and every file it names intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from ferris_jax.errors import CheckpointError
from ferris_jax.files import atomic_write, read_json_object, write_json

FORMAT = "ferris-jax-index"
# Raised when the layout changes incompatibly; `load` refuses versions it does not know.
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    document_id TEXT,
    text TEXT,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS items_document ON items(document_id);
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
    """A metadata database with the items table (shared across threads; callers lock)."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
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
    finally:
        target.close()
    os.replace(tmp, path)
    return sha256_of(path)


def restore(path: Path, into: sqlite3.Connection) -> None:
    """Copy the database file `path` into the working database `into`."""
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        source.backup(into)
    except sqlite3.DatabaseError as e:
        raise IndexFormatError(f"{path}: not a readable SQLite database ({e})") from None
    finally:
        source.close()


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the index folder, checked for format and version."""
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
    return manifest


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


def remove_unreferenced(folder: Path, manifest: dict[str, Any]) -> None:
    """Remove index files the manifest no longer names (superseded or half-written ones)."""
    keep = {MANIFEST, manifest["items"]["file"], *(s["file"] for s in manifest["shards"])}
    if manifest.get("ann"):
        keep.add(manifest["ann"]["file"])
    for path in _index_files(folder):
        if path.name not in keep:
            with contextlib.suppress(OSError):
                path.unlink()


def _index_files(folder: Path) -> Iterator[Path]:
    for path in folder.iterdir():
        name = path.name.lstrip(".")
        if path.is_file() and name.startswith(("vectors-", "items-", "ann-")):
            yield path
