"""Embedding quantization as sentence-transformers has it, and what a quantized search needs.

`quantize_embeddings` returns the same bytes as
`sentence_transformers.quantization.quantize_embeddings` for every precision: "float32",
"int8" / "uint8" (255 equal steps per dimension between `ranges[0]` and `ranges[1]`, taken from
`calibration_embeddings` or the embeddings themselves) and "binary" / "ubinary" (the sign bits,
packed 8 per byte; "binary" stores each byte minus 128 as int8).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
PRECISIONS: tuple[str, ...] = ("float32", "int8", "uint8", "binary", "ubinary")


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def quantization_ranges(
    embeddings: np.ndarray, calibration_embeddings: np.ndarray | None = None
) -> np.ndarray:
    """The int8/uint8 `ranges` `[2, D]` float32 (per-dimension minimum and maximum) of
    `calibration_embeddings`, or of `embeddings` where no calibration set is given."""
    data = np.asarray(embeddings if calibration_embeddings is None else calibration_embeddings)
    if data.ndim != 2 or data.shape[0] < (2 if calibration_embeddings is None else 1):
        raise ValueError(
            "int8/uint8 ranges need at least 2 embeddings [n, D]: pass `ranges` or "
            f"`calibration_embeddings` from a representative set (got shape {data.shape})"
        )
    return np.vstack((data.min(axis=0), data.max(axis=0))).astype(np.float32)


def _steps(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ranges = np.asarray(ranges).astype(np.float32, copy=False)
    if ranges.ndim != 2 or ranges.shape[0] != 2:
        raise ValueError(f"ranges must be [2, D] (minimum row, maximum row), got {ranges.shape}")
    steps = (ranges[1, :] - ranges[0, :]) / 255
    return ranges[0, :], np.where(steps == 0, 1, steps)


def quantize_embeddings(
    embeddings: np.ndarray,
    precision: Precision,
    ranges: np.ndarray | None = None,
    calibration_embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Quantize float embeddings `[n, D]` (or `[D]`) to `precision`, as sentence-transformers does.

    Args:
        embeddings: float embeddings (numpy, JAX or anything `np.asarray` reads).
        precision: "float32", "int8", "uint8", "binary" or "ubinary".
        ranges: int8/uint8 only: `[2, D]` per-dimension minimum and maximum.
        calibration_embeddings: int8/uint8 only: embeddings the ranges are taken from when
            `ranges` is None (default: `embeddings` themselves, which needs at least two rows).

    Returns:
        float32 `[n, D]`; int8 or uint8 `[n, D]`; binary (int8) or ubinary (uint8) `[n, ceil(D/8)]`.
    """
    _check_precision(precision)
    embeddings = np.asarray(embeddings)
    if embeddings.dtype in (np.uint8, np.int8):
        raise ValueError(
            "embeddings to quantize must be float, got int8/uint8 (quantized already?)"
        )
    if precision == "float32":
        return embeddings.astype(np.float32)
    if embeddings.ndim == 2 and embeddings.shape[0] == 0:
        dim = embeddings.shape[1] if precision.endswith("int8") else (embeddings.shape[1] + 7) // 8
        return np.zeros((0, dim), np.int8 if precision in ("int8", "binary") else np.uint8)
    if precision.endswith("int8"):
        if ranges is None:
            ranges = quantization_ranges(embeddings, calibration_embeddings)
        starts, steps = _steps(ranges)
        levels = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        return levels.astype(np.uint8) if precision == "uint8" else (levels - 128).astype(np.int8)
    bits = np.packbits(embeddings > 0, axis=-1)
    return bits if precision == "ubinary" else (bits - 128).astype(np.int8)


def dequantize_embeddings(quantized: np.ndarray, precision: str, ranges: np.ndarray) -> np.ndarray:
    """int8/uint8 embeddings back to float32 (each level's lower edge, as sentence-transformers
    rescores scalar-quantized candidates)."""
    if precision not in ("int8", "uint8"):
        raise ValueError(f"dequantize_embeddings takes int8 or uint8, got precision {precision!r}")
    starts, steps = _steps(ranges)
    levels = np.asarray(quantized).astype(np.float64) + (128 if precision == "int8" else 0)
    return (levels * steps + starts).astype(np.float32)


def packed_bits(packed: np.ndarray, precision: str) -> np.ndarray:
    """The sign bits of "binary" (int8, offset by -128) or "ubinary" embeddings as uint8 bytes."""
    packed = np.asarray(packed)
    if precision == "binary":
        return packed.view(np.uint8) ^ np.uint8(0x80)
    if precision == "ubinary":
        return packed.astype(np.uint8, copy=False)
    raise ValueError(f"packed_bits takes binary or ubinary, got precision {precision!r}")


def unpack_binary(packed: np.ndarray, precision: str, dim: int, signed: bool = True) -> np.ndarray:
    """Binary/ubinary embeddings `[n, ceil(dim/8)]` -> float32 `[n, dim]`: +-1 (`signed`) or 0/1
    (sentence-transformers' rescoring vectors)."""
    bits = np.unpackbits(packed_bits(packed, precision), axis=-1)[..., :dim].astype(np.float32)
    return 2 * bits - 1 if signed else bits


def int8_query_weights(
    ranges: np.ndarray, precision: str = "int8"
) -> tuple[np.ndarray, np.ndarray]:
    """`(scale [D], offset [D])` float32 with `q . dequantize(c) = (q * scale) . c + q . offset`
    for a float query `q` and an int8/uint8 corpus vector `c`: no corpus dequantization."""
    starts, steps = _steps(ranges)
    shift = 128 if precision == "int8" else 0
    return steps.astype(np.float32), (starts + shift * steps).astype(np.float32)
