"""LayerNorm on a GPU: correctness of every impl, then XLA vs the Pallas (Triton) kernel timings.

    python -m benchmarks.layer_norm_gpu --out ln.json            # on a GPU
    python -m benchmarks.layer_norm_gpu --platform cpu --impls xla,pallas_interpret \\
        --small --out ln-cpu.json                                 # the script itself

(a) Correctness: `ops.layer_norm` and `ops.add_layer_norm`, forward and gradients (x, residual,
scale, bias), for each impl and float32/bfloat16/float16, against a float64 numpy reference;
every mismatch is printed and the script exits 1 after writing the JSON. It also records that
impl="pallas" really lowered to the Triton custom call.
(b) Timings: LayerNorm and add+LayerNorm, forward and forward+backward, per width, row count,
dtype and impl. Each program is compiled and run 3 times first; then batches of back-to-back
calls (about 20 ms each) are timed to block_until_ready, and the median per call is reported
with the achieved bandwidth at the minimal traffic (each operand read once, each result written
once). The dispatch floor (a trivial jitted call) is reported too: times near it are host-bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time

WIDTHS = (384, 768, 1024, 4096)  # MiniLM, BERT-base, BERT-large, 7B-class widths
CHECK_WIDTHS = (100, *WIDTHS)  # plus a non-power-of-two width (padded, masked block)
TOL = {"float32": 2e-6, "bfloat16": 1e-2, "float16": 2e-3}  # as tests/test_layer_norm.py
TRITON_CALLS = ("__gpu$xla.gpu.triton", "triton_kernel_call_ffi")
EPS = 1e-12


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.layer_norm_gpu", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--platform", default="cuda", help="JAX platform to run on (cuda, rocm, cpu)")
    p.add_argument("--impls", default="xla,pallas", help="comma-separated impls to compare")
    p.add_argument("--small", action="store_true", help="tiny sizes: check the script on a CPU")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    os.environ["JAX_PLATFORMS"] = args.platform  # before jax is imported
    import jax
    import numpy as np

    from ferris_jax import ops
    from ferris_jax.platforms import platform_of

    impls = args.impls.split(",")
    device = jax.devices()[0]
    small = args.small
    info = {
        "device": device.device_kind,
        "platform": device.platform,
        "jax": jax.__version__,
        "python": platform.python_version(),
        "impls": impls,
        "auto_resolves_to": ops.resolve_impl("auto", platform_of(device)),  # "cuda", not "gpu"
    }
    print(json.dumps(info))
    failures: list[str] = []
    checks = correctness(jax, np, ops, impls, small, failures)
    lowered = triton_lowering(jax, ops, impls)
    if "pallas" in impls and not lowered["pallas"]:
        failures.append(f"impl='pallas' did not lower to a Triton call: {lowered}")
    floor_us = dispatch_floor(jax)
    timings = benchmark(jax, np, ops, impls, small)
    print_table(timings, impls, floor_us)
    result = dict(
        info,
        triton_custom_calls=lowered,
        dispatch_floor_us=floor_us,
        correctness=checks,
        timings=timings,
        failures=failures,
    )
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")
    if failures:
        print(f"FAILED: {len(failures)} mismatches", *failures, sep="\n  ", file=sys.stderr)
        return 1
    print("all correctness checks passed")
    return 0


# ------------------------------------------------------------------ correctness
def reference64(np, x, r, scale, bias, dy):
    """float64 LayerNorm of x + r and its gradients (dx = dr, dscale, dbias)."""
    s = x.astype(np.float64) + r.astype(np.float64)
    dy = dy.astype(np.float64)
    w, b = scale.astype(np.float64), bias.astype(np.float64)
    mean = s.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((s - mean) ** 2).mean(-1, keepdims=True) + EPS)
    x_hat = (s - mean) * rstd
    g = dy * w
    dx = rstd * (g - g.mean(-1, keepdims=True) - x_hat * (g * x_hat).mean(-1, keepdims=True))
    return x_hat * w + b, dx, (dy * x_hat).sum(0), dy.sum(0)


def correctness(jax, np, ops, impls, small, failures) -> list[dict]:
    jnp = jax.numpy
    rows = 37 if small else 1000  # not a multiple of any block's row count
    widths = (100, 384) if small else CHECK_WIDTHS
    out = []
    for dtype in ("float32", "bfloat16", "float16"):
        for H in widths:
            keys = jax.random.split(jax.random.key(H), 5)
            x = (3 * jax.random.normal(keys[0], (rows, H)) + 0.5).astype(dtype)
            r = jax.random.normal(keys[1], (rows, H)).astype(dtype)
            scale = (1 + 0.1 * jax.random.normal(keys[2], (H,))).astype(dtype)
            bias = (0.1 * jax.random.normal(keys[3], (H,))).astype(dtype)
            dy = jax.random.normal(keys[4], (rows, H)).astype(dtype)
            host = [np.asarray(a.astype(jnp.float32)) for a in (x, r, scale, bias, dy)]
            want_add = reference64(np, *host)
            want_plain = reference64(np, host[0], 0 * host[1], *host[2:])
            for impl in impls:
                got_plain, got_add = run_both(jax, ops, impl)(x, r, scale, bias, dy)
                for op, got, want in (
                    ("layer_norm", got_plain, want_plain),
                    ("add_layer_norm", got_add, want_add),
                ):
                    if op == "add_layer_norm" and not np.array_equal(got[1], got[2]):
                        failures.append(f"{op} {impl} {dtype} H={H}: dx != dresidual")
                    got = (got[0], got[1], got[3], got[4])  # y, dx, dscale, dbias
                    errs = [
                        float(np.abs(np.asarray(g, np.float64) - w).max() / max(1, np.abs(w).max()))
                        for g, w in zip(got, want, strict=True)
                    ]
                    tol = TOL[dtype] * (H / 32) ** 0.5
                    limits = [tol, tol, 15 * tol, 15 * tol]  # dscale/dbias: sums over rows
                    ok = all(e <= lim for e, lim in zip(errs, limits, strict=True))
                    names = ("y", "dx", "dscale", "dbias")
                    record = dict(op=op, impl=impl, dtype=dtype, H=H, rows=rows, ok=ok)
                    record.update({f"err_{n}": e for n, e in zip(names, errs, strict=True)})
                    out.append(record)
                    line = " ".join(f"{n}={e:.1e}" for n, e in zip(names, errs, strict=True))
                    verdict = "ok" if ok else "MISMATCH"
                    print(f"check {op:15s} {impl:16s} {dtype:9s} H={H:5d}: {line} {verdict}")
                    if not ok:
                        failures.append(f"{op} {impl} {dtype} H={H}: {line} (tol {tol:.1e})")
    return out


def run_both(jax, ops, impl):
    """One jitted program: (y, dx, dscale, dbias) of layer_norm and (y, dx, dr, ...) of add."""

    def both(x, r, scale, bias, dy):
        plain = lambda x, s, b: ops.layer_norm(x, s, b, eps=EPS, impl=impl)  # noqa: E731
        fused = lambda x, r, s, b: ops.add_layer_norm(x, r, s, b, eps=EPS, impl=impl)  # noqa: E731
        y, vjp = jax.vjp(plain, x, scale, bias)
        dx, ds, db = vjp(dy)
        y_add, vjp_add = jax.vjp(fused, x, r, scale, bias)
        return (y, dx, dx, ds, db), (y_add, *vjp_add(dy))

    return jax.jit(both)


def triton_lowering(jax, ops, impls) -> dict[str, bool]:
    """Whether each impl's lowered program (fwd + bwd) contains the Triton custom call."""
    x = jax.numpy.zeros((64, 384), jax.numpy.bfloat16)
    p = jax.numpy.ones((384,), jax.numpy.bfloat16)
    found = {}
    for impl in impls:
        text = run_both(jax, ops, impl).lower(x, x, p, p, x).as_text()
        found[impl] = any(re.search(rf"custom_call @{re.escape(c)}\b", text) for c in TRITON_CALLS)
    return found


# ------------------------------------------------------------------ timings
def dispatch_floor(jax) -> float:
    x = jax.numpy.zeros((8,), jax.numpy.float32)
    f = jax.jit(lambda x: x + 1)
    return time_call(jax, f, (x,))


def time_call(jax, f, args, target_s: float = 0.02, repeats: int = 5) -> float:
    """Median microseconds per call over `repeats` batches of back-to-back calls."""
    for _ in range(3):
        jax.block_until_ready(f(*args))
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    n = max(1, min(1000, int(target_s / max(time.perf_counter() - t, 1e-6))))
    per_call = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            out = f(*args)
        jax.block_until_ready(out)
        per_call.append((time.perf_counter() - t) / n)
    return statistics.median(per_call) * 1e6


def program(jax, ops, op: str, mode: str, impl: str):
    """A jitted (x, r, scale, bias, dy) -> outputs; 'fwd+bwd' returns y, dx, dscale, dbias."""

    def f(x, r, scale, bias):
        if op == "add_layer_norm":
            return ops.add_layer_norm(x, r, scale, bias, eps=EPS, impl=impl)
        return ops.layer_norm(x, scale, bias, eps=EPS, impl=impl)

    if mode == "fwd":
        return jax.jit(lambda x, r, s, b, dy: f(x, r, s, b))

    def fwd_bwd(x, r, s, b, dy):
        y, vjp = jax.vjp(f, x, r, s, b)
        dx, _, ds, db = vjp(dy)  # d residual is dx itself: not returned twice
        return y, dx, ds, db

    return jax.jit(fwd_bwd)


def traffic(op: str, mode: str, n: int) -> int:
    """Minimal bytes moved, in units of one [rows, H] array: read x (+ r), write y; backward
    reads x (+ r) and dy and writes dx."""
    add = op == "add_layer_norm"
    fwd = 2 + add
    return n * (fwd if mode == "fwd" else fwd + 3 + add)


def benchmark(jax, np, ops, impls, small) -> list[dict]:
    jnp = jax.numpy
    rows_list = (256,) if small else (8192, 65536)
    widths = (384,) if small else WIDTHS
    out = []
    for dtype in ("bfloat16", "float32"):
        for rows in rows_list:
            for H in widths:
                keys = jax.random.split(jax.random.key(rows + H), 5)
                x = jax.random.normal(keys[0], (rows, H), dtype)
                r = jax.random.normal(keys[1], (rows, H), dtype)
                scale = (1 + 0.1 * jax.random.normal(keys[2], (H,))).astype(dtype)
                bias = (0.1 * jax.random.normal(keys[3], (H,))).astype(dtype)
                dy = jax.random.normal(keys[4], (rows, H), dtype)
                for op in ("layer_norm", "add_layer_norm"):
                    for mode in ("fwd", "fwd+bwd"):
                        nbytes = traffic(op, mode, rows * H * jnp.dtype(dtype).itemsize)
                        record = dict(op=op, mode=mode, dtype=dtype, rows=rows, H=H, bytes=nbytes)
                        for impl in impls:
                            f = program(jax, ops, op, mode, impl)
                            us = time_call(jax, f, (x, r, scale, bias, dy))
                            record[f"{impl}_us"] = us
                            record[f"{impl}_GBps"] = nbytes / us / 1e3
                        out.append(record)
                        print(
                            f"time {op:15s} {mode:8s} {dtype:9s} rows={rows:6d} H={H:5d} "
                            + " ".join(f"{i}={record[f'{i}_us']:9.1f}us" for i in impls),
                            flush=True,
                        )
                del x, r, dy
    return out


def print_table(timings: list[dict], impls: list[str], floor_us: float) -> None:
    base = impls[0]
    head = ["op", "mode", "dtype", "rows", "H"]
    head += [f"{i} us" for i in impls] + [f"{i} GB/s" for i in impls]
    head += [f"{i} speedup over {base}" for i in impls[1:]]
    print(f"\ndispatch floor (trivial jitted call): {floor_us:.1f} us\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * 5 + "---:|" * (len(head) - 5))
    for t in timings:
        cells = [t["op"], t["mode"], t["dtype"], str(t["rows"]), str(t["H"])]
        cells += [f"{t[f'{i}_us']:.1f}" for i in impls]
        cells += [f"{t[f'{i}_GBps']:.0f}" for i in impls]
        cells += [f"{t[f'{base}_us'] / t[f'{i}_us']:.2f}x" for i in impls[1:]]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
