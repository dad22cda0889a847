"""End to end on the CPU: encoders whose einsum attention runs the whole batch's logits at once
against groups of rows under a logits budget (`ops.attention.EINSUM_LOGITS_BYTES`), in one
process, timed round by round in turn.

    python -m benchmarks.attention_budget_cpu --model bert-base --max-isa avx2

Each budget gets its own encoder compiled after `jax.clear_caches()` (JAX would otherwise reuse
the first one's traced program). Prints texts/s per corpus and budget, and the ratio to the
whole batch; medians of `--rounds`.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import bench_models, cpu_isa
from benchmarks import corpus as corpora

BUDGETS = {"whole": 1 << 62, "4MB": 4 << 20, "8MB": 8 << 20, "16MB": 16 << 20}
SIZES = {
    "minilm": {"sentence": 512, "passage": 256, "long": 64, "mix": 500},
    "bert-base": {"passage": 48, "long": 12, "mix": 128},
}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.attention_budget_cpu")
    p.add_argument("--model", default="minilm", choices=sorted(SIZES))
    p.add_argument("--max-isa", choices=("native", "avx2"), default="native")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--minilm-dir", type=Path)
    args = p.parse_args()
    cpu_isa.limit(args.max_isa)
    import jax

    import ferris_jax

    attention = importlib.import_module("ferris_jax.ops.attention")
    spec = bench_models.SPECS[args.model]
    minilm = bench_models.minilm_dir(args.minilm_dir)
    path = minilm
    if not spec.real:
        path = bench_models.build_random(spec, minilm, Path(tempfile.mkdtemp()) / spec.name)
    texts = {k: corpora.build(k, n, seed=0) for k, n in SIZES[args.model].items()}
    encoders = {}
    for name, budget in BUDGETS.items():
        attention.EINSUM_LOGITS_BYTES = budget
        jax.clear_caches()
        enc = ferris_jax.load(str(path), compilation_cache=False)
        for t in texts.values():
            enc.encode(t, batch_size=32)
        encoders[name] = enc
    seconds = {(n, k): [] for n in encoders for k in texts}
    for _ in range(args.rounds):
        for k, t in texts.items():
            for n, enc in encoders.items():
                start = time.perf_counter()
                enc.encode(t, batch_size=32)
                seconds[(n, k)].append(time.perf_counter() - start)
    for k, t in texts.items():
        whole = statistics.median(seconds[("whole", k)])
        cells = []
        for n in encoders:
            s = statistics.median(seconds[(n, k)])
            cells.append(f"{n} {len(t) / s:.1f}/s ({whole / s:.2f}x)")
        print(f"{args.max_isa} {args.model} {k}: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
