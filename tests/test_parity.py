"""Parity of every model family with the references, on random-weight checkpoints:
transformers for the tokens and the hidden states, sentence-transformers for the embeddings.

The tests run over helpers.families.FAMILY_TABLE; what only one family has is tested in
test_<family>.py. The sentence-transformers options (prompts, truncate_dim, ...) are tested
once, on BERT, at the end."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from helpers.assertions import (
    assert_embeddings_match,
    assert_hidden_states_match,
    assert_masked_lm_loads_the_same,
)
from helpers.checkpoints import make_bert_checkpoint, make_sentence_transformer
from helpers.families import FAMILY_TABLE
from helpers.texts import PADDING_HEAVY, PARITY_TEXTS, SENTENCES

import ferris_jax


def _usable_positions(path: Path, model_type: str) -> int:
    """The checkpoint's max_position_embeddings, less the rows no token reaches."""
    config = json.loads((path / "config.json").read_text())
    return config["max_position_embeddings"] - FAMILY_TABLE[model_type].position_offset


@pytest.fixture(scope="module", params=sorted(FAMILY_TABLE))
def model_type(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def checkpoint(model_type, tmp_path_factory) -> Path:
    """The family's checkpoint shared by the tests below that need no particular config."""
    family = FAMILY_TABLE[model_type]
    directory = tmp_path_factory.mktemp(model_type) / "ckpt"
    return family.build(directory, seed=3, **family.checkpoint)


@pytest.mark.parametrize(
    ("model_type", "config"),
    [(t, name) for t, family in sorted(FAMILY_TABLE.items()) for name in family.configs],
)
def test_last_hidden_state_matches_transformers(tmp_path, model_type, config):
    family = FAMILY_TABLE[model_type]
    path = family.build(tmp_path / config, seed=len(config), **family.configs[config])
    enc = ferris_jax.load(path)
    assert enc.max_seq_length == _usable_positions(path, model_type)
    batch = enc.tokenize(PARITY_TEXTS)  # padded to the longest, which fills max_seq_length
    assert batch.truncated[-1] and batch.input_ids.shape[1] == enc.max_seq_length
    assert batch.lengths.max() >= 64  # inputs run far past every ModernBERT local window
    assert_hidden_states_match(enc, path, batch)


def test_inputs_filling_every_position(tmp_path, model_type):
    """A text filling every position of a short model, batched with many short ones."""
    path = FAMILY_TABLE[model_type].build(tmp_path / "short", max_position_embeddings=40)
    usable = _usable_positions(path, model_type)
    enc = ferris_jax.load(path)
    assert enc.max_seq_length == usable
    batch = enc.tokenize(PADDING_HEAVY)
    assert batch.input_ids.shape == (len(PADDING_HEAVY), usable)
    assert batch.truncated.tolist() == [True] + [False] * (len(PADDING_HEAVY) - 1)
    assert batch.attention_mask.mean() < 0.3
    assert_hidden_states_match(enc, path, batch)
    # Where positions start after the pad id, the table's last rows are out of reach: a warning.
    warns = pytest.warns(UserWarning, match=f"exceeds the model's {usable} positions")
    with warns if FAMILY_TABLE[model_type].position_offset else contextlib.nullcontext():
        assert ferris_jax.load(path, max_seq_length=40).max_seq_length == usable


def test_tokens_match_the_transformers_tokenizer(model_type, checkpoint):
    from transformers import AutoTokenizer

    enc = ferris_jax.load(checkpoint)
    ref = AutoTokenizer.from_pretrained(str(checkpoint))
    want = ref(PARITY_TEXTS, truncation=True, max_length=enc.max_seq_length)["input_ids"]
    assert enc.tokenizer.encode(PARITY_TEXTS).ids_per_text() == want
    batch = enc.tokenize(PARITY_TEXTS)
    got = [row[:n].tolist() for row, n in zip(batch.input_ids, batch.lengths, strict=True)]
    assert got == want
    assert enc.tokenizer.pad_token_id == ref.pad_token_id == FAMILY_TABLE[model_type].pad_token_id


@pytest.mark.parametrize(
    ("model_type", "config", "head"),
    [
        (t, config, head)
        for t, family in sorted(FAMILY_TABLE.items())
        for config in family.head_configs
        for head in sorted(family.heads)
    ],
)
def test_encode_matches_sentence_transformers(tmp_path, model_type, config, head):
    family = FAMILY_TABLE[model_type]
    backbone = family.build(tmp_path / "backbone", seed=3, **family.configs[config])
    path, st = make_sentence_transformer(
        tmp_path / head, backbone_dir=backbone, **family.heads[head]
    )
    enc = ferris_jax.load(path)
    assert enc.max_seq_length == st.max_seq_length == _usable_positions(backbone, model_type)
    for texts, batch_size in ((PARITY_TEXTS, 5), (PADDING_HEAVY, len(PADDING_HEAVY))):
        got = enc.encode(texts, batch_size=batch_size)
        assert_embeddings_match(got, st.encode(texts, batch_size=batch_size))


def test_padding_heavy_batch(checkpoint, tmp_path):
    """One text at max length among many short ones: padding must not shift positions."""
    path, st = make_sentence_transformer(tmp_path / "st", backbone_dir=checkpoint, normalize=True)
    enc = ferris_jax.load(path)
    texts = ["rain in tokyo and sun in paris " * 12] + ["hello", "a", "", "dog cat"] * 6
    got = enc.encode(texts, batch_size=32)
    assert_embeddings_match(got, st.encode(texts, batch_size=32))
    alone = np.concatenate([enc.encode([t]) for t in texts[:5]])
    np.testing.assert_allclose(got[:5], alone, atol=1e-6)


def test_masked_lm_checkpoint_loads_the_same(checkpoint, tmp_path):
    """*ForMaskedLM names (the family's prefix, `bert.` ... `model.`; its LM head: `cls.*`,
    `lm_head.*`, `vocab_*`, ModernBERT's `head.*` and `decoder.*`) load into the same encoder."""
    assert_masked_lm_loads_the_same(checkpoint, tmp_path, PARITY_TEXTS)


def test_every_config_field_reaches_the_model(model_type, checkpoint, tmp_path):
    """Same weights, one changed field: the output must change (no silently dropped field)."""
    family = FAMILY_TABLE[model_type]
    # Short texts, and long ones that run past ModernBERT's local window: both must change.
    texts = [*SENTENCES[:4], SENTENCES[8], SENTENCES[9]]
    short, long = [0, 1, 2, 3], [0, 4, 5]
    ref = ferris_jax.load(checkpoint).encode(texts)
    for field, value in family.config_changes:
        path = family.build(tmp_path / field, seed=3, **(family.checkpoint | {field: value}))
        change = np.abs(ferris_jax.load(path).encode(texts) - ref).max(axis=1)
        assert change[short].max() > 1e-3 and change[long].max() > 1e-3, field


# The sentence-transformers options, on a BERT backbone.


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
