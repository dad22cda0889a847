"""The server's batcher on a scripted encoder: jobs run back to back on the device thread (the
next job's batches are dispatched before the last one's results are delivered), and a batch
that fails on the device fails only the request at fault."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from ferris_jax.serve.batcher import Batcher


@dataclasses.dataclass
class _Computed:
    indices: np.ndarray
    lengths: np.ndarray
    truncated: np.ndarray
    text: str
    encoder: Scripted

    def numpy(self) -> np.ndarray:
        if self.text == "a":  # give the next job time to be prepared (or the batcher a chance
            self.encoder.prepared_ccc.wait(5)  # to show that it would not be, until the end)
            time.sleep(0.05)
        self.encoder.log.append(("deliver", self.text))
        if "CRASH" in self.text:
            raise RuntimeError("the device caught fire")
        return np.full((len(self.indices), 2), float(len(self.text)), np.float32)


class Scripted:
    """One text per batch; its vector is [len(text)] * 2; CRASH fails on the device; a job
    with HOLD waits for `release` before it is prepared."""

    embedding_dimension = 2

    def __init__(self):
        self.log: list = []
        self.release = threading.Event()
        self.holding = threading.Event()
        self.prepared_ccc = threading.Event()

    def prepare(self, texts, batch_size, prompt):
        if any("HOLD" in t for t in texts):
            self.holding.set()
            assert self.release.wait(30)
        if "ccc" in texts:
            self.prepared_ccc.set()
        return [(i, prompt + t) for i, t in enumerate(texts)]

    def dispatch(self, ready):
        i, text = ready
        self.log.append(("dispatch", text))
        one = np.array([i])
        return _Computed(one, np.array([len(text)]), np.array([False]), text, self)


def test_the_next_job_is_dispatched_before_the_last_one_is_delivered():
    encoder = Scripted()
    batcher = Batcher(encoder)
    try:
        first = batcher.submit(["HOLD", "a", "bb"])
        assert encoder.holding.wait(30)
        second = batcher.submit(["ccc"])  # waits while the first job is prepared
        encoder.release.set()
        np.testing.assert_array_equal(first.result(30).vectors, [[4, 4], [1, 1], [2, 2]])
        np.testing.assert_array_equal(second.result(30).vectors, [[3, 3]])
        assert second.result().tokens.tolist() == [3]
    finally:
        batcher.close(30)
    dispatched_ccc = encoder.log.index(("dispatch", "ccc"))
    assert dispatched_ccc < encoder.log.index(("deliver", "bb"))  # no gap between the jobs


def test_a_batch_failing_on_the_device_fails_only_its_own_request():
    encoder = Scripted()
    batcher = Batcher(encoder)
    try:
        hold = batcher.submit(["HOLD"])
        assert encoder.holding.wait(30)
        bad = batcher.submit(["fine", "CRASH"])
        good = batcher.submit(["good", "texts"])  # the same job as `bad`
        encoder.release.set()
        assert hold.result(30).vectors.tolist() == [[4, 4]]
        with pytest.raises(RuntimeError, match="caught fire"):
            bad.result(30)
        np.testing.assert_array_equal(good.result(30).vectors, [[4, 4], [5, 5]])
        assert batcher.submit(["after"]).result(30).vectors.tolist() == [[5, 5]]
    finally:
        batcher.close(30)


def test_closing_without_draining_cancels_what_waits_and_finishes_what_runs():
    encoder = Scripted()
    batcher = Batcher(encoder)
    running = batcher.submit(["HOLD"])
    assert encoder.holding.wait(30)
    waiting = [batcher.submit(["later"]), batcher.submit(["and later"])]
    closing = threading.Thread(target=batcher.close, kwargs={"timeout": 30, "drain": False})
    closing.start()
    while batcher.depth:  # close() cancels what waits before it waits for the threads
        time.sleep(0.001)
    encoder.release.set()
    closing.join(30)
    assert running.result(30).vectors.tolist() == [[4, 4]]
    assert all(future.cancelled() for future in waiting)
