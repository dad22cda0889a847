"""Every malformed file we read, and every bad input, gets one line that names the culprit: the
CLI prints only `ferris-jax: error: ...` naming the file and the key (never a traceback), and
the library raises at load, not later in `encode`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers.checkpoints import make_sentence_transformer
from helpers.texts import SENTENCES

import ferris_jax
from ferris_jax.cli import main
from ferris_jax.errors import CheckpointError, ModelNotFoundError


@pytest.fixture(scope="module")
def dense_st(tmp_path_factory) -> Path:
    """A sentence-transformers model with every module file: Pooling, Dense, Normalize, prompts."""
    path, _ = make_sentence_transformer(
        tmp_path_factory.mktemp("bad") / "st",
        dense=(16,),
        normalize=True,
        prompts={"query": "query: ", "document": ""},
    )
    return path


def _edit_json(name: str, change: Callable[[object], object]) -> Callable[[Path], None]:
    """Rewrite `name` in a folder as `change(its JSON)` returns it (edited in place if None)."""

    def edit(folder: Path) -> None:
        path = folder / name
        data = json.loads(path.read_text()) if path.exists() else {}
        result = change(data)
        path.write_text(json.dumps(data if result is None else result))

    return edit


def _set(key: str, value: object) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data[key] = value

    return change


def _drop(key: str, item: int | None = None) -> Callable[[dict | list], None]:
    def change(data: dict | list) -> None:
        del (data if item is None else data[item])[key]

    return change


def _dense_dir(folder: Path) -> str:
    return next(p.name for p in folder.iterdir() if p.name.endswith("_Dense"))


# (what is wrong, how to break the folder, the file the message must name, words it must say)
CASES = [
    ("config not an object", _edit_json("config.json", lambda d: [d]), "config.json", "object"),
    ("negative size", _edit_json("config.json", _set("hidden_size", -5)), "config.json",
     "'hidden_size' must be an integer >= 1"),
    ("size as text", _edit_json("config.json", _set("num_hidden_layers", "2")), "config.json",
     "'num_hidden_layers'"),
    ("fractional size", _edit_json("config.json", _set("intermediate_size", 64.5)),
     "config.json", "'intermediate_size'"),
    ("missing size", _edit_json("config.json", _drop("hidden_size")), "config.json",
     "hidden_size"),
    ("heads do not divide", _edit_json("config.json", _set("num_attention_heads", 5)),
     "config.json", "multiple of 'num_attention_heads'"),
    ("model_type a number", _edit_json("config.json", _set("model_type", 3)), "config.json",
     "'model_type' must be a string"),
    ("modules not a list", _edit_json("modules.json", lambda d: {"modules": d}), "modules.json",
     "list of module objects"),
    ("module without type", _edit_json("modules.json", _drop("type", item=1)),
     "modules.json", "'type'"),
    ("unknown pooling flag", _edit_json("1_Pooling/config.json",
     _set("pooling_mode_median_tokens", True)), "1_Pooling/config.json",
     "pooling_mode_median_tokens"),
    ("pooling mode a number", _edit_json("1_Pooling/config.json", _set("pooling_mode", 3)),
     "1_Pooling/config.json", "pooling_mode"),
    ("unknown pooling mode", _edit_json("1_Pooling/config.json", _set("pooling_mode", "median")),
     "1_Pooling/config.json", "median"),
    ("include_prompt as text", _edit_json("1_Pooling/config.json",
     _set("include_prompt", "yes")), "1_Pooling/config.json", "'include_prompt' must be true"),
    ("bad max_seq_length", _edit_json("sentence_bert_config.json", _set("max_seq_length", -1)),
     "sentence_bert_config.json", "'max_seq_length' must be at least 2"),
    ("max_seq_length as text", _edit_json("sentence_bert_config.json",
     _set("max_seq_length", "long")), "sentence_bert_config.json", "'max_seq_length'"),
    ("default prompt missing", _edit_json("config_sentence_transformers.json",
     _set("default_prompt_name", "search")), "config_sentence_transformers.json",
     "default_prompt_name 'search'"),
    ("unknown similarity", _edit_json("config_sentence_transformers.json",
     _set("similarity_fn_name", "cosinus")), "config_sentence_transformers.json", "cosinus"),
    ("prompts not strings", _edit_json("config_sentence_transformers.json",
     _set("prompts", {"query": 1})), "config_sentence_transformers.json", "prompts"),
    ("tokenizer config not an object", _edit_json("tokenizer_config.json", lambda d: "x"),
     "tokenizer_config.json", "object"),
    ("invalid JSON", lambda f: (f / "config.json").write_text("{nope"), "config.json",
     "invalid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "breaks", "file", "says"), CASES, ids=[c[0] for c in CASES])
def test_a_malformed_file_is_one_line_naming_it(
    dense_st, tmp_path, capsys, case, breaks, file, says
):
    folder = tmp_path / "model"
    shutil.copytree(dense_st, folder)
    breaks(folder)
    texts = tmp_path / "texts.txt"
    texts.write_text("hello world\n")
    code = main(["embed", str(texts), "-o", str(tmp_path / "v.npy"), "-m", str(folder)])
    err = capsys.readouterr().err.splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("ferris-jax: error: ") and str(folder / file) in err[0], err[0]
    assert says in err[0]
    assert not (tmp_path / "v.npy").exists()


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [("in_features", 0, "'in_features' must be at least 1"), ("bias", "no", "'bias'"),
     ("use_residual", True, "use_residual")],
)  # fmt: skip
def test_a_malformed_dense_config_names_its_file(dense_st, tmp_path, key, value, says):
    folder = tmp_path / "model"
    shutil.copytree(dense_st, folder)
    _edit_json(f"{_dense_dir(folder)}/config.json", _set(key, value))(folder)
    with pytest.raises(CheckpointError, match=says) as info:
        ferris_jax.load(folder)
    assert str(folder / _dense_dir(folder) / "config.json") in str(info.value)


def test_the_debug_flag_shows_the_traceback(dense_st, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(dense_st, folder)
    _edit_json("config.json", _set("hidden_size", -5))(folder)
    with pytest.raises(CheckpointError):
        main(["--debug", "info", "-m", str(folder)])


# ---------------------------------------------------------------- inputs
@pytest.fixture(scope="module")
def enc(dense_st):
    return ferris_jax.load(dense_st)


def test_a_lone_surrogate_is_named_by_text_and_position(enc):
    texts = ["fine", "also fine", "bad \udc80 here"]
    with pytest.raises(ValueError, match=r"texts\[2\] has a character .* at position 4"):
        enc.encode(texts)


@pytest.mark.parametrize(
    ("texts", "says"),
    [(b"bytes", "got bytes; decode bytes first"), ({"a", "b"}, "got set"),
     ({"a": 1}, "got dict"), (frozenset({"a"}), "got frozenset"), (3.5, "got float")],
)  # fmt: skip
def test_unordered_or_undecoded_inputs_are_refused(enc, texts, says):
    with pytest.raises(TypeError, match=says):
        enc.encode(texts)


def test_numpy_integers_are_accepted_and_bools_refused(enc):
    want = enc.encode(SENTENCES[:3], batch_size=2, truncate_dim=8)
    got = enc.encode(SENTENCES[:3], batch_size=np.int64(2), truncate_dim=np.int32(8))
    np.testing.assert_array_equal(got, want)
    for bad in ({"batch_size": True}, {"truncate_dim": True}, {"batch_size": 2.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            enc.encode(SENTENCES[:3], **bad)


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_model_name_is_refused(name):
    with pytest.raises(ModelNotFoundError, match="the model name is empty"):
        ferris_jax.load(name)


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("bge-small", "bge-small-en-v1.5"), ("e5-smal-v2", "e5-small-v2"),
     ("all-minilm-l6", "all-MiniLM-L6-v2")],
)  # fmt: skip
def test_a_preset_typo_gets_a_suggestion(typo, suggestion, tmp_path, capsys):
    with pytest.raises(ModelNotFoundError, match=f"did you mean .*'{suggestion}'"):
        ferris_jax.load(typo, cache_dir=str(tmp_path))
    assert main(["info", "-m", typo]) == 1
    assert "did you mean" in capsys.readouterr().err


# ---------------------------------------------------------------- what loads as before
def test_unknown_dense_options_are_ignored_with_a_warning(dense_st, tmp_path):
    """sentence-transformers ignores (and warns about) Dense options it does not know."""
    folder = tmp_path / "model"
    shutil.copytree(dense_st, folder)
    _edit_json(f"{_dense_dir(folder)}/config.json", _set("some_new_option", 1))(folder)
    with pytest.warns(
        UserWarning, match=r"ignoring unknown Dense option\(s\) \['some_new_option'\]"
    ):
        enc = ferris_jax.load(folder)
    np.testing.assert_array_equal(
        enc.encode(SENTENCES[:2]), ferris_jax.load(dense_st).encode(SENTENCES[:2])
    )


@pytest.mark.parametrize(
    ("change", "says"),
    [(_set("module_input_name", "token_embeddings"), "a Dense on 'token_embeddings'"),
     (_set("module_output_name", "other"), "a Dense on 'other'")],
)  # fmt: skip
def test_a_dense_on_another_output_is_refused(dense_st, tmp_path, change, says):
    folder = tmp_path / "model"
    shutil.copytree(dense_st, folder)
    _edit_json(f"{_dense_dir(folder)}/config.json", change)(folder)
    with pytest.raises(CheckpointError, match=says):
        ferris_jax.load(folder)


def test_modules_out_of_order_are_refused(dense_st, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(dense_st, folder)
    _edit_json("modules.json", lambda modules: [modules[0], *modules[:0:-1]])(folder)  # reversed
    with pytest.raises(CheckpointError, match=r"modules.json: module 2 \(Dense\) is out of place"):
        ferris_jax.load(folder)


def test_null_config_values_take_the_default(dense_st, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(dense_st, folder)
    _edit_json("config.json", _set("pad_token_id", None))(folder)
    _edit_json("tokenizer_config.json", _set("do_lower_case", None))(folder)
    np.testing.assert_array_equal(
        ferris_jax.load(folder).encode(SENTENCES[:2]),
        ferris_jax.load(dense_st).encode(SENTENCES[:2]),
    )


def test_a_tokenizer_option_of_the_wrong_type_names_the_file(dense_st, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(dense_st, folder)
    _edit_json("tokenizer_config.json", _set("do_lower_case", "yes"))(folder)
    with pytest.raises(CheckpointError, match=r"tokenizer_config.json: 'do_lower_case' must be"):
        ferris_jax.load(folder)


def test_numpy_integers_are_accepted_for_max_seq_length(dense_st):
    enc = ferris_jax.load(dense_st, max_seq_length=np.int64(24))
    assert enc.max_seq_length == 24
    enc.max_seq_length = np.int32(32)
    assert enc.max_seq_length == 32 and enc.tokenizer.max_seq_length == 32
    with pytest.raises(ValueError, match="max_seq_length must be an integer >= 2"):
        enc.max_seq_length = True


def test_debug_shows_the_traceback_of_a_missing_model(tmp_path):
    with pytest.raises(ModelNotFoundError):
        main(["--debug", "info", "-m", str(tmp_path / "nowhere")])
