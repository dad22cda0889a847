"""The Metal-safe guarantee, testable without a Mac: the encoder program lowered on the Metal
path (float32, LayerNorm through the default lowering) contains nothing jax-metal rejects."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from helpers.families import FAMILY_TABLE

import ferris_jax
from ferris_jax.runtime.metal import metal_unsafe_ops


@pytest.mark.parametrize("family", sorted(FAMILY_TABLE))
def test_encoder_lowers_to_metal_safe_stablehlo(tmp_path, family):
    path = FAMILY_TABLE[family].build(tmp_path / family)
    enc = ferris_jax.load(path, backend="cpu", dtype="float32")
    for shape in ((1, 16), (8, 48)):
        text = enc.lower(shape).as_text()
        assert "stablehlo.dot_general" in text  # the scan sees the real program
        assert metal_unsafe_ops(text) == [], f"{family} {shape}"


def test_bfloat16_programs_are_flagged_on_the_metal_path(tmp_path):
    path = FAMILY_TABLE["bert"].build(tmp_path / "bf16")
    enc = ferris_jax.load(path, backend="cpu", dtype="bfloat16")
    text = enc.lower((2, 16)).as_text()
    assert metal_unsafe_ops(text) == ["bfloat16 type"]
    assert metal_unsafe_ops(text, allow_bf16=True) == []


def _lowered(fn, *args) -> str:
    return jax.jit(fn).lower(*args).as_text()


def _with_x64(make):
    jax.config.update("jax_enable_x64", True)
    try:
        return make()
    finally:
        jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize(
    ("expected", "program"),
    [
        (
            "float64 type",
            lambda: _with_x64(lambda: _lowered(lambda x: x * 2, jnp.ones(3, jnp.float64))),
        ),
        ("complex type", lambda: _lowered(lambda x: x * 1j, jnp.ones(3, jnp.float32))),
        (
            "custom call",
            lambda: _lowered(
                lambda x: jax.pure_callback(
                    lambda a: a, jax.ShapeDtypeStruct((3,), jnp.float32), x
                ),
                jnp.ones(3, jnp.float32),
            ),
        ),
        ("sort with a comparator", lambda: _lowered(jnp.sort, jnp.ones(3, jnp.float32))),
        (
            "random number op",
            lambda: _lowered(lambda k: jax.random.bits(k, (3,)), jax.random.key(0, impl="rbg")),
        ),
        (
            "dot_general with 2 contracting dimensions",
            lambda: _lowered(
                lambda a, b: jnp.einsum("ijk,ljk->il", a, b),
                jnp.ones((2, 3, 4)),
                jnp.ones((5, 3, 4)),
            ),
        ),
    ],
)
def test_scan_flags_each_kind_of_rejected_op(expected, program):
    assert expected in metal_unsafe_ops(program())


def test_every_registered_family_is_scanned():
    from ferris_jax.models import FAMILIES

    assert set(FAMILY_TABLE) == set(FAMILIES)
