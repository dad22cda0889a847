"""LangChain: `FerrisEmbeddings`, a `langchain_core.embeddings.Embeddings` backed by a ferris-jax
Encoder. Documents are embedded with the model's document prompt, queries with its query prompt
(E5's "passage: " / "query: "), as `Encoder.encode_document` / `encode_query` do.

Needs the extra: `pip install "ferris-jax[langchain]"`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

try:
    from langchain_core.embeddings import Embeddings
except ImportError as e:  # pragma: no cover - exercised by hiding the package
    raise ImportError(
        "ferris_jax.integrations.langchain needs langchain-core: "
        'pip install "ferris-jax[langchain]"'
    ) from e

from ferris_jax.errors import require_int
from ferris_jax.integrations import require_text, require_texts

if TYPE_CHECKING:
    from ferris_jax.encoder import Encoder


class FerrisEmbeddings(Embeddings):
    """LangChain embeddings from a ferris-jax model.

    Args:
        model: an `Encoder`, or a name or path for `ferris_jax.load` (default:
            all-MiniLM-L6-v2).
        batch_size: texts per batch.
        normalize_embeddings: L2-normalize the vectors (a model with a Normalize module always
            returns unit vectors).
        query_prompt_name, document_prompt_name: prompts to use instead of the model's query
            and document prompts.
        **load_kwargs: passed to `ferris_jax.load` (dtype, max_seq_length, device, ...).

    >>> embeddings = FerrisEmbeddings("e5-small-v2")  # doctest: +SKIP
    >>> vector = embeddings.embed_query("how do I bake bread?")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Encoder | str | os.PathLike = "sentence-transformers/all-MiniLM-L6-v2",
        *,
        batch_size: int = 32,
        normalize_embeddings: bool = False,
        query_prompt_name: str | None = None,
        document_prompt_name: str | None = None,
        **load_kwargs: Any,
    ):
        self.encoder = _encoder(model, load_kwargs)
        self.batch_size = require_int("batch_size", batch_size)
        self.normalize_embeddings = bool(normalize_embeddings)
        self.query_prompt_name = query_prompt_name
        self.document_prompt_name = document_prompt_name

    def _options(self, prompt_name: str | None) -> dict[str, Any]:
        options = {"batch_size": self.batch_size, "normalize_embeddings": self.normalize_embeddings}
        return options if prompt_name is None else {**options, "prompt_name": prompt_name}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (with the document prompt); one vector per text."""
        texts = require_texts("embed_documents", texts)
        if not texts:
            return []
        options = self._options(self.document_prompt_name)
        return self.encoder.encode_document(texts, **options).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (with the query prompt)."""
        require_text("embed_query", text)
        options = self._options(self.query_prompt_name)
        return self.encoder.encode_query([text], **options)[0].tolist()


def _encoder(model: Any, load_kwargs: dict[str, Any]) -> Encoder:
    from ferris_jax.encoder import Encoder

    if isinstance(model, Encoder):
        if load_kwargs:
            raise TypeError(f"load options {sorted(load_kwargs)} given with a loaded Encoder")
        return model
    from ferris_jax.api import load

    return load(model, **load_kwargs)
