"""Encode throughput of the placement-aware code against the code before it (issue 21).

Two copies of `ferris_jax` are timed: "new" (HEAD, where load, the encoder, its programs, the
bucket policy and the index go through `ferris_jax.placement.Placement`) and "old" (the commit
before the Placement object, dfbb747^). Each is imported in its own fresh process (its tree
first on `sys.path`), never both in one; the processes alternate old, new, new, old, old, ...
(pairs in alternating order, so a linear drift of the machine cancels). Inside a process the
harness's own method times it (`runners.FerrisRunner`, `run.run_corpus`: one warm-up pass that
compiles, then `--rounds` timed passes over the whole corpus; the median pass counts), for each
model on the same corpus, written once by this parent so both trees encode the same texts.

    # here: both trees (git archive), this harness, MiniLM as a float16 copy, the nanotoken wheel
    python -m benchmarks.placement_overhead prepare .bench/placement-run
    # on the GPU machine (run tool, carry .bench/placement-run), from that folder:
    cd .bench/placement-run && python3 -m pip install -q --no-index --no-deps --target /tmp/site \
        whl/*.whl && PYTHONPATH=/tmp/site python3 benchmarks/placement_overhead.py measure \
        --minilm-dir minilm --out result.json
    # a smoke test on the CPU:
    JAX_PLATFORMS=cpu python -m benchmarks.placement_overhead measure --device cpu \
        --trees new=.bench/placement-run/trees/new,old=.bench/placement-run/trees/old \
        --texts 32 --pairs 1 --rounds 1 --variant f32-bs32

The persistent compilation cache is shared by every process of a run (`--compilation-cache`;
`off` compiles in every process, as the harness does): the warm-up then loads what the first
process compiled, so the timed passes of both trees run the very executable XLA built for a
program (when both trees lower the same program, which `hlo_sha` in the JSON shows) and the
difference left is the host side's. Writes a markdown table on stdout and every number as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent  # the harness's root: `benchmarks` is imported from here
BASELINE = "dfbb747^"  # the commit before the Placement object (70af2ed)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- prepare (here)
def prepare(dest: Path, new_rev: str, old_rev: str, minilm: Path | None, wheels: bool) -> None:
    """Write a self-contained folder that travels to a machine without network or git."""
    from benchmarks import bench_models, make_transport_copy

    dest.mkdir(parents=True, exist_ok=True)
    (dest / ".gitignore").write_text("# written by benchmarks/placement_overhead.py\n*\n")
    for name, rev in (("new", new_rev), ("old", old_rev)):
        tree = dest / "trees" / name
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", rev, "ferris_jax"], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        commit = subprocess.run(
            ["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
            text=True,
        ).stdout.strip()  # fmt: skip
        (tree / "COMMIT").write_text(f"{commit} ({rev})\n")
        log(f"trees/{name}: ferris_jax at {commit} ({rev})")
    bench = dest / "benchmarks"
    shutil.rmtree(bench, ignore_errors=True)
    bench.mkdir()
    for py in HERE.glob("*.py"):
        shutil.copy2(py, bench / py.name)
    if not (dest / "minilm" / "config.json").is_file():
        src = bench_models.minilm_dir(minilm)
        make_transport_copy.make_copy(src, dest / "minilm")
        log(f"minilm: float16 copy of {src}")
    if wheels:
        whl = dest / "whl"
        whl.mkdir(exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "--python-version", "3.12", "--implementation", "cp",
             "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
             "-d", str(whl), "nanotoken==0.1.0"],
            check=True,
        )  # fmt: skip
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    log(f"wrote {dest} ({size / 2**20:.1f} MiB)")


# ---------------------------------------------------------------------------- child (one tree)
def child(spec_file: Path) -> None:
    """One process, one tree: each model's warm-up and timed passes; JSON to spec['out']."""
    job = json.loads(spec_file.read_text())
    tree = Path(job["tree"]).resolve()
    sys.path[:0] = [str(tree), str(ROOT)]
    import warnings

    import jax

    import ferris_jax
    from benchmarks import bench_models, run, runners

    warnings.filterwarnings("ignore", message=".*exceed max_seq_length.*")  # as run.py does

    where = Path(ferris_jax.__file__).resolve()
    if tree not in where.parents:
        raise SystemExit(f"imported {where}, not the tree {tree}")
    if job["cache"]:
        jax.config.update("jax_compilation_cache_dir", job["cache"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    texts = json.loads(Path(job["texts"]).read_text())
    variant = runners.ferris_variant(job["variant"])
    result = {
        "tree": job["name"],
        "ferris_jax": str(where.parent),
        "has_placement": (where.parent / "placement.py").is_file(),
        "jax": jax.__version__,
        "device_kind": jax.devices()[0].device_kind,
        "pid": os.getpid(),
        "models": {},
    }
    for name, path in job["models"].items():
        spec = bench_models.SPECS[name]
        r = runners.FerrisRunner(variant, Path(path), job["device"], spec.max_seq_length, False)
        res = run.run_corpus([r], texts, job["rounds"], run.DevicePeak())[r.label]
        shapes = [list(s) for s in res["shapes"]]
        largest = max(res["shapes"], key=lambda s: s[0] * s[1])
        hlo = r.enc.lower(tuple(largest)).as_text()
        median = statistics.median(res["seconds"])
        result["models"][name] = {
            "seconds": res["seconds"],
            "median_s": median,
            "texts_per_s": len(texts) / median,
            "warmup_s": res["warmup_s"],
            "batches": len(shapes),
            "shapes_sha": _sha(json.dumps(shapes)),
            "hlo_sha": _sha(hlo),
            "hlo_shape": list(largest),
            "programs": len(r.enc.compiled_programs),
            "compile_s": r.enc.compile_seconds,
            "fast_tokenizer": getattr(r.enc.tokenizer, "fast_path", None),
            "pack_length": r.enc.pack_length,
            "first_rows": res["output"][:8].tolist(),
            "info": r.info(),
        }
        r.close()
    Path(job["out"]).write_text(json.dumps(result))


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------- measure (parent)
def measure(args: argparse.Namespace) -> dict:
    from benchmarks import bench_models, run
    from benchmarks import corpus as corpora

    trees = dict(item.split("=", 1) for item in args.trees.split(","))
    if set(trees) != {"new", "old"}:
        raise SystemExit("--trees: give new=DIR,old=DIR")
    trees = {k: str(Path(v).resolve()) for k, v in trees.items()}
    for tree in trees.values():
        if not (Path(tree) / "ferris_jax" / "__init__.py").is_file():
            raise SystemExit(f"--trees: no ferris_jax in {tree} (run `prepare` first)")
    work = Path(tempfile.mkdtemp(prefix="ferris-placement-"))
    try:
        return _measure(args, trees, work, bench_models, run, corpora)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(args, trees, work, bench_models, run, corpora) -> dict:
    t0 = time.perf_counter()
    minilm = bench_models.minilm_dir(args.minilm_dir).resolve()
    models = {}
    for name in args.models.split(","):
        spec = bench_models.SPECS[name]
        if spec.real:
            models[name] = str(minilm)
        else:
            log(f"building {name} (random weights)")
            models[name] = str(bench_models.build_random(spec, minilm, work / name, args.seed))
    texts = corpora.build(args.corpus, args.texts, seed=args.seed)
    (work / "texts.json").write_text(json.dumps(texts))
    stats = run.token_stats(minilm / "tokenizer.json", texts, 256)
    stats["digest"] = corpora.corpus_digest(texts)
    log(f"{args.corpus}: {len(texts)} texts, {stats['real_tokens']} real tokens (MiniLM, 256)")
    cache = "" if args.compilation_cache == "off" else str(
        Path(args.compilation_cache).resolve() if args.compilation_cache else work / "xla-cache"
    )  # fmt: skip
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    if args.device == "gpu":  # as run.py sets it
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
    order = []
    for i in range(args.pairs):
        order += ["old", "new"] if i % 2 == 0 else ["new", "old"]
    procs: list[dict] = []
    pair_start = time.perf_counter()
    for i, name in enumerate(order):
        if i % 2 == 0 and i:  # a pair done: write what we have; start another only if it fits
            result = summarize(args, trees, procs, stats, cache)
            if args.out:
                args.out.write_text(json.dumps(result, indent=1))
            pair_s, pair_start = time.perf_counter() - pair_start, time.perf_counter()
            if args.budget_s and time.perf_counter() - t0 + pair_s > args.budget_s:
                log(
                    f"stopping after {i // 2} pairs: another ({pair_s:.0f} s) would pass "
                    f"--budget-s {args.budget_s}"
                )
                break
        job = {
            "name": name, "tree": trees[name], "models": models, "texts": str(work / "texts.json"),
            "variant": args.variant, "rounds": args.rounds, "device": args.device,
            "cache": cache, "out": str(work / f"proc-{i}.json"),
        }  # fmt: skip
        spec_file = work / f"job-{i}.json"
        spec_file.write_text(json.dumps(job))
        start = time.perf_counter()
        child_env = dict(env)
        child_env["PYTHONPATH"] = os.pathsep.join(
            [trees[name], str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "child", str(spec_file)],
            env=child_env, cwd=work,
        )  # fmt: skip
        if done.returncode:
            log(f"process {i + 1} ({name}) failed with exit status {done.returncode}: stopping")
            break
        rec = json.loads(Path(job["out"]).read_text())
        rec["wall_s"] = time.perf_counter() - start
        procs.append(rec)
        summary = ", ".join(
            f"{m} {v['texts_per_s']:.0f}/s (rounds {' '.join(f'{s:.3f}' for s in v['seconds'])})"
            for m, v in rec["models"].items()
        )
        log(f"process {i + 1}/{len(order)} {name}: {summary}; {rec['wall_s']:.0f} s")
    if len(procs) < 2:
        raise SystemExit("no complete (old, new) pair")
    result = summarize(args, trees, procs, stats, cache)
    result["wall_s"] = time.perf_counter() - t0
    return result


def summarize(args, trees, procs, stats, cache) -> dict:
    import numpy as np

    procs = procs[: len(procs) // 2 * 2]  # whole pairs only

    models = list(procs[0]["models"])
    per_model = {}
    for m in models:
        by_tree = {t: [p["models"][m]["texts_per_s"] for p in procs if p["tree"] == t]
                   for t in ("old", "new")}  # fmt: skip
        # Pair i is processes 2i and 2i+1 (one of each tree).
        ratios = []
        for i in range(0, len(procs) - 1, 2):
            a, b = procs[i], procs[i + 1]
            new, old = (a, b) if a["tree"] == "new" else (b, a)
            ratios.append(new["models"][m]["texts_per_s"] / old["models"][m]["texts_per_s"])
        old_rows = np.array(next(p for p in procs if p["tree"] == "old")["models"][m]["first_rows"])
        new_rows = np.array(next(p for p in procs if p["tree"] == "new")["models"][m]["first_rows"])
        cos = (old_rows * new_rows).sum(1) / (
            np.linalg.norm(old_rows, axis=1) * np.linalg.norm(new_rows, axis=1)
        )
        med = {t: statistics.median(v) for t, v in by_tree.items()}
        per_model[m] = {
            "texts_per_s": by_tree,
            "median_texts_per_s": med,
            "spread": {t: (max(v) - min(v)) / med[t] for t, v in by_tree.items()},
            "pair_ratios": ratios,
            "median_pair_ratio": statistics.median(ratios),
            "ratio_of_medians": med["new"] / med["old"],
            "min_cosine_first_rows": float(cos.min()),
            "same_hlo": len({p["models"][m]["hlo_sha"] for p in procs}) == 1,
            "same_batches": len({p["models"][m]["shapes_sha"] for p in procs}) == 1,
            "fast_tokenizer": sorted({str(p["models"][m]["fast_tokenizer"]) for p in procs}),
            "pack_length": sorted({str(p["models"][m]["pack_length"]) for p in procs}),
        }
    return {
        "date": datetime.date.today().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "trees": {t: _tree_commit(p) for t, p in trees.items()},
        "jax": procs[0]["jax"],
        "device_kind": procs[0]["device_kind"],
        "gpu": _nvidia_smi() if args.device == "gpu" else None,
        "corpus": stats,
        "compilation_cache": "shared" if cache else "off",
        "order": [p["tree"] for p in procs],
        "models": per_model,
        "processes": procs,
    }


def _tree_commit(tree: str) -> str:
    f = Path(tree) / "COMMIT"
    return f.read_text().strip() if f.is_file() else tree


def _nvidia_smi() -> str | None:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None


def report(res: dict) -> str:
    lines = [
        f"# placement overhead ({res['date']}, {res['gpu'] or res['device_kind']}, "
        f"jax {res['jax']})",
        "",
        f"new = {res['trees']['new']}, old = {res['trees']['old']}; "
        f"{res['corpus']['texts']} {res['args']['corpus']} texts (digest "
        f"{res['corpus']['digest']}), variant {res['args']['variant']}, "
        f"{res['args']['rounds']} rounds per process, order {' '.join(res['order'])}, "
        f"compilation cache {res['compilation_cache']}",
        "",
        "| model | old texts/s (median; per process) | new texts/s (median; per process) "
        "| new/old: median of pairs (min-max) | ratio of medians | same HLO | same batches "
        "| min cosine |",
        "|---|---|---|---|---:|---|---|---:|",
    ]
    for m, r in res["models"].items():
        per = {t: " ".join(f"{x:.0f}" for x in r["texts_per_s"][t]) for t in ("old", "new")}
        lines.append(
            f"| {m} | **{r['median_texts_per_s']['old']:.0f}**; {per['old']} "
            f"| **{r['median_texts_per_s']['new']:.0f}**; {per['new']} "
            f"| **{r['median_pair_ratio']:.4f}** ({min(r['pair_ratios']):.4f}-"
            f"{max(r['pair_ratios']):.4f}) | {r['ratio_of_medians']:.4f} | {r['same_hlo']} "
            f"| {r['same_batches']} | {r['min_cosine_first_rows']:.6f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.placement_overhead",
                                description=__doc__.splitlines()[0])  # fmt: skip
    sub = p.add_subparsers(dest="mode", required=True)
    pr = sub.add_parser("prepare", help="write the folder that travels (here, with git)")
    pr.add_argument("dest", type=Path)
    pr.add_argument("--new", default="HEAD")
    pr.add_argument("--old", default=BASELINE)
    pr.add_argument("--minilm-dir", type=Path)
    pr.add_argument("--no-wheels", action="store_true", help="skip the nanotoken wheel")
    me = sub.add_parser("measure", help="alternate the two trees' processes and compare")
    me.add_argument("--trees", default="new=trees/new,old=trees/old")
    me.add_argument("--device", choices=("cpu", "gpu"), default="gpu")
    me.add_argument("--minilm-dir", type=Path)
    me.add_argument("--models", default="minilm,bert-base")
    me.add_argument("--corpus", default="mix")
    me.add_argument("--texts", type=int, default=16384)
    me.add_argument("--variant", default="bf16-bs128", help="harness label (run.py's default)")
    me.add_argument("--rounds", type=int, default=5)
    me.add_argument("--pairs", type=int, default=5, help="(old, new) process pairs")
    me.add_argument(
        "--budget-s",
        type=float,
        default=0.0,
        help="start no pair that would end past this many seconds (0: no limit)",
    )
    me.add_argument("--compilation-cache", help="a directory, or 'off' (default: a shared temp)")
    me.add_argument("--seed", type=int, default=0)
    me.add_argument("--out", type=Path)
    ch = sub.add_parser("child")
    ch.add_argument("spec", type=Path)
    args = p.parse_args(argv)
    if args.mode == "child":
        child(args.spec)
    elif args.mode == "prepare":
        sys.path.insert(0, str(ROOT))
        prepare(args.dest, args.new, args.old, args.minilm_dir, not args.no_wheels)
    else:
        sys.path.insert(0, str(ROOT))
        res = measure(args)
        if args.out:
            args.out.write_text(json.dumps(res, indent=1))
            log(f"wrote {args.out}")
        print(report(res))


if __name__ == "__main__":
    main()
