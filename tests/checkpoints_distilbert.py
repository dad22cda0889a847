"""Random-weight DistilBERT checkpoints written by transformers, with a WordPiece tokenizer saved
through DistilBertTokenizerFast."""

from __future__ import annotations

from pathlib import Path

from conftest import make_tokenizer_files


def make_distilbert_checkpoint(directory: Path, seed: int = 0, **config) -> Path:
    """Save a random-weight transformers DistilBertModel (safetensors) plus its tokenizer.

    `config` takes DistilBertConfig names (dim, n_layers, n_heads, hidden_dim, activation,
    max_position_embeddings, sinusoidal_pos_embds)."""
    import tokenizers
    import torch
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    n_vocab = make_tokenizer_files(directory)  # conftest's WordPiece, resaved as DistilBERT's
    positions = config.get("max_position_embeddings", 64)
    wordpiece = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    fast = DistilBertTokenizerFast(
        tokenizer_object=wordpiece, do_lower_case=True, model_max_length=positions
    )
    fast.save_pretrained(str(directory))
    defaults = dict(
        vocab_size=n_vocab,
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=64,
        max_position_embeddings=positions,
        activation="gelu",
        pad_token_id=0,
        attn_implementation="eager",
    )
    defaults.update(config)
    torch.manual_seed(seed)
    model = DistilBertModel(DistilBertConfig(**defaults)).eval()
    # Random init leaves LayerNorms at identity; perturb them so a dropped parameter shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory
