"""The CPU comparison BENCHMARKS.md (2026-11-25) ran, now a preset of `run.py`.

    python -m benchmarks.encode_cpu --texts 2000 --batch-size 64 --repeats 3 --json out.json

all-MiniLM-L6-v2 in float32 on the CPU, the mixed corpus, ferris_jax at `--batch-size` against
sentence-transformers at its default batch size (32) and at `--batch-size`. Other run.py options
(e.g. --ferris-variants, --latency-calls 0) can follow and override these.
"""

from __future__ import annotations

import argparse

from benchmarks import run


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.encode_cpu", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the full result record here")
    args, rest = parser.parse_known_args()
    batches = sorted({32, args.batch_size})
    argv = ["--device", "cpu", "--models", "minilm", "--corpus", "mix"]
    argv += ["--texts", str(args.texts), "--rounds", str(args.repeats)]
    argv += ["--ferris-variants", f"f32-bs{args.batch_size}"]
    argv += ["--peers", ",".join(f"torch-fp32-bs{b}" for b in batches)]
    argv += ["--out", args.json] if args.json else []
    run.main(argv + rest)


if __name__ == "__main__":
    main()
