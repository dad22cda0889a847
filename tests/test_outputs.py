"""Where `-o` points decides how it is written: a regular file or a new path atomically (a symlink
is followed and stays a link), anything else (a device, a FIFO, /dev/stdout) straight through,
never replaced; a write that fails names the output and leaves nothing behind."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers.texts import SENTENCES

from ferris_jax import files
from ferris_jax.cli import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files")


@pytest.fixture
def texts_file(tmp_path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(SENTENCES[:4]) + "\n", encoding="utf-8")
    return path


def _embed(texts_file: Path, output: str | Path, model: Path, *extra: str) -> int:
    return main(["embed", str(texts_file), "-o", str(output), "-m", str(model), *extra])


def test_a_fifo_is_written_through_and_stays_a_fifo(tiny_st, texts_file, tmp_path):
    fifo = tmp_path / "vectors.npy"
    os.mkfifo(fifo)
    received = {}
    reader = threading.Thread(target=lambda: received.update(data=fifo.read_bytes()))
    reader.start()
    assert _embed(texts_file, fifo, tiny_st[0]) == 0
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    vectors = np.load(io.BytesIO(received["data"]))
    st = tiny_st[1]
    dimension = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    assert vectors.shape == (4, dimension())


def test_a_symlink_is_followed_and_stays_a_link(tiny_st, texts_file, tmp_path):
    target = tmp_path / "real.npy"
    target.write_bytes(b"old")
    link = tmp_path / "link.npy"
    link.symlink_to(target)
    assert _embed(texts_file, link, tiny_st[0]) == 0
    assert link.is_symlink() and np.load(target).shape[0] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npy", "real.npy", "texts.txt"]


def test_dev_null_is_written_through_not_replaced(tiny_st, texts_file):
    assert _embed(texts_file, "/dev/null", tiny_st[0]) == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_device_is_an_error_naming_it(tiny_st, texts_file, capsys):
    assert _embed(texts_file, "/dev/full", tiny_st[0]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("ferris-jax: error: cannot write /dev/full")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_dev_stdout_writes_to_the_pipe(tiny_st, texts_file):
    argv = ["embed", str(texts_file), "-m", str(tiny_st[0]), "-o", "/dev/stdout"]
    run = subprocess.run(
        [sys.executable, "-m", "ferris_jax", *argv, "--format", "jsonl"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"},
    )
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 4


def test_dev_stdout_redirected_to_a_file_appends_and_keeps_the_file(tiny_st, texts_file, tmp_path):
    """`>> log` must append (reopening /dev/stdout would truncate it, and a rename would replace
    the file the shell holds)."""
    log = tmp_path / "log.jsonl"
    log.write_text('{"previous": "line"}\n')
    argv = ["embed", str(texts_file), "-m", str(tiny_st[0]), "-o", "/dev/stdout"]
    with open(log, "a") as append:
        run = subprocess.run(
            [sys.executable, "-m", "ferris_jax", *argv, "--format", "jsonl"],
            stdout=append,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"},
        )
    assert run.returncode == 0, run.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == '{"previous": "line"}' and len(lines) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl", "texts.txt"]


def test_an_unwritable_fifo_is_refused_before_the_model_loads(tmp_path, texts_file, capsys):
    if os.geteuid() == 0:
        pytest.skip("root may write anything")
    fifo = tmp_path / "read-only.npy"
    os.mkfifo(fifo, 0o444)
    assert main(["embed", str(texts_file), "-o", str(fifo), "-m", str(tmp_path)]) == 1
    assert f"cannot write {fifo}: permission denied" in capsys.readouterr().err


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous")

    def fail_midway(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.write_output(target, fail_midway)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_pending_temporary_files_are_removed_before_a_hard_exit(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(FileNotFoundError), files.atomic_write(target) as f:
        f.write(b"partial")
        files.remove_pending_files()  # what the CLI's interrupt handler does, then exits
        assert list(tmp_path.iterdir()) == []
    assert not target.exists()


def test_a_folder_write_replaces_the_old_folder_only_when_complete(tmp_path):
    target = tmp_path / "model"
    with files.atomic_directory(target) as folder:
        (folder / "a").write_text("1")
    with pytest.raises(RuntimeError), files.atomic_directory(target) as folder:
        (folder / "a").write_text("2")
        raise RuntimeError("interrupted")
    assert (target / "a").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
