"""`encode_stream` embeds an iterable of any length window by window, in input order, equal to
`encode` over the same texts, pulling texts lazily so host memory stays bounded; `encode`'s
`convert_to_tensor` returns the same vectors as a device array."""

from __future__ import annotations

import itertools
import warnings

import jax
import numpy as np
import pytest
from helpers.data import sts_sentences
from helpers.texts import varied_texts

import ferris_jax
from ferris_jax import pipeline

# Batches are composed differently in a stream (windows are sorted separately), so a text's
# vector may differ in the last float32 bits.
ATOL = 1e-6


@pytest.fixture(scope="module")
def enc(tiny_st):
    return ferris_jax.load(tiny_st[0], compilation_cache=False)


def test_chunks_concatenate_to_encode_on_real_text(minilm):
    texts = sts_sentences("dev")[:700]
    want = minilm.encode(texts, batch_size=64)
    chunks = list(minilm.encode_stream((t for t in texts), batch_size=64, chunk_size=256))
    assert [len(c) for c in chunks] == [256, 256, 188]
    assert all(c.dtype == np.float32 for c in chunks)
    np.testing.assert_allclose(np.concatenate(chunks), want, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "options",
    [
        {"normalize_embeddings": True},
        {"truncate_dim": 8},
        {"prompt": "query: "},
        {"batch_size": 1},
    ],
)
def test_options_mean_what_they_mean_in_encode(enc, options):
    texts = varied_texts(90, seed=3)
    want = enc.encode(texts, **options)
    got = np.concatenate(list(enc.encode_stream(texts, chunk_size=40, **options)))
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_texts_are_pulled_lazily_a_window_ahead_at_most(enc):
    pulled = []

    def source():
        for i in itertools.count():
            pulled.append(i)
            yield f"text number {i} about {i % 7} things"

    stream = enc.encode_stream(source(), chunk_size=50)
    first = next(stream)
    assert first.shape == (50, enc.embedding_dimension)
    # Windows still in flight (a batch each at least), the one tokenized ahead and the one
    # being pulled: a bound of the pipeline's, never the whole (endless) input.
    ahead = pipeline.MAX_IN_FLIGHT + 3
    assert len(pulled) <= ahead * 50
    for _ in range(20):
        next(stream)
    assert len(pulled) <= (21 + ahead) * 50
    stream.close()


def test_an_empty_iterable_yields_nothing(enc):
    assert list(enc.encode_stream(iter([]))) == []


def test_bad_input_names_the_text_across_windows(enc):
    texts = ["fine text"] * 25 + [b"bytes"] + ["fine text"] * 5
    with pytest.raises(TypeError, match=r"texts\[25\] is bytes"):
        list(enc.encode_stream(texts, chunk_size=10))


@pytest.mark.parametrize("texts", ["one text", {"a", "b"}, None, 3])
def test_what_is_not_an_ordered_iterable_of_texts_is_refused_at_the_call(enc, texts):
    with pytest.raises(TypeError, match="iterable of strings"):
        enc.encode_stream(texts)


@pytest.mark.parametrize("option", ["chunk_size", "batch_size"])
def test_bad_sizes_are_refused_at_the_call(enc, option):
    with pytest.raises((TypeError, ValueError), match=option):
        enc.encode_stream(["a"], **{option: 0})


def test_truncation_is_reported_once_with_the_first_index_in_the_stream(enc):
    long = " ".join(["word"] * (enc.max_seq_length + 20))
    texts = ["short"] * 30 + [long, "short", long]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(enc.encode_stream(texts, chunk_size=8))
    messages = [str(w.message) for w in caught if "max_seq_length" in str(w.message)]
    assert len(messages) == 1
    assert messages[0].startswith("2 of 33 texts") and "first: index 30" in messages[0]


def test_a_stream_of_many_windows_stays_on_the_bucket_grid(tiny_st):
    enc = ferris_jax.load(tiny_st[0], compilation_cache=False)
    policy = enc.bucket_policy(16)
    list(enc.encode_stream(varied_texts(600, seed=5), batch_size=16, chunk_size=40))
    # (B, L) shapes on the policy's grid, plus at most one packed shape per length.
    assert len(enc.compiled_programs) <= policy.max_programs + len(policy.seq_lengths)
    for shape in enc.compiled_programs:
        assert shape[0] in policy.batch_sizes and shape[1] in policy.seq_lengths


def test_convert_to_tensor_gives_the_same_vectors_on_the_device(enc):
    texts = varied_texts(70, seed=8)
    want = enc.encode(texts, truncate_dim=10, normalize_embeddings=True)
    got = enc.encode(texts, truncate_dim=10, normalize_embeddings=True, convert_to_tensor=True)
    assert isinstance(got, jax.Array) and got.dtype == np.float32
    assert got.devices() == {enc.device}
    # The normalization runs in XLA rather than numpy: equal up to rounding.
    np.testing.assert_allclose(np.asarray(got), want, atol=ATOL, rtol=0)
    single = enc.encode("one text", convert_to_tensor=True)
    assert isinstance(single, jax.Array) and single.shape == (enc.embedding_dimension,)
