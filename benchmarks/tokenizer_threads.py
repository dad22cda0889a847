"""How tokenization scales with the tokenizer's thread pool (RAYON_NUM_THREADS) on this host.

    python -m benchmarks.tokenizer_threads --minilm-dir .bench/minilm --threads 1,8

Each thread count runs in a fresh process (the pool size is fixed at its first use) and times
`TextTokenizer.encode` on the same corpus, best of --repeats.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

# The repository root: children run there (`python -m benchmarks.tokenizer_threads`).
ROOT = Path(__file__).resolve().parents[1]


def _child(args: argparse.Namespace) -> None:
    from benchmarks import bench_models
    from benchmarks import corpus as corpora
    from ferris_jax.loading.tokenizer import load_tokenizer

    texts = corpora.build(args.corpus, args.texts)
    tok = load_tokenizer(bench_models.minilm_dir(args.minilm_dir), max_seq_length=256)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = tok.encode(texts)
        times.append(time.perf_counter() - start)
    print(f"{1e3 * min(times):.1f} {int(out.lengths.sum())}")


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.tokenizer_threads", description=__doc__.splitlines()[0]
    )
    p.add_argument("--minilm-dir", type=Path)
    p.add_argument("--corpus", default="mix")
    p.add_argument("--texts", type=int, default=4096)
    p.add_argument("--threads", default="1,2,4,8,16,default")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args)
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    quota = Path("/sys/fs/cgroup/cpu.max")
    print(f"os.cpu_count {os.cpu_count()}, affinity {affinity}, "
          f"cgroup cpu.max {quota.read_text().strip() if quota.exists() else '-'}")  # fmt: skip
    print(f"| RAYON_NUM_THREADS | {args.corpus} x {args.texts} ms | tokens |\n|---|---:|---:|")
    for n in args.threads.split(","):
        env = {k: v for k, v in os.environ.items() if k not in ("RAYON_NUM_THREADS",)}
        env.pop("TOKENIZERS_PARALLELISM", None)
        if n != "default":
            env["RAYON_NUM_THREADS"] = n
        cmd = [sys.executable, "-m", "benchmarks.tokenizer_threads", "--child"]
        cmd += ["--corpus", args.corpus]
        cmd += ["--texts", str(args.texts), "--repeats", str(args.repeats)]
        if args.minilm_dir:
            cmd += ["--minilm-dir", str(args.minilm_dir.resolve())]  # the child runs in ROOT
        ms, tokens = subprocess.run(
            cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        print(f"| {n} | {ms} | {tokens} |")


if __name__ == "__main__":
    main()
