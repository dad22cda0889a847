"""Training parity with the reference: from the same weights and batch, every loss value and the
gradient of every parameter equal sentence-transformers' losses under torch autograd, and ten
AdamW steps end in torch's parameters (transformers' schedule, clipping, decay exclusions);
tolerance `helpers.training.RTOL` (1e-4 relative, float32)."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from helpers.checkpoints import make_sentence_transformer
from helpers.training import (
    RTOL,
    assert_tensors_match,
    flat,
    our_path,
    st_features,
    st_symmetric_mnrl,
    sts_pairs,
    sts_scored,
    sts_triplets,
    torch_tensors,
    used_parameters,
)

import ferris_jax
from ferris_jax.models import family_for
from ferris_jax.train.data import make_batch
from ferris_jax.train.losses import (
    cosent_loss,
    matryoshka_loss,
    mnrl_loss,
    mnrl_symmetric_loss,
)
from ferris_jax.train.step import (
    adamw,
    cached_loss_and_grad,
    embedder,
    init_state,
    loss_and_grad,
    train_step,
)

torch = pytest.importorskip("torch")
st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
B = 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random BERT sentence-transformers model (mean pooling, no Normalize) saved by
    sentence-transformers, and the same folder loaded by ferris_jax."""
    path, _ = make_sentence_transformer(tmp_path_factory.mktemp("train") / "st", normalize=False)
    return path, ferris_jax.load(path)


def reference(path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu")
    return model.eval()  # no dropout: our model has none


def torch_loss_and_grads(model, loss, examples, labels=None):
    model.zero_grad()
    features = st_features(model, examples)
    value = loss(features, None if labels is None else torch.from_numpy(labels))
    value.backward()
    return value.item(), torch_tensors(model, family_for("bert").weight_map, grads=True)


@functools.cache
def _jitted(enc, loss, mini_batch_size=None):
    embed = embedder(enc, "float32")
    if mini_batch_size is None:
        return jax.jit(lambda p, b: loss_and_grad(embed, loss, p, b))
    return jax.jit(lambda p, b: cached_loss_and_grad(embed, loss, p, b, mini_batch_size))


def our_loss_and_grads(enc, loss, examples, labels=None, mini_batch_size=None, pack=False):
    """Our loss and gradients on the batch padded per column, or packed (`pack=True`; in
    mini-batches of rows for the cached step)."""
    batch = make_batch(enc, examples, labels, pack=pack, mini_batch_size=mini_batch_size)
    value, grads = _jitted(enc, loss, mini_batch_size)(enc.params, batch)
    return float(value), flat(grads)


def cases():
    """(name, our loss, reference loss builder, examples, labels)."""
    pairs, triplets = sts_pairs(B), sts_triplets(B)
    scored, labels = sts_scored(B)
    dims = [32, 16, 8]
    ours_cosent = functools.partial(cosent_loss, scale=20.0)
    return [
        ("mnrl", mnrl_loss, lambda m: st_losses.MultipleNegativesRankingLoss(m), pairs, None),
        (
            "mnrl_hard_negatives",
            mnrl_loss,
            lambda m: st_losses.MultipleNegativesRankingLoss(m),
            triplets,
            None,
        ),
        (
            "mnrl_symmetric",
            mnrl_symmetric_loss,
            st_symmetric_mnrl,
            pairs,
            None,
        ),
        ("cosent", ours_cosent, lambda m: st_losses.CoSENTLoss(m), scored, labels),
        (
            "matryoshka_mnrl",
            matryoshka_loss(mnrl_loss, dims, [1.0, 0.5, 0.25]),
            lambda m: st_losses.MatryoshkaLoss(
                m, st_losses.MultipleNegativesRankingLoss(m), dims, [1.0, 0.5, 0.25]
            ),
            pairs,
            None,
        ),
        (
            "matryoshka_cosent",
            matryoshka_loss(ours_cosent, dims),
            lambda m: st_losses.MatryoshkaLoss(m, st_losses.CoSENTLoss(m), dims),
            scored,
            labels,
        ),
    ]


@pytest.mark.parametrize("case", range(6), ids=[c[0] for c in cases()])
def test_loss_and_every_gradient_match_sentence_transformers(tiny, case):
    """Padded and packed batches alike."""
    path, enc = tiny
    _, ours, make_reference, examples, labels = cases()[case]
    model = reference(path)
    want_value, want_grads = torch_loss_and_grads(model, make_reference(model), examples, labels)
    for pack in (False, True):
        got_value, got_grads = our_loss_and_grads(enc, ours, examples, labels, pack=pack)
        assert got_value == pytest.approx(want_value, rel=RTOL)
        assert_tensors_match(got_grads, want_grads)


def test_cached_mnrl_matches_sentence_transformers_and_the_plain_loss(tiny):
    path, enc = tiny
    examples = sts_triplets(B)
    model = reference(path)
    ref = st_losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=4)
    want_value, want_grads = torch_loss_and_grads(model, ref, examples)
    # 16 rows in mini-batches of 4, and of 6 (two full ones and a remainder of 4); packed,
    # 48 texts in mini-batches of 4 and 6 texts.
    for mini_batch_size in (4, 6):
        for pack in (False, True):
            got_value, got_grads = our_loss_and_grads(
                enc, mnrl_loss, examples, None, mini_batch_size, pack=pack
            )
            assert got_value == pytest.approx(want_value, rel=RTOL)
            assert_tensors_match(got_grads, want_grads)
    plain_value, plain_grads = our_loss_and_grads(enc, mnrl_loss, examples)
    assert got_value == pytest.approx(plain_value, rel=RTOL)
    assert_tensors_match(got_grads, plain_grads)


def test_decay_exclusions_are_transformers_trainers(tiny):
    from transformers import Trainer

    from ferris_jax.train.step import decay_mask

    path, enc = tiny
    model = reference(path)
    decayed = set(Trainer.get_decay_parameter_names(None, model))
    weight_map = family_for("bert").weight_map
    want = {our_path(weight_map, n): n in decayed for n, _ in used_parameters(model, weight_map)}
    got = {p: bool(v) for p, v in flat(decay_mask(enc.params)).items()}
    assert got == want


def test_ten_adamw_steps_end_in_torchs_parameters(tiny):
    """Ten steps of MNRL on STS-B pairs (batches of 8, in the same order), AdamW with 3 warmup
    steps then linear decay over 10, weight decay 0.01 except biases and LayerNorm weights,
    gradient clipping at norm 1: parameters equal torch + sentence-transformers' after each
    run. Learning rate 1e-3, so every parameter moves far beyond the tolerance."""
    from transformers import Trainer, get_linear_schedule_with_warmup

    path, enc = tiny
    batches = [sts_pairs(8, offset=8 * i) for i in range(10)]
    lr, warmup, decay = 1e-3, 3, 0.01

    model = reference(path)
    loss = st_losses.MultipleNegativesRankingLoss(model)
    decayed = set(Trainer.get_decay_parameter_names(None, model))
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if n in decayed], "weight_decay": decay},
        {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    schedule = get_linear_schedule_with_warmup(opt, warmup, len(batches))
    for examples in batches:
        opt.zero_grad()
        loss(st_features(model, examples), None).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
    want = torch_tensors(model, family_for("bert").weight_map, grads=False)

    optimizer = adamw(
        lr, total_steps=len(batches), warmup_steps=warmup, weight_decay=decay, max_grad_norm=1.0
    )
    step = train_step(enc, mnrl_loss, optimizer, compute_dtype="float32")
    state = init_state(enc.params, optimizer)
    for examples in batches:
        state, _ = step(state, make_batch(enc, examples))
    got = flat(state.params)
    start = flat(enc.params)
    moved = {p: np.abs(want[p] - start[p]).max() / np.abs(want[p]).max() for p in want}
    assert min(moved.values()) > 10 * RTOL  # every tensor moved well beyond the tolerance
    assert_tensors_match(got, want)


def test_minilm_mnrl_loss_and_every_gradient_match(minilm, minilm_path):
    """The real model, on STS-B pairs of every score (paraphrase-only batches are so easy for
    MiniLM that the loss, ~4e-4, is below float32's resolution of its terms, ~20)."""
    examples, _ = sts_scored(8)
    model = reference(minilm_path)
    want_value, want_grads = torch_loss_and_grads(
        model, st_losses.MultipleNegativesRankingLoss(model), examples
    )
    for pack in (False, True):
        got_value, got_grads = our_loss_and_grads(minilm, mnrl_loss, examples, pack=pack)
        assert got_value == pytest.approx(want_value, rel=RTOL)
        assert_tensors_match(got_grads, want_grads)
