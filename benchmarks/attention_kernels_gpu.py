"""One attention call on the GPU, kernel by kernel: where bert-base's attention time goes.

    python -m benchmarks.attention_kernels_gpu --shapes 128x128,512x128,64x512

bfloat16 `[B, L, 12, 64]` query/key/value with right padding (real lengths drawn from 25-100%
of L), timed alone (median of --iters calls, each waited for): `ops.attention` as the model
calls it (cuDNN with the `[B, 1, L, L]` mask it broadcasts, and sequence lengths), cuDNN with
the sequence lengths alone (exact for right padding only), and XLA's implementation; prints ms
and TFLOP/s (4*B*L^2*D counted, padding included) and the max |diff| against `ops.attention`.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.model_only import _median_seconds
from ferris_jax import ops


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.attention_kernels_gpu")
    p.add_argument("--shapes", default="128x128,512x128,64x512")
    p.add_argument("--iters", type=int, default=50)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    H, Dh = 12, 64
    print("| B x L | variant | ms | TFLOP/s | max abs diff |\n|---|---|---:|---:|---:|")
    for spec in args.shapes.split(","):
        B, L = map(int, spec.split("x"))
        q, k, v = (jnp.asarray(rng.standard_normal((B, L, H, Dh)), jnp.bfloat16) for _ in "qkv")
        lengths = jnp.asarray(rng.integers(L // 4, L + 1, B), jnp.int32)
        mask = jnp.arange(L)[None, :] < lengths[:, None]
        variants = {
            "ops.attention (cudnn, mask + lengths)": jax.jit(
                lambda q, k, v, m: ops.attention(q, k, v, m, impl="cudnn")
            ),
            "cudnn, lengths only": jax.jit(
                lambda q, k, v, m: jax.nn.dot_product_attention(
                    q,
                    k,
                    v,
                    query_seq_lengths=m.sum(-1).astype(jnp.int32),
                    key_value_seq_lengths=m.sum(-1).astype(jnp.int32),
                    implementation="cudnn",
                )
            ),
            "xla (jax.nn.dot_product_attention)": jax.jit(
                lambda q, k, v, m: ops.attention(q, k, v, m, impl="jax")
            ),
        }
        reference = None
        flops = 4 * B * L * L * H * Dh
        for name, fn in variants.items():
            try:
                seconds = _median_seconds(fn, (q, k, v, mask), args.iters)
                out = np.asarray(fn(q, k, v, mask), np.float32) * np.asarray(mask)[:, :, None, None]
            except Exception as error:
                print(
                    f"| {B}x{L} | {name} | failed: {type(error).__name__} {str(error)[:100]} | | |"
                )
                continue
            reference = out if reference is None else reference
            diff = np.abs(out - reference).max()
            ms, tflops = seconds * 1e3, flops / seconds / 1e12
            print(f"| {B}x{L} | {name} | {ms:.3f} | {tflops:.1f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
