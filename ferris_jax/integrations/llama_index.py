"""LlamaIndex: `FerrisEmbedding`, a `BaseEmbedding` backed by a ferris-jax Encoder. Texts (nodes)
are embedded with the model's document prompt, queries with its query prompt (E5's
"passage: " / "query: "), as `Encoder.encode_document` / `encode_query` do.

Needs the extra: `pip install "ferris-jax[llama-index]"`.
"""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
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
