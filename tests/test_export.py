"""Saving (`Encoder.save`): the folder loads in sentence-transformers, transformers' AutoModel and
ferris_jax.load, giving the same vectors, hidden states and parameters, for every family."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from helpers.assertions import assert_embeddings_match
from helpers.checkpoints import make_bert_checkpoint, make_sentence_transformer
from helpers.families import FAMILY_TABLE
from helpers.texts import SENTENCES

import ferris_jax
from ferris_jax._compat import variable_value
from ferris_jax.errors import CheckpointError
from ferris_jax.loading import export
from ferris_jax.loading.st_format import POOLING_FLAGS, pooling_config, pooling_file
from ferris_jax.models import family_for
from ferris_jax.pooling import PoolingConfig
from ferris_jax.weights import to_tensors

POOLING_PATH = Path("1_Pooling/config.json")  # named in errors only


def flat(params: nnx.State) -> dict:
    """{path: host array} of every parameter."""
    return {path: np.asarray(variable_value(v)) for path, v in nnx.to_flat_state(params)}


def assert_same_params(got: nnx.State, want: nnx.State) -> None:
    """The same paths, and every leaf bit-identical in the same dtype."""
    got, want = flat(got), flat(want)
    assert sorted(got, key=str) == sorted(want, key=str)
    for path, value in want.items():
        assert got[path].dtype == value.dtype, path
        np.testing.assert_array_equal(got[path], value, err_msg=str(path))


def sentence_transformer(path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


def hidden_state_error(saved, enc, texts) -> float:
    """Max |ours - AutoModel(saved)| over the real (non-pad) positions of one padded batch."""
    from transformers import AutoModel

    batch = enc.tokenize(texts)
    model, info = AutoModel.from_pretrained(str(saved), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # no random weights
    model.eval()
    with torch.no_grad():
        want = model(
            input_ids=torch.from_numpy(batch.input_ids).long(),
            attention_mask=torch.from_numpy(batch.attention_mask).long(),
        ).last_hidden_state.numpy()
    got = np.asarray(
        enc.token_embeddings(
            enc.params, batch.input_ids, batch.attention_mask, batch.token_type_ids
        )
    )
    real = batch.attention_mask.astype(bool)  # padding positions are not defined outputs
    return float(np.abs(got[real] - want[real]).max())


def changed(params: nnx.State) -> nnx.State:
    return jax.tree.map(lambda x: x * 1.01 + 0.001, params)


@pytest.fixture(scope="module")
def bert_checkpoint(tmp_path_factory):
    return make_bert_checkpoint(tmp_path_factory.mktemp("export") / "bert", seed=5)


@pytest.mark.parametrize("family", sorted(FAMILY_TABLE))
def test_saved_folder_loads_everywhere(tmp_path, family):
    """sentence-transformers encodes as we do, AutoModel's hidden states are ours and our own
    loader gets the very same parameters; after changing them too."""
    enc = ferris_jax.load(FAMILY_TABLE[family].build(tmp_path / family, seed=1))
    vectors = []
    for step in ("loaded", "changed"):
        if step == "changed":
            enc.params = changed(enc.params)
        saved = enc.save(tmp_path / f"saved-{step}")
        vectors.append(enc.encode(SENTENCES))
        assert_embeddings_match(vectors[-1], sentence_transformer(saved).encode(SENTENCES))
        assert hidden_state_error(saved, enc, SENTENCES) <= 1e-4
        assert_same_params(ferris_jax.load(saved).params, enc.params)
    assert np.abs(vectors[1] - vectors[0]).max() > 1e-3  # the saved vectors follow the params


@pytest.mark.parametrize("pooling", [["mean", "cls"], ["cls", "mean"]])
def test_head_prompts_and_similarity_survive(tmp_path, pooling):
    """Dense + Normalize, prompts (excluded from pooling), a default prompt, a similarity function
    and the pooling modes' order reach both loaders."""
    prompts = {"query": "query: ", "passage": "passage: "}
    head = dict(pooling=pooling, include_prompt=False, dense=(24, 16), normalize=True)
    path, _ = make_sentence_transformer(tmp_path / "st", prompts=prompts, seed=2, **head)
    enc = ferris_jax.load(path)
    enc.settings = dataclasses.replace(
        enc.settings, similarity_fn_name="manhattan", default_prompt_name="query"
    )
    saved = enc.save(tmp_path / "saved")

    again = ferris_jax.load(saved)
    assert again.settings == enc.settings
    assert again.checkpoint.head == enc.checkpoint.head
    assert again.checkpoint.head.pooling == PoolingConfig(tuple(pooling), include_prompt=False)
    assert_same_params(again.params, enc.params)

    st = sentence_transformer(saved)
    assert st.similarity_fn_name == "manhattan" and st.default_prompt_name == "query"
    assert {name: st.prompts[name] for name in enc.prompts} == enc.prompts
    for kwargs in ({}, {"prompt_name": "passage"}, {"prompt": ""}):
        got = enc.encode(SENTENCES, **kwargs)
        assert_embeddings_match(got, st.encode(SENTENCES, **kwargs))
    np.testing.assert_allclose(
        np.asarray(enc.similarity(got[:4], got[4:])),
        st.similarity(got[:4], got[4:]).numpy(),
        rtol=1e-5,
        atol=1e-5,
    )


def test_max_seq_length_set_before_saving_is_saved(tmp_path, bert_checkpoint):
    enc = ferris_jax.load(bert_checkpoint)
    enc.max_seq_length = 16
    saved = enc.save(tmp_path / "saved")
    assert json.loads((saved / "sentence_bert_config.json").read_text())["max_seq_length"] == 16
    assert ferris_jax.load(saved).max_seq_length == 16
    st = sentence_transformer(saved)
    assert st.max_seq_length == 16
    assert_embeddings_match(enc.encode(SENTENCES), st.encode(SENTENCES))  # truncated alike


def test_bfloat16_saves_and_reloads_exactly(tmp_path, bert_checkpoint):
    from safetensors.numpy import load_file
    from transformers import AutoModel

    enc = ferris_jax.load(bert_checkpoint, dtype="bfloat16")
    enc.params = changed(enc.params)
    saved = enc.save(tmp_path / "saved")
    assert json.loads((saved / "config.json").read_text())["dtype"] == "bfloat16"
    tensors = load_file(saved / "model.safetensors")
    assert {str(t.dtype) for t in tensors.values()} == {"bfloat16"}
    assert_same_params(ferris_jax.load(saved, dtype="bfloat16").params, enc.params)
    # transformers reads them in bfloat16, unchanged.
    state = AutoModel.from_pretrained(str(saved)).state_dict()
    for name, tensor in tensors.items():
        assert state[name].dtype == torch.bfloat16, name
        np.testing.assert_array_equal(state[name].float().numpy(), tensor.astype(np.float32))


def test_interrupted_save_keeps_the_earlier_folder(tmp_path, bert_checkpoint, monkeypatch):
    enc = ferris_jax.load(bert_checkpoint)
    saved = enc.save(tmp_path / "out" / "model")
    first = enc.params
    enc.params = changed(enc.params)

    def torn_write(file, tensors):  # a weight file cut off halfway, then the failure
        file.write_bytes(b"\x00" * 100)
        raise OSError("No space left on device")

    monkeypatch.setattr(export, "_write_safetensors", torn_write)
    with pytest.raises(OSError, match="No space left"):
        enc.save(saved)
    assert os.listdir(tmp_path / "out") == ["model"]  # no temporary folder left beside it
    assert_same_params(ferris_jax.load(saved).params, first)


def test_save_over_the_folder_it_was_loaded_from(tmp_path, bert_checkpoint):
    folder = ferris_jax.load(bert_checkpoint).save(tmp_path / "model")
    enc = ferris_jax.load(folder)
    enc.params = changed(enc.params)
    assert enc.save(folder) == folder
    assert_same_params(ferris_jax.load(folder).params, enc.params)
    assert os.listdir(tmp_path) == ["model"]


def test_missing_tokenizer_file_is_named(tmp_path, bert_checkpoint):
    source = shutil.copytree(bert_checkpoint, tmp_path / "source")
    enc = ferris_jax.load(source)
    (source / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=re.escape("tokenizer.json")):
        enc.save(tmp_path / "saved")
    assert sorted(os.listdir(tmp_path)) == ["source"]


def test_every_parameter_is_saved_or_the_save_fails(tmp_path, bert_checkpoint):
    enc = ferris_jax.load(bert_checkpoint)
    weight_map = family_for("bert").weight_map
    with pytest.raises(CheckpointError, match=re.escape("backbone.adapter.kernel")):
        to_tensors([(("backbone", "adapter", "kernel"), np.zeros((2, 2)))], [weight_map])
    dropped = ("backbone", "embeddings", "norm", "scale")
    params = nnx.from_flat_state([(p, v) for p, v in nnx.to_flat_state(enc.params) if p != dropped])
    with pytest.raises(
        ValueError, match=re.escape("missing parameter backbone.embeddings.norm.scale")
    ):
        export.save_pretrained(tmp_path / "saved", enc.checkpoint, params, enc.settings)
    assert not (tmp_path / "saved").exists()


@pytest.mark.parametrize(
    "modes", [("mean",), ("lasttoken",), ("cls", "mean"), ("mean", "cls"), ("max", "mean", "cls")]
)
def test_pooling_file_reads_back(modes):
    for include_prompt in (True, False):
        pooling = PoolingConfig(modes, include_prompt)
        config = pooling_file(pooling, 8)
        assert pooling_config(POOLING_PATH, config) == pooling
        legacy = {k: v for k, v in config.items() if k != "pooling_mode"}  # pre-6 readers
        if tuple(m for _, m in POOLING_FLAGS if m in modes) == modes:
            assert pooling_config(POOLING_PATH, legacy) == pooling


def test_saving_refuses_to_replace_a_folder_that_holds_no_model(tmp_path, monkeypatch):
    enc = ferris_jax.load(make_bert_checkpoint(tmp_path / "bert"))
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="it is not empty and holds no model"):
        enc.save(other)
    assert (other / "keep.txt").read_text() == "mine"
    monkeypatch.chdir(other)
    with pytest.raises(ValueError, match="it holds the working directory"):
        enc.save(".")
    saved = enc.save(tmp_path / "saved")
    assert enc.save(saved) == saved  # a model folder is replaced by a new save


def test_params_of_another_dtype_are_compiled_anew(tmp_path):
    enc = ferris_jax.load(make_bert_checkpoint(tmp_path / "bert"))
    before = enc.encode(SENTENCES)
    enc.params = jax.tree.map(lambda x: x.astype("bfloat16"), enc.params)
    after = enc.encode(SENTENCES)
    cos = (before * after).sum(1) / np.linalg.norm(before, axis=1) / np.linalg.norm(after, axis=1)
    assert cos.min() > 0.99  # the same model, in bfloat16


# ---------------------------------------------------------------- a save keeps what is not its own
def tree(folder) -> dict[str, bytes | None]:
    """{relative path: bytes (None for a folder)} of everything under `folder`."""
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
        for p in sorted(Path(folder).rglob("*"))
    }


USER_FILES = {
    "README.md": b"# my model card\n",
    "eval.csv": b"step,score\n1,0.5\n",
    "data/train.jsonl": b'{"anchor": "a", "positive": "b"}\n',
    "2_Dense/notes.txt": b"why this head\n",
}


def test_saving_keeps_the_files_it_did_not_write(tmp_path, bert_checkpoint):
    """A save writes into the folder: the user's files stay (a model card, an eval CSV, data),
    and of an earlier save's files only those the new one does not write are removed (its
    stale Dense and Normalize folders, a tokenizer file of the other model)."""
    headed, _ = make_sentence_transformer(tmp_path / "st", dense=(16,), normalize=True, seed=3)
    folder = ferris_jax.load(headed).save(tmp_path / "model")
    assert (folder / "2_Dense" / "model.safetensors").is_file()
    assert (folder / "3_Normalize").is_dir()
    for name, data in USER_FILES.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "merges.txt").write_text("#version: 0.2\n")  # a tokenizer file by our name

    plain = ferris_jax.load(bert_checkpoint)  # no Dense, no Normalize
    assert plain.save(folder) == folder
    for name, data in USER_FILES.items():
        assert (folder / name).read_bytes() == data, name
    assert sorted(os.listdir(folder / "2_Dense")) == ["notes.txt"]  # the Dense files went
    assert not (folder / "3_Normalize").exists() and not (folder / "merges.txt").exists()
    assert not [p for p in os.listdir(folder) if p.startswith(".")]  # no staging left
    again = ferris_jax.load(folder)
    assert again.checkpoint.head == plain.checkpoint.head
    assert_same_params(again.params, plain.params)
    assert_embeddings_match(again.encode(SENTENCES), sentence_transformer(folder).encode(SENTENCES))


def test_saving_refuses_a_folder_of_files_it_did_not_write(tmp_path, bert_checkpoint):
    """A project folder with its own config.json, or a model sentence-transformers saved: the
    save is refused and every file stays as it was."""
    enc = ferris_jax.load(bert_checkpoint)
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "config.json").write_text('{"learning_rate": 0.1}')
    (project / "train.py").write_text("print('train')\n")
    (project / "data" / "pairs.jsonl").write_text("{}\n")
    st_folder, _ = make_sentence_transformer(tmp_path / "st", seed=4)
    for folder in (project, st_folder):
        before = tree(folder)
        with pytest.raises(ValueError, match="holds a model ferris-jax did not save"):
            enc.save(folder)
        assert tree(folder) == before
    (tmp_path / "file").write_text("mine")
    with pytest.raises(FileExistsError, match="is a file"):
        enc.save(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"


def test_a_save_cut_off_anywhere_never_loads_as_a_mix(tmp_path, monkeypatch):
    """Saving a changed model over an earlier save, interrupted at each rename in turn: an
    exception leaves the earlier model (rolled back); a kill at that moment (the folder as it
    was just then) leaves either model whole or a folder that does not load."""
    path, _ = make_sentence_transformer(tmp_path / "st", dense=(16,), normalize=True, seed=6)
    enc = ferris_jax.load(path)
    folder = enc.save(tmp_path / "model")
    (folder / "eval.csv").write_text("step,score\n")
    enc.params = changed(enc.params)
    enc.max_seq_length = 20
    before = tree(folder)
    replace = os.replace
    calls, snapshots = [0], []

    def fake_replace(src, dst, stop_at=None):
        calls[0] += 1
        if stop_at is None:  # a kill now would leave the folder as it is
            snapshots.append(shutil.copytree(folder, tmp_path / f"kill-{len(snapshots)}"))
        if calls[0] == stop_at:
            raise KeyboardInterrupt
        return replace(src, dst)

    for k in range(1, 100):
        calls[0] = 0
        monkeypatch.setattr(os, "replace", functools.partial(fake_replace, stop_at=k))
        try:
            enc.save(folder)
        except KeyboardInterrupt:
            monkeypatch.setattr(os, "replace", replace)
            assert tree(folder) == before  # rolled back, no staging folder left
            continue
        break  # k past the last rename: the save completed
    assert k > 10  # each file's rename was cut off in turn
    assert_same_params(ferris_jax.load(folder).params, enc.params)
    assert (folder / "eval.csv").read_text() == "step,score\n"

    enc.params = changed(enc.params)  # saved once more, its folder copied at each rename
    monkeypatch.setattr(os, "replace", fake_replace)
    enc.max_seq_length = 24
    enc.save(folder)
    monkeypatch.setattr(os, "replace", replace)
    first = ferris_jax.load(snapshots[0]).params
    outcomes = set()
    for snapshot in [*snapshots, folder]:  # before each rename, and after the last
        try:
            loaded = ferris_jax.load(snapshot)
        except CheckpointError as e:
            assert "config.json" in str(e)
            outcomes.add("does not load")
            continue
        new = loaded.max_seq_length == 24
        assert_same_params(loaded.params, enc.params if new else first)
        outcomes.add("new" if new else "earlier")
    assert outcomes == {"earlier", "does not load", "new"}
