"""Several processes as one run (`jax.distributed` over gloo on this machine): the same vectors
and train steps as one process on one device.

Two processes of two CPU devices each (four devices in one mesh, two per host) are started once
for the module (tests/helpers/host_worker.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.data import sts_sentences

import ferris_jax

PROCESSES = 2
DEVICES_PER_PROCESS = 2
TESTS = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(commands: list[list[str]], timeout: float = 600) -> None:
    """Start the processes of one run together; fail with their output if any fails."""
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}",
    }
    procs = [
        subprocess.Popen(
            c, cwd=TESTS, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for c in commands
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            p.kill()
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    assert not failed, "\n".join(
        f"--- process {i} (exit {p.returncode}):\n{out[-3000:]}"
        for i, (p, out) in enumerate(zip(procs, outputs, strict=True))
    )


@pytest.fixture(scope="module")
def two_hosts(tiny_st, tmp_path_factory):
    """What the two processes computed (process 0's copy)."""
    path, _ = tiny_st
    out = tmp_path_factory.mktemp("hosts") / "results.npz"
    coordinator = f"127.0.0.1:{free_port()}"
    worker = [sys.executable, "-m", "helpers.host_worker", coordinator, str(PROCESSES)]
    run_processes([[*worker, str(i), str(path), str(out)] for i in range(PROCESSES)])
    return {**np.load(out), "tuned": f"{out}.tuned"}


def test_the_run_spans_every_process_device(two_hosts):
    assert int(two_hosts["devices"]) == PROCESSES * DEVICES_PER_PROCESS


def test_encode_over_two_processes_equals_one_device(two_hosts, tiny_st):
    path, _ = tiny_st
    want = ferris_jax.load(path).encode(sts_sentences()[:300], batch_size=8)
    np.testing.assert_allclose(two_hosts["vectors"], want, atol=1e-6)


@pytest.mark.parametrize(
    "name, pack, mini_batch_size",
    [("padded", False, None), ("packed", True, None), ("cached", False, 4)],
)
def test_a_train_step_over_two_processes_equals_the_one_device_step(
    two_hosts, tiny_st, name, pack, mini_batch_size
):
    """Every process built the same global batch (10 triplets); the step over four devices of
    two processes gives one device's loss and, through SGD of rate 1, every gradient."""
    from helpers.training import sgd_step_gradients, sts_triplets

    path, _ = tiny_st
    examples = sts_triplets(10)
    loss, grads, _ = sgd_step_gradients(
        ferris_jax.load(path), examples, pack=pack, mini_batch_size=mini_batch_size
    )
    np.testing.assert_allclose(two_hosts[f"{name}_loss"], loss, rtol=1e-5)
    for i, gradient in enumerate(grads):
        np.testing.assert_allclose(two_hosts[f"{name}_grad_{i}"], gradient, rtol=1e-5, atol=1e-5)


def test_index_build_over_two_processes_merges_into_the_one_process_index(tiny_st, tmp_path):
    """`ferris-jax index build ... --processes 2 --process-id I`, once per process: each embeds
    every other document into its part, process 0 merges the parts; the index holds what one
    process builds (ids, texts, metadata, document records) and finds the same hits."""
    from helpers.data import lee_corpus

    from ferris_jax.cli import main
    from ferris_jax.retrieval.index import Index

    path, _ = tiny_st
    source = tmp_path / "lee.jsonl"
    with source.open("w", encoding="utf-8") as f:
        for i, text in enumerate(lee_corpus()[:30]):
            f.write(json.dumps({"id": f"lee-{i}", "text": text, "n": i}) + "\n")
    build = ["index", "build", str(source), "-m", str(path), "--max-tokens", "48", "--no-progress"]
    assert main([*build, "-o", str(tmp_path / "one")]) == 0
    coordinator = ["--coordinator", f"127.0.0.1:{free_port()}", "--processes", str(PROCESSES)]
    cli = [sys.executable, "-m", "ferris_jax", *build, "--devices", "local", *coordinator]
    run_processes(
        [[*cli, "-o", str(tmp_path / "two"), "--process-id", str(i)] for i in range(PROCESSES)]
    )

    one, two = Index.load(tmp_path / "one"), Index.load(tmp_path / "two")
    parts = sorted(p.name for p in (tmp_path / "two.parts").iterdir())
    assert parts == ["part-000-of-002", "part-001-of-002"]
    ids = [hit.id for hit in one.get(list(_ids(one)))]
    assert sorted(_ids(two)) == sorted(ids) and len(two) == len(one) > 30
    assert two.get(ids) == one.get(ids)  # texts, metadata, document ids
    assert two.chunking == one.chunking
    for document in ("lee-0", "lee-1", "lee-29"):
        assert two.documents.get(document) == one.documents.get(document)
    queries = lee_corpus()[40:60]
    for got, want in zip(two.search(queries, top_k=5), one.search(queries, top_k=5), strict=True):
        assert [h.id for h in got] == [h.id for h in want]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-6)


def test_fit_over_two_processes_follows_the_one_device_run(two_hosts, tiny_st, tmp_path_factory):
    """fit on every process (the same data and seed) over the four devices: one device's loss
    at every step, and the model process 0 saved embeds as the one-device model does."""
    from helpers.training import sts_pairs

    from ferris_jax.train.fit import fit
    from ferris_jax.train.losses import mnrl_loss

    path, _ = tiny_st
    enc = ferris_jax.load(path)
    history = fit(
        enc, sts_pairs(30), loss=mnrl_loss, epochs=1, batch_size=12, compute_dtype="float32"
    )
    np.testing.assert_allclose(two_hosts["fit_loss"], history.loss, rtol=1e-5)
    want = enc.encode(sts_sentences()[:20])
    np.testing.assert_allclose(two_hosts["fit_vectors"], want, atol=1e-5)
    saved = ferris_jax.load(two_hosts["tuned"])
    np.testing.assert_allclose(saved.encode(sts_sentences()[:20]), want, atol=1e-5)


def _ids(index) -> list[str]:
    return [row[0] for row in index._db.execute("SELECT id FROM items ORDER BY row")]
