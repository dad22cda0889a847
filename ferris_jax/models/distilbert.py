"""DistilBERT: BERT's post-LN layers under other config and weight names, no token types.

Sinusoidal position embeddings (`sinusoidal_pos_embds`) are stored in the checkpoint like
learned ones, so both load into the same position table.
"""

from __future__ import annotations

from typing import Any

from ferris_jax.models import bert
from ferris_jax.weights import EMBED, LINEAR, NORM, Rule

# DistilBertConfig field -> BertConfig field.
_FIELDS = {
    "vocab_size": "vocab_size",
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "hidden_dim": "intermediate_size",
    "activation": "hidden_act",
    "max_position_embeddings": "max_position_embeddings",
    "pad_token_id": "pad_token_id",
}
# transformers' DistilBertConfig defaults (a config.json may omit any of them).
_HF_DEFAULTS = {
    "vocab_size": 30522,
    "dim": 768,
    "n_layers": 6,
    "n_heads": 12,
    "hidden_dim": 4 * 768,
    "activation": "gelu",
    "max_position_embeddings": 512,
    "pad_token_id": 0,
}


def config_from_hf(config: dict[str, Any]) -> bert.BertConfig:
    """A `BertConfig` from a distilbert `config.json`: no token types, LayerNorm eps fixed at
    1e-12 (transformers hard-codes it for DistilBERT)."""
    config = {**_HF_DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    return bert.BertConfig(
        **{ours: config[theirs] for theirs, ours in _FIELDS.items()},
        type_vocab_size=0,
        layer_norm_eps=1e-12,
    )


# PyTorch name (after the optional "distilbert." prefix) -> our module path (bert.BertModel).
WEIGHT_RULES = (
    Rule("embeddings.word_embeddings", "embeddings.word", EMBED),
    Rule("embeddings.position_embeddings", "embeddings.position", EMBED),
    Rule("embeddings.LayerNorm", "embeddings.norm", NORM),
    Rule("transformer.layer.{i}.attention.q_lin", "layers.{i}.attention.query", LINEAR),
    Rule("transformer.layer.{i}.attention.k_lin", "layers.{i}.attention.key", LINEAR),
    Rule("transformer.layer.{i}.attention.v_lin", "layers.{i}.attention.value", LINEAR),
    Rule("transformer.layer.{i}.attention.out_lin", "layers.{i}.attention.out", LINEAR),
    Rule("transformer.layer.{i}.sa_layer_norm", "layers.{i}.attention_norm", NORM),
    Rule("transformer.layer.{i}.ffn.lin1", "layers.{i}.intermediate", LINEAR),
    Rule("transformer.layer.{i}.ffn.lin2", "layers.{i}.output", LINEAR),
    Rule("transformer.layer.{i}.output_layer_norm", "layers.{i}.output_norm", NORM),
)
# Heads of DistilBertForMaskedLM & co. that sentence embeddings do not use.
IGNORED_WEIGHTS = (
    r"(.*\.)?position_ids",
    r"vocab_transform\..*",
    r"vocab_layer_norm\..*",
    r"vocab_projector\..*",
)
CHECKPOINT_PREFIXES = ("distilbert.",)
