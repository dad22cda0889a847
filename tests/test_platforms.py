"""Per-platform defaults come from one table, keyed by `platform_of`: a CUDA device (which JAX
reports as platform "gpu") gets the CUDA row, not the CPU's."""

from __future__ import annotations

import dataclasses
import types

import jax
import pytest

import ferris_jax
from ferris_jax.encoder import Encoder
from ferris_jax.loading import load_checkpoint
from ferris_jax.platforms import (
    PLATFORM_DEFAULTS,
    UNKNOWN_PLATFORM,
    defaults_for,
    dtype_policy,
    platform_of,
)


def _fake_gpu(version: str) -> types.SimpleNamespace:
    """A device as JAX describes a CUDA or ROCm GPU: platform "gpu", the runtime in the client."""
    return types.SimpleNamespace(
        platform="gpu", client=types.SimpleNamespace(platform_version=version), id=0
    )


def test_every_table_choice_is_an_implementation_the_op_has():
    from ferris_jax.ops.impl import IMPLS

    for platform, row in [*PLATFORM_DEFAULTS.items(), ("unknown", UNKNOWN_PLATFORM)]:
        for op, impls in IMPLS.items():
            assert getattr(row, op) in impls[1:], (platform, op)  # a concrete one, not "auto"
        assert row.pack_length is None or row.pack_length >= 16, platform


def test_platform_of_names_the_gpu_runtime():
    assert platform_of(_fake_gpu("cuda 12080")) == "cuda"
    assert platform_of(_fake_gpu("rocm 6.2")) == "rocm"
    assert platform_of(jax.devices("cpu")[0]) == "cpu"


def test_unknown_platforms_get_the_portable_defaults():
    assert defaults_for("some_new_plugin") is UNKNOWN_PLATFORM
    assert UNKNOWN_PLATFORM.layer_norm == "xla" and UNKNOWN_PLATFORM.attention == "einsum"
    assert dtype_policy("METAL").supported == ("float32",)
    assert not defaults_for("METAL").compilation_cache and defaults_for("mps").compilation_cache


@pytest.mark.parametrize("floor", ["table", 0])
def test_a_cuda_device_gets_the_cuda_defaults(tiny_st, monkeypatch, floor):
    cuda = PLATFORM_DEFAULTS["cuda"]
    if floor == 0:  # the tiny model is under the table's parameter floor: lift the floor
        monkeypatch.setitem(PLATFORM_DEFAULTS, "cuda", dataclasses.replace(cuda, pack_min_params=0))
    checkpoint = load_checkpoint(tiny_st[0])
    enc = Encoder(checkpoint, device=_fake_gpu("cuda 12080"))
    n_params = sum(x.size for x in jax.tree.leaves(enc.params))
    assert enc.backend.platform == "cuda"
    assert (
        enc.max_batch_tokens == cuda.max_batch_tokens != PLATFORM_DEFAULTS["cpu"].max_batch_tokens
    )
    if floor == 0:
        assert enc.pack_length == cuda.pack_length
    else:
        assert n_params < cuda.pack_min_params and enc.pack_length is None
    assert ferris_jax.ops.resolve_impl("auto", platform=enc.backend.platform) == cuda.layer_norm


def test_the_cpu_gets_the_cpu_defaults(tiny_st):
    enc = ferris_jax.load(tiny_st[0], compilation_cache=False)
    cpu = PLATFORM_DEFAULTS["cpu"]
    assert (enc.pack_length, enc.max_batch_tokens) == (cpu.pack_length, cpu.max_batch_tokens)
