"""Exact top-k search: `retrieval.search_blocks` against torch mm + topk (GPU) and FAISS
`IndexFlatIP` (CPU), on the same vectors in the same run, after a check that our results equal
a full sort's.

    # H200: 8M x 384 bfloat16, k=10, 1 and 1,024 queries, vs torch mm + topk
    python -m benchmarks.search --platform cuda --minilm .bench/minilm
    # CPU: 1M x 384 float32 vs faiss.IndexFlatIP, same thread count
    python -m benchmarks.search --platform cpu --threads 16
    # the script itself on a small CPU (about a minute)
    python -m benchmarks.search --platform cpu --rows 100000 --block-rows 32768 --threads 2

Corpora: random unit vectors, and (with `--minilm`, a model directory or hub name that loads
offline) a "real-derived" corpus: MiniLM embeddings of `benchmarks.corpus` sentences, each
corpus row one of them plus Gaussian noise (sigma 0.02), renormalized: many near-ties, the hard
case for a two-stage top-k. Exactness: for 8 queries, our rows and scores must equal a full
stable sort (`jnp.argsort`) of the same block scores; any mismatch is printed and the script
exits 1 after writing the JSON. Timings: each call is run 3 times first, then `--rounds` times
to `block_until_ready` / `torch.cuda.synchronize`; the median (and min) in ms is reported.
Threads (CPU): the process is pinned to `--threads` cores before JAX starts (XLA sizes its pool
from the affinity mask) and FAISS gets `omp_set_num_threads(--threads)`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.search", description=__doc__.split("\n")[0]
    )
    p.add_argument("--platform", default="cuda", help="cuda (vs torch) or cpu (vs FAISS)")
    p.add_argument("--rows", type=int, help="corpus rows (default: 8M on cuda, 1M on cpu)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--dtype", help="corpus dtype (default: bfloat16 on cuda, float32 on cpu)")
    p.add_argument("--block-rows", type=int, default=1 << 20, help="rows per corpus block")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--queries", default="1,1024", help="comma-separated query counts")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, help="CPU threads for JAX and FAISS (cpu only)")
    p.add_argument("--score-budget-mib", type=int, help="search_blocks' score_budget_bytes")
    p.add_argument("--minilm", help="model for the real-derived corpus (skipped when absent)")
    p.add_argument(
        "--real-texts", type=int, help="sentences embedded (default: cuda 20000, cpu 2000)"
    )
    p.add_argument(
        "--out", help="JSON file (default: benchmarks/results/DATE-search-PLATFORM.json)"
    )
    return p.parse_args()


def main() -> int:
    args = parse_args()
    cpu = args.platform == "cpu"
    if cpu and args.threads:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    # Before jax is imported; a GPU run keeps the CPU backend too (ferris_jax.load may probe it).
    os.environ["JAX_PLATFORMS"] = "cpu" if cpu else f"{args.platform},cpu"
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ferris_jax.retrieval import search

    rows = args.rows or (1_000_000 if cpu else 8 << 20)
    dtype = jnp.dtype(args.dtype or ("float32" if cpu else "bfloat16"))
    counts = [int(c) for c in args.queries.split(",")]
    budget = (args.score_budget_mib << 20) if args.score_budget_mib else search.SCORE_BUDGET_BYTES
    device = jax.devices()[0]
    info = {
        "device": device.device_kind,
        "platform": device.platform,
        "jax": jax.__version__,
        "python": platform.python_version(),
        "rows": rows,
        "dim": args.dim,
        "dtype": dtype.name,
        "block_rows": args.block_rows,
        "k": args.k,
        "rounds": args.rounds,
        "threads": args.threads or len(os.sched_getaffinity(0)),
        "score_budget_bytes": budget,
    }
    print(json.dumps(info), flush=True)
    failures: list[str] = []
    corpora = {"random": random_blocks(jax, jnp, rows, args.dim, args.block_rows, dtype, seed=0)}
    derived = real_derived_blocks(jax, jnp, np, args, rows, dtype)
    if derived is not None:
        corpora["real-derived"] = derived
    checks = {}
    for name, (blocks, valid) in corpora.items():
        for q, matvec in ((1, 0), (1, 1), (8, 0)):  # dot and multiply + row-sum forms
            search.MATVEC_MAX_QUERIES, saved = matvec, search.MATVEC_MAX_QUERIES
            queries = unit_queries(jax, jnp, blocks, q, seed=1)
            check = exactness(
                jax, jnp, np, search, queries, blocks, valid, args.k, budget, failures
            )
            search.MATVEC_MAX_QUERIES = saved
            checks[f"{name}, {q} queries, matvec {matvec}"] = check
            print(f"exact vs full sort ({name}, {q} queries, matvec {matvec}): {check}", flush=True)
    blocks, valid = corpora["random"]
    timings = []
    for q in counts:
        queries = unit_queries(jax, jnp, blocks, q, seed=2)

        def ours(queries=queries):
            return search.search_blocks(
                queries, blocks, args.k, valid=valid, score_budget_bytes=budget
            )

        timings.append({"impl": "ferris_jax", "queries": q, **time_it(jax, ours, args.rounds)})
        print(json.dumps(timings[-1]), flush=True)
        if q == 1 and not cpu:  # the same search, multiply + row-sum scores (45x slower on CPU)
            saved, search.MATVEC_MAX_QUERIES = search.MATVEC_MAX_QUERIES, 1
            timings.append(
                {"impl": "ferris_jax matvec", "queries": q, **time_it(jax, ours, args.rounds)}
            )
            search.MATVEC_MAX_QUERIES = saved
            print(json.dumps(timings[-1]), flush=True)
    peer = cpu_peer if cpu else torch_peer
    timings += peer(jax, jnp, np, args, blocks, valid, rows, counts, failures)
    result = dict(info, exactness=checks, timings=timings, failures=failures)
    out = (
        Path(args.out)
        if args.out
        else RESULTS / f"{datetime.date.today()}-search-{args.platform}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    for line in failures:
        print("FAIL", line, file=sys.stderr)
    return 1 if failures else 0


def random_blocks(jax, jnp, rows, dim, block_rows, dtype, seed):
    """Random unit vectors in blocks, made on the device; the last block padded and masked."""
    n_blocks = -(-rows // block_rows)
    blocks, valid = [], []
    key = jax.random.key(seed)

    @jax.jit
    def make(key):
        x = jax.random.normal(key, (block_rows, dim), jnp.float32)
        return (x / jnp.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)

    for i in range(n_blocks):
        blocks.append(make(jax.random.fold_in(key, i)))
        valid.append(jnp.arange(block_rows) + i * block_rows < rows)
    return blocks, valid


def real_derived_blocks(jax, jnp, np, args, rows, dtype):
    if not args.minilm:
        print("real-derived corpus skipped: no --minilm", flush=True)
        return None
    try:
        import ferris_jax
        from benchmarks.corpus import build

        base = ferris_jax.load(args.minilm).encode(
            build("sentence", args.real_texts or (2000 if args.platform == "cpu" else 20_000)),
            batch_size=128,
        )
    except Exception as e:  # no model offline: the random corpus still runs
        print(f"real-derived corpus skipped: {type(e).__name__}: {e}", flush=True)
        return None
    base = jnp.asarray(base[:, : args.dim])
    n_blocks = -(-rows // args.block_rows)

    @jax.jit
    def make(key):
        k1, k2 = jax.random.split(key)
        picks = jax.random.randint(k1, (args.block_rows,), 0, base.shape[0])
        x = base[picks] + 0.02 * jax.random.normal(k2, (args.block_rows, base.shape[1]))
        return (x / jnp.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)

    key = jax.random.key(3)
    blocks = [make(jax.random.fold_in(key, i)) for i in range(n_blocks)]
    valid = [jnp.arange(args.block_rows) + i * args.block_rows < rows for i in range(n_blocks)]
    return blocks, valid


def unit_queries(jax, jnp, blocks, q, seed):
    """Corpus rows plus noise, renormalized: queries with near neighbours, float32."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    picks = jax.random.randint(k1, (q,), 0, blocks[0].shape[0])
    x = blocks[0][picks].astype(jnp.float32) + 0.1 * jax.random.normal(k2, (q, blocks[0].shape[1]))
    return x / jnp.linalg.norm(x, axis=1, keepdims=True)


def exactness(jax, jnp, np, search, queries, blocks, valid, k, budget, failures) -> dict:
    """Our top-k against a full stable sort of the same per-block scores."""
    scores, rows = search.search_blocks(queries, blocks, k, valid=valid, score_budget_bytes=budget)
    matvec = queries.shape[0] <= search.MATVEC_MAX_QUERIES
    block_scores = jax.jit(search._scores, static_argnums=(2, 3))  # the scores it computes
    full = []
    for block, mask in zip(blocks, valid, strict=True):
        s = block_scores(queries, block, "float", matvec)
        full.append(jnp.where(mask[None, :], s, -jnp.inf))
    full = jnp.concatenate(full, axis=1)
    order = jnp.argsort(-full, axis=1, stable=True)[:, :k]
    want_rows = np.asarray(order)
    want_scores = np.asarray(jnp.take_along_axis(full, order, axis=1))
    rows_equal = bool((np.asarray(rows) == want_rows).all())
    max_diff = float(np.abs(np.asarray(scores) - want_scores).max())
    if not rows_equal or max_diff > 0:
        failures.append(f"top-k differs from a full sort: rows equal {rows_equal}, max {max_diff}")
    return {"queries": int(queries.shape[0]), "rows_equal": rows_equal, "max_score_diff": max_diff}


def time_it(jax, fn, rounds, sync=None) -> dict:
    from benchmarks.timing import ready  # here: JAX_PLATFORMS is set before jax is imported

    sync = sync or ready
    for _ in range(3):
        sync(fn())
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        sync(fn())
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": round(statistics.median(times), 3), "min_ms": round(min(times), 3)}


def torch_peer(jax, jnp, np, args, blocks, valid, rows, counts, failures) -> list[dict]:
    try:
        import torch
    except ImportError:
        print("torch peer skipped: torch is not installed", flush=True)
        return []
    corpus = torch.from_dlpack(jnp.concatenate(blocks)[:rows])  # the same vectors, on the GPU
    out = []
    for q in counts:
        queries = torch.from_dlpack(
            unit_queries(jax, jnp, blocks, q, seed=2).astype(blocks[0].dtype)
        )

        def mm_topk(queries=queries):
            return torch.topk(queries @ corpus.T, args.k, dim=1)

        def sync(result):
            torch.cuda.synchronize()
            return result

        out.append(
            {"impl": "torch mm+topk", "queries": q, **time_it(jax, mm_topk, args.rounds, sync)}
        )
        print(json.dumps(out[-1]), flush=True)
    return out


def cpu_peer(jax, jnp, np, args, blocks, valid, rows, counts, failures) -> list[dict]:
    try:
        import faiss
    except ImportError:
        print("FAISS peer skipped: faiss is not installed", flush=True)
        return []
    threads = len(os.sched_getaffinity(0))
    faiss.omp_set_num_threads(threads)
    corpus = np.ascontiguousarray(
        np.concatenate([np.asarray(b, np.float32) for b in blocks])[:rows]
    )
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    out = []
    for q in counts:
        queries = np.asarray(unit_queries(jax, jnp, blocks, q, seed=2))

        def flat(queries=queries):
            return index.search(queries, args.k)

        out.append({"impl": "faiss IndexFlatIP", "queries": q, "threads": threads})
        out[-1].update(time_it(jax, flat, args.rounds, sync=lambda r: r))
        print(json.dumps(out[-1]), flush=True)
        from ferris_jax.retrieval.search import search_blocks

        _, ours = search_blocks(queries, blocks, args.k, valid=valid)
        _, want = index.search(queries, args.k)
        agree = float((np.asarray(ours) == want).mean())
        out[-1]["ids_equal_fraction"] = agree
        if agree < 0.99:
            failures.append(f"FAISS ids agree on {agree:.4f} of places at {q} queries")
    return out


if __name__ == "__main__":
    sys.exit(main())
