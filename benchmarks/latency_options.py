"""Single-query latency under XLA compile options (issue 15, item 3: fewer launches).

    python -m benchmarks.latency_options --minilm-dir .bench/minilm --models minilm,bert-base

For each model (bfloat16 on the GPU), the one-text program is compiled once per option set of
`OPTION_SETS` (`Lowered.compile(compiler_options=...)`; e.g. CUDA graphs for every kernel
type, so one graph launch replaces dozens of kernel launches) and put in place of the
encoder's own; then `enc.encode(one text)` is timed, the option sets taking turns for
`--rounds` rounds of `--calls` calls. Prints p50/p99 per option set (medians over rounds) and
the largest difference of the vectors from the default program's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import ferris_jax
from benchmarks import bench_models
from benchmarks import corpus as corpora

ALL_COMMANDS = "FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,DYNAMIC_SLICE_FUSION"
OPTION_SETS: dict[str, dict[str, str | int | bool]] = {
    "default": {},
    "no-graphs": {"xla_gpu_enable_command_buffer": ""},
    "graphs-all": {
        "xla_gpu_enable_command_buffer": ALL_COMMANDS,
        "xla_gpu_graph_min_graph_size": 1,
    },
}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency_options")
    p.add_argument("--minilm-dir")
    p.add_argument("--models", default="minilm,bert-base")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out")
    args = p.parse_args()
    texts = corpora.build("short", args.calls)
    report = {}
    for model in args.models.split(","):
        spec = bench_models.SPECS[model]
        with bench_models.model_dir(spec, bench_models.minilm_dir(args.minilm_dir)) as path:
            enc = ferris_jax.load(str(path), dtype=args.dtype)
        reference = enc.encode(texts[0])  # compiles the one-text program
        ((shape, impls),) = enc.programs.keys
        programs, vectors, failed = {}, {}, {}
        for name, options in OPTION_SETS.items():
            try:
                programs[name] = enc.lower(shape).compile(compiler_options=options)
            except Exception as error:  # an option this XLA does not know
                failed[name] = f"{type(error).__name__}: {str(error)[:200]}"
        p50s: dict[str, list[float]] = {name: [] for name in programs}
        p99s: dict[str, list[float]] = {name: [] for name in programs}
        for _ in range(args.rounds):
            for name, program in programs.items():
                enc.programs._compiled[(shape, impls)] = program  # the probe swaps the program
                vectors[name] = enc.encode(texts[0])
                times = []
                for text in texts:
                    start = time.perf_counter()
                    enc.encode(text)
                    times.append(time.perf_counter() - start)
                p50s[name].append(float(np.percentile(times, 50)) * 1e3)
                p99s[name].append(float(np.percentile(times, 99)) * 1e3)
        rows = {
            name: {
                "p50_ms": statistics.median(p50s[name]),
                "p99_ms": statistics.median(p99s[name]),
                "max_abs_diff": float(np.abs(vectors[name] - reference).max()),
            }
            for name in programs
        }
        report[model] = {"shape": shape, "rows": rows, "failed": failed}
        print(f"\n{model} {args.dtype}, one text, shape {shape}")
        print("| options | p50 ms | p99 ms | max abs diff |\n|---|---:|---:|---:|")
        for name, row in rows.items():
            p50, p99, diff = row["p50_ms"], row["p99_ms"], row["max_abs_diff"]
            print(f"| {name} | {p50:.3f} | {p99:.3f} | {diff:.1e} |")
        for name, error in failed.items():
            print(f"| {name} | failed: {error} | | |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"option_sets": OPTION_SETS, "models": report}, f, indent=1)


if __name__ == "__main__":
    main()
