"""What every request passes before a route: the body-size guard, the strict form
check, and the last-resort 500.

Invariants
- A request body over ``max_body_bytes`` is refused with 413 before the app sees
  it: by its ``Content-Length``, and by counting what is read (chunked bodies).
  What the client is still sending is read and dropped (up to a cap) so it gets the
  413, not a reset connection.
- A form body (multipart or urlencoded) is validated strictly before any parser
  sees it (:mod:`consentry.server.multipart`): a malformed one is a 400
  ``malformed_body`` and nothing is logged; every part must be a field the route
  declares (once, unless a list; a file exactly where it takes a file), and the
  number of files the route receives must equal the number validated
  (:func:`parsed_all`). Nothing is silently ignored.
- Any unexpected exception is a 500 ``internal`` with no detail in the body (when
  no response has started; it is logged either way).
"""

from __future__ import annotations

import json
import logging
import types
import typing
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi import params as fastapi_params

from consentry.server.errors import ApiError, error_body
from consentry.server.multipart import MultipartError, Part, boundary_of, validate_multipart

__all__ = ["MAX_BODY_BYTES", "GuardMiddleware", "parsed_all", "strict_form"]

log = logging.getLogger("consentry.service")

MAX_BODY_BYTES = 50 * 1024 * 1024
FORM_PARTS = "consentry.form_parts"  # scope key: the parts the guard validated
_DRAIN_CAP = 64 * 1024 * 1024  # read and discard at most this much of an oversized body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _form_parts(scope: Scope, body: bytes) -> list[Part] | None:
    """The parts of a form body, validated strictly; None for a body that is not a
    form (JSON, none). :class:`MultipartError` for a malformed one: the request
    is answered 400 before any route, parser or log sees it."""
    types_given = [v for k, v in scope.get("headers", []) if k.lower() == b"content-type"]
    if len(types_given) > 1:
        raise MultipartError("the request has more than one Content-Type header")
    if not types_given:
        return None
    content_type = types_given[0].decode("latin-1")
    boundary = boundary_of(content_type)
    if boundary is not None:
        return validate_multipart(body, boundary)
    media = content_type.partition(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return None
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise MultipartError("malformed application/x-www-form-urlencoded body") from None
    return [Part(name, None, len(value)) for name, value in pairs]


class _FieldSpec(typing.NamedTuple):
    is_file: bool
    repeatable: bool


def _repeatable(annotation: object) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_repeatable(a) for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_origin(annotation) in (list, tuple, set, frozenset)


# id(route) -> (a weak reference to the route, its fields); routes are not hashable
_ROUTE_FIELDS: dict[int, tuple[weakref.ref[object], dict[str, _FieldSpec]]] = {}


def _route_fields(route: object) -> dict[str, _FieldSpec]:
    """The form fields a FastAPI route declares (its own and its dependencies'),
    worked out once per route (a route's declaration does not change)."""
    if route is None:
        return {}
    cached = _ROUTE_FIELDS.get(id(route))
    if cached is not None and cached[0]() is route:
        return cached[1]
    spec: dict[str, _FieldSpec] = {}
    pending = [getattr(route, "dependant", None)]
    while pending:
        dependant = pending.pop()
        if dependant is None:
            continue
        for field in dependant.body_params:
            info = field.field_info
            if isinstance(info, fastapi_params.Form):
                spec[field.alias] = _FieldSpec(
                    isinstance(info, fastapi_params.File), _repeatable(info.annotation)
                )
        pending.extend(dependant.dependencies)
    key = id(route)
    _ROUTE_FIELDS[key] = (weakref.ref(route, lambda _: _ROUTE_FIELDS.pop(key, None)), spec)
    return spec


async def strict_form(request: Request) -> None:
    """Every part of a form body is a field the route declares, once unless it is a
    list, a file exactly where the route takes a file; else 400. Nothing is
    silently ignored (an image under a misspelt name would be dropped unseen).
    ``async``: pure computation on what the guard already validated, so it runs on
    the event loop instead of costing every request a hop to the thread pool."""
    parts: list[Part] | None = request.scope.get(FORM_PARTS)
    if not parts:
        return
    fields = _route_fields(request.scope.get("route"))
    seen: set[str] = set()
    for part in parts:
        spec = fields.get(part.name)
        if spec is None:
            known = ", ".join(sorted(fields)) or "none"
            raise ApiError(
                400, "malformed_body", f"unknown form field {part.name!r} (fields: {known})"
            )
        if part.name in seen and not spec.repeatable:
            raise ApiError(400, "malformed_body", f"form field {part.name!r} is given twice")
        seen.add(part.name)
        if spec.is_file != (part.filename is not None):
            what = "a file (with a filename)" if spec.is_file else "a plain field, not a file"
            raise ApiError(400, "malformed_body", f"form field {part.name!r} must be {what}")


def parsed_all(request: Request, name: str, parsed: int) -> None:
    """The parser handed the route as many ``name`` files as the validated body
    holds: a belt to the strict validation's braces (no parser differential)."""
    parts: list[Part] = request.scope.get(FORM_PARTS) or []
    expected = sum(1 for p in parts if p.name == name)
    if expected != parsed:
        log.error("form parser differential on %s: %d != %d", name, expected, parsed)
        raise ApiError(400, "malformed_body", f"the body's {name!r} parts could not all be read")


def _declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length`` (the last one given); ValueError if bad."""
    declared: int | None = None
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            declared = int(value)
    return declared


class _TooLargeError(Exception):
    """The body is over the limit: ``seen`` bytes read, ``more`` still coming."""

    def __init__(self, seen: int, more: bool) -> None:
        super().__init__(seen, more)
        self.seen = seen
        self.more = more


class _GoneError(Exception):
    """The client went away before the body was whole."""


class GuardMiddleware:
    """Body size limit, strict form validation and the last-resort 500, as plain
    ASGI around the whole app."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def _send_json(self, send: Send, status: int, code: str, message: str) -> None:
        body = json.dumps(error_body(code, message)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _too_large(self, receive: Receive, send: Send, seen: int, more: bool) -> None:
        # Read and drop what the client is still sending (up to a cap), so it gets
        # the 413 rather than a reset connection mid-upload.
        while more and seen < self.max_body_bytes + _DRAIN_CAP:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            more = bool(message.get("more_body", False))
        await self._send_json(
            send, 413, "too_large", f"the request body is over {self.max_body_bytes} bytes"
        )

    async def _read_body(self, receive: Receive) -> bytes:
        """The whole body, counted as it is read: :class:`_TooLargeError` past the
        limit, :class:`_GoneError` if the client leaves."""
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                raise _GoneError
            chunk = message.get("body", b"")
            seen += len(chunk)
            more = bool(message.get("more_body", False))
            if seen > self.max_body_bytes:
                raise _TooLargeError(seen, more)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The body, bounded and read before the app sees any of it; None when the
        request was answered here (400, 413) or the client went away."""
        try:
            declared = _declared_length(scope)
        except ValueError:
            await self._send_json(send, 400, "bad_request", "bad Content-Length")
            return None
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(receive, send, 0, True)
            return None
        try:
            return await self._read_body(receive)
        except _TooLargeError as over:
            await self._too_large(receive, send, over.seen, over.more)
        except _GoneError:
            pass
        return None

    async def _run(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        """The app on the buffered body; a 500 if it raises before answering."""
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # waits for http.disconnect

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, replay, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await self._send_json(send, 500, "internal", "internal server error")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await self._buffered(scope, receive, send)
        if body is None:
            return
        try:
            parts = _form_parts(scope, body)
        except MultipartError as exc:
            await self._send_json(send, 400, "malformed_body", f"malformed body: {exc}")
            return
        if parts is not None:
            scope[FORM_PARTS] = parts
        await self._run(scope, receive, send, body)
