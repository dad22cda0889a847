"""Chunking for RAG: every chunk fits the model (counted by ferris's tokenizer and by
sentence-transformers'), offsets are exact, chunks cover their document, cuts fall at
paragraph, sentence and word boundaries, and the encoder embeds every chunk untruncated."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import tokenizers
from helpers.checkpoints import make_bert_checkpoint
from helpers.data import lee_corpus, sts_sentences
from helpers.retrieval import assert_chunks_cover, make_e5_style_model
from helpers.texts import varied_texts
from helpers.tokenizers import make_roberta_tokenizer_files

import ferris_jax
from ferris_jax.loading.tokenizer import load_tokenizer
from ferris_jax.retrieval import chunking
from ferris_jax.retrieval.chunking import chunk_document, chunk_documents, document_prompt
from ferris_jax.retrieval.sources import Document, read_documents

TRUNCATION = re.compile("exceed max_seq_length")


@pytest.fixture(scope="module")
def st_tokenizer(minilm_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path), device="cpu").tokenizer


@pytest.fixture(scope="module")
def lee_documents():
    return [Document(f"lee-{i}", text, {"n": i}) for i, text in enumerate(lee_corpus())]


@pytest.fixture(scope="module")
def e5(tmp_path_factory):
    return ferris_jax.load(make_e5_style_model(tmp_path_factory.mktemp("e5") / "e5"))


def _content_tokens(enc):
    return lambda text: len(enc.tokenizer.tokenizer.encode(text, add_special_tokens=False).ids)


def _encode_warnings(enc, texts):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc.encode_document(texts, batch_size=64)
    return [str(w.message) for w in caught if TRUNCATION.search(str(w.message))]


@pytest.mark.parametrize("max_tokens, overlap", [(None, None), (64, 16)])
def test_lee_chunks_fit_minilm_by_both_tokenizers(
    minilm, st_tokenizer, lee_documents, max_tokens, overlap
):
    chunks = list(chunk_documents(lee_documents, minilm, max_tokens=max_tokens, overlap=overlap))
    limit = minilm.max_seq_length if max_tokens is None else max_tokens + 2  # [CLS] .. [SEP]
    overlap = (limit - 2) // 8 if overlap is None else overlap

    assert_chunks_cover(lee_documents, chunks, overlap=overlap, count=_content_tokens(minilm))
    texts = [c.text for c in chunks]
    ours = minilm.tokenize(texts)
    assert not ours.truncated.any()
    lengths = ours.attention_mask.sum(axis=1)
    assert lengths.max() <= limit
    assert lengths.tolist() == [c.num_tokens for c in chunks]
    theirs = st_tokenizer(texts, truncation=False, padding=False)["input_ids"]
    assert max(map(len, theirs)) <= limit
    assert list(map(len, theirs)) == lengths.tolist()
    # Nothing is wasted: chunks end early only at boundaries, so most are nearly full.
    if max_tokens is not None:
        full = [c.num_tokens >= limit // 2 for c in chunks if c.end < len(_doc(lee_documents, c))]
        assert all(full)


def _doc(documents, chunk):
    return documents[int(chunk.document_id.removeprefix("lee-"))].text


def test_lee_chunks_are_cut_at_sentences_and_words(minilm, lee_documents):
    """A chunk ends at a sentence end when the second half of its 64-token window holds one
    (counted here from the tokenizer's offsets), and starts and ends at word boundaries."""
    max_tokens = 64
    chunks = list(chunk_documents(lee_documents, minilm, max_tokens=max_tokens, overlap=16))
    tokenizer = tokenizers.Tokenizer.from_str(minilm.tokenizer.tokenizer.to_str())
    tokenizer.no_truncation()
    sentence_ends = 0
    for c in chunks:
        text = _doc(lee_documents, c)
        assert c.start == 0 or text[c.start - 1].isspace(), c.text[:40]  # starts at a word
        assert c.end == len(text) or text[c.end].isspace(), c.text[-40:]  # ends at a word
        if c.end == len(text):
            continue
        ends = [e for _, e in tokenizer.encode(text, add_special_tokens=False).offsets]
        first = next(i for i, e in enumerate(ends) if e > c.start)
        late = ends[first + max_tokens // 2 - 1 : first + max_tokens]  # cuts after these
        in_window = [
            e
            for e in late
            if re.search(r"[.!?][\"')]?$", text[max(e - 2, 0) : e]) and text[e : e + 1].isspace()
        ]
        if in_window:
            assert c.end == in_window[-1], (c.text[-60:], text[c.end : c.end + 30])
            sentence_ends += 1
    assert sentence_ends > len(chunks) // 2  # the rule was exercised


@pytest.mark.slow
def test_chunks_embed_without_the_truncation_warning(minilm, lee_documents):
    docs = lee_documents[:12]
    chunks = list(chunk_documents(docs, minilm))
    assert len(chunks) > len(docs)  # some articles are longer than 256 tokens
    assert _encode_warnings(minilm, [c.text for c in chunks]) == []
    assert _encode_warnings(minilm, [d.text for d in docs])  # the check sees truncation


def test_short_sentences_are_one_chunk_each(minilm):
    docs = [Document(str(i), s) for i, s in enumerate(sts_sentences("test"))]
    chunks = list(chunk_documents(docs, minilm, batch_size=500))
    assert [c.document_id for c in chunks] == [d.id for d in docs]
    assert [c.text for c in chunks] == [d.text.strip() for d in docs]


MARKDOWN = """\
# Bushfires in New South Wales

Hundreds of people have been forced to vacate their homes in the Southern Highlands of New South
Wales as strong winds today pushed a huge bushfire towards the town of Hill Top.

## The Hume Highway

A new blaze near Goulburn, south-west of Sydney, has forced the closure of the Hume Highway.
Fire crews expect the road to stay closed overnight.

## What residents should do

- Leave early if you are in the path of the fire.
- Listen to the local radio for updates.
- Keep the roads clear for emergency vehicles.

The Rural Fire Service says conditions will ease tomorrow.
"""


def test_markdown_is_cut_at_sections_and_paragraphs(minilm, tmp_path):
    path = tmp_path / "fires.md"
    path.write_text(MARKDOWN, encoding="utf-8")
    (doc,) = read_documents(path)
    paragraphs = [p.strip() for p in doc.text.split("\n\n")]
    count = _content_tokens(minilm)
    # Paragraphs of fewer than half the window: the last one that fits ends in its second half.
    max_tokens = 2 * max(map(count, paragraphs)) + 2
    assert count(doc.text) > max_tokens

    chunks = chunk_document(doc, minilm.tokenizer, max_tokens=max_tokens)
    assert_chunks_cover([doc], chunks)
    assert chunks[0].metadata == {"source": str(path)} and chunks[1].id == "fires.md#1"
    # Every cut at a blank line: each chunk is whole consecutive paragraphs, as many as fit.
    groups, i = [], 0
    while i < len(paragraphs):
        j = i + 1
        while j < len(paragraphs) and count("\n\n".join(paragraphs[i : j + 1])) <= max_tokens:
            j += 1
        groups.append("\n\n".join(paragraphs[i:j]))
        i = j
    assert [c.text for c in chunks] == groups
    assert len(chunks) < len(paragraphs)

    with_overlap = chunk_document(doc, minilm.tokenizer, max_tokens=max_tokens, overlap=8)
    assert_chunks_cover([doc], with_overlap, overlap=8, count=count)
    assert all(c.text.endswith(tuple(p[-20:] for p in paragraphs)) for c in with_overlap)


def test_hard_texts_fit_and_are_cut_mid_word_only_without_a_word_boundary(minilm):
    docs = [Document(f"v{i}", t) for i, t in enumerate(varied_texts(120, seed=3))]
    docs += [
        Document("url", "see " + "https://example.org/" + "segment/" * 120 + " for details"),
        Document("cjk", "中文句子用于测试嵌入模型。" * 40),
        Document("emoji", "🙂" * 300),
        Document("blank", " \n\t\u00a0 "),
        Document("empty", ""),
    ]
    max_tokens = 30
    chunks = list(chunk_documents(docs, minilm, max_tokens=max_tokens, overlap=6))
    assert_chunks_cover(docs, chunks)
    assert not any(c.document_id in ("blank", "empty") for c in chunks)
    lengths = minilm.tokenize([c.text for c in chunks]).attention_mask.sum(axis=1)
    assert lengths.max() <= max_tokens + 2
    for c in chunks:
        text = next(d.text for d in docs if d.id == c.document_id)
        starts_word = c.start == 0 or not text[c.start - 1].isalnum() or not text[c.start].isalnum()
        if not starts_word:  # mid-word: the window before it held no whitespace at all
            assert c.document_id in ("url", "cjk") or "a" * 100 in text, c
    url = [c.text for c in chunks if c.document_id == "url"]
    assert url[0] == "see" and url[-1].endswith("/ for details")  # the words around it held
    assert all(c.text.endswith("。") for c in chunks if c.document_id == "cjk")


def test_byte_level_bpe_chunks_are_recounted_in_their_own_context(tmp_path, lee_documents):
    """A byte-level BPE tokenizes a word differently at a chunk's start (no leading space):
    chunks are re-counted as the encoder sees them and cut shorter where they overflow."""
    directory = tmp_path / "bpe"
    directory.mkdir()
    make_roberta_tokenizer_files(directory, model_max_length=512)
    tokenizer = load_tokenizer(directory, max_seq_length=512)
    replans = []
    original = chunking._Chunker._replan

    def spy(self, doc, *args):
        replans.append(doc.id)
        return original(self, doc, *args)

    docs = lee_documents[:40]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chunking._Chunker, "_replan", spy)
        chunks = [c for d in docs for c in chunk_document(d, tokenizer, max_tokens=48, overlap=8)]
    assert_chunks_cover(docs, chunks)
    counts = [len(tokenizer.tokenizer.encode(c.text).ids) for c in chunks]  # <s> ... </s>
    assert max(counts) <= 48 + 2
    assert counts == [c.num_tokens for c in chunks]
    assert replans  # the recount mattered for some document


def test_the_document_prompt_is_counted(e5):
    assert document_prompt(e5) == "passage: "
    docs = [Document(f"lee-{i}", t) for i, t in enumerate(lee_corpus()[:6])]
    prompt_tokens = len(e5.tokenizer.tokenizer.encode("passage: ").ids)  # [CLS] .. [SEP]
    most = e5.max_seq_length - prompt_tokens

    chunks = list(chunk_documents(docs, e5))
    assert_chunks_cover(docs, chunks, overlap=most // 8, count=_content_tokens(e5))
    batch = e5.tokenize([c.text for c in chunks], prompt="passage: ")
    assert batch.attention_mask.sum(axis=1).max() == e5.max_seq_length  # full, never over
    assert not batch.truncated.any()
    assert _encode_warnings(e5, [c.text for c in chunks]) == []

    texts = [c.text for c in chunks[:4]]
    np.testing.assert_array_equal(e5.encode_document(texts), e5.encode(texts, prompt="passage: "))
    query = list(chunk_documents(docs[:1], e5, prompt_name="query"))
    assert e5.tokenize([c.text for c in query], prompt="query: ").attention_mask.sum(1).max() == (
        e5.max_seq_length
    )
    with pytest.raises(
        ValueError, match=r"max_tokens=\d+ does not fit.*max_tokens <= " + str(most)
    ):
        next(chunk_documents(docs, e5, max_tokens=most + 1))
    with pytest.raises(ValueError, match="prompt_name 'title' is not one of"):
        next(chunk_documents(docs, e5, prompt_name="title"))


def test_options_are_checked(minilm, tmp_path):
    doc = Document("a", lee_corpus()[0])
    with pytest.raises(ValueError, match=r"overlap=40 must be at most max_tokens // 2 = 32"):
        chunk_document(doc, minilm.tokenizer, max_tokens=64, overlap=40)
    with pytest.raises(ValueError, match="overlap must be an integer >= 0"):
        chunk_document(doc, minilm.tokenizer, max_tokens=64, overlap=-1)
    with pytest.raises(ValueError, match="max_tokens must be an integer >= 1"):
        chunk_document(doc, minilm.tokenizer, max_tokens=0)
    with pytest.raises(TypeError, match=r"documents\[1\] is str"):
        list(chunk_documents([doc, "a plain string"], minilm))
    with pytest.raises(TypeError, match="tokenizer must be"):
        chunk_document(doc, minilm, max_tokens=64)
    with pytest.raises(ValueError, match="'a': a lone surrogate at character 3"):
        chunk_document(Document("a", "abc\ud800"), minilm.tokenizer, max_tokens=64)
    tiny = make_bert_checkpoint(tmp_path / "bert")
    raw = load_tokenizer(tiny, max_seq_length=8).tokenizer
    assert raw.truncation is not None  # the encoder's copy truncates; chunking counts all
    (only,) = chunk_document(Document("b", "a b c d e f g h i j"), raw, max_tokens=64)
    assert only.text == "a b c d e f g h i j" and only.num_tokens == 12
