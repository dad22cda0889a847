"""Start-up of a fresh process: time to first embedding, and host memory while loading.

The harness (`run.py`) spawns this script once per case; it prints one JSON line:

    python -m benchmarks.startup --library ferris --model DIR --device cpu --cache-dir DIR

Times are from the parent's spawn: interpreter start, imports, runtime start (JAX's or torch's
device client), load, first `encode` of one short text. `load_peak_delta_mb` is the peak resident
memory during loading (the high-water mark is reset just before, Linux) minus the resident memory
just before: what loading the checkpoint costs on the host, next to the size of its weight files;
`first_embedding_peak_delta_mb` is the same through the first `encode` (a loader that maps the
file and reads weights on first use shows its cost there).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

TEXT = "how do I pad a batch of token ids?"
# The repository root: children run there (`python -m benchmarks.startup`), so they import this
# checkout's ferris_jax.
ROOT = Path(__file__).resolve().parents[1]


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    """Resident memory of this process now (Linux /proc), in MiB."""
    return _proc_status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB: VmHWM on Linux (ru_maxrss there would
    include the parent's peak, inherited across fork and exec), else ru_maxrss."""
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Reset the peak-RSS high-water mark to the current RSS (Linux >= 4.0); False if not."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _child(args: argparse.Namespace) -> dict:
    t_start = time.time()
    rec: dict = {"process_start_s": t_start - args.spawned_at}
    if args.library == "ferris":
        import ferris_jax
        from ferris_jax.runtime.compilation import cache_stats
    else:
        import torch
        from sentence_transformers import SentenceTransformer
    t_import = time.time()
    if args.library == "ferris":  # start the device client, so that loading is measured alone
        import jax

        jax.numpy.zeros(1, device=jax.devices("gpu" if args.device == "gpu" else "cpu")[0])
    elif args.device == "gpu":
        torch.zeros(1, device="cuda")
    t_init = time.time()
    rss_before = rss_mb()
    peak_reset = reset_peak_rss()
    if args.library == "ferris":
        model = ferris_jax.load(
            args.model,
            dtype=args.dtype,
            backend="cuda" if args.device == "gpu" else "cpu",
            compilation_cache=args.cache_dir,
        )
    else:
        model = SentenceTransformer(args.model, device="cuda" if args.device == "gpu" else "cpu")
        model.to(getattr(torch, args.dtype))
    t_load = time.time()
    peak_after_load = peak_rss_mb()
    emb = model.encode(TEXT)
    t_first = time.time()
    rec.update(
        import_s=t_import - t_start,
        runtime_init_s=t_init - t_import,
        load_s=t_load - t_init,
        first_encode_s=t_first - t_load,
        ttfe_s=t_first - args.spawned_at,
        embedding_dim=int(emb.shape[-1]),
        rss_before_load_mb=rss_before,
        peak_rss_load_mb=peak_after_load,
        peak_rss_load_is_load_only=peak_reset,
        load_peak_delta_mb=None if rss_before is None else peak_after_load - rss_before,
        peak_rss_end_mb=peak_rss_mb(),
    )
    # Some loaders map the weights and read them on first use: count the first call too.
    if rss_before is not None:
        rec["first_embedding_peak_delta_mb"] = rec["peak_rss_end_mb"] - rss_before
    if args.library == "ferris":
        rec.update(
            runtime_device=str(model.device),
            compile_s=model.compile_seconds,
            programs=len(model.compiled_programs),
            cache_stats=cache_stats(),
        )
    else:
        rec["runtime_device"] = str(model.device)
    return rec


def measure(
    library: str,
    model: Path,
    device: str,
    *,
    dtype: str = "float32",
    cache_dir: Path | None = None,
    timeout: float = 300,
) -> dict:
    """Run the child once; its record, or {"error": ...} with the last line it printed."""
    env = dict(os.environ)
    if device == "cpu":
        env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "benchmarks.startup", "--library", library]
    cmd += ["--model", str(Path(model).resolve())]  # the child runs in ROOT
    cmd += ["--device", device, "--dtype", dtype]
    if cache_dir is not None:
        cmd += ["--cache-dir", str(cache_dir)]
    cmd += ["--spawned-at", repr(time.time())]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.startup", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--library", choices=("ferris", "st"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--cache-dir", default=None, help="ferris: persistent compilation cache")
    parser.add_argument("--spawned-at", type=float, default=None, help="parent's time.time()")
    args = parser.parse_args()
    if args.spawned_at is None:
        args.spawned_at = time.time()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(json.dumps(_child(args)))


if __name__ == "__main__":
    main()
