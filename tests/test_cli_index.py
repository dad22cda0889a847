"""`ferris-jax index build/add/remove/info` and `ferris-jax search`, run in-process through `main`
on the Lee corpus (text files, JSON Lines, Markdown) with the tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.checkpoints import make_sentence_transformer
from helpers.data import lee_corpus

import ferris_jax
from ferris_jax.cli import _PRECISIONS, main
from ferris_jax.retrieval import index as index_module
from ferris_jax.retrieval.chunking import chunk_documents
from ferris_jax.retrieval.index import Index
from ferris_jax.retrieval.sources import read_documents

MAX_TOKENS = 48
OVERLAP = 8


_real_load = ferris_jax.load
_loaded: dict[str, ferris_jax.Encoder] = {}


def _cached_load(*args, **kwargs):
    """ferris_jax.load, run for real once per distinct set of arguments: every command loads
    the model (the index's own, for add/remove/info/search) and compiling it again is slow."""
    key = repr((args, sorted(kwargs.items())))
    if key not in _loaded:
        _loaded[key] = _real_load(*args, **kwargs)
    return _loaded[key]


@pytest.fixture(autouse=True)
def _load_once(monkeypatch):
    import ferris_jax.api

    monkeypatch.setattr(ferris_jax, "load", _cached_load)
    monkeypatch.setattr(ferris_jax.api, "load", _cached_load)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Eight Lee articles as .txt files in a folder, six as JSON Lines, two in one Markdown file."""
    root = tmp_path_factory.mktemp("corpus")
    articles = lee_corpus()
    folder = root / "news"
    folder.mkdir()
    for i, text in enumerate(articles[:8]):
        (folder / f"article-{i:02d}.txt").write_text(text + "\n", encoding="utf-8")
    with (root / "more.jsonl").open("w", encoding="utf-8") as f:
        for i, text in enumerate(articles[8:14]):
            f.write(json.dumps({"id": f"lee-{i}", "text": text, "year": 2000 + i}) + "\n")
    (root / "notes.md").write_text(
        f"# Two articles\n\n{articles[14]}\n\n## The second\n\n{articles[15]}\n", encoding="utf-8"
    )
    return {"folder": folder, "jsonl": root / "more.jsonl", "md": root / "notes.md"}


@pytest.fixture(scope="module")
def model_dir(tiny_st) -> Path:
    return tiny_st[0]


@pytest.fixture(scope="module")
def encoder(model_dir):
    return ferris_jax.load(model_dir)


def _sources(corpus) -> list[str]:
    return [str(corpus["folder"]), str(corpus["jsonl"]), str(corpus["md"])]


def _expected_ids(corpus, encoder) -> list[str]:
    """The chunk ids an index of `corpus` must hold: chunked independently of the CLI."""
    documents = read_documents(_sources(corpus))
    chunks = chunk_documents(
        documents,
        encoder,
        max_tokens=MAX_TOKENS,
        overlap=OVERLAP,
        prompt=encoder.prompt_for("document"),
    )
    return [c.id for c in chunks]


def _build(model_dir, corpus, output, *extra) -> int:
    return main(
        ["index", "build", *_sources(corpus), "-m", str(model_dir), "-o", str(output),
         "--max-tokens", str(MAX_TOKENS), "--overlap", str(OVERLAP), *extra]
    )  # fmt: skip


def _holds_exactly(index: Index, ids: list[str]) -> None:
    assert len(index) == len(ids) == len(set(ids))
    assert all(hit is not None for hit in index.get(ids))


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("ferris-jax: error: ") and err.count("\n") == 1, err
    return err


def test_precisions_match_the_index():
    assert _PRECISIONS == index_module.PRECISIONS


def test_build_info_search_add_remove(model_dir, encoder, corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    folder_only = [str(corpus["folder"])]
    code = main(
        ["index", "build", *folder_only, "-m", str(model_dir), "-o", str(out),
         "--max-tokens", str(MAX_TOKENS), "--overlap", str(OVERLAP), "--save-every", "10"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "8 documents read, 8 added (0 already in the index, skipped)" in err
    assert "chunks/s" in err

    assert main(["index", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["documents"] == 8 and info["precision"] == "float32"
    assert info["dimension"] == encoder.embedding_dimension
    first = info["items"]
    assert main(["index", "info", str(out)]) == 0
    table = capsys.readouterr().out
    assert "items:" in table and str(first) in table

    # The search equals Index.search on the saved index (scores and ids).
    query = lee_corpus()[3][:120]
    expected = Index.load(out).search(query, top_k=3)
    assert main(["search", str(out), query, "-k", "3", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in lines] == [h.id for h in expected]
    assert [r["rank"] for r in lines] == [1, 2, 3]
    np.testing.assert_allclose([r["score"] for r in lines], [h.score for h in expected], rtol=1e-5)
    assert lines[0]["text"] == expected[0].text and lines[0]["query"] == query

    # --mode: the hybrid search of Index.search.
    expected_hybrid = Index.load(out).search(query, top_k=3, mode="hybrid", candidates=6)
    assert main(["search", str(out), query, "-k", "3", "--json", "--mode", "hybrid",
                 "--candidates", "6"]) == 0  # fmt: skip
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["id"], r["score"]) for r in lines] == [(h.id, h.score) for h in expected_hybrid]

    assert main(["search", str(out), query, "-k", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["RANK", "SCORE", "ID", "TEXT"] and len(table) == 4
    assert table[1].split()[:3] == ["1", f"{expected[0].score:.4f}", expected[0].id]

    # add: the JSON Lines and Markdown documents; the folder again is skipped.
    assert main(["index", "add", str(out), *_sources(corpus),
                 "--max-tokens", str(MAX_TOKENS), "--overlap", str(OVERLAP)]) == 0  # fmt: skip
    assert "15 documents read, 7 added (8 already in the index, skipped)" in capsys.readouterr().err
    _holds_exactly(Index.load(out), _expected_ids(corpus, encoder))

    # JSON Lines metadata is searchable with --filter; --by-document gives one chunk a document.
    assert main(["search", str(out), query, "-k", "4", "--json", "--filter", '{"year": 2003}']) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert hits and {h["document_id"] for h in hits} == {"lee-3"}
    assert main(["search", str(out), query, "-k", "4", "--json", "--by-document"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(hits) == 4 and len({h["document_id"] for h in hits}) == 4

    # remove a chunk, then a whole document; both gone from the saved index and from search.
    doc_chunks = [i for i in _expected_ids(corpus, encoder) if i.startswith("lee-3#")]
    assert len(doc_chunks) > 1
    assert main(["index", "remove", str(out), doc_chunks[0]]) == 0
    assert "removed 1 item" in capsys.readouterr().err
    assert main(["index", "remove", str(out), "lee-3", "article-00.txt", "--document"]) == 0
    capsys.readouterr()
    index = Index.load(out)
    assert not any(
        i.startswith(("lee-3#", "article-00.txt#")) for i in _all_ids(index, corpus, encoder)
    )
    assert (
        main(["search", str(out), query, "-k", "50", "--json", "--filter", '{"year": 2003}']) == 0
    )
    assert capsys.readouterr().out == ""
    before = len(index)
    assert main(["index", "remove", str(out), "lee-4", "--document", "--compact"]) == 0
    capsys.readouterr()
    compacted = Index.load(out)
    assert compacted.info()["removed"] == 0 and len(compacted) < before


def _all_ids(index: Index, corpus, encoder) -> list[str]:
    """The expected ids still in `index`."""
    ids = _expected_ids(corpus, encoder)
    return [i for i, hit in zip(ids, index.get(ids), strict=True) if hit]


def test_interrupted_build_continues_to_the_same_index(
    model_dir, encoder, corpus, tmp_path, monkeypatch, capsys
):
    whole = tmp_path / "whole"
    assert _build(model_dir, corpus, whole, "--save-every", "16") == 0
    expected = _expected_ids(corpus, encoder)
    _holds_exactly(Index.load(whole), expected)

    real_add, calls = Index.add, []

    def interrupted_add(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # after two saves, in the middle of the third slice
            raise KeyboardInterrupt
        return real_add(self, *args, **kwargs)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(Index, "add", interrupted_add)
    assert _build(model_dir, corpus, resumed, "--save-every", "16") == 130
    capsys.readouterr()
    partial = Index.load(resumed)
    assert 0 < len(partial) < len(expected)
    # A document added in part (as a killed run with slices ending mid-document leaves it).
    kept = [i for i, hit in zip(expected, partial.get(expected), strict=True) if hit]
    last_document = kept[-1].rsplit("#", 1)[0]
    partial.remove(kept[-1])
    partial.save()
    assert f"{last_document}#0" in Index.load(resumed)

    monkeypatch.setattr(Index, "add", real_add)
    assert _build(model_dir, corpus, resumed, "--save-every", "16") == 0
    err = capsys.readouterr().err
    assert "already in the index, skipped" in err
    final = Index.load(resumed)
    _holds_exactly(final, expected)
    query = lee_corpus()[10][:100]
    a, b = Index.load(whole).search(query, top_k=10), final.search(query, top_k=10)
    assert [h.id for h in a] == [h.id for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5, atol=1e-6)

    # Running it once more adds nothing.
    assert _build(model_dir, corpus, resumed) == 0
    assert "15 documents read, 0 added (15 already in the index, skipped), 0 chunks" in (
        capsys.readouterr().err
    )


def test_no_chunk_embeds_whole_documents_or_refuses_long_ones(model_dir, corpus, tmp_path, capsys):
    short = tmp_path / "short.jsonl"
    short.write_text(
        "".join(
            json.dumps({"id": f"s{i}", "text": t[:80]}) + "\n"
            for i, t in enumerate(lee_corpus()[:5])
        ),
        encoding="utf-8",
    )
    out = tmp_path / "whole-docs"
    assert (
        main(["index", "build", str(short), "-m", str(model_dir), "-o", str(out), "--no-chunk"])
        == 0
    )
    capsys.readouterr()
    index = Index.load(out)
    assert len(index) == 5 and all(index.get([f"s{i}" for i in range(5)]))

    code = main(["index", "add", str(out), str(corpus["jsonl"]), "--no-chunk"])
    assert code == 1
    err = _error(capsys)
    assert "document 'lee-0'" in err and "--no-chunk" in err and "truncated" in err
    code = main(["index", "add", str(out), str(short), "--no-chunk", "--max-tokens", "10"])
    assert code == 2 and "--no-chunk" in _error(capsys)


def test_a_continued_index_keeps_its_chunking(model_dir, encoder, corpus, tmp_path, capsys):
    """`index add` chunks with the index's own --max-tokens / --overlap (recorded by `index
    build`) and refuses others, naming them, before anything changes."""
    out = tmp_path / "idx"
    folder_only = [str(corpus["folder"])]
    assert main(["index", "build", *folder_only, "-m", str(model_dir), "-o", str(out),
                 "--max-tokens", str(MAX_TOKENS), "--overlap", str(OVERLAP)]) == 0  # fmt: skip
    capsys.readouterr()
    before = Index.load(out).info()
    assert before["chunking"] == {
        "max_tokens": MAX_TOKENS, "overlap": OVERLAP, "whole_documents": False
    }  # fmt: skip
    code = main(["index", "add", str(out), *_sources(corpus), "--max-tokens", str(MAX_TOKENS // 2)])
    assert code == 2
    err = _error(capsys)
    assert f"--max-tokens {MAX_TOKENS}" in err and f"--max-tokens {MAX_TOKENS // 2}" in err
    assert main(["index", "add", str(out), *_sources(corpus), "--no-chunk"]) == 2
    assert "--no-chunk" in _error(capsys)
    assert Index.load(out).info()["items"] == before["items"]
    assert main(["index", "add", str(out), *_sources(corpus)]) == 0  # the index's chunking
    _holds_exactly(Index.load(out), _expected_ids(corpus, encoder))


def test_bad_input_is_named(model_dir, corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", "build", str(corpus["md"]), "-m", str(model_dir), "-o", str(out)]) == 0
    capsys.readouterr()

    other, _ = make_sentence_transformer(tmp_path / "other", seed=7, normalize=True)
    capsys.readouterr()
    assert main(["index", "build", str(corpus["md"]), "-m", str(other), "-o", str(out)]) == 1
    err = _error(capsys)
    assert f"--output {out}" in err and "'other' embeds differently" in err

    code = main(["search", str(out), "query", "--filter", "{year: 2003}"])
    assert code == 2 and "--filter '{year: 2003}' is not valid JSON" in _error(capsys)
    code = main(["search", str(out), "query", "--filter", '{"year": {"$near": 1}}'])
    assert code == 2 and "--filter" in (err := _error(capsys)) and "$near" in err

    missing = tmp_path / "missing.txt"
    code = main(["index", "build", str(missing), "-m", str(model_dir), "-o", str(tmp_path / "new")])
    assert code == 1 and str(missing) in _error(capsys)
    assert not (tmp_path / "new").exists()

    assert main(["search", str(tmp_path / "nowhere"), "query"]) == 1
    assert "no such index folder" in _error(capsys)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    code = main(
        ["index", "build", str(corpus["md"]), "-m", str(model_dir), "-o", str(tmp_path / "junk")]
    )
    assert code == 1 and "holds no index" in _error(capsys)
    code = main(
        [
            "index",
            "build",
            str(corpus["md"]),
            "-m",
            str(model_dir),
            "-o",
            str(out),
            "--precision",
            "int8",
        ]
    )
    assert code == 1 and "--precision int8" in _error(capsys)


def _run(capsys, *argv) -> str:
    code = main(list(map(str, argv)))
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def _chunk_ids(source: Path, encoder) -> list[str]:
    chunks = chunk_documents(read_documents(source), encoder, max_tokens=MAX_TOKENS,
                             overlap=OVERLAP, prompt=encoder.prompt_for("document"))  # fmt: skip
    return [c.id for c in chunks]


def _texts_of(index: Index, document_id: str) -> list[str]:
    ids = sorted(index.ids_of_documents([document_id]), key=lambda i: int(i.rsplit("#", 1)[1]))
    return [hit.text for hit in index.get(ids)]


def test_changed_documents_are_embedded_again_and_gone_ones_pruned(
    model_dir, encoder, tmp_path, capsys
):
    """Edited files replace their chunks (a shortened one keeps none past its new end),
    unchanged ones are skipped, and --prune drops documents whose files are gone."""
    articles = lee_corpus()
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(4):
        (docs / f"a{i}.txt").write_text(articles[i] + "\n" + articles[i + 10] + "\n")
    out = tmp_path / "idx"
    options = ["--max-tokens", MAX_TOKENS, "--overlap", OVERLAP]
    _run(capsys, "index", "build", docs, "-m", model_dir, "-o", out, *options)
    before = Index.load(out)
    long_chunks = len(before.ids_of_documents(["a1.txt"]))
    assert long_chunks > 3

    (docs / "a0.txt").write_text(articles[20] + "\n")  # edited
    (docs / "a1.txt").write_text(articles[1][:200] + "\n")  # shortened
    (docs / "a3.txt").unlink()  # gone
    err = _run(capsys, "index", "add", out, docs)
    assert "3 documents read, 0 added, 2 changed (1 already in the index, skipped)" in err
    index = Index.load(out)
    assert "".join(_texts_of(index, "a0.txt")).startswith(articles[20][:50])
    shortened = [i for i in _chunk_ids(docs, encoder) if i.startswith("a1.txt#")]
    assert sorted(index.ids_of_documents(["a1.txt"])) == sorted(shortened)  # none past the end
    assert len(shortened) < long_chunks
    assert index.ids_of_documents(["a3.txt"])  # kept without --prune
    expected = _chunk_ids(docs, encoder)
    err = _run(capsys, "index", "add", out, docs, "--prune")
    assert "0 added (3 already in the index, skipped), 1 removed (source gone)" in err
    _holds_exactly(Index.load(out), expected)


def test_remove_document_takes_the_path_as_given_and_says_when_nothing_matches(
    model_dir, tmp_path, capsys, monkeypatch
):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"d{i}.md").write_text(lee_corpus()[i])
    monkeypatch.chdir(tmp_path)
    _run(capsys, "index", "build", "docs", "-m", model_dir, "-o", "my-index")
    before = len(Index.load("my-index"))
    # As in the README: the path the documents were read from, relative or absolute.
    err = _run(capsys, "index", "remove", "my-index", "docs/d0.md", "--document")
    assert "(1 document)" in err
    _run(capsys, "index", "remove", "my-index", str(docs / "d1.md"), "--document")
    index = Index.load("my-index")
    assert not index.ids_of_documents(["d0.md", "d1.md"]) and index.ids_of_documents(["d2.md"])
    assert len(index) < before
    saved = (tmp_path / "my-index" / "manifest.json").read_bytes()
    assert main(["index", "remove", "my-index", "docs/nothing.md", "--document"]) == 1
    err = _error(capsys)
    assert "'docs/nothing.md'" in err and "the index is unchanged" in err
    assert main(["index", "remove", "my-index", "d2.md"]) == 1  # a document id, not a chunk id
    assert "pass --document" in _error(capsys)
    assert (tmp_path / "my-index" / "manifest.json").read_bytes() == saved
    err = _run(capsys, "index", "remove", "my-index", "d2.md", "docs/gone.md", "--document")
    assert "not in the index: 'docs/gone.md'" in err and "0 left" in err


def test_an_interrupted_long_document_resumes_after_its_last_saved_chunk(
    model_dir, encoder, tmp_path, capsys, monkeypatch
):
    long_text = "\n\n".join(lee_corpus()[:12])
    (tmp_path / "book.txt").write_text(long_text)
    source = tmp_path / "book.txt"
    expected = _chunk_ids(source, encoder)
    assert len(expected) > 40
    real_save, saves = Index.save, []

    def killed_after_two_saves(self, *args, **kwargs):
        folder = real_save(self, *args, **kwargs)
        saves.append(folder)
        if len(saves) == 2:
            raise KeyboardInterrupt
        return folder

    out = tmp_path / "idx"
    options = ["--max-tokens", MAX_TOKENS, "--overlap", OVERLAP, "--save-every", 16]
    monkeypatch.setattr(Index, "save", killed_after_two_saves)
    argv = ["index", "build", source, "-m", model_dir, "-o", out, *options]
    assert main(list(map(str, argv))) == 130
    capsys.readouterr()
    monkeypatch.undo()
    assert len(Index.load(out)) == 32  # two saves inside the one document
    err = _run(capsys, *argv)
    assert "1 documents read, 0 added, 1 finished from an interrupted run" in err
    assert f"{len(expected) - 32} chunks" in err
    _holds_exactly(Index.load(out), expected)


def test_a_build_that_saves_nothing_leaves_no_folder(model_dir, corpus, tmp_path, capsys):
    out = tmp_path / "new-index"
    argv = ["index", "build", corpus["jsonl"], "-m", model_dir, "-o", out, "--no-chunk"]
    assert main(list(map(str, argv))) == 1
    assert "truncated" in _error(capsys)
    assert not out.exists()


def test_the_same_documents_named_otherwise_are_not_embedded_again(
    model_dir, tmp_path, capsys, monkeypatch
):
    """The content hash leaves out where a document was read from: the folder by its absolute
    path, or a JSON Lines record moved down a line, is the same document."""
    articles = lee_corpus()
    (tmp_path / "docs").mkdir()
    for i in range(3):
        (tmp_path / "docs" / f"d{i}.txt").write_text(articles[i])
    records = [json.dumps({"id": f"r{i}", "text": articles[10 + i]}) + "\n" for i in range(3)]
    (tmp_path / "faq.jsonl").write_text("".join(records))
    monkeypatch.chdir(tmp_path)
    _run(capsys, "index", "build", "docs", "faq.jsonl", "-m", model_dir, "-o", "ix")
    (tmp_path / "faq.jsonl").write_text(json.dumps({"id": "new", "text": "A new record."})
                                        + "\n" + "".join(records))  # fmt: skip
    err = _run(capsys, "index", "add", "ix", tmp_path / "docs", "./faq.jsonl")
    assert "7 documents read, 1 added (6 already in the index, skipped)" in err


def test_a_failed_ingest_records_no_document_it_did_not_add(encoder, tmp_path):
    """Whole documents: the second is too long. The first, queued but never embedded, is not
    recorded at all, so a later run adds it even if the index was saved after the error."""
    from ferris_jax.retrieval.ingest import DocumentTooLong, ingest
    from ferris_jax.retrieval.sources import Document

    index = Index(encoder)
    chunking = index.chunking_for(whole_documents=True)
    short = Document("short", "A short note.")
    long = Document("long", " ".join(lee_corpus()[:3]))
    with pytest.raises(DocumentTooLong, match="'long'"):
        ingest(index, [short, long], chunking=chunking, folder=tmp_path / "ix")
    index.save(tmp_path / "ix")
    assert "short" not in index
    counts = ingest(index, [short], chunking=chunking)
    assert counts.added == 1 and counts.chunks == 1 and "short" in Index.load(tmp_path / "ix")
