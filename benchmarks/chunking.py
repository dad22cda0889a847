"""Chunking throughput on the Lee corpus (300 news articles, gensim's test data): chunks/s and
characters/s of `chunk_documents` with the real all-MiniLM-L6-v2 tokenizer, and how much of it
is tokenizing (one pass with offsets to plan, one without to re-count each chunk).

    python -m benchmarks.chunking --max-tokens 254,128,64 --repeats 5

Prints one JSON line per setting (best of --repeats, after one warm-up run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _lee_corpus() -> list[str]:
    import gensim

    path = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--max-tokens", default="254,128,64")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--copies", type=int, default=1, help="the corpus this many times")
    args = parser.parse_args()

    import tokenizers

    import ferris_jax
    from ferris_jax.retrieval.chunking import chunk_documents
    from ferris_jax.retrieval.sources import Document

    enc = ferris_jax.load(args.model)
    texts = _lee_corpus() * args.copies
    docs = [Document(str(i), t) for i, t in enumerate(texts)]
    chars = sum(map(len, texts))
    raw = tokenizers.Tokenizer.from_str(enc.tokenizer.tokenizer.to_str())
    raw.no_truncation()
    for max_tokens in map(int, args.max_tokens.split(",")):
        times, tokenize = [], []
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            chunks = list(chunk_documents(docs, enc, max_tokens=max_tokens))
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
            raw.encode_batch(texts, add_special_tokens=False)
            raw.encode_batch_fast([c.text for c in chunks])
            tokenize.append(time.perf_counter() - start)
        best = min(times[1:])
        print(
            json.dumps(
                {
                    "max_tokens": max_tokens,
                    "documents": len(docs),
                    "chunks": len(chunks),
                    "seconds": round(best, 4),
                    "chunks_per_s": round(len(chunks) / best),
                    "chars_per_s": round(chars / best),
                    "tokenizing_seconds": round(min(tokenize[1:]), 4),
                }
            )
        )


if __name__ == "__main__":
    main()
