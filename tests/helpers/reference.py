"""The reference implementations, loaded once per process, and a record of what they embed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np


@cache
def sentence_transformer(path: Path):
    """sentence-transformers' own model of the checkpoint folder `path`, on the CPU."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for the block: on a shared, busy CPU its default thread pool runs
    several times slower (22 s vs 180 s to embed STS-B dev with MiniLM on 2 loaded cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Recorded:
    """A sentence-transformers model that keeps a numpy copy of every embedding its `encode`,
    `encode_query` and `encode_document` return, so a test can feed a reference evaluator's own
    embeddings to our metric functions."""

    def __init__(self, model: Any):
        self._model = model
        self.outputs: list[tuple[str, list[str], np.ndarray]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _recording(self, method: str):
        def call(texts, *args, **kwargs):
            out = getattr(self._model, method)(texts, *args, **kwargs)
            array = out.cpu().numpy() if hasattr(out, "cpu") else np.asarray(out)
            self.outputs.append((method, list(texts), array))
            return out

        return call

    @property
    def encode(self):
        return self._recording("encode")

    @property
    def encode_query(self):
        return self._recording("encode_query")

    @property
    def encode_document(self):
        return self._recording("encode_document")
