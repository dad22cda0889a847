"""`Index.merge` and `ferris-jax index merge`: parts built over contiguous shares of STS sentences
and Lee articles (ids, metadata, removed rows, chunked documents) merge into the index one
process builds by adding the same shares in order, then compacting: the same ids in the same
order, bit-equal vectors, texts, metadata, document records and chunking, the same search
results (float32 and int8). (One process adds the shares one call each: the encoder's vectors
depend on how texts are batched, in the last bit, and that is not the merge's to equalize.)
Incompatible or overlapping parts, and a bad target, are refused before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers.checkpoints import make_sentence_transformer
from helpers.data import lee_corpus, sts_sentences

import ferris_jax
import ferris_jax.api
from ferris_jax.cli import main
from ferris_jax.retrieval import index as index_module
from ferris_jax.retrieval import merge as merge_module
from ferris_jax.retrieval import store
from ferris_jax.retrieval.index import Index
from ferris_jax.retrieval.ingest import ingest
from ferris_jax.retrieval.merge import MergeError
from ferris_jax.retrieval.sources import Document, read_documents
from ferris_jax.retrieval.store import IndexFormatError

_REAL_LOAD = ferris_jax.load
MAX_TOKENS = 48
OVERLAP = 8
SENTENCES = sts_sentences("train")[:300]
QUERIES = sts_sentences("test")[:24]
# (sentences, Lee articles) of each share; the last share has no documents (no chunking).
SHARES = [(range(0, 120), range(0, 4)), (range(120, 260), range(4, 8)), (range(260, 300), ())]
REMOVED_IDS = ["s5", "s77", "s130"]
REMOVED_DOCUMENT = "article-05.txt"


@pytest.fixture(scope="module")
def encoder(tiny_st):
    return ferris_jax.load(tiny_st[0])


@pytest.fixture(autouse=True)
def loads(monkeypatch, encoder, tiny_st) -> list:
    """Loading the index's model returns the module's encoder (compiled once); the calls are
    recorded, so a test can count them."""
    calls = []

    def load(source, **options):
        calls.append(source)
        assert Path(source) == Path(tiny_st[0]), source
        return encoder

    monkeypatch.setattr(ferris_jax.api, "load", load)
    monkeypatch.setattr(ferris_jax, "load", load)
    return calls


@pytest.fixture(scope="module")
def share_folders(tmp_path_factory) -> list[Path]:
    """The Lee articles of each share as .txt files (ids unique across the shares)."""
    root = tmp_path_factory.mktemp("shares")
    articles = lee_corpus()
    folders = []
    for s, (_, documents) in enumerate(SHARES):
        folder = root / f"share-{s}"
        folder.mkdir()
        for i in documents:
            (folder / f"article-{i:02d}.txt").write_text(articles[i] + "\n", encoding="utf-8")
        folders.append(folder)
    return folders


def _add_share(index: Index, s: int, folder: Path, save_to: Path) -> None:
    """Share `s` into `index`: its sentences (ids, metadata), then its articles chunked."""
    sentences, documents = SHARES[s]
    index.add(
        [SENTENCES[i] for i in sentences],
        ids=[f"s{i}" for i in sentences],
        metadata=[{"n": i, "even": i % 2 == 0} if i % 3 else None for i in sentences],
    )
    if documents:
        chunking = index.chunking_for(MAX_TOKENS, OVERLAP)
        ingest(index, read_documents([folder]), chunking=chunking, folder=save_to)
    index.save(save_to)


def _remove(index: Index) -> None:
    index.remove(REMOVED_IDS)
    index.remove([REMOVED_DOCUMENT], by_document=True)


def _build(encoder, share_folders, root: Path, precision: str) -> tuple[Index, list[Path]]:
    """The single-process index (compacted) and the part folders of the same shares."""
    single = Index(encoder, precision=precision)
    for s, folder in enumerate(share_folders):
        _add_share(single, s, folder, root / "single")
    _remove(single)
    single.save()
    single.compact()
    parts = []
    for s, folder in enumerate(share_folders):
        part = Index(encoder, precision=precision)
        _add_share(part, s, folder, root / f"part-{s}")
        _remove(part)
        part.save()
        parts.append(root / f"part-{s}")
    return single, parts


@pytest.fixture(scope="module")
def built(encoder, share_folders, tmp_path_factory):
    cache = {}

    def get(precision: str) -> tuple[Index, list[Path]]:
        if precision not in cache:
            root = tmp_path_factory.mktemp(f"built-{precision}")
            cache[precision] = _build(encoder, share_folders, root, precision)
        return cache[precision]

    return get


def _rows(index: Index) -> tuple[list[str], np.ndarray]:
    ids, vectors = [], []
    for found, items in index._stored_rows(7):
        ids += items.ids
        vectors.append(found)
    return ids, np.concatenate(vectors)


def _same_search(a: Index, b: Index, **options) -> None:
    hits_a = a.search(QUERIES, top_k=10, **options)
    hits_b = b.search(QUERIES, top_k=10, **options)
    assert [[h.id for h in q] for q in hits_a] == [[h.id for h in q] for q in hits_b]
    scores_a = np.array([[h.score for h in q] for q in hits_a])
    assert np.array_equal(scores_a, np.array([[h.score for h in q] for q in hits_b]))


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_merged_parts_equal_one_process(built, precision, tmp_path, monkeypatch, loads):
    single, parts = built(precision)
    # Small batches and shards: the merge streams and spills shard files as a large one does.
    monkeypatch.setattr(merge_module, "BATCH_ROWS", 50)
    monkeypatch.setattr(index_module, "SHARD_ROWS", 64)
    before = {p: sorted(os.listdir(p)) for p in parts}
    merged = Index.merge(parts, tmp_path / "merged")
    assert loads == [str(single.model["path"])]  # the model loads once, for every part
    assert {p: sorted(os.listdir(p)) for p in parts} == before  # parts are only read

    assert merged.path == tmp_path / "merged" and merged.info()["shards"] > 1
    ids, vectors = _rows(single)
    merged_ids, merged_vectors = _rows(merged)
    assert merged_ids == ids and len(merged) == len(single) == len(ids)
    assert not set(REMOVED_IDS) & set(ids) and not merged.ids_of_documents([REMOVED_DOCUMENT])
    assert merged_vectors.dtype == np.float32 and np.array_equal(merged_vectors, vectors)
    assert merged.get(ids) == single.get(ids)  # texts, metadata, document ids
    assert list(merged.documents) == list(single.documents)
    assert len(list(merged.documents)) == 7
    assert merged.chunking == single.chunking and merged.chunking["max_tokens"] == MAX_TOKENS
    for key in ("model", "prompts", "probe", "precision", "similarity", "dimension"):
        assert getattr(merged, key) == getattr(single, key), key
    assert merged.ranges is None  # int8: computed over the merged vectors at the first search
    info = merged.info()
    assert info["rows"] == info["items"] == len(ids) and info["removed"] == 0

    loaded = Index.load(tmp_path / "merged")
    for index in (merged, loaded):
        _same_search(single, index)
        _same_search(single, index, by_document=True)
        _same_search(single, index, filter={"even": True})
    if precision == "int8":
        assert np.array_equal(loaded.ranges, single.ranges)

    # The merged index is an ordinary one: it grows, saves and loads.
    loaded.add(["One more sentence, added after the merge."], ids=["late"])
    loaded.save()
    again = Index.load(tmp_path / "merged")
    assert len(again) == len(ids) + 1 and again.get("late")[0].text.startswith("One more")


def test_the_command_merges_and_index_add_skips_what_the_parts_ingested(
    built, share_folders, tmp_path, capsys
):
    single, parts = built("float32")
    out = tmp_path / "merged"
    assert main(["index", "merge", "-o", str(out), *map(str, parts)]) == 0
    err = capsys.readouterr().err
    assert err == f"ferris-jax: merged 3 parts, {len(single):,} items -> {out}\n"
    assert _rows(Index.load(out))[0] == _rows(single)[0]

    # The document records came along: unchanged articles are skipped, the removed one added.
    add = ["index", "add", str(out), "--max-tokens", str(MAX_TOKENS), "--no-progress"]
    assert main([*add, str(share_folders[0])]) == 0
    assert "4 documents read, 0 added (4 already in the index, skipped)" in capsys.readouterr().err
    assert main([*add, str(share_folders[1])]) == 0
    assert "4 documents read, 1 added (3 already in the index, skipped)" in capsys.readouterr().err


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("ferris-jax: error: ") and err.count("\n") == 1, err
    return err


def test_the_command_names_the_part_at_fault(built, tmp_path, capsys):
    _, parts = built("float32")
    out = tmp_path / "merged"
    assert main(["index", "merge", "-o", str(out), str(parts[0]), str(tmp_path / "nope")]) == 1
    assert "nope: no such index folder" in _error(capsys)
    assert main(["index", "merge", "-o", str(out), str(parts[0]), str(parts[0])]) == 1
    assert "named twice" in _error(capsys)
    assert not out.exists()


def _part(encoder, folder: Path, sentences: range, **options) -> Path:
    index = Index(encoder, **options)
    index.add([SENTENCES[i] for i in sentences], ids=[f"s{i}" for i in sentences])
    return index.save(folder)


def test_parts_of_another_model_are_refused_before_it_loads(
    encoder, tmp_path, tmp_path_factory, loads
):
    a = _part(encoder, tmp_path / "a", range(0, 20))
    # Another random model of the same size and name ("tiny"): only its vectors differ.
    other, _ = make_sentence_transformer(
        tmp_path_factory.mktemp("other") / "tiny", normalize=True, seed=7
    )
    b = _part(_REAL_LOAD(other, compilation_cache=False), tmp_path / "b", range(20, 40))
    with pytest.raises(MergeError, match=r"b: built with a model that embeds differently"):
        Index.merge([a, b], tmp_path / "merged")
    assert loads == [] and not (tmp_path / "merged").exists()
    # Given the first part's model, the other part is refused by its probe as Index.load does.
    with pytest.raises(MergeError, match="probe cosine"):
        Index.merge([a, b], tmp_path / "merged", encoder=encoder)


def test_parts_with_other_options_or_chunking_are_refused(encoder, share_folders, tmp_path):
    a = _part(encoder, tmp_path / "a", range(0, 20))
    b = _part(encoder, tmp_path / "b", range(20, 40), precision="int8")
    with pytest.raises(MergeError, match=r"b: precision is 'int8', but 'float32' in .*a"):
        Index.merge([a, b], tmp_path / "merged")
    c = _part(encoder, tmp_path / "c", range(40, 60), store_text=False)
    with pytest.raises(MergeError, match=r"c: store_text is False"):
        Index.merge([a, c], tmp_path / "merged")

    chunked = []
    for name, max_tokens, s in (("d", MAX_TOKENS, 0), ("e", 32, 1)):
        index = Index(encoder)
        chunking = index.chunking_for(max_tokens, OVERLAP)
        ingest(index, read_documents([share_folders[s]]), chunking=chunking, folder=tmp_path / name)
        chunked.append(tmp_path / name)
    with pytest.raises(MergeError, match=r"e: the chunking is .*'max_tokens': 32.* in .*d"):
        Index.merge([a, *chunked], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    # A part with no chunked documents fits any chunking.
    merged = Index.merge([a, chunked[0]], tmp_path / "merged")
    assert merged.chunking == Index.load(chunked[0], encoder).chunking


def test_overlapping_parts_are_refused_naming_both(encoder, tmp_path):
    a = _part(encoder, tmp_path / "a", range(0, 20))
    b = _part(encoder, tmp_path / "b", range(15, 30))
    with pytest.raises(MergeError, match=r"b: item id 's15' is also in .*a: the parts overlap"):
        Index.merge([a, b], tmp_path / "merged")
    # Another item of the same document (as two shares cut through one document would make).
    c, d = Index(encoder), Index(encoder)
    c.add([Document("doc-1", SENTENCES[0])])
    d.add([Document("doc-1", SENTENCES[1])], ids=["doc-1#again"])
    c.save(tmp_path / "c")
    d.save(tmp_path / "d")
    with pytest.raises(MergeError, match=r"d: document id 'doc-1' is also in .*c"):
        Index.merge([tmp_path / "c", tmp_path / "d"], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_bad_targets_and_part_lists_are_refused_before_anything_is_written(encoder, tmp_path):
    a = _part(encoder, tmp_path / "a", range(0, 20))
    b = _part(encoder, tmp_path / "b", range(20, 40))
    before = sorted(os.listdir(a))
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(MergeError, match="non-empty folder"):
        Index.merge([a, b], notes)
    assert os.listdir(notes) == ["todo.txt"]
    with pytest.raises(MergeError, match="holds an index"):
        Index.merge([a], b)
    for inside in (a, a / "merged"):
        with pytest.raises(MergeError, match="inside the part"):
            Index.merge([a, b], inside)
    assert sorted(os.listdir(a)) == before
    with pytest.raises(MergeError, match="named twice"):
        Index.merge([a, tmp_path / "x" / ".." / "a"], tmp_path / "merged")
    with pytest.raises(MergeError, match="no parts"):
        Index.merge([], tmp_path / "merged")
    with pytest.raises(IndexFormatError, match="no such index folder"):
        Index.merge([a, tmp_path / "missing"], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_a_merge_that_fails_leaves_no_index_and_no_files(encoder, tmp_path, monkeypatch):
    a = _part(encoder, tmp_path / "a", range(0, 100))
    b = _part(encoder, tmp_path / "b", range(100, 200))
    monkeypatch.setattr(merge_module, "BATCH_ROWS", 30)
    monkeypatch.setattr(index_module, "SHARD_ROWS", 40)  # shard files are written, then removed
    written = []
    real = store.write_shard

    def write_shard(folder, *args):
        written.append(folder)
        return real(folder, *args)

    def killed(*args):
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_shard", write_shard)
    monkeypatch.setattr(store, "write_manifest", killed)
    with pytest.raises(OSError, match="disk full"):
        Index.merge([a, b], tmp_path / "merged")
    assert len(written) > 1 and not (tmp_path / "merged").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="disk full"):
        Index.merge([a, b], tmp_path / "empty")
    assert set(os.listdir(tmp_path / "empty")) <= {store.WRITE_LOCK, store.READ_LOCK}
