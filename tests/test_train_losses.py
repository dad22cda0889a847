"""The pure losses against sentence-transformers' `compute_loss_from_embeddings` on the same
embeddings: values and gradients with respect to the embeddings (torch autograd), float32,
tolerance `helpers.training.RTOL`. No model: embeddings are seeded random vectors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.training import RTOL, st_symmetric_mnrl

from ferris_jax.train.losses import (
    cosent_loss,
    matryoshka_loss,
    mnrl_loss,
    mnrl_symmetric_loss,
)

torch = pytest.importorskip("torch")
st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
st_util = pytest.importorskip("sentence_transformers.util")
B, E, K = 12, 24, 2


class _NoModel:
    """Stands for the model the reference losses hold (only asked its embedding size)."""

    def get_embedding_dimension(self) -> int:
        return E


def embeddings(columns: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((B, E)).astype(np.float32) for _ in range(columns)]


def reference(loss, columns, labels=None):
    tensors = [torch.tensor(c, requires_grad=True) for c in columns]
    value = loss.compute_loss_from_embeddings(
        tensors, None if labels is None else torch.tensor(labels)
    )
    value.backward()
    return value.item(), [t.grad.numpy() for t in tensors]


def ours(loss, columns, labels=None):
    def f(cols):
        args = cols[:2] + ([jnp.stack(cols[2:], axis=1)] if len(cols) > 2 else [])
        return loss(*args) if labels is None else loss(*args, labels=jnp.asarray(labels))

    value, grads = jax.value_and_grad(f)([jnp.asarray(c) for c in columns])
    return float(value), [np.asarray(g) for g in grads]


def assert_same(got, want):
    assert got[0] == pytest.approx(want[0], rel=RTOL)
    for g, w in zip(got[1], want[1], strict=True):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=RTOL * np.abs(w).max())


@pytest.mark.parametrize("negatives", [0, 1, K])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_mnrl_and_symmetric(negatives, similarity):
    columns = embeddings(2 + negatives)
    fct = st_util.cos_sim if similarity == "cosine" else st_util.dot_score
    scale = 20.0 if similarity == "cosine" else 0.5
    for ref_class, loss in (
        (st_losses.MultipleNegativesRankingLoss, mnrl_loss),
        (st_symmetric_mnrl, mnrl_symmetric_loss),
    ):
        want = reference(ref_class(_NoModel(), scale=scale, similarity_fct=fct), columns)
        got = ours(functools.partial(loss, scale=scale, similarity=similarity), columns)
        assert_same(got, want)


def test_cosent_with_tied_labels():
    columns = embeddings(2)
    labels = np.round(np.random.default_rng(1).uniform(0, 1, B), 1).astype(np.float32)
    assert len(set(labels.tolist())) < B  # ties: pairs of equal labels are not compared
    for scale in (20.0, 7.0):
        want = reference(st_losses.CoSENTLoss(_NoModel(), scale=scale), columns, labels)
        assert_same(ours(functools.partial(cosent_loss, scale=scale), columns, labels), want)
    assert float(cosent_loss(*map(jnp.asarray, columns), jnp.ones(B))) == 0.0  # nothing ranked


def test_matryoshka_over_mnrl_with_negatives_and_over_cosent():
    """sentence-transformers truncates the model's output (`ForwardDecorator`); on embeddings,
    that is the base loss of each truncated, re-normalized column, weighted."""
    from sentence_transformers.sentence_transformer.losses.matryoshka import shrink

    dims, weights = [24, 12, 6], [1.0, 0.5, 2.0]
    columns = embeddings(3)
    labels = np.random.default_rng(2).uniform(0, 1, B).astype(np.float32)
    for base, ref_base, cols, y in (
        (mnrl_loss, st_losses.MultipleNegativesRankingLoss(_NoModel()), columns, None),
        (cosent_loss, st_losses.CoSENTLoss(_NoModel()), columns[:2], labels),
    ):
        tensors = [torch.tensor(c, requires_grad=True) for c in cols]
        total = sum(
            w
            * ref_base.compute_loss_from_embeddings(
                [shrink(t, d) for t in tensors], None if y is None else torch.tensor(y)
            )
            for d, w in zip(dims, weights, strict=True)
        )
        total.backward()
        want = (total.item(), [t.grad.numpy() for t in tensors])
        assert_same(ours(matryoshka_loss(base, dims, weights), cols, y), want)


def test_bad_arguments_are_named():
    a, b = map(jnp.asarray, embeddings(2))
    with pytest.raises(ValueError, match="similarity must be one of"):
        mnrl_loss(a, b, similarity="cos")
    with pytest.raises(ValueError, match="negatives must be"):
        mnrl_loss(a, b, jnp.zeros((B + 1, E)))
    with pytest.raises(ValueError, match="anchors and positives"):
        mnrl_loss(a, b[:3])
    with pytest.raises(ValueError, match="labels must be"):
        cosent_loss(a, b, jnp.zeros(B + 1))
    with pytest.raises(ValueError, match="exceeds the embedding size"):
        matryoshka_loss(mnrl_loss, [E + 1])(a, b)
    with pytest.raises(ValueError, match="weights"):
        matryoshka_loss(mnrl_loss, [8, 4], [1.0])
