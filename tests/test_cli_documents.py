"""`ferris-jax index build` reading documents: --encoding reaches the sources, and progress shows
as plain lines when stderr is a log rather than a terminal."""

from __future__ import annotations

import re

import pytest
from helpers.data import lee_corpus

from ferris_jax import cli
from ferris_jax.cli import main


@pytest.fixture(scope="module")
def model_dir(tiny_st):
    return tiny_st[0]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lee")
    for i, text in enumerate(lee_corpus()[:6]):
        (folder / f"article-{i}.txt").write_text(text, encoding="utf-8")
    return folder


def test_encoding_reads_files_of_another_encoding(model_dir, tmp_path, capsys):
    latin = tmp_path / "latin"
    latin.mkdir()
    (latin / "cafe.txt").write_bytes("Un café à Genève, déjà fermé.\n".encode("latin-1"))
    build = ["index", "build", str(latin), "-m", str(model_dir), "--no-progress"]

    assert main([*build, "-o", str(tmp_path / "utf8")]) == 1
    assert "cannot decode byte" in capsys.readouterr().err
    assert main([*build, "-o", str(tmp_path / "bogus"), "--encoding", "no-such-codec"]) == 2
    assert "unknown encoding 'no-such-codec'" in capsys.readouterr().err

    assert main([*build, "-o", str(tmp_path / "latin1"), "--encoding", "latin-1"]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "latin1"), "café", "--json"]) == 0
    assert "Un café à Genève" in capsys.readouterr().out


def test_progress_is_printed_as_lines_when_stderr_is_not_a_terminal(
    model_dir, folder, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(cli, "_PROGRESS_SECONDS", 0.0, raising=False)  # a line a chunk
    build = ["index", "build", str(folder), "-m", str(model_dir), "--max-tokens", "32"]
    assert main([*build, "-o", str(tmp_path / "logged")]) == 0
    lines = capsys.readouterr().err.splitlines()
    progress = [line for line in lines if re.fullmatch(r"ferris-jax: \d+ chunks.*/s\)", line)]
    assert len(progress) >= 6 and lines[-1].startswith("ferris-jax: 6 documents read")
    assert re.fullmatch(r"ferris-jax: \d+ chunks, \d+ documents \(\d+\.\d chunks/s\)", progress[-1])

    assert main([*build, "-o", str(tmp_path / "quiet"), "--no-progress"]) == 0
    assert capsys.readouterr().err.count("\n") == 1  # the summary only
