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


def _fake_gpu(version: str, platform: str = "gpu") -> types.SimpleNamespace:
    """A device as JAX describes a CUDA or ROCm GPU: platform "gpu", the runtime in the client
    (or another plugin's device: its JAX platform name and client version)."""
    return types.SimpleNamespace(
        platform=platform, client=types.SimpleNamespace(platform_version=version), id=0
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


# JAX's platform name of each Apple plugin's device (and its client's version) -> the row.
# metaljax 0.11.9's library names its platform "metal"; its README calls the device METAL, so
# "METAL" with a metaljax version, or with metaljax installed, is metaljax's too.
APPLE_DEVICES = [
    ("metal", "", None, "metaljax"),
    ("METAL", "metaljax 0.11.9", None, "metaljax"),
    ("METAL", "", "metaljax", "metaljax"),
    ("METAL", "", "jax-metal", "METAL"),
    ("METAL", "", None, "METAL"),
    ("mps", "0.1.0", None, "mps"),
    ("mtl", "", None, "mtl"),
]


@pytest.mark.parametrize(("jax_name", "version", "installed", "row"), APPLE_DEVICES)
def test_each_apple_platform_name_maps_to_its_row(monkeypatch, jax_name, version, installed, row):
    from ferris_jax import platforms
    from ferris_jax.ops.impl import auto_impl

    monkeypatch.setattr(platforms, "installed_metal_plugin", lambda: installed)
    assert platform_of(_fake_gpu(version, jax_name)) == row
    assert row in PLATFORM_DEFAULTS and row in platforms.APPLE_PLATFORMS
    if jax_name == "METAL" and version:  # the version decides; the lowering name needs the package
        return
    # The per-op choice made when a program is lowered for JAX's name is the row's.
    for op in ("layer_norm", "attention", "matmul"):
        assert auto_impl(op, jax_name) == getattr(PLATFORM_DEFAULTS[row], op)


def test_every_apple_row_and_jax_name_is_known_to_selection():
    from ferris_jax import platforms
    from ferris_jax.runtime import backend

    assert set(platforms.APPLE_PLATFORMS) <= set(PLATFORM_DEFAULTS)
    assert set(platforms.APPLE_JAX_PLATFORMS) <= set(platforms.lowering_platforms())
    assert set(platforms.APPLE_JAX_PLATFORMS) <= set(backend._JAX_NAMES)
    assert backend.PREFERENCE[: len(platforms.APPLE_PLATFORMS)] == platforms.APPLE_PLATFORMS


def test_apple_rows():
    """What each Apple plugin runs: the current plugins every dtype and the attention they fuse,
    without JAX's persistent cache (they serialize no executables); jax-metal float32 only."""
    for name in ("metaljax", "mps"):
        row = defaults_for(name)
        assert row.dtypes.supported == ("float32", "bfloat16", "float16"), name
        assert (row.attention, row.layer_norm, row.compilation_cache) == ("jax", "xla", False)
    for name in ("METAL", "mtl"):
        row = defaults_for(name)
        assert row.dtypes.supported == ("float32",) and row.attention == "einsum", name
        assert row.layer_norm == "xla"
    assert not defaults_for("METAL").compilation_cache


def test_installed_metal_plugin_is_none_without_either_package():
    from ferris_jax import platforms

    assert platforms.installed_metal_plugin() is None  # neither installs off a Mac
