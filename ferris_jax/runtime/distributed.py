"""Several processes (hosts) as one JAX program: `initialize` starts `jax.distributed` with CPU
collectives, `share` gives each process its deterministic part of the input, `barrier` waits for
every process.

Two ways to use several hosts:
- one model over every process's devices (`load(..., devices="all")` after `initialize`): the
  data-parallel train step, where each step's gradients are summed over all devices. Every
  process runs the same program on the same global batch (each builds it from the same data and
  seed) and puts its own rows on its devices;
- each process on its own devices (`devices="local"`) embedding its `share` of a corpus into an
  index part; process 0 merges the parts after a `barrier` (`Index.merge`). No collective runs
  while embedding, so hosts never wait for each other until the end.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import jax

T = TypeVar("T")

# How long a barrier waits for the slowest process: its share of a corpus may take hours.
BARRIER_TIMEOUT_S = 7 * 24 * 3600.0


@dataclasses.dataclass(frozen=True)
class Processes:
    """This process's place among the processes of one run."""

    index: int
    count: int

    @classmethod
    def current(cls) -> Processes:
        """As JAX sees it now (index 0 of 1 without `jax.distributed`)."""
        return cls(jax.process_index(), jax.process_count())


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: int = 300,
) -> Processes:
    """Join the run of `num_processes` processes coordinated at `coordinator` ("host:port",
    served by process 0), as `jax.distributed.initialize`, with gloo for the collectives of
    CPU devices (JAX has none across CPU processes otherwise). Call it first, before anything
    touches a JAX device; with no arguments JAX detects a cluster (SLURM, Open MPI, Kubernetes,
    Cloud TPU). Calling it again in the same run returns the same `Processes`.
    """
    if _started():
        return Processes.current()
    for name, value in (("num_processes", num_processes), ("process_id", process_id)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator, num_processes, process_id, initialization_timeout=timeout_s
    )
    return Processes.current()


def share(items: Iterable[T], processes: Processes | None = None) -> Iterable[T]:
    """This process's part of `items`, the same on every run: of a sequence, a contiguous
    slice (process 0 the first ~1/count, and so on: merged in process order, the parts keep
    the input's order); of any other iterable (a stream), every count-th item from this
    process's index. Every process must be given the same items."""
    processes = processes or Processes.current()
    if isinstance(items, Sequence):
        n, i, count = len(items), processes.index, processes.count
        return items[i * n // count : (i + 1) * n // count]
    return _every(items, processes.index, processes.count)


def _every(items: Iterable[T], start: int, step: int) -> Iterator[T]:
    return itertools.islice(items, start, None, step)


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
    """Wait until every process reaches the barrier `name` (alone: nothing to wait for).

    The coordination service's barrier, not a device collective: gloo's collectives give up
    after 30 s, and a process whose share took longer would fail the others. A process that
    dies is reported by the service's heartbeats, so the long timeout never hangs a run."""
    if jax.process_count() == 1:
        return
    _client().wait_at_barrier(f"ferris-jax:{name}", int(timeout_s * 1000))


def _client():
    """The coordination client `jax.distributed.initialize` started (None before)."""
    from jax._src.distributed import global_state  # no public accessor in JAX 0.4.35-0.10

    return global_state.client


def _started() -> bool:
    return _client() is not None
