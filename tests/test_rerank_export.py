"""Saving a cross-encoder (`Reranker.save_pretrained`): the folder loads in sentence-transformers'
`CrossEncoder`, transformers' `AutoModelForSequenceClassification` and `load_reranker`, scoring
as the reranker with the saved parameters does, under the checkpoint's own tensor names."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers.checkpoints import (
    make_bert_checkpoint,
    make_modernbert_checkpoint,
    make_xlm_roberta_checkpoint,
)
from helpers.data import sts_benchmark
from safetensors import safe_open

import ferris_jax

# float32 on both sides, as tests/test_rerank.py.
RTOL, ATOL = 1e-5, 1e-5


@dataclasses.dataclass(frozen=True)
class Case:
    build: Callable[..., Path]
    num_labels: int
    config: dict
    activation: str | None = None  # saved by CrossEncoder.save before loading (a torch class)


CASES = {
    "bert-1-label-tanh": Case(
        make_bert_checkpoint, 1, dict(initializer_range=0.3), "torch.nn.modules.activation.Tanh"
    ),
    "xlm-roberta-1-label": Case(make_xlm_roberta_checkpoint, 1, dict(initializer_range=0.3)),
    "modernbert-3-labels-mean": Case(
        make_modernbert_checkpoint,
        3,
        dict(classifier_pooling="mean", classifier_bias=True, max_position_embeddings=80),
    ),
}


def pairs() -> list[tuple[str, str]]:
    return [(p.sentence1, p.sentence2) for p in sts_benchmark("test")[:12]]


def noisy(params, seed: int):
    """Every parameter plus seeded Gaussian noise (std 0.02): as after some training."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [
        x + 0.02 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(treedef, leaves)


def tensor_names(folder: Path) -> list[str]:
    with safe_open(str(folder / "model.safetensors"), framework="numpy") as handle:
        return sorted(handle.keys())


def source(case: Case, directory: Path) -> Path:
    path = case.build(directory / "hf", seed=4, num_labels=case.num_labels, **case.config)
    if case.activation is None:
        return path
    import torch  # noqa: F401 (the activation's module)
    from sentence_transformers import CrossEncoder
    from sentence_transformers.util import import_from_string

    saved = directory / "ce"
    activation = import_from_string(case.activation)()
    CrossEncoder(str(path), device="cpu", activation_fn=activation).save(str(saved))
    return saved


@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_reranker_scores_everywhere(tmp_path, name):
    """Load -> add noise -> save: CrossEncoder and load_reranker score the folder as our
    reranker with the noisy parameters does; transformers loads every tensor (no random
    weights) under the original's names; labels and the saved activation survive."""
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification

    case = CASES[name]
    src = source(case, tmp_path)
    rr = ferris_jax.load_reranker(src)
    before = rr.predict(pairs())
    params = noisy(rr.params, seed=7)
    saved = rr.save_pretrained(tmp_path / "saved", params=params)
    rr.params = params
    want = rr.predict(pairs())
    assert np.abs(want - before).max() > 1e-3  # the noise reaches the scores

    got_ce = CrossEncoder(str(saved), device="cpu").predict(pairs())
    np.testing.assert_allclose(got_ce, want, rtol=RTOL, atol=ATOL)
    again = ferris_jax.load_reranker(saved)
    np.testing.assert_allclose(again.predict(pairs()), want, rtol=RTOL, atol=ATOL)
    assert again.checkpoint.activation_fn == case.activation

    assert tensor_names(saved) == tensor_names(src)
    _, info = AutoModelForSequenceClassification.from_pretrained(
        str(saved), output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    config = json.loads((saved / "config.json").read_text())
    original = json.loads((src / "config.json").read_text())
    assert config["id2label"] == original["id2label"]
    assert len(config["id2label"]) == case.num_labels


def test_save_over_an_earlier_save_not_over_the_source(tmp_path):
    """A second save replaces the first (the default params: `rr.params`); the folder the model
    came from, which ferris-jax did not write, is refused untouched."""
    src = make_bert_checkpoint(tmp_path / "hf", seed=4, num_labels=1)
    rr = ferris_jax.load_reranker(src)
    saved = rr.save_pretrained(tmp_path / "saved", params=noisy(rr.params, seed=1))
    rr.save_pretrained(saved)
    np.testing.assert_allclose(
        ferris_jax.load_reranker(saved).predict(pairs()),
        rr.predict(pairs()),
        rtol=RTOL,
        atol=ATOL,
    )
    files = sorted(p.name for p in src.iterdir())
    with pytest.raises(ValueError, match="ferris-jax did not save"):
        rr.save_pretrained(src)
    assert sorted(p.name for p in src.iterdir()) == files


def test_max_seq_length_is_saved(tmp_path):
    """A shorter `max_seq_length` reaches CrossEncoder and load_reranker, which cut the pairs
    as the reranker does (rtol=atol=1e-5)."""
    from sentence_transformers import CrossEncoder

    src = make_bert_checkpoint(tmp_path / "hf", seed=4, num_labels=1, initializer_range=0.3)
    rr = ferris_jax.load_reranker(src)
    rr.max_seq_length = 20
    saved = rr.save_pretrained(tmp_path / "saved")
    want = rr.predict(pairs())
    assert np.abs(want - ferris_jax.load_reranker(src).predict(pairs())).max() > 1e-3  # cut
    ce = CrossEncoder(str(saved), device="cpu")
    assert ce.max_seq_length == 20
    np.testing.assert_allclose(ce.predict(pairs()), want, rtol=RTOL, atol=ATOL)
    again = ferris_jax.load_reranker(saved)
    assert again.max_seq_length == 20
    np.testing.assert_allclose(again.predict(pairs()), want, rtol=RTOL, atol=ATOL)
