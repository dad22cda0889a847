"""Metadata filters through a real index: any key matches (quotes and backslashes included),
range bounds compare within their type, integers past 64 bits compare, and filters past the
size limits are refused with a ValueError naming the limit, before any SQL is built."""

from __future__ import annotations

import numpy as np
import pytest

import ferris_jax
from ferris_jax.retrieval import filters
from ferris_jax.retrieval.index import Index

ODD_KEYS = ('say "hi"', "back\\slash", "tab\tkey", "naïve", "a.b", "it's")


@pytest.fixture(scope="module")
def index(tiny_st):
    path, _ = tiny_st
    encoder = ferris_jax.load(path)
    metadata = [
        {"year": 2019, "date": "2019-05-01", "big": 2**70, **{k: "x" for k in ODD_KEYS}},
        {"year": 2021, "date": "2021-01-31", "big": 1, **{k: "y" for k in ODD_KEYS}},
        {"year": 2023.5, "date": "2023-12-24"},
        {"year": "2020", "date": 20200101},  # the other type: never in a range of the first
    ]
    index = Index(encoder)
    vectors = np.random.default_rng(0).standard_normal((len(metadata), encoder.embedding_dimension))
    index.add_embeddings(
        vectors.astype(np.float32),
        ids=[f"r{i}" for i in range(len(metadata))],
        metadata=metadata,
        model=encoder.checkpoint.name,
    )
    return index


def _ids(index: Index, filter) -> list[str]:
    query = np.ones(index.dimension, np.float32)
    return sorted(hit.id for hit in index.search(query, top_k=10, filter=filter))


@pytest.mark.parametrize("key", ODD_KEYS)
def test_keys_with_quotes_backslashes_and_odd_characters_match(index, key):
    assert _ids(index, {key: "x"}) == ["r0"]
    assert _ids(index, {key: {"$in": ["x", "y"]}}) == ["r0", "r1"]
    assert _ids(index, {"$or": [{key: "y"}, {"year": 2023.5}]}) == ["r1", "r2"]


def test_range_bounds_compare_numbers_with_numbers_and_strings_with_strings(index):
    assert _ids(index, {"year": {"$gte": 2020}}) == ["r1", "r2"]  # not the string "2020"
    assert _ids(index, {"year": {"$lt": 2022}}) == ["r0", "r1"]
    assert _ids(index, {"date": {"$gte": "2021-01-01"}}) == ["r1", "r2"]  # not the number
    assert _ids(index, {"date": {"$lt": "2021-01"}}) == ["r0"]
    assert _ids(index, {"id": {"$gt": "r1"}}) == ["r2", "r3"]
    with pytest.raises(ValueError, match=r"'year': \$gte '2020' is a string.*write 2020 without"):
        _ids(index, {"year": {"$gte": "2020"}})
    with pytest.raises(ValueError, match=r"'year': \$lt compares numbers or strings, got a bool"):
        _ids(index, {"year": {"$lt": True}})
    with pytest.raises(ValueError, match=r"'year': \$eq NaN"):
        _ids(index, {"year": float("nan")})
    with pytest.raises(ValueError, match=r"'id': \$gt compares the id strings with a string"):
        _ids(index, {"id": {"$gt": 3}})


def test_integers_past_64_bits_compare_as_floats(index):
    assert _ids(index, {"big": 2**70}) == ["r0"]
    assert _ids(index, {"big": {"$gte": 2**69}}) == ["r0"]
    assert _ids(index, {"year": {"$lt": 2**70}}) == ["r0", "r1", "r2"]
    assert _ids(index, {"big": {"$in": [-(2**80), 1]}}) == ["r1"]
    with pytest.raises(ValueError, match=r"'big': \$gt an integer of 401 digits"):
        _ids(index, {"big": {"$gt": 10**400}})


def _nested(depth: int, leaf: dict, last: bool = True) -> dict:
    """`leaf` under `depth` levels of $and and $or, each with a neutral condition beside it."""
    for i in range(depth):
        op, other = ("$or", {"id": "none"}) if i % 2 else ("$and", {"year": {"$gt": i}})
        leaf = {op: [other, leaf] if last else [leaf, other]}
    return leaf


def test_filters_past_the_limits_are_refused_by_name(index):
    depth = f"more than {filters.MAX_DEPTH} levels deep"
    with pytest.raises(ValueError, match=depth):
        _ids(index, _nested(filters.MAX_DEPTH + 1, {"year": 2019}))
    with pytest.raises(ValueError, match=depth):  # not a RecursionError
        _ids(index, _nested(100_000, {"year": 2019}))
    conditions = {"$or": [{"year": i} for i in range(filters.MAX_CONDITIONS + 1)]}
    with pytest.raises(ValueError, match=f"more than {filters.MAX_CONDITIONS} conditions"):
        _ids(index, conditions)
    values = {"year": {"$in": [*range(filters.MAX_VALUES), 2019]}}
    with pytest.raises(ValueError, match=f"more than {filters.MAX_VALUES} values"):
        _ids(index, values)


def test_filters_at_the_limits_run(index):
    """SQLite stops at an expression depth of 1000 and a parser stack of about 100: the SQL of
    the largest filters allowed stays within both, however they nest."""
    deepest = _nested(filters.MAX_DEPTH, {'say "hi"': {"$gte": "x"}, "big": {"$lt": 2**70}})
    assert _ids(index, deepest) == ["r1"]
    assert _ids(index, _nested(filters.MAX_DEPTH, {"year": 2021}, last=False)) == ["r1"]
    flat = {"$or": [{"year": {"$lte": 2019 - i}} for i in range(filters.MAX_CONDITIONS)]}
    assert _ids(index, flat) == ["r0"]
    both = {"$and": [{f"k{i}": {"$ne": 0}} for i in range(filters.MAX_CONDITIONS)]}
    assert _ids(index, both) == []  # missing keys never compare
    listed = {"year": {"$in": [*range(1 - filters.MAX_VALUES, 0), 2019]}}
    assert _ids(index, listed) == ["r0"]
