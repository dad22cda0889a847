"""DistilBERT parity on random-weight checkpoints: transformers' DistilBertModel for hidden
states and tokens, sentence-transformers for embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.assertions import assert_embeddings_match, assert_masked_lm_loads_the_same
from helpers.checkpoints import make_distilbert_checkpoint, make_sentence_transformer
from helpers.texts import SENTENCES

import ferris_jax

CONFIGS = {
    "tiny": dict(),
    "wide-relu": dict(dim=96, n_layers=3, n_heads=6, hidden_dim=160, activation="relu"),
    "sinusoidal-deep": dict(
        dim=48,
        n_layers=5,
        n_heads=3,
        hidden_dim=96,
        sinusoidal_pos_embds=True,
        max_position_embeddings=128,
    ),
    "gelu-new-1layer": dict(dim=64, n_layers=1, n_heads=2, hidden_dim=128, activation="gelu_new"),
}
EXTRA_TEXTS = ["  leading and trailing  ", "tab\tand\nnewline", "Ünïcödé café", "emoji 😀 中文"]


def _hidden_state_error(path, batch) -> float:
    """Max |ours - transformers| over the real (non-pad) positions of `batch`."""
    from transformers import DistilBertModel

    enc = ferris_jax.load(path)
    ref = DistilBertModel.from_pretrained(str(path), attn_implementation="eager").eval()
    with torch.no_grad():
        want = ref(
            input_ids=torch.from_numpy(batch.input_ids).long(),
            attention_mask=torch.from_numpy(batch.attention_mask).long(),
        ).last_hidden_state.numpy()
    got = np.asarray(enc.token_embeddings(enc.params, batch.input_ids, batch.attention_mask))
    real = batch.attention_mask.astype(bool)  # padding positions are not defined outputs
    return float(np.abs(got[real] - want[real]).max())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_last_hidden_state_matches_transformers(tmp_path, name):
    path = make_distilbert_checkpoint(tmp_path / name, seed=len(name), **CONFIGS[name])
    enc = ferris_jax.load(path)
    batch = enc.tokenize(SENTENCES)  # padded to the longest, which fills max_seq_length
    assert batch.truncated.any() and batch.input_ids.shape[1] == enc.max_seq_length
    assert _hidden_state_error(path, batch) <= 1e-4


def test_full_length_positions(tmp_path):
    path = make_distilbert_checkpoint(tmp_path / "short", max_position_embeddings=20)
    enc = ferris_jax.load(path)
    assert enc.max_seq_length == 20
    batch = enc.tokenize(["one two three four five six seven " * 5, "hello"])
    assert batch.input_ids.shape[1] == 20 and batch.truncated.tolist() == [True, False]
    assert _hidden_state_error(path, batch) <= 1e-4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_distilbert_checkpoint(tmp_path_factory.mktemp("distilbert") / "ckpt", seed=3)


def test_tokens_match_the_transformers_tokenizer(checkpoint):
    from transformers import AutoTokenizer

    enc = ferris_jax.load(checkpoint)
    ref = AutoTokenizer.from_pretrained(str(checkpoint))
    texts = SENTENCES + EXTRA_TEXTS
    batch = enc.tokenize(texts)
    want = ref(texts, truncation=True, max_length=enc.max_seq_length)["input_ids"]
    got = [row[:n].tolist() for row, n in zip(batch.input_ids, batch.lengths, strict=True)]
    assert got == want


HEADS = {
    "mean-normalize": dict(pooling="mean", normalize=True),
    "cls": dict(pooling="cls"),
    "max+dense": dict(pooling="max", dense=(24,)),
}


@pytest.mark.parametrize("head", sorted(HEADS))
def test_encode_matches_sentence_transformers(checkpoint, tmp_path, head):
    path, st = make_sentence_transformer(tmp_path / "st", backbone_dir=checkpoint, **HEADS[head])
    texts = SENTENCES + EXTRA_TEXTS
    got = ferris_jax.load(path).encode(texts, batch_size=5)
    assert_embeddings_match(got, st.encode(texts, batch_size=5))


def test_padding_heavy_batch(checkpoint, tmp_path):
    path, st = make_sentence_transformer(tmp_path / "st", backbone_dir=checkpoint, normalize=True)
    texts = ["rain in tokyo and sun in paris " * 12] + ["hello", "a", "", "dog cat"] * 6
    got = ferris_jax.load(path).encode(texts, batch_size=32)
    assert_embeddings_match(got, st.encode(texts, batch_size=32))


def test_checkpoint_with_prefix_and_mlm_head(checkpoint, tmp_path):
    """DistilBertForMaskedLM names (`distilbert.` prefix, `vocab_*` head) load the same."""
    assert_masked_lm_loads_the_same(checkpoint, tmp_path, SENTENCES)


def test_activation_reaches_the_model(checkpoint, tmp_path):
    """DistilBERT's `activation` (not `hidden_act`) must change the output."""
    ref = ferris_jax.load(checkpoint).encode(SENTENCES[:4])
    enc = ferris_jax.load(make_distilbert_checkpoint(tmp_path / "relu", seed=3, activation="relu"))
    assert np.abs(enc.encode(SENTENCES[:4]) - ref).max() > 1e-3
