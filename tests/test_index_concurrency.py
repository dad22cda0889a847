"""Several writers and readers on one index folder, as separate processes: one writer at a time
(the others wait or are refused naming the holder), no lost update, and a reader opening the
index while it is being saved never fails. Vectors-only indexes (no model to load) keep the
processes quick; the command line's own locking is tested with the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ferris_jax.cli import main
from ferris_jax.retrieval import store
from ferris_jax.retrieval.index import Index
from ferris_jax.retrieval.store import IndexConflictError, IndexLockedError

DIM = 8
MODEL = "vectors-test"

# Run in a child: `path` (the index) and `name` (this process's label) are set before it.
_PRELUDE = f"""
import os, sys, time, zlib
import numpy as np
from ferris_jax.retrieval.index import Index
path, name = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(zlib.crc32(name.encode()))
def vectors(n):
    return rng.standard_normal((n, {DIM})).astype(np.float32)
"""


def _child(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    code = _PRELUDE + textwrap.dedent(script)
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen, timeout: float = 240) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def _new_index(path: Path, n: int = 4) -> Index:
    index = Index(None, dimension=DIM, model=MODEL)
    rng = np.random.default_rng(0)
    index.add_embeddings(
        rng.standard_normal((n, DIM)), ids=[f"base-{i}" for i in range(n)], model=MODEL
    )
    index.save(path)
    return index


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_second_writer_is_refused_naming_the_holder_and_loses_nothing(tmp_path, capsys):
    path = tmp_path / "ix"
    _new_index(path)
    ready, done = tmp_path / "ready", tmp_path / "done"
    holder = _child(
        f"""
        index = Index.load(path, lock=True)
        index.add_embeddings(vectors(2), ids=["held-0", "held-1"], model={MODEL!r})
        open({str(ready)!r}, "w").close()
        while not os.path.exists({str(done)!r}):
            time.sleep(0.05)
        index.save()
        index.close()
        """,
        str(path),
        "holder",
    )
    try:
        _wait_for(ready)
        mine = Index.load(path)  # readers are never blocked
        assert len(mine) == 4
        mine.add_embeddings(np.ones((1, DIM)), ids=["mine"], model=MODEL)
        with pytest.raises(IndexLockedError, match=f"process {holder.pid} .*since"):
            mine.save()
        with pytest.raises(IndexLockedError, match=r"waited 0\.3 s"):
            Index.load(path, lock=True, lock_timeout=0.3)
        assert main(["index", "remove", str(path), "base-0"]) == 1
        err = capsys.readouterr().err
        assert f"being written by process {holder.pid}" in err and "--wait SECONDS" in err
    finally:
        done.touch()
        _finish(holder)
    # The holder's save went through; ours was refused whole and can be retried.
    saved = Index.load(path)
    assert len(saved) == 6 and "held-1" in saved and "mine" not in saved
    with pytest.raises(IndexConflictError, match="load the index again"):
        mine.save()
    again = Index.load(path)
    again.add_embeddings(np.ones((1, DIM)), ids=["mine"], model=MODEL)
    again.save()
    assert len(Index.load(path)) == 7


def test_writers_that_wait_take_turns_and_every_update_is_kept(tmp_path):
    path = tmp_path / "ix"
    _new_index(path)
    rounds = 6
    writers = [
        _child(
            f"""
            for r in range({rounds}):
                with Index.load(path, lock=True, lock_timeout=120) as index:
                    index.add_embeddings(
                        vectors(3), ids=[f"{{name}}-{{r}}-{{i}}" for i in range(3)],
                        model={MODEL!r},
                    )
                    index.save()
            """,
            str(path),
            f"w{w}",
        )
        for w in range(3)
    ]
    for writer in writers:
        _finish(writer)
    index = Index.load(path)
    expected = [f"w{w}-{r}-{i}" for w in range(3) for r in range(rounds) for i in range(3)]
    assert len(index) == 4 + len(expected) and all(index.get(expected))
    assert json.loads((path / store.MANIFEST).read_text())["generation"] == 1 + 3 * rounds


def test_two_unlocked_writers_in_one_process_conflict_instead_of_losing_an_update(tmp_path):
    path = tmp_path / "ix"
    _new_index(path)
    a, b = Index.load(path), Index.load(path)
    a.add_embeddings(np.ones((2, DIM)), ids=["a0", "a1"], model=MODEL)
    b.add_embeddings(np.ones((1, DIM)), ids=["b0"], model=MODEL)
    a.save()
    with pytest.raises(IndexConflictError, match=r"generation 2\) since .*generation 1\)"):
        b.save()
    kept = Index.load(path)
    assert len(kept) == 6 and "a1" in kept and "b0" not in kept
    a.add_embeddings(np.ones((1, DIM)), ids=["a2"], model=MODEL)
    a.save()  # the last writer continues from its own save
    assert len(Index.load(path)) == 7


def test_readers_opening_the_index_while_it_is_saved_never_fail(tmp_path):
    """A writer saves (and compacts, which replaces every shard) over and over while two
    readers open the index in a loop: every open succeeds and sees a whole generation."""
    path = tmp_path / "ix"
    _new_index(path, n=6)
    stop = tmp_path / "stop"
    writer = _child(
        f"""
        index = Index.load(path, lock=True)
        r = 0
        while not os.path.exists({str(stop)!r}) and r < 10_000:
            index.add_embeddings(vectors(2), ids=[f"x{{r}}-a", f"x{{r}}-b"], model={MODEL!r})
            index.remove([f"x{{r}}-b"])
            if r % 5 == 4:
                index.compact()
            index.save()
            r += 1
        index.save()  # no reader now: every superseded file goes
        print(r)
        """,
        str(path),
        "writer",
    )
    readers = [
        _child(
            f"""
            opened = 0
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                index = Index.load(path)
                assert len(index) >= 6 and all(index.get([f"base-{{i}}" for i in range(4)]))
                hits = index.search(np.ones((1, {DIM}), np.float32), top_k=3)
                assert len(hits[0]) == 3, hits
                opened += 1
            print(opened)
            """,
            str(path),
            f"reader{i}",
        )
        for i in range(2)
    ]
    opened = [int(_finish(reader)) for reader in readers]
    stop.touch()
    saves = int(_finish(writer))
    assert min(opened) > 5 and saves > 5, (opened, saves)
    names = {p.name for p in path.iterdir()}
    manifest = json.loads((path / store.MANIFEST).read_text())
    named = {manifest["items"]["file"], *(s["file"] for s in manifest["shards"])}
    assert [n for n in names if store.is_index_file(n) and n not in named] == []


def test_index_add_from_two_processes_keeps_both(tiny_st, tmp_path):
    """Two `ferris-jax index add` commands at once: the second waits for the first (--wait),
    and the index holds both sets of documents."""
    model_dir = tiny_st[0]
    path = tmp_path / "ix"
    docs = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        for i in range(3):
            (tmp_path / name / f"{name}{i}.txt").write_text(f"Document {name} number {i}.\n")
        docs.append(str(tmp_path / name))
    assert main(["index", "build", docs[0], "-m", str(model_dir), "-o", str(path)]) == 0
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "ferris_jax.cli", "index", "add", str(path)]
    adds = [
        subprocess.Popen(
            [*command, source, "--wait", "300", "--no-progress"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        for source in docs[1:]
    ]
    for add in adds:
        _, err = add.communicate(timeout=300)
        assert add.returncode == 0, err
        assert "3 added" in err
    assert Index.load(path).info()["documents"] == 9


def test_a_failed_add_keeps_the_lock_over_vectors_it_spilled_to_disk(tmp_path, monkeypatch):
    from ferris_jax.retrieval import index as index_module

    path = tmp_path / "ix"
    _new_index(path)
    monkeypatch.setattr(index_module, "SHARD_ROWS", 4)
    a = Index.load(path)
    a.add_embeddings(np.ones((5, DIM)), ids=[f"a{i}" for i in range(5)], model=MODEL)  # spills
    with pytest.raises(ValueError, match="already in the index"):
        a.add_embeddings(np.ones((1, DIM)), ids=["a0"], model=MODEL)
    b = Index.load(path)
    b.add_embeddings(np.ones((1, DIM)), ids=["b0"], model=MODEL)
    with pytest.raises(IndexLockedError, match="this process"):
        b.save()  # a's unsaved shard is still protected
    a.save()
    assert len(Index.load(path)) == 9
