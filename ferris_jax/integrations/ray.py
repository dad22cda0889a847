"""Ray Data: `Embedder`, a callable class for `Dataset.map_batches` that loads a model once per
actor and adds an embedding column to each batch:

    ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"model": "sentence-transformers/all-MiniLM-L6-v2"},
        compute=ray.data.ActorPoolStrategy(size=4),
        num_gpus=1,
        batch_size=1024,
    )

A batch is a dict of numpy arrays (Ray's default) or a pandas DataFrame
(`batch_format="pandas"`); one `Encoder.encode` call embeds its text column. Nothing here imports
Ray, so the same class embeds the dict or DataFrame batches of Beam, Spark or Dask too. Ray
itself comes with the extra: `pip install "ferris-jax[ray]"`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, Literal

import jax
import numpy as np

from ferris_jax.api import load
from ferris_jax.errors import require_int

# Load options that say where the model runs; given any of them, the caller has chosen.
_PLACING_OPTIONS = ("backend", "device", "devices")


class Embedder:
    """Embeds a column of texts, batch by batch, with one model loaded at construction.

    Made by Ray Data once per actor (pass the arguments as `fn_constructor_kwargs`), then called
    with each batch. The batch comes back with every column it had (ids, metadata) and the
    vectors added as `embedding_column`: a float32 `[n, E]` array in a dict batch, which Ray
    stores as a fixed-shape tensor column; one float32 `[E]` array per row in a DataFrame.

    In a Ray actor that holds no accelerator (no `num_gpus`, no TPU resources), the model runs on
    the CPU and JAX is kept off the node's GPUs or TPUs (since Ray 2.56 they are visible to such
    actors, and JAX would otherwise take memory on every one): unless `backend`, `device` or
    `devices` is given or JAX's platforms are set (`JAX_PLATFORMS`), JAX is set to the CPU
    platform before the model loads. An actor with GPUs (`num_gpus=1`) sees only its own.

    Args:
        model: a name or path for `ferris_jax.load` (a local path must exist on every worker).
        text_column: the column of texts (str) to embed.
        embedding_column: the column the vectors go to (replaced if the batch has it).
        encode_batch_size: texts per device batch inside one call (`encode`'s `batch_size`;
            map_batches' `batch_size` is the rows of one call). Larger on GPUs, e.g. 512.
        role: "document" embeds with the model's document prompt, as `encode_document` and
            `Index.add` do (E5's "passage: "); "query" with its query prompt; None as `encode`.
        prompt_name, prompt, normalize_embeddings, truncate_dim: as in `Encoder.encode`.
        **load_kwargs: passed to `ferris_jax.load` (dtype, max_seq_length, backend, ...).
    """

    def __init__(
        self,
        model: str | os.PathLike = "sentence-transformers/all-MiniLM-L6-v2",
        *,
        text_column: str = "text",
        embedding_column: str = "embedding",
        encode_batch_size: int = 32,
        role: Literal["query", "document"] | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        **load_kwargs: Any,
    ):
        for name, column in (("text_column", text_column), ("embedding_column", embedding_column)):
            if not isinstance(column, str) or not column:
                raise ValueError(f"{name} must be a column name (a non-empty str), got {column!r}")
        self.text_column = text_column
        self.embedding_column = embedding_column
        if role not in (None, "query", "document"):
            raise ValueError(f"role must be 'query', 'document' or None, got {role!r}")
        batch_size = require_int("encode_batch_size", encode_batch_size)
        placed = any(load_kwargs.get(name) is not None for name in _PLACING_OPTIONS)
        if not placed and not jax.config.jax_platforms and _ray_actor_without_accelerator():
            jax.config.update("jax_platforms", "cpu")  # before JAX starts in this process
            load_kwargs["backend"] = "cpu"
        self.encoder = load(model, **load_kwargs)
        self.options: dict[str, Any] = {
            "batch_size": batch_size,
            "prompt": self.encoder.prompt_for(role, prompt_name, prompt),  # checked here, once
            "normalize_embeddings": bool(normalize_embeddings),
            "truncate_dim": truncate_dim,
            "show_progress_bar": False,
        }

    def __call__(self, batch: Any) -> Any:
        """The batch with `embedding_column` added: a dict of numpy arrays or a DataFrame."""
        if isinstance(batch, Mapping):
            vectors = self._embed(batch, list(batch))
            return {**batch, self.embedding_column: vectors}
        if hasattr(batch, "columns") and hasattr(batch, "assign"):  # pandas (or alike)
            vectors = self._embed(batch, list(batch.columns))
            return batch.assign(**{self.embedding_column: list(vectors)})
        raise TypeError(
            f"Embedder takes a batch as a dict of numpy arrays or a pandas DataFrame, got "
            f"{type(batch).__name__}: pass batch_format='numpy' (the default) or 'pandas' to "
            "map_batches"
        )

    def _embed(self, batch: Any, columns: list[str]) -> np.ndarray:
        if self.text_column not in columns:
            raise ValueError(
                f"the batch has no column {self.text_column!r} (its columns: "
                f"{', '.join(map(repr, columns)) or 'none'}): pass text_column=<the column of "
                "texts> to Embedder (fn_constructor_kwargs in map_batches)"
            )
        texts = batch[self.text_column]
        texts = texts.tolist() if hasattr(texts, "tolist") else list(texts)  # np.str_ -> str
        try:
            return self.encoder.encode(texts, **self.options)
        except TypeError as e:  # a null or a number in the column
            raise TypeError(f"column {self.text_column!r} of this batch: {e}") from e


def _ray_actor_without_accelerator() -> bool:
    """Whether this process is a Ray actor to which Ray assigned no GPU, TPU or other
    accelerator. Ray is only looked at if it is already imported (it is, in its workers)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    context = ray.get_runtime_context()
    if context.get_actor_id() is None:  # the driver, or a task
        return False
    return not any(context.get_accelerator_ids().values())
