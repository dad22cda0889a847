"""Big documents: chunking tokenizes a document in windows, so memory stays flat in its size,
and gives the chunks of the whole document tokenized at once (real text, three tokenizer
kinds); text without whitespace across a window's cut still gives valid chunks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.data import lee_corpus, sts_sentences
from helpers.retrieval import assert_chunks_cover
from helpers.texts import varied_texts
from helpers.tokenizers import make_roberta_tokenizer_files, make_xlm_roberta_tokenizer_files

from ferris_jax.loading.tokenizer import load_tokenizer
from ferris_jax.retrieval import chunking
from ferris_jax.retrieval.chunking import chunk_document
from ferris_jax.retrieval.sources import Document


@pytest.fixture(scope="module")
def three_tokenizers(minilm, tmp_path_factory):
    """WordPiece (all-MiniLM-L6-v2), a byte-level BPE and a Metaspace Unigram."""
    found = {"wordpiece": minilm.tokenizer}
    for name, make in (
        ("byte-level-bpe", make_roberta_tokenizer_files),
        ("unigram", make_xlm_roberta_tokenizer_files),
    ):
        directory = tmp_path_factory.mktemp(name)
        make(directory, model_max_length=512)
        found[name] = load_tokenizer(directory, max_seq_length=512)
    return found


def _chunks_in_windows(monkeypatch, documents, tokenizer, window_chars, **options):
    monkeypatch.setattr(chunking, "WINDOW_CHARS", window_chars)
    return [c for d in documents for c in chunk_document(d, tokenizer, **options)]


def _real_documents():
    lee = lee_corpus()
    docs = [Document(f"lee-{i}", text) for i, text in enumerate(lee[:40])]
    docs.append(Document("lee-all", "\n\n".join(lee[:60])))
    docs.append(Document("sts", " ".join(sts_sentences("test")[:500])))
    return docs


@pytest.mark.parametrize("kind", ["wordpiece", "byte-level-bpe", "unigram"])
def test_windows_give_the_chunks_of_the_whole_document(three_tokenizers, monkeypatch, kind):
    """Tokenized window by window (here windows of 40 to 2000 characters, so that every chunk
    spans several), real text gives exactly the chunks of the whole document tokenized at once
    (one window longer than the text)."""
    tokenizer, docs = three_tokenizers[kind], _real_documents()
    for max_tokens, overlap in ((48, 8), (20, 0)):
        options = dict(max_tokens=max_tokens, overlap=overlap)
        whole = _chunks_in_windows(monkeypatch, docs, tokenizer, 1 << 30, **options)
        assert len(whole) > 20 * len(docs) // 2
        for window_chars in (40, 97, 2000):
            windowed = _chunks_in_windows(monkeypatch, docs, tokenizer, window_chars, **options)
            assert windowed == whole, (kind, max_tokens, window_chars)


@pytest.mark.parametrize("kind", ["wordpiece", "byte-level-bpe", "unigram"])
def test_documents_that_fit_whole_give_the_planned_chunks(three_tokenizers, monkeypatch, kind):
    """A document that is one chunk as it is skips the planner (its tokens' offsets and cut
    levels): the chunks are those the planner gives, for real sentences and paragraphs, hard
    texts and a prompt, at sizes where some documents fit and others are split."""
    tokenizer = three_tokenizers[kind]
    texts = [*sts_sentences("test")[:300], *lee_corpus()[:40], *varied_texts(200, seed=5)]
    docs = [Document(f"d{i}", text) for i, text in enumerate(texts)]
    whole_sizes = chunking._Chunker._whole_sizes
    shortcut: list[int] = []  # what `_whole_sizes` said of each document

    def recorded(self, documents):
        sizes = whole_sizes(self, documents)
        shortcut.extend(sizes)
        return sizes

    for options in (
        dict(max_tokens=48, overlap=8),
        dict(max_tokens=200, overlap=0, prompt="passage: "),
    ):
        shortcut.clear()
        monkeypatch.setattr(chunking._Chunker, "_whole_sizes", recorded)
        fast = [c for d in docs for c in chunk_document(d, tokenizer, **options)]
        monkeypatch.setattr(chunking._Chunker, "_whole_sizes", lambda self, ds: [-1] * len(ds))
        planned = [c for d in docs for c in chunk_document(d, tokenizer, **options)]
        assert fast == planned, (kind, options)
        taken = sum(n >= 0 for n in shortcut)
        assert len(docs) // 2 < taken < len(docs), (kind, options, taken)


@pytest.mark.parametrize("kind", ["wordpiece", "byte-level-bpe", "unigram"])
def test_windows_cut_without_whitespace_still_give_valid_chunks(
    three_tokenizers, monkeypatch, kind
):
    """Text without whitespace for longer than a window is cut mid-word between windows, where
    a token may straddle the cut: the chunks may then differ from the whole document's, but
    still hold exactly their text, fit and overlap as asked."""
    tokenizer = three_tokenizers[kind]
    raw = tokenizer.tokenizer
    docs = [
        Document("url", "see " + "https://example.org/" + "segment/" * 120 + " for details"),
        Document("cjk", "中文句子用于测试嵌入模型。" * 60),
        Document("letters", "a" * 700 + "\n\n" + lee_corpus()[1] + " " + "bc" * 300),
        Document("mixed", "x" * 150 + " word" * 40 + " " + "y" * 150 + "\n\n" + lee_corpus()[0]),
        Document("varied", "\n".join(varied_texts(150, seed=3))),
    ]
    # Shared text counted as within the document: after a space (a byte-level BPE tokenizes a
    # word differently at the start of a text).
    count = lambda text: len(raw.encode(" " + text, add_special_tokens=False).ids)  # noqa: E731
    for window_chars in (40, 97):
        chunks = _chunks_in_windows(
            monkeypatch, docs, tokenizer, window_chars, max_tokens=30, overlap=6
        )
        assert_chunks_cover(docs, chunks, overlap=6, count=count)
        assert all(c.num_tokens == len(raw.encode(c.text).ids) <= 32 for c in chunks)


MEMORY_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, "tests")
from helpers.data import lee_corpus, sts_sentences
import ferris_jax
from ferris_jax.retrieval.chunking import chunk_documents
from ferris_jax.retrieval.sources import Document

enc = ferris_jax.load("sentence-transformers/all-MiniLM-L6-v2")
base = "\\n\\n".join(list(lee_corpus()) + [" ".join(sts_sentences("test"))])
text = (base + "\\n\\n") * (int(sys.argv[1]) * 2**20 // len(base) + 1)
def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1]) / 1024
before = status("VmRSS:")
n = sum(1 for _ in chunk_documents([Document("big", text)], enc))
print(n, status("VmHWM:") - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM")
def test_memory_is_flat_in_the_size_of_one_document(minilm_path):
    """Chunking one 16 MB document grows peak memory by less than 100 MiB above the loaded
    model and the text (it took 2.4 GB tokenizing the whole text at once), and by about as
    much as a 2 MB one."""
    root = Path(__file__).parent.parent
    grown = {}
    for mb in (2, 16):
        done = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, str(mb)],
            cwd=root, capture_output=True, text=True, check=True,
        )  # fmt: skip
        chunks, grown[mb] = done.stdout.split()
        assert int(chunks) > mb * 1000
    assert float(grown[16]) < 100, grown
    assert float(grown[16]) < float(grown[2]) + 50, grown
