"""Scale-out on several devices of one machine (issue 22): bulk embedding, exact search with the
corpus spread over the devices, and data-parallel MNRL training, at 1, 2, 4, 8 devices.

    python -m benchmarks.scale_out --model-dir .bench/minilm --devices 1,2 \
        --parts embed,search,train
    python -m benchmarks.scale_out --model-dir .bench/minilm --devices 1,2 --parts ray

Each part runs every device count in this one process (the same texts, the same model), so the
per-device efficiency (texts/s at n devices / (n x texts/s at 1)) compares like with like.
`ray` embeds through Ray Data with one actor per GPU (`Embedder`, `num_gpus=1`); it starts Ray
before JAX, so it runs alone in its process. On a CPU, `--cpu-devices 4` forces four CPU devices
(a check of the script, not a measurement of scaling: they share the same cores).
Results: one JSON line per measurement, and the whole run to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True, help="MiniLM (a folder or hub id)")
    p.add_argument(
        "--model",
        choices=("minilm", "bert-base"),
        default="minilm",
        help="bert-base: random bert-base-size weights on MiniLM's tokenizer (bench_models)",
    )
    p.add_argument("--devices", default="1,2", help="comma-separated device counts")
    p.add_argument("--parts", default="embed,search,train", help="embed, search, train or ray")
    p.add_argument("--texts", type=int, default=1_000_000, help="mix-corpus texts to embed")
    p.add_argument("--batch-size", type=int, default=256, help="encode batch size per device")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--rows-per-device", type=int, default=8 << 20, help="search corpus rows")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", default="1,1024")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--train-batch", type=int, default=128, help="MNRL pairs per device")
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--cpu-devices", type=int, help="force this many CPU devices (a CPU check)")
    p.add_argument("--out", help="JSON file (default: benchmarks/results/<date>-scale-out.json)")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    counts = [int(n) for n in args.devices.split(",")]
    parts = args.parts.split(",")
    if args.cpu_devices:
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.cpu_devices}"
    if "ray" in parts:  # Ray first, before this process starts JAX
        import ray

        ray.init(num_gpus=None if not args.cpu_devices else 0)

    from benchmarks import bench_models

    with bench_models.model_dir(bench_models.SPECS[args.model], Path(args.model_dir)) as model:
        args.model_dir = str(model)
        return measure(args, counts, parts)


def measure(args: argparse.Namespace, counts: list[int], parts: list[str]) -> int:
    import jax

    from benchmarks.corpus import build_corpus

    info = {
        "device": jax.devices()[0].device_kind,
        "devices_present": len(jax.devices()),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "model": args.model,
        "dtype": args.dtype,
    }
    print(json.dumps(info), flush=True)
    results: list[dict] = []
    texts = build_corpus(args.texts) if {"embed", "ray"} & set(parts) else []
    for part in parts:
        run = {"embed": embed, "search": search, "train": train, "ray": ray_embed}[part]
        for n in counts:
            result = {"part": part, "devices": n, **run(args, n, texts)}
            print(json.dumps(result), flush=True)
            results.append(result)
        with_efficiency(results, part)
    out = Path(args.out) if args.out else RESULTS / f"{time.strftime('%Y-%m-%d')}-scale-out.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**info, "results": results}, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def with_efficiency(results: list[dict], part: str) -> None:
    """Per-device efficiency of each count against one device: rate_n / (n * rate_1)."""
    mine = [r for r in results if r["part"] == part and "per_s" in r]
    base = next((r["per_s"] for r in mine if r["devices"] == 1), None)
    for r in mine:
        if base:
            r["efficiency"] = round(r["per_s"] / (r["devices"] * base), 3)
            print(json.dumps({"part": part, "devices": r["devices"], "eff": r["efficiency"]}))


def embed(args: argparse.Namespace, n: int, texts: list[str]) -> dict:
    """encode of the corpus over n devices (batch_size per device), after a warm-up job that
    compiles every shape."""
    import ferris_jax

    enc = ferris_jax.load(args.model_dir, dtype=args.dtype, devices=n)
    enc.encode(texts[: 20_000 * n], batch_size=args.batch_size)  # compiles the shapes
    start = time.perf_counter()
    vectors = enc.encode(texts, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    return {"texts": len(vectors), "seconds": round(seconds, 2), "per_s": len(texts) / seconds}


def search(args: argparse.Namespace, n: int, texts: list[str]) -> dict:
    """Exact top-10 over rows_per_device x n random unit bfloat16 rows spread over n devices
    (what `Index` does with its blocks): latency per query count."""
    import jax
    import jax.numpy as jnp

    from benchmarks.search import time_it
    from ferris_jax.placement import Placement
    from ferris_jax.retrieval.search import search_blocks

    placement = Placement.on(jax.local_devices()[:n])
    block_rows = min(args.rows_per_device * n, 1 << 22)
    block_rows -= block_rows % n
    rows = args.rows_per_device * n

    def unit(key):
        x = jax.random.normal(key, (block_rows, args.dim), jnp.float32)
        return (x / jnp.linalg.norm(x, axis=1, keepdims=True)).astype(jnp.bfloat16)

    unit_rows = jax.jit(unit, out_shardings=placement.rows)  # each device makes its rows
    key = jax.random.key(0)
    blocks, valid = [], []
    for i in range(-(-rows // block_rows)):
        blocks.append(unit_rows(jax.random.fold_in(key, i)))
        mask = jnp.arange(block_rows) + i * block_rows < rows
        valid.append(placement.put_rows(mask))
    timings = {}
    for q in (int(c) for c in args.queries.split(",")):
        queries = jax.random.normal(jax.random.key(q), (q, args.dim), jnp.float32)
        queries = placement.put(queries / jnp.linalg.norm(queries, axis=1, keepdims=True))

        def run(queries=queries):
            return search_blocks(queries, blocks, 10, valid=valid, mesh=placement.mesh)

        timings[f"{q}_queries_ms"] = time_it(jax, run, args.rounds)["median_ms"]
    return {"rows": rows, **timings}


def train(args: argparse.Namespace, n: int, texts: list[str]) -> dict:
    """MNRL steps on global batches of train_batch x n STS-B pairs over n devices (negatives
    across every device); pairs/s, and the losses of the first steps to compare across counts
    on the same global batch (the first count's batch size, rerun at every n)."""
    import jax

    import ferris_jax
    from benchmarks.train import batches_of
    from ferris_jax.train import adamw, init_state, make_batch, train_step
    from ferris_jax.train.losses import mnrl_loss

    enc = ferris_jax.load(args.model_dir, devices=n)
    enc.max_seq_length = min(enc.max_seq_length, 128)
    size = args.train_batch * n
    optimizer = adamw(2e-5, total_steps=args.train_steps + 2, warmup_steps=1, weight_decay=0.01)
    step = train_step(enc, mnrl_loss, optimizer)
    batches = [make_batch(enc, b) for b in batches_of(size, args.train_steps + 2)]
    state = init_state(enc.params, optimizer, enc.placement)
    for batch in batches[:2]:
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    times = []
    for batch in batches[2:]:
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    # the same global batch (train_batch x first count) from the same start at every n
    same = [make_batch(enc, b) for b in batches_of(args.train_batch, 3)]
    state = init_state(enc.params, optimizer, enc.placement)
    losses = []
    for batch in same:
        state, metrics = step(state, batch)
        losses.append(round(float(metrics["loss"]), 6))
    median = statistics.median(times)
    return {"global_batch": size, "step_ms": round(median * 1e3, 2), "per_s": size / median,
            "same_batch_losses": losses}  # fmt: skip


def ray_embed(args: argparse.Namespace, n: int, texts: list[str]) -> dict:
    """Ray Data: the corpus through `Embedder` on n actors (one GPU each), vectors counted."""
    import ray

    from ferris_jax.integrations.ray import Embedder

    ds = ray.data.from_items([{"text": t} for t in texts])
    gpus = {} if args.cpu_devices else {"num_gpus": 1}
    start = time.perf_counter()
    rows = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={
            "model": args.model, "dtype": args.dtype, "encode_batch_size": args.batch_size,
        },
        compute=ray.data.ActorPoolStrategy(size=n),
        batch_size=16 * args.batch_size,
        **gpus,
    ).count()  # fmt: skip
    seconds = time.perf_counter() - start  # includes each actor's model load and compiles
    return {"texts": rows, "seconds": round(seconds, 2), "per_s": rows / seconds}


if __name__ == "__main__":
    raise SystemExit(main())
