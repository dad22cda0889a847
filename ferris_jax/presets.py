"""Named presets (configs/*.toml): hub id plus the pooling, prompts and limits of a model."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Installed wheels carry the presets inside the package; a source checkout has them at the top.
_PRESET_DIRS = (Path(__file__).parent / "configs", Path(__file__).parent.parent / "configs")


@dataclasses.dataclass(frozen=True)
class Preset:
    """A curated model: what to load and how sentence embeddings are taken from it."""

    name: str
    hub_id: str
    family: str
    pooling: tuple[str, ...]
    normalize: bool
    max_seq_length: int
    similarity: str = "cosine"
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None
    description: str = ""

    @classmethod
    def from_toml(cls, path: Path) -> Preset:
        try:
            data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"{path}: invalid preset: {e}") from e
        pooling = data.get("pooling", "mean")
        data["pooling"] = (pooling,) if isinstance(pooling, str) else tuple(pooling)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown preset keys {unknown}; known: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ValueError(f"{path}: {e}") from e


def preset_files() -> dict[str, Path]:
    """Preset name -> TOML file, from every preset directory (the package's first)."""
    found: dict[str, Path] = {}
    for d in _PRESET_DIRS:
        for path in sorted(d.glob("*.toml")) if d.is_dir() else ():
            found.setdefault(path.stem, path)
    return found


def list_presets() -> list[Preset]:
    return [Preset.from_toml(p) for p in preset_files().values()]


def find_preset(name: str) -> Preset | None:
    """The preset called `name` (file stem, case-insensitive) or whose hub id is `name`."""
    files = preset_files()
    by_stem = {k.lower(): v for k, v in files.items()}
    if name.lower() in by_stem:
        return Preset.from_toml(by_stem[name.lower()])
    for preset in list_presets():
        if preset.hub_id == name:
            return preset
    return None
