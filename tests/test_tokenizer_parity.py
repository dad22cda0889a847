"""Token ids equal `AutoTokenizer.from_pretrained(dir)` (what sentence-transformers tokenizes with)
on tokenizer files in the layouts real hub checkpoints ship, including the ones transformers 5
rebuilds from tokenizer_config.json rather than taking tokenizer.json as written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.checkpoints import make_xlm_roberta_checkpoint
from helpers.texts import SENTENCES
from helpers.tokenizers import (
    make_bert_tokenizer_files,
    make_roberta_tokenizer_files,
    make_xlm_roberta_hub_tokenizer_files,
)

import ferris_jax
from ferris_jax.loading.tokenizer import load_tokenizer

TEXTS = [
    "",
    " ",
    "   ",
    "\n",
    "\t",
    "  \t\n  ",
    "\u00a0",
    "a ",
    " a",
    "hello  world",
    "  leading and trailing  ",
    "tab\tand\nnewline\r\nand return",
    "nbsp\u00a0and ideographic\u3000space",
    "ｆｕｌｌ ｗｉｄｔｈ ＡＢＣ １２３",
    "Ünïcödé café naïve, e\u0301 combining",
    "UPPER Case MiXeD",
    "emoji 😀 and 中文 text",
    "混合中文English日本語のテキスト",
    "zero\u200bwidth ﬁ ligature ①②",
    "the <s> tag and <mask> and [CLS] as text",
]


def _three_ids(directory: Path, texts: list[str]) -> tuple[list, list, list]:
    """(AutoTokenizer's ids, ours, tokenizer.json's as written) for `texts`."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    want = AutoTokenizer.from_pretrained(str(directory))(texts)["input_ids"]
    got = load_tokenizer(directory, max_seq_length=10_000).encode(texts).ids_per_text()
    raw = Tokenizer.from_file(str(directory / "tokenizer.json"))
    as_written = [e.ids for e in raw.encode_batch(texts)]
    return want, got, as_written


@pytest.mark.parametrize("tokenizer_class", ["XLMRobertaTokenizer", None])
def test_xlm_roberta_hub_layout(tmp_path, tokenizer_class):
    """xlm-roberta-base / multilingual-e5 layout: transformers keeps only the Precompiled charsmap
    and splits on whitespace first (class named in tokenizer_config.json, or by model_type)."""
    make_xlm_roberta_hub_tokenizer_files(tmp_path, 512, tokenizer_class)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    want, got, as_written = _three_ids(tmp_path, TEXTS + SENTENCES)
    assert got == want
    assert as_written != want  # the files are of the kind that needs the rebuild


def _wordpiece_dir(directory: Path, model_type: str, tokenizer_config: dict) -> Path:
    """A cased WordPiece tokenizer.json with a transformers 4 style tokenizer_config.json."""
    make_bert_tokenizer_files(directory, lowercase=False)
    specials = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")
    config = dict(specials, mask_token="[MASK]", model_max_length=512, **tokenizer_config)
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    (directory / "config.json").write_text(json.dumps({"model_type": model_type}))
    return directory


# (model_type, tokenizer_config.json options, whether transformers 5 changes tokenizer.json's ids)
WORDPIECE_CASES = {
    "bert-default-lowercases": ("bert", dict(tokenizer_class="BertTokenizer"), True),
    "bert-cased": ("bert", dict(tokenizer_class="BertTokenizer", do_lower_case=False), False),
    "bert-keep-accents": (
        "bert",
        dict(tokenizer_class="BertTokenizerFast", do_lower_case=True, strip_accents=False),
        True,
    ),
    "bert-no-chinese-split": (
        "bert",
        dict(tokenizer_class="BertTokenizer", do_lower_case=False, tokenize_chinese_chars=False),
        True,
    ),
    "bert-class-from-model-type": ("bert", dict(), True),
    "distilbert": ("distilbert", dict(tokenizer_class="DistilBertTokenizer"), True),
    "mpnet": (  # bos/eos named so MPNetTokenizer adds no <s> </s> this vocab lacks
        "mpnet",
        dict(tokenizer_class="MPNetTokenizer", bos_token="[CLS]", eos_token="[SEP]"),
        True,
    ),
    "generic-class": ("bert", dict(tokenizer_class="PreTrainedTokenizerFast"), False),
    "modernbert-ignores-class": ("modernbert", dict(tokenizer_class="BertTokenizer"), False),
}


@pytest.mark.parametrize("case", sorted(WORDPIECE_CASES))
def test_wordpiece_options(tmp_path, case):
    """BertTokenizer-like classes rebuild BertNormalizer from do_lower_case (default True),
    strip_accents and tokenize_chinese_chars; generic classes and ModernBERT keep the file."""
    model_type, options, rebuilt = WORDPIECE_CASES[case]
    want, got, as_written = _three_ids(_wordpiece_dir(tmp_path, model_type, options), TEXTS)
    assert got == want
    assert (as_written != want) == rebuilt


@pytest.mark.parametrize(("json_prefix", "config_prefix"), [(False, True), (True, None)])
def test_roberta_add_prefix_space(tmp_path, json_prefix, config_prefix):
    """RobertaTokenizer takes ByteLevel's add_prefix_space from tokenizer_config.json (default
    False), whatever tokenizer.json says."""
    from tokenizers import Tokenizer, pre_tokenizers

    make_roberta_tokenizer_files(tmp_path, 512)
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=json_prefix)
    tok.save(str(tmp_path / "tokenizer.json"))
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.pop("add_prefix_space")
    if config_prefix is not None:
        config["add_prefix_space"] = config_prefix
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    want, got, as_written = _three_ids(tmp_path, TEXTS)
    assert got == want
    assert as_written != want


def test_unknown_class_warns(tmp_path):
    """A class we do not know how transformers rebuilds is used as written, with a warning."""
    directory = _wordpiece_dir(tmp_path, "bert", dict(tokenizer_class="SomeCustomTokenizer"))
    with pytest.warns(UserWarning, match="SomeCustomTokenizer"):
        load_tokenizer(directory, max_seq_length=128)


def test_encode_matches_sentence_transformers_on_hub_layout(tmp_path):
    """End to end on an XLM-R checkpoint with the hub's tokenizer files: ferris_jax.load(dir)
    against SentenceTransformer(dir), both reading the same files."""
    from sentence_transformers import SentenceTransformer

    path = make_xlm_roberta_checkpoint(tmp_path / "xlmr", seed=5, hub_layout=True)
    texts = TEXTS + SENTENCES
    enc = ferris_jax.load(path)
    st = SentenceTransformer(str(path), device="cpu")
    assert enc.max_seq_length == st.max_seq_length
    ours, theirs = enc.tokenize(texts), getattr(st, "preprocess", st.tokenize)(texts)
    ours = [row[:n].tolist() for row, n in zip(ours.input_ids, ours.lengths, strict=True)]
    mask = theirs["attention_mask"].bool()
    assert ours == [row[m].tolist() for row, m in zip(theirs["input_ids"], mask, strict=True)]
    got = enc.encode(texts, batch_size=8)
    want = st.encode(texts, batch_size=8)
    assert got.shape == want.shape and got.dtype == np.float32
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.99999
    assert np.abs(got - want).max() <= 1e-5
