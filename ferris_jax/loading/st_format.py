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
from ferris_jax.errors import CheckpointError
from ferris_jax.files import read_json, write_json
from ferris_jax.models.embedder import DenseConfig, HeadConfig
from ferris_jax.pooling import PoolingConfig

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


def pooling_config(config: dict[str, Any]) -> PoolingConfig:
    """Read sentence-transformers' `1_Pooling/config.json`."""
    if "pooling_mode" in config:  # sentence-transformers >= 6: a name or a list of names
        named = config["pooling_mode"]
        modes = tuple([named] if isinstance(named, str) else named)
        modes = tuple(_POOLING_ALIASES.get(m, m) for m in modes)
    else:  # older files: one boolean per mode
        modes = tuple(mode for key, mode in POOLING_FLAGS if config.get(key, False)) or ("mean",)
    return PoolingConfig(modes=modes, include_prompt=bool(config.get("include_prompt", True)))


def read_head(directory: Path) -> tuple[HeadConfig, list[Path]]:
    """sentence-transformers' modules.json -> our head config and the Dense directories."""
    modules = read_json(directory / "modules.json")
    if (
        modules is None
    ):  # a plain Hugging Face model: sentence-transformers' default is mean pooling
        return HeadConfig(PoolingConfig(("mean",))), []
    pooling, dense, dense_dirs, normalize = PoolingConfig(("mean",)), [], [], False
    for i, module in enumerate(modules):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        sub = directory / module.get("path", "")
        if kind == "Transformer" and i == 0:
            continue
        if kind == "Pooling":
            pooling = pooling_config(read_json(sub / "config.json", required=True))
        elif kind == "Dense":
            cfg = read_json(sub / "config.json", required=True)
            if cfg.get("use_residual"):
                raise CheckpointError(f"{sub / 'config.json'}: Dense use_residual is not supported")
            dense.append(
                DenseConfig(
                    int(cfg["in_features"]),
                    int(cfg["out_features"]),
                    bool(cfg.get("bias", True)),
                    cfg.get("activation_function") or "torch.nn.modules.linear.Identity",
                )
            )
            dense_dirs.append(sub)
        elif kind == "Normalize":
            normalize = True
        else:
            raise CheckpointError(
                f"{directory / 'modules.json'}: module {i} of type {module.get('type')!r} is not "
                "supported (supported: Transformer first, then Pooling, Dense, Normalize)"
            )
    return HeadConfig(pooling, tuple(dense), normalize), dense_dirs


def max_seq_length_of(
    directory: Path, requested: int | None, st_config: dict, max_positions: int | None
) -> int:
    if requested is not None:
        if not isinstance(requested, int) or requested < 2:
            raise ValueError(f"max_seq_length must be an integer >= 2, got {requested!r}")
        length = requested
    elif st_config.get("max_seq_length"):
        length = int(st_config["max_seq_length"])
    else:
        tok_cfg = read_json(directory / "tokenizer_config.json") or {}
        length = int(min(tok_cfg.get("model_max_length") or 512, 1 << 20))
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
    st_config = read_json(directory / "sentence_bert_config.json") or {}
    st_extra = read_json(directory / "config_sentence_transformers.json") or {}
    prompts = {k: v for k, v in (st_extra.get("prompts") or {}).items() if isinstance(v, str)}
    return Settings(
        max_seq_length=max_seq_length_of(directory, max_seq_length, st_config, max_positions),
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        prompts=prompts,
        default_prompt_name=st_extra.get("default_prompt_name"),
        similarity_fn_name=st_extra.get("similarity_fn_name") or "cosine",
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
