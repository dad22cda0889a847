"""A checkpoint directory -> (model graph, parameters, tokenizer, settings), strictly.

The model is built abstractly (`nnx.eval_shape`) and every parameter is filled from the
safetensors files through the family's weight map: nothing random is created, and one
`CheckpointError` lists every missing, unexpected or misshapen tensor with its file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ferris_jax._compat import variable_value
from ferris_jax.errors import CheckpointError, ModelNotFoundError
from ferris_jax.files import json_field, read_json_object
from ferris_jax.loading.presets import Preset
from ferris_jax.loading.st_format import Settings, read_head, read_settings
from ferris_jax.loading.tokenizer import load_tokenizer
from ferris_jax.models import Family, family_for, read_config
from ferris_jax.models.classifier import ClassifierConfig, SequenceClassifier
from ferris_jax.models.classifier import weight_map as classifier_weight_map
from ferris_jax.models.embedder import HeadConfig, SentenceEmbedder
from ferris_jax.placement import Placement
from ferris_jax.platforms import parse_dtype
from ferris_jax.pooling import PoolingConfig
from ferris_jax.similarity import SIMILARITY_FUNCTIONS
from ferris_jax.tokenize import TextTokenizer
from ferris_jax.weights import TensorSource, WeightMap, dense_weight_map, fill_params


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the pure model (graphdef + params) and what surrounds it."""

    path: Path
    name: str
    model_type: str
    graphdef: nnx.GraphDef
    params: nnx.State
    tokenizer: TextTokenizer
    settings: Settings
    head: HeadConfig
    dtype: jnp.dtype
    config: dict[str, Any]  # config.json as read: saving writes it back
    max_positions: int | None  # the most tokens one text can have (position embeddings)


def safetensors_files(directory: Path) -> list[Path]:
    """The weight files of a directory: model.safetensors, or the shards its index lists."""
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json_field(index, read_json_object(index), "weight_map", dict)
        if not all(isinstance(f, str) and f for f in weight_map.values()):
            raise CheckpointError(f"{index}: 'weight_map' must map tensor names to file names")
        shards = [directory / f for f in sorted(set(weight_map.values()))]
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise CheckpointError(f"{index} lists shard(s) that do not exist: {missing}")
        return shards
    if any(
        (directory / n).is_file() for n in ("pytorch_model.bin", "pytorch_model.bin.index.json")
    ):
        raise CheckpointError(
            f"{directory} has only pytorch_model.bin weights; ferris-jax reads safetensors only. "
            'Convert once with: python -c "from transformers import AutoModel; '
            f"AutoModel.from_pretrained('{directory}').save_pretrained('{directory}', "
            'safe_serialization=True)"'
        )
    raise CheckpointError(f"{directory} has no model.safetensors (or model.safetensors.index.json)")


def _tensor_sources(files: list[Path], weight_map: WeightMap) -> list[TensorSource]:
    """Every tensor of `files`, read lazily.

    Each read opens the file for that tensor alone: safetensors memory-maps the whole file, and
    a mapping kept open for the whole load would count every page read as resident memory on
    top of the parameters (2x the checkpoint at peak).
    """
    from safetensors import safe_open

    sources = []
    for file in files:
        try:
            with safe_open(str(file), framework="flax") as handle:
                shapes = {n: tuple(handle.get_slice(n).get_shape()) for n in handle.keys()}  # noqa: SIM118
        except Exception as e:
            raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from e
        for name, shape in shapes.items():
            sources.append(
                TensorSource(str(file), name, shape, _tensor_reader(file, name), weight_map)
            )
    return sources


def _tensor_reader(file: Path, name: str) -> Callable[[], jax.Array]:
    def read() -> jax.Array:
        from safetensors import safe_open

        with safe_open(str(file), framework="flax") as handle:
            return handle.get_tensor(name)

    return read


def _apply_preset(
    preset: Preset, directory: Path, model_type: str, head: HeadConfig, settings: Settings
) -> tuple[HeadConfig, Settings]:
    """The preset's pooling, normalization, prompts and similarity over the folder's own."""
    if preset.similarity not in SIMILARITY_FUNCTIONS:
        raise ValueError(
            f"preset {preset.name!r}: similarity {preset.similarity!r} is not one of "
            f"{sorted(SIMILARITY_FUNCTIONS)}"
        )
    if preset.family != model_type:
        raise CheckpointError(
            f"preset {preset.name!r} expects a {preset.family} model but "
            f"{directory / 'config.json'} has model_type {model_type!r}"
        )
    head = dataclasses.replace(
        head,
        pooling=PoolingConfig(preset.pooling, head.pooling.include_prompt),
        normalize=preset.normalize,
    )
    settings = dataclasses.replace(
        settings,
        prompts={**settings.prompts, **preset.prompts},
        default_prompt_name=preset.default_prompt_name or settings.default_prompt_name,
        similarity_fn_name=preset.similarity,
    )
    return head, settings


def _read_family(directory: Path) -> tuple[dict[str, Any], Family, Any]:
    """config.json -> (its contents, the model family, the family's config)."""
    path = directory / "config.json"
    model_config = read_json_object(path, required=True)
    try:
        family = family_for(json_field(path, model_config, "model_type", str))
        return model_config, family, read_config(family, model_config)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from e


def _fill_model(
    build: Callable[[nnx.Rngs], nnx.Module],
    sources: list[TensorSource],
    dtype: jnp.dtype,
    placement: Placement | None,
) -> tuple[nnx.GraphDef, nnx.State]:
    """The model `build` makes, built abstractly and filled from `sources` (strict)."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))
    flat = list(nnx.to_flat_state(abstract))
    expected = {path: variable_value(var) for path, var in flat}
    filled = fill_params(expected, sources, dtype=dtype, placement=placement)
    return graphdef, nnx.from_flat_state([(path, var.replace(filled[path])) for path, var in flat])


def _max_positions(config: Any) -> int | None:
    """Tokens the model's positions take (a family whose positions start past 0, MPNet and
    RoBERTa, says so in `max_tokens`)."""
    return getattr(config, "max_tokens", getattr(config, "max_position_embeddings", None))


def _tokenizer(directory: Path, settings: Any, model_config: dict[str, Any]) -> Any:
    return load_tokenizer(
        directory,
        max_seq_length=settings.max_seq_length,
        do_lower_case=settings.do_lower_case,
        model_config=model_config,
    )


def load_checkpoint(
    directory: Path,
    *,
    preset: Preset | None = None,
    dtype: str | jnp.dtype = "float32",
    max_seq_length: int | None = None,
    placement: Placement | None = None,
) -> Checkpoint:
    """Read a checkpoint directory strictly, its weights put by `placement` (default: JAX's
    default device); raises CheckpointError naming the file at fault."""
    if not directory.is_dir():
        raise ModelNotFoundError(f"no such directory: {directory}")
    dtype = parse_dtype(dtype)
    model_config, family, config = _read_family(directory)
    head, dense_dirs = read_head(directory)
    max_positions = _max_positions(config)
    settings = read_settings(
        directory,
        max_seq_length
        if max_seq_length is not None
        else (preset.max_seq_length if preset else None),
        max_positions,
    )
    if preset is not None:
        head, settings = _apply_preset(
            preset, directory, model_config["model_type"], head, settings
        )
    tokenizer = _tokenizer(directory, settings, model_config)

    def build(rngs: nnx.Rngs) -> SentenceEmbedder:
        return SentenceEmbedder(
            family.model(config, dtype=dtype, rngs=rngs), head, dtype=dtype, rngs=rngs
        )

    sources = _tensor_sources(safetensors_files(directory), family.weight_map)
    for i, sub in enumerate(dense_dirs):
        sources += _tensor_sources(safetensors_files(sub), dense_weight_map(i))
    graphdef, params = _fill_model(build, sources, dtype, placement)
    return Checkpoint(
        path=directory,
        name=preset.name if preset else directory.name,
        model_type=model_config["model_type"],
        graphdef=graphdef,
        params=params,
        tokenizer=tokenizer,
        settings=settings,
        head=head,
        dtype=dtype,
        config=model_config,
        max_positions=max_positions,
    )


@dataclasses.dataclass(frozen=True)
class ClassifierCheckpoint:
    """A loaded sequence-classification (cross-encoder) checkpoint."""

    path: Path
    name: str
    model_type: str
    graphdef: nnx.GraphDef
    params: nnx.State
    tokenizer: TextTokenizer
    head: ClassifierConfig
    dtype: jnp.dtype
    max_seq_length: int  # tokens per pair at most, special tokens included
    max_positions: int | None  # the most tokens the position table covers
    activation_fn: str | None  # the saved CrossEncoder activation (a torch class path), if any
    config: dict[str, Any]  # config.json as read: saving writes it back


def _saved_activation(directory: Path, model_config: dict[str, Any]) -> str | None:
    """The activation a CrossEncoder saved: config.json's `sentence_transformers.activation_fn`
    (sentence-transformers >= 4), else config_sentence_transformers.json's, else the older
    `sbert_ce_default_activation_function`."""
    path = directory / "config.json"
    saved = json_field(path, model_config, "sentence_transformers", dict, {})
    name = json_field(path, saved, "activation_fn", str, None)
    if name is None:
        name = json_field(path, model_config, "sbert_ce_default_activation_function", str, None)
    if name is None:
        extra = directory / "config_sentence_transformers.json"
        name = json_field(extra, read_json_object(extra) or {}, "activation_fn", str, None)
    return name


def load_classifier(
    directory: Path,
    *,
    dtype: str | jnp.dtype = "float32",
    max_seq_length: int | None = None,
    placement: Placement | None = None,
) -> ClassifierCheckpoint:
    """Read a `*ForSequenceClassification` checkpoint directory strictly (every parameter of
    the backbone and the head filled, one CheckpointError listing every mismatch), its weights
    put by `placement` (default: JAX's default device)."""
    if not directory.is_dir():
        raise ModelNotFoundError(f"no such directory: {directory}")
    dtype = parse_dtype(dtype)
    model_config, family, config = _read_family(directory)
    try:
        head = ClassifierConfig.from_hf(model_config)
    except ValueError as e:
        raise CheckpointError(f"{directory / 'config.json'}: {e}") from e
    max_positions = _max_positions(config)
    settings = read_settings(directory, max_seq_length, max_positions)
    tokenizer = _tokenizer(directory, settings, model_config)

    def build(rngs: nnx.Rngs) -> SequenceClassifier:
        backbone = family.model(config, dtype=dtype, rngs=rngs)
        return SequenceClassifier(backbone, head, dtype=dtype, rngs=rngs)

    weights = classifier_weight_map(head.kind, family.weight_map)
    sources = _tensor_sources(safetensors_files(directory), weights)
    graphdef, params = _fill_model(build, sources, dtype, placement)
    return ClassifierCheckpoint(
        path=directory,
        name=directory.name,
        model_type=model_config["model_type"],
        graphdef=graphdef,
        params=params,
        tokenizer=tokenizer,
        head=head,
        dtype=dtype,
        max_seq_length=settings.max_seq_length,
        max_positions=max_positions,
        activation_fn=_saved_activation(directory, model_config),
        config=model_config,
    )
