"""Loading keeps host memory near one copy of the weights: no checkpoint file stays memory-mapped
while the parameters fill (a whole-file mapping held for the load doubled the peak)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.checkpoints import make_bert_checkpoint

import ferris_jax
from ferris_jax.loading import checkpoint

MAPS = Path("/proc/self/maps")


@pytest.mark.skipif(not MAPS.exists(), reason="needs /proc/self/maps (Linux)")
def test_no_checkpoint_file_stays_mapped_while_parameters_fill(tmp_path, monkeypatch):
    path = make_bert_checkpoint(tmp_path / "bert")
    weights = str((path / "model.safetensors").resolve())
    mapped_during_fill = []
    fill = checkpoint.fill_params

    def fill_and_look(expected, sources, **kwargs):
        filled = fill(expected, sources, **kwargs)
        mapped_during_fill.append(weights in MAPS.read_text())
        return filled

    monkeypatch.setattr(checkpoint, "fill_params", fill_and_look)
    enc = ferris_jax.load(str(path), compilation_cache=False)
    assert mapped_during_fill == [False]
    assert enc.encode("still loads every weight").shape == (enc.embedding_dimension,)
