"""Long documents are tokenized from a prefix when that is provably enough: the token ids and
truncation flags are exactly those of tokenizing the whole text, for every family's tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.families import FAMILY_TABLE
from helpers.texts import WORDS

import ferris_jax


def _long_texts(seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = lambda n: " ".join(rng.choice(WORDS, size=n))  # noqa: E731
    giant = "x" * 150  # longer than WordPiece's 100-character word limit: one [UNK] when whole
    return [
        words(400),  # far past the limit: decided from the prefix
        words(50) + " " + giant + " " + words(300),  # a giant word near the cut
        words(20) + " " + "long" * 300,  # no whitespace near the cut: whole text
        "\n".join(words(5) for _ in range(120)),  # newlines only
        "東京" * 400,  # no whitespace at all
        words(60),  # below the limit
        words(5),
        "",
    ]


@pytest.mark.parametrize("family", sorted(FAMILY_TABLE))
def test_prefix_tokenization_equals_whole_text(tmp_path, family, monkeypatch):
    monkeypatch.setenv("FERRIS_JAX_FAST_TOKENIZER", "0")  # the shortcut is `tokenizers`' path
    path = FAMILY_TABLE[family].build(tmp_path / family)
    tok = ferris_jax.load(path, max_seq_length=16, compilation_cache=False).tokenizer
    assert tok.fast_path is None
    assert tok._prefix_chars == 16 * 6  # the shortcut is on for this family's tokenizer
    texts = _long_texts()
    got = tok.encode(texts)
    whole = tok.tokenizer.encode_batch(texts, add_special_tokens=True)
    assert got.ids_per_text() == [e.ids for e in whole]
    assert got.type_ids_per_text() == [e.type_ids for e in whole]
    assert got.truncated.tolist() == [bool(e.overflowing) for e in whole]
    assert got.truncated[:4].all() and not got.truncated[-2:].any()
