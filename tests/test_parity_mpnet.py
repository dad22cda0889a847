"""MPNet parity on random-weight checkpoints: transformers' MPNetModel for the hidden states
(and its bucket and position-id functions), sentence-transformers for everything after it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.assertions import assert_embeddings_match, assert_masked_lm_loads_the_same
from helpers.checkpoints import make_mpnet_checkpoint, make_sentence_transformer
from helpers.texts import SENTENCES

import ferris_jax
from ferris_jax.models import mpnet
from ferris_jax.models.bert import position_ids

# Literal special tokens in text: "<pad>" becomes id 1, which MPNet's position ids skip.
TEXTS = [*SENTENCES, "a <pad> inside the text", "<mask> token </s> and <s>", "x <mask>y"]
# One text past every max_seq_length below, the rest short: a padding-heavy batch.
LONG = "rain in tokyo and sun in paris " * 40

CONFIGS = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "wide-relu": dict(
        hidden_size=96,
        num_hidden_layers=3,
        num_attention_heads=6,
        intermediate_size=160,
        hidden_act="relu",
        layer_norm_eps=1e-12,
        max_position_embeddings=66,
    ),
    # Distances past max_distance=128: the bucket's log region and its saturation.
    "long-160": dict(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=96,
        max_position_embeddings=160,
    ),
    # Extra bias rows are never indexed: transformers always uses 32 buckets.
    "48-bias-rows-gelu-new": dict(
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=128,
        hidden_act="gelu_new",
        layer_norm_eps=1e-7,
        relative_attention_num_buckets=48,
    ),
}


def _reference_hidden(path, batch) -> np.ndarray:
    from transformers import MPNetModel

    ref = MPNetModel.from_pretrained(str(path)).eval()
    with torch.no_grad():
        return ref(
            input_ids=torch.from_numpy(batch.input_ids).long(),
            attention_mask=torch.from_numpy(batch.attention_mask).long(),
        ).last_hidden_state.numpy()


def test_relative_position_bucket_matches_transformers():
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    rel = np.arange(-1000, 1001)
    for kw in ({}, dict(num_buckets=64, max_distance=256), dict(num_buckets=16, max_distance=40)):
        want = MPNetEncoder.relative_position_bucket(torch.from_numpy(rel), **kw).numpy()
        np.testing.assert_array_equal(mpnet.relative_position_bucket(rel, **kw), want)


def test_position_ids_match_transformers():
    from transformers.models.mpnet.modeling_mpnet import create_position_ids_from_input_ids

    ids = np.random.default_rng(0).integers(0, 5, (6, 40)).astype(np.int32)  # many 1s
    want = create_position_ids_from_input_ids(torch.from_numpy(ids).long(), mpnet.PADDING_IDX)
    cfg = mpnet.MPNetConfig.from_hf(dict(vocab_size=10, hidden_size=8, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=16))  # fmt: skip
    np.testing.assert_array_equal(np.asarray(position_ids(cfg, ids)), want.numpy())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_last_hidden_state_matches_transformers(tmp_path, name):
    path = make_mpnet_checkpoint(tmp_path / name, seed=len(name), **CONFIGS[name])
    enc = ferris_jax.load(path)
    assert enc.max_seq_length == CONFIGS[name].get("max_position_embeddings", 130) - 2
    batch = enc.tokenize([*TEXTS, LONG])
    assert batch.truncated[-1] and batch.input_ids.shape[1] == enc.max_seq_length
    want = _reference_hidden(path, batch)
    got = np.asarray(enc.token_embeddings(enc.params, batch.input_ids, batch.attention_mask))
    real = batch.attention_mask.astype(bool)  # padding positions are not defined outputs
    assert np.abs(got[real] - want[real]).max() <= 1e-4


def test_max_tokens_leaves_room_for_the_position_offset(tmp_path):
    """A tokenizer allowing more tokens than positions: 2 of the 160 positions are unusable."""
    path = make_mpnet_checkpoint(
        tmp_path / "m", max_position_embeddings=160, tokenizer_max_length=512
    )
    enc = ferris_jax.load(path)
    assert enc.max_seq_length == 158
    batch = enc.tokenize([LONG, "hello"])
    assert batch.input_ids.shape[1] == 158
    want = _reference_hidden(path, batch)
    got = np.asarray(enc.token_embeddings(enc.params, batch.input_ids, batch.attention_mask))
    assert np.abs(got[0] - want[0]).max() <= 1e-4


@pytest.mark.parametrize("post_processor", ["template", "roberta"])
def test_tokenization_matches_transformers(tmp_path, post_processor):
    from transformers import AutoTokenizer

    path = make_mpnet_checkpoint(tmp_path / "t", post_processor=post_processor)
    enc = ferris_jax.load(path)
    ref = AutoTokenizer.from_pretrained(str(path))
    texts = [*TEXTS, LONG]
    want = ref(texts, truncation=True, max_length=enc.max_seq_length)["input_ids"]
    got = enc.tokenizer.encode(texts).ids_per_text()
    assert got == want
    assert got[1][0] == ref.cls_token_id == 0 and got[1][-1] == ref.sep_token_id == 2
    assert enc.tokenizer.pad_token_id == ref.pad_token_id == mpnet.PADDING_IDX


HEADS = {  # all-mpnet-base-v2: mean + Normalize; multi-qa-mpnet-base-dot-v1: CLS
    "mean-normalize": dict(pooling="mean", normalize=True),
    "cls": dict(pooling="cls"),
    "max+dense": dict(pooling="max", dense=(24,)),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_encode_matches_sentence_transformers(tmp_path, name):
    backbone = make_mpnet_checkpoint(
        tmp_path / "backbone",
        hidden_size=48,
        num_attention_heads=4,
        intermediate_size=80,
        max_position_embeddings=160,
    )
    path, st = make_sentence_transformer(tmp_path / name, backbone_dir=backbone, **HEADS[name])
    enc = ferris_jax.load(path)
    assert enc.max_seq_length == st.max_seq_length == 158
    texts = [LONG, *TEXTS]  # padding-heavy batches, one past max_seq_length
    assert_embeddings_match(enc.encode(texts, batch_size=5), st.encode(texts, batch_size=5))


def test_checkpoint_with_mpnet_prefix_and_lm_head(tmp_path):
    """MPNetForMaskedLM names (`mpnet.` prefix, `lm_head.*`) load into the same encoder."""
    plain = make_mpnet_checkpoint(tmp_path / "plain")
    assert_masked_lm_loads_the_same(plain, tmp_path, TEXTS)


def test_every_config_field_reaches_the_model(tmp_path):
    """A changed layer_norm_eps or hidden_act must change the output (no silently dropped field)."""
    base = ferris_jax.load(make_mpnet_checkpoint(tmp_path / "a"))
    texts = TEXTS[:4]
    ref = base.encode(texts)
    for field, value in (("layer_norm_eps", 10.0), ("hidden_act", "relu")):
        enc = ferris_jax.load(make_mpnet_checkpoint(tmp_path / field, **{field: value}))
        assert np.abs(enc.encode(texts) - ref).max() > 1e-3, field


def test_too_few_bias_rows_is_a_clear_error(tmp_path):
    path = make_mpnet_checkpoint(tmp_path / "b")
    (path / "config.json").write_text(
        (path / "config.json")
        .read_text()
        .replace('"relative_attention_num_buckets": 32', '"relative_attention_num_buckets": 16')
    )
    with pytest.raises(ferris_jax.CheckpointError, match="relative_attention_num_buckets=16"):
        ferris_jax.load(path)
