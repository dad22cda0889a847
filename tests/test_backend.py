"""Backend selection: preference order, overrides, the capability probe and its CPU fallback."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import numpy as np
import pytest

import ferris_jax
from ferris_jax.errors import BackendFallbackWarning
from ferris_jax.platforms import dtype_policy
from ferris_jax.runtime import backend
from ferris_jax.runtime.backend import ProbeResult

CPU = jax.devices("cpu")[0]


@dataclasses.dataclass
class FakeDevice:
    """Stands in for a device of a plugin this machine does not have."""

    platform: str
    device_kind: str = "fake"


@pytest.fixture(autouse=True)
def _fresh_process_state():
    """Each test sees a process that has not probed or warned yet."""
    backend._warned.clear()
    backend._probe_cache.clear()
    yield
    backend._warned.clear()
    backend._probe_cache.clear()


def _platforms(*names: str, kind: str = "fake") -> dict:
    return {n: [CPU if n == "cpu" else FakeDevice(n, kind)] for n in names}


@pytest.mark.parametrize(
    ("available", "chosen"),
    [
        (("cpu",), "cpu"),
        (("cpu", "cuda"), "cuda"),
        (("cpu", "tpu", "rocm"), "rocm"),
        (("cpu", "cuda", "mps"), "mps"),
        (("cpu", "METAL"), "METAL"),
        (("cpu", "mps", "metaljax"), "metaljax"),
        (("mtl", "cuda", "cpu"), "mtl"),
        (("tpu", "cpu"), "tpu"),
    ],
)
def test_preference_order(available, chosen):
    assert backend.choose_platform(_platforms(*available)) == chosen


def test_unknown_apple_plugin_ranks_before_cuda_and_unknown_others_after_cpu():
    available = {**_platforms("cpu", "cuda"), "applegpu": [FakeDevice("applegpu", "Apple M3 Max")]}
    assert backend.choose_platform(available) == "applegpu"
    available = {**_platforms("cpu"), "weird": [FakeDevice("weird", "Some NPU")]}
    assert backend.choose_platform(available) == "cpu"


def test_explicit_choice_and_unavailable_platform():
    available = _platforms("cpu", "cuda")
    assert backend.choose_platform(available, "cpu") == "cpu"
    assert backend.choose_platform(available, "gpu") == "cuda"
    # JAX's name of metaljax's platform picks its row (and jax-metal's where that is present).
    assert backend.choose_platform(_platforms("cpu", "metaljax"), "metal") == "metaljax"
    assert backend.choose_platform(_platforms("cpu", "METAL"), "metal") == "METAL"
    with pytest.raises(
        ValueError, match=r"backend 'mps' is not available here; available: cpu, cuda"
    ):
        backend.choose_platform(available, "mps")


def test_environment_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "cpu")
    chosen = backend.select_backend(platforms=_platforms("cpu", "cuda"), probe=_failing_probe)
    assert chosen.platform == "cpu" and chosen.requested == "cpu" and chosen.probe is None


def _failing_probe(device, dtype):
    return ProbeResult(device.platform, False, "layer_norm", "UNIMPLEMENTED: no kernel")


def test_failed_probe_falls_back_to_cpu_with_one_warning():
    available = _platforms("mps", "cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = backend.select_backend(platforms=available, probe=_failing_probe)
        second = backend.select_backend(platforms=available, probe=_failing_probe)
    assert first.platform == second.platform == "cpu" and first.device == CPU
    assert first.fallback_from == "mps" and first.probe.failed_op == "layer_norm"
    fallbacks = [w for w in caught if issubclass(w.category, BackendFallbackWarning)]
    assert len(fallbacks) == 1
    message = str(fallbacks[0].message)
    assert "mps" in message and "layer_norm" in message and "CPU" in message
    assert "\n" not in message


def test_passing_probe_keeps_the_accelerator():
    calls = []

    def ok(device, dtype):
        calls.append((device.platform, dtype))
        return ProbeResult(device.platform, True, max_abs_diff=1e-7)

    chosen = backend.select_backend(platforms=_platforms("cuda", "cpu"), dtype="bfloat16", probe=ok)
    assert chosen.platform == "cuda" and chosen.fallback_from is None
    assert calls == [("cuda", "bfloat16")]


def test_dtype_policy():
    assert dtype_policy("cuda").resolve("bfloat16", "cuda") == "bfloat16"
    assert dtype_policy("cpu").resolve("float16", "cpu") == "float16"
    for apple in ("METAL", "mtl"):
        with pytest.warns(BackendFallbackWarning, match=f"bfloat16 is not used on {apple}"):
            assert dtype_policy(apple).resolve("bfloat16", apple) == "float32"
    for apple in ("metaljax", "mps"):
        assert dtype_policy(apple).resolve("float16", apple) == "float16"


def test_real_probe_passes_on_cpu():
    result = backend.probe_device(CPU)
    assert result.ok and result.max_abs_diff == 0.0 and result.failed_op is None


def test_probe_names_the_first_failing_operation(monkeypatch):
    def broken(*args):
        raise RuntimeError("UNIMPLEMENTED: stablehlo.erf is not supported\nmore detail")

    cases = [
        ("matmul (dot_general)", lambda x: x @ x, (np.eye(2, dtype=np.float32),)),
        ("gelu", broken, (np.ones(2, np.float32),)),
        ("tiny encoder", broken, (np.ones(2, np.float32),)),
    ]
    monkeypatch.setattr(backend, "_probe_cases", lambda dtype: cases)
    result = backend.probe_device(CPU)
    assert not result.ok and result.failed_op == "gelu"
    assert result.error == "RuntimeError: UNIMPLEMENTED: stablehlo.erf is not supported"


def test_probe_detects_wrong_numbers(monkeypatch):
    cases = [("tiny encoder", lambda x: x * 2, (np.ones(3, np.float32),))]
    monkeypatch.setattr(backend, "_probe_cases", lambda dtype: cases)
    real_check = backend._check

    def skewed(fn, args, device, dtype):  # the "accelerator" computes something else
        return real_check(lambda x: fn(x) + 1.0, args, device, dtype) if device is not CPU else None

    monkeypatch.setattr(backend, "_check", skewed)
    result = backend.probe_device(FakeDevice("mps"))
    assert not result.ok and result.failed_op == "tiny encoder"


def test_load_falls_back_end_to_end(tiny_st, monkeypatch):
    path, reference = tiny_st
    monkeypatch.setattr(backend, "detect_platforms", lambda: _platforms("mps", "cpu"))
    monkeypatch.setattr(backend, "probe_device", _failing_probe)
    with pytest.warns(BackendFallbackWarning, match="mps cannot run the model"):
        enc = ferris_jax.load(path)
    assert enc.backend.platform == "cpu" and enc.backend.fallback_from == "mps"
    info = enc.info()
    assert info["platform"] == "cpu" and info["fallback_from"] == "mps"
    assert "layer_norm" in info["probe"]
    got = enc.encode(["hello world"])
    want = reference.encode(["hello world"])
    assert np.abs(got - want).max() <= 1e-5


def test_load_rejects_an_unavailable_backend(tiny_st):
    with pytest.raises(ValueError, match="backend 'cuda' is not available here"):
        ferris_jax.load(tiny_st[0], backend="cuda")


def test_dtype_policy_applies_before_the_probe(tiny_st, monkeypatch):
    seen = []

    def ok(device, dtype):
        seen.append(dtype)
        return ProbeResult("METAL", True)

    # "METAL" is served by the CPU device here: only the choice and the probe are faked.
    monkeypatch.setattr(backend, "detect_platforms", lambda: {"METAL": [CPU], "cpu": [CPU]})
    monkeypatch.setattr(backend, "probe_device", ok)
    with pytest.warns(BackendFallbackWarning, match="bfloat16 is not used on METAL"):
        enc = ferris_jax.load(tiny_st[0], dtype="bfloat16", compilation_cache=False)
    assert seen == ["float32"]
    assert enc.backend.platform == "METAL" and enc.checkpoint.dtype == jax.numpy.float32
