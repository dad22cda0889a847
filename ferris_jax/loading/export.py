"""A loaded model -> a folder that sentence-transformers, transformers and `ferris_jax.load` all
read: the checkpoint's config.json (dtype updated), the parameters as safetensors under the
names the family's weight map gives them (torch layout, no prefix), the tokenizer files copied,
and sentence-transformers' module files (`st_format`).

A save writes into its folder and keeps every file it does not write (a model card, an eval
CSV, a project's scripts): everything is first written to a hidden staging folder inside it,
then each file is renamed over its own name, config.json last, so that until the save is
complete no reader takes the folder for a model (an interrupted save is rolled back; a killed
one leaves a folder without config.json that fails to load, never a mix). Only a folder of an
earlier ferris-jax save is written over, and of its files only those of our exact names; a
folder holding anything else is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ferris_jax._compat import variable_value
from ferris_jax._version import __version__
from ferris_jax.files import read_json_object, write_json
from ferris_jax.loading.checkpoint import Checkpoint, ClassifierCheckpoint, safetensors_files
from ferris_jax.loading.st_format import FORMAT_VERSION, Settings, write_head, write_settings
from ferris_jax.loading.tokenizer import TOKENIZER_FILES, copy_tokenizer_files
from ferris_jax.models import family_for
from ferris_jax.models.classifier import weight_map as classifier_weight_map
from ferris_jax.weights import Path as ParamPath
from ferris_jax.weights import WeightMap, dense_weight_map, format_path, to_tensors

# config.json's dtype field: transformers >= 4.56 writes "dtype", older releases "torch_dtype".
DTYPE_KEYS = ("dtype", "torch_dtype")


def save_pretrained(
    path: str | os.PathLike, checkpoint: Checkpoint, params: nnx.State, settings: Settings
) -> Path:
    """Write `checkpoint`'s model with `params` and `settings` to the folder `path`.

    Args:
        path: the folder to write: new, empty, or one an earlier ferris-jax save wrote. Its
            files are replaced only once the new ones are all written (an interrupted save
            leaves it as it was); files the save does not write are kept.
        checkpoint: what the model was loaded from: config.json, head, tokenizer files' folder.
        params: parameters with the paths and shapes of `checkpoint.params`, all of one dtype
            (e.g. `enc.params` after fine-tuning); saved in that dtype.
        settings: max_seq_length, lowercasing, prompts and similarity function to save.

    Returns:
        The folder's path.

    Raises:
        ValueError: `params` are not the model's (missing, extra or misshapen parameters,
            mixed dtypes), or `path` holds files no ferris-jax save wrote.
        FileExistsError: `path` is a file.
        CheckpointError: a parameter has no checkpoint name, or the source folder's
            tokenizer.json is gone.
    """
    target = Path(path)
    _check_target(target)
    family = family_for(checkpoint.model_type)
    flat = _checked_params(params, checkpoint.params)
    dtype = _one_dtype(flat)
    maps = [family.weight_map, *map(dense_weight_map, range(len(checkpoint.head.dense)))]
    backbone, *dense = to_tensors(flat, maps)  # every parameter, or an error naming the rest
    backbone |= _unused_tensors(checkpoint, family.weight_map, dtype)
    hidden_size = family.config_from_hf(checkpoint.config).hidden_size

    def write(staging: Path) -> None:
        copy_tokenizer_files(checkpoint.path, staging)
        write_json(staging / "config.json", hf_config(checkpoint.config, dtype))
        _write_safetensors(staging / "model.safetensors", backbone)
        dense_dirs = write_head(staging, checkpoint.head, hidden_size)
        for sub, tensors in zip(dense_dirs, dense, strict=True):
            _write_safetensors(sub / "model.safetensors", tensors)
        write_settings(staging, settings)

    return _save_folder(target, write)


def save_classifier(
    path: str | os.PathLike,
    checkpoint: ClassifierCheckpoint,
    params: nnx.State,
    max_seq_length: int | None = None,
) -> Path:
    """Write a cross-encoder (`checkpoint`'s `*ForSequenceClassification` model) with `params`
    to the folder `path`, as transformers saves one: config.json as read (num_labels, id2label;
    dtype updated; the saved CrossEncoder activation under "sentence_transformers"), the
    backbone and head tensors under the checkpoint's own names, the tokenizer files. transformers'
    `AutoModelForSequenceClassification`, sentence-transformers' `CrossEncoder` and
    `ferris_jax.load_reranker` read it. Written atomically, with `save_pretrained`'s rules for
    the target folder.

    Args:
        path: the folder to write: new, empty, or one an earlier ferris-jax save wrote.
        checkpoint: what the model was loaded from.
        params: parameters with the paths and shapes of `checkpoint.params`, all of one dtype.
        max_seq_length: tokens per pair, saved as tokenizer_config.json's `model_max_length`
            (where every reader of a transformers folder takes it from); None: as copied.

    Returns:
        The folder's path.

    Raises:
        ValueError, FileExistsError, CheckpointError: as `save_pretrained`.
    """
    target = Path(path)
    _check_target(target)
    family = family_for(checkpoint.model_type)
    flat = _checked_params(params, checkpoint.params)
    dtype = _one_dtype(flat)
    (tensors,) = to_tensors(flat, [classifier_weight_map(checkpoint.head.kind, family.weight_map)])
    config = hf_config(checkpoint.config, dtype)
    marker: dict[str, Any] = {
        "__version__": {"sentence_transformers": FORMAT_VERSION, "ferris_jax": __version__},
        "model_type": "CrossEncoder",
    }
    if checkpoint.activation_fn is not None:
        # Where a CrossEncoder without modules.json (this folder) reads it back.
        saved = config.get("sentence_transformers")
        saved = saved if isinstance(saved, dict) else {}
        config["sentence_transformers"] = {**saved, "activation_fn": checkpoint.activation_fn}
        marker["activation_fn"] = checkpoint.activation_fn

    def write(staging: Path) -> None:
        copy_tokenizer_files(checkpoint.path, staging)
        tokenizer_config = staging / "tokenizer_config.json"
        if max_seq_length is not None and tokenizer_config.is_file():
            entries = read_json_object(tokenizer_config) or {}
            write_json(tokenizer_config, {**entries, "model_max_length": max_seq_length})
        write_json(staging / "config.json", config)
        _write_safetensors(staging / "model.safetensors", tensors)
        # Marks the folder as ferris-jax's (so a later save may replace it); sentence-transformers
        # reads this file only beside a modules.json, which a transformers folder has not.
        write_json(staging / SETTINGS_FILES[1], marker)

    return _save_folder(target, write)


def _save_folder(target: Path, write: Callable[[Path], None]) -> Path:
    """Run `write` on a hidden staging folder inside `target`, then move its files in
    (`_commit`); on any failure nothing of `target` is changed."""
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target, prefix=STAGING_PREFIX, suffix=".tmp"))
    try:
        write(staging)
        _commit(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                target.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)  # the earlier save's files, set aside
    return target


# The hidden folder a save is written to inside its target before its files are moved in.
STAGING_PREFIX = ".ferris-jax-save-"
# The file moved in last: every reader (sentence-transformers, transformers, ferris-jax) needs
# it, so a folder whose save was cut off midway does not load at all rather than as a mix.
LAST_FILE = "config.json"
# What an earlier save wrote in a module folder (N_Pooling, N_Dense, N_Normalize).
MODULE_FILES = ("config.json", "model.safetensors")


def _commit(staging: Path, target: Path) -> None:
    """Move every file of `staging` over its name in `target`, LAST_FILE last, after setting
    aside the earlier save's files the new one does not write; all is undone on an exception.
    """
    new = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
    new_dirs = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_dir())
    for rel in new_dirs:
        if (target / rel).exists() and not (target / rel).is_dir():
            raise ValueError(f"cannot save into {target}: {target / rel} is not a folder")
    for rel in new:
        if (target / rel).is_dir() and not (target / rel).is_symlink():
            raise ValueError(f"cannot save into {target}: {target / rel} is a folder")
    earlier, earlier_dirs = _earlier_save(target)
    stale = [rel for rel in earlier if rel not in new]
    backups = staging / ".replaced"
    backups.mkdir()
    undo: list[tuple[Path, Path | None]] = []  # (path, its earlier file set aside or None)

    def set_aside(path: Path) -> None:
        if os.path.lexists(path):
            backup = backups / str(len(undo))
            os.replace(path, backup)
            undo.append((path, backup))

    try:
        # Without config.json no reader takes the folder for a model until the new one lands.
        for rel in [Path(LAST_FILE), *stale]:
            set_aside(target / rel)
        for rel in new_dirs:
            if not (target / rel).is_dir():
                (target / rel).mkdir()
                undo.append((target / rel, None))
        for rel in sorted(new, key=lambda rel: rel == Path(LAST_FILE)):
            set_aside(target / rel)
            os.replace(staging / rel, target / rel)
            undo.append((target / rel, None))
    except BaseException:
        for path, backup in reversed(undo):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, path)
                elif path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
        raise
    for rel in earlier_dirs:
        if rel not in new_dirs:
            with contextlib.suppress(OSError):  # a folder that holds other files is kept
                (target / rel).rmdir()


def _earlier_save(target: Path) -> tuple[list[Path], list[Path]]:
    """The files of `target` that an earlier save wrote and a new one may replace or remove
    (those of our exact names, in the module folders its modules.json lists), and those
    folders."""
    if not _saved_by_us(target):
        return [], []
    folders = []
    names = [Path(n) for n in ("config.json", "model.safetensors", *TOKENIZER_FILES)]
    names += [Path(n) for n in ("modules.json", *SETTINGS_FILES)]
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        modules = json.loads((target / "modules.json").read_text(encoding="utf-8"))
        for module in modules:
            sub = module.get("path")
            if isinstance(sub, str) and _is_module_folder(sub):
                folders.append(Path(sub))
                names += [Path(sub) / n for n in MODULE_FILES]
    return [rel for rel in names if (target / rel).is_file()], folders


def _is_module_folder(name: str) -> bool:
    """Whether `name` is a module folder as `write_head` names them (2_Dense, 3_Normalize)."""
    number, _, kind = name.partition("_")
    return number.isdigit() and kind in ("Pooling", "Dense", "Normalize")


# The sentence-transformers settings files `write_settings` writes; the second marks a
# folder ferris-jax saved (its "__version__" names ferris_jax).
SETTINGS_FILES = ("sentence_bert_config.json", "config_sentence_transformers.json")


def _saved_by_us(target: Path) -> bool:
    """Whether `target` holds a save of ferris-jax (whose version its settings file names)."""
    with contextlib.suppress(OSError, ValueError):
        settings = json.loads((target / SETTINGS_FILES[1]).read_text(encoding="utf-8"))
        versions = settings.get("__version__") if isinstance(settings, dict) else None
        return isinstance(versions, dict) and "ferris_jax" in versions
    return False


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
    """Refuse a folder a save could lose files of: one that holds the working directory, a
    file, or a non-empty folder that no ferris-jax save wrote."""
    if target.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise ValueError(f"cannot save into {target}: it holds the working directory")
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"cannot save into {target}: it is a file, not a folder")
    if not target.is_dir() or not any(target.iterdir()) or _saved_by_us(target):
        return
    if (target / "config.json").is_file() or (target / "modules.json").is_file():
        raise ValueError(
            f"cannot save into {target}: it holds a model ferris-jax did not save (its "
            f"{SETTINGS_FILES[1]} names no ferris_jax version), whose files a save would "
            "replace; save into a new or empty folder"
        )
    raise ValueError(
        f"cannot save into {target}: it is not empty and holds no model (config.json or "
        "modules.json) of an earlier ferris-jax save; save into a new or empty folder"
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
