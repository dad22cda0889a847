"""LlamaIndex: `FerrisEmbedding`, a `BaseEmbedding` backed by a ferris-jax Encoder. Texts (nodes)
are embedded with the model's document prompt, queries with its query prompt (E5's
"passage: " / "query: "), as `Encoder.encode_document` / `encode_query` do.

`FerrisRerank`, a `BaseNodePostprocessor` backed by a ferris-jax cross-encoder `Reranker`, as
llama-index's `SentenceTransformerRerank`: the `top_n` nodes by `Reranker.rank`, best first, with
their scores replaced by the cross-encoder's. Pass it as a query engine's `node_postprocessors`.

Needs the extra: `pip install "ferris-jax[llama-index]"`.
"""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as e:  # pragma: no cover - exercised by hiding the package
    raise ImportError(
        "ferris_jax.integrations.llama_index needs llama-index-core: "
        'pip install "ferris-jax[llama-index]"'
    ) from e

from ferris_jax.integrations import require_text, require_texts


class FerrisEmbedding(BaseEmbedding):
    """LlamaIndex embeddings from a ferris-jax model.

    Build with `FerrisEmbedding(model_name="e5-small-v2")` (any name or path
    `ferris_jax.load` takes; `load_kwargs` are passed to it) or
    `FerrisEmbedding(encoder=enc)` for a loaded Encoder. `embed_batch_size` texts go in one
    batch; `normalize` L2-normalizes the vectors.
    """

    model_name: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="The ferris-jax model: a preset, hub id or local path.",
    )
    embed_batch_size: int = Field(default=32, gt=0, le=2048, description="Texts per batch.")
    normalize: bool = Field(default=False, description="L2-normalize the vectors.")
    query_prompt_name: str | None = Field(
        default=None, description="A prompt instead of the model's query prompt."
    )
    text_prompt_name: str | None = Field(
        default=None, description="A prompt instead of the model's document prompt."
    )
    load_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Options for ferris_jax.load (dtype, device, ...)."
    )
    _encoder: Any = PrivateAttr()

    def __init__(self, encoder: Any = None, **data: Any):
        from ferris_jax.encoder import Encoder

        if encoder is not None:
            if not isinstance(encoder, Encoder):
                raise TypeError(
                    f"encoder must be a ferris_jax Encoder, got {type(encoder).__name__}"
                )
            if data.get("load_kwargs"):
                raise TypeError("load_kwargs given with a loaded encoder")
            data.setdefault("model_name", encoder.checkpoint.name)
        super().__init__(**data)
        if encoder is None:
            from ferris_jax.api import load

            encoder = load(self.model_name, **self.load_kwargs)
        self._encoder = encoder

    @classmethod
    def class_name(cls) -> str:
        return "FerrisEmbedding"

    @property
    def encoder(self) -> Any:
        """The ferris-jax `Encoder`."""
        return self._encoder

    def _options(self, prompt_name: str | None) -> dict[str, Any]:
        options = {"batch_size": self.embed_batch_size, "normalize_embeddings": self.normalize}
        return options if prompt_name is None else {**options, "prompt_name": prompt_name}

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        texts = require_texts("get_text_embedding_batch", texts)  # before the batching loop
        return super().get_text_embedding_batch(texts, show_progress, **kwargs)

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        texts = require_texts("aget_text_embedding_batch", texts)
        return await super().aget_text_embedding_batch(texts, show_progress, **kwargs)

    def _get_query_embedding(self, query: str) -> Embedding:
        require_text("get_query_embedding", query)
        return self._encoder.encode_query([query], **self._options(self.query_prompt_name))[
            0
        ].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        texts = require_texts("get_text_embedding_batch", texts)
        if not texts:
            return []
        options = self._options(self.text_prompt_name)
        return self._encoder.encode_document(texts, **options).tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        require_text("get_text_embedding", text)
        return self._get_text_embeddings([text])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


class FerrisRerank(BaseNodePostprocessor):
    """A LlamaIndex node postprocessor that reranks with a ferris-jax cross-encoder.

    Build with `FerrisRerank(model="cross-encoder/ms-marco-MiniLM-L6-v2", top_n=2)` (any name
    or path `ferris_jax.load_reranker` takes; `load_kwargs` are passed to it) or
    `FerrisRerank(reranker=rr)` for a loaded Reranker. Nodes are scored on their text with
    metadata as embedded (`MetadataMode.EMBED`), as `SentenceTransformerRerank` scores them;
    `keep_retrieval_score` keeps a node's previous score in its metadata ("retrieval_score").
    New `NodeWithScore`s are returned: unlike `SentenceTransformerRerank`, the given ones keep
    their scores (and their nodes their metadata). `top_n` defaults to 2, as there.
    """

    model: str = Field(
        default="cross-encoder/ms-marco-MiniLM-L6-v2",
        description="The ferris-jax cross-encoder: a hub id or local path.",
    )
    top_n: int | None = Field(default=2, ge=0, description="Nodes to keep (None: all).")
    batch_size: int = Field(default=32, gt=0, description="Pairs per batch.")
    keep_retrieval_score: bool = Field(
        default=False, description='Keep the previous score in metadata["retrieval_score"].'
    )
    load_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Options for ferris_jax.load_reranker (dtype, ...)."
    )
    _reranker: Any = PrivateAttr()

    def __init__(self, reranker: Any = None, **data: Any):
        from ferris_jax.reranker import Reranker

        if reranker is not None:
            if not isinstance(reranker, Reranker):
                raise TypeError(
                    f"reranker must be a ferris_jax Reranker, got {type(reranker).__name__}"
                )
            if data.get("load_kwargs"):
                raise TypeError("load_kwargs given with a loaded reranker")
            data.setdefault("model", reranker.checkpoint.name)
        super().__init__(**data)
        if reranker is None:
            from ferris_jax.api import load_reranker

            reranker = load_reranker(self.model, **self.load_kwargs)
        self._reranker = reranker

    @classmethod
    def class_name(cls) -> str:
        return "FerrisRerank"

    @property
    def reranker(self) -> Any:
        """The ferris-jax `Reranker`."""
        return self._reranker

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("FerrisRerank needs the query: pass query_bundle or query_str")
        if not nodes:
            return []
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        payload = {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self.model,
            EventPayload.QUERY_STR: query_bundle.query_str,
            EventPayload.TOP_K: self.top_n,
        }
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:
            ranked = self._reranker.rank(
                query_bundle.query_str, texts, top_k=self.top_n, batch_size=self.batch_size
            )
            kept = [
                NodeWithScore(node=self._node(nodes[r["corpus_id"]]), score=r["score"])
                for r in ranked
            ]
            event.on_end(payload={EventPayload.NODES: kept})
        return kept

    def _node(self, scored: NodeWithScore) -> Any:
        """The node itself, or a copy with its retrieval score in the metadata (the given
        node is left as it is)."""
        if not self.keep_retrieval_score:
            return scored.node
        metadata = {**scored.node.metadata, "retrieval_score": scored.score}
        return scored.node.model_copy(update={"metadata": metadata})
