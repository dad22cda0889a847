"""Named presets (configs/*.toml): hub id plus the pooling, prompts and limits of a model.

This module is the one reader of the preset files. It imports no JAX, so listing presets
(`ferris-jax models`) stays fast; pooling modes, similarity names and families are checked
against their registries when a preset is applied (checkpoint.load_checkpoint), and for every
shipped preset by tests/test_presets.py.
"""

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
_PACKAGE = Path(__file__).parent.parent
_PRESET_DIRS = (_PACKAGE / "configs", _PACKAGE.parent / "configs")


@dataclasses.dataclass(frozen=True)
class Preset:
    """A curated model: what to load and how sentence embeddings are taken from it.

    `family` is the checkpoint's config.json `model_type`; `dims` the embedding dimension of
    the real checkpoint (for listing); `prompts` are merged over the checkpoint's own, and
    `pooling`, `normalize`, `max_seq_length` and `similarity` replace the checkpoint's.
    """

    name: str
    hub_id: str
    family: str
    dims: int
    pooling: tuple[str, ...]
    normalize: bool
    max_seq_length: int
    similarity: str = "cosine"
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None
    languages: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        problems = []
        for field in ("name", "hub_id", "family", "similarity", "description"):
            if not isinstance(getattr(self, field), str):
                problems.append(f"{field} must be a string")
        if isinstance(self.hub_id, str) and self.hub_id.count("/") != 1:
            problems.append(f"hub_id {self.hub_id!r} is not of the form 'org/name'")
        if not self.family:
            problems.append("family (the checkpoint's config.json model_type) is empty")
        for field, low in (("dims", 1), ("max_seq_length", 2)):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                problems.append(f"{field} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.normalize, bool):
            problems.append(f"normalize must be true or false, got {self.normalize!r}")
        if not self.pooling or not all(isinstance(m, str) for m in self.pooling):
            problems.append(f"pooling must name one or more modes, got {list(self.pooling)!r}")
        if not isinstance(self.prompts, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.prompts.items()
        ):
            problems.append("[prompts] must map names to strings")
        elif self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            problems.append(
                f"default_prompt_name {self.default_prompt_name!r} is not one of the prompts "
                f"{sorted(self.prompts)}"
            )
        if not all(isinstance(lang, str) for lang in self.languages):
            problems.append("languages must be a list of strings")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_toml(cls, path: Path) -> Preset:
        """Parse one preset file; ValueError naming the file and every problem in it."""
        try:
            data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"{path}: invalid preset: {e}") from e
        for key, default in (("pooling", "mean"), ("languages", ())):
            value = data.get(key, default)
            data[key] = (value,) if isinstance(value, str) else tuple(value)
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"{path}: unknown preset keys {unknown}; known: {known}")
        missing = [f.name for f in dataclasses.fields(cls) if _required(f) and f.name not in data]
        if missing:
            raise ValueError(f"{path}: missing preset keys {missing}")
        if data["name"] != path.stem:
            raise ValueError(f"{path}: name {data['name']!r} must be the file's name {path.stem!r}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def preset_files() -> dict[str, Path]:
    """Preset name -> TOML file, from every preset directory (the package's first)."""
    found: dict[str, Path] = {}
    for d in _PRESET_DIRS:
        for path in sorted(d.glob("*.toml")) if d.is_dir() else ():
            found.setdefault(path.stem, path)
    return found


def list_presets() -> list[Preset]:
    """Every preset, sorted by name (case-insensitive)."""
    files = preset_files()
    return [Preset.from_toml(files[name]) for name in sorted(files, key=str.lower)]


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
