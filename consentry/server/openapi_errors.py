"""The OpenAPI document tells the truth about errors: every operation lists the
statuses its route can answer, each with the one error body
``{"error": {"code", "message"}}`` (:class:`ErrorBody`, what
:func:`consentry.server.errors.error_body` writes), never FastAPI's default
``HTTPValidationError`` (FastAPI adds that only where no 422 is documented).

Which statuses an operation documents (:func:`document_errors`, installed by
``create_app``; read from the generated schema itself, so it holds for every route):

- from what every request passes: 413 for a route with a body (the guard counts
  every body), 400 for a form route (strict form check), 500 for all (last resort);
- from its security: 401 when it takes an API key (:mod:`.auth`, bearer);
- from its parameters: 400 and 422 when it has any (bad input; validation, answered
  in the error body by :func:`~consentry.server.errors.register_error_handlers`),
  404 with a path parameter (an unknown id);
- what the route declares itself with ``responses=errors(...)`` (409, 403, 503,
  202 for a held job...).

Invariant: a status documented here is answered with :class:`ErrorBody` (202 is
the one success status besides the route's own: a held job's receipt).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

__all__ = ["HELD", "ErrorBody", "ErrorDetail", "document_errors", "errors"]

REF = "#/components/schemas/ErrorBody"

DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request (a form that does not parse strictly, or bad input).",
    401: "No API key, or not a key this route takes.",
    403: "Refused: a signature or consent this action needs is missing or invalid.",
    404: "No such id.",
    409: "Conflict with the signed log's state (duplicate, erased, already reviewed).",
    413: "Body or image over the size limit.",
    422: "Invalid request: a field failed validation or a job is over a limit.",
    500: "Internal error (details only in the server log).",
    503: "Not available: no model, the face engine or the log is unavailable.",
}


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. unauthorized.")
    message: str = Field(description="What went wrong, for a person.")


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


Responses = dict[int | str, dict[str, Any]]

HELD: Responses = {
    202: {"description": "Held for a person's review: allowed false, held true, the decision id."}
}


def errors(*statuses: int) -> Responses:
    """``responses=`` entries for ``statuses``, each with the error body as JSON
    (also on a route whose own answer is text)."""
    content = {"application/json": {"schema": {"$ref": REF}}}
    return {s: {"description": DESCRIPTIONS[s], "content": content} for s in statuses}


_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def _statuses(method: str, operation: dict[str, Any]) -> set[int]:
    """The statuses an operation answers, read from what the schema says it takes."""
    found = {500}
    params = operation.get("parameters", [])
    body = operation.get("requestBody")
    if params or body:
        found |= {400, 422}  # bad input (InputError) and validation
    if any(p.get("in") == "path" for p in params):
        found.add(404)
    if method in ("post", "put", "patch"):
        found.add(413)
    if body and any(kind in body.get("content", {}) for kind in _FORMS):
        found.add(400)
    if operation.get("security"):
        found.add(401)
    return found


def _with_errors(schema: dict[str, Any]) -> dict[str, Any]:
    for ops in schema.get("paths", {}).values():
        for method, operation in ops.items():
            responses = operation.setdefault("responses", {})
            for status, entry in errors(*sorted(_statuses(method, operation))).items():
                if str(status) == "422" or str(status) not in responses:
                    responses[str(status)] = entry  # FastAPI's 422 is not what we answer
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for default in ("HTTPValidationError", "ValidationError"):
        components.pop(default, None)
    found = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(found.pop("$defs", {}))
    components["ErrorBody"] = found
    return schema


def document_errors(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI schema list every error status of every operation
    (the ones a route declares itself are kept), each with :class:`ErrorBody`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_errors(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
