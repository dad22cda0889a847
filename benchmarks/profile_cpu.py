"""Where the CPU time goes: ferris_jax's compiled ops against sentence-transformers' torch ops.

    python -m benchmarks.profile_cpu --corpus long --texts 64 --max-isa avx2 --out prof.json

Both libraries encode the same texts (batch size 32, float32) once to warm up, once timed, and
once under their profilers: JAX's (one event per executed XLA:CPU thunk, joined to the
optimized HLO that `--xla_dump_to` writes, to name each thunk's op and shape) and torch's
(`key_averages`). Ops are grouped into the same few categories for both; the FLOP rate of the
matmul categories is computed from their shapes.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time
from pathlib import Path

from benchmarks import bench_models, cpu_isa
from benchmarks import corpus as corpora

_HLO_LINE = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = (\w+)\[([\d,]*)\]\S* (\w+)\(")


def _category(name: str, dims: list[int], op_name: str, hidden: int) -> str:
    if not name.startswith(("ynn", "dot", "xnn", "onednn")):
        return "elementwise, softmax, LayerNorm, GELU, copies"
    if len(dims) == 4:
        return "attention: scores (Q K^T)" if "bnqd,bnkd" in op_name else "attention: values (P V)"
    return "dense: to hidden size" if dims and dims[-1] == hidden else "dense: FFN up"


def profile_ferris(model_dir: Path, texts: list[str], hidden: int, workdir: Path) -> dict:
    import jax

    import ferris_jax

    enc = ferris_jax.load(str(model_dir))
    enc.encode(texts, batch_size=32)
    t0 = time.perf_counter()
    enc.encode(texts, batch_size=32)
    wall = time.perf_counter() - t0
    with jax.profiler.trace(str(workdir / "trace"), create_perfetto_trace=True):
        enc.encode(texts, batch_size=32)
    shapes = {}
    for path in glob.glob(str(workdir / "hlo" / "*after_optimizations.txt")):
        for line in Path(path).read_text().splitlines():
            if m := _HLO_LINE.match(line):
                op = re.search(r'op_name="([^"]+)"', line)
                dims = [int(d) for d in m.group(3).split(",") if d]
                shapes[m.group(1)] = (dims, op.group(1) if op else "")
    trace = glob.glob(str(workdir / "trace" / "**" / "*.trace.json.gz"), recursive=True)[0]
    with gzip.open(trace) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    seconds = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e["name"] in shapes:
            dims, op_name = shapes[e["name"]]
            seconds[_category(e["name"], dims, op_name, hidden)] += e["dur"] / 1e6
    return {"wall_s": wall, "ops_s": dict(seconds)}


_TORCH_CATEGORIES = {
    "aten::addmm": "dense (all projections)",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention (fused flash kernel)",
}


def profile_st(model_dir: Path, texts: list[str]) -> dict:
    from sentence_transformers import SentenceTransformer
    from torch.profiler import ProfilerActivity, profile

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.encode(texts, batch_size=32)
    t0 = time.perf_counter()
    model.encode(texts, batch_size=32)
    wall = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.encode(texts, batch_size=32)
    seconds = collections.Counter()
    for row in prof.key_averages():
        category = _TORCH_CATEGORIES.get(row.key, "elementwise, softmax, LayerNorm, GELU, copies")
        seconds[category] += row.self_cpu_time_total / 1e6
    return {"wall_s": wall, "ops_s": dict(seconds),
            "attention": model[0].auto_model.config._attn_implementation}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_cpu", description=__doc__)
    p.add_argument("--model", default="minilm", choices=sorted(bench_models.SPECS))
    p.add_argument("--minilm-dir", type=Path)
    p.add_argument("--corpus", default="long", choices=corpora.KINDS)
    p.add_argument("--texts", type=int, default=64)
    p.add_argument("--max-isa", choices=("native", "avx2"), default="native")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ferris-profile-cpu-"))
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={workdir / 'hlo'} --xla_dump_hlo_as_text"
    ).strip()
    limits = cpu_isa.limit(args.max_isa)
    spec = bench_models.SPECS[args.model]
    minilm = bench_models.minilm_dir(args.minilm_dir)
    path = minilm if spec.real else bench_models.build_random(spec, minilm, workdir / spec.name, 0)
    texts = corpora.build(args.corpus, args.texts, seed=0)
    record = {
        "model": spec.name, "corpus": args.corpus, "texts": args.texts, "isa": limits,
        "matmul_gflops": cpu_isa.check(),
        "ferris": profile_ferris(path, texts, spec.hidden_size, workdir),
        "st": profile_st(path, texts),
    }  # fmt: skip
    for lib in ("ferris", "st"):
        r = record[lib]
        print(f"{lib}: {args.texts / r['wall_s']:.1f} texts/s (wall {r['wall_s']:.2f} s)")
        for category, s in sorted(r["ops_s"].items(), key=lambda kv: -kv[1]):
            print(f"  {s:7.3f} s  {category}")
    print(json.dumps(record["matmul_gflops"]))
    if args.out:
        args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
