"""The API's errors and the one handler that turns any error into a status code and a JSON body.

Body of every error response: ``{"error": {"code": "...", "message": "..."}}``.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipelines.errors import (
    ConfigError,
    InputError,
    PredcacheError,
    StoreError,
    UnknownModelError,
)

_log = logging.getLogger("pipelines.api")


class RequestError(InputError):
    """The request is malformed (bad key, bad JSON, too many keys)."""


class PayloadTooLargeError(RequestError):
    """The request body exceeds the documented maximum."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes; send fewer keys per batchGet")


class UnprocessableRowsError(RequestError):
    """Rows sent for online scoring cannot be fed to the model (missing input, wrong type, duplicate key)."""


class TooManyRowsError(UnprocessableRowsError):
    """More rows in one compute request than the documented maximum (422, like any row problem)."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} rows in one request; the maximum is {limit}: split the request")


class AuthError(PredcacheError):
    """No API key or a wrong one."""

    def __init__(self) -> None:
        super().__init__(
            "missing or invalid X-API-Key header; send one of the keys configured in PREDCACHE_API_KEYS"
        )


class ModelNotServedError(UnknownModelError):
    """The model has no active (published) version in the cache."""

    def __init__(self, model: str, *, available: list[str]) -> None:
        choices = ", ".join(available) if available else "none"
        # Not UnknownModelError's message: that one points at the models folder, this is about the cache.
        PredcacheError.__init__(
            self,
            f"unknown model '{model}': it has no published version in the cache; models served: {choices} "
            "(GET /v1/models)",
        )


class KeyNotFoundError(PredcacheError):
    """The model is served but has no visible prediction for the key."""

    def __init__(self, model: str, key: str) -> None:
        super().__init__(
            f"key '{key}' not found for model '{model}': no published run of its active version scored it"
        )


class ScorerClosedError(PredcacheError):
    """Online scoring was asked for after the server began shutting down."""

    def __init__(self) -> None:
        super().__init__("the server is shutting down and scores no more rows; retry on another instance")


#: (error class, HTTP status, error code); the first class in an error's MRO that is listed wins.
_STATUS: dict[type[BaseException], tuple[int, str]] = {
    PayloadTooLargeError: (413, "PAYLOAD_TOO_LARGE"),
    UnprocessableRowsError: (422, "INVALID_ROWS"),
    RequestError: (400, "INVALID_ARGUMENT"),
    InputError: (400, "INVALID_ARGUMENT"),
    AuthError: (401, "UNAUTHENTICATED"),
    ModelNotServedError: (404, "MODEL_NOT_FOUND"),
    UnknownModelError: (404, "MODEL_NOT_FOUND"),
    KeyNotFoundError: (404, "KEY_NOT_FOUND"),
    StoreError: (503, "UNAVAILABLE"),
    ScorerClosedError: (503, "UNAVAILABLE"),
    ConfigError: (500, "INTERNAL"),
    PredcacheError: (500, "INTERNAL"),
}
#: Messages that replace the error's own text in the response: a database error's text names hosts,
#: roles and driver internals, which the server log keeps and clients never see.
_PUBLIC_MESSAGES: dict[type[BaseException], str] = {
    StoreError: "the cache database is unavailable; retry shortly",
    ConfigError: "internal error; see the server log",
    PredcacheError: "internal error; see the server log",
}
_HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    422: "INVALID_ROWS",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
}

_HTTP_MESSAGES = {
    404: "no such path; the endpoints are listed in /openapi.json",
    405: "method not allowed on this path; see /openapi.json",
}


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def status_of(exc: BaseException) -> tuple[int, str, str]:
    """(status, code, message) for any exception; unknown ones are a 500 that hides its details."""
    if isinstance(exc, HTTPException):  # routing: unknown path, wrong method
        message = _HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
        return exc.status_code, _HTTP_CODES.get(exc.status_code, "HTTP_ERROR"), message
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            status, code = _STATUS[cls]
            return status, code, _PUBLIC_MESSAGES.get(cls, str(exc))
    return 500, "INTERNAL", "internal error; see the server log"


async def handle_error(request: Request, exc: Exception) -> Response:
    """The one exception handler: every error response of the API is built here."""
    status, code, message = status_of(exc)
    if status >= 500:
        _log.error("%s %s -> %d: %s", request.method, request.url.path, status, exc, exc_info=status == 500)
    headers = getattr(exc, "headers", None) if isinstance(exc, HTTPException) else None
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)
