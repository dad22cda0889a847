"""What only MPNet has: relative-position buckets, position ids that skip the pad id (so a
tokenizer may allow more tokens than there are positions), two tokenizer post-processors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.assertions import assert_hidden_states_match
from helpers.checkpoints import make_mpnet_checkpoint
from helpers.texts import LONG, PARITY_TEXTS

import ferris_jax
from ferris_jax.models import mpnet
from ferris_jax.models.bert import position_ids


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


def test_max_tokens_leaves_room_for_the_position_offset(tmp_path):
    """A tokenizer allowing more tokens than positions: 2 of the 160 positions are unusable."""
    path = make_mpnet_checkpoint(
        tmp_path / "m", max_position_embeddings=160, tokenizer_max_length=512
    )
    enc = ferris_jax.load(path)
    assert enc.max_seq_length == 158
    batch = enc.tokenize([LONG, "hello"])
    assert batch.input_ids.shape[1] == 158
    assert_hidden_states_match(enc, path, batch)


@pytest.mark.parametrize("post_processor", ["template", "roberta"])
def test_tokenization_matches_transformers(tmp_path, post_processor):
    from transformers import AutoTokenizer

    path = make_mpnet_checkpoint(tmp_path / "t", post_processor=post_processor)
    enc = ferris_jax.load(path)
    ref = AutoTokenizer.from_pretrained(str(path))
    want = ref(PARITY_TEXTS, truncation=True, max_length=enc.max_seq_length)["input_ids"]
    got = enc.tokenizer.encode(PARITY_TEXTS).ids_per_text()
    assert got == want
    assert got[1][0] == ref.cls_token_id == 0 and got[1][-1] == ref.sep_token_id == 2
    assert enc.tokenizer.pad_token_id == ref.pad_token_id == mpnet.PADDING_IDX


def test_too_few_bias_rows_is_a_clear_error(tmp_path):
    path = make_mpnet_checkpoint(tmp_path / "b")
    (path / "config.json").write_text(
        (path / "config.json")
        .read_text()
        .replace('"relative_attention_num_buckets": 32', '"relative_attention_num_buckets": 16')
    )
    with pytest.raises(ferris_jax.CheckpointError, match="relative_attention_num_buckets=16"):
        ferris_jax.load(path)
