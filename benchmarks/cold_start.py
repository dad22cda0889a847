"""A first job in a fresh process with an empty compilation cache, against the same job again
in that process (warm): what compiling costs a first large job, with the programs compiled
in parallel threads ("parallel", the default) or one at a time ("serial",
FERRIS_JAX_COMPILE_THREADS=1), and where a compile's time goes: modes that change one
compile-time setting each (`MODES`: XLA's GPU autotuning off, the portable LayerNorm or
attention instead of the Pallas/cuDNN ones).

    python -m benchmarks.cold_start --minilm-dir .bench/minilm --texts 20000 --rounds 2
    python -m benchmarks.cold_start --minilm-dir .bench/minilm --texts 20000 --dtype bfloat16 \
        --batch-size 512 --modes parallel,autotune0,ln-xla,attn-jax,portable --rounds 1

Each round spawns one process per mode, alternating, each with its own empty cache folder;
a process loads the model, embeds the mix corpus (`benchmarks/corpus.py`) once cold and once
warm, and reports both times, the compile seconds and the programs compiled; then it lowers and
compiles two shapes the job did not use, timing tracing + lowering (Python) apart from XLA's
compile. Issue 15's target: cold <= 2x warm on the GPU.

`--start second-process` fills each cache folder first with one untimed child (the job a
process before it ran), `--start warmup` with `ferris-jax warmup` at the job's batch size, so
the timed child's first job is a later process's first job (issue 26's target: at most 2x the
warm job).

    python -m benchmarks.cold_start --minilm-dir .bench/minilm --texts 20000 --modes parallel \
        --start empty,second-process,warmup --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# mode -> the environment its child runs with (besides an empty compilation cache of its own).
MODES: dict[str, dict[str, str]] = {
    "parallel": {},
    "serial": {"FERRIS_JAX_COMPILE_THREADS": "1"},
    "autotune0": {"XLA_FLAGS": "--xla_gpu_autotune_level=0"},
    "ln-xla": {"FERRIS_JAX_LAYER_NORM": "xla"},
    "attn-jax": {"FERRIS_JAX_ATTENTION": "jax"},
    "portable": {
        "XLA_FLAGS": "--xla_gpu_autotune_level=0",
        "FERRIS_JAX_LAYER_NORM": "xla",
        "FERRIS_JAX_ATTENTION": "jax",
    },
}


def child(args: argparse.Namespace) -> None:
    import ferris_jax
    from benchmarks import corpus
    from ferris_jax.runtime.compilation import cache_stats

    texts = corpus.build("mix", args.texts)
    enc = ferris_jax.load(args.minilm_dir, dtype=args.dtype)
    start = time.perf_counter()
    enc.encode(texts, batch_size=args.batch_size)
    cold = time.perf_counter() - start
    compile_s = enc.compile_seconds
    cache = cache_stats()
    start = time.perf_counter()
    enc.encode(texts, batch_size=args.batch_size)
    warm = time.perf_counter() - start
    lower_s, xla_compile_s = [], []
    for shape in [(8, 24), (24, 40)]:  # shapes off the job's bucket grid: new programs
        start = time.perf_counter()
        lowered = enc.lower(shape)
        lower_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        lowered.compile()
        xla_compile_s.append(time.perf_counter() - start)
    result = {
        "cold_s": cold,
        "warm_s": warm,
        "cold_over_warm": cold / warm,
        "compile_s": compile_s,
        "cache_hits": cache["hits"],
        "cache_misses": cache["misses"],
        "programs": len(enc.compiled_programs),
        "platform": enc.backend.platform,
        "one_more_program_lower_s": lower_s,
        "one_more_program_compile_s": xla_compile_s,
    }
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cold_start")
    p.add_argument("--minilm-dir", required=True)
    p.add_argument("--texts", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--modes", default="serial,parallel")
    p.add_argument("--start", default="empty", help="comma list: empty, second-process, warmup")
    p.add_argument("--out")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    modes, starts = args.modes.split(","), args.start.split(",")
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown --modes {sorted(unknown)}; choose from {sorted(MODES)}")
    if set(starts) - {"empty", "second-process", "warmup"}:
        raise SystemExit(f"--start {args.start!r}: choose from empty, second-process, warmup")
    cases = [(m, s) for m in modes for s in starts]
    runs: dict[str, list[dict]] = {_case(m, s): [] for m, s in cases}
    for _ in range(args.rounds):
        for mode, start in cases:
            with tempfile.TemporaryDirectory() as cache:
                env = {**os.environ, "FERRIS_JAX_CACHE_DIR": cache, **MODES[mode]}
                cmd = [sys.executable, "-m", "benchmarks.cold_start", "--child"]
                cmd += ["--minilm-dir", args.minilm_dir, "--texts", str(args.texts)]
                cmd += ["--batch-size", str(args.batch_size), "--dtype", args.dtype]
                if start == "second-process":
                    _run(cmd, env, mode)
                elif start == "warmup":
                    _run([sys.executable, "-m", "ferris_jax.cli", "warmup", "-m",
                          args.minilm_dir, "--dtype", args.dtype, "--batch-size",
                          str(args.batch_size)], env, mode)  # fmt: skip
                out = _run(cmd, env, mode)
                lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
                result = json.loads(lines[-1][len("RESULT ") :])
                print(_case(mode, start), result, flush=True)
                runs[_case(mode, start)].append(result)
    summary = {
        mode: {
            key: statistics.median(r[key] for r in results)
            for key in ("cold_s", "warm_s", "cold_over_warm", "compile_s")
        }
        for mode, results in runs.items()
    }
    record = {"command": "python -m benchmarks.cold_start " + " ".join(sys.argv[1:])}
    record.update(summary=summary, runs=runs, cpus=os.cpu_count())
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))


def _case(mode: str, start: str) -> str:
    return mode if start == "empty" else f"{mode}, {start}"


def _run(cmd: list[str], env: dict, mode: str) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode or ("--child" in cmd and "RESULT " not in out.stdout):
        raise SystemExit(f"{mode}: {' '.join(cmd[1:4])} failed:\n{out.stderr[-2000:]}")
    return out


if __name__ == "__main__":
    main()
