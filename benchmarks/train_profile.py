"""Where a train step's time goes on the device: the GPU kernels of ferris_jax's MNRL step,
summed by name from a JAX profiler trace, beside the step's wall time and its parts.

    python -m benchmarks.train_profile --minilm-dir .bench/minilm --batch 1024

For each variant the step is compiled on every batch shape first, then timed over `--steps`
batches of STS-B train pairs (as `benchmarks.train` makes them), then traced over
`--trace-steps` more. Parts timed on their own: the forward pass of both columns, and the
loss's value and gradient without the optimizer. Variants: "ours" (the train step as it is),
"bf16-tables" (embedding tables cast to bfloat16 before the lookup, as flax's `nnx.Embed`
does: the backward is then a bfloat16 scatter-add).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import ferris_jax
from benchmarks import bench_models
from benchmarks.timing import ready
from benchmarks.train import batches_of
from ferris_jax.train import adamw, init_state, make_batch, train_step
from ferris_jax.train import step as train_step_module
from ferris_jax.train.losses import mnrl_loss


def kernel_times(trace_dir: Path, steps: int, top: int) -> dict:
    """Per-step milliseconds of the GPU's busiest kernels in a profiler trace, by name."""
    from jax.profiler import ProfileData

    files = sorted(trace_dir.rglob("*.xplane.pb"))
    if not files:
        return {"error": f"no .xplane.pb under {trace_dir}"}
    data = ProfileData.from_file(str(files[-1]))
    by_line: dict[str, collections.Counter] = {}
    for plane in data.planes:
        if not plane.name.startswith("/device:GPU"):
            continue
        for line in plane.lines:
            kind = "ops" if "XLA Ops" in line.name else "kernels" if "Stream" in line.name else None
            if kind is None:
                continue
            counter = by_line.setdefault(kind, collections.Counter())
            for event in line.events:
                counter[event.name] += event.duration_ns / 1e6 / steps
    if not by_line:
        return {"error": "no GPU plane", "planes": [plane.name for plane in data.planes]}
    return {
        kind: {
            "total_ms_per_step": round(sum(c.values()), 3),
            "top": [(name[:120], round(ms, 3)) for name, ms in c.most_common(top)],
        }
        for kind, c in by_line.items()
    }


def timed(fn, *args, rounds: int) -> float:
    """The mean of `rounds` calls, in ms, after one warm-up call."""
    ready(fn(*args))
    start = time.perf_counter()
    for _ in range(rounds):
        out = fn(*args)
    ready(out)
    return (time.perf_counter() - start) / rounds * 1e3


def profile_variant(enc, batches, args) -> dict:
    optimizer = adamw(2e-5, total_steps=1000, warmup_steps=1, weight_decay=0.01)
    step = train_step(enc, mnrl_loss, optimizer)
    state = init_state(enc.params, optimizer)
    seen = set()
    start = time.perf_counter()
    for batch in batches:
        if batch.shape not in seen:
            seen.add(batch.shape)
            state, _ = step(state, batch)
    ready(state)
    compile_s = time.perf_counter() - start
    cache_after_compile = step._cache_size()
    start = time.perf_counter()
    for _ in range(10):
        jax.tree.leaves(state)
    flatten_ms = (time.perf_counter() - start) / 10 * 1e3
    host_ms = []
    timed_batches = batches[: args.steps]
    for batch in timed_batches[:3]:
        t = time.perf_counter()
        state, metrics = step(state, batch)
        host_ms.append((time.perf_counter() - t) * 1e3)
        ready(state)
    start = time.perf_counter()
    for batch in timed_batches:
        state, metrics = step(state, batch)
    dispatch_s = time.perf_counter() - start
    ready(state)
    seconds = time.perf_counter() - start

    embed = train_step_module.embedder(enc)
    first = batches[0]
    joined = jax.tree.map(lambda *xs: jnp.concatenate(xs), *first.columns)
    forward = jax.jit(embed)
    grad = jax.jit(lambda p, b: train_step_module.loss_and_grad(embed, mnrl_loss, p, b))
    params = state.params
    parts = {
        "forward_both_columns_ms": timed(forward, params, joined, rounds=args.steps),
        "loss_and_grad_ms": timed(grad, params, first, rounds=args.steps),
    }

    trace_dir = Path(tempfile.mkdtemp(prefix="train-trace-"))
    traced = batches[args.steps : args.steps + args.trace_steps]
    with jax.profiler.trace(str(trace_dir)):
        for batch in traced:
            state, metrics = step(state, batch)
        ready(state)
    kernels = kernel_times(trace_dir, len(traced), args.top)
    return {
        "pairs_per_s": args.batch * len(timed_batches) / seconds,
        "ms_per_step": seconds / len(timed_batches) * 1e3,
        "dispatch_ms_per_step": dispatch_s / len(timed_batches) * 1e3,
        "compile_s": compile_s,
        "jit_cache_after_compile": cache_after_compile,
        "jit_cache_after_timing": step._cache_size(),
        "flatten_state_ms": flatten_ms,
        "host_ms_per_call_after_sync": host_ms,
        "versions": {m.__name__: m.__version__ for m in (jax, __import__("flax"))},
        "shapes": sorted({b.shape for b in batches}),
        **parts,
        "kernels": kernels,
        "last_loss": float(metrics["loss"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.train_profile", description=__doc__.splitlines()[0]
    )
    p.add_argument("--minilm-dir", type=Path)
    p.add_argument("--model", default="minilm", choices=list(bench_models.SPECS))
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--trace-steps", type=int, default=2)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--variants", default="ours,bf16-tables")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    spec = bench_models.SPECS[args.model]
    results = {"command": "python -m benchmarks.train_profile " + " ".join(os.sys.argv[1:])}
    with bench_models.model_dir(spec, bench_models.minilm_dir(args.minilm_dir)) as path:
        enc = ferris_jax.load(path)
        enc.max_seq_length = min(enc.max_seq_length, 128)
        pairs = batches_of(args.batch, args.steps + args.trace_steps)
        batches = [make_batch(enc, b) for b in pairs]
        original = train_step_module.compute_params
        for variant in args.variants.split(","):
            if variant == "bf16-tables":
                train_step_module.compute_params = lambda params, dtype: jax.tree.map(
                    lambda x: x.astype(dtype), params
                )
            else:
                train_step_module.compute_params = original
            results[variant] = profile_variant(enc, batches, args)
            print(variant, json.dumps(results[variant], indent=1), flush=True)
        train_step_module.compute_params = original
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
