"""Parity assertions shared by the test files, each with its tolerance written once."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def assert_embeddings_match(got: np.ndarray, want: np.ndarray) -> None:
    """Float32 sentence embeddings equal to the reference's: cosine >= 0.99999, max abs <= 1e-5."""
    assert got.shape == want.shape and got.dtype == np.float32
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.99999
    assert np.abs(got - want).max() <= 1e-5


def assert_masked_lm_loads_the_same(plain: Path, tmp_path: Path, texts: list[str]) -> None:
    """The same weights saved as transformers' *ForMaskedLM (family prefix, LM head) load into
    the same encoder: identical vectors."""
    from transformers import AutoModelForMaskedLM

    import ferris_jax

    prefixed = tmp_path / "mlm"
    AutoModelForMaskedLM.from_pretrained(str(plain)).save_pretrained(
        str(prefixed), safe_serialization=True
    )
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (prefixed / f).write_bytes((plain / f).read_bytes())
    np.testing.assert_array_equal(
        ferris_jax.load(prefixed).encode(texts), ferris_jax.load(plain).encode(texts)
    )
