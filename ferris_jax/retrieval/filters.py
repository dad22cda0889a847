"""Metadata filters, as LangChain / Chroma users write them, turned into SQL over the items table.

    {"source": "a.md"}                               equality
    {"year": {"$gte": 2020}, "lang": {"$in": ["en", "de"]}}   operators, all must hold
    {"$or": [{"source": "a.md"}, {"source": "b.md"}]}         $and / $or of filters

Keys are metadata fields (JSON), or the columns "id" and "document_id"; any key is matched
exactly, quotes, dots and backslashes included. Values are bound as SQL parameters, never
pasted into the query.

The range operators ($gt, $gte, $lt, $lte) compare numbers with numbers and strings with
strings (letter by letter, which suits ISO dates), as MongoDB's do: a value of the other type
never matches. A string bound that reads as a number ("2020") is refused, since against numbers
it would match nothing, and against strings "999" > "2020": write the number. Integers beyond
64 bits compare as floats, as SQLite holds them.

A filter has at most `MAX_CONDITIONS` conditions, `MAX_VALUES` values in its $in/$nin lists
and `MAX_DEPTH` levels of nested $and/$or; a larger one is refused before any SQL is built
(SQLite itself stops at an expression depth of 1000).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

_OPERATORS = {
    "$eq": "=",
    "$ne": "!=",
    "$gt": ">",
    "$gte": ">=",
    "$lt": "<",
    "$lte": "<=",
}
_RANGES = ("$gt", "$gte", "$lt", "$lte")
_COLUMNS = ("id", "document_id")
_SCALARS = (str, int, float, bool)
_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")
_INT64 = (-(2**63), 2**63 - 1)

MAX_DEPTH = 32  # nested $and / $or levels
MAX_CONDITIONS = 1000  # (key, operator) pairs in all
MAX_VALUES = 10_000  # values of all $in / $nin lists together


def to_sql(filter: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """A WHERE clause and its parameters for `filter` (see the module docstring).

    Raises:
        ValueError: a malformed filter, a bound of the wrong type, or one past the size limits.
    """
    _check_size(filter)
    sql, params, _ = _where(filter)
    return sql, params


def _check_size(filter: Any) -> None:
    """Refuse a filter past the limits, walking it without recursion (so that no nesting,
    however deep, reaches Python's recursion limit)."""
    conditions = values = 0
    stack = [(filter, 0)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, Mapping):
            continue  # _where says what is wrong with it
        for key, condition in node.items():
            if key in ("$and", "$or"):
                if depth + 1 > MAX_DEPTH:
                    raise ValueError(
                        f"filter nests $and/$or more than {MAX_DEPTH} levels deep; flatten it "
                        "(one $and or $or takes a list of any length)"
                    )
                if isinstance(condition, list):
                    stack += [(f, depth + 1) for f in condition]
                continue
            ops = condition if isinstance(condition, Mapping) else {"$eq": condition}
            conditions += len(ops)
            for op, value in ops.items():
                if op in ("$in", "$nin") and isinstance(value, (list, tuple)):
                    values += len(value)
            if conditions > MAX_CONDITIONS:
                raise ValueError(
                    f"filter has more than {MAX_CONDITIONS} conditions; match many values of "
                    "one key with $in"
                )
            if values > MAX_VALUES:
                raise ValueError(
                    f"filter has more than {MAX_VALUES} values in its $in/$nin lists; filter "
                    "on a coarser key, or search without the filter and select the hits"
                )


def _where(filter: Any) -> tuple[str, list[Any], int]:
    """SQL, parameters and $and/$or nesting depth of `filter`."""
    if not isinstance(filter, Mapping) or not filter:
        raise ValueError(f"filter must be a non-empty dict, got {filter!r:.200}")
    clauses: list[tuple[str, list[Any], int]] = []
    for key, condition in filter.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not condition:
                raise ValueError(f"filter {key} takes a non-empty list of filters")
            sql, params, depth = _join([_where(f) for f in condition], key[1:].upper())
            clauses.append((sql, params, depth + 1))
            continue
        if not isinstance(key, str) or key.startswith("$"):
            raise ValueError(f"filter key {key!r} is not a metadata field or $and/$or")
        ops = condition if isinstance(condition, Mapping) else {"$eq": condition}
        if not ops:
            raise ValueError(f"filter {key!r}: no operator in {{}}; write {{{key!r}: value}}")
        clauses += [(*_condition(key, op, value), 0) for op, value in ops.items()]
    return _join(clauses, "AND")


def _join(clauses: list[tuple[str, list[Any], int]], joiner: str) -> tuple[str, list[Any], int]:
    """`clauses` joined by AND or OR, deepest first. SQLite parses `a AND b AND c ...` into an
    expression as deep as the list is long (it stops at a depth of 1000), and parentheses
    opened to the right of an operator take more of its parser's stack (about 100 entries)
    than those on the left: so a long list is joined as a chain of parenthesized chains of
    about its square root of clauses each, and the most nested clause comes first."""
    clauses = sorted(clauses, key=lambda c: -c[2])
    if len(clauses) == 1:
        return clauses[0]
    if len(clauses) > 16:
        size = math.isqrt(len(clauses) - 1) + 1
        clauses = [_join(clauses[i : i + size], joiner) for i in range(0, len(clauses), size)]
    sql = f" {joiner} ".join(c[0] for c in clauses)
    return f"({sql})", [p for c in clauses for p in c[1]], clauses[0][2]


def _condition(key: str, op: str, value: Any) -> tuple[str, list[Any]]:
    """SQL and parameters of one condition `key op value`."""
    if key in _COLUMNS:
        field, kind, field_params = key, None, []
    elif json.dumps(key)[1:-1] == key:  # a JSON path label matches the key as JSON writes it
        path = '$."' + key + '"'
        field, kind = "json_extract(metadata, ?)", "json_type(metadata, ?)"
        field_params = [path]
    else:  # quotes, backslashes, control or non-ASCII characters: compare the decoded key
        field = "(SELECT value FROM json_each(metadata) WHERE key = ?)"
        kind = "(SELECT type FROM json_each(metadata) WHERE key = ?)"
        field_params = [key]
    if op in _OPERATORS:
        bound = _scalar(key, op, value)
        if op not in _RANGES:
            return f"{field} {_OPERATORS[op]} ?", [*field_params, bound]
        types = _range_types(key, op, bound)
        if kind is None:
            return f"{field} {_OPERATORS[op]} ?", [*field_params, bound]
        return (
            f"({kind} IN ({types}) AND {field} {_OPERATORS[op]} ?)",
            [*field_params, *field_params, bound],
        )
    if op in ("$in", "$nin"):
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"filter {key!r}: {op} takes a non-empty list")
        bounds = [_scalar(key, op, v) for v in value]
        marks = ", ".join("?" * len(bounds))
        return f"{field} {'IN' if op == '$in' else 'NOT IN'} ({marks})", [*field_params, *bounds]
    raise ValueError(
        f"filter {key!r}: unknown operator {op!r} (use {', '.join([*_OPERATORS, '$in', '$nin'])})"
    )


def _scalar(key: str, op: str, value: Any) -> Any:
    """`value` as SQLite binds it: a string, bool or number (a float past 64-bit integers)."""
    if not isinstance(value, _SCALARS):
        raise ValueError(
            f"filter {key!r}: {op} compares with a string, number or bool, got "
            f"{type(value).__name__}"
        )
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"filter {key!r}: {op} NaN, which equals and orders with nothing")
    big = isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]
    if big:
        try:
            return float(value)
        except OverflowError:
            raise ValueError(
                f"filter {key!r}: {op} an integer of {len(str(abs(value)))} digits, beyond "
                "the range of a float"
            ) from None
    return value


def _range_types(key: str, op: str, bound: Any) -> str:
    """The JSON types (as SQLite's json_type names them) that `key op bound` compares with."""
    if isinstance(bound, bool):
        raise ValueError(f"filter {key!r}: {op} compares numbers or strings, got a bool")
    if isinstance(bound, str):
        if key not in _COLUMNS and _NUMBER.fullmatch(bound):
            raise ValueError(
                f"filter {key!r}: {op} {bound!r} is a string, and strings compare only with "
                f"strings, letter by letter; to compare numbers write {bound.strip()} without "
                "quotes"
            )
        return "'text'"
    if key in _COLUMNS:
        raise ValueError(
            f"filter {key!r}: {op} compares the {key} strings with a string, got {bound!r}"
        )
    return "'integer', 'real'"
