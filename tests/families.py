"""One random-weight checkpoint builder per registered model family (config.json model_type),
for tests that must cover every family (Metal-safe scan, presets)."""

from __future__ import annotations

from checkpoints_distilbert import make_distilbert_checkpoint
from checkpoints_modernbert import make_modernbert_checkpoint
from checkpoints_mpnet import make_mpnet_checkpoint
from checkpoints_roberta import make_roberta_checkpoint, make_xlm_roberta_checkpoint
from conftest import make_bert_checkpoint

# model_type -> builder(directory, seed=0, **config) -> checkpoint directory
CHECKPOINT_BUILDERS = {
    "bert": make_bert_checkpoint,
    "roberta": make_roberta_checkpoint,
    "xlm-roberta": make_xlm_roberta_checkpoint,
    "distilbert": make_distilbert_checkpoint,
    "mpnet": make_mpnet_checkpoint,
    "modernbert": make_modernbert_checkpoint,
}
