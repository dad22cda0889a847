"""How busy the GPU is during a large encode job: the union of its kernels' intervals in a JAX
profiler trace, over the job's wall time (issue 26, item 2: at least 90% for MiniLM).

    python -m benchmarks.gpu_busy --minilm-dir .bench/minilm --texts 65536 \
        --modes encode,tensor,index --dtype bfloat16 --batch-size 512

Each mode embeds the same texts (`benchmarks/corpus.py`, --corpus) once untraced after a
warm-up that compiles every program (its wall time: `wall_s`), then once under
`jax.profiler.trace`. From the trace: the job's window (a `TraceAnnotation` on the host), the
GPU's kernels (every "Stream" line of the GPU plane, memory copies apart) merged into busy
intervals, and the gaps between them. Modes: "encode" (numpy out, as a user calls it),
"tensor" (`convert_to_tensor=True`: vectors stay on the device), "index" (`Index.add` of the
texts, which stores them on the host and in shards).
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import jax

from benchmarks import corpus


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


# Host functions wrapped in a `TraceAnnotation` named after them (module, attribute), so that
# each of the GPU's largest idle gaps can be matched with what the host was doing then.
ANNOTATED = (
    ("ferris_jax.pipeline", "Pipeline.dispatch"),
    ("ferris_jax.pipeline", "Pipeline.model_inputs"),
    ("ferris_jax.pipeline", "plan_batches"),
    ("ferris_jax.pipeline", "plan_packed"),
    ("ferris_jax.pipeline", "EmbeddedBatch.numpy"),
    ("ferris_jax.programs", "Programs.compile_all"),
    ("ferris_jax.tokenize", "TextTokenizer.encode"),
    ("ferris_jax.encoder", "validate_texts"),
    ("ferris_jax.retrieval.index", "Index._append"),
    ("ferris_jax.retrieval.index", "_items"),
)


def annotate() -> None:
    """Wrap `ANNOTATED` in trace annotations (ferris_jax's own code is left as it is)."""
    import functools
    import importlib

    for module_name, path in ANNOTATED:
        owner = importlib.import_module(module_name)
        *outer, name = path.split(".")
        for part in outer:
            owner = getattr(owner, part)
        fn = getattr(owner, name)

        def wrapped(*a, __fn=fn, __name=path, **k):
            with jax.profiler.TraceAnnotation(__name):
                return __fn(*a, **k)

        setattr(owner, name, functools.wraps(fn)(wrapped))


def busy_fraction(trace_dir: Path, window_name: str) -> dict:
    """The GPU's busy time inside the host annotation `window_name`, from the trace, and what
    the host was doing (`ANNOTATED` functions, by thread) during the largest idle gaps."""
    from jax.profiler import ProfileData

    files = sorted(trace_dir.rglob("*.xplane.pb"))
    data = ProfileData.from_file(str(files[-1]))
    window = None
    kernels: list[tuple[float, float]] = []
    copies: list[tuple[float, float]] = []
    host: list[tuple[float, float, str, str]] = []
    names = {path for _, path in ANNOTATED}
    for plane in data.planes:
        for line in plane.lines:
            if plane.name.startswith("/host"):
                for event in line.events:
                    if event.name == window_name:
                        window = (event.start_ns, event.end_ns)
                    elif event.name in names:
                        host.append((event.start_ns, event.end_ns, event.name, line.name))
            elif plane.name.startswith("/device:GPU") and "Stream" in line.name:
                for event in line.events:
                    copy = event.name.lower().startswith("memcpy")
                    (copies if copy else kernels).append((event.start_ns, event.end_ns))
    if window is None or not kernels:
        return {"error": "no job annotation or no GPU kernels in the trace"}
    a, b = window
    busy = [(max(s, a), min(e, b)) for s, e in _union(kernels) if e > a and s < b]
    gaps = [(busy[i][1], busy[i + 1][0]) for i in range(len(busy) - 1)]
    gap_ms = sorted(((e - s) / 1e6 for s, e in gaps), reverse=True)
    copy_ms = sum(min(e, b) - max(s, a) for s, e in _union(copies) if e > a and s < b) / 1e6
    busy_ms = sum(e - s for s, e in busy) / 1e6

    def doing(a: float, b: float) -> list[str]:
        """The annotated host work overlapping [a, b], longest first."""
        found = collections.Counter()
        for s, e, name, thread in host:
            if e > a and s < b:
                found[f"{name} @{thread[:24]}"] += (min(e, b) - max(s, a)) / 1e6
        return [f"{k}: {v:.1f} ms" for k, v in found.most_common(5)]

    first = busy[0][0] if busy else b
    widest = sorted(gaps, key=lambda g: g[0] - g[1])[:5]
    return {
        "host_before_first_kernel": doing(a, first),
        "host_in_largest_gaps": [
            {"gap_ms": round((e - s) / 1e6, 3), "host": doing(s, e)} for s, e in widest
        ],
        "job_ms": (b - a) / 1e6,
        "gpu_busy_ms": busy_ms,
        "busy_fraction": busy_ms / ((b - a) / 1e6),
        "before_first_kernel_ms": (busy[0][0] - a) / 1e6 if busy else None,
        "after_last_kernel_ms": (b - busy[-1][1]) / 1e6 if busy else None,
        "largest_gaps_ms": [round(g, 3) for g in gap_ms[:8]],
        "gaps_over_1ms_total_ms": sum(g for g in gap_ms if g > 1.0),
        "memcpy_ms": copy_ms,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_busy", description=__doc__)
    p.add_argument("--minilm-dir", type=Path, required=True)
    p.add_argument("--texts", type=int, default=65536)
    p.add_argument("--corpus", default="mix")
    p.add_argument("--modes", default="encode,tensor,index")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--max-batch-tokens", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_busy.json"))
    args = p.parse_args()

    import ferris_jax
    from ferris_jax.retrieval.index import Index

    annotate()
    enc = ferris_jax.load(str(args.minilm_dir), dtype=args.dtype)
    if args.max_batch_tokens:
        enc.max_batch_tokens = args.max_batch_tokens
    texts = corpus.build(args.corpus, args.texts, seed=0)

    def job(mode: str) -> None:
        if mode == "encode":
            enc.encode(texts, batch_size=args.batch_size)
        elif mode == "tensor":
            jax.block_until_ready(
                enc.encode(texts, batch_size=args.batch_size, convert_to_tensor=True)
            )
        else:
            index = Index(enc)
            index.add(texts, batch_size=args.batch_size, show_progress_bar=False)

    results = []
    for mode in args.modes.split(","):
        job(mode)  # compiles every program the job uses
        start = time.perf_counter()
        job(mode)
        wall = time.perf_counter() - start
        trace_dir = Path(tempfile.mkdtemp(prefix="ferris-busy-"))
        with jax.profiler.trace(str(trace_dir)), jax.profiler.TraceAnnotation("ferris-job"):
            start = time.perf_counter()
            job(mode)
            traced = time.perf_counter() - start
        result = {
            "mode": mode,
            "texts": len(texts),
            "wall_s": wall,
            "texts_per_s": len(texts) / wall,
            "traced_wall_s": traced,
            **busy_fraction(trace_dir, "ferris-job"),
            "device": str(jax.devices()[0].device_kind),
        }
        print(json.dumps(result), flush=True)
        results.append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
