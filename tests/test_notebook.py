"""The notebooks run top to bottom, so they cannot drift from the library."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    # No kernel directories: only ipykernel's native "python3" spec, bound to sys.executable,
    # so the kernel runs this interpreter even if a user-level "python3" points elsewhere.
    specs = KernelSpecManager(kernel_dirs=[])
    km = KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    client = NotebookClient(
        nb,
        km=km,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},  # the kernel's working directory
    )
    client.execute()
    return nb


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout")


def _top_hits(text: str, query: str, k: int) -> list[str]:
    """The documents printed under `query` as "  <score>  <document>" lines, best first."""
    lines = text.splitlines()
    start = lines.index(query) + 1
    return [line.split(maxsplit=1)[1] for line in lines[start : start + k]]


@pytest.mark.slow
def test_quickstart_notebook(monkeypatch):
    # Set before the kernel starts so the kernel process inherits them.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")

    nb = _execute(NOTEBOOKS / "01_quickstart.ipynb")

    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = [o for cell in code for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, [f"{o.ename}: {o.evalue}" for o in errors]
    stderr = [o.text for o in outputs if o.get("name") == "stderr"]
    assert not stderr, f"the notebook printed warnings: {stderr}"
    assert any("image/png" in o.get("data", {}) for o in outputs), "the heatmap was not drawn"

    search = next(c for c in code if "semantic_search(" in c.source)
    text = _stdout(search)
    assert _top_hits(text, "Which fruit is good for me?", 2) == [
        "Apples and oranges are common fruits.",
        "Bananas are rich in potassium.",
    ]
    assert _top_hits(text, "What to see in Paris?", 2) == [
        "The Eiffel Tower is in Paris.",
        "The Louvre is the world's most visited museum.",
    ]

    programs = _stdout(next(c for c in code if "compiled_programs" in c.source))
    assert programs.startswith("[(")
