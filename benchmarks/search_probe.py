"""Where one exact search's time goes on a GPU: scoring a corpus block ([Q, D] x [R, D]) for a
few query paddings and forms, and the top-k of the scores, each timed alone.

    python -m benchmarks.search_probe --rows 8388608 --block-rows 1048576
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from benchmarks.timing import ready
from ferris_jax.ops.top_k import top_k


def _time(fn, *args, rounds: int = 20) -> float:
    for _ in range(3):
        ready(fn(*args))
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.search_probe")
    p.add_argument("--rows", type=int, default=8 << 20)
    p.add_argument("--block-rows", type=int, default=1 << 20)
    p.add_argument("--dim", type=int, default=384)
    args = p.parse_args()
    key = jax.random.key(0)
    corpus = jax.random.normal(key, (args.rows, args.dim), jnp.bfloat16)
    block = corpus[: args.block_rows]
    for Q in (1, 8, 16, 64):
        q = jax.random.normal(jax.random.key(1), (Q, args.dim), jnp.bfloat16)
        dot = jax.jit(
            lambda q, c: jnp.einsum("qd,rd->qr", q, c, preferred_element_type=jnp.float32)
        )
        dot_bf16 = jax.jit(lambda q, c: jnp.einsum("qd,rd->qr", q, c))
        full = jax.jit(
            lambda q, c: top_k(
                jnp.einsum("qd,rd->qr", q, c, preferred_element_type=jnp.float32), 10
            )
        )
        times = {
            "block scores f32": _time(dot, q, block),
            "block scores bf16": _time(dot_bf16, q, block),
            "block scores+top_k": _time(full, q, block),
            "corpus scores f32": _time(dot, q, corpus),
            "corpus scores+top_k": _time(full, q, corpus),
        }
        s = dot(q, corpus)
        times["top_k alone"] = _time(jax.jit(lambda s: top_k(s, 10)), s)
        times["lax.top_k alone"] = _time(jax.jit(lambda s: jax.lax.top_k(s, 10)), s)
        print(f"Q={Q}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in times.items()), flush=True)


if __name__ == "__main__":
    main()
