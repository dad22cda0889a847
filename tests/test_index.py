"""`Index`: exact search equal to sentence-transformers' and FAISS' on real embeddings, quantized
precisions within their recall targets after rescoring, filters before the top-k, removals,
the model's prompts, atomic saves, and refusals that name the file at fault."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from helpers.data import lee_corpus, sts_sentences
from helpers.retrieval import make_e5_style_model

import ferris_jax
from ferris_jax.retrieval import index as index_module
from ferris_jax.retrieval import store
from ferris_jax.retrieval.chunking import chunk_documents
from ferris_jax.retrieval.index import ChunkingMismatch, Index
from ferris_jax.retrieval.sources import Document
from ferris_jax.retrieval.store import IndexFormatError

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def sts(minilm):
    """Real MiniLM vectors: STS-B train sentences as corpus, STS-B test sentences as queries."""
    corpus = sts_sentences("train")[:4000]
    queries = sts_sentences("test")[:300]
    return (
        corpus,
        minilm.encode(corpus, batch_size=128),
        queries,
        minilm.encode(queries, batch_size=128),
    )


def _vector_index(minilm, sts, precision="float32") -> Index:
    corpus, vectors, _, _ = sts
    index = Index(minilm, precision=precision)
    index.add_embeddings(vectors, ids=[f"s{i}" for i in range(len(corpus))], texts=corpus,
                         model=minilm.checkpoint.name)  # fmt: skip
    return index


def _ids(hits) -> list[list[str]]:
    return [[h.id for h in q] for q in hits]


def test_search_equals_sentence_transformers_and_faiss(minilm, sts):
    st_util = pytest.importorskip("sentence_transformers.util")
    faiss = pytest.importorskip("faiss")
    import torch

    corpus, vectors, _, queries = sts
    index = _vector_index(minilm, sts)
    hits = index.search(queries, top_k=10)
    want = st_util.semantic_search(torch.from_numpy(queries), torch.from_numpy(vectors), top_k=10)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    f_scores, f_rows = flat.search(queries / np.linalg.norm(queries, axis=1, keepdims=True), 10)
    for q, (got, ref) in enumerate(zip(hits, want, strict=True)):
        np.testing.assert_allclose([h.score for h in got], [r["score"] for r in ref], atol=1e-5)
        np.testing.assert_allclose([h.score for h in got], f_scores[q], atol=1e-5)
        # The same items, except where scores tie within float32 rounding at the cut.
        ids = {h.id for h in got}
        cut = ref[-1]["score"] + 1e-5
        assert {f"s{r['corpus_id']}" for r in ref if r["score"] > cut} <= ids
        assert {f"s{r}" for r, s in zip(f_rows[q], f_scores[q], strict=True) if s > cut} <= ids
        assert all(h.text == corpus[int(h.id[1:])] for h in got)  # texts stored with their ids


@pytest.mark.parametrize(
    ("precision", "target"), [("bfloat16", 0.999), ("int8", 0.99), ("binary", 0.95)]
)
def test_quantized_precisions_reach_their_recall_after_rescoring(minilm, sts, precision, target):
    _, _, _, queries = sts
    exact = _ids(_vector_index(minilm, sts).search(queries, top_k=10))
    got = _ids(_vector_index(minilm, sts, precision).search(queries, top_k=10))
    recall = np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, exact, strict=True)])
    assert recall >= target, f"{precision} recall@10 {recall:.4f}"


def test_a_filter_applies_before_the_top_k(minilm, sts):
    corpus, vectors, _, queries = sts
    index = Index(minilm)
    index.add_embeddings(
        vectors, metadata=[{"n": i, "rare": i % 97 == 0} for i in range(len(corpus))],
        model=minilm.checkpoint.name,
    )  # fmt: skip
    rare = (np.arange(len(corpus)) % 97) == 0
    hits = index.search(queries[:20], top_k=10, filter={"rare": True})
    for q, got in enumerate(hits):
        assert len(got) == 10 and all(h.metadata["rare"] for h in got)
        scores = vectors[rare] @ queries[q] / np.linalg.norm(vectors[rare], axis=1)
        scores /= np.linalg.norm(queries[q])
        np.testing.assert_allclose([h.score for h in got], np.sort(scores)[::-1][:10], atol=1e-5)
    ranged = index.search(queries[0], top_k=5, filter={"n": {"$gte": 100, "$lt": 110}})
    assert sorted(h.metadata["n"] for h in ranged) == sorted(h.metadata["n"] for h in ranged)
    assert all(100 <= h.metadata["n"] < 110 for h in ranged) and len(ranged) == 5
    with pytest.raises(ValueError, match="unknown operator '\\$near'"):
        index.search(queries[0], filter={"n": {"$near": 3}})


def test_removed_items_are_never_returned_and_compaction_keeps_results(minilm, sts, tmp_path):
    corpus, _, _, queries = sts
    index = _vector_index(minilm, sts)
    first = _ids(index.search(queries[:30], top_k=5))
    gone = sorted({i for q in first for i in q[:2]})
    assert index.remove(gone) == len(gone)
    assert index.remove(gone) == 0 and len(index) == len(corpus) - len(gone)
    after = index.search(queries[:30], top_k=5)
    assert not {h.id for q in after for h in q} & set(gone)
    index.save(tmp_path / "ix")
    index.compact()
    assert index.info()["rows"] == len(corpus) - len(gone)
    assert _ids(index.search(queries[:30], top_k=5)) == _ids(after)
    index.save()
    assert _ids(Index.load(tmp_path / "ix", minilm).search(queries[:30], top_k=5)) == _ids(after)


def test_texts_are_embedded_with_the_document_prompt_and_queries_with_the_query_prompt(tmp_path):
    enc = ferris_jax.load(make_e5_style_model(tmp_path / "e5"), compilation_cache=False)
    texts = sts_sentences("dev")[:40]
    index = Index(enc)
    index.add(texts, ids=[str(i) for i in range(40)])
    assert index.prompts == {"query": "query: ", "document": "passage: "}
    documents = enc.encode_document(texts)
    query = enc.encode_query(texts[3])
    hit = index.search(texts[3], top_k=1)[0]
    assert hit.id == str(int(np.argmax(documents @ query)))
    np.testing.assert_allclose(hit.score, float(np.max(documents @ query)), atol=1e-5)


def test_chunks_of_documents_are_grouped_by_document(minilm):
    articles = [
        Document(f"lee-{i:03d}", text, {"n": i}) for i, text in enumerate(lee_corpus()[:12])
    ]
    index = Index(minilm)
    ids = index.add_documents(articles, max_tokens=64, overlap=8)
    assert len(ids) > len(articles) and all("#" in i for i in ids)
    hits = index.search("the national executive of the Democrats", top_k=5, by_document=True)
    documents = [h.document_id for h in hits]
    assert len(documents) == len(set(documents)) == 5
    chunk = hits[0]
    assert chunk.metadata["n"] == int(chunk.document_id[-3:])
    text = lee_corpus()[chunk.metadata["n"]]
    assert text[chunk.metadata["start"] : chunk.metadata["end"]] == chunk.text


def test_an_index_keeps_one_chunking(minilm, tmp_path):
    """The first documents' chunk sizes are the index's own (saved with it): later documents
    get them by default, and asking for others is refused before anything is added."""
    articles = [Document(f"lee-{i:03d}", t) for i, t in enumerate(lee_corpus()[:6])]
    index = Index(minilm)
    index.add_documents(articles[:3], max_tokens=64, overlap=8)
    assert index.chunking == {"max_tokens": 64, "overlap": 8, "whole_documents": False}
    index = Index.load(index.save(tmp_path / "ix"), minilm)
    assert index.info()["chunking"] == {"max_tokens": 64, "overlap": 8, "whole_documents": False}
    with pytest.raises(ChunkingMismatch, match=r"max_tokens=64.*max_tokens=32 would mix"):
        index.add_documents(articles[3:], max_tokens=32)
    assert index.info()["documents"] == 3  # nothing added
    ids = index.add_documents(articles[3:])  # the index's own 64 / 8
    want = chunk_documents(
        articles[3:], minilm, max_tokens=64, overlap=8, prompt=index.prompts["document"]
    )
    assert ids == [c.id for c in want]
    fresh = Index(minilm)
    assert fresh.chunking_for()["max_tokens"] == minilm.max_seq_length - 2  # [CLS], [SEP]


def test_a_failing_add_leaves_the_index_as_it_was(minilm):
    index = Index(minilm)
    index.add(["first text", "second text"], ids=["a", "b"])
    with pytest.raises(ValueError, match="id 'a' is already in the index"):
        index.add((t for t in ["third", "fourth", "again"]), ids=["c", "d", "a"])
    with pytest.raises(ValueError, match="id 'x' appears twice"):
        index.add(["one", "two"], ids=["x", "x"])
    assert len(index) == 2 and "c" not in index and index.info()["rows"] == 2
    with pytest.raises(ValueError, match="from model 'other'"):
        index.add_embeddings(np.ones((1, 384)), model="other")
    with pytest.raises(ValueError, match=r"\[n, 384\]"):
        index.add_embeddings(np.ones((1, 12)), model=minilm.checkpoint.name)


def test_saves_are_incremental_and_an_interrupted_save_leaves_the_last_one(
    minilm, sts, tmp_path, monkeypatch
):
    corpus, vectors, _, queries = sts
    index = Index(minilm)
    index.add_embeddings(vectors[:1000], texts=corpus[:1000], model=minilm.checkpoint.name)
    path = index.save(tmp_path / "ix")
    saved = _ids(index.search(queries[:10], top_k=5))
    first_shards = json.loads((path / "manifest.json").read_text())["shards"]
    index.add_embeddings(vectors[1000:1500], model=minilm.checkpoint.name)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies between the new shard and the manifest

    monkeypatch.setattr(store, "write_manifest", killed)
    with pytest.raises(KeyboardInterrupt):
        index.save()
    monkeypatch.undo()
    reloaded = Index.load(path, minilm)
    assert len(reloaded) == 1000 and _ids(reloaded.search(queries[:10], top_k=5)) == saved
    index.save()
    shards = json.loads((path / "manifest.json").read_text())["shards"]
    assert shards[0] == first_shards[0] and len(shards) == 2 and shards[1]["rows"] == 500
    assert len(list(path.glob("vectors-*"))) == 2 and len(list(path.glob("items-*"))) == 1
    assert len(Index.load(path, minilm)) == 1500


def test_a_corrupted_or_foreign_index_is_refused_naming_the_file(minilm, sts, tmp_path, tiny_st):
    path = _vector_index(minilm, sts).save(tmp_path / "ix")
    shard = next(path.glob("vectors-*"))
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=f"{shard.name}: checksum mismatch"):
        Index.load(path, minilm)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = store.FORMAT_VERSION + 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="upgrade ferris-jax"):
        Index.load(path, minilm)
    other = _vector_index(minilm, sts).save(tmp_path / "other")
    with pytest.raises(IndexFormatError, match="384-dimensional"):
        Index.load(other, ferris_jax.load(tiny_st[0], compilation_cache=False))
    with pytest.raises(IndexFormatError, match="no such index folder"):
        Index.load(tmp_path / "missing", minilm)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no index"):
        _vector_index(minilm, sts).save(tmp_path / "notes")


def test_another_model_of_the_same_dimension_is_refused(tmp_path):
    a = ferris_jax.load(make_e5_style_model(tmp_path / "a"), compilation_cache=False)
    index = Index(a)
    index.add(sts_sentences("dev")[:5])
    path = index.save(tmp_path / "ix")
    from helpers.checkpoints import make_sentence_transformer

    other, _ = make_sentence_transformer(tmp_path / "b", normalize=True, seed=7)
    with pytest.raises(IndexFormatError, match="embeds differently"):
        Index.load(path, ferris_jax.load(other, compilation_cache=False))


def test_the_index_loads_its_own_model_by_name(minilm, sts, tmp_path):
    path = _vector_index(minilm, sts).save(tmp_path / "ix")
    index = Index.load(path)
    assert index.encoder is not minilm and index.model["name"] == minilm.checkpoint.name
    assert index.search(sts[2][0], top_k=1)[0].id.startswith("s")


def test_searches_from_several_threads_agree_with_one(minilm, sts):
    _, _, _, queries = sts
    index = _vector_index(minilm, sts, "int8")
    want = [_ids(index.search(queries[i : i + 1], top_k=5))[0] for i in range(64)]
    results: dict[int, list] = {}

    def worker(t: int) -> None:
        results[t] = [_ids(index.search(queries[i : i + 1], top_k=5))[0] for i in range(64)]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == want for r in results.values())


def test_small_indexes_use_small_blocks(minilm):
    index = Index(minilm)
    index.add(["one text", "two texts"])
    index.search("text")
    assert index._dense.block_shape == (index_module.MIN_BLOCK_ROWS, 384)


def test_an_approximate_index_finds_nearly_what_the_exact_one_finds(minilm, sts, tmp_path):
    pytest.importorskip("faiss")
    corpus, vectors, _, queries = sts
    exact = _ids(_vector_index(minilm, sts).search(queries[:100], top_k=10))
    index = Index(minilm, ann={"ef_search": 64})
    index.add_embeddings(vectors, ids=[f"s{i}" for i in range(len(corpus))],
                         metadata=[{"odd": i % 2 == 1} for i in range(len(corpus))],
                         model=minilm.checkpoint.name)  # fmt: skip
    got = _ids(index.search(queries[:100], top_k=10))
    recall = np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, exact, strict=True)])
    assert recall >= 0.97, recall
    index.remove(["s1", "s3"])
    odd = index.search(queries[:20], top_k=10, filter={"odd": True})
    assert all(len(q) == 10 and all(h.metadata["odd"] for h in q) for q in odd)
    assert not {"s1", "s3"} & {h.id for q in odd for h in q}
    path = index.save(tmp_path / "ann")
    assert json.loads((path / "manifest.json").read_text())["ann"]["file"].startswith("ann-")
    again = Index.load(path, minilm)
    assert again.ann_options == {"ef_search": 64}
    assert _ids(again.search(queries[:20], top_k=10, filter={"odd": True})) == _ids(odd)


_KEEPS_SAVING = """
import sys
import numpy as np
import ferris_jax
from ferris_jax.retrieval.index import Index

enc = ferris_jax.load(sys.argv[1], compilation_cache=False)
path, seed = sys.argv[2], int(sys.argv[3])
try:
    index = Index.load(path, enc)
except Exception:
    index = Index(enc, lexical=True)  # the BM25 index is saved (and killed) with the items
    index.save(path)
rng, n = np.random.default_rng(seed), len(index)
while True:  # adds of 40,000 rows: a shard file is written in the middle of every second one
    vectors = rng.standard_normal((40_000, enc.embedding_dimension)).astype(np.float32)
    ids = [f"r{n + i}" for i in range(40_000)]
    index.add_embeddings(vectors, ids=ids, texts=ids, model=index.model["name"])
    n += 40_000
    index.save()
    print(n, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_an_index_killed_at_any_moment_loads_as_last_saved(tiny_st, tmp_path, delay):
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "ix"
    saved = 0
    for seed in range(2):  # killed, then continued from what was saved and killed again
        process = subprocess.Popen(
            [sys.executable, "-c", _KEEPS_SAVING, str(tiny_st[0]), str(path), str(seed)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
        )
        saved = int(process.stdout.readline())  # one save done
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        index = Index.load(path, verify=True)
        assert len(index) % 40_000 == 0 and len(index) >= saved
        assert index.get([f"r{len(index) - 1}", f"r{len(index)}"])[0] is not None
        assert index.get(f"r{len(index)}")[0] is None
        assert len(index.search(np.ones(index.dimension, np.float32), top_k=3)) == 3
        last = f"r{len(index) - 1}"
        assert [h.id for h in index.search(last, top_k=2, mode="lexical")] == [last]
        assert index.search(f"r{len(index)}", mode="lexical") == []
