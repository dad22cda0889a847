"""One attention call on the CPU: our einsum formulation under several logits budgets, and
torch's fused scaled_dot_product_attention, on right-padded batches of real-text lengths.

    python -m benchmarks.attention_cpu --shapes 8x256,32x128,64x64 --rounds 20

Variants: "einsum" (`ops.attention(impl="einsum")`, the CPU default: logits `[B, N, L, L]` in
float32, softmax normalized after the value product, rows in groups whose logits fit
`EINSUM_LOGITS_BYTES`); "einsum-whole-batch" (every row's logits at once); "per-row" and
"blocked-<N>MB" (the same grouping under other budgets: one row, N MB); "per-row-head"
(`lax.map` over batch x heads: `[L, L]` at a time). Each is checked against the einsum result
(max abs difference) and timed as the median of `--rounds` calls.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import cpu_isa
from ferris_jax import ops

attention_ops = importlib.import_module("ferris_jax.ops.attention")  # ops.attention: the function


def with_budget(logits_bytes: int):
    """The einsum formulation with this logits budget (`ops.attention`'s own grouping of rows;
    1 byte: one row at a time)."""

    def attention(query, key, value, mask):
        return attention_ops._einsum_attention(
            query, key, value, mask, None, None, logits_bytes=logits_bytes
        )

    return attention


def per_row_head(query, key, value, mask):
    B, L, N, Dh = query.shape
    heads = lambda t: t.transpose(0, 2, 1, 3).reshape(B * N, L, 1, Dh)  # noqa: E731
    masks = jnp.repeat(mask, N, axis=0)

    def one(args):
        q, k, v, m = args
        return ops.attention(q[None], k[None], v[None], m[None], impl="einsum")[0]

    out = jax.lax.map(one, (heads(query), heads(key), heads(value), masks))
    return out.reshape(B, N, L, Dh).transpose(0, 2, 1, 3)


VARIANTS = {
    "einsum": lambda q, k, v, m: ops.attention(q, k, v, m, impl="einsum"),
    "einsum-whole-batch": with_budget(1 << 62),
    "per-row": with_budget(1),
    "per-row-head": per_row_head,
    "blocked-1MB": with_budget(1 << 20),
    "blocked-2MB": with_budget(2 << 20),
    "blocked-4MB": with_budget(4 << 20),
    "blocked-8MB": with_budget(8 << 20),
    "blocked-16MB": with_budget(16 << 20),
}


def median_ms(fn, *args, rounds: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.attention_cpu")
    p.add_argument("--shapes", default="8x256,32x128,64x64")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--max-isa", choices=("native", "avx2"), default="native")
    p.add_argument("--out")
    args = p.parse_args()
    cpu_isa.limit(args.max_isa)
    rng = np.random.default_rng(0)
    results = []
    for shape in args.shapes.split(","):
        B, L = (int(x) for x in shape.split("x"))
        N, Dh = args.heads, args.head_dim
        q, k, v = (rng.standard_normal((B, L, N, Dh), dtype=np.float32) for _ in range(3))
        lengths = rng.integers(L // 3, L + 1, size=B)
        lengths[0] = L
        mask = np.arange(L)[None] < lengths[:, None]
        row = {"shape": [B, L, N, Dh]}
        want = None
        for name, fn in VARIANTS.items():
            jitted = jax.jit(fn)
            out = np.asarray(jitted(q, k, v, mask))
            want = out if want is None else want
            row[name] = {
                "ms": median_ms(jitted, q, k, v, mask, rounds=args.rounds),
                "max_abs_diff_vs_einsum": float(np.abs(out - want)[mask].max()),
            }
        try:
            import torch

            tq, tk, tv = (torch.from_numpy(t).transpose(1, 2) for t in (q, k, v))
            tm = torch.from_numpy(mask)[:, None, None, :]

            def sdpa(tq=tq, tk=tk, tv=tv, tm=tm):
                with torch.inference_mode():
                    return torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, tm)

            sdpa()
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                sdpa()
                times.append((time.perf_counter() - start) * 1e3)
            row["torch_sdpa"] = {"ms": statistics.median(times)}
        except ImportError:
            pass
        print(json.dumps(row), flush=True)
        results.append(row)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"threads": jax.device_count(), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
