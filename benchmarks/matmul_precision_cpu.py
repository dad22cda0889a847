"""A probe for an opt-in CPU mode (issue 15): matmuls with bfloat16 operands and float32
accumulation, everything else (LayerNorm, softmax, GELU, pooling) in float32.

    python -m benchmarks.matmul_precision_cpu --minilm-dir .bench/minilm --mode float32
    python -m benchmarks.matmul_precision_cpu --minilm-dir .bench/minilm --mode bf16-matmul

One process per mode (run them one after another and compare): "float32", "bf16-matmul" (every
`nnx.Linear` patched in this process to the candidate's dot), "bfloat16" (the whole model in
bfloat16). Embeds 2,000 STS-B sentences and 256 long documents (`benchmarks/corpus.py`,
batch 64), prints texts/s, and saves the vectors to compare (`--save DIR`: the cosine of each
mode's vectors against float32's is printed when that file is there).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def bf16_matmul_linear(self: nnx.Linear, x: jax.Array) -> jax.Array:
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    kernel = self.kernel[...].astype(jnp.bfloat16)
    y = jax.lax.dot_general(
        x.astype(jnp.bfloat16), kernel, dims, preferred_element_type=jnp.float32
    )
    return y if self.bias is None else y + self.bias[...]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.matmul_precision_cpu")
    p.add_argument("--minilm-dir", required=True)
    p.add_argument("--mode", choices=["float32", "bf16-matmul", "bfloat16"], required=True)
    p.add_argument("--save", default="/tmp/matmul-precision")
    args = p.parse_args()
    if args.mode == "bf16-matmul":
        nnx.Linear.__call__ = bf16_matmul_linear
    import ferris_jax
    from benchmarks import corpus
    from benchmarks.train import sts_train_pairs

    dtype = "bfloat16" if args.mode == "bfloat16" else "float32"
    enc = ferris_jax.load(args.minilm_dir, dtype=dtype)
    sentences = [a for a, _ in sts_train_pairs()[:2000]]
    save = Path(args.save)
    save.mkdir(parents=True, exist_ok=True)
    for name, texts in (("sts", sentences), ("long", corpus.build("long", 256))):
        enc.encode(texts[:64], batch_size=64)
        start = time.perf_counter()
        vectors = enc.encode(texts, batch_size=64)
        seconds = time.perf_counter() - start
        np.save(save / f"{args.mode}-{name}.npy", vectors)
        line = f"{args.mode} {name}: {len(texts) / seconds:.0f} texts/s"
        reference = save / f"float32-{name}.npy"
        if args.mode != "float32" and reference.exists():
            ref = np.load(reference)
            cosine = (ref * vectors).sum(1) / np.linalg.norm(ref, axis=1)
            cosine /= np.linalg.norm(vectors, axis=1)
            line += f", min cosine vs float32 {cosine.min():.6f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
