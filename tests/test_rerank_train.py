"""Training rerankers against torch: three AdamW steps of binary cross-entropy on STS-B pairs
from the same random BERT cross-encoder give torch's loss at every step (1e-4 relative) and
torch's parameters (`helpers.training.RTOL`); `fit_reranker` trains and its model saves."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers.checkpoints import make_bert_cross_encoder_checkpoint
from helpers.data import sts_benchmark
from helpers.training import RTOL, assert_tensors_match, flat

import ferris_jax
from ferris_jax.models import family_for
from ferris_jax.models.classifier import weight_map as classifier_weight_map
from ferris_jax.train.rerank import LOSSES, fit_reranker, init, pair_batch, rerank_step
from ferris_jax.train.step import adamw, decay_mask

torch = pytest.importorskip("torch")
B, STEPS = 8, 3
LR, DECAY = 2e-5, 0.01


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory):
    # initializer_range 0.3: gradients large enough that clipping at norm 1 acts.
    path = tmp_path_factory.mktemp("rerank-train") / "bert"
    return make_bert_cross_encoder_checkpoint(path, seed=2, initializer_range=0.3)


def sts_labeled(n: int, offset: int = 0) -> tuple[list[tuple[str, str]], np.ndarray]:
    rows = sts_benchmark("train")[offset : offset + n]
    return [(p.sentence1, p.sentence2) for p in rows], np.array(
        [p.score / 5 for p in rows], np.float32
    )


def short_sts(reranker, n: int) -> tuple[list[tuple[str, str]], np.ndarray]:
    """n labeled STS-B train pairs of at most 64 tokens: batches of them have one bucket shape
    (one compilation)."""
    pairs, labels = sts_labeled(3 * n)
    short = reranker.tokenizer.encode_pairs(*zip(*pairs, strict=True)).lengths <= 64
    pairs, labels = [p for p, s in zip(pairs, short, strict=True) if s][:n], labels[short][:n]
    assert len(pairs) == n
    return pairs, labels


def torch_params(model, weight_map) -> dict[tuple, np.ndarray]:
    """Every parameter of a transformers model under our paths, in our layout."""
    out = {}
    for name, p in model.named_parameters():
        path, transform = weight_map.lookup(name)
        a = p.detach().numpy()
        out[path] = transform(a) if transform else a
    return out


def test_three_bce_steps_match_torch(bert_path):
    """The loop sentence-transformers' CrossEncoder trainer runs for BinaryCrossEntropyLoss with
    default arguments (BCEWithLogitsLoss of logits.view(-1); torch AdamW, betas (0.9, 0.999),
    eps 1e-8; weight decay 0.01 except biases and LayerNorm weights; clipping at norm 1), at a
    constant learning rate 2e-5 and without dropout (eval mode)."""
    from transformers import BertForSequenceClassification, Trainer

    reranker = ferris_jax.load_reranker(bert_path)
    pairs, labels = short_sts(reranker, B * STEPS)
    batches = [(pairs[i : i + B], labels[i : i + B]) for i in range(0, B * STEPS, B)]
    tokens = [pair_batch(reranker, pairs, bucket=True) for pairs, _ in batches]
    assert len({t.input_ids.shape for t in tokens}) == 1  # one compilation

    model = BertForSequenceClassification.from_pretrained(str(bert_path))
    model.eval()  # no dropout; gradients flow as in train mode
    weight_map = classifier_weight_map("bert", family_for("bert").weight_map)
    decayed = set(Trainer.get_decay_parameter_names(None, model))
    assert {weight_map.lookup(n)[0]: n in decayed for n, _ in model.named_parameters()} == {
        p: bool(v) for p, v in flat(decay_mask(reranker.params)).items()
    }
    named = list(model.named_parameters())
    opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if n in decayed], "weight_decay": DECAY},
            {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0},
        ],
        lr=LR,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    bce = torch.nn.BCEWithLogitsLoss()
    want_losses = []
    for tok, (_, labels) in zip(tokens, batches, strict=True):
        opt.zero_grad()
        logits = model(
            input_ids=torch.from_numpy(np.asarray(tok.input_ids)).long(),
            attention_mask=torch.from_numpy(np.asarray(tok.attention_mask)).long(),
            token_type_ids=torch.from_numpy(np.asarray(tok.token_type_ids)).long(),
        ).logits.view(-1)
        value = bce(logits, torch.from_numpy(labels))
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        want_losses.append(value.item())
    want = torch_params(model, weight_map)

    optimizer = adamw(LR, weight_decay=DECAY, max_grad_norm=1.0)
    step = rerank_step(reranker, "bce", optimizer)
    params, opt_state = init(reranker, optimizer)
    got_losses = []
    for tok, (_, labels) in zip(tokens, batches, strict=True):
        params, opt_state, value = step(params, opt_state, tok, labels)
        got_losses.append(float(value))
    np.testing.assert_allclose(got_losses, want_losses, rtol=RTOL)
    got, start = flat(params), flat(reranker.params)
    assert_tensors_match(got, want)
    # The updates themselves (~3 * 2e-5, far below the parameters' scale): each tensor's
    # within 1% of torch's largest update of that tensor. Not the attention key biases: their
    # gradient is zero in exact arithmetic, so Adam normalizes float32 round-off into updates
    # of either sign on both sides (see `assert_tensors_match`).
    moved = {p: want[p] - start[p] for p in want}
    assert all(np.abs(d).max() > 0 for d in moved.values())
    bad = [
        p
        for p in want
        if p[-3:] != ("attention", "key", "bias")
        and np.abs((got[p] - start[p]) - moved[p]).max() > 1e-2 * np.abs(moved[p]).max()
    ]
    assert not bad, bad


def test_listwise_losses_see_groups(bert_path):
    """Groups of pairs with labels [n, m]: the step's loss is the loss of the logits reshaped
    to [n, m] (fit_reranker's first loss is at the loaded parameters; its batch is padded
    further than this one: float32 round-off only, rel=1e-5)."""
    reranker = ferris_jax.load_reranker(bert_path)
    pairs, scores = sts_labeled(6)
    labels = scores.reshape(2, 3)
    batch = pair_batch(reranker, pairs)
    logits = jax.jit(reranker.apply)(
        reranker.params, batch.input_ids, batch.attention_mask, batch.token_type_ids
    )
    groups = [pairs[:3], pairs[3:]]
    loaded = reranker.params
    for name in ("lambda", "mnrl"):
        reranker.params = loaded  # fit_reranker trains in place
        want = float(LOSSES[name](logits, labels))
        losses = fit_reranker(reranker, groups, labels, loss=name, batch_size=2, shuffle=False)
        assert losses[0] == pytest.approx(want, rel=1e-5), name


def test_fit_reranker_checks_its_examples(bert_path):
    reranker = ferris_jax.load_reranker(bert_path)
    pairs, labels = sts_labeled(4)
    with pytest.raises(ValueError, match="4 examples but 3 labels"):
        fit_reranker(reranker, pairs, labels[:3])
    with pytest.raises(ValueError, match="loss 'hinge' is not one of"):
        fit_reranker(reranker, pairs, labels, loss="hinge")


def test_fit_reranker_learns_and_saves(bert_path, tmp_path):
    """Three epochs of BCE lower the loss on the training pairs; the saved model scores as the
    trained reranker in sentence-transformers' CrossEncoder (rtol=atol=1e-5)."""
    from sentence_transformers import CrossEncoder

    reranker = ferris_jax.load_reranker(bert_path)
    pairs, labels = short_sts(reranker, 32)
    before = reranker.params
    losses = fit_reranker(reranker, pairs, labels, epochs=3, batch_size=16, learning_rate=1e-3)
    assert len(losses) == 6
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    changed = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), reranker.params, before)
    assert min(jax.tree.leaves(changed)) > 0
    saved = reranker.save_pretrained(tmp_path / "trained")
    np.testing.assert_allclose(
        CrossEncoder(str(saved), device="cpu").predict(pairs),
        reranker.predict(pairs),
        rtol=1e-5,
        atol=1e-5,
    )
