"""Prometheus metrics of one server (its own registry, so two apps in a process don't mix):
requests by endpoint and status, request latency, queue depth, and per pipeline job its
requests, texts and tokens. Tokens per second is `rate(ferris_jax_tokens_total[1m])`."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ferris_jax.serve.batcher import JobStats

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144)


class Metrics:
    """The server's metrics; `render()` is the `/metrics` body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], int]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ferris_jax_requests", "HTTP requests", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "ferris_jax_request_seconds",
            "request latency, from the body read to the response",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Gauge("ferris_jax_queue_depth", "requests waiting for the device", registry=r)
        self.queue.set_function(queue_depth)
        self.in_flight = Gauge("ferris_jax_requests_in_flight", "requests being served", registry=r)
        self.job_requests = Histogram(
            "ferris_jax_batch_requests",
            "requests per pipeline job",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.job_texts = Histogram(
            "ferris_jax_batch_texts", "texts per pipeline job", buckets=SIZE_BUCKETS, registry=r
        )
        self.job_tokens = Histogram(
            "ferris_jax_batch_tokens", "tokens per pipeline job", buckets=TOKEN_BUCKETS, registry=r
        )
        self.job_seconds = Histogram(
            "ferris_jax_batch_seconds",
            "seconds per pipeline job",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.texts = Counter("ferris_jax_texts", "texts embedded", registry=r)
        self.tokens = Counter(
            "ferris_jax_tokens", "tokens embedded (special tokens included)", registry=r
        )
        self.failed_jobs = Counter(
            "ferris_jax_failed_batches", "pipeline jobs that failed", registry=r
        )

    def job(self, stats: JobStats) -> None:
        """Record one pipeline job (the batcher's `on_job`)."""
        self.job_requests.observe(stats.requests)
        self.job_texts.observe(stats.texts)
        self.job_tokens.observe(stats.tokens)
        self.job_seconds.observe(stats.seconds)
        if stats.failed:
            self.failed_jobs.inc()
        else:
            self.texts.inc(stats.texts)
            self.tokens.inc(stats.tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
