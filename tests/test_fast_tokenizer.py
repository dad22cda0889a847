"""The fast WordPiece path (nanotoken): used only where it gives Hugging Face `tokenizers`' ids,
checked at load on a probe of every BMP code point and more; same ids, lengths and truncation
flags on real text; `tokenizers` everywhere else."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.data import lee_corpus, sts_sentences
from helpers.texts import SENTENCES
from helpers.tokenizers import (
    make_bert_tokenizer_files,
    make_distilbert_tokenizer_files,
    make_mpnet_tokenizer_files,
    make_roberta_tokenizer_files,
)

from ferris_jax import tokenize
from ferris_jax.loading.tokenizer import load_tokenizer

nanotoken = pytest.importorskip("nanotoken")

EDGE_TEXTS = [
    "",
    " ",
    "Ünïcödé café naïve, e\u0301 combining",
    "emoji 😀 and 中文 text",
    "the <s> tag and <mask> and [CLS] as text",
    "x" * 150,
    "\ufeffbom\u200bzero width\x7fdelete",
]


def _both_paths(directory: Path, max_seq_length: int, monkeypatch):
    """(the tokenizer as loaded, the same tokenizer with the fast path turned off)."""
    fast = load_tokenizer(directory, max_seq_length=max_seq_length)
    with monkeypatch.context() as m:
        m.setenv(tokenize.FAST_TOKENIZER_ENV, "0")
        slow = load_tokenizer(directory, max_seq_length=max_seq_length)
    assert slow.fast_path is None and "FERRIS_JAX_FAST_TOKENIZER=0" in slow.fast_path_reason
    return fast, slow


def _assert_same_tokens(got: tokenize.Tokenized, want: tokenize.Tokenized) -> None:
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.lengths, want.lengths)
    np.testing.assert_array_equal(got.starts, want.starts)
    np.testing.assert_array_equal(got.truncated, want.truncated)
    assert got.ids.dtype == want.ids.dtype == np.int32
    assert got.type_ids is None and want.type_ids is None


@pytest.mark.parametrize("max_seq_length", [256, 128, 8])
def test_minilm_takes_the_fast_path_with_the_same_ids(minilm_path, max_seq_length, monkeypatch):
    fast, slow = _both_paths(minilm_path, max_seq_length, monkeypatch)
    assert fast.fast_path == "nanotoken", fast.fast_path_reason
    texts = [*sts_sentences("test"), *lee_corpus(), *EDGE_TEXTS]
    want = slow.encode(texts)
    assert want.truncated.any() and not want.truncated.all()
    _assert_same_tokens(fast.encode(texts), want)
    _assert_same_tokens(fast.encode(texts[-1:]), slow.encode(texts[-1:]))  # one text
    _assert_same_tokens(fast.encode([]), slow.encode([]))


@pytest.mark.parametrize("family", ["bert", "distilbert", "mpnet"])
def test_wordpiece_families_take_the_fast_path_with_the_same_ids(tmp_path, family, monkeypatch):
    if family == "bert":
        make_bert_tokenizer_files(tmp_path)
    elif family == "distilbert":
        make_distilbert_tokenizer_files(tmp_path, 512)
    else:
        make_mpnet_tokenizer_files(tmp_path)
    fast, slow = _both_paths(tmp_path, 32, monkeypatch)
    assert fast.fast_path == "nanotoken", fast.fast_path_reason
    texts = [*SENTENCES, *EDGE_TEXTS, " ".join(SENTENCES)]
    _assert_same_tokens(fast.encode(texts), slow.encode(texts))


def test_a_bpe_tokenizer_keeps_tokenizers(tmp_path):
    make_roberta_tokenizer_files(tmp_path, 512)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    tok = load_tokenizer(tmp_path, max_seq_length=64)
    assert tok.fast_path is None
    assert "nanotoken cannot run this tokenizer" in tok.fast_path_reason


def test_a_fast_tokenizer_that_differs_on_the_probe_is_not_used(tmp_path, monkeypatch):
    """A fast tokenizer wrong on one probe text (here: any text with 'é') is dropped at load,
    the reason names that text, and encoding gives `tokenizers`' ids."""
    real = nanotoken.WordPieceTokenizer.from_json

    class OffByOneOnAccents:
        def __init__(self, inner):
            self.inner, self.suffix_ids = inner, inner.suffix_ids

        def encode_batch(self, texts, **options):
            ids, offsets = self.inner.encode_batch(texts, **options)
            ids = ids.copy()
            for i, text in enumerate(texts):
                if "é" in text:
                    ids[offsets[i]] += 1
            return ids, offsets

    monkeypatch.setattr(
        nanotoken.WordPieceTokenizer, "from_json", lambda data: OffByOneOnAccents(real(data))
    )
    make_bert_tokenizer_files(tmp_path)
    with pytest.warns(UserWarning, match="nanotoken not used: its ids differ"):
        tok = load_tokenizer(tmp_path, max_seq_length=8)  # the probe is compared whole
    assert tok.fast_path is None
    assert "differ from tokenizers' on probe text" in tok.fast_path_reason
    monkeypatch.setenv(tokenize.FAST_TOKENIZER_ENV, "0")
    want = load_tokenizer(tmp_path, max_seq_length=8).encode(EDGE_TEXTS)
    _assert_same_tokens(tok.encode(EDGE_TEXTS), want)


def test_a_fast_tokenizer_that_truncates_otherwise_is_not_used(tmp_path, monkeypatch):
    """Truncation is checked at load and again at each new max_seq_length."""
    real = nanotoken.WordPieceTokenizer.from_json

    class WrongAtOneLength:
        def __init__(self, inner):
            self.inner, self.suffix_ids = inner, inner.suffix_ids

        def encode_batch(self, texts, max_length=None, **options):
            ids, offsets = self.inner.encode_batch(texts, max_length=max_length, **options)
            if max_length == 41:  # truncation at 40 tokens comes out wrong
                ids = ids.copy()
                ids[offsets[1:] - 2] += 1
            return ids, offsets

    monkeypatch.setattr(
        nanotoken.WordPieceTokenizer, "from_json", lambda data: WrongAtOneLength(real(data))
    )
    make_bert_tokenizer_files(tmp_path)
    tok = load_tokenizer(tmp_path, max_seq_length=32)
    assert tok.fast_path == "nanotoken"
    with pytest.warns(UserWarning, match="truncates otherwise at 40 tokens"):
        tok.set_max_seq_length(40)
    assert tok.fast_path is None
    with pytest.warns(UserWarning, match="truncates otherwise at 40 tokens"):
        assert load_tokenizer(tmp_path, max_seq_length=40).fast_path is None


def test_the_tokenizer_pickles_and_checks_its_fast_path_again(minilm_path):
    import pickle

    tok = load_tokenizer(minilm_path, max_seq_length=128)
    copy = pickle.loads(pickle.dumps(tok))
    assert copy.fast_path == tok.fast_path == "nanotoken"
    texts = [*EDGE_TEXTS, *lee_corpus()[:5]]
    _assert_same_tokens(copy.encode(texts), tok.encode(texts))


def test_the_probe_covers_the_basic_multilingual_plane():
    probe = "".join(tokenize._probe_texts())
    covered = {ord(c) for c in probe}
    assert all(c in covered for c in range(0x10000) if not 0xD800 <= c < 0xE000)


@pytest.mark.parametrize(
    ("value", "fast"),
    [("0", False), (" Off ", False), ("no", False), ("FALSE", False),
     ("1", True), ("on", True), ("Yes", True), ("true", True), ("", True)],
)  # fmt: skip
def test_the_switch_takes_the_usual_spellings(tmp_path, monkeypatch, value, fast):
    make_bert_tokenizer_files(tmp_path)
    monkeypatch.setenv(tokenize.FAST_TOKENIZER_ENV, value)
    tok = load_tokenizer(tmp_path, max_seq_length=16)
    assert (tok.fast_path == "nanotoken") is fast, tok.fast_path_reason


@pytest.mark.parametrize("value", ["bogus", "2", "of", "disable"])
def test_a_misspelled_switch_is_refused_by_name(tmp_path, monkeypatch, value):
    make_bert_tokenizer_files(tmp_path)
    monkeypatch.setenv(tokenize.FAST_TOKENIZER_ENV, value)
    message = rf"\$FERRIS_JAX_FAST_TOKENIZER='{value}': expected 1/true/yes/on .* 0/false/no/off"
    with pytest.raises(ValueError, match=message):
        load_tokenizer(tmp_path, max_seq_length=16)
