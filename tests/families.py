"""One random-weight checkpoint builder per registered model family (config.json model_type),
for tests that must cover every family (Metal-safe scan, presets)."""

from __future__ import annotations

from helpers.checkpoints import (
    make_bert_checkpoint,
    make_distilbert_checkpoint,
    make_modernbert_checkpoint,
    make_mpnet_checkpoint,
    make_roberta_checkpoint,
    make_xlm_roberta_checkpoint,
)

# model_type -> builder(directory, seed=0, **config) -> checkpoint directory
CHECKPOINT_BUILDERS = {
    "bert": make_bert_checkpoint,
    "roberta": make_roberta_checkpoint,
    "xlm-roberta": make_xlm_roberta_checkpoint,
    "distilbert": make_distilbert_checkpoint,
    "mpnet": make_mpnet_checkpoint,
    "modernbert": make_modernbert_checkpoint,
}
