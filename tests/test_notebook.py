"""The notebooks run top to bottom, so they cannot drift from the library."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
from helpers.data import lee_corpus
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


def _run_cleanly(monkeypatch, name: str, drawn: str | None) -> list[nbformat.NotebookNode]:
    """Execute a notebook offline; its code cells, checked for errors, warnings and (unless
    `drawn` is None) a plot."""
    # Set before the kernel starts so the kernel process inherits them.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = _execute(NOTEBOOKS / name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = [o for cell in code for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, [f"{o.ename}: {o.evalue}" for o in errors]
    stderr = [o.text for o in outputs if o.get("name") == "stderr"]
    assert not stderr, f"the notebook printed warnings: {stderr}"
    if drawn is not None:
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{drawn} was not drawn"
    return code


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout")


def _top_hits(text: str, query: str, k: int) -> list[str]:
    """The documents printed under `query` as "  <score>  <document>" lines, best first."""
    lines = text.splitlines()
    start = lines.index(query) + 1
    return [line.split(maxsplit=1)[1] for line in lines[start : start + k]]


@pytest.mark.slow
def test_quickstart_notebook(monkeypatch):
    code = _run_cleanly(monkeypatch, "01_quickstart.ipynb", drawn="the heatmap")

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


# A passage line of 02_semantic_search: "  <score>  <document id>  chars <start>-<end>  <text>".
_PASSAGE = re.compile(r"  (\d\.\d{3})  (lee-\d{3})  chars (\d+)-(\d+)  (.+)")
_RECALL = re.compile(r"(\w+) +rescore=(True|False) +recall@10 = (\d\.\d{3})")


def _passages(text: str, query: str) -> list[tuple[float, str, int, int, str]]:
    """The passages printed under `query`, best first: (score, document id, start, end, text)."""
    lines = text.splitlines()
    hits = []
    for line in lines[lines.index(query) + 1 :]:
        match = _PASSAGE.fullmatch(line)
        if match is None:
            break
        score, document, start, end, passage = match.groups()
        hits.append((float(score), document, int(start), int(end), passage))
    return hits


@pytest.mark.slow
def test_semantic_search_notebook(monkeypatch):
    code = _run_cleanly(monkeypatch, "02_semantic_search.ipynb", drawn="the recall plot")

    articles = lee_corpus()
    printed = "".join(_stdout(c) for c in code if "show(question" in c.source)

    def article(document: str) -> str:
        return articles[int(document.removeprefix("lee-"))]

    def passages(query: str, k: int) -> list[tuple[float, str, int, int, str]]:
        hits = _passages(printed, query)
        assert len(hits) == k, (query, hits)
        scores = [h[0] for h in hits]
        assert scores == sorted(scores, reverse=True), (query, scores)
        for _, document, start, end, passage in hits:  # the offsets locate the passage
            assert start < end <= len(article(document))
            assert article(document)[start:end].startswith(passage.removesuffix("...")), passage
        return hits

    actor = passages("Which actor from Yes Minister has died?", 3)
    assert actor[0][1:3] == ("lee-045", 0)
    assert actor[0][4].startswith("Sir Nigel Hawthorne, the British actor")
    for query, word in [
        ("Who is leading the Sydney to Hobart yacht race?", "Hobart"),
        ("Why is there trouble at the Woomera detention centre?", "Woomera"),
    ]:
        assert all(word in article(h[1]) for h in passages(query, 3)), query

    by_document = passages("Will the Qantas maintenance workers strike?", 5)
    assert len({h[1] for h in by_document}) == 5, "by_document=True repeated an article"
    assert all("Qantas" in article(h[1]) for h in by_document)
    filtered = passages("bushfires near Sydney", 3)
    assert all(int(h[1].removeprefix("lee-")) < 100 for h in filtered), "filter line <= 100"
    assert all("fire" in article(h[1]) for h in filtered)

    reload = _stdout(next(c for c in code if "reloaded" in c.source))
    assert "same results after reload: True" in reload

    text = _stdout(next(c for c in code if "recall@10" in c.source))
    assert "float32 equals brute force: True" in text
    recall = {(p, r == "True"): float(v) for p, r, v in _RECALL.findall(text)}
    assert set(recall) == {(p, r) for p in ("bfloat16", "int8", "binary") for r in (True, False)}
    assert all(0 <= v <= 1 for v in recall.values()), recall
    assert recall["int8", True] >= 0.99, recall
    assert recall["bfloat16", True] >= 0.99, recall
    assert recall["binary", True] >= recall["binary", False], recall


_SPEARMAN = re.compile(r"Spearman (before|after): +(\d\.\d{4})")
_LOSS = re.compile(r"loss, mean of the (first|last) 8 steps: +(\d+\.\d{4})")
_DIFFERENCE = re.compile(r"(ferris_jax\.load|SentenceTransformer), max difference: (\S+)")


@pytest.mark.slow
def test_fine_tuning_notebook(monkeypatch):
    code = _run_cleanly(monkeypatch, "03_fine_tuning.ipynb", drawn="the plots")

    trained = _stdout(next(c for c in code if "history = fit(" in c.source))
    loss = dict(_LOSS.findall(trained))
    assert set(loss) == {"first", "last"}, trained
    assert float(loss["last"]) < float(loss["first"]), loss  # training lowered the loss
    spearman = {k: float(v) for k, v in _SPEARMAN.findall(trained)}
    assert set(spearman) == {"before", "after"}, trained
    assert all(0 <= v <= 1 for v in spearman.values()), spearman
    assert spearman["before"] != spearman["after"], "training did not change the model"

    reload = _stdout(next(c for c in code if "SentenceTransformer(" in c.source))
    differences = {k: float(v) for k, v in _DIFFERENCE.findall(reload)}
    assert set(differences) == {"ferris_jax.load", "SentenceTransformer"}, reload
    assert differences["ferris_jax.load"] == 0.0, differences
    assert differences["SentenceTransformer"] <= 1e-5, differences  # assert_embeddings_match's


_SHAPES = re.compile(r"batch shapes compiled \(rows, tokens, texts per row\): (\[.*\])")
_DEVICES = re.compile(r"devices: (\[.*\])")


@pytest.mark.slow
def test_several_devices_notebook(monkeypatch):
    # The kernel gets no XLA_FLAGS from this process (whose conftest.py forced four CPU
    # devices): its four devices come from the notebook's first cell.
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    code = _run_cleanly(monkeypatch, "04_several_devices.ipynb", drawn=None)

    def out(marker: str) -> str:
        return _stdout(next(c for c in code if marker in c.source))

    loaded = out('devices="local"')
    devices = ast.literal_eval(_DEVICES.search(loaded).group(1))
    assert len(devices) == 4 and len(set(devices)) == 4, loaded
    assert "mesh: {'data': 4}" in loaded
    assert "a weight is on 4 devices, replicated: True" in loaded

    # batch_size=16 is per device: batches of up to 64 rows, each divided over the four
    # devices; one device with batch_size=16 runs up to 16 rows.
    shapes = ast.literal_eval(_SHAPES.search(out("enc.encode(")).group(1))
    assert shapes and all(rows % 4 == 0 for rows, *_ in shapes), shapes
    assert max(rows for rows, *_ in shapes) == 64, shapes
    compared = out("one.encode(")
    assert max(rows for rows, *_ in ast.literal_eval(_SHAPES.search(compared).group(1))) == 16
    difference = float(re.search(r"max \|4 devices - 1 device\| = (\S+)", compared).group(1))
    assert difference <= 1e-6, compared  # test_several_devices.py's tolerance

    searched = out("index.search(")
    assert "same hits as one device: True" in searched
    for question, word in [
        ("Which ocean racer took line honours?", "Assa Abloy"),
        ("How many militants did Indian forces kill in Kashmir?", "eight suspected militants"),
        ("Why were the midwives suspended?", "nitrous oxide"),
    ]:
        assert word in _top_hits(searched, question, 1)[0], (question, searched)
