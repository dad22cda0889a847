"""Request bodies, checked: every malformed field becomes an `ApiError` that names it.

Pure functions of the decoded JSON and the limits; the app resolves what needs the model
(prompts, token ids). Shapes follow the APIs clients already speak:

    POST /v1/embeddings  OpenAI: input (str | [str] | [int] | [[int]]), model, encoding_format
                         ("float" | "base64"), dimensions; extensions prompt_name, input_type
    POST /embed          text-embeddings-inference: inputs (str | [str]), normalize, truncate,
                         truncation_direction, prompt_name, dimensions
    POST /v1/search      query (str | [str]), top_k, filter, by_document, rescore; mode
                         ("dense" | "lexical" | "hybrid"), weights ([dense, lexical]),
                         candidates, rerank (true: the served reranker)
    POST /rerank         text-embeddings-inference: query, texts, raw_scores, return_text,
                         truncate, truncation_direction
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

import orjson

from ferris_jax.serve.errors import ApiError, bad_request

ENCODING_FORMATS = ("float", "base64")
INPUT_TYPES = ("query", "document")
SEARCH_MODES = ("dense", "lexical", "hybrid")  # as `Index.search` takes them


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how much may wait.

    Args:
        max_inputs: texts per request (OpenAI's own limit is 2048).
        max_chars: characters per request, all texts together (token ids count one each).
        max_top_k: results per query of a search.
        max_candidates: candidates a search fuses and reranks per query at most.
        queue_size: requests waiting for the device at most; past it, HTTP 429.
        timeout: seconds a request may wait and run before it fails with HTTP 504.
        max_body_bytes: the largest request body read (HTTP 413 past it).
    """

    max_inputs: int = 2048
    max_chars: int = 2_000_000
    max_top_k: int = 1000
    max_candidates: int = 4000
    queue_size: int = 512
    timeout: float = 60.0
    max_body_bytes: int = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class EmbeddingsRequest:
    """`POST /v1/embeddings`: texts, or token ids of the model's own vocabulary."""

    texts: list[str] | None
    token_ids: list[list[int]] | None
    model: str | None
    encoding_format: str
    dimensions: int | None
    prompt_name: str | None
    input_type: str | None

    def __len__(self) -> int:
        return len(self.texts if self.texts is not None else self.token_ids or ())


@dataclasses.dataclass(frozen=True)
class EmbedRequest:
    """`POST /embed` (text-embeddings-inference)."""

    texts: list[str]
    normalize: bool
    truncate: bool
    prompt_name: str | None
    dimensions: int | None


@dataclasses.dataclass(frozen=True)
class SearchRequest:
    """`POST /v1/search`."""

    queries: list[str]
    single: bool
    top_k: int
    filter: dict[str, Any] | None
    by_document: bool
    rescore: bool
    mode: str = "dense"
    weights: tuple[float, float] | None = None
    candidates: int | None = None
    rerank: bool = False


@dataclasses.dataclass(frozen=True)
class RerankRequest:
    """`POST /rerank` (text-embeddings-inference)."""

    query: str
    texts: list[str]
    raw_scores: bool
    return_text: bool
    truncate: bool


def decode_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object (orjson; what it refuses, e.g. a lone surrogate, goes
    through the stdlib's json, so that the field at fault can be named)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(value, dict):
        raise ApiError(
            400, f"the body must be a JSON object, got {_kind(value)}", code="invalid_json"
        )
    return value


def embeddings_request(
    body: Mapping[str, Any], limits: Limits, dimension: int
) -> EmbeddingsRequest:
    """Check an OpenAI embeddings body (`dimension`: the model's, the bound of `dimensions`)."""
    if "input" not in body:
        raise bad_request("input", "is missing: give a string, a list of strings or token ids")
    texts, ids = _input(body["input"], limits)
    fmt = _optional(body, "encoding_format", str) or "float"
    if fmt not in ENCODING_FORMATS:
        raise bad_request("encoding_format", f"must be 'float' or 'base64', got {fmt!r}")
    input_type = _optional(body, "input_type", str)
    if input_type is not None and input_type not in INPUT_TYPES:
        raise bad_request("input_type", f"must be 'query' or 'document', got {input_type!r}")
    _optional(body, "user", str)  # accepted and ignored, as a client may send it
    return EmbeddingsRequest(
        texts=texts,
        token_ids=ids,
        model=_optional(body, "model", str),
        encoding_format=fmt,
        dimensions=_dimensions(body, dimension),
        prompt_name=_optional(body, "prompt_name", str),
        input_type=input_type,
    )


def embed_request(body: Mapping[str, Any], limits: Limits, dimension: int) -> EmbedRequest:
    """Check a text-embeddings-inference `/embed` body."""
    if "inputs" not in body:
        raise bad_request("inputs", "is missing: give a string or a list of strings")
    texts = _texts("inputs", body["inputs"], limits)
    _direction(body)
    normalize = _optional(body, "normalize", bool)
    truncate = _optional(body, "truncate", bool)
    return EmbedRequest(
        texts=texts,
        normalize=True if normalize is None else normalize,
        truncate=bool(truncate),
        prompt_name=_optional(body, "prompt_name", str),
        dimensions=_dimensions(body, dimension),
    )


def search_request(body: Mapping[str, Any], limits: Limits) -> SearchRequest:
    """Check a `/v1/search` body (the filter's own grammar is checked by the index's)."""
    if "query" not in body:
        raise bad_request("query", "is missing: give a query string or a list of them")
    queries = _texts("query", body["query"], limits)
    top_k = _optional(body, "top_k", int)
    top_k = 10 if top_k is None else top_k
    if not 1 <= top_k <= limits.max_top_k:
        raise bad_request("top_k", f"must be in 1..{limits.max_top_k}, got {top_k}")
    filter_ = _optional(body, "filter", dict)
    by_document = _optional(body, "by_document", bool)
    rescore = _optional(body, "rescore", bool)
    mode = _optional(body, "mode", str) or "dense"
    if mode not in SEARCH_MODES:
        raise bad_request("mode", f"must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
    weights = _weights(body.get("weights"), mode)
    candidates = _optional(body, "candidates", int)
    if candidates is not None and not 1 <= candidates <= limits.max_candidates:
        raise bad_request("candidates", f"must be in 1..{limits.max_candidates}, got {candidates}")
    return SearchRequest(
        queries=queries,
        single=isinstance(body["query"], str),
        top_k=top_k,
        filter=filter_ or None,
        by_document=bool(by_document),
        rescore=True if rescore is None else rescore,
        mode=mode,
        weights=weights,
        candidates=candidates,
        rerank=bool(_optional(body, "rerank", bool)),
    )


def rerank_request(body: Mapping[str, Any], limits: Limits) -> RerankRequest:
    """Check a text-embeddings-inference `/rerank` body (the texts count against the limits,
    the query's characters once per text: each pair holds it)."""
    if "query" not in body:
        raise bad_request("query", "is missing: give the query string")
    if not isinstance(body["query"], str):
        raise bad_request("query", f"must be a string, got {_kind(body['query'])}", "invalid_type")
    [query] = _texts("query", body["query"], limits)
    if "texts" not in body:
        raise bad_request("texts", "is missing: give a list of texts to rank")
    if not isinstance(body["texts"], list):
        raise bad_request(
            "texts", f"must be a list of strings, got {_kind(body['texts'])}", "invalid_type"
        )
    texts = _texts("texts", body["texts"], limits)
    _count("texts", len(texts), sum(map(len, texts)) + len(query) * len(texts), limits)
    _direction(body)
    return RerankRequest(
        query=query,
        texts=texts,
        raw_scores=bool(_optional(body, "raw_scores", bool)),
        return_text=bool(_optional(body, "return_text", bool)),
        truncate=bool(_optional(body, "truncate", bool)),
    )


# ---------------------------------------------------------------- fields
def _kind(value: Any) -> str:
    """A JSON value's type, as the client wrote it."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names.update({list: "an array", dict: "an object", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def _optional(body: Mapping[str, Any], field: str, kind: type) -> Any:
    """`body[field]` if present and not null, checked to be `kind` (a bool is no int)."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        want = {str: "a string", int: "an integer", bool: "true or false", dict: "an object"}
        raise bad_request(field, f"must be {want[kind]}, got {_kind(value)}", "invalid_type")
    return value


def _direction(body: Mapping[str, Any]) -> None:
    """TEI's `truncation_direction`: only "Right" (the end of a text is cut)."""
    direction = _optional(body, "truncation_direction", str) or "Right"
    if direction not in ("Right", "right"):
        raise bad_request(
            "truncation_direction", f"must be 'Right', the only one supported, got {direction!r}"
        )


def _weights(value: Any, mode: str) -> tuple[float, float] | None:
    """A hybrid search's `[dense, lexical]` fusion weights: two finite numbers >= 0, not both 0."""
    if value is None:
        return None
    if mode != "hybrid":
        raise bad_request("weights", f'applies to "mode": "hybrid" only, not {mode!r}')
    numbers = isinstance(value, list) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) for w in value
    )
    if not numbers or len(value) != 2:
        raise bad_request(
            "weights", "must be two numbers, [dense, lexical], e.g. [1, 0.5]", "invalid_type"
        )
    if not all(math.isfinite(w) and w >= 0 for w in value) or not any(value):
        raise bad_request("weights", f"must be finite, at least 0 and not both 0, got {value}")
    return float(value[0]), float(value[1])


def _dimensions(body: Mapping[str, Any], dimension: int) -> int | None:
    dims = _optional(body, "dimensions", int)
    if dims is not None and not 1 <= dims <= dimension:
        raise bad_request("dimensions", f"must be in 1..{dimension} for this model, got {dims}")
    return dims


def _count(field: str, n: int, chars: int, limits: Limits) -> None:
    if n == 0:
        raise bad_request(field, "is empty: give at least one input")
    if n > limits.max_inputs:
        raise ApiError(
            413,
            f"{field} has {n} inputs, more than this server's {limits.max_inputs} per request; "
            "split them over several requests",
            param=field,
            code="too_many_inputs",
        )
    if chars > limits.max_chars:
        raise ApiError(
            413,
            f"{field} has {chars} characters, more than this server's {limits.max_chars} per "
            "request; split them over several requests",
            param=field,
            code="too_many_characters",
        )


def _plain_texts(texts: list[Any]) -> bool:
    """Every item a non-empty string that UTF-8 can encode (checked in C, no loop per text)."""
    if not texts or set(map(type, texts)) != {str} or not all(texts):
        return False
    joined = "".join(texts)
    if joined.isascii():
        return True
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _texts(field: str, value: Any, limits: Limits) -> list[str]:
    """A string or a non-empty list of non-empty strings."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise bad_request(
            field, f"must be a string or a list of strings, got {_kind(value)}", "invalid_type"
        )
    if _plain_texts(texts):
        _count(field, len(texts), sum(map(len, texts)), limits)
        return texts
    for i, t in enumerate(texts):  # find the text at fault
        where = field if isinstance(value, str) else f"{field}[{i}]"
        if not isinstance(t, str):
            raise bad_request(where, f"must be a string, got {_kind(t)}", "invalid_type")
        if not t:
            raise bad_request(where, "is an empty string", "empty_input")
        if not t.isascii():
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as e:
                raise bad_request(
                    where, f"has a lone surrogate at character {e.start}", "invalid_text"
                ) from None
    _count(field, len(texts), sum(map(len, texts)), limits)
    return texts


def _input(value: Any, limits: Limits) -> tuple[list[str] | None, list[list[int]] | None]:
    """OpenAI's `input`: texts, or token-id lists (one list of ints is one input)."""
    if isinstance(value, list) and value and not isinstance(value[0], str):
        ids = [value] if all(isinstance(x, int) for x in value) else value
        for i, row in enumerate(ids):
            where = "input" if ids is not value else f"input[{i}]"
            if not isinstance(row, list) or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in row
            ):
                raise bad_request(
                    where,
                    "must be a string, or token ids (a list of integers); "
                    "a list may not mix strings and token ids",
                    "invalid_type",
                )
            if not row:
                raise bad_request(where, "is an empty list of token ids", "empty_input")
        _count("input", len(ids), sum(map(len, ids)), limits)
        return None, ids
    return _texts("input", value, limits), None
