"""Per-call host overhead of a compiled program as a function of its argument count.

A single-query `encode` on the H100 spends 560-614 us launching the executable (BENCHMARKS.md);
this separates the per-argument cost (the model passes ~100 parameter arrays) from the fixed
one, with jit and with an ahead-of-time `Compiled`:

    python -m benchmarks.dispatch_overhead --args 1,8,32,101,202

With --model, the model's own program: parameters passed as arrays (as `Encoder` does) against
the same parameters as one buffer per dtype, sliced inside the program, at each --shapes:

    python -m benchmarks.dispatch_overhead --args "" --minilm-dir .bench/minilm \
        --model minilm --dtype bfloat16 --shapes 1x16,512x128
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import ready


def per_call_us(fn, args, calls: int) -> float:
    """Median of 5 blocks of `calls` calls (each waits for its result), in us per call."""
    ready(fn(*args))
    blocks = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            ready(fn(*args))
        blocks.append((time.perf_counter() - start) / calls * 1e6)
    return float(np.median(blocks))


def packed_params(leaves):
    """The leaves as one flat buffer per dtype, and a function that rebuilds them (in-program)."""
    dtypes = sorted({x.dtype.name for x in leaves})
    buffers = {d: jnp.concatenate([x.ravel() for x in leaves if x.dtype.name == d]) for d in dtypes}
    layout, offsets = [], dict.fromkeys(dtypes, 0)
    for x in leaves:
        layout.append((x.dtype.name, offsets[x.dtype.name], x.shape))
        offsets[x.dtype.name] += x.size

    def unpack(buffers):
        return [
            jax.lax.slice(buffers[d], (o,), (o + int(np.prod(shape)),)).reshape(shape)
            for d, o, shape in layout
        ]

    return buffers, unpack


def model_programs(args) -> None:
    """The model's program with its parameters as arrays vs as one buffer per dtype."""
    import ferris_jax
    from benchmarks import bench_models
    from ferris_jax import ops

    spec = bench_models.SPECS[args.model]
    with bench_models.model_dir(spec, bench_models.minilm_dir(args.minilm_dir)) as path:
        enc = ferris_jax.load(str(path), dtype=args.dtype, compilation_cache=False)
    leaves, treedef = enc.programs.flat_params(enc.params)
    impls = enc.requested_impls()
    buffers, unpack = packed_params(leaves)

    def apply_buffers(bufs, *inputs):  # as the encoder's program, parameters from the buffers
        with ops.use_impl(**dict(impls)):
            return enc.apply(jax.tree.unflatten(treedef, unpack(bufs)), *inputs)

    print(f"{args.model} {args.dtype}: {len(leaves)} parameter arrays, {len(buffers)} buffers")
    for shape in args.shapes.split(","):
        B, L = (int(n) for n in shape.split("x"))
        ids = np.full((B, L), 1000, np.int32)
        ids[:, 0], ids[:, -1] = 101, 102
        ones, zeros = np.ones((B, L), np.int32), np.zeros((B, L), np.int32)
        inputs = (ids, ones, zeros, np.int32(0))
        arrays = enc.programs.get(enc.params, (B, L), impls)
        flat = jax.jit(apply_buffers).lower(buffers, *inputs).compile()
        calls = args.calls if B * L <= 4096 else 20
        for name, fn, first in (
            ("arrays", arrays, leaves),
            ("buffers", flat, buffers),
        ):
            # Each call: host inputs in, wait, result copied to the host (as encode does).
            us = per_call_us(lambda *a, fn=fn: np.asarray(fn(*a)), (first, *inputs), calls)
            print(f"  {B}x{L} {name}: {us:8.1f} us per call")
        diff = np.abs(np.asarray(arrays(leaves, *inputs), np.float32)
                      - np.asarray(flat(buffers, *inputs), np.float32)).max()  # fmt: skip
        print(f"  {B}x{L} max abs difference: {diff:.2e}")


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.dispatch_overhead", description=__doc__.splitlines()[0]
    )
    p.add_argument("--args", default="1,8,32,101,202")
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--model", help="also time this model's program (bench_models.SPECS)")
    p.add_argument("--minilm-dir", type=Path)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--shapes", default="1x16,512x128")
    a = p.parse_args()
    print(f"device {jax.devices()[0]}, jax {jax.__version__}")
    if a.model:
        model_programs(a)
    for n in (int(n) for n in a.args.split(",") if n):
        leaves = [jnp.full((384,), i, jnp.float32) for i in range(n)]
        x = jnp.ones((1, 384), jnp.float32)
        f = lambda x, leaves: x + sum(leaves)  # noqa: E731
        jitted = jax.jit(f)
        compiled = jitted.lower(x, leaves).compile()
        flat = jax.jit(lambda x, flat: x + flat.reshape(-1, 384).sum(0))
        packed = jnp.concatenate(leaves)
        print(
            f"{n:4d} args: jit {per_call_us(jitted, (x, leaves), a.calls):7.1f} us, "
            f"compiled {per_call_us(compiled, (x, leaves), a.calls):7.1f} us, "
            f"one concatenated arg {per_call_us(flat, (x, packed), a.calls):7.1f} us"
        )


if __name__ == "__main__":
    main()
