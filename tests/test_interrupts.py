"""Ctrl-C acts at once, at any moment of a CLI run (importing JAX, loading, compiling, embedding):
exit status 130, one line, no output file and no temporary file. In the library, at most
`MAX_IN_FLIGHT` batches are ever queued on the device, so little work is left after an interrupt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import ClassVar

import numpy as np
import pytest
from helpers.texts import WORDS

import ferris_jax
from ferris_jax import pipeline


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
@pytest.mark.parametrize("delay", [0.2, 1.5, 4.0])
def test_ctrl_c_ends_a_cli_run_at_once(tiny_st, tmp_path, delay):
    rng = np.random.default_rng(0)
    lines = (" ".join(rng.choice(WORDS, rng.integers(3, 40))) for _ in range(300_000))
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "vectors.npy"
    argv = ["embed", str(texts), "-o", str(out), "-m", str(tiny_st[0]), "--batch-size", "8"]
    child = subprocess.Popen(
        [sys.executable, "-m", "ferris_jax", *argv],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"},
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    assert child.poll() is None, "the job ended before it could be interrupted"
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)
    assert time.monotonic() - sent < 2.0
    assert child.returncode == 130
    assert err.strip().splitlines()[-1] == "ferris-jax: error: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt"]


class _Output:
    """A stand-in for a device result: done only once waited for."""

    waiting: ClassVar[list[_Output]] = []

    def __init__(self):
        self.done = False
        _Output.waiting.append(self)

    def copy_to_host_async(self) -> None:
        pass

    def block_until_ready(self) -> _Output:
        self.done = True
        return self


def test_at_most_max_in_flight_batches_are_queued(tiny_st, monkeypatch):
    enc = ferris_jax.load(tiny_st[0], compilation_cache=False)
    monkeypatch.setattr(enc.programs, "get", lambda *a, **k: lambda *args: _Output())
    _Output.waiting.clear()
    queued = []
    texts = [" ".join(WORDS[i % 50 : i % 50 + 3]) for i in range(40)]
    for batch in enc.pipeline.run(
        texts,
        enc.params,
        policy=enc.bucket_policy(1),
        impls=enc.requested_impls(),
        on_batch=lambda b: queued.append(sum(not o.done for o in _Output.waiting)),
    ):
        assert batch.output is _Output.waiting[-1]
    assert len(queued) == 40 and max(queued) == pipeline.MAX_IN_FLIGHT
