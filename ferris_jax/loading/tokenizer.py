"""The checkpoint's tokenizer files (tokenizer.json, tokenizer_config.json,
special_tokens_map.json) -> a `TextTokenizer` set up as `AutoTokenizer` sets it up; and copied
as they are into a saved folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import tokenizers

from ferris_jax.errors import CheckpointError
from ferris_jax.files import json_field, read_json_object
from ferris_jax.tokenize import TextTokenizer, transformers_tokenizer_class

# The tokenizer files a checkpoint folder may hold (copied as they are when a model is saved).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
)


def _pad_token_id(
    tokenizer: tokenizers.Tokenizer,
    tok_cfg: dict[str, Any],
    special: dict[str, Any],
    model_config: dict[str, Any],
) -> int:
    pad = tok_cfg.get("pad_token") or special.get("pad_token")
    if isinstance(pad, dict):  # an AddedToken: the text is its "content"
        pad = pad.get("content")
    if isinstance(pad, str) and tokenizer.token_to_id(pad) is not None:
        return tokenizer.token_to_id(pad)
    if tokenizer.padding and "pad_id" in tokenizer.padding:
        return int(tokenizer.padding["pad_id"])
    return int(model_config.get("pad_token_id") or 0)


def load_tokenizer(
    directory: Path,
    *,
    max_seq_length: int,
    do_lower_case: bool = False,
    model_config: dict[str, Any] | None = None,
) -> TextTokenizer:
    """The checkpoint's tokenizer.json set up as `AutoTokenizer.from_pretrained(directory)` sets
    it up (the class and options tokenizer_config.json names), truncating at `max_seq_length`."""
    tokenizer_file = directory / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CheckpointError(
            f"{tokenizer_file} is missing; ferris-jax needs the fast tokenizer file"
        )
    try:
        raw_tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    except Exception as e:
        raise CheckpointError(
            f"{tokenizer_file}: cannot be read by the tokenizers library ({e})"
        ) from e
    if model_config is None:
        model_config = read_json_object(directory / "config.json") or {}
    config_path = directory / "tokenizer_config.json"
    tok_cfg = read_json_object(config_path) or {}
    special = read_json_object(directory / "special_tokens_map.json") or {}
    # The options transformers rebuilds a tokenizer from: true/false, or null for the default.
    for key in ("do_lower_case", "tokenize_chinese_chars", "add_prefix_space"):
        json_field(config_path, tok_cfg, key, bool, None)
    tok_cfg = {k: v for k, v in tok_cfg.items() if v is not None or k == "strip_accents"}
    return TextTokenizer(
        raw_tokenizer,
        max_seq_length=max_seq_length,
        pad_token_id=_pad_token_id(raw_tokenizer, tok_cfg, special, model_config),
        do_lower_case=do_lower_case,
        tokenizer_class=transformers_tokenizer_class(tok_cfg, model_config),
        tokenizer_options=tok_cfg,
    )


def copy_tokenizer_files(source: Path, target: Path) -> list[str]:
    """Copy the tokenizer files of folder `source` into `target` unchanged; returns their names.

    Raises CheckpointError if `source` has no tokenizer.json (every reader of the saved folder
    needs it, ferris-jax included).
    """
    if not (source / "tokenizer.json").is_file():
        raise CheckpointError(
            f"cannot save the tokenizer: {source / 'tokenizer.json'} is gone (the model was "
            "loaded from that folder); restore it, or load the model again from a complete folder"
        )
    names = [name for name in TOKENIZER_FILES if (source / name).is_file()]
    for name in names:
        shutil.copyfile(source / name, target / name)
    return names
