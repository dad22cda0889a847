"""The Reranker: a loaded cross-encoder (sequence classifier) and the thin shell around its
pure function, named after sentence-transformers' `CrossEncoder` (`predict`, `rank`).

`Reranker.apply(params, ...)` is the functional core (`programs.score`: logits
`[B, num_labels]`); `predict` validates the pairs, tokenizes them as transformers does a text
pair, batches them by length into the bucket shapes `encode` uses (`batching.BucketPolicy`),
runs the compiled programs (`programs.Programs`) and applies the activation.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from ferris_jax import ops, programs
from ferris_jax.batching import BucketPolicy, TokenBatch, pad, plan_batches
from ferris_jax.errors import CheckpointError, require_int
from ferris_jax.loading.checkpoint import ClassifierCheckpoint
from ferris_jax.loading.export import save_classifier
from ferris_jax.ops.impl import check_impls, requested_impls
from ferris_jax.placement import Placement
from ferris_jax.programs import Programs
from ferris_jax.runtime.backend import Backend
from ferris_jax.tokenize import validate_pairs, validate_texts

Activation = Callable[[jax.Array], jax.Array]


def _is_one_pair(inputs: Any) -> bool:
    """sentence-transformers' `is_singular_input`: a list or tuple whose first item is no list
    or tuple (or a 1-D string array) is one pair, not a batch."""
    if isinstance(inputs, (list, tuple)):
        return len(inputs) > 0 and not isinstance(inputs[0], (list, tuple))
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in ("U", "O"):
        return inputs.size > 0 and inputs.ndim < 2
    return False


def resolve_activation(spec: str | Activation | None, num_labels: int) -> Activation:
    """The activation `predict` applies to the logits: a callable as it is, a name (ours, e.g.
    "sigmoid", or a torch class path such as "torch.nn.modules.activation.Sigmoid"), or None for
    the CrossEncoder default: sigmoid for one label, identity for several."""
    if spec is None:
        return jax.nn.sigmoid if num_labels == 1 else ops.activation("identity")
    if isinstance(spec, str):
        return ops.activation(spec)
    if callable(spec):
        return spec
    raise TypeError(
        f"activation_fn must be None, a name such as 'sigmoid' or a callable on arrays, got "
        f"{type(spec).__name__}"
    )


class Reranker:
    """A loaded cross-encoder. Build with `ferris_jax.load_reranker(...)`.

    Attributes:
        activation_fn: applied to the logits by `predict` and `rank` unless they are given one.
        num_labels: the classifier's outputs per pair.
    """

    def __init__(
        self,
        checkpoint: ClassifierCheckpoint,
        *,
        placement: Placement | None = None,
        backend: Backend | None = None,
        impls: Mapping[str, str] | None = None,
        activation_fn: str | Activation | None = None,
    ):
        self.checkpoint = checkpoint
        self.graphdef = checkpoint.graphdef
        self.params: nnx.State = checkpoint.params
        self.tokenizer = checkpoint.tokenizer
        self.placement = placement or Placement.of(self.params)
        self.backend = backend or Backend(self.placement.platform, self.device, requested="device")
        self.impls: dict[str, str] = check_impls(impls or {})
        self.programs = Programs(self.graphdef, self.placement)
        self.max_batch_tokens: int | None = self.backend.defaults.max_batch_tokens
        self.num_labels = checkpoint.head.num_labels
        self.activation_fn = self._model_activation(activation_fn)

    def _model_activation(self, spec: str | Activation | None) -> Activation:
        """The explicit activation, else the checkpoint's saved one, else the default."""
        saved = self.checkpoint.activation_fn
        if spec is not None or saved is None:
            return resolve_activation(spec, self.num_labels)
        try:
            return resolve_activation(saved, self.num_labels)
        except ValueError as e:
            if saved.startswith("torch."):
                raise CheckpointError(
                    f"{self.checkpoint.path}: the saved activation_fn {saved!r} is not supported "
                    f"({e}); pass activation_fn= to load_reranker"
                ) from None
            # sentence-transformers, too, ignores a non-torch path without trust_remote_code.
            warnings.warn(
                f"saved activation_fn {saved!r} is not a torch activation; using the default",
                stacklevel=3,
            )
            return resolve_activation(None, self.num_labels)

    # ------------------------------------------------------------ functional core
    def apply(
        self,
        params: nnx.State,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Pure: logits `[B, num_labels]` of one text pair per row (no activation), traced with
        this reranker's `impls`.

        Args:
            params: a parameter pytree shaped like `reranker.params`.
            input_ids, attention_mask, token_type_ids: `[B, L]` integer arrays (`tokenize`).
        """
        with ops.use_impl(**self.impls):
            return programs.score(self.graphdef, params, input_ids, attention_mask, token_type_ids)

    # ------------------------------------------------------------ imperative shell
    @property
    def device(self) -> jax.Device:
        return self.placement.device

    @property
    def max_seq_length(self) -> int:
        """Tokens per pair at most, special tokens included (longer pairs are cut
        `longest_first`); settable up to the model's position limit."""
        return self.tokenizer.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        value = require_int("max_seq_length", value, minimum=2)
        limit = self.checkpoint.max_positions
        if limit is not None and value > limit:
            raise ValueError(f"max_seq_length {value} exceeds the model's {limit} positions")
        self.tokenizer.set_max_seq_length(value)

    @property
    def compiled_programs(self) -> list[tuple[int, ...]]:
        """The (batch, sequence) shapes compiled so far."""
        return self.programs.shapes

    def tokenize(self, pairs: Sequence[Sequence[str]]) -> TokenBatch:
        """The batch `predict` would feed for these pairs, padded to the longest."""
        tok = self.tokenizer.encode_pairs(*validate_pairs(pairs))
        longest = int(tok.lengths.max(initial=1))
        return pad(tok, np.arange(len(tok)), (len(tok), longest), self.tokenizer.pad_token_id)

    def bucket_policy(self, batch_size: int) -> BucketPolicy:
        """The shapes `predict(batch_size=...)` uses."""
        return BucketPolicy.for_limits(
            batch_size,
            self.max_seq_length,
            max_batch_tokens=self.max_batch_tokens,
            rows_multiple=self.placement.rows_multiple,
        )

    def lower(self, shape: tuple[int, int]) -> jax.stages.Lowered:
        """The program for a `(batch, seq_len)` shape, lowered (`.as_text()`: StableHLO)."""
        return self.programs.lower(self.params, shape, requested_impls(self.impls))

    def logits(
        self,
        pairs: Sequence[Sequence[str]],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
    ) -> jax.Array:
        """Raw logits `[n, num_labels]` (float32, on the device) of the pairs, in input order."""
        firsts, seconds = validate_pairs(pairs)
        batch_size = require_int("batch_size", batch_size)
        tok = self.tokenizer.encode_pairs(firsts, seconds)
        if not len(tok):
            return self.placement.put(jnp.zeros((0, self.num_labels), jnp.float32))
        policy = self.bucket_policy(batch_size)
        batches = plan_batches(tok.lengths.astype(np.int64), policy)
        impls = requested_impls(self.impls)
        self.programs.compile_all(self.params, [b.shape for b in batches], impls)
        leaves, _ = self.programs.flat_params(self.params)
        parts = []
        for batch in tqdm(batches, unit="batch", disable=not show_progress_bar):
            padded = pad(tok, batch.texts, batch.shape, self.tokenizer.pad_token_id)
            arrays = (padded.input_ids, padded.attention_mask, padded.token_type_ids)
            program = self.programs.get(self.params, batch.shape, impls)
            parts.append(program(leaves, *self.programs.inputs(arrays, 0))[: len(batch.texts)])
        order = np.argsort(np.concatenate([b.texts for b in batches]), kind="stable")
        return jnp.concatenate(parts)[order].astype(jnp.float32)

    def predict(
        self,
        inputs: Sequence[Sequence[str]] | Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        activation_fn: str | Activation | None = None,
        apply_softmax: bool | None = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
    ) -> np.ndarray | jax.Array | list[np.ndarray] | np.floating:
        """Scores of text pairs, as `CrossEncoder.predict` gives them.

        Args:
            inputs: a list of (text, text) pairs, or one pair.
            batch_size: pairs per batch (batches are padded to a few fixed shapes).
            show_progress_bar: a bar of batches when True.
            activation_fn: applied to the logits; None: this reranker's `activation_fn` (the
                saved one, else sigmoid for one label, identity for several). A name ("sigmoid",
                "identity", "tanh", a torch class path) or a callable on arrays.
            apply_softmax: with several labels, softmax over them (after the activation).
            convert_to_numpy: float32 numpy (default); False without `convert_to_tensor`: a
                list of per-pair numpy arrays.
            convert_to_tensor: one `jax.Array` on the reranker's device (wins over numpy).

        Returns:
            `[n]` for one label, `[n, num_labels]` for several; one pair gives its row alone.
        """
        one = _is_one_pair(inputs)
        if one:
            inputs = [list(inputs) if isinstance(inputs, np.ndarray) else inputs]
        act = (
            self.activation_fn
            if activation_fn is None
            else resolve_activation(activation_fn, self.num_labels)
        )
        scores = act(self.logits(inputs, batch_size, show_progress_bar))
        if self.num_labels == 1:
            scores = scores[:, 0]
        if apply_softmax and scores.ndim > 1:
            scores = jax.nn.softmax(scores, axis=1)
        if convert_to_tensor:
            result: Any = scores
        elif convert_to_numpy:
            result = np.asarray(scores, dtype=np.float32)
        else:
            result = list(np.asarray(scores, dtype=np.float32))
        return result[0] if one else result

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        activation_fn: str | Activation | None = None,
    ) -> list[dict[str, Any]]:
        """The documents sorted by their score against `query`, best first, as
        `CrossEncoder.rank` returns them: `{"corpus_id", "score"}` dicts (with "text" when
        `return_documents`), the first `top_k` (all when None). Models with one label only."""
        if self.num_labels != 1:
            raise ValueError(
                f"rank() needs a model with num_labels=1, this one has {self.num_labels}; use "
                "predict() on (query, document) pairs instead"
            )
        if not isinstance(query, str):
            raise TypeError(f"query is {type(query).__name__} ({query!r:.40}), expected str")
        documents = validate_texts(documents, name="documents")
        if top_k is not None:
            top_k = require_int("top_k", top_k, minimum=0)
        scores = self.predict(
            [(query, d) for d in documents],
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            activation_fn=activation_fn,
        ).tolist()
        results = [
            {"corpus_id": i, "score": s, **({"text": documents[i]} if return_documents else {})}
            for i, s in enumerate(scores)
        ]
        results.sort(key=lambda r: r["score"], reverse=True)  # stable: ties keep input order
        return results[:top_k]

    def save_pretrained(self, path: str | os.PathLike, params: nnx.State | None = None) -> Path:
        """Write this cross-encoder to the folder `path` as transformers saves a
        `*ForSequenceClassification` model (config.json with the labels as loaded, safetensors
        under the checkpoint's own tensor names, the tokenizer files with `max_seq_length` as
        their `model_max_length`, the saved CrossEncoder activation), which
        `AutoModelForSequenceClassification`, sentence-transformers' `CrossEncoder` and
        `load_reranker` read. Atomic; the folder may be new, empty or an
        earlier ferris-jax save's (see `ferris_jax.loading.export.save_pretrained`).

        Args:
            path: the folder to write.
            params: the parameters to save (e.g. trained ones); None: `self.params`.

        Returns:
            The folder's path.
        """
        params = self.params if params is None else params
        return save_classifier(path, self.checkpoint, params, self.max_seq_length)

    def __repr__(self) -> str:
        return (
            f"Reranker({self.checkpoint.name!r}, {self.checkpoint.model_type}, "
            f"num_labels={self.num_labels}, max_seq_length={self.max_seq_length}, "
            f"device={self.placement})"
        )
