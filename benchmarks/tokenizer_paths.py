"""The fast WordPiece path (nanotoken) against Hugging Face `tokenizers`, in one process.

    python -m benchmarks.tokenizer_paths --minilm-dir .bench/minilm --texts 20000

Loads MiniLM's tokenizer as `encode` uses it and times `TextTokenizer.encode` on the mix
corpus with the fast path and with `tokenizers` (`_encode_tokenizers`: the same ids), the two
alternating for --rounds rounds; prints the medians, their ratio and whether the ids agree.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks import bench_models
from benchmarks import corpus as corpora
from ferris_jax.loading.tokenizer import load_tokenizer


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tokenizer_paths")
    p.add_argument("--minilm-dir")
    p.add_argument("--corpus", default="mix")
    p.add_argument("--texts", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    texts = corpora.build(args.corpus, args.texts)
    tok = load_tokenizer(bench_models.minilm_dir(args.minilm_dir), max_seq_length=256)
    if tok.fast_path is None:
        raise SystemExit(f"no fast path: {tok.fast_path_reason}")
    paths = {"nanotoken": tok.encode, "tokenizers": tok._encode_tokenizers}
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    results = {}
    for _ in range(args.rounds):
        for name, encode in paths.items():
            start = time.perf_counter()
            results[name] = encode(texts)
            seconds[name].append(time.perf_counter() - start)
    fast, slow = results["nanotoken"], results["tokenizers"]
    same = all(np.array_equal(getattr(fast, f), getattr(slow, f)) for f in ("ids", "lengths"))
    median = {name: statistics.median(times) for name, times in seconds.items()}
    print(f"{len(texts)} {args.corpus} texts, median of {args.rounds} rounds:")
    for name, value in median.items():
        print(f"  {name}: {value * 1e3:.1f} ms")
    print(f"  ratio {median['tokenizers'] / median['nanotoken']:.1f}x, same ids: {same}")


if __name__ == "__main__":
    main()
