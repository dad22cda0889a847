"""RoBERTa and XLM-RoBERTa: BERT's modules and weight names with padding-aware position ids.

What differs from BERT is only data: positions start at `pad_token_id + 1` and skip pad tokens
(`BertConfig.positions = "roberta"`), the Hugging Face defaults, the `roberta.` prefix and the
masked-LM head (`lm_head.*`) a checkpoint may carry.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ferris_jax.models import bert

# transformers' RobertaConfig / XLMRobertaConfig defaults where they differ from BertConfig's.
_HF_DEFAULTS = {"pad_token_id": 1}


def config_from_hf(config: dict[str, Any]) -> bert.BertConfig:
    """A `BertConfig` with RoBERTa's position ids from a roberta / xlm-roberta `config.json`."""
    if config.get("is_decoder"):
        raise ValueError("is_decoder=true (causal attention) is not supported for RoBERTa")
    cfg = bert.BertConfig.from_hf({**_HF_DEFAULTS, **config})
    return dataclasses.replace(cfg, positions="roberta")


WEIGHT_RULES = bert.WEIGHT_RULES  # RobertaModel keeps BertModel's module names
IGNORED_WEIGHTS = (r"(.*\.)?position_ids", r"pooler\..*", r"lm_head\..*")
CHECKPOINT_PREFIXES = ("roberta.",)
