"""`quantize_embeddings` is sentence-transformers' own, bit for bit, on real MiniLM embeddings;
the helpers the device search uses invert it as sentence-transformers' rescoring does."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.embeddings import sts_embeddings

from ferris_jax.quantization import (
    PRECISIONS,
    dequantize_embeddings,
    int8_query_weights,
    quantization_ranges,
    quantize_embeddings,
    unpack_binary,
)

st_quantization = pytest.importorskip("sentence_transformers.util.quantization")


@pytest.fixture(scope="module")
def embeddings(minilm):
    return sts_embeddings(minilm, "test")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_equal_to_sentence_transformers(embeddings, precision):
    calibration = embeddings[::3]
    ranges = np.vstack([embeddings.min(0) * 0.5, embeddings.max(0) * 0.5])  # clips some values
    for kwargs in ({}, {"ranges": ranges}, {"calibration_embeddings": calibration}):
        got = quantize_embeddings(embeddings[1::3], precision, **kwargs)
        want = st_quantization.quantize_embeddings(embeddings[1::3], precision, **kwargs)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_odd_dimensions_and_empty_input(embeddings):
    odd = embeddings[:50, :100]
    for precision in PRECISIONS:
        want = st_quantization.quantize_embeddings(odd, precision)
        np.testing.assert_array_equal(quantize_embeddings(odd, precision), want)
        empty = quantize_embeddings(odd[:0], precision)
        want_empty = st_quantization.quantize_embeddings(odd[:0], precision)
        assert empty.shape == want_empty.shape and empty.dtype == want_empty.dtype


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_dequantize_and_query_weights(embeddings, precision):
    ranges = quantization_ranges(embeddings)
    quantized = quantize_embeddings(embeddings, precision, ranges=ranges)
    restored = dequantize_embeddings(quantized, precision, ranges)
    want = st_quantization._dequantize_embeddings(quantized.astype(int), precision, ranges)
    np.testing.assert_allclose(restored, want, rtol=1e-6, atol=1e-7)
    steps = (ranges[1] - ranges[0]) / 255
    assert np.all(embeddings - restored >= -1e-6) and np.all(embeddings - restored <= steps + 1e-6)
    scale, offset = int8_query_weights(ranges, precision)
    queries = embeddings[:7]
    got = (queries * scale) @ quantized.T.astype(np.float64) + (queries @ offset)[:, None]
    np.testing.assert_allclose(got, queries @ restored.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_unpack_binary(embeddings, precision):
    packed = quantize_embeddings(embeddings[:, :100], precision)
    np.testing.assert_array_equal(
        unpack_binary(packed, precision, 100, signed=False), embeddings[:, :100] > 0
    )
    np.testing.assert_array_equal(
        unpack_binary(packed, precision, 100), np.where(embeddings[:, :100] > 0, 1, -1)
    )


def test_bad_input_names_the_problem(embeddings):
    with pytest.raises(ValueError, match="precision must be one of"):
        quantize_embeddings(embeddings, "int4")
    with pytest.raises(ValueError, match="must be float"):
        quantize_embeddings(quantize_embeddings(embeddings, "int8"), "int8")
    with pytest.raises(ValueError, match="calibration_embeddings"):
        quantize_embeddings(embeddings[:1], "int8")
    with pytest.raises(ValueError, match=r"ranges must be \[2, D\]"):
        quantize_embeddings(embeddings, "int8", ranges=np.zeros((3, 384)))
