"""The model families the tests cover, one row per config.json `model_type`: its random
checkpoint builder and the facts the shared parity suite (test_parity.py) reads."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from helpers.checkpoints import (
    make_bert_checkpoint,
    make_distilbert_checkpoint,
    make_modernbert_checkpoint,
    make_mpnet_checkpoint,
    make_roberta_checkpoint,
    make_xlm_roberta_checkpoint,
)

# Model sizes beside the builders' default (transformers' BERT-style names).
WIDE = dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=6, intermediate_size=160)
DEEP = dict(hidden_size=48, num_hidden_layers=5, num_attention_heads=3, intermediate_size=96)
ONE_LAYER = dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128)

# sentence-transformers heads: name -> make_sentence_transformer arguments.
HEADS = {
    "mean-normalize": dict(pooling="mean", normalize=True),
    "cls": dict(pooling="cls"),
    "max+dense": dict(pooling="max", dense=(24,)),
}


@dataclass(frozen=True)
class Family:
    build: Callable[..., Path]  # builder(directory, seed=0, **config) -> checkpoint directory
    # Configs (transformers' names) the hidden states are compared on; the first is the
    # builder's defaults.
    configs: dict[str, dict]
    # config names the sentence-transformers heads run on, and those heads.
    head_configs: tuple[str, ...]
    heads: dict[str, dict] = field(default_factory=lambda: HEADS)
    # Position-table rows no token reaches: positions start after the pad id (RoBERTa, MPNet).
    position_offset: int = 0
    pad_token_id: int = 0
    # Settings of the one checkpoint the tokenizer, masked-LM, padding and config tests share.
    checkpoint: dict = field(default_factory=dict)
    # (field, value) pairs, each of which must change the output (no silently dropped field).
    config_changes: tuple[tuple[str, object], ...] = (
        ("layer_norm_eps", 10.0),
        ("hidden_act", "relu"),
    )


ROBERTA = Family(
    build=make_roberta_checkpoint,
    configs={
        "tiny": dict(),
        "wide-relu-2types": dict(WIDE, hidden_act="relu", layer_norm_eps=1e-12, type_vocab_size=2),
        "deep-gelu-new": dict(
            DEEP, hidden_act="gelu_new", layer_norm_eps=1e-7, max_position_embeddings=130
        ),
    },
    head_configs=("tiny",),
    position_offset=2,
    pad_token_id=1,
)

FAMILY_TABLE: dict[str, Family] = {
    "bert": Family(
        build=make_bert_checkpoint,
        configs={
            "tiny": dict(),
            "wide-3types": dict(WIDE, type_vocab_size=3, max_position_embeddings=64),
            "deep-relu": dict(
                DEEP, hidden_act="relu", layer_norm_eps=1e-5, max_position_embeddings=256
            ),
            "gelu-new-1layer": dict(ONE_LAYER, hidden_act="gelu_new", layer_norm_eps=1e-7),
        },
        head_configs=("tiny",),
        # Every pooling mode sentence-transformers has, Dense stacks and Normalize.
        heads={
            "mean-normalize": dict(pooling="mean", normalize=True),
            "cls": dict(pooling="cls"),
            "max": dict(pooling="max"),
            "mean_sqrt_len": dict(pooling="mean_sqrt_len_tokens"),
            "weightedmean": dict(pooling="weightedmean"),
            "lasttoken": dict(pooling="lasttoken"),
            "cls+mean+dense2": dict(pooling=["cls", "mean"], dense=(40, 24)),
            "dense-normalize": dict(pooling="mean", dense=(16,), normalize=True),
        },
    ),
    "roberta": ROBERTA,
    "xlm-roberta": dataclasses.replace(ROBERTA, build=make_xlm_roberta_checkpoint),
    "distilbert": Family(
        build=make_distilbert_checkpoint,
        configs={
            "tiny": dict(),
            "wide-relu": dict(dim=96, n_layers=3, n_heads=6, hidden_dim=160, activation="relu"),
            "sinusoidal-deep": dict(
                dim=48,
                n_layers=5,
                n_heads=3,
                hidden_dim=96,
                sinusoidal_pos_embds=True,
                max_position_embeddings=128,
            ),
            "gelu-new-1layer": dict(
                dim=64, n_layers=1, n_heads=2, hidden_dim=128, activation="gelu_new"
            ),
        },
        head_configs=("tiny",),
        config_changes=(("activation", "relu"),),  # DistilBERT's name for hidden_act
    ),
    "mpnet": Family(
        build=make_mpnet_checkpoint,
        configs={
            "tiny": dict(),
            "wide-relu": dict(
                WIDE, hidden_act="relu", layer_norm_eps=1e-12, max_position_embeddings=66
            ),
            # Distances past max_distance=128: the bucket's log region and its saturation.
            "long-160": dict(DEEP, num_hidden_layers=2, max_position_embeddings=160),
            # Extra bias rows are never indexed: transformers always uses 32 buckets.
            "48-bias-rows-gelu-new": dict(
                ONE_LAYER,
                hidden_act="gelu_new",
                layer_norm_eps=1e-7,
                relative_attention_num_buckets=48,
            ),
        },
        head_configs=("long-160",),  # the whole pipeline past the bucket's max_distance
        position_offset=2,
        pad_token_id=1,
    ),
    # Every config keeps a small local window, so the long texts run far past it.
    "modernbert": Family(
        build=make_modernbert_checkpoint,
        configs={
            "every3-w8": dict(),
            "biases-every2-w16-silu": dict(
                hidden_size=48,
                num_hidden_layers=4,
                num_attention_heads=3,
                intermediate_size=80,
                global_attn_every_n_layers=2,
                local_attention=16,
                attention_bias=True,
                mlp_bias=True,
                norm_bias=True,
                hidden_activation="silu",
                norm_eps=1e-6,
            ),
            "every4-w7-thetas": dict(
                hidden_size=32,
                num_hidden_layers=5,
                num_attention_heads=2,
                intermediate_size=40,
                global_attn_every_n_layers=4,
                local_attention=7,  # odd: local layers see |i - j| <= 3
                global_rope_theta=500.0,
                local_rope_theta=50.0,
                norm_bias=True,
                hidden_activation="gelu_pytorch_tanh",
            ),
            "all-global-1layer": dict(
                hidden_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=96,
                global_attn_every_n_layers=1,
                attention_bias=True,
                max_position_embeddings=64,
            ),
        },
        head_configs=("every3-w8", "biases-every2-w16-silu"),
        # gte-modernbert-base pools [CLS]; nomic's modernbert-embed-base mean-pools, normalizes.
        heads={k: HEADS[k] for k in ("cls", "mean-normalize")},
        pad_token_id=403,  # [PAD] follows the 400 learned pieces, [UNK], [CLS] and [SEP]
        checkpoint=dict(norm_bias=True),  # the masked-LM test loads the norms' biases too
        config_changes=(
            ("norm_eps", 10.0),
            ("hidden_activation", "relu"),
            ("local_attention", 32),
            ("global_attn_every_n_layers", 1),
            ("global_rope_theta", 100.0),
            ("local_rope_theta", 100.0),
        ),
    ),
}
