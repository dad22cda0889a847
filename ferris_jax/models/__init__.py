"""Model families: each maps a Hugging Face `model_type` to its config, modules and weight names."""

from __future__ import annotations

import dataclasses
from typing import Any

from ferris_jax.models import bert, distilbert, modernbert, mpnet, roberta
from ferris_jax.weights import WeightMap


@dataclasses.dataclass(frozen=True)
class Family:
    """What the loader needs to know about one architecture."""

    name: str
    config_from_hf: Any  # Callable[[dict], Config]
    model: Any  # Callable[[Config, *, dtype, rngs], nnx.Module]
    weight_map: WeightMap


def _weights(module: Any) -> WeightMap:
    """A family module's weight-name table, mapped under the embedder's `backbone`."""
    return WeightMap(
        module.WEIGHT_RULES, module.IGNORED_WEIGHTS, module.CHECKPOINT_PREFIXES, ("backbone",)
    )


FAMILIES: dict[str, Family] = {
    "bert": Family("bert", bert.BertConfig.from_hf, bert.BertModel, _weights(bert)),
    "roberta": Family("roberta", roberta.config_from_hf, bert.BertModel, _weights(roberta)),
    "xlm-roberta": Family("xlm-roberta", roberta.config_from_hf, bert.BertModel, _weights(roberta)),
    "distilbert": Family(
        "distilbert", distilbert.config_from_hf, bert.BertModel, _weights(distilbert)
    ),
    "mpnet": Family("mpnet", mpnet.MPNetConfig.from_hf, mpnet.MPNetModel, _weights(mpnet)),
    "modernbert": Family(
        "modernbert",
        modernbert.ModernBertConfig.from_hf,
        modernbert.ModernBertModel,
        _weights(modernbert),
    ),
}


def family_for(model_type: str) -> Family:
    """The family for a `config.json` model_type; ValueError listing the supported ones."""
    if model_type not in FAMILIES:
        raise ValueError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]
