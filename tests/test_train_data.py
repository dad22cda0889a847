"""Training data: readers (lists, JSON Lines, datasets), the no-duplicates sampler against
sentence-transformers' own, and batches through the encoder's bucket policy, on STS-B."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from helpers.assertions import assert_embeddings_match
from helpers.checkpoints import make_sentence_transformer
from helpers.data import sts_benchmark

from ferris_jax.train import TrainBatch, make_batch
from ferris_jax.train.data import (
    BatchSampler,
    NoDuplicatesBatchSampler,
    TrainDataset,
    collate,
    column_prompts,
    iter_batches,
    load_train_data,
)
from ferris_jax.train.step import PackedColumns


def sts_rows(split: str = "train") -> list[tuple[str, str, float]]:
    return [(p.sentence1, p.sentence2, p.score / 5) for p in sts_benchmark(split)]


@pytest.fixture(scope="module")
def sts_train() -> TrainDataset:
    return TrainDataset.from_list(sts_rows("train"), column_names=["sentence1", "sentence2"])


# ---------------------------------------------------------------- readers
def test_lists_of_pairs_triplets_and_n_tuples():
    pairs = TrainDataset.from_list([("a", "b"), ("c", "d")])
    assert pairs.column_names == ("anchor", "positive") and pairs.labels is None
    assert pairs[1] == ("c", "d") and len(pairs) == 2
    triplets = TrainDataset.from_list([("a", "b", "n")])
    assert triplets.column_names == ("anchor", "positive", "negative")
    wide = TrainDataset.from_list([("a", "b", "n1", "n2", "n3")])
    assert wide.column_names == ("anchor", "positive", "negative_1", "negative_2", "negative_3")
    scored = TrainDataset.from_list([("a", "b", 0.5), ("c", "d", 1)])
    assert scored.columns == (("a", "c"), ("b", "d"))
    assert scored.labels.dtype == np.float32 and scored.labels.tolist() == [0.5, 1.0]
    assert scored.select([1, 0])[0] == ("c", "d", 1.0)


def test_bad_lists_name_the_row():
    with pytest.raises(ValueError, match=r"rows\[1\] has 3 items"):
        TrainDataset.from_list([("a", "b"), ("c", "d", "e")])
    with pytest.raises(ValueError, match=r"rows\[1\] has 3 items.*a label"):
        TrainDataset.from_list([("a", "b", 0.5), ("c", "d", "e")])
    with pytest.raises(TypeError, match=r"rows\[1\]\[0\] is NoneType"):
        TrainDataset.from_list([("a", "b"), (None, "d")])
    with pytest.raises(TypeError, match=r"rows\[0\] is str"):
        TrainDataset.from_list(["a", "b"])
    with pytest.raises(ValueError, match=r"rows\[1\]\[1\] has a character UTF-8 cannot encode"):
        TrainDataset.from_list([("a", "b"), ("c", "bad \udcff")])
    with pytest.raises(ValueError, match="empty"):
        TrainDataset.from_list([])


def test_json_lines_by_column_name(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [
        {"premise": p.sentence1, "score": p.score, "hypothesis": p.sentence2}
        for p in sts_benchmark("dev")[:20]
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    data = TrainDataset.from_jsonl(path)
    assert data.column_names == ("premise", "hypothesis") and len(data) == 20
    assert data[3] == (rows[3]["premise"], rows[3]["hypothesis"], pytest.approx(rows[3]["score"]))
    swapped = load_train_data(path, columns=["hypothesis", "premise"])
    assert swapped.columns == data.columns[::-1]


@pytest.mark.parametrize(
    "lines, error",
    [
        (['{"a": "x", "b": "y"}', '{"a": "x"'], r"train.jsonl:2: not valid JSON"),
        (['{"a": "x", "b": "y"}', '["x", "y"]'], r"train.jsonl:2: expected a JSON object"),
        (['{"a": "x", "b": "y"}', "", '{"a": "x"}'], r"train.jsonl:3: missing column\(s\) \['b'\]"),
        (['{"a": "x", "b": "y"}', '{"a": "x", "b": 3}'], r"train.jsonl:2: column 'b' is int"),
        (['{"a": "x", "b": "y", "c": "z"}', '{"a": "x", "b": "y", "d": "z"}'], "train.jsonl:2"),
        (['{"a": "x", "label": 1}', '{"a": "x", "label": "yes"}'], "train.jsonl:2: label column"),
    ],
)
def test_bad_json_lines_name_file_and_line(tmp_path, lines, error):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises((ValueError, TypeError), match=error):
        TrainDataset.from_jsonl(path)


def test_datasets_columns_as_sentence_transformers_takes_them():
    datasets = pytest.importorskip("datasets")
    pairs = sts_benchmark("dev")[:10]
    ds = datasets.Dataset.from_dict(
        {
            "sentence2": [p.sentence2 for p in pairs],
            "score": [p.score for p in pairs],
            "sentence1": [p.sentence1 for p in pairs],
        }
    )
    data = load_train_data(ds)
    assert data.column_names == ("sentence2", "sentence1")  # order kept, label taken out
    np.testing.assert_array_equal(data.labels, np.float32([p.score for p in pairs]))
    with pytest.raises(TypeError, match="pass one split"):
        load_train_data(datasets.DatasetDict({"train": ds}))
    bad = datasets.Dataset.from_dict({"a": ["x", "y"], "b": [1, 2]})
    with pytest.raises(TypeError, match="column 'b' row 0 is int"):
        load_train_data(bad)


# ---------------------------------------------------------------- sampler
def test_no_duplicates_within_a_batch_on_sts_train(sts_train):
    sampler = NoDuplicatesBatchSampler(sts_train, 64, seed=3)
    batches = list(sampler)
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(len(sts_train)))  # one pass covers every example once
    for b in batches:  # no text in two examples of a batch (one example may repeat its own)
        per_example = [set(sts_train[i][:2]) for i in b]
        assert len(set().union(*per_example)) == sum(map(len, per_example))
    # STS-B train repeats sentences, so plain consecutive batches would hold twins.
    assert any(
        len({t for i in range(s, s + 64) for t in sts_train[i][:2]}) < 128
        for s in range(0, len(sts_train) - 64, 64)
    )


def test_seeded_and_reproducible(sts_train):
    a = NoDuplicatesBatchSampler(sts_train, 32, seed=1)
    assert list(a) == list(NoDuplicatesBatchSampler(sts_train, 32, seed=1))
    assert list(a) != list(NoDuplicatesBatchSampler(sts_train, 32, seed=2))
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first


class TorchShuffled(NoDuplicatesBatchSampler):
    """Our sampler with sentence-transformers' shuffles (torch.randperm, seeded seed + epoch),
    so the batching itself can be compared batch for batch."""

    def permutations(self):
        import torch

        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        while True:
            yield torch.randperm(len(self.dataset), generator=g, dtype=torch.int32).numpy()


@pytest.mark.parametrize("batch_size, drop_last", [(64, False), (64, True), (50, False)])
def test_batches_equal_sentence_transformers(sts_train, batch_size, drop_last):
    datasets = pytest.importorskip("datasets")
    import torch
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler as StSampler

    ds = datasets.Dataset.from_dict(
        {
            "sentence1": list(sts_train.columns[0]),
            "sentence2": list(sts_train.columns[1]),
            "score": sts_train.labels.tolist(),
        }
    )
    for epoch in (0, 1):
        theirs = StSampler(
            ds,
            batch_size,
            drop_last,
            valid_label_columns=["score"],
            generator=torch.Generator(),
            seed=7,
        )
        theirs.set_epoch(epoch)
        ours = TorchShuffled(sts_train, batch_size, drop_last=drop_last, seed=7)
        ours.set_epoch(epoch)
        assert len(ours) == len(theirs)
        assert list(ours) == [list(map(int, b)) for b in theirs]


def test_few_distinct_texts_resample_as_sentence_transformers():
    """With many duplicates one pass falls short of len(sampler); more passes top it up."""
    datasets = pytest.importorskip("datasets")
    import torch
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler as StSampler

    words = [p.sentence1 for p in sts_benchmark("dev")[:6]]
    rng = np.random.default_rng(0)
    rows = [(words[rng.integers(6)], words[rng.integers(6)]) for _ in range(60)]
    data = TrainDataset.from_list(rows)
    ds = datasets.Dataset.from_dict(
        {"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows]}
    )
    for drop_last in (True, False):
        theirs = StSampler(ds, 3, drop_last, generator=torch.Generator(), seed=0)
        ours = TorchShuffled(data, 3, drop_last=drop_last, seed=0)
        want = [list(map(int, b)) for b in theirs]
        assert list(ours) == want
        if drop_last:
            assert len(want) == len(ours) == 20  # needed the extra passes


# ---------------------------------------------------------------- batches
def test_collate_pads_all_columns_to_one_bucket_length(tiny_st, sts_train):
    import ferris_jax

    path, _ = tiny_st
    enc = ferris_jax.load(path)
    batch = collate(enc, sts_train, [5, 0, 9], pack=False)
    assert isinstance(batch, TrainBatch) and batch.size == 3  # one row per example, no padding
    (B, L), (B2, L2) = batch.shape
    assert B == B2 == 3 and L == L2 and L in enc.bucket_policy(3).seq_lengths
    for c, column in enumerate(batch.columns):
        want = enc.tokenize([sts_train.columns[c][i] for i in (5, 0, 9)])
        n = want.input_ids.shape[1]
        np.testing.assert_array_equal(column.input_ids[:, :n], want.input_ids)
        np.testing.assert_array_equal(column.attention_mask[:, :n], want.attention_mask)
        assert not column.attention_mask[:, n:].any()
        assert column.prompt_length.tolist() == [0, 0, 0]
    np.testing.assert_array_equal(batch.labels, sts_train.labels[[5, 0, 9]])
    with pytest.raises(IndexError, match="example index 9000 is out of range"):
        collate(enc, sts_train, [0, 9000])
    with pytest.raises(ValueError, match="at least one example"):
        collate(enc, sts_train, [])


def test_make_batch_is_collate_of_the_examples(tiny_st):
    import ferris_jax

    enc = ferris_jax.load(tiny_st[0])
    rows = sts_rows("dev")[:4]
    data = TrainDataset.from_list(rows)
    via_collate = collate(enc, data, range(4))
    for batch in (make_batch(enc, rows), make_batch(enc, [r[:2] for r in rows], data.labels)):
        for a, b in zip(jax.tree.leaves(batch), jax.tree.leaves(via_collate), strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="labels must be one number per example"):
        make_batch(enc, [("a", "b")], labels=[1.0, 2.0])
    with pytest.raises(ValueError, match="labels given twice"):
        make_batch(enc, [("a", "b", 1.0)], labels=[1.0])


def test_prompts_per_column_as_sentence_transformers(tiny_st):
    """The prompt is prepended to the text of its column and counted as ST counts it."""
    import ferris_jax

    path, st = tiny_st
    enc = ferris_jax.load(path)
    data = TrainDataset.from_list(
        [("how do cats sleep", "Cats sleep a lot.")], column_names=["query", "answer"]
    )
    batch = collate(enc, data, [0], prompts={"query": "query: "}, pack=False)
    want = st.preprocess(["how do cats sleep"], prompt="query: ")
    n = want["input_ids"].shape[1]
    np.testing.assert_array_equal(batch.columns[0].input_ids[:, :n], want["input_ids"].numpy())
    assert batch.columns[0].prompt_length.tolist() == [enc.tokenizer.prompt_length("query: ")]
    if "prompt_length" in want:
        assert batch.columns[0].prompt_length.tolist() == [int(want["prompt_length"])]
    assert batch.columns[1].prompt_length.tolist() == [0]
    plain = st.preprocess(["Cats sleep a lot."])
    m = plain["input_ids"].shape[1]
    np.testing.assert_array_equal(batch.columns[1].input_ids[:, :m], plain["input_ids"].numpy())
    assert column_prompts("p: ", ["a", "b"]) == ("p: ", "p: ")
    assert column_prompts(None, ["a"]) == ("",)
    with pytest.raises(ValueError, match=r"\['qeury'\].*\['query', 'answer'\]"):
        column_prompts({"qeury": "q: "}, ["query", "answer"])


def test_the_step_pools_without_the_prompt_as_sentence_transformers(tmp_path):
    """With `include_prompt=False` the train step's embeddings of a prompted column leave the
    prompt's tokens out of pooling: equal to sentence-transformers' `encode(prompt=...)`."""
    import ferris_jax
    from ferris_jax.train.step import embedder

    path, st = make_sentence_transformer(tmp_path / "st", include_prompt=False)
    enc = ferris_jax.load(path)
    pairs = sts_benchmark("dev")[:6]
    data = TrainDataset.from_list([(p.sentence1, p.sentence2) for p in pairs])
    embed = jax.jit(embedder(enc, "float32"))
    padded = collate(enc, data, range(6), prompts={"anchor": "query: "}, pack=False)
    packed = collate(enc, data, range(6), prompts={"anchor": "query: "}, pack=True)
    assert isinstance(packed.columns, PackedColumns)
    for got in (
        [np.asarray(embed(enc.params, column)) for column in padded.columns],
        np.asarray(embed(enc.params, packed.columns)),
    ):
        assert_embeddings_match(
            got[0], st.encode(list(data.columns[0]), prompt="query: ", convert_to_numpy=True)
        )
        assert_embeddings_match(got[1], st.encode(list(data.columns[1]), convert_to_numpy=True))
    with_prompt = st.encode(list(data.columns[0]), prompt="query: ", convert_to_numpy=True)
    plain_pooled = enc.encode(["query: " + t for t in data.columns[0]])
    assert np.abs(with_prompt - plain_pooled).max() > 1e-3  # the prompt length mattered


@pytest.mark.parametrize("pack", [False, None])
def test_a_whole_epoch_compiles_a_handful_of_shapes(minilm, sts_train, pack):
    """All of STS-B train at batch 64 (no duplicates, last batch kept), padded or packed
    where packing saves tokens, lands in few shapes (a program each)."""
    sampler = NoDuplicatesBatchSampler(sts_train, 64, seed=0)
    shapes, examples = set(), 0
    for batch in iter_batches(minilm, sts_train, sampler, pack=pack):
        shapes.add(batch.shape)
        examples += batch.size
    assert examples == len(sts_train)
    assert len(shapes) <= 6, sorted(shapes)
    lengths = {shape[0][1] for shape in shapes}
    assert lengths <= set(minilm.bucket_policy(64).seq_lengths)


def test_plain_sampler_is_a_seeded_shuffle(sts_train):
    sampler = BatchSampler(sts_train, 100, seed=5)
    batches = list(sampler)
    assert len(batches) == len(sampler) == -(-len(sts_train) // 100)
    assert sorted(i for b in batches for i in b) == list(range(len(sts_train)))
    assert batches == list(BatchSampler(sts_train, 100, seed=5))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    dropped = list(BatchSampler(sts_train, 100, drop_last=True, seed=5))
    assert dropped == batches[: len(sts_train) // 100]


# ---------------------------------------------------------------- packing
def test_short_texts_are_packed_long_ones_padded(minilm, sts_train):
    """By default a batch is packed when packed rows hold fewer tokens than padded columns:
    STS-B sentences (about 15 tokens) fill rows of 128, far fewer tokens than padding both
    columns to their longest; passages of the Lee corpus fill a row each and stay padded."""
    from helpers.data import lee_corpus

    examples = np.random.default_rng(0).permutation(len(sts_train))[:64]  # all of STS-B's genres
    batch = collate(minilm, sts_train, examples)
    assert isinstance(batch.columns, PackedColumns) and batch.size == 64
    (R, L, K), (C, B) = batch.shape
    padded = collate(minilm, sts_train, examples, pack=False)
    assert (C, B) == (2, 64) and L == 128 and minilm.bucket_policy(64).segments_for(L) == K
    assert C * B * padded.shape[0][1] / 2 > R * L  # less than half the padded tokens
    docs = lee_corpus()[:8]
    long = collate(minilm, TrainDataset.from_list([(d, d) for d in docs]), range(8))
    assert not isinstance(long.columns, PackedColumns)


def test_a_packed_batch_holds_every_text_once_with_its_prompt(minilm, sts_train):
    """Each slot's tokens are its text's tokens (prompt included), counted from position 0,
    and carry the prompt length of its column."""
    prompts = {"sentence1": "query: ", "sentence2": ""}
    data = TrainDataset(("sentence1", "sentence2"), sts_train.columns, sts_train.labels)
    examples = np.random.default_rng(1).permutation(len(sts_train))[:40]
    batch = collate(minilm, data, examples, prompts=prompts, pack=True)
    packed = batch.columns
    ids, seg, pos, prompt = (
        np.asarray(a)
        for a in (packed.input_ids, packed.segment_ids, packed.positions, packed.prompt_length)
    )
    K = packed.num_segments
    slots = np.asarray(packed.slots)
    assert sorted(slots.ravel().tolist()) == sorted(set(slots.ravel().tolist()))  # once each
    for c, column_prompt in enumerate(("query: ", "")):
        want = minilm.tokenizer.encode([column_prompt + data.columns[c][i] for i in examples])
        for b, text_ids in enumerate(want.ids_per_text()):
            row, k = divmod(int(slots[c, b]), K)
            here = seg[row] == k + 1
            assert ids[row][here].tolist() == text_ids
            assert pos[row][here].tolist() == list(range(len(text_ids)))
            assert set(prompt[row][here].tolist()) == {
                minilm.tokenizer.prompt_length(column_prompt)
            }
    assert not prompt[seg == 0].any()


def test_packing_is_refused_where_it_cannot_apply(tmp_path, sts_train):
    """Max pooling has no packed form; the cached step takes a packed batch only in the
    mini-batches it embeds one at a time."""
    import ferris_jax
    from ferris_jax.train.losses import mnrl_loss
    from ferris_jax.train.step import cached_loss_and_grad, embedder

    path, _ = make_sentence_transformer(tmp_path / "max", pooling="max")
    enc = ferris_jax.load(path)
    with pytest.raises(ValueError, match=r"pack=True: .*max pooling"):
        collate(enc, sts_train, range(8), pack=True)
    examples = np.random.default_rng(0).permutation(len(sts_train))[:64]
    assert not isinstance(collate(enc, sts_train, examples).columns, PackedColumns)
    mean_enc = ferris_jax.load(make_sentence_transformer(tmp_path / "mean")[0])
    packed = collate(mean_enc, sts_train, range(8), pack=True)
    with pytest.raises(ValueError, match=r"mini_batch_size=\.\.\., or pack=False"):
        cached_loss_and_grad(embedder(mean_enc), mnrl_loss, mean_enc.params, packed, 4)


def test_mini_batches_pack_their_texts_in_rows_of_one_shape(minilm, sts_train):
    """For the cached step the batch's texts go in mini-batches of at most `mini_batch_size`
    texts (column by column), each packed in rows of one shape."""
    examples = np.random.default_rng(2).permutation(len(sts_train))[:50]
    batch = collate(minilm, sts_train, examples, pack=True, mini_batch_size=32)
    (N, R, _, K), (C, B) = batch.shape
    assert (N, C, B) == (4, 2, 50)  # 100 texts: 32 + 32 + 32 + 4
    slots = np.asarray(batch.columns.slots).ravel()
    assert sorted(slots.tolist()) == sorted(set(slots.tolist()))
    mini_batch = slots // (R * K)
    np.testing.assert_array_equal(mini_batch, np.arange(100) // 32)
