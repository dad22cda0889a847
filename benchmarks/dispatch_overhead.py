"""Per-call host overhead of a compiled program as a function of its argument count.

A single-query `encode` on the H100 spends 560-614 us launching the executable (BENCHMARKS.md);
this separates the per-argument cost (the model passes ~100 parameter arrays) from the fixed
one, with jit and with an ahead-of-time `Compiled`:

    python benchmarks/dispatch_overhead.py --args 1,8,32,101,202
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


def per_call_us(fn, args, calls: int) -> float:
    """Median of 5 blocks of `calls` calls (each waits for its result), in us per call."""
    jax.block_until_ready(fn(*args))
    blocks = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            jax.block_until_ready(fn(*args))
        blocks.append((time.perf_counter() - start) / calls * 1e6)
    return float(np.median(blocks))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--args", default="1,8,32,101,202")
    p.add_argument("--calls", type=int, default=300)
    a = p.parse_args()
    print(f"device {jax.devices()[0]}, jax {jax.__version__}")
    for n in map(int, a.args.split(",")):
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
