"""Packed batches: several texts per row, each seeing only itself, give every text the vector
it gets alone (and sentence-transformers' vector)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.assertions import assert_embeddings_match
from helpers.checkpoints import make_sentence_transformer
from helpers.families import FAMILY_TABLE
from helpers.texts import SENTENCES, WORDS, varied_texts

import ferris_jax
from ferris_jax.batching import Batch, BucketPolicy, PackedBatch, pad_packed, plan_packed
from ferris_jax.tokenize import Tokenized


def _texts(n: int = 40, seed: int = 0) -> list[str]:
    """Lengths from empty to past max_seq_length, so rows mix long and short texts."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([0, 1, 2, 3, 5, 8, 13, 30, 60, 200], size=n)
    return [" ".join(rng.choice(WORDS, size=k)) for k in sizes]


@pytest.mark.parametrize("min_length", [1, 16, 64, 1000])
@pytest.mark.parametrize("budget", [None, 256])
@pytest.mark.parametrize("segment_tokens", [12, 2])
def test_plan_packed_places_every_text_once_within_its_row(min_length, budget, segment_tokens):
    rng = np.random.default_rng(min_length)
    lengths = np.concatenate([rng.integers(0, 129, 300), [0, 1, 2, 128, 128]])
    policy = BucketPolicy.for_limits(
        16, 128, max_batch_tokens=budget, segment_tokens=segment_tokens
    )
    batches = plan_packed(lengths, policy, min_length)
    placed = np.concatenate([b.texts for b in batches])
    assert sorted(placed.tolist()) == list(range(len(lengths)))
    assert any(isinstance(b, PackedBatch) for b in batches)
    for b in batches:
        B, L = b.shape[:2]
        assert L in policy.seq_lengths and lengths[b.texts].max() <= L
        assert B in policy.batch_sizes and max(budget or B * L, L) >= B * L
        if isinstance(b, Batch):  # no row would have held a second text
            assert len(b.texts) <= B and policy.shape_for(1, lengths[b.texts].max())[1] == L
            continue
        K = b.shape[2]
        assert policy.segments_for(L) == K and b.segment.min() >= 1 and b.segment.max() <= K
        assert b.row.max() < B and b.segment.max() >= 2
        for r in np.unique(b.row):
            mine = b.row == r
            sizes = np.maximum(lengths[b.texts[mine]], 1)
            order = np.argsort(b.offset[mine])
            # back to back from column 0, numbered 1..k, inside the row
            np.testing.assert_array_equal(
                b.offset[mine][order], np.cumsum(sizes[order]) - sizes[order]
            )
            assert sorted(b.segment[mine].tolist()) == list(range(1, mine.sum() + 1))
            assert sizes.sum() <= L


def test_a_row_fills_with_very_short_texts_when_segments_are_dense(tiny_st):
    lengths = np.full(100, 2)  # empty strings: [CLS] [SEP]
    sparse = plan_packed(lengths, BucketPolicy.for_limits(32, 256), 64)
    dense = plan_packed(lengths, BucketPolicy.for_limits(32, 256, segment_tokens=2), 64)
    assert sparse[0].shape == (32, 64, 5)  # five texts a row: 10 of 64 tokens used
    assert dense[0].shape[1:] == (64, 32) and np.bincount(dense[0].row).max() == 32
    enc = ferris_jax.load(tiny_st[0])
    texts = ["", "a", "to be", "or not", "", "x y z", *WORDS[:40]]
    enc.pack_length, enc.pack_segment_tokens = None, 12
    alone = enc.encode(texts)
    enc.pack_length, enc.pack_segment_tokens = 64, 2
    packed = enc.encode(texts)
    assert any(len(shape) == 3 and shape[2] == 32 for shape in enc.compiled_programs)
    assert_embeddings_match(packed, alone)


def test_a_single_text_is_not_packed():
    policy = BucketPolicy.for_limits(32, 256)
    (batch,) = plan_packed(np.array([9]), policy, 64)
    assert isinstance(batch, Batch) and batch.shape == (1, 16)
    (batch,) = plan_packed(np.array([9, 5, 3]), policy, 64)
    assert isinstance(batch, PackedBatch) and batch.shape == (2, 24, 2)  # 17 tokens: bucket 24


def test_pad_packed_puts_each_text_at_its_offset(tiny_st):
    enc = ferris_jax.load(tiny_st[0])
    tok = Tokenized(
        ids=np.arange(100, 109, dtype=np.int32),
        type_ids=np.array([0, 0, 0, 1, 1, 0, 0, 0, 0], np.int32),
        starts=np.array([0, 3, 5]),
        lengths=np.array([3, 2, 4], np.int32),
        truncated=np.zeros(3, bool),
    )
    (batch,) = plan_packed(tok.lengths, BucketPolicy.for_limits(2, 24, min_seq_length=24), 24)
    assert batch.shape == (2, 24, 2)
    b = pad_packed(tok, batch, enc.tokenizer.pad_token_id)
    pad = [enc.tokenizer.pad_token_id]
    # row 0: the longest text (2), then the shortest (1); row 1: text 0
    np.testing.assert_array_equal(
        b.input_ids, [[105, 106, 107, 108, 103, 104, *pad * 18], [100, 101, 102, *pad * 21]]
    )
    np.testing.assert_array_equal(b.segment_ids[0, :7], [1, 1, 1, 1, 2, 2, 0])
    np.testing.assert_array_equal(b.segment_ids[1, :4], [1, 1, 1, 0])
    np.testing.assert_array_equal(b.positions[0, :7], [0, 1, 2, 3, 0, 1, 0])
    np.testing.assert_array_equal(b.token_type_ids[0, :7], [0, 0, 0, 0, 1, 1, 0])
    assert not b.segment_ids[:, 7:].any() and not b.positions[1, 3:].any()


# sentence-transformers heads of the BERT parity tests, but max pooling (never packed)
HEADS = {name: head for name, head in FAMILY_TABLE["bert"].heads.items() if "max" not in name}


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("include_prompt", [True, False])
def test_packed_encode_matches_sentence_transformers(tmp_path, name, include_prompt):
    prompts = {"query": "query: "}
    path, st = make_sentence_transformer(
        tmp_path / name, include_prompt=include_prompt, prompts=prompts, **HEADS[name]
    )
    enc = ferris_jax.load(path)
    enc.pack_length = 64
    texts = SENTENCES + _texts(20)
    assert_embeddings_match(enc.encode(texts, batch_size=4), st.encode(texts, batch_size=4))
    assert_embeddings_match(enc.encode_query(texts), st.encode_query(texts))
    assert any(len(shape) == 3 for shape in enc.compiled_programs)  # it did pack


@pytest.mark.parametrize("family", sorted(FAMILY_TABLE))
def test_every_family_packed_equals_one_text_per_row(tmp_path, family):
    """Positions restart and attention stays inside each text, for every family (absolute,
    RoBERTa-style, relative-bias and rotary positions, sliding windows)."""
    path = FAMILY_TABLE[family].build(tmp_path / family)
    enc = ferris_jax.load(path, max_seq_length=48, compilation_cache=False)
    # literal pad tokens inside texts: RoBERTa-style positions skip them
    texts = [*_texts(60, seed=1), "a <pad> inside [PAD] the text", "<pad> [PAD] first"]
    enc.pack_length = None
    alone = enc.encode(texts, batch_size=8)
    enc.pack_length = 48
    packed = enc.encode(texts, batch_size=8)
    assert any(len(shape) == 3 for shape in enc.compiled_programs)
    assert_embeddings_match(packed, alone)


def test_packing_is_on_by_default_where_measured_faster(tiny_st):
    from ferris_jax.platforms import PLATFORM_DEFAULTS

    enc = ferris_jax.load(tiny_st[0], compilation_cache=False)
    assert enc.pack_length == PLATFORM_DEFAULTS["cpu"].pack_length and enc.can_pack
    # On the CPU a 64-token row may hold 32 texts (one per 2 tokens, as short as a text gets).
    assert enc.pack_segment_tokens == 2 and enc.bucket_policy(32).segments_for(64) == 32


def test_max_pooling_keeps_one_text_per_row(tmp_path):
    path, st = make_sentence_transformer(tmp_path / "max", pooling="max")
    enc = ferris_jax.load(path)
    enc.pack_length = 64
    assert not enc.can_pack
    assert_embeddings_match(enc.encode(SENTENCES), st.encode(SENTENCES))
    assert all(len(shape) == 2 for shape in enc.compiled_programs)


def test_precompile_covers_packed_shapes(tiny_st):
    enc = ferris_jax.load(tiny_st[0], compilation_cache=False)
    enc.pack_length = 32
    enc.precompile(batch_size=4)
    policy = enc.bucket_policy(4)
    packed = [(4, L, policy.segments_for(L)) for L in policy.seq_lengths if L >= 32]
    padded = [(4, L) for L in policy.seq_lengths]
    assert enc.compiled_programs == sorted(packed + padded)
    enc.encode(_texts(30), batch_size=4)  # full batches reuse them; only partial ones add
    added = set(enc.compiled_programs) - set(packed + padded)
    assert all(s[0] < 4 for s in added)


@pytest.mark.slow
def test_real_minilm_packed_matches_sentence_transformers(minilm, minilm_path):
    from sentence_transformers import SentenceTransformer

    texts = varied_texts(300, seed=3)
    want = SentenceTransformer(str(minilm_path), device="cpu").encode(texts, batch_size=32)
    default, minilm.pack_length = minilm.pack_length, 64
    try:
        got = minilm.encode(texts)
        assert any(len(shape) == 3 for shape in minilm.compiled_programs)
    finally:
        minilm.pack_length = default
    assert_embeddings_match(got, want)


def test_tokenized_take_and_concat_round_trip(tiny_st):
    enc = ferris_jax.load(tiny_st[0], compilation_cache=False)
    tok = enc.tokenizer.encode(_texts(30))
    picked = np.array([5, 0, 29, 7])
    part = tok.take(picked)
    assert part.ids_per_text() == [tok.ids_per_text()[i] for i in picked]
    joined = type(tok).concat([tok.take(np.arange(10)), tok.take(np.arange(10, 30))])
    assert joined.ids_per_text() == tok.ids_per_text()
    assert joined.type_ids_per_text() == tok.type_ids_per_text()


@pytest.mark.parametrize("pack_length", [None, 32])
def test_jobs_of_many_chunks_carry_partial_batches_over(tiny_st, pack_length):
    """Past one chunk of texts, a chunk's partial last batch joins the next chunk: every text
    still gets its own vector, and only the job's last batch has fewer rows than allowed."""
    enc = ferris_jax.load(tiny_st[0], compilation_cache=False)
    enc.pack_length = pack_length
    texts = _texts(2600, seed=4)
    want = np.concatenate(
        [enc.encode(texts[i : i + 500], batch_size=16) for i in range(0, 2600, 500)]
    )
    shapes = []
    got = enc.encode(texts, batch_size=16, on_batch=lambda batch: shapes.append(batch.shape))
    assert_embeddings_match(got, want)
    policy = enc.bucket_policy(16)
    assert sum(s[0] < policy.rows_for(s[1]) for s in shapes) <= 1
