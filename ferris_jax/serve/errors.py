"""The one error every request path raises for a client-visible failure, and its two bodies:
OpenAI's `{"error": {"message", "type", "param", "code"}}` and text-embeddings-inference's
`{"error": "...", "error_type": "Validation"}` (what each API's own clients parse)."""

from __future__ import annotations

from typing import Any

# OpenAI error types by HTTP status, and TEI's error_type for the same statuses.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_TEI_TYPES = {400: "Validation", 413: "Validation", 422: "Validation", 429: "Overloaded"}


class ApiError(Exception):
    """A request that fails with an HTTP status and a message saying how to fix it.

    Args:
        status: the HTTP status (400 for a malformed request, 429 queue full, ...).
        message: what is wrong, naming the field, and how to fix it.
        param: the request field at fault (OpenAI's `param`), e.g. "input[3]"; None if none.
        code: a short machine-readable code (OpenAI's `code`), e.g. "queue_full".
        retry_after: seconds for a `Retry-After` header (429 and 503).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def openai_body(self) -> dict[str, Any]:
        kind = _OPENAI_TYPES.get(self.status, "server_error")
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }

    def tei_body(self) -> dict[str, Any]:
        kind = _TEI_TYPES.get(self.status, "Unhealthy" if self.status == 503 else "Backend")
        return {"error": self.message, "error_type": kind}

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


def bad_request(param: str, message: str, code: str = "invalid_value") -> ApiError:
    """A 400 naming `param`, the field at fault."""
    return ApiError(400, f"{param} {message}", param=param, code=code)
