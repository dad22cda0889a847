"""Parity with the references on random-weight checkpoints: transformers' BertModel for the
hidden states, sentence-transformers for everything after it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.assertions import assert_embeddings_match, assert_masked_lm_loads_the_same
from helpers.checkpoints import make_bert_checkpoint, make_sentence_transformer
from helpers.texts import SENTENCES

import ferris_jax

CONFIGS = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "wide-3types": dict(
        hidden_size=96,
        num_hidden_layers=3,
        num_attention_heads=6,
        intermediate_size=160,
        type_vocab_size=3,
        max_position_embeddings=64,
    ),
    "deep-relu": dict(
        hidden_size=48,
        num_hidden_layers=5,
        num_attention_heads=3,
        intermediate_size=96,
        hidden_act="relu",
        layer_norm_eps=1e-5,
        max_position_embeddings=256,
    ),
    "gelu-new-1layer": dict(
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=128,
        hidden_act="gelu_new",
        layer_norm_eps=1e-7,
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_last_hidden_state_matches_transformers(tmp_path, name):
    from transformers import BertModel

    path = make_bert_checkpoint(tmp_path / name, seed=len(name), **CONFIGS[name])
    enc = ferris_jax.load(path)
    ref = BertModel.from_pretrained(str(path), attn_implementation="eager").eval()
    batch = enc.tokenize(SENTENCES)
    rng = np.random.default_rng(0)
    token_types = rng.integers(0, ref.config.type_vocab_size, batch.input_ids.shape).astype(
        np.int32
    )
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
    assert np.abs(got[real] - want[real]).max() <= 1e-4


def test_full_length_positions(tmp_path):
    """Texts filling every position of a short max_position_embeddings model."""
    from transformers import BertModel

    path = make_bert_checkpoint(tmp_path / "short", max_position_embeddings=20)
    enc = ferris_jax.load(path)
    assert enc.max_seq_length == 20
    batch = enc.tokenize(["one two three four five six seven " * 5, "hello"])
    assert batch.input_ids.shape[1] == 20 and batch.truncated.tolist() == [True, False]
    ref = BertModel.from_pretrained(str(path)).eval()
    with torch.no_grad():
        want = ref(
            input_ids=torch.from_numpy(batch.input_ids).long(),
            attention_mask=torch.from_numpy(batch.attention_mask).long(),
        ).last_hidden_state
    got = enc.token_embeddings(enc.params, batch.input_ids, batch.attention_mask)
    assert np.abs(np.asarray(got)[0] - want.numpy()[0]).max() <= 1e-4


HEADS = {
    "mean-normalize": dict(pooling="mean", normalize=True),
    "cls": dict(pooling="cls"),
    "max": dict(pooling="max"),
    "mean_sqrt_len": dict(pooling="mean_sqrt_len_tokens"),
    "weightedmean": dict(pooling="weightedmean"),
    "lasttoken": dict(pooling="lasttoken"),
    "cls+mean+dense2": dict(pooling=["cls", "mean"], dense=(40, 24)),
    "dense-normalize": dict(pooling="mean", dense=(16,), normalize=True),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_encode_matches_sentence_transformers(tmp_path, name):
    path, st = make_sentence_transformer(tmp_path / name, **HEADS[name])
    enc = ferris_jax.load(path)
    assert_embeddings_match(enc.encode(SENTENCES, batch_size=5), st.encode(SENTENCES, batch_size=5))


@pytest.mark.parametrize("include_prompt", [True, False])
@pytest.mark.parametrize("pooling", ["mean", "cls", "lasttoken", "max"])
def test_prompts_match_sentence_transformers(tmp_path, include_prompt, pooling):
    prompts = {"query": "query: ", "document": "passage: "}
    path, st = make_sentence_transformer(
        tmp_path / "p", pooling=pooling, include_prompt=include_prompt, prompts=prompts
    )
    enc = ferris_jax.load(path)
    assert enc.prompts == prompts
    assert_embeddings_match(enc.encode_query(SENTENCES), st.encode_query(SENTENCES))
    assert_embeddings_match(
        enc.encode(SENTENCES, prompt="search: "), st.encode(SENTENCES, prompt="search: ")
    )
    assert_embeddings_match(
        enc.encode(SENTENCES, prompt_name="document"), st.encode(SENTENCES, prompt_name="document")
    )


def test_truncate_dim_and_normalize_embeddings(tmp_path):
    path, st = make_sentence_transformer(tmp_path / "m", normalize=True)
    enc = ferris_jax.load(path)
    # A normalizing model stays normalized after Matryoshka truncation.
    got = enc.encode(SENTENCES, truncate_dim=8)
    want = st.encode(SENTENCES, truncate_dim=8, normalize_embeddings=True)
    assert_embeddings_match(got, want)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-6)

    path, st = make_sentence_transformer(tmp_path / "raw", normalize=False)
    enc = ferris_jax.load(path)
    assert_embeddings_match(
        enc.encode(SENTENCES, truncate_dim=12), st.encode(SENTENCES, truncate_dim=12)
    )
    assert_embeddings_match(
        enc.encode(SENTENCES, normalize_embeddings=True),
        st.encode(SENTENCES, normalize_embeddings=True),
    )


def test_max_seq_length_from_sentence_transformers(tmp_path):
    path, st = make_sentence_transformer(tmp_path / "len", max_seq_length=12)
    enc = ferris_jax.load(path)
    assert enc.max_seq_length == st.max_seq_length == 12
    assert_embeddings_match(enc.encode(SENTENCES), st.encode(SENTENCES))
    assert ferris_jax.load(path, max_seq_length=8).max_seq_length == 8


def test_sharded_checkpoint_loads_the_same(tmp_path):
    from transformers import BertModel

    single = make_bert_checkpoint(tmp_path / "single", hidden_size=64, num_attention_heads=4)
    sharded = make_bert_checkpoint(tmp_path / "sharded", hidden_size=64, num_attention_heads=4)
    model = BertModel.from_pretrained(str(single))
    (sharded / "model.safetensors").unlink()
    model.save_pretrained(str(sharded), safe_serialization=True, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    a = ferris_jax.load(single).encode(SENTENCES)
    b = ferris_jax.load(sharded).encode(SENTENCES)
    np.testing.assert_array_equal(a, b)


def test_checkpoint_with_bert_prefix_and_pooler(tmp_path):
    """BertForMaskedLM-style names (`bert.` prefix, `cls.*` head) load into the same encoder."""
    plain = make_bert_checkpoint(tmp_path / "plain")
    assert_masked_lm_loads_the_same(plain, tmp_path, SENTENCES)


def test_every_config_field_reaches_the_model(tmp_path):
    """A changed layer_norm_eps or hidden_act must change the output (no silently dropped field)."""
    base = ferris_jax.load(make_bert_checkpoint(tmp_path / "a", layer_norm_eps=1e-12))
    texts = SENTENCES[:4]
    ref = base.encode(texts)
    for field, value in (("layer_norm_eps", 10.0), ("hidden_act", "relu")):
        enc = ferris_jax.load(make_bert_checkpoint(tmp_path / field, **{field: value}))
        assert np.abs(enc.encode(texts) - ref).max() > 1e-3, field
