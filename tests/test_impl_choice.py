"""One implementation-choice mechanism for LayerNorm, attention and matmuls: argument >
`use_impl` block > environment > "auto", per encoder through `load(..., impls=...)`, and part
of each compiled program's key, so changing the choice compiles a new program instead of being
ignored."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers.assertions import assert_embeddings_match
from helpers.texts import SENTENCES

import ferris_jax
from ferris_jax import ops


def _impls(enc) -> set[tuple[tuple[str, str], ...]]:
    return {impls for _, impls in enc.programs.keys}


def test_requests_follow_argument_block_environment_auto(monkeypatch):
    monkeypatch.delenv("FERRIS_JAX_ATTENTION", raising=False)
    monkeypatch.delenv("FERRIS_JAX_LAYER_NORM", raising=False)
    monkeypatch.delenv("FERRIS_JAX_MATMUL", raising=False)
    assert ops.requested_impls() == (
        ("attention", "auto"),
        ("layer_norm", "auto"),
        ("matmul", "auto"),
    )
    monkeypatch.setenv("FERRIS_JAX_ATTENTION", "jax")
    assert dict(ops.requested_impls())["attention"] == "jax"
    with ops.use_impl(attention="einsum", layer_norm="pallas_interpret"):
        assert ops.requested_impls() == (
            ("attention", "einsum"),
            ("layer_norm", "pallas_interpret"),
            ("matmul", "auto"),
        )
        with ops.use_impl(layer_norm=None):  # None leaves an op as the outer block set it
            assert dict(ops.requested_impls())["layer_norm"] == "pallas_interpret"
        assert ops.requested_impls({"attention": "jax"})[0] == ("attention", "jax")
    assert dict(ops.requested_impls())["attention"] == "jax"


def test_unknown_ops_and_implementations_are_refused(tiny_st):
    with pytest.raises(ValueError, match=r"attention impl 'flash' is not available.*einsum"):
        ferris_jax.load(tiny_st[0], impls={"attention": "flash"})
    with pytest.raises(ValueError, match=r"unknown op 'softmax'"):
        ops.use_impl(softmax="xla").__enter__()


def test_a_new_choice_compiles_a_new_program(tiny_st, monkeypatch):
    monkeypatch.delenv("FERRIS_JAX_ATTENTION", raising=False)
    monkeypatch.delenv("FERRIS_JAX_LAYER_NORM", raising=False)
    monkeypatch.delenv("FERRIS_JAX_MATMUL", raising=False)
    enc = ferris_jax.load(tiny_st[0], compilation_cache=False)
    enc.pack_length = None
    auto = enc.encode(SENTENCES)
    assert _impls(enc) == {(("attention", "auto"), ("layer_norm", "auto"), ("matmul", "auto"))}
    with ops.use_impl(attention="jax"):
        assert_embeddings_match(enc.encode(SENTENCES), auto)
    monkeypatch.setenv("FERRIS_JAX_LAYER_NORM", "pallas_interpret")  # set after the first call
    assert_embeddings_match(enc.encode(SENTENCES), auto)
    assert _impls(enc) == {
        (("attention", "auto"), ("layer_norm", "auto"), ("matmul", "auto")),
        (("attention", "jax"), ("layer_norm", "auto"), ("matmul", "auto")),
        (("attention", "auto"), ("layer_norm", "pallas_interpret"), ("matmul", "auto")),
    }
    assert len(enc.compiled_programs) < len(enc.programs)  # same shapes, other choices


def test_the_choice_reaches_the_lowered_program(tiny_st):
    enc = ferris_jax.load(tiny_st[0], compilation_cache=False)
    batch = enc.tokenize(SENTENCES[:2])
    args = (enc.params, batch.input_ids, batch.attention_mask)
    programs, applied = {}, {}
    for impl in ("einsum", "jax"):
        enc.impls = {"attention": impl}
        programs[impl] = enc.lower((2, 16)).as_text()
        applied[impl] = jax.jit(enc.apply).lower(*args).as_text()  # the pure function too
    assert programs["einsum"] != programs["jax"] and applied["einsum"] != applied["jax"]


def test_an_encoders_impls_win_over_blocks_and_environment(tiny_st, monkeypatch):
    monkeypatch.setenv("FERRIS_JAX_ATTENTION", "jax")
    enc = ferris_jax.load(tiny_st[0], compilation_cache=False, impls={"attention": "einsum"})
    with ops.use_impl(attention="cudnn", layer_norm="xla"):
        assert enc.requested_impls() == (
            ("attention", "einsum"),
            ("layer_norm", "xla"),
            ("matmul", "auto"),
        )
        vectors = enc.encode(SENTENCES[:3])
    assert _impls(enc) == {(("attention", "einsum"), ("layer_norm", "xla"), ("matmul", "auto"))}
    assert np.isfinite(vectors).all()


def test_the_old_layer_norm_only_form_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match="layer_norm=impl"):  # noqa: SIM117
        with ops.use_impl("pallas_interpret"):
            assert dict(ops.requested_impls())["layer_norm"] == "pallas_interpret"
