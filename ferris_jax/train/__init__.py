"""Fine-tuning with optax: pure contrastive losses of embeddings, a train step, evaluators;
and for rerankers (cross-encoders), pure losses of their scores and evaluators of their ranking.

`fit(encoder, train_data, loss=...)` is the loop for the common case (`fit_reranker(reranker,
pairs, labels)` for cross-encoders, around `rerank_step`); research loops build
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
from ferris_jax.train.rerank import PairBatch, fit_reranker, pair_batch, rerank_step
from ferris_jax.train.rerank_evaluators import (
    CrossEncoderCorrelationEvaluator,
    CrossEncoderRerankingEvaluator,
)
from ferris_jax.train.rerank_losses import (
    binary_cross_entropy_loss,
    cross_entropy_loss,
    in_batch_negatives,
    lambda_loss,
    list_net_loss,
    margin_mse_loss,
    mse_loss,
    multiple_negatives_ranking_loss,
    rank_net_loss,
)
from ferris_jax.train.step import Column, TrainBatch, TrainState, adamw, init_state, train_step

__all__ = [
    "BatchSampler",
    "Column",
    "CrossEncoderCorrelationEvaluator",
    "CrossEncoderRerankingEvaluator",
    "EmbeddingSimilarityEvaluator",
    "History",
    "InformationRetrievalEvaluator",
    "NoDuplicatesBatchSampler",
    "PairBatch",
    "TrainBatch",
    "TrainDataset",
    "TrainState",
    "adamw",
    "binary_cross_entropy_loss",
    "collate",
    "cosent_loss",
    "cross_entropy_loss",
    "fit",
    "fit_reranker",
    "in_batch_negatives",
    "init_state",
    "iter_batches",
    "lambda_loss",
    "list_net_loss",
    "load_train_data",
    "make_batch",
    "margin_mse_loss",
    "matryoshka_loss",
    "mnrl_loss",
    "mnrl_symmetric_loss",
    "mse_loss",
    "multiple_negatives_ranking_loss",
    "pair_batch",
    "rank_net_loss",
    "rerank_step",
    "train_step",
    "uses_in_batch_negatives",
]
