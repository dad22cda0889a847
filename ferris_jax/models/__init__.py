"""Model families: each maps a Hugging Face `model_type` to its config, modules and weight names."""

from __future__ import annotations

import dataclasses
from typing import Any

from ferris_jax.models import bert, modernbert
from ferris_jax.weights import WeightMap


@dataclasses.dataclass(frozen=True)
class Family:
    """What the loader needs to know about one architecture."""

    name: str
    config_from_hf: Any  # Callable[[dict], Config]
    model: Any  # Callable[[Config, *, dtype, rngs], nnx.Module]
    weight_map: WeightMap


FAMILIES: dict[str, Family] = {
    "bert": Family(
        "bert",
        bert.BertConfig.from_hf,
        bert.BertModel,
        WeightMap(bert.WEIGHT_RULES, bert.IGNORED_WEIGHTS, bert.CHECKPOINT_PREFIXES, ("backbone",)),
    ),
    "modernbert": Family(
        "modernbert",
        modernbert.ModernBertConfig.from_hf,
        modernbert.ModernBertModel,
        WeightMap(
            modernbert.WEIGHT_RULES,
            modernbert.IGNORED_WEIGHTS,
            modernbert.CHECKPOINT_PREFIXES,
            ("backbone",),
        ),
    ),
}


def family_for(model_type: str) -> Family:
    """The family for a `config.json` model_type; ValueError listing the supported ones."""
    if model_type not in FAMILIES:
        raise ValueError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]
