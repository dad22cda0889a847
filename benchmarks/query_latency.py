"""One query, end to end: `encode` of one text, and `Index.search` of one text over an index of
`--rows` chunks, p50 / p99 over `--calls` calls (issue 26, item 3: at most 1.0 ms MiniLM,
1.5 ms bert-base, 2.0 ms query + 1M-chunk search on the GPU).

    python -m benchmarks.query_latency --minilm-dir .bench/minilm --models minilm,bert-base \
        --rows 1000000 --calls 300

Per model (bfloat16 on the GPU, float32 on the CPU): `encode(text)` (numpy out, as a user calls
it), `encode(text, convert_to_tensor=True)` waited for on the device (no copy to the host),
and for the first model, an index of `--rows` random unit vectors (`add_embeddings`; the
model's own vectors cost the same to search) searched with a query text (`search(text)`) and
with its vector (`search(vector)`: the search alone). Query texts cycle through real short
texts (`benchmarks/corpus.py` "short"); each timing is preceded by `--calls // 10` untimed
calls.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from benchmarks import bench_models, corpus


def percentiles(fn: Callable[[str], object], queries: list[str], calls: int) -> dict:
    for q in queries[: max(calls // 10, 1)]:
        fn(q)
    times = []
    for i in range(calls):
        q = queries[i % len(queries)]
        start = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99))}


def measure(enc, queries: list[str], calls: int, rows: int) -> dict:
    """The timings of one model; with `rows`, of an index that many rows too."""
    from ferris_jax.retrieval.index import Index

    result = {
        "encode": percentiles(enc.encode, queries, calls),
        "encode_on_device": percentiles(
            lambda q: jax.block_until_ready(enc.encode(q, convert_to_tensor=True)), queries, calls
        ),
    }
    if not rows:
        return result
    rng = np.random.default_rng(0)
    index = Index(enc)
    for start in range(0, rows, 1 << 17):
        n = min(1 << 17, rows - start)
        vectors = rng.standard_normal((n, enc.embedding_dimension), np.float32)
        ids = [str(i) for i in range(start, start + n)]
        index.add_embeddings(vectors, ids, model=index.model["name"])
    vector = enc.encode(queries[0])
    index.search(vector, top_k=10)  # the index goes to the device
    result["index_rows"] = len(index)
    result["search_text"] = percentiles(lambda q: index.search(q, top_k=10), queries, calls)
    result["search_vector"] = percentiles(lambda q: index.search(vector, top_k=10), queries, calls)
    return result


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.query_latency", description=__doc__)
    p.add_argument("--minilm-dir", type=Path, required=True)
    p.add_argument("--models", default="minilm,bert-base")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--dtype", default=None, help="default: bfloat16 on a GPU, else float32")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/query_latency.json"))
    args = p.parse_args()

    import ferris_jax

    gpu = jax.default_backend() != "cpu"
    dtype = args.dtype or ("bfloat16" if gpu else "float32")
    queries = corpus.build("short", 512, seed=3)
    minilm = bench_models.minilm_dir(args.minilm_dir)
    results = []
    for n, name in enumerate(args.models.split(",")):
        spec = bench_models.SPECS[name]
        with bench_models.model_dir(spec, minilm) as path:
            enc = ferris_jax.load(str(path), dtype=dtype)
            result: dict = {"model": name, "dtype": dtype, "device": jax.devices()[0].device_kind}
            result |= measure(enc, queries, args.calls, args.rows if n == 0 else 0)
            print(json.dumps(result), flush=True)
            results.append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
