"""LangChain: `FerrisEmbeddings`, a `langchain_core.embeddings.Embeddings` backed by a ferris-jax
Encoder. Documents are embedded with the model's document prompt, queries with its query prompt
(E5's "passage: " / "query: "), as `Encoder.encode_document` / `encode_query` do.

`FerrisReranker`, a `BaseDocumentCompressor` backed by a ferris-jax cross-encoder `Reranker`
(LangChain's interface for rerankers, as `CrossEncoderReranker` and `CohereRerank`): it keeps
the `top_n` documents by `Reranker.rank`, best first, each a copy with its score in
`metadata["relevance_score"]`. Plug it into a `ContextualCompressionRetriever`.

Needs the extra: `pip install "ferris-jax[langchain]"`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.embeddings import Embeddings
    from pydantic import ConfigDict, Field
except ImportError as e:  # pragma: no cover - exercised by hiding the package
    raise ImportError(
        "ferris_jax.integrations.langchain needs langchain-core: "
        'pip install "ferris-jax[langchain]"'
    ) from e

from ferris_jax.errors import require_int
from ferris_jax.integrations import require_text, require_texts

if TYPE_CHECKING:
    from ferris_jax.encoder import Encoder
    from ferris_jax.reranker import Reranker


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


class FerrisReranker(BaseDocumentCompressor):
    """A LangChain document compressor that reranks with a ferris-jax cross-encoder.

    Args:
        model: a `Reranker`, or a name or path for `ferris_jax.load_reranker` (default:
            cross-encoder/ms-marco-MiniLM-L6-v2).
        top_n: documents to keep, best first (None: all of them, reordered).
        batch_size: (query, document) pairs per batch.
        **load_kwargs: passed to `ferris_jax.load_reranker` (max_length, dtype, device, ...).

    ContextualCompressionRetriever is in `langchain_classic.retrievers` (LangChain 1.x) or
    `langchain.retrievers` (0.x):

    >>> from langchain_classic.retrievers import ContextualCompressionRetriever  # doctest: +SKIP
    >>> retriever = ContextualCompressionRetriever(  # doctest: +SKIP
    ...     base_compressor=FerrisReranker(top_n=3), base_retriever=vectorstore.as_retriever()
    ... )
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: Any = Field(description="The ferris-jax Reranker.")
    top_n: int | None = Field(default=3, ge=0, description="Documents to keep (None: all).")
    batch_size: int = Field(default=32, gt=0, description="Pairs per batch.")

    def __init__(
        self,
        model: Reranker | str | os.PathLike = "cross-encoder/ms-marco-MiniLM-L6-v2",
        *,
        top_n: int | None = 3,
        batch_size: int = 32,
        **load_kwargs: Any,
    ):
        super().__init__(model=_reranker(model, load_kwargs), top_n=top_n, batch_size=batch_size)

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """The `top_n` documents by their relevance to `query`, best first: copies with the
        score in `metadata["relevance_score"]` (the given documents are left as they are)."""
        documents = list(documents)
        ranked = self.model.rank(
            query, [d.page_content for d in documents], top_k=self.top_n, batch_size=self.batch_size
        )
        picked = [(documents[r["corpus_id"]], r["score"]) for r in ranked]
        return [
            doc.model_copy(update={"metadata": {**doc.metadata, "relevance_score": score}})
            for doc, score in picked
        ]


def _reranker(model: Any, load_kwargs: dict[str, Any]) -> Reranker:
    from ferris_jax.reranker import Reranker

    if isinstance(model, Reranker):
        if load_kwargs:
            raise TypeError(f"load options {sorted(load_kwargs)} given with a loaded Reranker")
        return model
    from ferris_jax.api import load_reranker

    return load_reranker(model, **load_kwargs)
