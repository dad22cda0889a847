"""Each Apple GPU extra installs on a Mac: its requirements, with the core dependencies, resolved
for macOS 14 on arm64 against the package index, wheels only, as `pip install` on a Mac would.

It needs the package index (CI has it; `-m "not network"` deselects it offline). uv resolves:
it evaluates the requirements' markers for the target platform (pip's `--platform` evaluates
them for the machine it runs on, so `sys_platform == 'darwin'` would leave the plugin out).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
MACOS = "14.0"  # metaljax and jax-mps publish macosx_14_0_arm64 wheels only

# extra -> (Python it is resolved for, the plugin it must bring, jax versions it must bring)
APPLE_EXTRAS = {
    "metaljax": ("3.12", "metaljax", (Version("0.11"), Version("0.12"))),
    "mps": ("3.12", "jax-mps", (Version("0.11"), Version("0.12"))),
    "metal": ("3.12", "jax-metal", (Version("0.4.35"), Version("0.4.36"))),
}


def _requirements(extra: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"][extra]]


def _resolve(requirements: list[str], python: str) -> dict[str, Version] | str:
    """name -> version that uv resolves for macOS arm64 and `python`, or uv's reason it cannot."""
    command = [
        *(sys.executable, "-m", "uv", "pip", "compile", "-"),
        *("--python", sys.executable),  # spares uv a search for a Python `python`: none needed
        *("--python-platform", "aarch64-apple-darwin", "--python-version", python),
        *("--only-binary", ":all:", "--no-header", "--no-annotate", "--quiet"),
    ]
    env = {**os.environ, "MACOSX_DEPLOYMENT_TARGET": MACOS}
    done = subprocess.run(
        command, input="\n".join(requirements), capture_output=True, text=True, env=env, timeout=240
    )
    if done.returncode != 0:
        return f"cannot install on macOS {MACOS} arm64 with Python {python}:\n{done.stderr}"
    pins = [Requirement(line) for line in done.stdout.splitlines() if "==" in line]
    return {canonicalize_name(r.name): Version(next(iter(r.specifier)).version) for r in pins}


def test_every_apple_extra_is_checked():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    apple = {
        name
        for name, reqs in extras["optional-dependencies"].items()
        if any("darwin" in r for r in reqs)
    }
    assert apple == set(APPLE_EXTRAS)


@pytest.fixture(scope="module")
def resolved_extras() -> dict[str, dict[str, Version] | str]:
    """Every Apple extra resolved at once (each resolution waits mostly on the index)."""
    with ThreadPoolExecutor(len(APPLE_EXTRAS)) as pool:
        jobs = {
            e: pool.submit(_resolve, _requirements(e), py) for e, (py, *_) in APPLE_EXTRAS.items()
        }
        return {extra: job.result() for extra, job in jobs.items()}


@pytest.mark.network
@pytest.mark.parametrize("extra", sorted(APPLE_EXTRAS))
def test_apple_extra_resolves_for_macos_arm64(extra, resolved_extras):
    _, plugin, (low, high) = APPLE_EXTRAS[extra]
    resolved = resolved_extras[extra]
    assert not isinstance(resolved, str), resolved
    assert plugin in resolved, f"[{extra}] did not bring {plugin} on a Mac: {sorted(resolved)}"
    for name in ("jax", "jaxlib"):
        assert low <= resolved[name] < high, (extra, name, resolved[name])
    assert "flax" in resolved


@pytest.mark.network
def test_an_extra_that_cannot_install_on_a_mac_fails():
    """The check itself: jax-mps 0.11 on Python 3.11 (it needs 3.12) does not resolve."""
    reason = _resolve(_requirements("mps"), "3.11")
    assert isinstance(reason, str) and "jax-mps" in reason
