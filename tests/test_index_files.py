"""An index folder holds the user's data: a save touches only the index's own files, a manifest
names only plain file names in its folder, and every bad manifest or file is refused naming the
key or file at fault (vectors-only indexes: no model needed)."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ferris_jax.retrieval import store
from ferris_jax.retrieval.index import Index
from ferris_jax.retrieval.store import IndexFormatError

DIM = 8
MODEL = "vectors-test"


def _index(n: int = 5, seed: int = 0, prefix: str = "v") -> Index:
    index = Index(None, dimension=DIM, model=MODEL)
    vectors = np.random.default_rng(seed).standard_normal((n, DIM))
    index.add_embeddings(vectors, ids=[f"{prefix}{i}" for i in range(n)], model=MODEL)
    return index


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _edit_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / store.MANIFEST).read_text())
    edit(manifest)
    (folder / store.MANIFEST).write_text(json.dumps(manifest))


def test_a_folder_with_someone_elses_manifest_or_files_is_refused_and_left_alone(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "my app", "icons": []}')
    (web / "items-list.json").write_text("[1, 2]")
    (web / "vectors-logo.svg").write_text("<svg/>")
    before = _snapshot(web)
    with pytest.raises(ValueError, match=r"holds no index \(items-list\.json, manifest\.json"):
        _index().save(web)
    assert _snapshot(web) == before


def test_saving_into_another_indexs_folder_is_refused_and_it_survives(tmp_path):
    other = _index(prefix="other").save(tmp_path / "other")
    before = _snapshot(other)
    with pytest.raises(ValueError, match="holds another index"):
        _index(prefix="mine").save(other)
    assert _snapshot(other) == before
    assert "other0" in Index.load(other)


def test_files_a_user_puts_beside_an_index_survive_saves_and_compaction(tmp_path):
    index = _index(n=20)
    path = index.save(tmp_path / "ix")
    mine = {
        "README.md": "my notes",
        "items-notes.txt": "not an item database",
        "vectors-old.safetensors": "not ours: no generation in the name",
        "ann-backup.faiss.bak": "x",
    }
    for name, text in mine.items():
        (path / name).write_text(text)
    index.remove([f"v{i}" for i in range(10)])
    index.compact()  # every shard is replaced
    index.save()
    index.add_embeddings(np.ones((2, DIM)), ids=["a", "b"], model=MODEL)
    index.save()
    for name, text in mine.items():
        assert (path / name).read_text() == text
    assert len(Index.load(path)) == 12


@pytest.mark.parametrize(
    "name",
    ["../outside.safetensors", "/etc/passwd", "sub/vectors-000000000000-00000000.safetensors"],
)
def test_a_manifest_naming_a_path_is_refused_before_anything_is_read(tmp_path, name):
    path = _index().save(tmp_path / "ix")
    (tmp_path / "outside.safetensors").write_bytes(b"secret")

    def point_outside(manifest):
        manifest["shards"][0]["file"] = name

    _edit_manifest(path, point_outside)
    with pytest.raises(IndexFormatError, match=r"'shards\[0\]' names the file .*plain name"):
        Index.load(path)
    _edit_manifest(path, lambda m: m["items"].update(file="../items-00000000.sqlite"))
    with pytest.raises(IndexFormatError, match="'items' names the file"):
        Index.load(path, verify=False)
    assert (tmp_path / "outside.safetensors").read_bytes() == b"secret"


def test_a_manifest_missing_a_key_or_of_the_wrong_type_names_it(tmp_path):
    path = _index().save(tmp_path / "ix")
    good = (path / store.MANIFEST).read_text()
    cases = {
        "dimension": (lambda m: m.pop("dimension"), "missing required key 'dimension'"),
        "rows": (lambda m: m.update(rows="5"), "'rows' must be an integer"),
        "shards": (lambda m: m["shards"][0].pop("sha256"), "missing required key 'sha256'"),
        "prompts": (lambda m: m.update(prompts=[]), "'prompts' must be an object"),
        "probe": (
            lambda m: m.update(probe={"text": "x", "vector": [0.5, 0.5]}),
            "'probe' must hold 8 numbers",
        ),
        "ranges": (lambda m: m.update(int8_ranges=[[0, 1]]), r"'int8_ranges' must be \[2"),
    }
    for edit, message in cases.values():
        (path / store.MANIFEST).write_text(good)
        _edit_manifest(path, edit)
        with pytest.raises(IndexFormatError, match=f"manifest.json: {message}"):
            Index.load(path)
    # Keys this version does not know are ignored (a later version may add some).
    (path / store.MANIFEST).write_text(good)
    _edit_manifest(path, lambda m: (m.update(extra=1), m["shards"][0].update(note="x")))
    assert len(Index.load(path)) == 5


def test_an_item_database_of_another_schema_is_named(tmp_path):
    path = _index().save(tmp_path / "ix")
    manifest = json.loads((path / store.MANIFEST).read_text())
    items = path / manifest["items"]["file"]
    items.unlink()
    db = sqlite3.connect(items)
    db.execute("CREATE TABLE items (key TEXT, value TEXT)")
    db.commit()
    db.close()
    _edit_manifest(path, lambda m: m["items"].update(sha256=store.sha256_of(items)))
    with pytest.raises(IndexFormatError, match=f"{items.name}: not an index's item database"):
        Index.load(path)


def test_an_index_of_vectors_reopens_without_a_model(tmp_path):
    path = _index().save(tmp_path / "ix")
    reopened = Index.load(path)  # no hub lookup of "vectors-test"
    assert reopened.encoder is None and len(reopened) == 5
    hits = reopened.search(np.ones(DIM, np.float32), top_k=2)
    assert len(hits) == 2


def test_a_full_disk_during_a_save_names_the_file_and_keeps_the_last_save(tmp_path, monkeypatch):
    index = _index()
    path = index.save(tmp_path / "ix")
    before = _snapshot(path)
    index.add_embeddings(np.ones((3, DIM)), ids=["x", "y", "z"], model=MODEL)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=r"No space left on device: '.*vectors-0000000000\d+-"):
        index.save()
    monkeypatch.undo()
    assert _snapshot(path) == before  # no temporary file left, the manifest unchanged
    assert len(Index.load(path)) == 5
    index.save()  # once there is room again
    assert len(Index.load(path)) == 8


def test_a_failed_save_into_a_new_folder_leaves_both_as_they_were(tmp_path, monkeypatch):
    index = _index()
    home = index.save(tmp_path / "home")
    index.add_embeddings(np.ones((3, DIM)), ids=["x", "y", "z"], model=MODEL)
    real = store.snapshot

    def failing(*args, **kwargs):  # after the pending rows were written to the new folder
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(store, "snapshot", failing)
    with pytest.raises(OSError, match="I/O error"):
        index.save(tmp_path / "away")
    assert not [p.name for p in (tmp_path / "away").iterdir() if store.is_index_file(p.name)]
    monkeypatch.setattr(store, "snapshot", real)
    index.save()  # its own folder still works: no shard named there lives elsewhere
    assert len(Index.load(home)) == 8
    index.save(tmp_path / "away")  # and so does the move, tried again
    assert len(Index.load(tmp_path / "away")) == 8
