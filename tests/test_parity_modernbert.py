"""ModernBERT parity on random-weight checkpoints: transformers' ModernBertModel for the hidden
states, sentence-transformers for the embeddings, the fast tokenizer for the token ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.assertions import assert_embeddings_match, assert_masked_lm_loads_the_same
from helpers.checkpoints import make_modernbert_checkpoint, make_sentence_transformer
from helpers.texts import SENTENCES

import ferris_jax
from ferris_jax.models.modernbert import ModernBertConfig

# Every config keeps a small local window, so the long SENTENCES (80+ tokens) run far past it.
CONFIGS = {
    "every3-w8": dict(),
    "biases-every2-w16-silu": dict(
        hidden_size=48,
        num_hidden_layers=4,
        num_attention_heads=3,
        intermediate_size=80,
        global_attn_every_n_layers=2,
        local_attention=16,
        attention_bias=True,
        mlp_bias=True,
        norm_bias=True,
        hidden_activation="silu",
        norm_eps=1e-6,
    ),
    "every4-w7-thetas": dict(
        hidden_size=32,
        num_hidden_layers=5,
        num_attention_heads=2,
        intermediate_size=40,
        global_attn_every_n_layers=4,
        local_attention=7,  # odd: local layers see |i - j| <= 3
        global_rope_theta=500.0,
        local_rope_theta=50.0,
        norm_bias=True,
        hidden_activation="gelu_pytorch_tanh",
    ),
    "all-global-1layer": dict(
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=96,
        global_attn_every_n_layers=1,
        attention_bias=True,
        max_position_embeddings=64,
    ),
}
# One text filling the whole length among many short ones: most of the batch is padding.
PADDING_HEAVY = [
    "one two three four five six seven " * 40,
    *("hello", "", "a dog", "the cat sat", "x", "tokyo", "pizza and cheese"),
]
UNICODE = [
    "Ünïcödé façade naïve café",
    "中文句子用于测试",
    "emoji 😀🎉 👍🏽",
    "tab\tand\nnewline",
    "[MASK] a [MASK]",
]


def _hidden(path, input_ids, attention_mask, attn_implementation):
    from transformers import ModernBertModel

    ref = ModernBertModel.from_pretrained(str(path), attn_implementation=attn_implementation)
    with torch.no_grad():
        return ref.eval()(
            input_ids=torch.from_numpy(input_ids).long(),
            attention_mask=torch.from_numpy(attention_mask).long(),
        ).last_hidden_state.numpy()


def _assert_hidden_matches(path, texts):
    """Our last hidden state vs transformers' eager and sdpa paths, on real positions only."""
    enc = ferris_jax.load(path)
    batch = enc.tokenize(texts)
    got = np.asarray(enc.token_embeddings(enc.params, batch.input_ids, batch.attention_mask))
    real = batch.attention_mask.astype(bool)  # padding positions are not defined outputs
    assert np.isfinite(got).all()
    for impl in ("eager", "sdpa"):
        want = _hidden(path, batch.input_ids, batch.attention_mask, impl)
        assert np.abs(got[real] - want[real]).max() <= 1e-4, impl
    return enc, batch


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_last_hidden_state_matches_transformers(tmp_path, name):
    path = make_modernbert_checkpoint(tmp_path / name, seed=len(name), **CONFIGS[name])
    _, batch = _assert_hidden_matches(path, SENTENCES)
    assert batch.lengths.max() >= 64  # inputs run far past every local window


def test_padding_heavy_batch_at_full_length(tmp_path):
    """A text filling every position of a short model, batched with many short ones."""
    path = make_modernbert_checkpoint(tmp_path / "short", max_position_embeddings=40)
    enc, batch = _assert_hidden_matches(path, PADDING_HEAVY)
    assert enc.max_seq_length == 40
    assert batch.input_ids.shape == (len(PADDING_HEAVY), 40)
    assert batch.truncated.tolist() == [True] + [False] * (len(PADDING_HEAVY) - 1)
    assert batch.attention_mask.mean() < 0.3


def test_tokenization_matches_transformers(tmp_path):
    from transformers import AutoTokenizer

    path = make_modernbert_checkpoint(tmp_path / "tok", max_position_embeddings=64)
    enc = ferris_jax.load(path)
    fast = AutoTokenizer.from_pretrained(str(path))
    texts = SENTENCES + PADDING_HEAVY + UNICODE
    want = fast(texts, truncation=True, max_length=enc.max_seq_length)["input_ids"]
    assert enc.tokenizer.encode(texts).ids_per_text() == want
    assert enc.tokenizer.pad_token_id == fast.pad_token_id != 0


# gte-modernbert-base pools [CLS]; nomic's modernbert-embed-base mean-pools and normalizes.
HEADS = {
    "cls": dict(pooling="cls"),
    "mean-normalize": dict(pooling="mean", normalize=True),
}


@pytest.mark.parametrize("config", ["every3-w8", "biases-every2-w16-silu"])
@pytest.mark.parametrize("head", sorted(HEADS))
def test_encode_matches_sentence_transformers(tmp_path, head, config):
    backbone = make_modernbert_checkpoint(tmp_path / "backbone", **CONFIGS[config])
    path, st = make_sentence_transformer(tmp_path / head, backbone_dir=backbone, **HEADS[head])
    enc = ferris_jax.load(path)
    texts = SENTENCES + PADDING_HEAVY + UNICODE
    assert_embeddings_match(enc.encode(texts, batch_size=6), st.encode(texts, batch_size=6))
    assert_embeddings_match(
        enc.encode(PADDING_HEAVY, batch_size=len(PADDING_HEAVY)),
        st.encode(PADDING_HEAVY, batch_size=len(PADDING_HEAVY)),
    )


def test_hub_config_spelling_loads_the_same(tmp_path):
    """Hub config.json files predate `layer_types` / `rope_parameters`."""
    from transformers import AutoConfig

    settings = dict(global_attn_every_n_layers=2, global_rope_theta=700.0, local_rope_theta=30.0)
    new = make_modernbert_checkpoint(tmp_path / "new", num_hidden_layers=4, **settings)
    old = make_modernbert_checkpoint(tmp_path / "old", num_hidden_layers=4, **settings)
    config = json.loads((old / "config.json").read_text())
    del config["layer_types"], config["rope_parameters"]
    config |= settings
    (old / "config.json").write_text(json.dumps(config))
    # transformers reads the rewritten file as the original one ...
    hf_old, hf_new = AutoConfig.from_pretrained(str(old)), AutoConfig.from_pretrained(str(new))
    assert hf_old.layer_types == hf_new.layer_types
    assert hf_old.rope_parameters == hf_new.rope_parameters
    # ... and so do we.
    np.testing.assert_array_equal(
        ferris_jax.load(old).encode(SENTENCES), ferris_jax.load(new).encode(SENTENCES)
    )
    parsed = ModernBertConfig.from_hf(config)
    assert parsed.layer_types == tuple(hf_new.layer_types)
    assert (parsed.global_rope_theta, parsed.local_rope_theta) == (700.0, 30.0)
    # transformers 4.x read a null local_rope_theta as the global one.
    assert ModernBertConfig.from_hf(config | {"local_rope_theta": None}).local_rope_theta == 700.0


def test_masked_lm_checkpoint_with_model_prefix(tmp_path):
    """ModernBertForMaskedLM names (`model.` prefix, `head.*`, `decoder.*`) load the encoder."""
    plain = make_modernbert_checkpoint(tmp_path / "plain", norm_bias=True)
    assert_masked_lm_loads_the_same(plain, tmp_path, SENTENCES)


def test_every_config_field_reaches_the_model(tmp_path):
    """Same weights, one changed field: the output must change (no silently dropped field)."""
    texts = [SENTENCES[0], SENTENCES[8], SENTENCES[9]]  # long ones: the window matters
    ref = ferris_jax.load(make_modernbert_checkpoint(tmp_path / "a")).encode(texts)
    for field, value in (
        ("norm_eps", 10.0),
        ("hidden_activation", "relu"),
        ("local_attention", 32),
        ("global_attn_every_n_layers", 1),
        ("global_rope_theta", 100.0),
        ("local_rope_theta", 100.0),
    ):
        enc = ferris_jax.load(make_modernbert_checkpoint(tmp_path / field, **{field: value}))
        assert np.abs(enc.encode(texts) - ref).max() > 1e-3, field
