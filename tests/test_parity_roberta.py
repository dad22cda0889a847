"""RoBERTa and XLM-RoBERTa parity on random-weight checkpoints: transformers' RobertaModel /
XLMRobertaModel for hidden states and tokens, sentence-transformers for embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.assertions import assert_embeddings_match, assert_masked_lm_loads_the_same
from helpers.checkpoints import (
    make_roberta_checkpoint,
    make_sentence_transformer,
    make_xlm_roberta_checkpoint,
)
from helpers.texts import SENTENCES

import ferris_jax

MAKERS = {"roberta": make_roberta_checkpoint, "xlm-roberta": make_xlm_roberta_checkpoint}
CONFIGS = {
    "tiny": dict(),
    "wide-relu-2types": dict(
        hidden_size=96,
        num_hidden_layers=3,
        num_attention_heads=6,
        intermediate_size=160,
        hidden_act="relu",
        layer_norm_eps=1e-12,
        type_vocab_size=2,
    ),
    "deep-gelu-new": dict(
        hidden_size=48,
        num_hidden_layers=5,
        num_attention_heads=3,
        intermediate_size=96,
        hidden_act="gelu_new",
        layer_norm_eps=1e-7,
        max_position_embeddings=130,
    ),
}
# Texts beyond the corpus: odd whitespace, accents, scripts and symbols outside the vocab.
EXTRA_TEXTS = [
    "  leading and trailing  ",
    "tab\tand\nnewline",
    "Ünïcödé café naïve",
    "emoji 😀 and 中文 text",
    "UPPER Case MiXeD",
    "<s> looks special </s>",
]


def _hidden_state_error(path, batch, token_types=None) -> float:
    """Max |ours - transformers| over the real (non-pad) positions of `batch`."""
    from transformers import AutoModel

    enc = ferris_jax.load(path)
    ref = AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()
    if token_types is None:
        token_types = np.zeros_like(batch.input_ids)
    with torch.no_grad():
        want = ref(
            input_ids=torch.from_numpy(batch.input_ids).long(),
            attention_mask=torch.from_numpy(batch.attention_mask).long(),
            token_type_ids=torch.from_numpy(token_types).long(),
        ).last_hidden_state.numpy()
    got = np.asarray(
        enc.token_embeddings(enc.params, batch.input_ids, batch.attention_mask, token_types)
    )
    real = batch.attention_mask.astype(bool)  # padding positions are not defined outputs
    return float(np.abs(got[real] - want[real]).max())


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("model_type", sorted(MAKERS))
def test_last_hidden_state_matches_transformers(tmp_path, model_type, name):
    path = MAKERS[model_type](tmp_path / name, seed=len(name), **CONFIGS[name])
    enc = ferris_jax.load(path)
    batch = enc.tokenize(SENTENCES)  # padded to the longest, which fills max_seq_length
    assert batch.truncated.any() and batch.input_ids.shape[1] == enc.max_seq_length
    types = CONFIGS[name].get("type_vocab_size", 1)
    rng = np.random.default_rng(0)
    token_types = rng.integers(0, types, batch.input_ids.shape).astype(np.int32)
    assert _hidden_state_error(path, batch, token_types) <= 1e-4


@pytest.fixture(scope="module", params=sorted(MAKERS))
def checkpoint(request, tmp_path_factory):
    """(model_type, path) of a default-size checkpoint of each kind."""
    path = tmp_path_factory.mktemp(request.param) / "ckpt"
    return request.param, MAKERS[request.param](path, seed=3)


def test_tokens_match_the_transformers_tokenizer(checkpoint):
    from transformers import AutoTokenizer

    _, path = checkpoint
    enc = ferris_jax.load(path)
    ref = AutoTokenizer.from_pretrained(str(path))
    texts = SENTENCES + EXTRA_TEXTS
    batch = enc.tokenize(texts)
    want = ref(texts, truncation=True, max_length=enc.max_seq_length)["input_ids"]
    got = [row[:n].tolist() for row, n in zip(batch.input_ids, batch.lengths, strict=True)]
    assert got == want
    assert enc.tokenizer.pad_token_id == ref.pad_token_id == 1


def test_full_length_positions(tmp_path):
    """Inputs filling the position table: RoBERTa positions start at pad_token_id + 1, so a
    20-row table holds 18 tokens, the last at row 19."""
    path = make_xlm_roberta_checkpoint(tmp_path / "short", max_position_embeddings=20)
    enc = ferris_jax.load(path)
    assert enc.max_seq_length == 18
    batch = enc.tokenize(["one two three four five six seven " * 5, "hello"])
    assert batch.input_ids.shape[1] == 18 and batch.truncated.tolist() == [True, False]
    assert _hidden_state_error(path, batch) <= 1e-4
    with pytest.warns(UserWarning, match="exceeds the model's 18 positions"):
        assert ferris_jax.load(path, max_seq_length=20).max_seq_length == 18


HEADS = {
    "mean-normalize": dict(pooling="mean", normalize=True),
    "cls": dict(pooling="cls"),
    "max+dense": dict(pooling="max", dense=(24,)),
}


@pytest.mark.parametrize("head", sorted(HEADS))
def test_encode_matches_sentence_transformers(checkpoint, tmp_path, head):
    _, backbone = checkpoint
    path, st = make_sentence_transformer(tmp_path / "st", backbone_dir=backbone, **HEADS[head])
    texts = SENTENCES + EXTRA_TEXTS
    got = ferris_jax.load(path).encode(texts, batch_size=5)
    assert_embeddings_match(got, st.encode(texts, batch_size=5))


def test_padding_heavy_batch(checkpoint, tmp_path):
    """One text at max length among many short ones: padding must not shift positions."""
    _, backbone = checkpoint
    path, st = make_sentence_transformer(tmp_path / "st", backbone_dir=backbone, normalize=True)
    enc = ferris_jax.load(path)
    texts = ["rain in tokyo and sun in paris " * 12] + ["hello", "a", "", "dog cat"] * 6
    got = enc.encode(texts, batch_size=32)
    assert_embeddings_match(got, st.encode(texts, batch_size=32))
    alone = np.concatenate([enc.encode([t]) for t in texts[:5]])
    np.testing.assert_allclose(got[:5], alone, atol=1e-6)


def test_checkpoint_with_prefix_and_lm_head(checkpoint, tmp_path):
    """*ForMaskedLM names (`roberta.` prefix, `lm_head.*`) load into the same encoder."""
    _, plain = checkpoint
    assert_masked_lm_loads_the_same(plain, tmp_path, SENTENCES)


def test_every_config_field_reaches_the_model(checkpoint, tmp_path):
    """A changed layer_norm_eps or hidden_act must change the output (no silently dropped field)."""
    model_type, base = checkpoint
    ref = ferris_jax.load(base).encode(SENTENCES[:4])
    for field, value in (("layer_norm_eps", 10.0), ("hidden_act", "relu")):
        enc = ferris_jax.load(MAKERS[model_type](tmp_path / field, seed=3, **{field: value}))
        assert np.abs(enc.encode(SENTENCES[:4]) - ref).max() > 1e-3, field
