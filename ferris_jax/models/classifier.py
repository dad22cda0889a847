"""Sequence classification (cross-encoder rerankers): a backbone encoder and transformers'
`*ForSequenceClassification` head, one kind of head per family.

- "bert" (BertForSequenceClassification): `classifier(tanh(pooler.dense(h[:, 0])))`.
- "roberta" (XLMRobertaForSequenceClassification, RobertaForSequenceClassification):
  `classifier.out_proj(tanh(classifier.dense(h[:, 0])))`.
- "modernbert" (ModernBertForSequenceClassification): `classifier(head.norm(act(head.dense(
  pool(h)))))`, pooled per `classifier_pooling` ("cls" or "mean").

Dropout is off (inference). The head's weight names are data (`HEAD_RULES`), mapped beside the
family's backbone rules into one strict table (`weight_map`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from ferris_jax import ops
from ferris_jax.models.layers import LayerNorm, Linear
from ferris_jax.pooling import pool
from ferris_jax.weights import LINEAR, NORM, Rule, WeightMap

HeadKind = Literal["bert", "roberta", "modernbert"]
# config.json model_type -> the head its *ForSequenceClassification class has.
HEAD_OF_MODEL_TYPE: dict[str, HeadKind] = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "modernbert": "modernbert",
}


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """The head's fields of a Hugging Face `config.json` (transformers' names)."""

    kind: HeadKind
    hidden_size: int
    num_labels: int
    # ModernBERT only (the other heads are fixed: tanh, [CLS], biases).
    classifier_pooling: Literal["cls", "mean"] = "cls"
    classifier_activation: str = "gelu"
    classifier_bias: bool = False
    norm_eps: float = 1e-5
    norm_bias: bool = False

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> ClassifierConfig:
        """The head of a `config.json`; `num_labels` as transformers counts it (its `id2label`
        entries, else `num_labels`, else 2). ValueError for a model type without a head here."""
        model_type = config.get("model_type")
        if model_type not in HEAD_OF_MODEL_TYPE:
            raise ValueError(
                f"model_type {model_type!r} has no sequence-classification head in ferris-jax; "
                f"supported: {', '.join(sorted(HEAD_OF_MODEL_TYPE))}"
            )
        labels = config.get("id2label")
        num_labels = len(labels) if isinstance(labels, dict) else config.get("num_labels", 2)
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1:
            raise ValueError(f"'num_labels' must be an integer >= 1, got {num_labels!r}")
        kind = HEAD_OF_MODEL_TYPE[model_type]
        fields = {f.name for f in dataclasses.fields(cls)} - {"kind", "num_labels"}
        kwargs = {k: v for k, v in config.items() if k in fields and v is not None}
        head = cls(kind=kind, num_labels=num_labels, **kwargs)
        if head.classifier_pooling not in ("cls", "mean"):
            raise ValueError(
                f"'classifier_pooling' must be 'cls' or 'mean', got {head.classifier_pooling!r}"
            )
        ops.activation(head.classifier_activation)  # unknown names fail at load, not at call
        return head


class ClassifierHead(nnx.Module):
    """Hidden states `[B, L, D]` and their mask -> logits `[B, num_labels]`, in float32."""

    def __init__(self, cfg: ClassifierConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        D = cfg.hidden_size
        self.config = cfg
        # Stored in the model dtype, computed in float32 (as the embedder's Dense layers).
        bias = cfg.classifier_bias if cfg.kind == "modernbert" else True
        self.dense = Linear(D, D, use_bias=bias, dtype=jnp.float32, param_dtype=dtype, rngs=rngs)
        self.norm = (
            LayerNorm(D, eps=cfg.norm_eps, dtype=dtype, use_bias=cfg.norm_bias)
            if cfg.kind == "modernbert"
            else None
        )
        self.out = Linear(D, cfg.num_labels, dtype=jnp.float32, param_dtype=dtype, rngs=rngs)
        self.act = ops.activation("tanh" if self.norm is None else cfg.classifier_activation)

    def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        mode = self.config.classifier_pooling if self.config.kind == "modernbert" else "cls"
        x = pool(hidden, mask, mode)  # [B, D] float32; "cls" is row 0 (the first real token)
        x = self.act(self.dense(x))
        if self.norm is not None:
            x = self.norm(x)
        return self.out(x)


class SequenceClassifier(nnx.Module):
    """`(input_ids, attention_mask, token_type_ids, prompt_length) -> logits [B, num_labels]`.

    Called like `SentenceEmbedder` (so the same compiled programs run it); `prompt_length` is
    accepted and unused: a cross-encoder reads the whole pair.
    """

    def __init__(
        self, backbone: nnx.Module, head: ClassifierConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs
    ):
        self.backbone = backbone
        self.head = ClassifierHead(head, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        prompt_length: jax.Array | int = 0,
    ) -> jax.Array:
        del prompt_length
        hidden = self.backbone(input_ids, attention_mask, token_type_ids)
        return self.head(hidden, attention_mask.astype(bool))


# Checkpoint names of each head (after no prefix: they sit beside the backbone's "bert." etc.)
# -> our module paths under `head`.
HEAD_RULES: dict[HeadKind, tuple[Rule, ...]] = {
    "bert": (Rule("bert.pooler.dense", "dense", LINEAR), Rule("classifier", "out", LINEAR)),
    "roberta": (
        Rule("classifier.dense", "dense", LINEAR),
        Rule("classifier.out_proj", "out", LINEAR),
    ),
    "modernbert": (
        Rule("head.dense", "dense", LINEAR),
        Rule("head.norm", "norm", NORM),
        Rule("classifier", "out", LINEAR),
    ),
}
# Tensors a classification checkpoint may carry that its forward pass does not use.
IGNORED: dict[HeadKind, tuple[str, ...]] = {
    "bert": (r"(.*\.)?position_ids",),
    "roberta": (r"(.*\.)?position_ids", r"roberta\.pooler\..*"),
    "modernbert": (),
}


def weight_map(kind: HeadKind, backbone: WeightMap) -> WeightMap:
    """One table for a whole classification checkpoint: the family's backbone rules (under its
    checkpoint prefix, into `backbone`) and the head's (into `head`). Strict: the backbone's
    own ignore list (which skips the pooler and pretraining heads) does not apply here."""
    (prefix,) = backbone.prefixes
    rules = [
        Rule(prefix + r.source, ".".join((*backbone.target_prefix, r.target)), r.kind)
        for r in backbone.rules
    ]
    rules += [Rule(r.source, f"head.{r.target}", r.kind) for r in HEAD_RULES[kind]]
    return WeightMap(rules, IGNORED[kind])
