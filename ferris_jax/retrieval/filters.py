"""Metadata filters, as LangChain / Chroma users write them, turned into SQL over the items table.

    {"source": "a.md"}                               equality
    {"year": {"$gte": 2020}, "lang": {"$in": ["en", "de"]}}   operators, all must hold
    {"$or": [{"source": "a.md"}, {"source": "b.md"}]}         $and / $or of filters

Keys are metadata fields (JSON), or the columns "id" and "document_id". Values are bound as
SQL parameters, never pasted into the query.
"""

from __future__ import annotations

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
_COLUMNS = ("id", "document_id")
_SCALARS = (str, int, float, bool)


def to_sql(filter: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """A WHERE clause and its parameters for `filter` (see the module docstring)."""
    if not isinstance(filter, Mapping) or not filter:
        raise ValueError(f"filter must be a non-empty dict, got {filter!r}")
    clauses, params = [], []
    for key, condition in filter.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not condition:
                raise ValueError(f"filter {key} takes a non-empty list of filters")
            parts = [to_sql(f) for f in condition]
            joiner = " AND " if key == "$and" else " OR "
            clauses.append("(" + joiner.join(p[0] for p in parts) + ")")
            params += [v for p in parts for v in p[1]]
            continue
        if not isinstance(key, str) or key.startswith("$"):
            raise ValueError(f"filter key {key!r} is not a metadata field or $and/$or")
        field = key if key in _COLUMNS else "json_extract(metadata, ?)"
        field_params = [] if key in _COLUMNS else ['$."' + key.replace('"', '""') + '"']
        ops = condition if isinstance(condition, Mapping) else {"$eq": condition}
        for op, value in ops.items():
            if op in _OPERATORS:
                _check_scalar(key, op, value)
                clauses.append(f"{field} {_OPERATORS[op]} ?")
                params += [*field_params, value]
            elif op in ("$in", "$nin"):
                if not isinstance(value, (list, tuple)) or not value:
                    raise ValueError(f"filter {key!r}: {op} takes a non-empty list")
                for v in value:
                    _check_scalar(key, op, v)
                marks = ", ".join("?" * len(value))
                clauses.append(f"{field} {'IN' if op == '$in' else 'NOT IN'} ({marks})")
                params += [*field_params, *value]
            else:
                raise ValueError(
                    f"filter {key!r}: unknown operator {op!r} (use "
                    f"{', '.join([*_OPERATORS, '$in', '$nin'])})"
                )
    return "(" + " AND ".join(clauses) + ")", params


def _check_scalar(key: str, op: str, value: Any) -> None:
    if not isinstance(value, _SCALARS):
        raise ValueError(
            f"filter {key!r}: {op} compares with a string, number or bool, got "
            f"{type(value).__name__}"
        )
