"""Static shapes: a bounded set of compiled programs, and a persistent cache across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
from helpers.texts import SENTENCES

from ferris_jax.batching import BucketPolicy, plan_batches


def test_bucket_policy_grid():
    policy = BucketPolicy.for_limits(64, 256)
    assert policy.batch_sizes == (1, 2, 4, 8, 16, 32, 64)
    assert policy.seq_lengths == (16, 24, 32, 48, 64, 96, 128, 192, 256)
    assert policy.shape_for(3, 17) == (4, 24)
    assert policy.shape_for(64, 256) == (64, 256)
    assert BucketPolicy.for_limits(100, 128).batch_sizes[-1] == 100
    assert BucketPolicy.for_limits(1, 8).seq_lengths == (8,)
    with pytest.raises(ValueError, match="no bucket"):
        policy.shape_for(65, 10)


def test_plan_sorts_by_length_and_covers_every_text():
    lengths = np.random.default_rng(0).integers(2, 256, size=1000)
    policy = BucketPolicy.for_limits(32, 256)
    plan = plan_batches(lengths, policy)
    rows = np.concatenate([b.texts for b in plan])
    assert sorted(rows.tolist()) == list(range(1000))
    assert all(np.all(np.diff(lengths[rows]) <= 0) for _ in [0])  # longest first
    for b in plan:
        assert b.shape[0] >= len(b.texts) and b.shape[1] >= lengths[b.texts].max()
    assert len({b.shape for b in plan}) <= len(policy.seq_lengths) + 1


def test_token_budget_shrinks_batches_of_long_texts_only():
    policy = BucketPolicy.for_limits(32, 256, max_batch_tokens=2048)
    assert [policy.rows_for(L) for L in (16, 64, 96, 128, 256)] == [32, 32, 16, 16, 8]
    lengths = np.array([256] * 20 + [100] * 20 + [10] * 70)
    plan = plan_batches(lengths, policy)
    assert sorted(np.concatenate([b.texts for b in plan]).tolist()) == list(range(110))
    for b in plan:
        assert b.shape[0] * b.shape[1] <= 2048 or b.shape[0] == 1
        assert b.shape[0] in policy.batch_sizes and b.shape[1] in policy.seq_lengths
    assert [b.shape for b in plan[:3]] == [(8, 256)] * 3  # 20 long texts and 4 of length 100
    assert BucketPolicy.for_limits(32, 512, max_batch_tokens=100).rows_for(512) == 1


def test_compiled_programs_stay_bounded(tiny_st):
    import ferris_jax

    path, _ = tiny_st
    enc = ferris_jax.load(path)
    rng = np.random.default_rng(0)
    words = " ".join(SENTENCES).split()
    texts = [" ".join(rng.choice(words, size=rng.integers(0, 150))) for _ in range(400)]
    enc.encode(texts, batch_size=32)
    first = enc.compiled_programs
    policy = BucketPolicy.for_limits(32, enc.max_seq_length)
    assert 1 < len(first) <= len(policy.seq_lengths) + 1
    enc.encode(texts[::-1], batch_size=32)
    enc.encode(texts[:100], batch_size=32)
    assert len(enc.compiled_programs) <= policy.max_programs
    assert set(first) <= set(enc.compiled_programs)
    assert enc.info()["compiled_programs"] == len(enc.compiled_programs)


def test_second_process_uses_the_persistent_cache(tiny_st, tmp_path):
    path, _ = tiny_st
    script = textwrap.dedent(f"""
        import json, ferris_jax
        from ferris_jax.runtime.compilation import cache_stats
        enc = ferris_jax.load({str(path)!r})
        enc.encode(["hello world", "a longer sentence " * 5])
        print(json.dumps({{**cache_stats(), "programs": len(enc.compiled_programs)}}))
    """)
    env = {**os.environ, "FERRIS_JAX_CACHE_DIR": str(tmp_path / "xla"), "JAX_PLATFORMS": "cpu"}
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        for _ in range(2)
    ]
    assert runs[0]["misses"] >= runs[0]["programs"] >= 1
    assert runs[1]["hits"] >= runs[1]["programs"] and runs[1]["misses"] == 0
    assert any((tmp_path / "xla").iterdir())


def test_progress_bar_only_when_asked_or_for_jobs_of_several_batches(tiny_st, capsys):
    import ferris_jax

    path, _ = tiny_st
    enc = ferris_jax.load(path)
    enc.encode(SENTENCES[:3], batch_size=32, show_progress_bar=True)
    assert "3/3" in capsys.readouterr().err
    enc.encode(SENTENCES[:3], batch_size=32)  # one batch: no bar, not even a delayed one
    enc.encode(SENTENCES[:3], batch_size=1, show_progress_bar=False)
    assert capsys.readouterr().err == ""


def test_repairing_passes_other_warnings_on_and_restores_the_warning_state():
    from ferris_jax.runtime.compilation import repairing_cache

    filters, show = list(warnings.filters), warnings.showwarning
    with pytest.warns(UserWarning, match="kept"), pytest.raises(ValueError), repairing_cache():
        warnings.warn("kept", stacklevel=1)
        raise ValueError("the compile failed")

    def compile_in_a_thread() -> None:
        with repairing_cache():
            time.sleep(0.01)

    threads = [threading.Thread(target=compile_in_a_thread) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert warnings.filters == filters and warnings.showwarning is show


class _Bar:
    """A stand-in for tqdm that records how far it was moved and what was done by then."""

    made: list[_Bar] = []  # noqa: RUF012
    events: list[tuple[str, int]] = []  # noqa: RUF012

    def __init__(self, total: int, **_: object):
        self.total = total
        _Bar.made.append(self)

    def update(self, n: int) -> None:
        _Bar.events.append(("bar", n))

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _Terminal:
    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def test_the_bar_counts_finished_texts_and_stays_off_non_terminals(tiny_st, monkeypatch):
    import ferris_jax
    from ferris_jax import encoder

    enc = ferris_jax.load(tiny_st[0], compilation_cache=False)
    monkeypatch.setattr(encoder, "tqdm", _Bar)
    _Bar.made.clear()
    texts = SENTENCES * 4
    enc.encode(texts, batch_size=2)  # stderr is not a terminal here: no bar unless asked
    assert _Bar.made == []
    monkeypatch.setattr(sys, "stderr", _Terminal())
    original = encoder.EmbeddedBatch.numpy

    def numpy(batch):  # a text counts as finished once its vector is on the host
        _Bar.events.append(("host", len(batch.indices)))
        return original(batch)

    monkeypatch.setattr(encoder.EmbeddedBatch, "numpy", numpy)
    _Bar.events.clear()
    enc.encode(texts, batch_size=2)
    (bar,) = _Bar.made
    hosted = [n for kind, n in _Bar.events[0::2] if kind == "host"]
    assert bar.total == len(texts) == sum(hosted)
    assert _Bar.events == [e for n in hosted for e in (("host", n), ("bar", n))]


@pytest.mark.parametrize("texts", ["one shape", "shapes compiled in parallel"])
@pytest.mark.parametrize("damage", ["truncated", "undeserializable"])
def test_unreadable_cache_entries_are_removed_with_one_warning(tiny_st, tmp_path, damage, texts):
    """JAX warns about a corrupt entry on every run and never rewrites it; we remove it once,
    say so naming the directory, and the run after next hits the cache again; also where the
    programs compile in parallel threads."""
    job = ["hello world"] if texts == "one shape" else ["hello world", "a long text " * 30]
    script = textwrap.dedent(f"""
        import json, warnings, ferris_jax
        from ferris_jax.runtime.compilation import cache_stats
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ferris_jax.load({str(tiny_st[0])!r}).encode({job!r})
        print(json.dumps({{**cache_stats(), "warnings": [str(w.message) for w in caught]}}))
    """)
    cache = tmp_path / "xla"
    env = {**os.environ, "FERRIS_JAX_CACHE_DIR": str(cache), "JAX_PLATFORMS": "cpu"}
    env["FERRIS_JAX_COMPILE_THREADS"] = "2"

    def run() -> dict:
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run()
    entries = sorted(cache.glob("*-cache"))
    assert first["misses"] >= 1 and entries and not first["warnings"]
    from jax._src.compilation_cache import compress_executable

    for entry in entries:
        if damage == "truncated":  # as by a full disk or a crash
            entry.write_bytes(entry.read_bytes()[:64])
        else:  # decompresses, but no jaxlib can load it (as from another jaxlib)
            entry.write_bytes(compress_executable(b"\0" * 64))
    damaged = {e: e.read_bytes() for e in entries}
    repaired = run()
    ours = [w for w in repaired["warnings"] if w.startswith("ferris-jax: the compilation cache")]
    assert ours and all(str(cache) in w for w in ours)
    assert len(ours) == 1 or damage == "undeserializable"  # one per compiling step at most
    assert not any("Error reading persistent compilation cache" in w for w in repaired["warnings"])
    assert not any(e.exists() and e.read_bytes() == damaged[e] for e in entries)
    rebuilt, again = run(), run()
    assert not rebuilt["warnings"] and not again["warnings"]
    assert again["hits"] >= 1 and again["misses"] == 0


def test_a_jobs_new_shapes_compile_together_in_parallel_threads(tiny_st, monkeypatch):
    """The new shapes of a chunk of texts compile at once, `$FERRIS_JAX_COMPILE_THREADS` at a
    time, into the same programs (and vectors) as one at a time."""
    import ferris_jax
    from ferris_jax import programs as programs_module

    rng = np.random.default_rng(1)
    words = " ".join(SENTENCES).split()
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 120))) for _ in range(200)]
    threads: set[str] = set()
    lower = programs_module.Programs.lower

    def recording_lower(self, *args):
        threads.add(threading.current_thread().name)
        return lower(self, *args)

    monkeypatch.setattr(programs_module.Programs, "lower", recording_lower)
    vectors = {}
    for count in ("1", "3"):
        monkeypatch.setenv("FERRIS_JAX_COMPILE_THREADS", count)
        threads.clear()
        enc = ferris_jax.load(tiny_st[0])
        calls: list[set] = []

        def recording(p, shapes, i, calls=calls, compile_all=enc.programs.compile_all):
            calls.append(set(shapes))
            return compile_all(p, shapes, i)

        monkeypatch.setattr(enc.programs, "compile_all", recording)
        vectors[count] = enc.encode(texts, batch_size=16)
        assert len(calls[0]) >= 3  # the first chunk brought several new shapes at once
        compiled_by_pool = {t for t in threads if t.startswith("ferris-compile")}
        assert (len(compiled_by_pool) >= 2) == (count == "3"), threads
        assert len(enc.compiled_programs) == len(set().union(*calls))
    np.testing.assert_array_equal(vectors["1"], vectors["3"])


def test_precompile_compiles_every_program_a_job_then_needs(tiny_st):
    import ferris_jax

    enc = ferris_jax.load(tiny_st[0])
    enc.precompile(batch_size=16)
    compiled, seconds = len(enc.compiled_programs), enc.compile_seconds
    assert compiled >= 3 and seconds > 0
    full = [" ".join(["word"] * n) for n in (3, 10, 20, 40, 60, 100) for _ in range(16)]
    enc.encode(full, batch_size=16)
    assert len(enc.compiled_programs) == compiled and enc.compile_seconds == seconds


def test_compile_threads_must_be_a_whole_number(monkeypatch):
    from ferris_jax.programs import compile_threads

    monkeypatch.setenv("FERRIS_JAX_COMPILE_THREADS", "4")
    assert compile_threads() == 4
    for bad in ("0", "two", ""):
        monkeypatch.setenv("FERRIS_JAX_COMPILE_THREADS", bad)
        with pytest.raises(ValueError, match="FERRIS_JAX_COMPILE_THREADS"):
            compile_threads()


def test_precompile_with_partial_batches_covers_every_job_at_that_batch_size(tiny_st):
    import ferris_jax

    enc = ferris_jax.load(tiny_st[0])
    shapes = enc.precompile(batch_size=8, partial_batches=True)
    assert sorted(shapes) == sorted(enc.compiled_programs)
    rng = np.random.default_rng(1)
    words = " ".join(SENTENCES).split()
    for count in (1, 3, 8, 13, 50):  # single queries, tails, several batches
        texts = [" ".join(rng.choice(words, size=rng.integers(0, 200))) for _ in range(count)]
        enc.encode(texts, batch_size=8)
        enc.encode(texts[0], batch_size=8)
    assert sorted(enc.compiled_programs) == sorted(shapes)


def _ferris(args: list[str], env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ferris_jax.cli", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_warmup_fills_the_cache_so_a_later_process_compiles_nothing(tiny_st, tmp_path):
    path, _ = tiny_st
    env = {**os.environ, "FERRIS_JAX_CACHE_DIR": str(tmp_path / "xla"), "JAX_PLATFORMS": "cpu"}
    first = _ferris(["warmup", "-m", str(path), "--batch-size", "8", "--json"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["compiled"] == report["programs"] > 10 and report["from_cache"] == 0
    assert report["cache"] == str(tmp_path / "xla") and report["batch_sizes"] == [8]

    again = _ferris(["warmup", "-m", str(path), "--batch-size", "8"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{report['programs']} programs" in again.stdout
    assert f"0 compiled, {report['programs']} already cached" in again.stdout

    job = textwrap.dedent(f"""
        import json, ferris_jax
        from helpers.texts import SENTENCES
        from ferris_jax.runtime.compilation import cache_stats
        enc = ferris_jax.load({str(path)!r})
        enc.encode(SENTENCES * 7, batch_size=8)
        enc.encode("one query", batch_size=8)
        print(json.dumps({{**cache_stats(), "programs": len(enc.compiled_programs)}}))
    """)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", job], env=env, capture_output=True, text=True,
                         timeout=300, check=True)  # fmt: skip
    stats = json.loads(run.stdout.strip().splitlines()[-1])
    assert stats["misses"] == 0 and stats["hits"] >= stats["programs"] >= 2


def test_warmup_without_a_usable_cache_is_one_line(tiny_st, tmp_path):
    (tmp_path / "a-file").write_text("")
    env = {**os.environ, "FERRIS_JAX_CACHE_DIR": str(tmp_path / "a-file" / "xla"),
           "JAX_PLATFORMS": "cpu"}  # fmt: skip
    result = _ferris(["warmup", "-m", str(tiny_st[0])], env, tmp_path)
    assert result.returncode == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("ferris-jax")]
    assert lines == [
        "ferris-jax: error: the persistent compilation cache is off on cpu (or its folder "
        "cannot be created): a warmup would last only as long as this process"
    ], result.stderr
