"""Cross-encoder rerankers against sentence-transformers' `CrossEncoder`: pair tokenization (the
post-processor's pair template, token type ids, `longest_first` truncation) against
transformers' tokenizer, and `predict` / `rank` scores on random-weight
`*ForSequenceClassification` checkpoints that transformers writes itself, fed real text
(STS Benchmark pairs; Lee corpus articles that overflow the models' positions)."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers.checkpoints import (
    make_bert_checkpoint,
    make_modernbert_checkpoint,
    make_xlm_roberta_checkpoint,
)
from helpers.data import lee_corpus, sts_benchmark

import ferris_jax
from ferris_jax.errors import CheckpointError

# float32 on both sides; the same bound the embedding parity tests hold.
RTOL, ATOL = 1e-5, 1e-5
BATCH = 16  # two batches of different bucket shapes per call (each shape compiles once)


@dataclasses.dataclass(frozen=True)
class Case:
    build: Callable[..., Path]
    num_labels: int
    config: dict
    # tokenizer_config.json entries as the hub's cross-encoders have them (None: as saved).
    tokenizer_config: dict | None = None


CASES = {
    # ms-marco-MiniLM style: BertTokenizer, so the pair's token type ids reach the model.
    "bert-1-label-types": Case(
        make_bert_checkpoint,
        1,
        dict(max_position_embeddings=64, initializer_range=0.3),
        {"tokenizer_class": "BertTokenizer"},
    ),
    # A generic tokenizer class: transformers returns no type ids (the model sees zeros).
    "bert-3-labels-generic": Case(
        make_bert_checkpoint,
        3,
        dict(max_position_embeddings=48, initializer_range=0.3, hidden_act="gelu_new"),
    ),
    "xlm-roberta-1-label": Case(make_xlm_roberta_checkpoint, 1, dict(initializer_range=0.3)),
    "modernbert-1-label-mean": Case(
        make_modernbert_checkpoint,
        1,
        dict(
            classifier_pooling="mean",
            classifier_bias=True,
            classifier_activation="silu",
            norm_bias=True,
            max_position_embeddings=96,
        ),
    ),
    "modernbert-3-labels-cls": Case(
        make_modernbert_checkpoint, 3, dict(max_position_embeddings=80)
    ),
}


@functools.cache
def pairs() -> list[tuple[str, str]]:
    """STS-B pairs, queries against whole news articles (cut `longest_first`), two articles
    against each other (both cut), empty and odd texts."""
    sts = sts_benchmark("test")
    lee = lee_corpus()
    out = [(p.sentence1, p.sentence2) for p in sts[:14]]
    out += [(sts[20 + i].sentence1, lee[i]) for i in range(6)]
    out += [(lee[10], lee[11]), (lee[12], sts[40].sentence2)]
    out += [("", sts[41].sentence2), (sts[42].sentence1, ""), ("Ünïcödé café 😀", "中文句子")]
    return out


def _update_tokenizer_config(path: Path, entries: dict | None) -> None:
    if entries:
        config_file = path / "tokenizer_config.json"
        config_file.write_text(json.dumps(json.loads(config_file.read_text()) | entries))


@dataclasses.dataclass
class Loaded:
    path: Path
    case: Case
    reference: object  # sentence_transformers.CrossEncoder
    reranker: ferris_jax.Reranker


@pytest.fixture(scope="module", params=sorted(CASES))
def loaded(request, tmp_path_factory) -> Loaded:
    from sentence_transformers import CrossEncoder

    case = CASES[request.param]
    path = case.build(
        tmp_path_factory.mktemp("rerank") / request.param,
        seed=3,
        num_labels=case.num_labels,
        **case.config,
    )
    _update_tokenizer_config(path, case.tokenizer_config)
    reference = CrossEncoder(str(path), device="cpu")
    return Loaded(path, case, reference, ferris_jax.load_reranker(path))


def test_pair_tokens_match_transformers(loaded):
    """Ids, attention mask and the token type ids the model receives equal transformers'
    `tokenizer(firsts, seconds, truncation=True, padding=True)`; long pairs are cut to the
    model's max length."""
    batch = pairs()
    tokenizer = loaded.reference.tokenizer
    max_length = loaded.reference.max_seq_length
    assert loaded.reranker.max_seq_length == max_length
    want = tokenizer([a for a, _ in batch], [b for _, b in batch], truncation=True, padding=True)
    got = loaded.reranker.tokenize(batch)
    np.testing.assert_array_equal(got.input_ids, np.asarray(want["input_ids"]))
    np.testing.assert_array_equal(got.attention_mask, np.asarray(want["attention_mask"]))
    types = np.asarray(want.get("token_type_ids", np.zeros_like(got.token_type_ids)))
    np.testing.assert_array_equal(got.token_type_ids, types)
    assert got.truncated.sum() >= 4 and got.lengths.max() == max_length
    if loaded.case.tokenizer_config:  # BertTokenizer: the second text's segment is 1
        assert types.max() == 1


def test_predict_matches_cross_encoder(loaded):
    """`predict`'s default activation (sigmoid for one label, identity for several), a given
    activation, softmax, and the output forms, within float32 tolerance."""
    ce, rr, batch = loaded.reference, loaded.reranker, pairs()
    want = ce.predict(batch, batch_size=BATCH)
    got = rr.predict(batch, batch_size=BATCH)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert want.shape == ((len(batch),) if rr.num_labels == 1 else (len(batch), rr.num_labels))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    assert np.ptp(want, axis=0).min() > 0.05  # the scores differ: parity means something

    import torch

    with_tanh = ce.predict(batch, batch_size=BATCH, activation_fn=torch.nn.Tanh())
    np.testing.assert_allclose(
        rr.predict(batch, batch_size=BATCH, activation_fn="tanh"), with_tanh, rtol=RTOL, atol=ATOL
    )
    if rr.num_labels > 1:
        soft = ce.predict(batch, batch_size=BATCH, apply_softmax=True)
        got_soft = rr.predict(batch, batch_size=BATCH, apply_softmax=True, convert_to_tensor=True)
        assert isinstance(got_soft, jax.Array)
        np.testing.assert_allclose(np.asarray(got_soft), soft, rtol=RTOL, atol=ATOL)
        rows = rr.predict(batch, batch_size=BATCH, convert_to_numpy=False)
        assert isinstance(rows, list) and rows[0].shape == (rr.num_labels,)


def test_rank_matches_cross_encoder(loaded):
    """`rank`: the same documents in the same order, the same scores and texts; `top_k`."""
    ce, rr = loaded.reference, loaded.reranker
    query = sts_benchmark("test")[50].sentence1
    documents = [b for _, b in pairs()]
    if rr.num_labels != 1:
        with pytest.raises(ValueError, match="num_labels=1"):
            rr.rank(query, documents)
        return
    want = ce.rank(query, documents, return_documents=True, batch_size=BATCH)
    got = rr.rank(query, documents, return_documents=True, batch_size=BATCH)
    assert [r["corpus_id"] for r in got] == [r["corpus_id"] for r in want]
    assert [r["text"] for r in got] == [r["text"] for r in want]
    np.testing.assert_allclose(
        [r["score"] for r in got], [r["score"] for r in want], rtol=RTOL, atol=ATOL
    )
    top = rr.rank(query, documents, top_k=3, batch_size=BATCH)
    assert [r["corpus_id"] for r in top] == [r["corpus_id"] for r in want[:3]]
    assert set(top[0]) == {"corpus_id", "score"}


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory) -> Path:
    case = CASES["bert-1-label-types"]
    path = case.build(
        tmp_path_factory.mktemp("rerank-bert") / "bert", seed=3, num_labels=1, **case.config
    )
    _update_tokenizer_config(path, case.tokenizer_config)
    return path


@pytest.fixture(scope="module")
def bert(bert_path) -> ferris_jax.Reranker:
    return ferris_jax.load_reranker(bert_path)


BAD_INPUTS = {
    "not-a-pair": ([("q", "d"), "just text"], TypeError, r"pairs\[1\] is str"),
    "three-items": ([("q", "d"), ("q", "d", "e")], ValueError, r"pairs\[1\] has 3 items"),
    "not-a-str": ([("q", "d"), ("q", None)], TypeError, r"pairs\[1\]\[1\] is NoneType"),
    "bytes": ([(b"q", "d")], TypeError, r"pairs\[0\]\[0\] is bytes"),
    "surrogate": ([("q", "d"), ("q", "d"), ("\ud800", "d")], ValueError, r"pairs\[2\]\[0\]"),
    "a-string": ("q", TypeError, "sequence of \\(text, text\\) pairs"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_pairs_name_the_index(bert, case):
    inputs, error, match = BAD_INPUTS[case]
    with pytest.raises(error, match=match):
        bert.predict(inputs)


def test_one_pair_and_output_forms(bert):
    """One pair (a list or a tuple) gives its row alone; a batch of one the same, as an array."""
    from sentence_transformers import CrossEncoder

    pair = pairs()[3]
    want = CrossEncoder(str(bert.checkpoint.path), device="cpu").predict([pair])
    one = bert.predict(pair)
    assert isinstance(one, np.float32)
    np.testing.assert_allclose(one, want[0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(bert.predict(list(pair)), want[0], rtol=RTOL, atol=ATOL)
    tensor = bert.predict([pair], convert_to_tensor=True)
    assert isinstance(tensor, jax.Array) and tensor.shape == (1,)
    np.testing.assert_allclose(np.asarray(tensor), want, rtol=RTOL, atol=ATOL)


def test_bad_rank_arguments(bert):
    with pytest.raises(TypeError, match=r"documents\[1\] is int"):
        bert.rank("q", ["d", 3])
    with pytest.raises(TypeError, match="query is list"):
        bert.rank(["q"], ["d"])
    with pytest.raises(ValueError, match="top_k"):
        bert.rank("q", ["d"], top_k=-1)
    assert bert.rank("q", []) == []
    assert bert.predict([]).shape == (0,)


def test_saved_activation_is_used(bert_path, tmp_path):
    """A CrossEncoder saved with an activation (config.json's sentence_transformers section)
    loads with it; `activation_fn=` overrides it."""
    import torch
    from sentence_transformers import CrossEncoder

    CrossEncoder(str(bert_path), device="cpu", activation_fn=torch.nn.Identity()).save(
        str(tmp_path)
    )
    reference = CrossEncoder(str(tmp_path), device="cpu")
    few = pairs()[:4]
    want = reference.predict(few)
    assert (want < 0).any() or (want > 1).any()  # raw logits, not sigmoid scores
    np.testing.assert_allclose(
        ferris_jax.load_reranker(tmp_path).predict(few), want, rtol=RTOL, atol=ATOL
    )
    sigmoid = ferris_jax.load_reranker(tmp_path, activation_fn="sigmoid").predict(few)
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-want)), rtol=RTOL, atol=ATOL)


def test_loader_is_strict(bert_path, tmp_path):
    """A checkpoint without its classifier, or with an unknown tensor, is refused with every
    problem listed once."""
    import shutil

    from safetensors.numpy import load_file, save_file

    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bert_path / name, tmp_path / name)
    tensors = load_file(str(bert_path / "model.safetensors"))
    del tensors["classifier.weight"]
    tensors["extra.weight"] = np.zeros((2, 2), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        ferris_jax.load_reranker(tmp_path)
    message = str(error.value)
    assert "2 problem(s)" in message
    assert "unexpected tensor 'extra.weight'" in message
    assert "missing parameter head.out.kernel" in message


def test_max_seq_length_cuts_pairs_as_transformers(bert):
    """A shorter `max_seq_length` cuts pairs `longest_first` at it, as transformers'
    `max_length` does; past the model's positions it is refused."""
    from transformers import AutoTokenizer

    batch = pairs()
    want = AutoTokenizer.from_pretrained(str(bert.checkpoint.path))(
        [a for a, _ in batch], [b for _, b in batch], truncation=True, padding=True, max_length=20
    )
    before = bert.max_seq_length
    try:
        bert.max_seq_length = 20
        got = bert.tokenize(batch)
    finally:
        bert.max_seq_length = before
    np.testing.assert_array_equal(got.input_ids, np.asarray(want["input_ids"]))
    np.testing.assert_array_equal(got.token_type_ids, np.asarray(want["token_type_ids"]))
    with pytest.raises(ValueError, match="exceeds the model's 64 positions"):
        bert.max_seq_length = 65
