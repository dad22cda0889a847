"""sentence-transformers' folder format, both directions, at the boundary: modules.json,
1_Pooling, Dense, Normalize, sentence_bert_config.json and config_sentence_transformers.json
become our own `HeadConfig` (pooling, Dense layers, Normalize) and `Settings` (`read_head`,
`read_settings`), and are written back from them (`write_head`, `write_settings`).

Files are written in the long-standing layout the hub's models use (`sentence_transformers.models.*`
class paths, 1_Pooling's booleans and `word_embedding_dimension`), which sentence-transformers
3 to 6 all read: version 6 maps every old name to its new one without a warning.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from ferris_jax._version import __version__
from ferris_jax.errors import CheckpointError, require_int
from ferris_jax.files import json_field, read_json, read_json_object, write_json
from ferris_jax.models.embedder import DenseConfig, HeadConfig
from ferris_jax.pooling import PoolingConfig
from ferris_jax.similarity import SIMILARITY_FUNCTIONS

# 1_Pooling/config.json's booleans, in sentence-transformers' output-concatenation order.
POOLING_FLAGS = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
    ("pooling_mode_weightedmean_tokens", "weightedmean"),
    ("pooling_mode_lasttoken", "lasttoken"),
)
# modules.json class paths: the pre-6 names, which every sentence-transformers release imports.
MODULE_TYPES = {
    kind: f"sentence_transformers.models.{kind}"
    for kind in ("Transformer", "Pooling", "Dense", "Normalize")
}
# config_sentence_transformers.json's "__version__": the first sentence-transformers release that
# reads every field written here (similarity_fn_name came in 3.0); older ones warn on loading.
FORMAT_VERSION = "3.0.0"
_POOLING_ALIASES = {
    "mean_tokens": "mean",
    "cls_token": "cls",
    "max_tokens": "max",
    "weightedmean_tokens": "weightedmean",
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """How texts become inputs and which outputs a model is used with."""

    max_seq_length: int
    do_lower_case: bool = False
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"


# The keys sentence-transformers' Pooling accepts in 1_Pooling/config.json; it refuses others.
_POOLING_KEYS = {
    "word_embedding_dimension",
    "embedding_dimension",
    "pooling_mode",
    "include_prompt",
}
_POOLING_KEYS |= {key for key, _ in POOLING_FLAGS}
# The keys its Dense reads from N_Dense/config.json (others it ignores with a warning, as we do).
_DENSE_KEYS = {"in_features", "out_features", "bias", "activation_function", "use_residual"}
_DENSE_KEYS |= {"module_input_name", "module_output_name"}
# Where a module must stand: Transformer, Pooling, Dense..., Normalize.
_STAGES = {"Pooling": 1, "Dense": 2, "Normalize": 3}


def pooling_config(path: Path, config: dict[str, Any]) -> PoolingConfig:
    """Read sentence-transformers' `1_Pooling/config.json` (`path`, for errors)."""
    unknown = sorted(set(config) - _POOLING_KEYS)
    if unknown:
        raise CheckpointError(
            f"{path}: unknown pooling option(s) {unknown} (sentence-transformers refuses them "
            f"too); known: {sorted(_POOLING_KEYS)}"
        )
    if "pooling_mode" in config:  # sentence-transformers >= 6: a name or a list of names
        named = config["pooling_mode"]
        listed = [named] if isinstance(named, str) else named
        if (
            not isinstance(listed, list)
            or not listed
            or not all(isinstance(m, str) for m in listed)
        ):
            raise CheckpointError(f"{path}: 'pooling_mode' must name one mode or list several")
        modes = tuple(_POOLING_ALIASES.get(m, m) for m in listed)
    else:  # older files: one boolean per mode
        flags = [(mode, json_field(path, config, key, bool, False)) for key, mode in POOLING_FLAGS]
        modes = tuple(mode for mode, on in flags if on) or ("mean",)
    try:
        return PoolingConfig(
            modes, include_prompt=json_field(path, config, "include_prompt", bool, True)
        )
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e


def _dense_config(path: Path) -> DenseConfig:
    """Read a Dense module's `config.json` (`path`)."""
    cfg = read_json_object(path, required=True)
    unknown = sorted(set(cfg) - _DENSE_KEYS)
    if unknown:
        warnings.warn(f"{path}: ignoring unknown Dense option(s) {unknown}", stacklevel=4)
    if json_field(path, cfg, "use_residual", bool, False):
        raise CheckpointError(f"{path}: Dense use_residual is not supported")
    for key in ("module_input_name", "module_output_name"):
        if json_field(path, cfg, key, str, "sentence_embedding") != "sentence_embedding":
            raise CheckpointError(
                f"{path}: a Dense on {cfg[key]!r} is not supported (only on sentence_embedding)"
            )
    # sentence-transformers' Dense defaults to Tanh when its config names no activation.
    activation = json_field(
        path, cfg, "activation_function", str, "torch.nn.modules.activation.Tanh"
    )
    return DenseConfig(
        json_field(path, cfg, "in_features", int, minimum=1),
        json_field(path, cfg, "out_features", int, minimum=1),
        json_field(path, cfg, "bias", bool, True),
        activation,
    )


def read_head(directory: Path) -> tuple[HeadConfig, list[Path]]:
    """sentence-transformers' modules.json -> our head config and the Dense directories."""
    path = directory / "modules.json"
    modules = read_json(path)
    if modules is None:  # a plain Hugging Face model: sentence-transformers' default is mean
        return HeadConfig(PoolingConfig(("mean",))), []
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise CheckpointError(f"{path}: must hold a list of module objects")
    pooling, dense, dense_dirs, normalize = PoolingConfig(("mean",)), [], [], False
    stage = 0
    for i, module in enumerate(modules):
        kind = json_field(path, module, "type", str).rsplit(".", 1)[-1]
        sub = directory / json_field(path, module, "path", str, "")
        if kind == "Transformer" and i == 0:
            continue
        if _STAGES.get(kind, 4) < stage or (kind != "Dense" and _STAGES.get(kind) == stage):
            raise CheckpointError(
                f"{path}: module {i} ({kind}) is out of place; ferris-jax runs Transformer, "
                "Pooling, Dense..., Normalize in that order, each once but Dense"
            )
        stage = _STAGES.get(kind, stage)
        if kind == "Pooling":
            config_path = sub / "config.json"
            pooling = pooling_config(config_path, read_json_object(config_path, required=True))
        elif kind == "Dense":
            dense.append(_dense_config(sub / "config.json"))
            dense_dirs.append(sub)
        elif kind == "Normalize":
            normalize = True
        else:
            raise CheckpointError(
                f"{path}: module {i} of type {module.get('type')!r} is not "
                "supported (supported: Transformer first, then Pooling, Dense, Normalize)"
            )
    return HeadConfig(pooling, tuple(dense), normalize), dense_dirs


def max_seq_length_of(
    directory: Path, requested: int | None, st_config: dict, max_positions: int | None
) -> int:
    """The tokens per text: `requested`, else sentence_bert_config.json's, else the tokenizer's
    `model_max_length`, capped at the model's positions."""
    if requested is not None:
        length = require_int("max_seq_length", requested, minimum=2)
    elif st_config.get("max_seq_length") is not None:
        path = directory / "sentence_bert_config.json"
        length = json_field(path, st_config, "max_seq_length", int, minimum=2)
    else:
        path = directory / "tokenizer_config.json"
        tok_cfg = read_json_object(path) or {}
        length = int(min(json_field(path, tok_cfg, "model_max_length", float, 512), 1 << 20))
        length = min(length, max_positions or length)
    if max_positions is not None and length > max_positions:
        warnings.warn(
            f"max_seq_length {length} exceeds the model's {max_positions} positions; "
            f"using {max_positions}",
            stacklevel=3,
        )
        length = max_positions
    return length


def read_settings(
    directory: Path, max_seq_length: int | None, max_positions: int | None
) -> Settings:
    """The sentence-transformers settings of a folder (defaults where its files are absent);
    `max_seq_length` overrides the folder's own."""
    st_path = directory / "sentence_bert_config.json"
    extra_path = directory / "config_sentence_transformers.json"
    st_config = read_json_object(st_path) or {}
    st_extra = read_json_object(extra_path) or {}
    prompts = json_field(extra_path, st_extra, "prompts", dict, {})
    bad = [name for name, text in prompts.items() if not isinstance(text, str)]
    if bad:
        raise CheckpointError(f"{extra_path}: prompts {bad} must be strings")
    default_prompt = json_field(extra_path, st_extra, "default_prompt_name", str, None)
    if default_prompt is not None and default_prompt not in prompts:
        raise CheckpointError(
            f"{extra_path}: default_prompt_name {default_prompt!r} is not one of the prompts "
            f"{sorted(prompts)}"
        )
    similarity = json_field(extra_path, st_extra, "similarity_fn_name", str, "cosine")
    if similarity not in SIMILARITY_FUNCTIONS:
        raise CheckpointError(
            f"{extra_path}: similarity_fn_name {similarity!r} is not one of "
            f"{sorted(SIMILARITY_FUNCTIONS)}"
        )
    return Settings(
        max_seq_length=max_seq_length_of(directory, max_seq_length, st_config, max_positions),
        do_lower_case=json_field(st_path, st_config, "do_lower_case", bool, False),
        prompts=prompts,
        default_prompt_name=default_prompt,
        similarity_fn_name=similarity,
    )


def pooling_file(pooling: PoolingConfig, dimension: int) -> dict[str, Any]:
    """The inverse of `pooling_config`: 1_Pooling/config.json for token embeddings of width
    `dimension`."""
    flags = {key: mode in pooling.modes for key, mode in POOLING_FLAGS}
    config: dict[str, Any] = {"word_embedding_dimension": dimension, **flags}
    in_flag_order = tuple(mode for _, mode in POOLING_FLAGS if mode in pooling.modes)
    if len(pooling.modes) == 1:
        config["pooling_mode"] = pooling.modes[0]
    elif pooling.modes != in_flag_order:
        # Only a list says another concatenation order (sentence-transformers >= 6 reads it;
        # older releases cannot represent it and fail on loading rather than pool differently).
        config["pooling_mode"] = list(pooling.modes)
    config["include_prompt"] = pooling.include_prompt
    return config


def dense_file(dense: DenseConfig) -> dict[str, Any]:
    """A Dense module's config.json (its weights go in the same folder's model.safetensors)."""
    return {
        "in_features": dense.in_features,
        "out_features": dense.out_features,
        "bias": dense.bias,
        "activation_function": dense.activation,
    }


def write_head(directory: Path, head: HeadConfig, dimension: int) -> list[Path]:
    """The inverse of `read_head`: modules.json and one folder per module after the Transformer
    (which lives in `directory` itself); returns the Dense folders, for their weights."""
    modules = [("Transformer", ""), ("Pooling", "1_Pooling")]
    modules += [("Dense", f"{len(modules) + i}_Dense") for i in range(len(head.dense))]
    if head.normalize:
        modules.append(("Normalize", f"{len(modules)}_Normalize"))  # a folder with no files
    for _, path in modules[1:]:
        (directory / path).mkdir()
    write_json(directory / "1_Pooling" / "config.json", pooling_file(head.pooling, dimension))
    dense_dirs = [directory / path for kind, path in modules if kind == "Dense"]
    for sub, dense in zip(dense_dirs, head.dense, strict=True):
        write_json(sub / "config.json", dense_file(dense))
    write_json(
        directory / "modules.json",
        [
            {"idx": i, "name": str(i), "path": path, "type": MODULE_TYPES[kind]}
            for i, (kind, path) in enumerate(modules)
        ],
    )
    return dense_dirs


def write_settings(directory: Path, settings: Settings) -> None:
    """The inverse of `read_settings`: sentence_bert_config.json (the Transformer module's
    settings) and config_sentence_transformers.json (prompts, similarity)."""
    write_json(
        directory / "sentence_bert_config.json",
        {"max_seq_length": settings.max_seq_length, "do_lower_case": settings.do_lower_case},
    )
    write_json(
        directory / "config_sentence_transformers.json",
        {
            "__version__": {"sentence_transformers": FORMAT_VERSION, "ferris_jax": __version__},
            "model_type": "SentenceTransformer",
            "prompts": dict(settings.prompts),
            "default_prompt_name": settings.default_prompt_name,
            "similarity_fn_name": settings.similarity_fn_name,
        },
    )
