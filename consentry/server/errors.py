"""The service's errors: :class:`ApiError`, the one error body, and the one mapping
from the :mod:`consentry.errors` tree to HTTP statuses.

Invariants
- Every error a client sees is ``{"error": {"code", "message"}}`` (:func:`error_body`).
- A :class:`~consentry.errors.ConsentryError` is answered with its own ``code``
  (the class's, the same the CLI prints with ``--json``) and the status of the
  nearest class in ``type(exc).__mro__`` that :data:`ERROR_STATUS` holds: a class
  with its own entry gets it, any other its nearest mapped ancestor, so the outcome
  does not depend on the table's order. ``ConsentryError`` itself is mapped (400):
  every class of the tree maps to a status.
- A status of 500 or more says only the class name (details go to the server log),
  as does any unexpected exception (500 ``internal``, see :mod:`consentry.server.guard`).
- ``hint`` (CLI advice) is never sent.
- Codes that no class of the tree carries are the service's own: an :class:`ApiError`
  (``unauthorized``, ``malformed_body``, ``no_model``...), a request that fails
  validation (``invalid_request``) or an HTTP-level error (``not_found`` for an
  unknown path, ``too_large``, ``method_not_allowed``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from consentry.errors import (
    ConsentryError,
    DuplicateError,
    EngineError,
    ErasedError,
    GrantError,
    ImageError,
    ImageTooLargeError,
    InputError,
    JobLimitError,
    LogError,
    NotFoundError,
    ProvenanceError,
    RegistryError,
    ReviewError,
    RollbackError,
    SignatureError,
    StatementExpiredError,
)

__all__ = [
    "ERROR_STATUS",
    "ApiError",
    "error_body",
    "error_response",
    "http_status",
    "map_consentry",
    "register_error_handlers",
]

log = logging.getLogger("consentry.service")


class ApiError(Exception):
    """An HTTP error with a stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# Class -> HTTP status. Order is irrelevant: http_status walks the MRO. The code
# is the class's own (``ConsentryError.code``), not this table's business.
ERROR_STATUS: dict[type[ConsentryError], int] = {
    ConsentryError: 400,
    InputError: 400,
    NotFoundError: 404,
    JobLimitError: 422,
    ImageError: 422,
    ImageTooLargeError: 413,
    RegistryError: 409,
    DuplicateError: 409,
    ErasedError: 409,
    ReviewError: 409,
    SignatureError: 403,
    StatementExpiredError: 403,
    GrantError: 403,
    EngineError: 503,
    LogError: 500,
    RollbackError: 503,
    ProvenanceError: 422,
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


def http_status(
    kind: type[ConsentryError], table: dict[type[ConsentryError], int] = ERROR_STATUS
) -> int:
    """The status of the most specific class of ``kind``'s MRO that ``table`` maps."""
    for ancestor in kind.__mro__:
        found = table.get(ancestor)
        if found is not None:
            return found
    return 400  # unreachable for the default table (ConsentryError is mapped)


def map_consentry(
    exc: ConsentryError, table: dict[type[ConsentryError], int] = ERROR_STATUS
) -> tuple[int, str]:
    """(status, code) of ``exc``: the status by :func:`http_status`, its own code."""
    return http_status(type(exc), table), exc.code


def error_body(code: str, message: str) -> dict[str, Any]:
    """The one JSON shape of every error answer."""
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message)


async def _consentry_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConsentryError)
    status, code = map_consentry(exc)
    if status >= 500:
        log.error("%s on %s: %s", type(exc).__name__, request.url.path, exc)
        return error_response(status, code, f"{type(exc).__name__} (see the server log)")
    return error_response(status, code, str(exc))


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for item in exc.errors():
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return error_response(exc.status_code, code, str(exc.detail))


def register_error_handlers(app: FastAPI) -> None:
    """Answer every error class the app can raise in the one error body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ConsentryError, _consentry_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
