"""Emulate an AVX2-only x86 CPU on a wider one, for both libraries in one process.

Each CPU library picks its kernels at run time from what the CPU reports, and each has its own
switch:
- XLA:CPU's own generated code (fusions: softmax, LayerNorm, GELU): `--xla_cpu_max_isa=AVX2`.
- XLA:CPU's matmuls: jaxlib 0.10 hands dots to YNNPACK (`__ynn_fusion` in the optimized HLO),
  which asks the cpuinfo library compiled into `libjax_common.so` and has no switch. We
  initialise that copy of cpuinfo and clear its AVX-512/AMX flags before JAX's first program,
  through the library's own symbol table (`nm`), so YNNPACK takes its AVX2 kernels.
- torch: `ATEN_CPU_CAPABILITY=avx2` (ATen's kernels), `ONEDNN_MAX_CPU_ISA=AVX2` (oneDNN),
  `MKL_ENABLE_INSTRUCTIONS=AVX2` (MKL's sgemm).

`limit("avx2")` must run before torch is imported and before JAX creates its CPU client.
`check()` measures a float32 matmul in both libraries, to show the limit took.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from pathlib import Path

# Byte offsets in cpuinfo's `struct cpuinfo_x86_isa` (x86-64 layout of the jaxlib 0.10 copy):
# avx512f .. avx10_2, then amx_bf16, amx_tile, amx_int8, amx_fp16. Checked against
# /proc/cpuinfo by `_check_layout` before anything is written.
_AVX2_FIELD = 28
_WIDER_FIELDS = range(29, 53)

TORCH_AVX2_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


def limit(isa: str) -> dict:
    """Limit JAX and torch to `isa` ("native": nothing, "avx2"); returns what was set."""
    if isa == "native":
        return {"max_isa": "native"}
    if isa != "avx2":
        raise ValueError(f"max isa {isa!r}: expected 'native' or 'avx2'")
    if "torch" in sys.modules:
        raise RuntimeError("cpu_isa.limit must run before torch is imported")
    os.environ.update(TORCH_AVX2_ENV)
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_max_isa=AVX2".strip()
    cleared = _clear_ynnpack_wide_isa()
    return {"max_isa": "avx2", "env": dict(TORCH_AVX2_ENV), "xla_flag": "--xla_cpu_max_isa=AVX2",
            "ynnpack_cpuinfo_fields_cleared": cleared}  # fmt: skip


def _clear_ynnpack_wide_isa() -> int:
    import jax  # noqa: F401  (loads libjax_common.so; creates no backend yet)
    import jaxlib

    lib = Path(jaxlib.__file__).parent / "libjax_common.so"
    symbols = {}
    for line in subprocess.run(
        ["nm", str(lib)], capture_output=True, text=True
    ).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] in ("cpuinfo_isa", "cpuinfo_initialize"):
            symbols[parts[2]] = int(parts[0], 16)
    if set(symbols) != {"cpuinfo_isa", "cpuinfo_initialize"}:
        raise RuntimeError(f"{lib}: cpuinfo symbols not found (found {sorted(symbols)})")
    base = _load_base(lib.resolve())
    if not ctypes.CFUNCTYPE(ctypes.c_bool)(base + symbols["cpuinfo_initialize"])():
        raise RuntimeError("cpuinfo_initialize failed")
    isa = (ctypes.c_uint8 * 64).from_address(base + symbols["cpuinfo_isa"])
    _check_layout(isa)
    for i in _WIDER_FIELDS:
        isa[i] = 0
    return len(_WIDER_FIELDS)


def _load_base(lib: Path) -> int:
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(lib) and int(fields[2], 16) == 0:
            return int(fields[0].split("-")[0], 16)
    raise RuntimeError(f"{lib} is not mapped in this process")


def _check_layout(isa) -> None:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    expect = {_AVX2_FIELD: "avx2", 29: "avx512f", 32: "avx512cd", 34: "avx512bw", 35: "avx512vl"}
    for offset, flag in expect.items():
        if bool(isa[offset]) != (flag in flags):
            raise RuntimeError(
                f"cpuinfo layout differs from this jaxlib's: byte {offset} is {isa[offset]}, "
                f"/proc/cpuinfo {'has' if flag in flags else 'lacks'} {flag}"
            )


def check(n: int = 2048, k: int = 384, m: int = 1536, calls: int = 20) -> dict:
    """GFLOP/s of one float32 [n,k] x [k,m] matmul in JAX and in torch, as limited now."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    a, b = rng.random((n, k), np.float32), rng.random((k, m), np.float32)
    mm = jax.jit(jnp.matmul)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)

    def gflops(fn) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return 2 * n * k * m * calls / (time.perf_counter() - t0) / 1e9

    return {
        "jax_gflops": round(gflops(lambda: mm(ja, jb).block_until_ready()), 1),
        "torch_gflops": round(gflops(lambda: ta @ tb), 1),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
    }


if __name__ == "__main__":
    import argparse
    import json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-isa", choices=("native", "avx2"), default="avx2")
    args = p.parse_args()
    print(json.dumps({**limit(args.max_isa), **check()}, indent=2))
