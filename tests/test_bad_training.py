"""Training refuses what would ruin a model, naming it: a learning rate that is NaN, infinite,
not positive or not a number; a NaN or infinite label; a loss given columns it does not take;
and a loss that turns non-finite stops the run before that state is evaluated, saved or kept."""

from __future__ import annotations

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.training import sts_pairs, sts_scored

import ferris_jax
from ferris_jax.errors import require_number
from ferris_jax.train import TrainDataset, make_batch
from ferris_jax.train.fit import fit, latest_checkpoint
from ferris_jax.train.losses import cosent_loss, matryoshka_loss, mnrl_loss
from ferris_jax.train.step import adamw, init_state, linear_schedule_with_warmup, train_step

RUN = dict(batch_size=8, seed=3)


@pytest.fixture(scope="module")
def enc(tiny_st):
    return ferris_jax.load(tiny_st[0])


def leaves(params) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def scored_examples(n: int) -> list[tuple[str, str, float]]:
    pairs, labels = sts_scored(n)
    return [(a, b, float(y)) for (a, b), y in zip(pairs, labels, strict=True)]


@pytest.mark.parametrize("rate", [math.nan, math.inf, -1e-3, 0.0, "1e-3", None, True])
def test_a_bad_learning_rate_is_refused_before_training(enc, rate):
    steps = []
    message = f"learning_rate must be a finite number > 0, got {rate!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        fit(enc, sts_pairs(16), learning_rate=rate, callback=lambda s, m: steps.append(s), **RUN)
    assert steps == []
    with pytest.raises(ValueError, match=re.escape(message)):
        adamw(rate)
    with pytest.raises(ValueError, match=re.escape(message)):
        linear_schedule_with_warmup(rate, 1, 10)


def test_learning_rate_schedules(enc):
    """A schedule is checked at step 0 (warmup from 0 is fine); numpy and 0-d arrays pass."""
    adamw(linear_schedule_with_warmup(1e-3, 5, 10))
    adamw(np.float32(1e-3))
    adamw(jnp.asarray(1e-3))
    with pytest.raises(ValueError, match="schedule gives nan at step 0"):
        adamw(lambda step: math.nan)
    with pytest.raises(ValueError, match=r"schedule gives -0\.1 at step 0"):
        fit(enc, sts_pairs(16), learning_rate=lambda step: -0.1, **RUN)
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        fit(enc, sts_pairs(16), weight_decay=math.nan, **RUN)
    assert require_number("x", 0) == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e39])  # 1e39 is inf in float32
def test_a_non_finite_label_is_refused_naming_the_example(enc, tmp_path, bad):
    examples = scored_examples(16)
    examples[5] = (*examples[5][:2], bad)
    with pytest.raises(ValueError, match=re.escape("rows[5][2] (the label) is ")):
        fit(enc, examples, loss=cosent_loss, **RUN)
    jsonl = tmp_path / "scored.jsonl"
    lines = [{"s1": a, "s2": b, "score": y} for a, b, y in examples]
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))  # NaN, Infinity
    with pytest.raises(ValueError, match=re.escape(f"{jsonl}:6: label column 'score' is ")):
        fit(enc, str(jsonl), loss=cosent_loss, **RUN)
    with np.errstate(over="ignore"):
        labels = np.array([y for *_, y in examples], np.float32)
    texts = tuple(tuple(e[c] for e in examples) for c in range(2))
    with pytest.raises(ValueError, match=re.escape("labels[5] (example 5) is ")):
        TrainDataset(("a", "b"), texts, labels)
    with pytest.raises(ValueError, match=re.escape("labels[5] (example 5) is ")):
        make_batch(enc, [e[:2] for e in examples], labels=labels)


def test_a_loss_given_other_columns_says_which_it_takes(enc):
    pairs = sts_pairs(16)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "cosent_loss cannot train on train_data: it takes columns (a, b) and a label "
            "column; train_data has 2 text column(s) ['anchor', 'positive'] and no label column"
        ),
    ):
        fit(enc, pairs, loss=cosent_loss, **RUN)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "mnrl_loss cannot train on train_data: it takes columns (anchors, positives"
            "[, negatives...]) and no label column"
        ),
    ):
        fit(enc, scored_examples(16), loss=mnrl_loss, **RUN)
    triplets = [(a, b, b, 0.5) for a, b in pairs]
    with pytest.raises(ValueError, match=r"matryoshka_loss\(cosent_loss\) cannot train"):
        fit(enc, triplets, loss=matryoshka_loss(cosent_loss, [8]), **RUN)
    # A research loop calling the step itself: the same error on its first call.
    optimizer = adamw(1e-3)
    step = train_step(enc, cosent_loss, optimizer)
    with pytest.raises(ValueError, match="cosent_loss cannot train on the batch"):
        step(init_state(enc.params, optimizer), make_batch(enc, pairs[:8]))


def nan_loss(a, b):
    return jnp.mean(a * b) * jnp.nan


def nan_on_label_2(a, b, labels):
    """CoSENT, and NaN for a batch holding the label 2."""
    return jnp.where(jnp.any(labels == 2), jnp.nan, cosent_loss(a, b, labels))


def test_a_non_finite_loss_stops_training_before_saving(tiny_st, tmp_path):
    enc = ferris_jax.load(tiny_st[0])
    initial = leaves(enc.params)
    evaluated = []
    with pytest.raises(FloatingPointError, match=r"the loss is nan at step 1 \(epoch 0"):
        fit(
            enc,
            sts_pairs(16),
            loss=nan_loss,
            learning_rate=1e-3,
            evaluator=lambda e: evaluated.append(1) or {},
            checkpoint_dir=tmp_path / "a",
            checkpoint_steps=1,
            **RUN,
        )
    assert evaluated == [] and latest_checkpoint(tmp_path / "a") is None
    for got, want in zip(leaves(enc.params), initial, strict=True):
        np.testing.assert_array_equal(got, want)  # the encoder keeps its parameters

    # Diverging at the second step: the first step's checkpoint stays the latest.
    pairs = sts_pairs(8)
    good = make_batch(enc, pairs, labels=np.linspace(0, 1, 8))
    bad = make_batch(enc, pairs, labels=np.full(8, 2.0))
    with pytest.raises(FloatingPointError, match="the loss is nan at step 2"):
        fit(
            enc,
            [good, bad],
            loss=nan_on_label_2,
            learning_rate=1e-3,
            checkpoint_dir=tmp_path / "b",
            checkpoint_steps=1,
            seed=3,
        )
    assert latest_checkpoint(tmp_path / "b").name == "checkpoint-1"
    for got, want in zip(leaves(enc.params), initial, strict=True):
        np.testing.assert_array_equal(got, want)
