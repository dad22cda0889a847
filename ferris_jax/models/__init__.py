"""Model families: each maps a Hugging Face `model_type` to its config, modules and weight names."""

from __future__ import annotations

import dataclasses
import math
import typing
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


# Sizes that must be at least 1; every other integer field must be at least 0.
_SIZES = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
)


def read_config(family: Family, hf_config: dict[str, Any]) -> Any:
    """The family's config from a config.json's contents, every field's type and range checked:
    ValueError naming the key, or the missing one."""
    try:
        config = family.config_from_hf(hf_config)
    except TypeError as e:
        text = str(e)
        if "required positional argument" in text:  # a dataclass field without a value
            raise ValueError(f"missing required key(s) {text.rsplit(':', 1)[-1].strip()}") from None
        raise ValueError(f"a value has the wrong type ({text})") from None
    except (AttributeError, KeyError) as e:  # a nested value of the wrong shape
        raise ValueError(f"a value has the wrong shape ({type(e).__name__}: {e})") from None
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        kind, value = hints[field.name], getattr(config, field.name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is int:
            low = 1 if field.name in _SIZES else 0
            if not number or not isinstance(value, int) or value < low:
                raise ValueError(f"{field.name!r} must be an integer >= {low}, got {value!r}")
        elif kind is float and not (number and math.isfinite(value) and value >= 0):
            raise ValueError(f"{field.name!r} must be a finite number >= 0, got {value!r}")
        elif kind in (str, bool) and not isinstance(value, kind):
            raise ValueError(f"{field.name!r} must be a {kind.__name__}, got {value!r}")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"'hidden_size' {config.hidden_size} is not a multiple of 'num_attention_heads' "
            f"{config.num_attention_heads}"
        )
    return config


def family_for(model_type: str) -> Family:
    """The family for a `config.json` model_type; ValueError listing the supported ones."""
    if model_type not in FAMILIES:
        raise ValueError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]
