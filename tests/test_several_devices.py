"""One process, several devices: the same results as one device.

conftest.py gives this process four CPU devices (`--xla_force_host_platform_device_count`); a
model loaded with `devices=` runs data parallel over them (parameters replicated, batches split
by rows) and must give one device's vectors, search results and train steps."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers.data import sts_sentences

import ferris_jax

DEVICES = 4


@pytest.fixture(scope="module", autouse=True)
def _four_devices():
    if len(jax.devices("cpu")) < DEVICES:
        pytest.fail(f"conftest.py should give this process {DEVICES} CPU devices")


@pytest.fixture(scope="module")
def minilm_4(minilm_path):
    return ferris_jax.load("sentence-transformers/all-MiniLM-L6-v2", devices="local")


@pytest.fixture(scope="module")
def texts():
    return sts_sentences()[:500]


def test_load_places_the_model_on_every_local_device(minilm_4):
    assert minilm_4.placement.devices == tuple(jax.local_devices())
    assert minilm_4.placement.rows_multiple == DEVICES
    leaf = jax.tree.leaves(minilm_4.params)[0]
    assert leaf.sharding.is_fully_replicated and len(leaf.devices()) == DEVICES


@pytest.mark.parametrize("pack", [False, True], ids=["padded", "packed"])
def test_encode_over_four_devices_equals_one_device(minilm, minilm_4, texts, pack):
    minilm.pack_length = minilm_4.pack_length = 64 if pack else None
    try:
        want = minilm.encode(texts, batch_size=32)
        got = minilm_4.encode(texts, batch_size=8)  # per device: the same 32-row batches
    finally:
        minilm.pack_length = minilm_4.pack_length = minilm.backend.defaults.pack_length
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # Every batch shape divides over the devices; each device got 8-row (or smaller) batches.
    assert all(shape[0] % DEVICES == 0 for shape in minilm_4.compiled_programs)
    assert max(shape[0] for shape in minilm_4.compiled_programs) == 32


def test_streams_and_batches_over_four_devices_equal_one_device(minilm, minilm_4, texts):
    want = minilm.encode(texts[:100])
    streamed = np.concatenate(list(minilm_4.encode_stream(iter(texts[:100]), chunk_size=37)))
    np.testing.assert_allclose(streamed, want, rtol=0, atol=1e-6)
    got = np.zeros_like(want)
    for batch in minilm_4.embed_batches(texts[:100]):
        got[batch.indices] = batch.numpy()
        assert len(batch.output.devices()) == DEVICES  # the result stays split by rows
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_one_text_still_runs_on_four_devices(minilm, minilm_4):
    np.testing.assert_allclose(
        minilm_4.encode(["a single sentence"]), minilm.encode(["a single sentence"]), atol=1e-6
    )


def test_devices_argument_errors_say_what_to_pass(minilm_path):
    with pytest.raises(ValueError, match="not both"):
        ferris_jax.load(minilm_path, device=jax.devices()[0], devices="local")
    with pytest.raises(ValueError, match='"local", "all"'):
        ferris_jax.load(minilm_path, devices="everything")
    with pytest.raises(ValueError, match=f"has {DEVICES} cpu device"):
        ferris_jax.load(minilm_path, backend="cpu", devices=DEVICES + 1)


# ---------------------------------------------------------------- search


@pytest.mark.parametrize("precision", ["float32", "int8", "binary"])
def test_an_index_over_four_devices_finds_what_one_device_finds(minilm, minilm_4, precision):
    from ferris_jax.retrieval.index import Index

    corpus = sts_sentences("train")[:1500]
    ids = [f"s{i}" for i in range(len(corpus))]
    metadata = [{"even": i % 2 == 0} for i in range(len(corpus))]
    queries = sts_sentences()[:40]
    results = []
    for enc in (minilm, minilm_4):
        index = Index(enc, precision=precision)
        index.add(corpus, ids, metadata)
        index.remove(ids[:50:3])
        assert index._dense.blocks()[0].shape[0] % DEVICES == 0  # blocks split over devices
        results.append(
            [
                [(h.id, h.score) for h in hits]
                for query_filter in (None, {"even": True})
                for hits in index.search(queries, top_k=7, filter=query_filter)
            ]
        )
    one, four = results
    assert [[i for i, _ in hits] for hits in four] == [[i for i, _ in hits] for hits in one]
    np.testing.assert_allclose(
        [[s for _, s in hits] for hits in four], [[s for _, s in hits] for hits in one], atol=1e-6
    )


@pytest.mark.parametrize("budget", [1 << 30, 1 << 12], ids=["one-program", "block-by-block"])
def test_the_search_kernel_merges_the_devices_top_k_as_one_device_orders_it(budget):
    from ferris_jax.placement import Placement
    from ferris_jax.retrieval.search import search_blocks

    rng = np.random.default_rng(0)
    # Scores rounded to a few values: many ties, which must come out lower row first.
    corpus = rng.integers(-2, 3, (3, 64, 8)).astype(np.float32)
    valid = rng.random((3, 64)) > 0.2
    queries = rng.integers(-2, 3, (5, 8)).astype(np.float32)
    four = Placement.on(jax.devices("cpu")[:DEVICES])
    want = search_blocks(queries, list(corpus), 20, valid=list(valid), score_budget_bytes=budget)
    got = search_blocks(
        four.put(queries),
        [four.put_rows(b) for b in corpus],
        20,
        valid=[four.put_rows(v) for v in valid],
        score_budget_bytes=budget,
        mesh=four.mesh,
    )
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny_pair(tiny_st):
    """The tiny model on one device and on four."""
    path, _ = tiny_st
    return ferris_jax.load(path), ferris_jax.load(path, devices="local")


@pytest.mark.parametrize(
    "pack, mini_batch_size",
    [(False, None), (True, None), (False, 4), (True, 4)],
    ids=["padded", "packed", "cached-padded", "cached-packed"],
)
def test_a_data_parallel_train_step_equals_the_one_device_step(tiny_pair, pack, mini_batch_size):
    """The same global batch (10 examples: rows that do not divide over 4 devices) gives the
    same loss and, through an SGD step of rate 1 (new = old - gradient), every gradient."""
    from helpers.training import sgd_step_gradients, sts_triplets

    def one_program_summing_gradients(step, state, batch):
        if enc.placement.mesh is not None:
            assert "all-reduce" in step.lower(state, batch).compile().as_text()

    results = []
    for enc in tiny_pair:
        results.append(
            sgd_step_gradients(
                enc,
                sts_triplets(10),
                pack=pack,
                mini_batch_size=mini_batch_size,
                check=one_program_summing_gradients,
            )
        )
    (loss_1, grads_1, _), (loss_4, grads_4, state_4) = results
    np.testing.assert_allclose(loss_4, loss_1, rtol=1e-5)
    for g4, g1 in zip(grads_4, grads_1, strict=True):
        np.testing.assert_allclose(g4, g1, rtol=1e-5, atol=1e-5)
    assert jax.tree.leaves(state_4.params)[0].sharding.is_fully_replicated


def test_fit_over_four_devices_follows_the_one_device_run(tiny_st):
    from helpers.training import sts_pairs

    from ferris_jax.train.fit import fit
    from ferris_jax.train.losses import mnrl_loss

    path, _ = tiny_st
    histories, vectors = [], []
    for devices in (None, "local"):
        enc = ferris_jax.load(path, devices=devices)
        history = fit(
            enc, sts_pairs(30), loss=mnrl_loss, epochs=1, batch_size=12, compute_dtype="float32"
        )  # batches of 12, 12 and 6 examples
        histories.append(history.loss)
        vectors.append(enc.encode(sts_sentences()[:20]))
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-5)
    np.testing.assert_allclose(vectors[1], vectors[0], atol=1e-5)
