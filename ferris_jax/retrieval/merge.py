"""`Index.merge`: index folders built separately (several processes or hosts, each embedding its
own share of a corpus) merged into one new index, equal to the one a single process would build.

The parts are checked against each other from their manifests before any model loads, opened
with one model, checked for item and document ids in two parts, then their live rows are copied
in part order into the new folder under its write lock: vectors bit for bit (in index form
already), ids, texts, metadata and document records. Memory stays flat: rows move `BATCH_ROWS`
at a time and spill to shard files as a large `add` does. A merge that fails leaves no index and
no files of its own at the target. This is the index's own module, split out of `index.py`: it
uses the row-level hooks of `Index` (`_stored_rows`, `_append`), which nothing else outside
`index.py` does.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferris_jax.retrieval import store

# Rows read from a part and written to the merged index at a time.
BATCH_ROWS = 1 << 16
# Manifest fields every part must share (the model, probe and chunking are checked apart).
SHARED = ("dimension", "similarity", "precision", "store_text", "prompts", "ann_options")


class MergeError(ValueError):
    """Parts that cannot be merged into one index; the message names the part and the field
    or id at fault."""


def merge(
    cls: Any,
    parts: Sequence[str | os.PathLike],
    path: str | os.PathLike,
    *,
    encoder: Any,
    verify: bool,
    lock_timeout: float,
    min_cosine: float,
    load_options: dict[str, Any],
) -> Any:
    """`Index.merge` (see there); `cls` is the `Index` class, `min_cosine` its probe threshold."""
    if isinstance(parts, (str, os.PathLike)):
        raise TypeError("parts must be a list of index folders, got one path")
    folders = [Path(p).resolve() for p in parts]
    target = Path(path).resolve()
    check_folders(folders, target)
    chunking = check_manifests(folders, [store.read_manifest(f) for f in folders], min_cosine)
    opened = []
    for folder in folders:  # the model loads once: from the first part that names one
        part = cls.load(folder, encoder, verify=verify, **load_options)
        encoder = encoder if encoder is not None else part.encoder
        opened.append(part)
    check_overlaps(folders, opened)

    first = opened[0]
    merged = cls(
        encoder, precision=first.precision, similarity=first.similarity,
        store_text=first.store_text, dimension=first.dimension, model=first.model["name"],
        ann=False if first.ann_options is None else first.ann_options,
        lexical_backend=first.lexical_backend,
    )  # fmt: skip
    merged.model, merged.prompts = dict(first.model), dict(first.prompts)
    merged.probe = next((p.probe for p in opened if p.probe is not None), None)
    merged.chunking = chunking
    # int8 ranges stay unset: the first search computes them over the merged vectors, as a
    # single process's index would.
    created = not target.exists()
    merged.lock(target, timeout=lock_timeout)
    merged.lock_timeout = lock_timeout
    try:
        merged.path = target  # pending rows spill to shard files here past SHARD_ROWS
        with merged._lock:
            for part in opened:
                for vectors, items in part._stored_rows(BATCH_ROWS):
                    merged._append(vectors, items, stored=True)
                for record in part.documents:
                    merged.documents.put(record)
            merged.save()
    except BaseException:
        if store.generation_of(target, strict=False) is None:  # no manifest: leave nothing
            store.remove_unreferenced(target, None)
            if created:
                store.remove_unused_folder(target)  # under the lock: a waiting writer retries
        merged.close()
        raise
    merged.close()
    return merged


def check_folders(folders: list[Path], target: Path) -> None:
    """At least one part, none twice, the target outside every part and new or empty."""
    if not folders:
        raise MergeError("no parts to merge: name the index folders to merge")
    seen: set[Path] = set()
    for folder in folders:
        if folder in seen:
            raise MergeError(f"{folder} is named twice among the parts: name each part once")
        seen.add(folder)
        if target == folder or folder in target.parents:
            raise MergeError(
                f"{target} is inside the part {folder}: write the merged index to a folder "
                "outside every part"
            )
    if target.exists() and not target.is_dir():
        raise MergeError(f"{target} exists and is not a folder")
    if target.is_dir():
        others = [
            p.name for p in target.iterdir() if p.name not in (store.WRITE_LOCK, store.READ_LOCK)
        ]
        if store.generation_of(target, strict=False) is not None:
            raise MergeError(f"{target} holds an index: merge into a new or empty folder")
        if others:
            raise MergeError(
                f"{target} is a non-empty folder ({', '.join(sorted(others)[:3])}"
                f"{', ...' if len(others) > 3 else ''}): merge into a new or empty folder"
            )


def check_manifests(
    folders: list[Path], manifests: list[dict[str, Any]], min_cosine: float
) -> dict[str, Any] | None:
    """Refuse parts that differ in model, probe vector, `SHARED` fields or chunking (a part
    with no chunked documents fits any); the merged index's chunking."""
    head, first = folders[0], manifests[0]

    def refuse(folder: Path, field: str, theirs: Any, ours: Any, where: Path = head) -> None:
        raise MergeError(
            f"{folder}: {field} is {theirs!r}, but {ours!r} in {where}: only parts of one "
            "index (one model and the same options) can be merged"
        )

    name = first["model"]["name"]
    for folder, manifest in zip(folders[1:], manifests[1:], strict=True):
        if manifest["model"]["name"] != name:
            refuse(folder, "the model", manifest["model"]["name"], name)
        revisions = (manifest["model"].get("revision"), first["model"].get("revision"))
        if None not in revisions and revisions[0] != revisions[1]:
            refuse(folder, "the model revision", *revisions)
        for key in SHARED:
            if manifest.get(key) != first.get(key):
                refuse(folder, key, manifest.get(key), first.get(key))
    pairs = list(zip(folders, manifests, strict=True))
    probes = [(f, m["probe"]["vector"]) for f, m in pairs if m.get("probe")]
    for folder, vector in probes[1:]:
        a, b = np.asarray(probes[0][1], np.float64), np.asarray(vector, np.float64)
        cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
        if cosine < min_cosine:
            raise MergeError(
                f"{folder}: built with a model that embeds differently from {probes[0][0]}'s "
                f"(probe cosine {cosine:.3f}, both named {name!r}): only parts of one model "
                "can be merged"
            )
    chunked = [(f, m["chunking"]) for f, m in pairs if m.get("chunking")]
    for folder, chunking in chunked[1:]:
        if json.dumps(chunking, sort_keys=True) != json.dumps(chunked[0][1], sort_keys=True):
            refuse(folder, "the chunking", chunking, chunked[0][1], chunked[0][0])
    return dict(chunked[0][1]) if chunked else None


def check_overlaps(folders: list[Path], parts: list[Any]) -> None:
    """Refuse an item id, or a document id, held by two parts (overlapping shares), naming
    both parts; the ids are collected in a scratch database, so memory stays flat."""
    with tempfile.TemporaryDirectory(prefix="ferris-merge-") as scratch:
        db = sqlite3.connect(os.path.join(scratch, "ids.sqlite"), isolation_level=None)
        try:
            db.execute(
                "CREATE TABLE seen (kind INTEGER, key TEXT, part INTEGER, "
                "PRIMARY KEY (kind, key, part)) WITHOUT ROWID"
            )
            insert = "INSERT OR IGNORE INTO seen VALUES (?, ?, ?)"
            for p, part in enumerate(parts):
                db.execute("BEGIN")
                for _, items in part._stored_rows(BATCH_ROWS, vectors=False):
                    db.executemany(insert, ((0, id, p) for id in items.ids))
                    documents = set(items.document_ids) - {None}
                    db.executemany(insert, ((1, d, p) for d in documents))
                db.executemany(insert, ((1, r.document_id, p) for r in part.documents))
                db.execute("COMMIT")
            clash = db.execute(
                "SELECT kind, key, MIN(part), MAX(part) FROM seen GROUP BY kind, key "
                "HAVING COUNT(*) > 1 ORDER BY kind LIMIT 1"
            ).fetchone()
        finally:
            db.close()
    if clash is not None:
        kind, key, a, b = clash
        raise MergeError(
            f"{folders[b]}: {('item id', 'document id')[kind]} {key!r} is also in {folders[a]}: "
            "the parts overlap; build each part over its own share of the corpus (or remove "
            "the id from one part)"
        )
