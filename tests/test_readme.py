"""Every code block of README.md runs as written on the machine the quickstart describes (no
model hub): bash blocks in order, in one scratch folder, then the Python blocks in one
interpreter, one after another. A block preceded by `<!-- readme-test: ... -->` says why it is
not run here (it needs the hub, or installs); `pip install` lines are how this environment was
set up, so they are not run again; the test command block is this suite itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
_FENCE = re.compile(r"(?:<!-- (?P<note>[^>]*) -->\n)?```(?P<lang>\w+)\n(?P<code>.*?)```", re.S)


def _blocks() -> list[tuple[int, str, str, str | None]]:
    """(line, language, code, note) of every fenced block."""
    text = README.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start("code")) + 1, m["lang"], m["code"], m["note"])
        for m in _FENCE.finditer(text)
    ]


def _runnable(lang: str) -> list[tuple[int, str]]:
    return [
        (line, code)
        for line, block_lang, code, note in _blocks()
        if block_lang == lang and not (note or "").startswith(("readme-test", "test-command"))
    ]


def test_the_readme_marks_what_it_does_not_run():
    notes = [note for *_, note in _blocks() if note]
    assert "test-command" in notes
    assert any(n.startswith("readme-test: needs the hub") for n in notes)
    assert len(_runnable("python")) >= 5 and len(_runnable("bash")) >= 2


@pytest.mark.slow
def test_every_readme_block_runs(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # ferris-jax
    for line, code in _runnable("bash"):
        script = "\n".join(ln for ln in code.splitlines() if not ln.startswith("pip install"))
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, f"README.md:{line} (bash) failed:\n{run.stderr}"
    python = "\n".join(
        f"print('README.md:{line}', flush=True)\n{code}" for line, code in _runnable("python")
    )
    run = subprocess.run(
        [sys.executable, "-c", "import ferris_jax\n" + textwrap.dedent(python)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    reached = re.findall(r"README.md:\d+", run.stdout)
    assert run.returncode == 0, f"the Python block after {reached[-1:]} failed:\n{run.stderr}"
    assert (tmp_path / "vectors.npy").is_file() and (tmp_path / "my-minilm").is_dir()
