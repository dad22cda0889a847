"""Model-only throughput and FLOP utilisation: one compiled program, fixed shapes, no host work.

    python -m benchmarks.model_only --minilm-dir .bench/minilm --model bert-base \
        --shapes 256x128,512x128 --dtype bfloat16 --peak-tflops 989.4

Times `Encoder`'s compiled program (`enc.programs.get`) on device-resident inputs (median of
--iters calls, each waited for), and reports TFLOP/s and MFU with the harness's FLOP formula.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import ferris_jax
from benchmarks import bench_models
from benchmarks.timing import ready


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.model_only", description=__doc__.splitlines()[0]
    )
    p.add_argument("--minilm-dir", type=Path)
    p.add_argument("--model", default="bert-base", choices=list(bench_models.SPECS))
    p.add_argument("--shapes", default="256x128,512x128")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--peak-tflops", type=float, default=989.4, help="H100 SXM dense bf16")
    p.add_argument("--parts", action="store_true", help="also time the matmuls and attention alone")
    args = p.parse_args()
    import jax

    spec = bench_models.SPECS[args.model]
    with bench_models.model_dir(spec, bench_models.minilm_dir(args.minilm_dir)) as path:
        enc = ferris_jax.load(str(path), dtype=args.dtype, compilation_cache=False)
    leaves, _ = enc.programs.flat_params(enc.params)
    impls = enc.requested_impls()
    print(f"{args.model} {args.dtype} on {enc.device}; {bench_models.FLOP_FORMULA}")
    print("| shape | ms | TFLOP/s | MFU |\n|---|---:|---:|---:|")
    for shape in args.shapes.split(","):
        B, L = (int(n) for n in shape.split("x"))
        ids = jax.device_put(np.full((B, L), 1000, np.int32), enc.device)
        mask = jax.device_put(np.ones((B, L), np.int32), enc.device)
        types = jax.device_put(np.zeros((B, L), np.int32), enc.device)
        program = enc.programs.get(enc.params, (B, L), impls)
        inputs = (leaves, ids, mask, types, np.int32(0))
        ready(program(*inputs))
        times = []
        for _ in range(args.iters):
            start = time.perf_counter()
            ready(program(*inputs))
            times.append(time.perf_counter() - start)
        seconds = float(np.median(times))
        tflops = bench_models.flops(spec, [(B, L)]) / seconds / 1e12
        print(f"| {B}x{L} | {1e3 * seconds:.2f} | {tflops:.1f} | {tflops / args.peak_tflops:.1%} |")
        if args.parts:
            print(_parts(spec, B, L, args.dtype, args.iters, args.peak_tflops, seconds))


def _median_seconds(fn, args, iters: int) -> float:
    ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _parts(spec, B: int, L: int, dtype: str, iters: int, peak: float, whole: float) -> str:
    """The model's matmuls alone (the 6 per layer, as one program) and its attention alone
    (`ops.attention` on the layer's shapes), times the layer count: what is left of the
    whole-model time is LayerNorm, activations, embeddings, pooling and the glue between."""
    import jax
    import jax.numpy as jnp

    from ferris_jax import ops

    D, inner, heads, n = (
        spec.hidden_size,
        spec.intermediate_size,
        spec.num_attention_heads,
        spec.num_hidden_layers,
    )
    key = iter(jax.random.split(jax.random.key(0), 10))
    x = jax.random.normal(next(key), (B * L, D), dtype)
    w = [
        jax.random.normal(next(key), s, dtype) * 0.02
        for s in [(D, D)] * 4 + [(D, inner), (inner, D)]
    ]

    def matmuls(x, w):
        q, k, v = x @ w[0], x @ w[1], x @ w[2]
        h = (q + k + v) @ w[3]
        return (h @ w[4]) @ w[5]

    mm = _median_seconds(jax.jit(matmuls), (x, w), iters) * n
    qkv = [jax.random.normal(next(key), (B, L, heads, D // heads), dtype) for _ in range(3)]
    mask = jnp.ones((B, L), bool)
    attention = jax.jit(lambda q, k, v, m: ops.attention(q, k, v, m))
    att = _median_seconds(attention, (*qkv, mask), iters) * n
    mm_tflops = 2 * B * L * spec.matmul_params / mm / 1e12
    att_tflops = n * 4.0 * B * L * L * D / att / 1e12
    return (
        f"  parts of {B}x{L}: matmuls {1e3 * mm:.2f} ms ({mm_tflops / peak:.1%} of peak), "
        f"attention {1e3 * att:.2f} ms ({att_tflops / peak:.1%}), "
        f"rest {1e3 * (whole - mm - att):.2f} ms of {1e3 * whole:.2f}"
    )


if __name__ == "__main__":
    main()
