"""Fine-tuning with optax: pure contrastive losses of embeddings, a train step, evaluators.

`fit(encoder, train_data, loss=...)` is the loop for the common case; research loops build
their own around `train_step` and `TrainBatch` (from `make_batch`, or `collate` of a
`TrainDataset`). `import ferris_jax` does not import this package (nor jax or optax); importing
it imports them.
"""

# Direct imports, not a lazy `__getattr__`: the submodule `fit` would shadow the function `fit`
# as an attribute of the package once imported.
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
