"""The reranker losses and evaluators against sentence-transformers' own (cross_encoder.losses,
cross_encoder.evaluation) and torch autograd.

Losses: each reference loss module runs its own `forward` on a stand-in CrossEncoder whose
scores are a seeded random torch tensor (`helpers.rerank.table_cross_encoder`), so its pairing,
padding of unequal lists and in-batch sampling are the reference's. Ours gets the same scores
as arrays; values and gradients with respect to the scores agree within `RTOL` (1e-4, float32:
loss relative, gradients relative to the largest reference gradient).

Evaluators: ours and sentence-transformers' score the same STS-B pairs with the same
sentence-transformers CrossEncoder (a tiny random BERT), so only the metric arithmetic differs;
every metric agrees within 1e-6 absolute.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.rerank import table_cross_encoder
from helpers.training import RTOL

from ferris_jax.train.rerank_evaluators import (
    CrossEncoderCorrelationEvaluator,
    CrossEncoderRerankingEvaluator,
    reranking_metrics,
)
from ferris_jax.train.rerank_losses import (
    binary_cross_entropy_loss,
    cross_entropy_loss,
    in_batch_negatives,
    lambda_loss,
    list_net_loss,
    margin_mse_loss,
    mse_loss,
    multiple_negatives_ranking_loss,
    rank_net_loss,
)

torch = pytest.importorskip("torch")
st_losses = pytest.importorskip("sentence_transformers.cross_encoder.losses")
ATOL_METRICS = 1e-6


def assert_same(got, want):
    """(value, gradient) pairs equal within RTOL."""
    assert got[0] == pytest.approx(want[0], rel=RTOL)
    np.testing.assert_allclose(got[1], want[1], rtol=RTOL, atol=RTOL * np.abs(want[1]).max())


def reference(make_loss, pairs, table, inputs, labels, num_labels=1):
    """The reference loss of `inputs` scored by `table` (numpy), and d loss / d table."""
    scores = torch.tensor(table, requires_grad=True)
    model = table_cross_encoder(pairs, scores, num_labels)
    value = make_loss(model)(inputs, labels)
    value.backward()
    return value.item(), scores.grad.numpy(), model


def ours(loss, logits, *args, **kwargs):
    value, grad = jax.value_and_grad(lambda x: loss(x, *args, **kwargs))(jnp.asarray(logits))
    return float(value), np.asarray(grad)


# ---------------------------------------------------------------- pointwise
N = 16


def pointwise(seed: int, classes: int = 1):
    rng = np.random.default_rng(seed)
    queries, docs = [f"q{i}" for i in range(N)], [f"d{i}" for i in range(N)]
    shape = (N,) if classes == 1 else (N, classes)
    return rng, list(zip(queries, docs, strict=True)), [queries, docs], rng.normal(0, 3, shape)


@pytest.mark.parametrize("pos_weight", [None, 4.0])
@pytest.mark.parametrize("soft", [False, True])
def test_binary_cross_entropy(pos_weight, soft):
    rng, pairs, inputs, table = pointwise(0)
    table = table.astype(np.float32)
    labels = rng.uniform(0, 1, N) if soft else rng.integers(0, 2, N)  # hard labels: ties
    pw = None if pos_weight is None else torch.tensor(pos_weight)
    want = reference(
        lambda m: st_losses.BinaryCrossEntropyLoss(m, pos_weight=pw),
        pairs,
        table,
        inputs,
        torch.tensor(labels),
    )
    got = ours(binary_cross_entropy_loss, table, labels, pos_weight=pos_weight)
    assert_same(got, want[:2])
    # A [n, 1] model output is taken as [n]; an activation applies first (sigmoid here).
    want = reference(
        lambda m: st_losses.BinaryCrossEntropyLoss(m, activation_fn=torch.nn.Sigmoid()),
        pairs,
        table,
        inputs,
        torch.tensor(labels),
    )
    got = ours(binary_cross_entropy_loss, table[:, None], labels, activation_fn=jax.nn.sigmoid)
    assert_same((got[0], got[1][:, 0]), want[:2])


@pytest.mark.parametrize("labels_kind", ["classes", "column", "ignored", "probabilities"])
def test_cross_entropy(labels_kind):
    rng, pairs, inputs, table = pointwise(1, classes=3)
    table = table.astype(np.float32)
    labels = rng.integers(0, 3, N)
    if labels_kind == "column":
        labels = labels[:, None]
    elif labels_kind == "ignored":
        labels[[2, 5]] = -100  # torch's ignore_index
    elif labels_kind == "probabilities":
        labels = rng.dirichlet(np.ones(3), N).astype(np.float32)
    want = reference(st_losses.CrossEntropyLoss, pairs, table, inputs, torch.tensor(labels), 3)
    assert_same(ours(cross_entropy_loss, table, labels), want[:2])


def test_mse():
    rng, pairs, inputs, table = pointwise(2)
    table = table.astype(np.float32)
    labels = rng.uniform(0, 1, N).astype(np.float32)
    for act, ref_act in ((None, torch.nn.Identity()), (jax.nn.sigmoid, torch.nn.Sigmoid())):
        want = reference(
            lambda m, a=ref_act: st_losses.MSELoss(m, activation_fn=a),
            pairs,
            table,
            inputs,
            torch.tensor(labels),
        )
        assert_same(ours(mse_loss, table, labels, activation_fn=act), want[:2])


# ---------------------------------------------------------------- positive in column 0
B = 6


def candidates_table(hard: int, seed: int):
    """B anchors, each scored against every document of the batch (positives, then each
    hard-negative column): pairs, the reference's input columns, and a score table."""
    columns = [[f"pos{j}" for j in range(B)]] + [
        [f"hard{c}_{j}" for j in range(B)] for c in range(hard)
    ]
    anchors = [f"a{i}" for i in range(B)]
    pairs = [(a, d) for a in anchors for col in columns for d in col]
    table = np.random.default_rng(seed).normal(0, 2, len(pairs)).astype(np.float32)
    return pairs, [anchors, *columns], table


def scored(calls):
    """Our logits matrix `[B, columns]` from the rows the reference scored, call by call."""
    return lambda t: t[jnp.asarray(calls)].T  # each call scores one column for every anchor


@pytest.mark.parametrize(
    ("hard", "num_negatives"), [(0, 4), (1, 4), (2, 4), (0, None), (2, None), (1, 100)]
)
def test_multiple_negatives_ranking(hard, num_negatives):
    """Random in-batch negatives (4 of the 5 or more there are), all of them (None, or more
    than there are), with 0-2 hard-negative columns; default and other scale and activation."""
    pairs, inputs, table = candidates_table(hard, seed=hard)
    for kwargs, ref_kwargs in (
        ({}, {}),
        (dict(scale=3.0, activation_fn=None), dict(scale=3.0, activation_fn=None)),
    ):
        torch.manual_seed(0)  # the reference's in-batch sampling (torch.multinomial)
        value, grad, model = reference(
            lambda m, kw=ref_kwargs: st_losses.MultipleNegativesRankingLoss(
                m, num_negatives=num_negatives, **kw
            ),
            pairs,
            table,
            inputs,
            None,
        )
        assert len(model.calls) == 1 + min(num_negatives or 10**9, (B - 1) * (1 + hard)) + hard
        logits = scored(model.calls)
        got = ours(
            lambda t, logits=logits, kw=kwargs: multiple_negatives_ranking_loss(logits(t), **kw),
            table,
        )
        assert_same(got, (value, grad))


@pytest.mark.parametrize("hard", [0, 2])
def test_in_batch_negatives_choose_as_sentence_transformers(hard):
    """All candidates: the reference's very choice. A sample of them: distinct candidates of
    other rows, every one drawn over many keys; any choice gives the loss of its pairs."""
    _, inputs, _ = candidates_table(hard, seed=0)
    anchors, columns = inputs[0], inputs[1:]
    flat = [d for col in columns for d in col]
    loss = st_losses.MultipleNegativesRankingLoss(
        table_cross_encoder([("a", "b")], None), num_negatives=None
    )
    want = [list(col) for col in loss.get_in_batch_negatives(anchors, columns)]  # [k][B]
    for n in (None, 10**6):
        got = np.asarray(in_batch_negatives(0, B, num_columns=1 + hard, num_negatives=n))
        assert [[flat[i] for i in col] for col in got.T] == want

    seen = np.zeros((B, B * (1 + hard)), int)
    for seed in range(40):
        got = np.asarray(in_batch_negatives(seed, B, num_columns=1 + hard, num_negatives=3))
        assert got.shape == (B, 3) and got.dtype == np.int32
        for i, row in enumerate(got):
            assert len(set(row.tolist())) == 3
            assert all(flat[j][-1] != str(i) for j in row)  # never a document of its own row
            seen[i, row] += 1
    own = np.tile(np.eye(B, dtype=bool), (1, 1 + hard))
    assert (seen[~own] > 0).all() and (seen[own] == 0).all()
    with pytest.raises(ValueError, match="num_negatives"):
        in_batch_negatives(0, B, num_negatives=-1)


@pytest.mark.parametrize(
    ("negatives", "labels_kind"), [(1, "flat"), (1, "scores"), (3, "margins"), (3, "scores")]
)
def test_margin_mse(negatives, labels_kind):
    """Gold margins [n] (one negative) or [n, k], or gold scores [n, 1 + k]."""
    pairs, inputs, table = candidates_table(negatives, seed=3)
    inputs = [inputs[0], *inputs[1:]]  # anchor, positive, negatives
    rng = np.random.default_rng(4)
    width = negatives + (labels_kind == "scores")
    labels = rng.normal(0, 1, (B, width) if labels_kind != "flat" else (B,)).astype(np.float32)
    value, grad, model = reference(
        st_losses.MarginMSELoss, pairs, table, inputs, torch.tensor(labels)
    )
    logits = scored(model.calls)
    assert_same(ours(lambda t: margin_mse_loss(logits(t), labels), table), (value, grad))


# ---------------------------------------------------------------- listwise
SCHEMES = {
    "none": lambda: st_losses.NoWeightingScheme(),
    "ndcg_loss1": lambda: st_losses.NDCGLoss1Scheme(),
    "ndcg_loss2": lambda: st_losses.NDCGLoss2Scheme(),
    "lambda_rank": lambda: st_losses.LambdaRankScheme(),
    "ndcg_loss2pp": lambda: st_losses.NDCGLoss2PPScheme(),
}


def ranked_lists(lengths, seed: int, tied_scores: bool):
    """Queries with `lengths` documents each, graded labels 0-3 (many ties), scores rounded to
    produce ties when `tied_scores`: the reference's inputs, and ours padded to `[n, m]`."""
    rng = np.random.default_rng(seed)
    n, m = len(lengths), max(lengths)
    docs = [[f"q{i}d{j}" for j in range(k)] for i, k in enumerate(lengths)]
    pairs = [(f"q{i}", d) for i, ds in enumerate(docs) for d in ds]
    table = rng.normal(0, 2, len(pairs))
    table = (np.round(table) if tied_scores else table).astype(np.float32)
    labels = [rng.integers(0, 4, k).astype(np.float32) for k in lengths]
    mask = np.arange(m)[None, :] < np.array(lengths)[:, None]
    rows = np.full((n, m), len(pairs))  # padded places read the garbage value appended below
    rows[mask] = np.arange(len(pairs))
    padded_labels = np.full((n, m), 7.0, np.float32)  # garbage, masked out
    padded_labels[mask] = np.concatenate(labels)
    inputs = [[f"q{i}" for i in range(n)], docs]
    return pairs, table, inputs, [torch.tensor(y) for y in labels], rows, padded_labels, mask


def listwise(loss, lists, **kwargs):
    """Our loss of the padded lists, and its gradient with respect to the table of scores."""
    _, table, _, _, rows, labels, mask = lists

    def f(t):
        logits = jnp.concatenate([t, jnp.full((1,), 0.25, t.dtype)])[jnp.asarray(rows)]
        return loss(logits, labels, mask, **kwargs)

    return ours(f, table)


# Up to 16 documents a query, scores tied: torch's sort keeps ties in order there, as ours does.
# Longer lists: no tied scores (past 16, torch.sort orders ties as its unstable sort falls).
LISTS = {
    "ties": dict(lengths=[1, 3, 7, 16, 12], tied_scores=True),
    "long": dict(lengths=[24, 5, 19], tied_scores=False),
}


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("lists", list(LISTS))
def test_lambda_loss_every_scheme(scheme, k, lists):
    data = ranked_lists(**LISTS[lists], seed=len(scheme))
    pairs, table, inputs, labels, *_ = data
    make = functools.partial(st_losses.LambdaLoss, weighting_scheme=SCHEMES[scheme](), k=k)
    want = reference(make, pairs, table, inputs, labels)
    assert_same(listwise(lambda_loss, data, weighting_scheme=scheme, k=k), want[:2])


def test_lambda_loss_options():
    """sigma, mu, natural log, eps, an activation; the default arguments; RankNet and ListNet."""
    data = ranked_lists(**LISTS["ties"], seed=9)
    pairs, table, inputs, labels, *_ = data
    cases = [
        ({}, st_losses.LambdaLoss),
        (
            dict(weighting_scheme="ndcg_loss2pp", mu=3.0, sigma=2.5, reduction_log="natural"),
            functools.partial(
                st_losses.LambdaLoss,
                weighting_scheme=st_losses.NDCGLoss2PPScheme(mu=3.0),
                sigma=2.5,
                reduction_log="natural",
            ),
        ),
        (
            dict(weighting_scheme=None, eps=1.0, activation_fn=jax.nn.sigmoid),
            functools.partial(
                st_losses.LambdaLoss,
                weighting_scheme=None,
                eps=1.0,
                activation_fn=torch.nn.Sigmoid(),
            ),
        ),
    ]
    for kwargs, make in cases:
        assert_same(listwise(lambda_loss, data, **kwargs), reference(make, *data[:4])[:2])
    for k in (None, 2):
        want = reference(functools.partial(st_losses.RankNetLoss, k=k), *data[:4])
        assert_same(listwise(rank_net_loss, data, k=k), want[:2])
    for lists in LISTS:
        data = ranked_lists(**LISTS[lists], seed=10)
        want = reference(st_losses.ListNetLoss, *data[:4])
        assert_same(listwise(list_net_loss, data), want[:2])
    del pairs, table, inputs, labels


def test_padding_changes_nothing_and_gets_no_gradient():
    """Any values in padded places give the same loss and no gradient there; full lists need no
    mask. (All through `value_and_grad`: its eager ops are compiled already, a forward is not.)"""
    *_, labels, mask = ranked_lists(**LISTS["ties"], seed=11)
    logits = jnp.asarray(np.random.default_rng(0).normal(0, 1, mask.shape).astype(np.float32))
    other_logits, other_labels = jnp.where(mask, logits, 1e3), jnp.where(mask, labels, -5.0)
    full = np.ones_like(mask)
    for loss in (lambda_loss, list_net_loss):
        value_and_grad = jax.value_and_grad(loss)
        value, grad = value_and_grad(logits, labels, mask)
        assert float(value_and_grad(other_logits, other_labels, mask)[0]) == float(value)
        assert (np.asarray(grad)[~mask] == 0).all()
        no_mask = value_and_grad(logits, labels)
        assert float(no_mask[0]) == float(value_and_grad(logits, labels, full)[0])
    # Under jit (as a train step runs it), options static, the mask an array.
    jitted = jax.jit(functools.partial(lambda_loss, weighting_scheme="ndcg_loss2", k=4))
    eager = jax.value_and_grad(lambda_loss)(
        logits, labels, mask, weighting_scheme="ndcg_loss2", k=4
    )
    assert float(jitted(logits, labels, mask)) == pytest.approx(float(eager[0]), rel=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="weighting_scheme must be one of"):
        lambda_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), weighting_scheme="ndcg")
    with pytest.raises(ValueError, match="one shape"):
        lambda_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="reduction_log"):
        lambda_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), reduction_log="ten")
    with pytest.raises(ValueError, match="n labels"):
        binary_cross_entropy_loss(jnp.zeros(3), jnp.zeros(4))
    with pytest.raises(ValueError, match="class probabilities"):
        cross_entropy_loss(jnp.zeros((3, 2)), jnp.zeros(3))
    with pytest.raises(ValueError, match="margins"):
        margin_mse_loss(jnp.zeros((3, 3)), jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"\[n, 1 \+ k\]"):
        multiple_negatives_ranking_loss(jnp.zeros(3))


# ---------------------------------------------------------------- evaluators
@pytest.fixture(scope="module")
def st_reranker(tmp_path_factory):
    """sentence-transformers' CrossEncoder of a tiny random BERT with one label."""
    from helpers.checkpoints import make_bert_cross_encoder_checkpoint
    from helpers.reference import one_torch_thread
    from sentence_transformers.cross_encoder import CrossEncoder

    path = make_bert_cross_encoder_checkpoint(tmp_path_factory.mktemp("ce") / "tiny")
    with one_torch_thread():
        yield CrossEncoder(str(path), device="cpu")


class Predictions:
    """A CrossEncoder whose `predict` (all ours calls) keeps what it returned; the reference
    evaluators also write to its model card."""

    def __init__(self, model):
        self.model = model
        self.outputs: list[tuple[list, np.ndarray]] = []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict(self, pairs, batch_size=32, **kwargs):
        scores = self.model.predict(pairs, batch_size=batch_size, **kwargs)
        self.outputs.append(([tuple(p) for p in pairs], np.asarray(scores)))
        return scores


def assert_metrics_equal(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    bad = {k: (got[k], want[k]) for k in want if abs(got[k] - want[k]) > ATOL_METRICS}
    assert not bad, bad


def reranking_samples():
    """STS-B dev as reranking: each query (sentence1 of a pair rated >= 3) has its sentence2 as
    the positive, sometimes a second positive, and sentences of other pairs as negatives; the
    "documents" form ranks them first-stage, some positives missing and some samples with none."""
    from helpers.data import sts_benchmark

    pairs = sts_benchmark("dev")
    good = [p for p in pairs if p.score >= 3.0][:24]
    others = [p.sentence2 for p in pairs if p.score < 1.0]
    rng = np.random.default_rng(0)
    with_negatives, with_documents = [], []
    for i, p in enumerate(good):
        positive = [p.sentence2] + ([good[i - 1].sentence2] if i % 3 == 0 else [])
        negative = [others[j] for j in rng.choice(len(others), rng.integers(2, 12), replace=False)]
        with_negatives.append({"query": p.sentence1, "positive": positive, "negative": negative})
        documents = list(negative)
        for d in positive[: 1 if i % 4 == 1 else 2] if i % 5 else []:  # every 5th finds none
            documents.insert(int(rng.integers(0, len(documents) + 1)), d)
        with_documents.append({"query": p.sentence1, "positive": positive, "documents": documents})
    return with_negatives, with_documents


@pytest.mark.parametrize("form", ["negative", "documents", "documents-found-only"])
def test_reranking_evaluator_equals_sentence_transformers(st_reranker, form):
    from sentence_transformers.cross_encoder.evaluation import (
        CrossEncoderRerankingEvaluator as StReranking,
    )

    with_negatives, with_documents = reranking_samples()
    samples = with_negatives if form == "negative" else with_documents
    options = dict(always_rerank_positives=form != "documents-found-only")
    for at_k, name in ((10, "sts-dev"), (3, "")):
        theirs = StReranking(samples, at_k=at_k, name=name, write_csv=False, **options)
        recorded = Predictions(st_reranker)
        want = theirs(recorded)
        ev = CrossEncoderRerankingEvaluator(samples, at_k=at_k, name=name, **options)
        assert_metrics_equal(ev(Predictions(st_reranker)), want)
        assert ev.primary_metric == theirs.primary_metric
        # The arithmetic alone: the reference's own scores, same pairs in the same order.
        ((pairs, scores),) = recorded.outputs
        assert pairs == ev.pairs
        prefix = f"{name}_" if name else ""
        assert_metrics_equal({prefix + k: v for k, v in ev.compute_metrics(scores).items()}, want)
    assert 0 < want["map"] < 1  # a ranking neither perfect nor empty


def test_reranking_metrics_with_tied_scores_equal_sentence_transformers():
    from sentence_transformers.cross_encoder.evaluation import (
        CrossEncoderRerankingEvaluator as StReranking,
    )

    rng = np.random.default_rng(1)
    for at_k in (1, 3, 10):
        st = StReranking([], at_k=at_k, write_csv=False)
        for _ in range(200):
            m = int(rng.integers(1, 25))
            relevant = rng.integers(0, 2, m)
            scores = rng.integers(0, 4, m).astype(np.float32)  # many ties
            total = int(relevant.sum()) + int(rng.integers(0, 3))
            want = st.compute_metrics(relevant.tolist(), scores, total)
            got = reranking_metrics(relevant, scores, at_k=at_k, num_positives=total)
            np.testing.assert_allclose(
                [got["mrr"], got["ndcg"], got["ap"]], want, rtol=0, atol=ATOL_METRICS
            )


def test_correlation_evaluator_equals_sentence_transformers(st_reranker):
    from helpers.data import sts_benchmark
    from sentence_transformers.cross_encoder.evaluation import (
        CrossEncoderCorrelationEvaluator as StCorrelation,
    )

    pairs = sts_benchmark("dev")[:120]
    sentence_pairs = [[p.sentence1, p.sentence2] for p in pairs]
    gold = [p.score for p in pairs]
    for name in ("sts-dev", ""):
        theirs = StCorrelation(sentence_pairs, gold, name=name, write_csv=False)
        recorded = Predictions(st_reranker)
        want = theirs(recorded)
        ev = CrossEncoderCorrelationEvaluator(sentence_pairs, gold, name=name)
        assert_metrics_equal(ev(Predictions(st_reranker)), want)
        assert ev.primary_metric == theirs.primary_metric
        ((_, scores),) = recorded.outputs
        prefix = f"{name}_" if name else ""
        assert_metrics_equal({prefix + k: v for k, v in ev.compute_metrics(scores).items()}, want)
