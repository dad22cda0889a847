"""Peak host memory of `ferris_jax.load` against the checkpoint's size (Linux /proc/self/status).

    python -m benchmarks.load_memory --model bert-base

Builds the random-weight checkpoint of --model (bench_models.SPECS) in a temporary directory,
starts the JAX runtime, then loads it once: "peak" is VmHWM after the load minus VmRSS before it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks import bench_models


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.load_memory", description=__doc__.splitlines()[0]
    )
    p.add_argument("--model", default="bert-base", choices=list(bench_models.SPECS))
    p.add_argument("--minilm-dir", type=Path)
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()
    spec = bench_models.SPECS[args.model]
    with bench_models.model_dir(spec, bench_models.minilm_dir(args.minilm_dir)) as path:
        size = sum(f.stat().st_size for f in Path(path).rglob("*.safetensors")) / 2**20
        import jax.numpy as jnp

        jnp.ones(1).block_until_ready()  # the runtime's own memory is not the load's
        import ferris_jax

        before, start = _status_mib("VmRSS"), time.perf_counter()
        ferris_jax.load(str(path), dtype=args.dtype, compilation_cache=False)
        seconds = time.perf_counter() - start
    peak, after = _status_mib("VmHWM") - before, _status_mib("VmRSS") - before
    print(f"{args.model} ({args.dtype}): checkpoint {size:.0f} MiB, load {seconds:.2f} s, "
          f"peak +{peak:.0f} MiB ({peak / size:.2f}x), after load +{after:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
