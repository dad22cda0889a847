"""Fine-tuning with optax: pure contrastive losses of embeddings, a train step, evaluators.

`fit(encoder, train_data, loss=...)` is the loop for the common case; research loops build
their own around `train_step` and `TrainBatch` (from `make_batch`, or `collate` of a
`TrainDataset`). Everything loads lazily, so `import ferris_jax.train` costs nothing until used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_LAZY = {
    **dict.fromkeys(
        [
            "cosent_loss",
            "matryoshka_loss",
            "mnrl_loss",
            "mnrl_symmetric_loss",
            "uses_in_batch_negatives",
        ],
        "ferris_jax.train.losses",
    ),
    **dict.fromkeys(
        ["Column", "TrainBatch", "TrainState", "adamw", "init_state", "train_step"],
        "ferris_jax.train.step",
    ),
    **dict.fromkeys(
        [
            "BatchSampler",
            "NoDuplicatesBatchSampler",
            "TrainDataset",
            "collate",
            "iter_batches",
            "load_train_data",
            "make_batch",
        ],
        "ferris_jax.train.data",
    ),
    **dict.fromkeys(["History", "fit"], "ferris_jax.train.fit"),
    **dict.fromkeys(
        ["EmbeddingSimilarityEvaluator", "InformationRetrievalEvaluator"],
        "ferris_jax.train.evaluators",
    ),
}

if TYPE_CHECKING:
    from ferris_jax.train.data import (
        BatchSampler,
        NoDuplicatesBatchSampler,
        TrainDataset,
        collate,
        iter_batches,
        load_train_data,
        make_batch,
    )
    from ferris_jax.train.evaluators import (
        EmbeddingSimilarityEvaluator,
        InformationRetrievalEvaluator,
    )
    from ferris_jax.train.fit import History, fit
    from ferris_jax.train.losses import (
        cosent_loss,
        matryoshka_loss,
        mnrl_loss,
        mnrl_symmetric_loss,
        uses_in_batch_negatives,
    )
    from ferris_jax.train.step import Column, TrainBatch, TrainState, adamw, init_state, train_step


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ferris_jax.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BatchSampler",
    "Column",
    "EmbeddingSimilarityEvaluator",
    "History",
    "InformationRetrievalEvaluator",
    "NoDuplicatesBatchSampler",
    "TrainBatch",
    "TrainDataset",
    "TrainState",
    "adamw",
    "collate",
    "cosent_loss",
    "fit",
    "init_state",
    "iter_batches",
    "load_train_data",
    "make_batch",
    "matryoshka_loss",
    "mnrl_loss",
    "mnrl_symmetric_loss",
    "train_step",
    "uses_in_batch_negatives",
]
