"""Bad input gets a clear exception naming what is at fault, and nothing half-loaded."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers.checkpoints import make_bert_checkpoint
from safetensors.numpy import load_file, save_file

import ferris_jax
from ferris_jax.errors import CheckpointError, ModelNotFoundError
from ferris_jax.loading.hub import resolve


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_bert_checkpoint(tmp_path_factory.mktemp("bad") / "good")


@pytest.fixture
def copy(good, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(good, dst)
    return dst


@pytest.fixture(scope="module")
def enc(good):
    return ferris_jax.load(good)


def test_non_string_items_name_the_index(enc):
    with pytest.raises(TypeError, match=r"texts\[2\] is int"):
        enc.encode(["a", "b", 3])
    with pytest.raises(TypeError, match=r"texts\[0\] is NoneType"):
        enc.encode([None])
    with pytest.raises(TypeError, match="got None"):
        enc.encode(None)
    with pytest.raises(TypeError, match="got int"):
        enc.encode(5)


def test_bad_options(enc, good):
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode(["a"], batch_size=0)
    with pytest.raises(ValueError, match="truncate_dim"):
        enc.encode(["a"], truncate_dim=0)
    with pytest.raises(ValueError, match="prompt_name 'nope'"):
        enc.encode(["a"], prompt_name="nope")
    with pytest.raises(ValueError, match="dtype"):
        ferris_jax.load(good, dtype="int8")
    with pytest.raises(ValueError, match="max_seq_length"):
        ferris_jax.load(good, max_seq_length=0)


def test_truncation_is_reported(enc):
    long = "one two three " * 100
    with pytest.warns(UserWarning, match=r"1 of 2 texts exceed max_seq_length=128"):
        enc.encode(["short", long])
    assert enc.tokenize(["short", long]).truncated.tolist() == [False, True]


def test_missing_directory(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such directory"):
        ferris_jax.load(tmp_path / "does-not-exist")
    with pytest.raises(ModelNotFoundError, match="no such directory"):
        ferris_jax.load("./relative/missing/dir")


def test_directory_without_config(copy):
    (copy / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        ferris_jax.load(copy)


def test_unsupported_model_type(copy):
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match=r"config\.json.*model_type 'gpt2' is not supported"):
        ferris_jax.load(copy)


def test_truncated_safetensors(copy):
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        ferris_jax.load(copy)


def test_corrupt_safetensors(copy):
    (copy / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors"):
        ferris_jax.load(copy)


def test_wrong_shape_missing_and_unexpected_tensors_listed_together(copy):
    tensors = load_file(copy / "model.safetensors")
    name = "encoder.layer.1.attention.self.query.weight"
    tensors[name] = np.zeros((32, 31), np.float32)
    del tensors["embeddings.LayerNorm.bias"]
    tensors["encoder.layer.1.extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, copy / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        ferris_jax.load(copy)
    msg = str(err.value)
    assert "3 problem(s)" in msg
    assert f"{name!r}" in msg and "(32, 31)" in msg and "model.safetensors" in msg
    assert "missing parameter backbone.embeddings.norm.bias (32,)" in msg
    assert "unexpected tensor 'encoder.layer.1.extra.weight'" in msg


def test_pytorch_bin_only_checkpoint(copy):
    (copy / "model.safetensors").rename(copy / "pytorch_model.bin")
    with pytest.raises(
        CheckpointError, match=r"pytorch_model\.bin.*safetensors only.*save_pretrained"
    ):
        ferris_jax.load(copy)


def test_missing_tokenizer(copy):
    (copy / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer\.json is missing"):
        ferris_jax.load(copy)


def test_unsupported_sentence_transformers_module(copy):
    (copy / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_LSTM",
                    "type": "sentence_transformers.models.LSTM",
                },
            ]
        )
    )
    with pytest.raises(CheckpointError, match=r"modules\.json.*LSTM"):
        ferris_jax.load(copy)


def test_uncached_hub_id_offline(tmp_path):
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        ferris_jax.load("some-org/not-cached-model", cache_dir=str(tmp_path))


def _put_in_hub_cache(cache, repo_id, source):
    """Lay out `source` as huggingface_hub's cache stores a downloaded snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)


def test_preset_name_resolves_through_the_hub_cache(good, tmp_path):
    _put_in_hub_cache(tmp_path, "intfloat/e5-small-v2", good)
    enc = ferris_jax.load("e5-small-v2", cache_dir=str(tmp_path))
    assert enc.checkpoint.name == "e5-small-v2"
    assert enc.prompts["query"] == "query: " and enc.checkpoint.head.normalize
    np.testing.assert_allclose(enc.encode_query("hello"), enc.encode("query: hello"), atol=1e-6)
    np.testing.assert_allclose(
        enc.encode_document("hello"), enc.encode("passage: hello"), atol=1e-6
    )
    # The hub id itself resolves to the same snapshot.
    path, preset = resolve("intfloat/e5-small-v2", cache_dir=str(tmp_path))
    assert path.parent.name == "snapshots" and preset.name == "e5-small-v2"


def test_default_model_falls_back_to_the_packaged_checkpoint(minilm_path, tmp_path):
    path, preset = resolve("sentence-transformers/all-MiniLM-L6-v2", cache_dir=str(tmp_path))
    assert path == minilm_path and preset.name == "all-MiniLM-L6-v2"
    path, _ = resolve("all-MiniLM-L6-v2", cache_dir=str(tmp_path))
    assert path == minilm_path
