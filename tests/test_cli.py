"""The `ferris-jax` command line, run in-process through `main` (and once as a real process)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import ferris_jax
from ferris_jax import cli
from ferris_jax.cli import main, split_lines

TEXTS = ["A man is eating food.", "", "Ein Mann isst Brot.", "  leading spaces", "東京は晴れ"]

_real_load = ferris_jax.load
_loaded: dict[str, ferris_jax.Encoder] = {}


def _cached_load(*args, **kwargs):
    """ferris_jax.load, run for real once per distinct set of arguments (errors are not cached)."""
    key = repr((args, sorted(kwargs.items())))
    if key not in _loaded:
        _loaded[key] = _real_load(*args, **kwargs)
    return _loaded[key]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(ferris_jax, "load", _cached_load)


@pytest.fixture(scope="module")
def encoder():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return _cached_load(dtype="float32", max_seq_length=None, backend=None)


@pytest.fixture
def input_file(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def _stderr_line(capsys) -> str:
    """The one line the command wrote to stderr."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    return err.strip()


def _read_jsonl(text: str) -> np.ndarray:
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["index"] for r in rows] == list(range(len(rows)))
    return np.array([r["embedding"] for r in rows], dtype=np.float32)


def _set_stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


# ---------------------------------------------------------------- embed
def test_embed_to_npy_matches_library(input_file, tmp_path, capsys, encoder):
    out = tmp_path / "vectors.npy"
    assert main(["embed", str(input_file), "-o", str(out)]) == 0
    summary = _stderr_line(capsys)
    assert "embedded 5 texts" in summary and "dim 384" in summary and str(out) in summary
    assert re.search(r"compiled \d+ programs? in \d+\.\d\d s", summary), summary
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, encoder.encode(TEXTS), rtol=0, atol=1e-6)
    assert sorted(os.listdir(tmp_path)) == ["texts.txt", "vectors.npy"]


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_embed_to_jsonl_file(input_file, tmp_path, capsys, encoder, suffix):
    out = tmp_path / f"vectors{suffix}"
    assert main(["embed", str(input_file), "--output", str(out)]) == 0
    _stderr_line(capsys)
    got = _read_jsonl(out.read_text(encoding="utf-8"))
    np.testing.assert_allclose(got, encoder.encode(TEXTS), rtol=0, atol=1e-6)


def test_embed_format_flag_overrides_suffix(input_file, tmp_path, capsys):
    out = tmp_path / "vectors.out"
    assert main(["embed", str(input_file), "-o", str(out), "--format", "npy"]) == 0
    assert np.load(out).shape == (len(TEXTS), 384)


def test_embed_to_stdout_is_jsonl(input_file, capsys, encoder):
    assert main(["embed", str(input_file)]) == 0
    captured = capsys.readouterr()
    assert "<stdout>" in captured.err and captured.err.count("\n") == 1
    np.testing.assert_allclose(_read_jsonl(captured.out), encoder.encode(TEXTS), atol=1e-6)


def test_embed_npy_to_stdout(input_file, capsysbinary, encoder):
    assert main(["embed", str(input_file), "-o", "-", "--format", "npy"]) == 0
    got = np.load(io.BytesIO(capsysbinary.readouterr().out))
    np.testing.assert_allclose(got, encoder.encode(TEXTS), atol=1e-6)


@pytest.mark.parametrize("args", [["embed"], ["embed", "-"]])
def test_embed_from_stdin(args, monkeypatch, capsys, encoder):
    _set_stdin(monkeypatch, "\n".join(TEXTS).encode("utf-8"))
    assert main(args) == 0
    got = _read_jsonl(capsys.readouterr().out)
    np.testing.assert_allclose(got, encoder.encode(TEXTS), atol=1e-6)


@pytest.mark.parametrize(
    ("data", "texts"),
    [
        ("a\n\nb\n", ["a", "", "b"]),
        ("a\n\nb", ["a", "", "b"]),
        ("\n\n", ["", ""]),
        ("a\r\n\r\nb\r\n", ["a", "", "b"]),
        ("\ufeffa\n b \n", ["a", " b "]),
        ("a\u2028b\x0cc\rd\n", ["a\u2028b\x0cc\rd"]),  # only \n (or \r\n) ends a line
        ("", []),
    ],
)
def test_lines_map_to_rows(data, texts, tmp_path, capsys, encoder):
    assert split_lines(data.removeprefix("\ufeff")) == texts
    path, out = tmp_path / "in.txt", tmp_path / "out.npy"
    path.write_bytes(data.encode("utf-8"))
    assert main(["embed", str(path), "-o", str(out)]) == 0
    got = np.load(out)
    assert got.shape == (len(texts), 384)
    if texts:
        np.testing.assert_allclose(got, encoder.encode(texts), atol=1e-6)


def test_embed_options_reach_encode(input_file, tmp_path, capsys, encoder):
    out = tmp_path / "out.npy"
    args = ["--truncate-dim", "32", "--prompt", "query: ", "--batch-size", "2", "--normalize"]
    assert main(["embed", str(input_file), "-o", str(out), "--no-progress", *args]) == 0
    want = encoder.encode(TEXTS, truncate_dim=32, prompt="query: ", normalize_embeddings=True)
    np.testing.assert_allclose(np.load(out), want, atol=1e-6)


@pytest.mark.filterwarnings("default::UserWarning")  # pyproject hides this warning in tests
def test_truncation_warning_is_one_line(tmp_path, capsys):
    path = tmp_path / "long.txt"
    path.write_text("word " * 50 + "\nshort\n", encoding="utf-8")
    assert main(["embed", str(path), "-o", str(tmp_path / "o.npy"), "--max-seq-length", "8"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("ferris-jax: warning: 1 of 2 texts exceed"), err


# ---------------------------------------------------------------- errors
def test_missing_input_file(tmp_path, capsys):
    missing = tmp_path / "no-such-file.txt"
    assert main(["embed", str(missing), "-o", str(tmp_path / "o.npy")]) == 1
    line = _stderr_line(capsys)
    assert line.startswith("ferris-jax: error: ") and str(missing) in line
    assert os.listdir(tmp_path) == []


def test_undecodable_input(tmp_path, capsys):
    path = tmp_path / "latin1.txt"
    path.write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    assert main(["embed", str(path)]) == 1
    line = _stderr_line(capsys)
    assert str(path) in line and "UTF-8" in line and "line 2" in line


@pytest.mark.parametrize("model", ["missing-dir", "empty-dir"])
def test_bad_model(model, input_file, tmp_path, capsys):
    path = tmp_path / model
    if model == "empty-dir":
        path.mkdir()  # exists but holds no checkpoint: CheckpointError
    assert main(["embed", str(input_file), "-m", str(path)]) == 1
    line = _stderr_line(capsys)
    assert line.startswith("ferris-jax: error: ") and str(path) in line


def test_truncate_dim_larger_than_model(input_file, capsys):
    assert main(["embed", str(input_file), "--truncate-dim", "100000"]) == 1
    assert "truncate_dim" in _stderr_line(capsys)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["embed", "--truncate-dim", "0"],
        ["embed", "--truncate-dim", "two"],
        ["embed", "--batch-size", "0"],
        ["embed", "--max-seq-length", "1"],
        ["embed", "--dtype", "float64"],
        ["embed", "--prompt", "x", "--prompt-name", "query"],
        ["embed", "-o", "vectors.txt"],
        ["embed", "--format", "csv"],
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, capsys):
    assert main(argv) == 2
    assert _stderr_line(capsys).startswith("ferris-jax: error: ")


def test_unwritable_output(input_file, tmp_path, capsys):
    out = tmp_path / "no-such-dir" / "o.npy"
    assert main(["embed", str(input_file), "-o", str(out)]) == 1
    assert "no-such-dir" in _stderr_line(capsys)
    (tmp_path / "dir.npy").mkdir()
    assert main(["embed", str(input_file), "-o", str(tmp_path / "dir.npy")]) == 1
    assert "is a directory" in _stderr_line(capsys)


# ---------------------------------------------------------------- atomic output
def test_failed_encode_leaves_existing_output_untouched(input_file, tmp_path, capsys):
    out = tmp_path / "o.npy"
    out.write_bytes(b"precious")
    assert main(["embed", str(input_file), "-o", str(out), "--prompt-name", "nope"]) == 1
    assert "nope" in _stderr_line(capsys)
    assert out.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["o.npy", "texts.txt"]


@pytest.mark.parametrize("suffix", [".npy", ".jsonl"])
def test_failed_write_leaves_no_partial_file(suffix, input_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / f"o{suffix}"
    out.write_bytes(b"precious")

    def full_disk(stream, embeddings):
        stream.write(b"partial" if "b" in stream.mode else "partial")
        stream.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, f"write_{suffix[1:]}", full_disk)
    assert main(["embed", str(input_file), "-o", str(out)]) == 1
    assert "No space left on device" in _stderr_line(capsys)
    assert out.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == [f"o{suffix}", "texts.txt"]


def test_overwrite_keeps_file_mode(input_file, tmp_path, capsys):
    out = tmp_path / "o.npy"
    out.write_bytes(b"old")
    out.chmod(0o640)
    assert main(["embed", str(input_file), "-o", str(out)]) == 0
    assert np.load(out).shape == (len(TEXTS), 384)
    assert out.stat().st_mode & 0o777 == 0o640


# ---------------------------------------------------------------- info and models
def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["model"].strip() == "all-MiniLM-L6-v2"
    assert lines["embedding_dimension"].strip() == "384"
    assert {"layer_norm", "jax", "devices", "platform", "compilation_cache"} <= set(lines)
    assert lines["process"].strip() == "0 of 1"
    every_cpu = ", ".join(f"{d} (cpu)" for d in jax.devices("cpu"))  # conftest.py's four
    assert lines["local_devices"].strip() == f"cpu={every_cpu}"
    value_columns = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in out.splitlines()}
    assert len(value_columns) == 1  # values aligned in one column


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "all-MiniLM-L6-v2" and info["layer_norm"]
    assert info["jax"] and info["devices"] == [info["device"]]  # the model's: one device
    assert len(info["local_devices"]["cpu"]) == len(jax.devices("cpu"))


def test_info_bad_model(tmp_path, capsys):
    assert main(["info", "-m", str(tmp_path / "nope")]) == 1
    _stderr_line(capsys)


def test_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "all-MiniLM-L6-v2" in out and "sentence-transformers/all-MiniLM-L6-v2" in out
    assert "e5-small-v2" in out and "intfloat/e5-small-v2" in out
    assert main(["models", "--json"]) == 0
    names = {p["name"] for p in json.loads(capsys.readouterr().out)}
    assert {"all-MiniLM-L6-v2", "e5-small-v2"} <= names


def test_help_and_version(capsys):
    assert main(["--help"]) == 0
    assert "embed" in capsys.readouterr().out
    assert main(["embed", "--help"]) == 0
    assert "line N of the input is row N" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert ferris_jax.__version__ in capsys.readouterr().out


# ---------------------------------------------------------------- the installed command
def test_console_script_pipes_stdin_to_stdout(tmp_path, encoder):
    script = Path(sys.executable).with_name("ferris-jax")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "ferris_jax.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*command, "embed"],
        input="\n".join(TEXTS).encode("utf-8"),
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    err = result.stderr.decode().splitlines()
    assert len(err) == 1 and err[0].startswith("ferris-jax: embedded 5 texts"), err
    got = _read_jsonl(result.stdout.decode("utf-8"))
    np.testing.assert_allclose(got, encoder.encode(TEXTS), atol=1e-6)
    assert os.listdir(tmp_path) == []  # nothing written beside the caller


def test_doctor_reports_platform_backend_layer_norm_and_cache(capsys):
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "cpu" and report["fallback_from"] is None
    assert "cpu" in report["platforms"] and report["packages"]["jax"]
    assert report["layer_norm"] and report["compilation_cache"]["directory"]
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert "backend:" in text and "layer_norm:" in text and "probe:" in text


def test_doctor_lists_the_devices_the_process_and_the_local_mesh(capsys):
    """conftest.py gives this process four CPU devices: all four are listed, in process 0 of 1,
    and load(devices="local") would place a model on the four in a mesh."""
    names = [str(d) for d in jax.local_devices(backend="cpu")]
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["process"] == {"index": 0, "count": 1}
    cpu = report["devices"]["cpu"]
    assert cpu["local"] == cpu["global"] == 4
    assert cpu["devices"] == [
        {"name": name, "id": i, "kind": "cpu", "platform": "cpu", "process_index": 0}
        for i, name in enumerate(names)
    ]
    assert report["devices_local"] == {
        "platform": "cpu",
        "count": 4,
        "mesh": {"data": 4},
        "devices": names,
    }

    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    column = len(lines[0]) - len(lines[0].split(":", 1)[1].lstrip())
    # Continuation lines (the devices) stay in the value column.
    assert all(not line[0].isspace() or line[:column].isspace() for line in lines)
    values = {line.split(":", 1)[0]: line[column:] for line in lines if not line[0].isspace()}
    assert values["process"] == "0 of 1 (one process)"
    assert values["devices"] == "cpu: 4 in this process, 4 in all"
    start = lines.index(next(line for line in lines if line.startswith("devices:")))
    assert [line[column:] for line in lines[start + 1 : start + 5]] == [
        f"  {name}  id={i}  kind='cpu'  platform=cpu  process=0" for i, name in enumerate(names)
    ]
    assert values["devices_local"] == (
        f'load(devices="local") -> 4 x cpu, mesh data=4: {", ".join(names)}'
    )


def test_doctor_text_shows_other_processes_devices():
    """After jax.distributed.initialize: this process's devices, and how many there are in all."""
    from ferris_jax.doctor import text_lines

    assert text_lines("process", {"index": 1, "count": 2}) == ["1 of 2 (jax.distributed)"]
    device = {"name": "cuda:4", "id": 4, "kind": "NVIDIA H100", "platform": "cuda"}
    listed = {"cuda": {"local": 1, "global": 2, "devices": [{**device, "process_index": 1}]}}
    assert text_lines("devices", listed) == [
        "cuda: 1 in this process, 2 in all",
        "  cuda:4  id=4  kind='NVIDIA H100'  platform=cuda  process=1",
    ]
    one = {"platform": "cuda", "count": 1, "mesh": None, "devices": ["cuda:4"]}
    assert text_lines("devices_local", one) == [
        'load(devices="local") -> 1 x cuda, no mesh: cuda:4'
    ]
    assert text_lines("backend", "cuda") is None


def test_doctor_unavailable_backend_is_one_line(capsys):
    assert main(["doctor", "--backend", "rocm"]) == 1
    assert "backend 'rocm' is not available here" in _stderr_line(capsys)


def test_doctor_exits_1_and_warns_once_when_the_accelerator_fails(capsys, monkeypatch):
    from ferris_jax.runtime import backend

    cpu = backend.detect_platforms()["cpu"]
    monkeypatch.setattr(backend, "detect_platforms", lambda: {"METAL": cpu, "cpu": cpu})
    monkeypatch.setattr(
        backend,
        "probe_device",
        lambda device, dtype: backend.ProbeResult("METAL", False, "layer_norm", "UNIMPLEMENTED"),
    )
    monkeypatch.setattr(backend, "_warned", set())
    monkeypatch.setattr(backend, "_probe_cache", {})
    assert main(["doctor", "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["backend"] == "cpu" and report["fallback_from"] == "METAL"
    assert report["devices_local"]["platform"] == "cpu"  # load(devices="local") falls back too
    assert captured.err.count("\n") == 1
    assert "warning: ferris-jax: METAL cannot run the model (layer_norm" in captured.err
