"""One process of a several-host run (tests/test_several_hosts.py starts two of them):

    cd tests && python -m helpers.host_worker COORDINATOR PROCESS_COUNT PROCESS_ID MODEL OUT

It joins the run (`ferris_jax.runtime.distributed.initialize`, gloo collectives), loads MODEL
over every process's devices (`devices="all"`), and writes to OUT (process 0 only, as every
process computes the same): the vectors of 300 STS sentences, and the loss and gradients of one
train step on the same global batch (padded, packed, cached), and of `fit` (saved by process
0 to OUT.tuned), for the test to compare with one process on one device.
"""

from __future__ import annotations

import sys


def main(coordinator: str, count: str, process_id: str, model: str, out: str) -> None:
    from ferris_jax.runtime import distributed

    processes = distributed.initialize(coordinator, int(count), int(process_id))

    import numpy as np

    import ferris_jax
    from ferris_jax.train import fit
    from ferris_jax.train.losses import mnrl_loss
    from helpers.data import sts_sentences
    from helpers.training import sgd_step_gradients, sts_pairs, sts_triplets

    enc = ferris_jax.load(model, devices="all")
    assert enc.placement.is_multi_process, enc.placement
    results = {"devices": np.array(len(enc.placement.devices))}
    results["vectors"] = enc.encode(sts_sentences()[:300], batch_size=8)
    for name, pack, mini_batch_size in (
        ("padded", False, None),
        ("packed", True, None),
        ("cached", False, 4),
    ):
        loss, grads, _ = sgd_step_gradients(
            enc, sts_triplets(10), pack=pack, mini_batch_size=mini_batch_size
        )
        results[f"{name}_loss"] = np.asarray(loss)
        for i, gradient in enumerate(grads):
            results[f"{name}_grad_{i}"] = gradient
    # fit, then save on process 0 alone (the parameters are replicated: each holds them whole)
    history = fit(
        enc, sts_pairs(30), loss=mnrl_loss, epochs=1, batch_size=12, compute_dtype="float32"
    )
    results["fit_loss"] = np.asarray(history.loss)
    results["fit_vectors"] = enc.encode(sts_sentences()[:20])
    if processes.index == 0:
        enc.save(f"{out}.tuned")
    distributed.barrier("host_worker done")
    if processes.index == 0:
        np.savez(out, **results)


if __name__ == "__main__":
    main(*sys.argv[1:])
