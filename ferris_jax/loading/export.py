"""A loaded model -> a folder that sentence-transformers, transformers and `ferris_jax.load` all
read: the checkpoint's config.json (dtype updated), the parameters as safetensors under the
names the family's weight map gives them (torch layout, no prefix), the tokenizer files copied,
and sentence-transformers' module files (`st_format`). The folder appears complete or not at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ferris_jax._compat import variable_value
from ferris_jax.files import atomic_directory, write_json
from ferris_jax.loading.checkpoint import Checkpoint, safetensors_files
from ferris_jax.loading.st_format import Settings, write_head, write_settings
from ferris_jax.loading.tokenizer import copy_tokenizer_files
from ferris_jax.models import family_for
from ferris_jax.weights import Path as ParamPath
from ferris_jax.weights import WeightMap, dense_weight_map, format_path, to_tensors

# config.json's dtype field: transformers >= 4.56 writes "dtype", older releases "torch_dtype".
DTYPE_KEYS = ("dtype", "torch_dtype")


def save_pretrained(
    path: str | os.PathLike, checkpoint: Checkpoint, params: nnx.State, settings: Settings
) -> Path:
    """Write `checkpoint`'s model with `params` and `settings` to the folder `path`.

    Args:
        path: the folder to write; an existing one is replaced only once the new one is
            complete (an interrupted save leaves it as it was).
        checkpoint: what the model was loaded from: config.json, head, tokenizer files' folder.
        params: parameters with the paths and shapes of `checkpoint.params`, all of one dtype
            (e.g. `enc.params` after fine-tuning); saved in that dtype.
        settings: max_seq_length, lowercasing, prompts and similarity function to save.

    Returns:
        The folder's path.

    Raises:
        ValueError: `params` are not the model's (missing, extra or misshapen parameters,
            mixed dtypes).
        CheckpointError: a parameter has no checkpoint name, or the source folder's
            tokenizer.json is gone.
    """
    _check_target(Path(path))
    family = family_for(checkpoint.model_type)
    flat = _checked_params(params, checkpoint.params)
    dtype = _one_dtype(flat)
    maps = [family.weight_map, *map(dense_weight_map, range(len(checkpoint.head.dense)))]
    backbone, *dense = to_tensors(flat, maps)  # every parameter, or an error naming the rest
    backbone |= _unused_tensors(checkpoint, family.weight_map, dtype)
    hidden_size = family.config_from_hf(checkpoint.config).hidden_size
    with atomic_directory(path) as folder:
        copy_tokenizer_files(checkpoint.path, folder)
        write_json(folder / "config.json", hf_config(checkpoint.config, dtype))
        _write_safetensors(folder / "model.safetensors", backbone)
        dense_dirs = write_head(folder, checkpoint.head, hidden_size)
        for sub, tensors in zip(dense_dirs, dense, strict=True):
            _write_safetensors(sub / "model.safetensors", tensors)
        write_settings(folder, settings)
    return Path(path)


# Tensors the embedder does not use but transformers' model class has (BERT's pooler): kept from
# the source checkpoint, so that AutoModel loads the saved folder without random weights.
KEPT_UNUSED = ("pooler.",)


def _unused_tensors(checkpoint: Checkpoint, weight_map: WeightMap, dtype: jnp.dtype) -> dict:
    """The source checkpoint's `KEPT_UNUSED` tensors, by their unprefixed names, in `dtype`."""
    from safetensors import safe_open

    kept = {}
    for file in safetensors_files(checkpoint.path):
        with safe_open(str(file), framework="numpy") as handle:
            for name in handle.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                bare = weight_map.strip_prefix(name)
                if bare.startswith(KEPT_UNUSED) and weight_map.is_ignored(name):
                    kept[bare] = np.asarray(jnp.asarray(handle.get_tensor(name), dtype))
    return kept


def _check_target(target: Path) -> None:
    """Refuse to replace what is not a model folder: the folder is replaced as a whole."""
    if target.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise ValueError(f"cannot save into {target}: it holds the working directory")
    holds_model = (target / "config.json").is_file() or (target / "modules.json").is_file()
    if target.is_dir() and any(target.iterdir()) and not holds_model:
        raise ValueError(
            f"cannot save into {target}: it is not empty and holds no model "
            "(config.json or modules.json); saving replaces the whole folder"
        )


def hf_config(config: dict[str, Any], dtype: jnp.dtype) -> dict[str, Any]:
    """config.json as read, its dtype field (each spelling present, else "dtype") set to
    `dtype`, the dtype transformers then loads the weights in."""
    keys = [key for key in DTYPE_KEYS if key in config] or [DTYPE_KEYS[0]]
    return {**config, **dict.fromkeys(keys, jnp.dtype(dtype).name)}


def _checked_params(params: nnx.State, expected: nnx.State) -> list[tuple[ParamPath, Any]]:
    """`params` flattened, with the paths and shapes of the model's own parameters."""
    flat = [(path, _array(leaf)) for path, leaf in nnx.to_flat_state(params)]
    got = {path: tuple(a.shape) for path, a in flat}
    want = {path: tuple(_array(leaf).shape) for path, leaf in nnx.to_flat_state(expected)}
    problems = [f"missing parameter {format_path(p)} {want[p]}" for p in want if p not in got]
    problems += [f"unexpected parameter {format_path(p)} {got[p]}" for p in got if p not in want]
    problems += [
        f"parameter {format_path(p)} has shape {got[p]}; the model's is {want[p]}"
        for p in got
        if p in want and got[p] != want[p]
    ]
    if problems:
        raise ValueError(
            "params do not fit the model, so they cannot be saved with it (pass a state shaped "
            "like enc.params):\n  " + "\n  ".join(problems)
        )
    return flat


def _array(leaf: Any) -> Any:
    """The array of a flat-state leaf: an nnx Variable, or the array itself (a State built from
    plain arrays)."""
    return leaf if isinstance(leaf, jax.Array | np.ndarray) else variable_value(leaf)


def _one_dtype(flat: list[tuple[ParamPath, Any]]) -> jnp.dtype:
    dtypes = sorted({jnp.dtype(a.dtype).name for _, a in flat})
    if len(dtypes) != 1:
        raise ValueError(
            f"params mix dtypes {dtypes}; config.json can name one only: cast them first, "
            "e.g. jax.tree.map(lambda x: x.astype('bfloat16'), params)"
        )
    return jnp.dtype(dtypes[0])


def _write_safetensors(file: Path, tensors: dict[str, Any]) -> None:
    from safetensors.numpy import save_file

    # "pt": transformers reads the names and layout as a PyTorch checkpoint's (the format
    # transformers itself writes); bfloat16 arrays are ml_dtypes', which safetensors writes as BF16.
    save_file(tensors, file, metadata={"format": "pt"})
