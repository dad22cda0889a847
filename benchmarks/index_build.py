"""Streaming texts into an `Index` against plain `encode` of the same texts: throughput and peak
host memory, each run in its own process (Linux /proc/self/status).

    python -m benchmarks.index_build --model-dir .bench/minilm --sizes 100000 1000000

The texts (benchmarks/corpus.py's "mix") are written once to a JSON Lines file. `encode` reads
them all into a list and embeds them (what a user without streaming does); `stream` runs
`encode_stream` over the file read lazily and drops the vectors; `index` reads the
file lazily line by line into `Index.add`, which streams through `Encoder.encode_stream`,
writes vector shards as it goes and saves at the end; `index-memory` is the same add to an
index that has no folder (no shard files, no save). Peak memory is VmHWM minus VmRSS after
the model is loaded and warmed up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import corpus


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _lines(path: Path):
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def run_one(args: argparse.Namespace) -> dict:
    import ferris_jax
    from ferris_jax.retrieval.index import Index

    enc = ferris_jax.load(str(args.model_dir), dtype=args.dtype)
    enc.encode(corpus.build("mix", 4096, seed=1), batch_size=args.batch_size)  # compile
    enc.max_batch_tokens = args.max_batch_tokens
    enc.encode(corpus.build("mix", 4096, seed=1), batch_size=args.batch_size)
    base = _status_mib("VmRSS")
    start = time.perf_counter()
    if args.mode == "encode":
        texts = list(_lines(args.texts))
        vectors = enc.encode(texts, batch_size=args.batch_size)
        n = len(vectors)
    elif args.mode == "stream":  # the streaming embedding alone: vectors dropped as they come
        n = 0
        for window in enc.encode_stream(
            _lines(args.texts), batch_size=args.batch_size, chunk_size=args.chunk_size
        ):
            n += len(window)
    elif args.mode == "index-memory":  # the index in memory: no shard files, no save
        index = Index(enc, precision=args.precision)
        index.add(
            _lines(args.texts),
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
            show_progress_bar=False,
        )
        n = len(index)
    else:
        folder = Path(tempfile.mkdtemp(prefix="ferris-index-bench-")) / "index"
        index = Index(enc, precision=args.precision)
        index.save(folder)
        index.add(
            _lines(args.texts),
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
            show_progress_bar=False,
        )
        index.save()
        n = len(index)
    seconds = time.perf_counter() - start
    return {
        "mode": args.mode,
        "texts": n,
        "seconds": seconds,
        "texts_per_s": n / seconds,
        "rss_after_load_mib": base,
        "peak_above_load_mib": _status_mib("VmHWM") - base,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.index_build", description=__doc__)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--max-batch-tokens", type=int, default=32768)
    p.add_argument("--precision", default="bfloat16")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--chunk-size", type=int, default=16384, help="encode_stream's window")
    p.add_argument("--modes", nargs="+", default=["encode", "stream", "index"])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/index_build.json"))
    p.add_argument(
        "--mode", choices=["encode", "stream", "index", "index-memory"], help=argparse.SUPPRESS
    )
    p.add_argument("--texts", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:  # one measurement, in this process
        print(json.dumps(run_one(args)))
        return
    results = []
    work = Path(tempfile.mkdtemp(prefix="ferris-index-texts-"))
    for n in args.sizes:
        path = work / f"mix-{n}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for text in corpus.build("mix", n, seed=0):
                f.write(json.dumps(text) + "\n")
        for _ in range(args.rounds):
            for mode in args.modes:
                cmd = [
                    sys.executable, "-m", "benchmarks.index_build", "--mode", mode,
                    "--texts", str(path), "--model-dir", str(args.model_dir),
                    "--dtype", args.dtype, "--batch-size", str(args.batch_size),
                    "--max-batch-tokens", str(args.max_batch_tokens),
                    "--precision", args.precision, "--chunk-size", str(args.chunk_size),
                ]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                result = {"n": n, **json.loads(out.strip().splitlines()[-1])}
                print(json.dumps(result), flush=True)
                results.append(result)
        path.unlink()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
