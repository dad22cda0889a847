"""Attention formulations on the device: each impl's `encode` against float32 "jax" attention.

    python -m benchmarks.attention_gpu --minilm-dir .bench/minilm --texts 1024

For every impl in --impls, MiniLM in --dtype encodes the same mix corpus (right-padded batches)
and, through `Encoder.apply`, a left-padded batch (the mask is not a prefix); prints min cosine
and max |diff| against float32 with impl "jax", and the encode time (best of 3, warm). Each impl
is chosen with `ops.use_impl(attention=...)` around its load, encode and apply calls.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import ferris_jax
from benchmarks import bench_models
from benchmarks import corpus as corpora
from ferris_jax import ops


def _left_padded(enc, texts: list[str]) -> np.ndarray:
    """`enc.apply` on a batch whose padding is on the left (real tokens last)."""
    b = enc.tokenize(texts)
    n = b.attention_mask.sum(axis=1)
    L = b.input_ids.shape[1]
    shift = lambda a: np.stack([np.roll(r, L - k) for r, k in zip(a, n, strict=True)])  # noqa: E731
    ids, mask, types = (shift(a) for a in (b.input_ids, b.attention_mask, b.token_type_ids))
    return np.asarray(enc.apply(enc.params, ids, mask, types), dtype=np.float32)


def _compare(a: np.ndarray, b: np.ndarray) -> str:
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return f"min cos {cos.min():.6f} max |diff| {np.abs(a - b).max():.2e}"


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.attention_gpu", description=__doc__.splitlines()[0]
    )
    p.add_argument("--minilm-dir", type=Path)
    p.add_argument("--texts", type=int, default=1024)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--impls", default="einsum,jax,cudnn")
    args = p.parse_args()
    texts = corpora.build("mix", args.texts)
    path = str(bench_models.minilm_dir(args.minilm_dir))
    with ops.use_impl(attention="jax"):
        ref = ferris_jax.load(path, dtype="float32", compilation_cache=False)
        want, want_left = (
            ref.encode(texts, batch_size=256, show_progress_bar=False),
            _left_padded(ref, texts[:64]),
        )
    print(f"{len(texts)} mix texts, {args.dtype} vs float32 'jax' attention on {ref.device}")
    for impl in args.impls.split(","):
        with ops.use_impl(attention=impl):
            enc = ferris_jax.load(path, dtype=args.dtype, compilation_cache=False)
            got = enc.encode(texts, batch_size=256, show_progress_bar=False)
            times = []
            for _ in range(3):
                start = time.perf_counter()
                enc.encode(texts, batch_size=256, show_progress_bar=False)
                times.append(time.perf_counter() - start)
            left = _compare(_left_padded(enc, texts[:64]), want_left)
        print(f"{impl}: encode {_compare(got, want)}, {1e3 * min(times):.1f} ms; "
              f"left-padded apply {left}")  # fmt: skip


if __name__ == "__main__":
    main()
