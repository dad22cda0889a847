"""read_documents: text and Markdown files, folders and JSON Lines, read lazily; every bad input
named by file and line."""

from __future__ import annotations

import errno
import json
import os
import re
import threading
import tracemalloc
from pathlib import Path

import pytest
from helpers.data import lee_corpus

from ferris_jax.retrieval.sources import Document, DocumentError, read_documents


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_a_folder_is_read_recursively_in_sorted_order(tmp_path):
    articles = lee_corpus()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "second.md").write_text(articles[1], encoding="utf-8")
    (tmp_path / "a.txt").write_text(articles[0], encoding="utf-8")
    (tmp_path / "b" / "notes.csv").write_text("skipped,file\n", encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text("hidden files are skipped", encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD.txt").write_text("so are hidden folders", encoding="utf-8")
    _write_jsonl(tmp_path / "b" / "more.jsonl", [{"id": "x", "text": articles[2]}])

    docs = list(read_documents(tmp_path))

    assert [d.id for d in docs] == ["a.txt", "x", "b/second.md"]
    assert [d.text for d in docs] == [articles[0], articles[2], articles[1]]
    assert docs[0].metadata == {"source": str(tmp_path / "a.txt")}
    assert docs[1].metadata == {"source": str(tmp_path / "b" / "more.jsonl"), "line": 1}


def test_a_file_given_directly_is_named_by_its_file_name(tmp_path):
    path = tmp_path / "article.markdown"
    path.write_bytes(b"\xef\xbb\xbf# Title\r\n\r\nBody text.\r\n")

    (doc,) = read_documents([str(path)])

    assert doc == Document("article.markdown", "# Title\n\nBody text.\n", {"source": str(path)})


def test_jsonl_records_carry_id_text_and_metadata(tmp_path):
    articles = lee_corpus()
    path = _write_jsonl(
        tmp_path / "corpus.jsonl",
        [
            {"id": "a", "text": articles[0], "title": "Fires", "metadata": {"year": 2001}},
            {"text": articles[1], "url": "https://example.org/2"},
            {"id": "c", "page_content": "wrong key", "text": articles[2], "source": "news"},
        ],
    )
    with path.open("a", encoding="utf-8") as f:
        f.write("\n   \n")  # blank lines are skipped

    docs = list(read_documents(path))

    assert [d.id for d in docs] == ["a", "corpus.jsonl:2", "c"]
    assert docs[0].metadata == {"source": str(path), "line": 1, "title": "Fires", "year": 2001}
    assert docs[1].metadata == {"source": str(path), "line": 2, "url": "https://example.org/2"}
    assert docs[2].metadata["source"] == "news"  # the record's own fields win over ours
    assert docs[2].text == articles[2]

    only_title = list(read_documents(path, metadata_fields=["title"]))
    assert only_title[0].metadata == {
        "source": str(path),
        "line": 1,
        "title": "Fires",
        "year": 2001,
    }
    assert only_title[1].metadata == {"source": str(path), "line": 2}

    langchain = _write_jsonl(
        tmp_path / "lc.jsonl", [{"page_content": articles[3], "metadata": {"source": "s"}}]
    )
    (doc,) = read_documents(langchain, text_field="page_content")
    assert doc.text == articles[3] and doc.metadata == {"source": "s", "line": 1}


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"id": "a", "text": "ok"}', '{"id": "b", "text": '], r"bad\.jsonl:2: invalid JSON"),
        (['["a list"]'], r"bad\.jsonl:1: expected a JSON object, got list"),
        (['{"id": "a"}'], r"bad\.jsonl:1: the text field 'text' must be a string \(it is missing"),
        (
            ['{"id": "a", "text": 3}'],
            r"bad\.jsonl:1: the text field 'text' must be a string \(got int\)",
        ),
        (['{"id": 7, "text": "t"}'], r"bad\.jsonl:1: the id field 'id' must be a non-empty string"),
        (['{"id": "", "text": "t"}'], r"bad\.jsonl:1: the id field 'id'"),
        (['{"text": "t", "metadata": [1]}'], r"bad\.jsonl:1: 'metadata' must be a JSON object"),
        (
            ['{"id": "a", "text": "t"}', "", '{"id": "a", "text": "u"}'],
            r"bad\.jsonl:3: duplicate document id 'a' \(first at .*bad\.jsonl:1\)",
        ),
        (['{"id": "a", "text": "\\ud800"}'], r"bad\.jsonl:1: 'text' has a lone surrogate"),
    ],
)
def test_bad_jsonl_lines_are_named_by_file_and_line(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DocumentError, match=message):
        list(read_documents(path))


def test_undecodable_bytes_are_named_by_file_and_line(tmp_path):
    text = tmp_path / "latin1.txt"
    text.write_bytes("first line\nsecond line: caf\xe9\n".encode("latin-1"))
    with pytest.raises(DocumentError, match=r"latin1\.txt:2: cannot decode byte 27 as utf-8"):
        list(read_documents(text))
    (doc,) = read_documents(text, encoding="latin-1")
    assert doc.text.endswith("café\n")

    jsonl = tmp_path / "latin1.jsonl"
    jsonl.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DocumentError, match=r"latin1\.jsonl:2: cannot decode byte 13 of the line"):
        list(read_documents(jsonl))


def test_duplicate_ids_across_sources_are_refused(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.txt").write_text(f"text of {folder}", encoding="utf-8")
    with pytest.raises(DocumentError, match=r"duplicate document id 'same\.txt'.*one folder above"):
        list(read_documents([tmp_path / "a", tmp_path / "b"]))
    assert [d.id for d in read_documents(tmp_path)] == ["a/same.txt", "b/same.txt"]


def test_paths_and_options_are_checked_before_reading(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing"))):
        read_documents(tmp_path / "missing")
    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(DocumentError, match=r"table\.csv: unsupported file type '\.csv'"):
        read_documents(csv)
    with pytest.raises(ValueError, match="text_field"):
        read_documents(tmp_path, text_field="")
    with pytest.raises(TypeError, match="metadata_fields"):
        read_documents(tmp_path, metadata_fields="title")
    with pytest.raises(LookupError):
        read_documents(tmp_path, encoding="no-such-codec")


def test_jsonl_is_read_line_by_line(tmp_path):
    """Documents come out before a bad line further on is reached, and reading a 10 MB file
    holds about one line in memory."""
    articles = lee_corpus()
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(2000):
            f.write(json.dumps({"id": str(i), "text": articles[i % len(articles)] * 4}) + "\n")
        f.write("not json\n")
    size = path.stat().st_size
    assert size > 8_000_000

    docs = read_documents(path)
    assert next(docs).text == articles[0] * 4
    tracemalloc.start()
    try:
        n = 1 + sum(1 for _ in zip(range(1998), docs, strict=False))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 1999
    assert peak < size / 20, f"peak {peak} bytes while reading a {size}-byte file"
    assert next(docs).id == "1999"
    with pytest.raises(DocumentError, match=r"big\.jsonl:2001: invalid JSON"):
        next(docs)


def test_documents_check_their_fields():
    with pytest.raises(TypeError, match="id must be a non-empty str"):
        Document(3, "text")
    with pytest.raises(TypeError, match="'a': text must be a str"):
        Document("a", b"bytes")
    with pytest.raises(TypeError, match="'a': metadata must be a dict"):
        Document("a", "text", metadata=[("k", "v")])


def _within(seconds: float, work):
    """`work()`, or a failure if it has not returned after `seconds` (it would hang)."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_in_a_folder_is_skipped_and_one_named_directly_is_read(tmp_path):
    articles = lee_corpus()
    (tmp_path / "a.txt").write_text(articles[0], encoding="utf-8")
    os.mkfifo(tmp_path / "pipe.txt")  # no writer: opening it would block forever
    docs = _within(10, lambda: list(read_documents(tmp_path)))
    assert [d.id for d in docs] == ["a.txt"]

    fifo = tmp_path / "stream.jsonl"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("w", encoding="utf-8") as f:
            for i, text in enumerate(articles[1:4]):
                f.write(json.dumps({"id": f"s{i}", "text": text}) + "\n")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    docs = _within(10, lambda: list(read_documents(fifo)))
    writer.join(10)
    assert [(d.id, d.text) for d in docs] == [(f"s{i}", t) for i, t in enumerate(articles[1:4])]
    os.mkfifo(tmp_path / "stream")
    with pytest.raises(DocumentError, match=r"stream: unsupported file type '\(no extension\)'"):
        read_documents(tmp_path / "stream")


def test_a_subfolder_that_cannot_be_listed_is_an_error_naming_it(tmp_path, monkeypatch):
    articles = lee_corpus()
    (tmp_path / "a.txt").write_text(articles[0], encoding="utf-8")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "b.txt").write_text(articles[1], encoding="utf-8")
    scandir = os.scandir

    def denied(path="."):  # as the OS answers a folder without read permission (even as root)
        if Path(path) == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    documents = read_documents(tmp_path)  # the walk is lazy: the error comes with the first
    message = re.escape(f"{locked}: cannot read this folder (Permission denied)")
    with pytest.raises(DocumentError, match=message):
        next(documents)


def test_the_decode_error_names_the_encoding_option(tmp_path):
    text = tmp_path / "latin1.txt"
    text.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DocumentError, match=r"give its encoding \(encoding=, or --encoding"):
        list(read_documents(text))
    jsonl = tmp_path / "latin1.jsonl"
    jsonl.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(DocumentError, match=r"of the line as utf-8 .*--encoding"):
        list(read_documents(jsonl))
