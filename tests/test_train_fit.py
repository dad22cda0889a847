"""The `fit` loop: exact resume from a checkpoint, a trained model that sentence-transformers loads
back with our vectors, evaluation and callbacks, gradient accumulation, and bad input."""

from __future__ import annotations

import functools
import json

import jax
import numpy as np
import pytest
from helpers.assertions import assert_embeddings_match
from helpers.checkpoints import make_sentence_transformer
from helpers.data import sts_sentences
from helpers.training import sts_pairs, sts_scored

import ferris_jax
from ferris_jax.errors import CheckpointError
from ferris_jax.train import TrainDataset, make_batch
from ferris_jax.train.fit import MANIFEST_FILE, fit, latest_checkpoint
from ferris_jax.train.losses import cosent_loss, matryoshka_loss, mnrl_loss

# One run's settings (the same program compiles once per session through the cache).
RUN = dict(batch_size=8, learning_rate=1e-3, warmup=0.25, weight_decay=0.01, seed=3)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path, _ = make_sentence_transformer(tmp_path_factory.mktemp("fit") / "st", normalize=True)
    return path


def leaves(params) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(params)]


class Interrupt(Exception):
    pass


def test_a_resumed_run_ends_bit_equal_to_an_uninterrupted_one(model_dir, tmp_path):
    pairs = sts_pairs(40)  # 5 batches an epoch, 2 epochs: 10 steps
    whole = ferris_jax.load(model_dir)
    want = fit(whole, pairs, epochs=2, **RUN)

    def stop_at_step_7(step, metrics):
        if step == 7:
            raise Interrupt

    run = functools.partial(fit, epochs=2, checkpoint_dir=tmp_path, checkpoint_steps=3, **RUN)
    with pytest.raises(Interrupt):
        run(ferris_jax.load(model_dir), pairs, callback=stop_at_step_7)
    assert latest_checkpoint(tmp_path).name == "checkpoint-6"  # epoch 1, second batch
    resumed = ferris_jax.load(model_dir)
    got = run(resumed, pairs)
    assert got == want  # losses, learning rates, gradient norms: the same floats
    for a, b in zip(leaves(resumed.params), leaves(whole.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-10"]  # older ones removed

    # A checkpoint of other settings is refused, naming the file.
    with pytest.raises(CheckpointError, match=MANIFEST_FILE + ".*seed"):
        fit(ferris_jax.load(model_dir), pairs, checkpoint_dir=tmp_path, **{**RUN, "seed": 4})


def test_sentence_transformers_loads_the_trained_model_with_our_vectors(model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    enc = ferris_jax.load(model_dir)
    texts = sts_sentences("dev")[:32]
    before = enc.encode(texts)
    fit(enc, sts_pairs(24), **RUN)
    after = enc.encode(texts)
    assert np.abs(after - before).max() > 1e-2  # training changed the vectors
    enc.save(tmp_path / "trained")
    st = SentenceTransformer(str(tmp_path / "trained"), device="cpu")
    assert_embeddings_match(after, st.encode(texts, convert_to_numpy=True))


def test_history_evaluator_and_callback(model_dir):
    enc = ferris_jax.load(model_dir)
    pairs, labels = sts_scored(48)
    examples = [(a, b, float(y)) for (a, b), y in zip(pairs, labels, strict=True)]
    evaluations, metrics = [], []

    def evaluator(encoder):
        # The encoder holds the parameters of the step just taken.
        a = encoder.encode([e[0] for e in examples[:8]])
        b = encoder.encode([e[1] for e in examples[:8]])
        evaluations.append(float((a * b).sum(1).mean()))
        return {"mean_cosine": evaluations[-1]}

    history = fit(
        enc,
        examples,
        loss=cosent_loss,
        epochs=1,
        evaluator=evaluator,
        evaluation_steps=2,
        callback=lambda step, m: metrics.append((step, m)),
        **RUN,
    )
    assert len(history.loss) == len(history.learning_rate) == 6 and np.isfinite(history.loss).all()
    # 6 steps, warmup 0.25 -> 2 steps: 0, lr/2, then down linearly to lr/4 at the last step.
    np.testing.assert_allclose(
        history.learning_rate, [0, 5e-4, 1e-3, 7.5e-4, 5e-4, 2.5e-4], rtol=1e-6
    )
    assert [e["step"] for e in history.evaluations] == [2, 4, 6]
    assert [e["mean_cosine"] for e in history.evaluations] == evaluations
    assert [s for s, _ in metrics] == [1, 2, 3, 4, 5, 6]
    assert metrics[1][1]["mean_cosine"] == evaluations[0]
    assert {"loss", "learning_rate", "grad_norm", "epoch"} <= set(metrics[0][1])


def test_accumulating_a_batch_twice_is_one_step_on_it(model_dir):
    """Gradients are averaged over `accumulation_steps` batches before one update."""
    batch = make_batch(ferris_jax.load(model_dir), sts_pairs(8))
    once, twice = ferris_jax.load(model_dir), ferris_jax.load(model_dir)
    settings = dict(learning_rate=1e-3, steps=1)
    fit(once, [batch], **settings)
    history = fit(twice, [batch, batch], accumulation_steps=2, **settings)
    assert len(history.loss) == 2
    for a, b in zip(leaves(once.params), leaves(twice.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(
        np.abs(a - b).max() > 0
        for a, b in zip(leaves(once.params), leaves(ferris_jax.load(model_dir).params), strict=True)
    )


def test_bad_training_data_is_named(model_dir):
    enc = ferris_jax.load(model_dir)
    with pytest.raises(ValueError, match=r"train_data: rows\[1\] has 3 items"):
        fit(enc, [("a", "b"), ("a", "b", "c")])
    with pytest.raises(TypeError, match=r"train_data: rows\[0\] is str"):
        fit(enc, ["just a text"])
    with pytest.raises(TypeError, match=r"train_data: rows\[1\]\[0\] is int"):
        fit(enc, [("a", "b"), (3, "b")])
    with pytest.raises(ValueError, match="one text column"):
        fit(enc, [("a",), ("b",)])
    with pytest.raises(ValueError, match="steps="):
        fit(enc, iter([make_batch(enc, [("a", "b")])]))
    with pytest.raises(ValueError, match="accumulation_steps"):
        fit(enc, [("a", "b")], accumulation_steps=0)
    with pytest.raises(ValueError, match="batch_sampler must be one of"):
        fit(enc, [("a", "b")], batch_sampler="group_by_label")


def test_in_batch_negative_losses_sample_without_duplicates(model_dir, tmp_path):
    """MNRL-style losses get `NoDuplicatesBatchSampler` by default (as sentence-transformers'
    trainer with `batch_sampler=NO_DUPLICATES`), other losses a plain seeded shuffle; a
    `TrainDataset`, a JSON Lines file and a list of the same examples train alike."""
    pairs = sts_pairs(16)
    rows = pairs + pairs[:8]  # repeated texts: a plain shuffle puts twins in one batch
    settings = dict(steps=3, **RUN)

    def losses(data, **kwargs):
        return fit(ferris_jax.load(model_dir), data, **settings, **kwargs).loss

    default = losses(rows)
    assert default == losses(rows, batch_sampler="no_duplicates")
    assert default != losses(rows, batch_sampler="batch_sampler")
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"q": a, "d": b}) + "\n" for a, b in rows), "utf-8")
    assert losses(str(jsonl)) == default
    assert losses(TrainDataset.from_list(rows)) == default
    assert matryoshka_loss(mnrl_loss, [16, 8]).in_batch_negatives
    assert not getattr(cosent_loss, "in_batch_negatives", False)


def test_bfloat16_compute_keeps_float32_master_weights(model_dir):
    """The GPU default, run on the CPU: the forward and backward passes in bfloat16, the
    parameters and optimizer state in float32; the loss within bfloat16's precision (2^-8
    relative per operation, 3e-2 over the model) of the float32 one."""
    import jax.numpy as jnp

    from ferris_jax.train.losses import mnrl_loss
    from ferris_jax.train.step import adamw, init_state, train_step

    enc = ferris_jax.load(model_dir)
    batch = make_batch(enc, sts_pairs(8))
    optimizer = adamw(1e-3)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        state = init_state(enc.params, optimizer)
        state, metrics = train_step(enc, mnrl_loss, optimizer, compute_dtype=dtype)(state, batch)
        losses[dtype] = float(metrics["loss"])
        assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype("float32")}
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=3e-2)
    assert losses["bfloat16"] != losses["float32"]  # the passes did run in bfloat16


def test_bfloat16_embedding_gradients_are_summed_in_float32(model_dir):
    """Under bfloat16 compute the embedding tables stay float32 and only their looked-up rows
    are cast, so the lookups' backward (scatter-adds into the tables, where padding and
    position ids repeat thousands of times in a batch) sums in float32."""
    import jax.numpy as jnp

    from ferris_jax.train.step import embedder, loss_and_grad

    enc = ferris_jax.load(model_dir)
    batch = make_batch(enc, sts_pairs(8), pack=False)
    embed = embedder(enc, "bfloat16")
    jaxpr = jax.make_jaxpr(lambda p: loss_and_grad(embed, mnrl_loss, p, batch))(enc.params)

    def scatter_dtypes(jaxpr) -> list:
        found = []
        for eqn in jaxpr.eqns:
            if eqn.primitive.name.startswith("scatter"):
                found.append(eqn.outvars[0].aval.dtype)
            for param in eqn.params.values():
                inner = getattr(param, "jaxpr", param)
                if hasattr(inner, "eqns"):
                    found += scatter_dtypes(inner)
        return found

    dtypes = scatter_dtypes(jaxpr.jaxpr)
    assert dtypes and set(dtypes) == {jnp.dtype("float32")}, dtypes


def test_the_step_compiles_once_per_batch_shape(model_dir):
    """A fresh state and the step's own outputs share one compiled program."""
    from ferris_jax.train.step import adamw, init_state, train_step

    enc = ferris_jax.load(model_dir)
    batch = make_batch(enc, sts_pairs(8))
    optimizer = adamw(1e-3)
    step = train_step(enc, mnrl_loss, optimizer)
    state = init_state(enc.params, optimizer)
    for _ in range(3):
        state, _ = step(state, batch)
    assert step._cache_size() == 1


def test_checkpoint_rotation_removes_only_the_checkpoints_fit_wrote(model_dir, tmp_path):
    """A user's `checkpoint-best/` (a copy of one of ours) and the Hugging Face trainer's
    `checkpoint-999/` in the same folder are neither resumed from nor removed."""
    import shutil

    pairs = sts_pairs(32)  # 4 batches
    run = functools.partial(fit, checkpoint_dir=tmp_path, checkpoint_steps=1, **RUN)
    run(ferris_jax.load(model_dir), pairs, steps=2)
    shutil.copytree(tmp_path / "checkpoint-2", tmp_path / "checkpoint-best")
    (tmp_path / "checkpoint-999").mkdir()
    hf_state = {"global_step": 999, "log_history": []}
    (tmp_path / "checkpoint-999" / MANIFEST_FILE).write_text(json.dumps(hf_state))
    (tmp_path / "checkpoint-notes.txt").write_text("mine")
    history = run(ferris_jax.load(model_dir), pairs, steps=4)
    assert len(history.loss) == 4  # resumed from checkpoint-2, not from checkpoint-999
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-4",
        "checkpoint-999",
        "checkpoint-best",
        "checkpoint-notes.txt",
    ]
    assert json.loads((tmp_path / "checkpoint-999" / MANIFEST_FILE).read_text()) == hf_state
    assert latest_checkpoint(tmp_path).name == "checkpoint-4"


def test_a_bad_checkpoint_dir_is_refused_before_training(model_dir, tmp_path):
    enc = ferris_jax.load(model_dir)
    steps = []
    run = functools.partial(fit, enc, sts_pairs(16), callback=lambda s, m: steps.append(s), **RUN)
    a_file = tmp_path / "runs"
    a_file.write_text("notes")
    with pytest.raises(ValueError, match=f"checkpoint_dir {a_file} is a file"):
        run(checkpoint_dir=a_file)
    theirs = tmp_path / "out" / "checkpoint-2"  # where this run would save at its end
    theirs.mkdir(parents=True)
    (theirs / "model.bin").write_text("theirs")
    with pytest.raises(ValueError, match="holds checkpoint-2, which fit did not write"):
        run(checkpoint_dir=tmp_path / "out")
    assert steps == [] and a_file.read_text() == "notes"
    assert (theirs / "model.bin").read_text() == "theirs"
