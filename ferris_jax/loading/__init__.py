"""Loading (and saving) models: `hub` resolves a name to a folder, `presets` reads configs/,
`st_format` and `tokenizer` read the sentence-transformers and tokenizer files, `checkpoint`
fills the model's parameters from safetensors, `export` writes a folder back out."""

from ferris_jax.loading.checkpoint import (
    Checkpoint,
    ClassifierCheckpoint,
    load_checkpoint,
    load_classifier,
)
from ferris_jax.loading.export import save_pretrained
from ferris_jax.loading.hub import resolve

__all__ = [
    "Checkpoint",
    "ClassifierCheckpoint",
    "load_checkpoint",
    "load_classifier",
    "resolve",
    "save_pretrained",
]
