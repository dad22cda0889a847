"""Where encode's time goes: tokenize, plan, pad, dispatch, wait for the device, copy back.

    python -m benchmarks.profile_stages --minilm-dir .bench/minilm --corpus mix \
        --texts 4096 --dtype bfloat16 --batch-size 512 --max-batch-tokens 32768

Each stage of `Encoder.encode` is run on its own over the whole corpus (after a warm-up that
compiles every program), so the sum shows whether a run is host- or device-bound. The stages
use the encoder's public pieces: its tokenizer, the planner `encode` uses (packed rows where
`enc.packing()` says so), `enc.pipeline.model_inputs` and the compiled programs of
`enc.programs`; unlike `encode`, the whole corpus is tokenized and planned as one chunk.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import jax
import numpy as np

import ferris_jax
from benchmarks import bench_models
from benchmarks import corpus as corpora
from benchmarks.timing import ready
from ferris_jax.batching import pad, plan_batches, plan_packed
from ferris_jax.pipeline import PlannedBatch


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_stages", description=__doc__.splitlines()[0]
    )
    p.add_argument("--minilm-dir", type=Path)
    p.add_argument("--model", default="minilm", choices=list(bench_models.SPECS))
    p.add_argument("--corpus", default="mix")
    p.add_argument("--texts", type=int, default=4096)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--max-batch-tokens", type=int)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--latency-calls", type=int, default=200)
    p.add_argument("--latency-only", action="store_true", help="skip the whole-corpus stages")
    args = p.parse_args()
    texts = corpora.build(args.corpus, args.texts)
    spec = bench_models.SPECS[args.model]
    with bench_models.model_dir(spec, bench_models.minilm_dir(args.minilm_dir)) as path:
        enc = ferris_jax.load(str(path), dtype=args.dtype)
    enc.max_batch_tokens = args.max_batch_tokens
    if args.latency_only:
        return profile_single_query(enc, texts, args.latency_calls)
    enc.encode(texts, batch_size=args.batch_size, show_progress_bar=False)  # compile
    leaves, _ = enc.programs.flat_params(enc.params)
    impls = enc.requested_impls()
    policy = enc.bucket_policy(args.batch_size)
    packing = enc.packing()
    stages: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def timed(name):
        start = time.perf_counter()
        yield
        stages.setdefault(name, []).append(time.perf_counter() - start)

    for _ in range(args.repeats):
        with timed("tokenize"):
            tok = enc.tokenizer.encode(texts)
        with timed("plan"):
            if packing:
                plan = plan_packed(tok.lengths, policy, packing)
            else:
                plan = plan_batches(tok.lengths, policy)
        planned = [PlannedBatch(b.texts, tok, b) for b in plan]
        with timed("pad"):
            batches = [enc.pipeline.model_inputs(b) for b in planned]
        programs = [enc.programs.get(enc.params, b.shape, impls) for b in planned]
        with timed("dispatch"):
            outs = [f(leaves, *b, np.int32(0)) for f, b in zip(programs, batches, strict=True)]
        with timed("device wait"):
            for o in outs:
                ready(o)
        with timed("copy to host"):
            [np.asarray(o) for o in outs]
        with timed("encode (all)"):
            enc.encode(texts, batch_size=args.batch_size, show_progress_bar=False)
    print(f"{args.model}: {len(texts)} {args.corpus} texts, {int(tok.lengths.sum())} tokens, "
          f"{len(plan)} batches, {enc.device}, {args.dtype}, batch {args.batch_size}, "
          f"max_batch_tokens {args.max_batch_tokens}, packing {packing}")  # fmt: skip
    print("| stage | median ms |\n|---|---:|")
    for name, ts in stages.items():
        print(f"| {name} | {1e3 * float(np.median(ts)):.1f} |")
    profile_single_query(enc, texts, args.latency_calls)


def profile_single_query(enc, texts: list[str], calls: int) -> None:
    """The same stages for one short text per call (the latency path), in microseconds."""
    queries = [t for t in texts if len(t) < 80][:calls] or texts[:calls]
    enc.precompile(1)
    leaves, _ = enc.programs.flat_params(enc.params)
    impls = enc.requested_impls()
    policy = enc.bucket_policy(1)
    stages: dict[str, list[float]] = {}
    for q in queries * 2:
        t0 = time.perf_counter()
        tok = enc.tokenizer.encode([q])
        t1 = time.perf_counter()
        (batch,) = plan_batches(tok.lengths, policy)
        b = pad(tok, batch.texts, batch.shape, enc.tokenizer.pad_token_id)
        t2 = time.perf_counter()
        program = enc.programs.get(enc.params, batch.shape, impls)
        out = program(leaves, b.input_ids, b.attention_mask, b.token_type_ids, np.int32(0))
        t3 = time.perf_counter()
        ready(out)
        t4 = time.perf_counter()
        np.asarray(out)
        t5 = time.perf_counter()
        inputs = (b.input_ids, b.attention_mask, b.token_type_ids, np.int32(0))
        inputs = ready(jax.device_put(inputs, enc.device))
        t6 = time.perf_counter()
        out = program(leaves, *inputs)
        t7 = time.perf_counter()
        ready(out)
        t8 = time.perf_counter()
        enc.encode(q)
        t9 = time.perf_counter()
        for name, seconds in (
            ("tokenize", t1 - t0), ("plan + pad", t2 - t1),
            ("dispatch (numpy inputs)", t3 - t2), ("device wait", t4 - t3),
            ("copy to host", t5 - t4), ("device_put inputs (one call)", t6 - t5),
            ("dispatch (device inputs)", t7 - t6), ("device wait (device inputs)", t8 - t7),
            ("encode (all)", t9 - t8),
        ):  # fmt: skip
            stages.setdefault(name, []).append(seconds)
    print(f"\nsingle query ({len(queries)} texts x 2, batch shape {batch.shape})")
    print("| stage | median us | p99 us |\n|---|---:|---:|")
    for name, ts in stages.items():
        p50, p99 = np.percentile(ts, [50, 99]) * 1e6
        print(f"| {name} | {p50:.0f} | {p99:.0f} |")


if __name__ == "__main__":
    main()
