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


def assert_hidden_states_match(enc, path: Path, batch) -> None:
    """Our last hidden state for `batch` equal to transformers' (eager attention, and sdpa where
    the model has it) on the real positions: max abs <= 1e-4. Models with token types get
    random ones."""
    import torch
    from transformers import AutoModel

    ref = AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()
    inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    types = getattr(ref.config, "type_vocab_size", None)
    if types is not None:
        rng = np.random.default_rng(0)
        inputs["token_type_ids"] = rng.integers(0, types, batch.input_ids.shape).astype(np.int32)
    got = np.asarray(enc.token_embeddings(enc.params, *inputs.values()))
    assert np.isfinite(got).all()
    real = batch.attention_mask.astype(bool)  # padding positions are not defined outputs
    impls = ("eager", "sdpa") if type(ref)._supports_sdpa else ("eager",)
    for impl in impls:
        if impl != "eager":
            ref = AutoModel.from_pretrained(str(path), attn_implementation=impl).eval()
        with torch.no_grad():
            want = ref(**{k: torch.from_numpy(v).long() for k, v in inputs.items()})
        assert np.abs(got[real] - want.last_hidden_state.numpy()[real]).max() <= 1e-4, impl
