"""`ferris-jax index build` against `ferris-jax embed` of the same one-line documents, as a
user runs them (issue 26, item 1: the build at most 1.2x embed's time on the CPU).

    python -m benchmarks.cli_index_build --model .bench/minilm --texts 30000 --rounds 2
    python -m benchmarks.cli_index_build --model /tmp/tiny --texts 30000 --all

The texts (`benchmarks/corpus.py` "mix", line breaks replaced by spaces) are written once as a
text file (one per line, for `embed`) and as JSON Lines ({"id", "text"}, for `index build`).
By default only the texts the model takes whole are kept (at most max_seq_length tokens with
the special tokens): `embed` then truncates nothing and the build makes one chunk of each, the
same work. `--all` keeps the long ones too: `embed` truncates them, the build splits them into
chunks (more texts to embed). Each round runs both commands in fresh processes, alternating,
with a new index folder; times are whole commands (model load included, the same for both).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import corpus


def _texts(model: str, n: int, keep_all: bool) -> list[str]:
    texts = [re.sub(r"\s+", " ", t).strip() or "." for t in corpus.build("mix", n, seed=0)]
    if keep_all:
        return texts
    import ferris_jax

    enc = ferris_jax.load(model)
    truncated = enc.tokenize(texts).truncated
    return [t for t, cut in zip(texts, truncated, strict=True) if not cut]


def _timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stderr.strip().splitlines()[-1]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cli_index_build", description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--texts", type=int, default=30000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--all", action="store_true", help="keep texts longer than the model takes")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/cli_index_build.json"))
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ferris-cli-build-"))
    texts = _texts(args.model, args.texts, args.all)
    (work / "lines.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    with (work / "docs.jsonl").open("w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": str(i), "text": text}) + "\n")
    cli = [sys.executable, "-m", "ferris_jax.cli"]
    results = []
    for r in range(args.rounds):
        embed, embed_said = _timed(
            [*cli, "embed", str(work / "lines.txt"), "-m", args.model,
             "-o", str(work / "out.npy"), "--no-progress"]
        )  # fmt: skip
        build, build_said = _timed(
            [*cli, "index", "build", str(work / "docs.jsonl"), "-m", args.model,
             "-o", str(work / f"index-{r}"), "--no-progress"]
        )  # fmt: skip
        result = {
            "round": r,
            "texts": len(texts),
            "embed_s": embed,
            "index_build_s": build,
            "ratio": build / embed,
            "embed_said": embed_said,
            "build_said": build_said,
            "cpus": len(os.sched_getaffinity(0)),
        }
        print(json.dumps(result), flush=True)
        results.append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
