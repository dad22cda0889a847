"""The pure functional core: `enc.apply(params, batch)` under jit, vmap and grad."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.checkpoints import make_sentence_transformer
from helpers.texts import SENTENCES

import ferris_jax
from ferris_jax._compat import variable_value


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path, _ = make_sentence_transformer(
        tmp_path_factory.mktemp("f") / "m",
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        dense=(8,),
        normalize=True,
    )
    return ferris_jax.load(path)


def test_jit_apply_equals_encode(tiny):
    batch = tiny.tokenize(SENTENCES)
    got = jax.jit(tiny.apply)(
        tiny.params, batch.input_ids, batch.attention_mask, batch.token_type_ids
    )
    np.testing.assert_allclose(np.asarray(got), tiny.encode(SENTENCES), atol=1e-6)
    hidden = jax.jit(tiny.token_embeddings)(tiny.params, batch.input_ids, batch.attention_mask)
    assert hidden.shape == (*batch.input_ids.shape, 16)


def test_apply_does_not_mutate_params(tiny):
    before = jax.tree.map(np.array, tiny.params)
    batch = tiny.tokenize(SENTENCES[:3])
    tiny.apply(tiny.params, batch.input_ids, batch.attention_mask)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, tiny.params))


def test_vmap_over_two_parameter_sets(tiny):
    other = jax.tree.map(lambda p: p * 1.5, tiny.params)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), tiny.params, other)
    batch = tiny.tokenize(SENTENCES[:5])
    args = (batch.input_ids, batch.attention_mask, batch.token_type_ids)
    both = jax.jit(jax.vmap(tiny.apply, in_axes=(0, None, None, None)))(stacked, *args)
    assert both.shape == (2, 5, 8)
    np.testing.assert_allclose(both[0], tiny.apply(tiny.params, *args), atol=1e-6)
    np.testing.assert_allclose(both[1], tiny.apply(other, *args), atol=1e-6)
    assert np.abs(np.asarray(both[0] - both[1])).max() > 1e-3


def test_grad_is_finite_and_matches_finite_differences(tiny):
    batch = tiny.tokenize(SENTENCES[:4])
    target = jax.random.normal(jax.random.key(0), (4, 8))

    def loss(params):
        emb = tiny.apply(params, batch.input_ids, batch.attention_mask, batch.token_type_ids)
        return jnp.sum((emb - target) ** 2)

    grads = jax.jit(jax.grad(loss))(tiny.params)
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
    # Directional derivative along a random direction vs central finite differences.
    keys = jax.random.split(jax.random.key(1), len(leaves))
    direction = jax.tree.unflatten(
        jax.tree.structure(grads),
        [jax.random.normal(k, g.shape) for k, g in zip(keys, leaves, strict=True)],
    )
    eps = 1e-3
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, tiny.params, direction)  # noqa: E731
    numeric = (loss(shifted(1.0)) - loss(shifted(-1.0))) / (2 * eps)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(leaves, jax.tree.leaves(direction), strict=True))
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=2e-2)


def test_layer_norm_parameters_receive_gradients(tiny):
    batch = tiny.tokenize(SENTENCES[:2])
    grads = jax.grad(lambda p: tiny.apply(p, batch.input_ids, batch.attention_mask).sum())(
        tiny.params
    )
    norm = grads["backbone"]["layers"][0]["output_norm"]
    assert (
        float(jnp.abs(variable_value(norm["scale"])).sum()) > 0
        and float(jnp.abs(variable_value(norm["bias"])).sum()) > 0
    )
