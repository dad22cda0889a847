"""What `pip install ferris-jax` brings: the exact fast WordPiece (nanotoken) wherever it has a
wheel, and nothing that would need a compiler where it has none."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the core dependency tomli
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _core_requirement(name: str) -> Requirement:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    found = [r for r in map(Requirement, deps) if r.name == name]
    assert len(found) == 1, f"{name} is listed {len(found)} times in the core dependencies"
    return found[0]


def _environment(sys_platform: str, machine: str, implementation: str = "CPython") -> dict:
    return {"sys_platform": sys_platform, "platform_machine": machine,
            "platform_python_implementation": implementation}  # fmt: skip


# nanotoken 0.1.0's wheels (cp310-abi3): manylinux x86_64 and aarch64, macOS x86_64 and arm64,
# Windows amd64; jaxlib's wheels cover a subset of these.
@pytest.mark.parametrize(
    "env",
    [
        _environment("linux", "x86_64"),
        _environment("linux", "aarch64"),
        _environment("darwin", "arm64"),
        _environment("darwin", "x86_64"),
        _environment("win32", "AMD64"),
    ],
)
def test_the_fast_tokenizer_installs_where_it_has_a_wheel(env):
    assert _core_requirement("nanotoken").marker.evaluate(env)


@pytest.mark.parametrize(
    "env",
    [
        _environment("linux", "armv7l"),
        _environment("linux", "ppc64le"),
        _environment("win32", "ARM64"),
        _environment("linux", "x86_64", implementation="PyPy"),
    ],
)
def test_no_source_build_is_asked_for_where_it_has_no_wheel(env):
    assert not _core_requirement("nanotoken").marker.evaluate(env)
