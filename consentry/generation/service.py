"""The HTTP service: the gateway, the registry's admin actions and its public log.

Routes (all JSON unless noted; errors are ``{"error": {"code", "message"}}``):

- ``POST /v1/check`` (grantee key): multipart, files ``images`` (0..8), fields
  ``purpose``, ``prompt``, ``prior``. The requester is always the grantee who holds
  the key: no field names a requester. A refusal is HTTP 200 with ``allowed: false``.
- ``POST /v1/generate`` and ``POST /v1/restore`` (grantee key): run a job through the
  gateway (pre-check, pipeline, post-check, release-time revocation check, signing).
  Released outputs come back as base64 signed PNGs; a refusal is a 200 with
  ``allowed: false`` and no outputs. Without a model folder these answer 503.
- ``POST /v1/grants``, ``POST /v1/grants/{id}/revoke``, ``GET /v1/grants``,
  ``POST /v1/subjects``, ``POST /v1/subjects/{id}/enroll``,
  ``POST /v1/subjects/{id}/erase`` and ``/opt-out`` (admin key; both final, both
  need ``"confirm": true``; an erasure's answer carries the warning that the person
  is no longer protected).
- ``POST /v1/audit`` (grantee or admin key): provenance and registered faces of one
  image, at most ``Limits.max_faces`` faces; a grantee gets a pseudonym of its own
  for every subject it holds no grant from, never a name or id.
- ``GET /v1/log/checkpoint`` (text), ``GET /v1/log/proof/{index}``, ``POST /v1/verify``,
  ``GET /healthz``: public.

Invariants
- Keys come as ``Authorization: Bearer <key>``. Grantee keys are checked by the
  registry; the admin key by the SHA-256 given to :func:`create_app`, compared in
  constant time. A grantee key never opens an admin route, nor the admin key a
  grantee route.
- A request body over ``max_body_bytes`` is refused with 413 before the app sees
  it: by its ``Content-Length``, and by counting what is read (chunked bodies).
- Handlers are sync ``def`` (run in the threadpool, so checks run concurrently)
  sharing one registry and one gateway; face analysis runs under one lock (the
  engines are not all thread-safe), taken only by a request that has images: a
  prompt-only check takes no lock of the service's (its write transaction takes
  the database's writer lock, as every decision must). The pipeline runs under
  another lock (one job at a time per process). ``serial=True`` is the old mode
  (every check under the face lock), kept as the benchmark's baseline.
- Checkpoints: with a ``checkpointer`` (what ``consentry serve`` gives) they are
  signed on its cadence, started and stopped (a last one signed) with the app's
  lifespan; a released output waits for one covering its decision;
  ``GET /v1/log/proof/{index}`` waits (bounded) for one covering ``index``.
  Without one, every decision signs a checkpoint (per-decision mode).
- The app follows the log while it runs: the identity index (and through it the
  consent state) is refreshed every ``follow_interval`` seconds (default
  ``DEFAULT_FOLLOW_INTERVAL`` = 0.2 s; ``serve --follow-interval``) in a
  background thread. How stale a check's view can be: each job refreshes the
  consent state once at its start (``Gateway._pre``), so its pre-check judges the
  log as it stood when the job started, never older; the follow interval only
  bounds how long a tail that refresh reads, and how old the state is that API-key
  authentication reads without a refresh (a hit: a signed grantee's key hash never
  changes; a miss, e.g. a grantee added since, follows the log first). An allow is
  re-checked inside its write transaction against the log's tail then
  (``record_decision``): a revocation, erasure or opt-out committed by any process
  after the pre-check's refresh still wins. A subject registered after that refresh
  is not a fact of the job (consent at the time of the check).
- A form body (multipart or urlencoded) is validated strictly before any parser
  sees it (:mod:`consentry.generation.multipart`): a malformed one is a 400
  ``malformed_body`` and nothing is logged; every part must be a field the route
  declares (once, unless a list; a file exactly where it takes a file), and the
  number of files the route receives must equal the number validated.
- Job parameters are bounded by the one :class:`~consentry.generation.policy.Limits`
  the CLI uses (same bounds, same wording) before anything runs: steps, size,
  strength, images (faces in the gateway); a job over a bound is a 422, never a
  partial run.
- A receipt sent to a grantee is :meth:`Receipt.for_grantee`: every subject the
  grantee holds no grant from is "a registered person" (reasons, subjects, faces)
  and other grantees' grants are not mentioned; the logged decision keeps the ids.
- Any unexpected exception is a 500 ``internal`` with no detail in the body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import types
import typing
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi import params as fastapi_params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
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
    RollbackError,
    SignatureError,
)
from consentry.faces.engine import FaceEngine
from consentry.faces.images import MAX_BYTES_DEFAULT
from consentry.generation.backends.base import Backend
from consentry.generation.gateway import CheckRequest, Gateway, Receipt, RunRequest, run_job
from consentry.generation.multipart import MultipartError, Part, boundary_of, validate_multipart
from consentry.generation.policy import REGISTERED_PERSON, redact_reasons
from consentry.limits import Limits
from consentry.registry.biometrics import ERASE_WARNING
from consentry.registry.checkpointer import Checkpointer, tlog_proof
from consentry.registry.models import Grantee, Prior
from consentry.registry.statements import PURPOSES
from consentry.registry.store import Registry, parse_until
from consentry.registry.views import grant_json, subject_json

__all__ = [
    "DEFAULT_FOLLOW_INTERVAL",
    "MAX_BODY_BYTES",
    "MAX_IMAGES",
    "ApiError",
    "create_app",
    "hash_admin_key",
]

log = logging.getLogger("consentry.service")

MAX_BODY_BYTES = 50 * 1024 * 1024
DEFAULT_FOLLOW_INTERVAL = 0.2  # seconds between background follows of the log
MAX_IMAGES = Limits().max_images
_FORM_PARTS = "consentry.form_parts"  # scope key: the parts the guard validated
_DRAIN_CAP = 64 * 1024 * 1024  # read and discard at most this much of an oversized body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def hash_admin_key(key: str) -> str:
    """The SHA-256 (hex) under which an admin key is stored."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiError(Exception):
    """An HTTP error with a stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# Most specific first: the first class an exception is an instance of decides.
_ERROR_MAP: tuple[tuple[type[ConsentryError], int, str], ...] = (
    (NotFoundError, 404, "not_found"),
    (ImageTooLargeError, 413, "image_too_large"),
    (ImageError, 422, "bad_image"),
    (InputError, 400, "bad_input"),
    (DuplicateError, 409, "conflict"),
    (ErasedError, 409, "erased"),
    (RegistryError, 409, "conflict"),
    (SignatureError, 403, "signature_required"),
    (GrantError, 403, "refused"),
    (EngineError, 503, "engine_unavailable"),
    (RollbackError, 503, "log_rolled_back"),
    (LogError, 500, "log_error"),
    (ProvenanceError, 422, "provenance"),
)


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(_error_body(code, message), status_code=status)


def _map_consentry(exc: ConsentryError) -> tuple[int, str]:
    for kind, status, code in _ERROR_MAP:
        if isinstance(exc, kind):
            return status, code
    return 400, "error"


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


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


async def _strict_form(request: Request) -> None:
    """Every part of a form body is a field the route declares, once unless it is a
    list, a file exactly where the route takes a file; else 400. Nothing is
    silently ignored (an image under a misspelt name would be dropped unseen).
    ``async``: pure computation on what the guard already validated, so it runs on
    the event loop instead of costing every request a hop to the thread pool."""
    parts: list[Part] | None = request.scope.get(_FORM_PARTS)
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


def _parsed_all(request: Request, name: str, parsed: int) -> None:
    """The parser handed the route as many ``name`` files as the validated body
    holds: a belt to the strict validation's braces (no parser differential)."""
    parts: list[Part] = request.scope.get(_FORM_PARTS) or []
    expected = sum(1 for p in parts if p.name == name)
    if expected != parsed:
        log.error("form parser differential on %s: %d != %d", name, expected, parsed)
        raise ApiError(400, "malformed_body", f"the body's {name!r} parts could not all be read")


class _GuardMiddleware:
    """Body size limit and the last-resort 500, as plain ASGI around the whole app."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def _send_json(self, send: Send, status: int, code: str, message: str) -> None:
        body = json.dumps(_error_body(code, message)).encode()
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        for name, value in scope.get("headers", []):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._send_json(send, 400, "bad_request", "bad Content-Length")
                    return
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(receive, send, 0, True)
            return
        # Buffer the body, counting, before the app sees any of it.
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            more = bool(message.get("more_body", False))
            if seen > self.max_body_bytes:
                await self._too_large(receive, send, seen, more)
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        chunks.clear()
        try:
            parts = _form_parts(scope, body)
        except MultipartError as exc:
            await self._send_json(send, 400, "malformed_body", f"malformed body: {exc}")
            return
        if parts is not None:
            scope[_FORM_PARTS] = parts
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


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <api key>")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise ApiError(401, "unauthorized", "give an API key: Authorization: Bearer <key>")
    return credentials.credentials


def _grantee_auth(request: Request, credentials: Credentials) -> Grantee:
    token = _token(credentials)
    registry: Registry = request.app.state.registry
    try:
        return registry.authenticate_grantee(token)
    except SignatureError:
        raise ApiError(401, "unauthorized", "unknown grantee API key") from None


def _admin_auth(request: Request, credentials: Credentials) -> None:
    token = _token(credentials)
    if not hmac.compare_digest(hash_admin_key(token), request.app.state.admin_digest):
        raise ApiError(401, "unauthorized", "this route needs the admin key")


def _grantee_or_admin(request: Request, credentials: Credentials) -> Grantee | None:
    """The grantee holding the key, or None for the admin key; else 401."""
    token = _token(credentials)
    if hmac.compare_digest(hash_admin_key(token), request.app.state.admin_digest):
        return None
    registry: Registry = request.app.state.registry
    try:
        return registry.authenticate_grantee(token)
    except SignatureError:
        raise ApiError(401, "unauthorized", "give a grantee or the admin API key") from None


AuthGrantee = Annotated[Grantee, Depends(_grantee_auth)]
AuthAny = Annotated[Grantee | None, Depends(_grantee_or_admin)]
_ADMIN = [Depends(_admin_auth)]


class GrantIn(BaseModel):
    subject: str = Field(description="Subject id or unique name.")
    grantee: str = Field(description="Grantee id or unique name.")
    purposes: list[str] = Field(description=f"Some of: {', '.join(PURPOSES)}.")
    until: str | None = Field(default=None, description="End, ISO 8601.")
    not_before: str | None = Field(default=None, description="Start, ISO 8601 (default now).")
    priors: list[str] = Field(default_factory=list, description="SHA-256 of covered priors.")


class RevokeIn(BaseModel):
    reason: str


class SubjectIn(BaseModel):
    name: str = Field(description="Display name.")
    aliases: list[str] = Field(default_factory=list, description="Names a prompt may use.")


class EraseIn(BaseModel):
    """Erasure and opt-out are final: ``confirm`` must be true (the CLI's ``--yes``)."""

    reason: str
    confirm: bool = False


class _GranteeView(typing.NamedTuple):
    """What one grantee may see of the registry: the subjects it holds a grant
    from (any state: it learnt their ids from that grant) and its grants."""

    requester: str
    visible: frozenset[str]
    grants: frozenset[str]

    @classmethod
    def of(cls, registry: Registry, grantee_id: str) -> _GranteeView:
        rows = registry.list_grants(grantee=grantee_id)
        return cls(
            grantee_id,
            frozenset(g.subject_id for g, _ in rows),
            frozenset(g.id for g, _ in rows),
        )

    def hidden_names(
        self, registry: Registry, subjects: Iterable[object], *, rows: bool = True
    ) -> list[str]:
        """Display names and aliases of the hidden subjects among ``subjects``: as the
        signed log holds them (the consent state, no database read), and with
        ``rows`` also as their rows say (an audit's text quotes the rows' names). A
        subject the followed log does not hold is looked up by its row."""
        state = registry.consent
        names: list[str] = []
        for subject in dict.fromkeys(str(s) for s in subjects):
            if subject in self.visible or not subject.startswith("sub_"):
                continue
            signed = state.subjects.get(subject)
            if signed is not None:
                names += [signed.display_name, *signed.aliases]
                if not rows:
                    continue
            try:
                row = registry.get_subject(subject)
            except ConsentryError:
                continue
            names += [row.display_name, *row.aliases]
        return names

    def receipt(self, registry: Registry, receipt: Receipt) -> Receipt:
        involved: list[object] = list(receipt.subjects)
        for face in receipt.faces:
            involved += list(typing.cast(list[object], face.get("subjects", [])))
        names = self.hidden_names(registry, involved, rows=False)  # reasons quote signed facts
        return receipt.for_grantee(self.requester, self.visible, self.grants, names)

    def pseudonym(self, registry: Registry, subject_id: str) -> str:
        """A stable name for a hidden subject, for this grantee only: HMAC-SHA256
        of (grantee, subject) under a key derived from the registry's master key,
        so two grantees' pseudonyms of one person differ and neither matches the
        pseudonyms signed into C2PA media."""
        key = registry.master_key.derive("grantee-pseudonym")
        message = f"{self.requester}\n{subject_id}".encode()
        return "person_" + hmac.new(key, message, hashlib.sha256).hexdigest()[:20]


def _audit_for_grantee(
    registry: Registry, view: _GranteeView, result: dict[str, Any]
) -> dict[str, Any]:
    """An audit item as a grantee may read it: every subject it holds no grant
    from as its per-grantee pseudonym, named "a registered person"; free-text
    fields redacted like a receipt's reasons."""
    findings: list[dict[str, Any]] = result["findings"]
    involved = [f["subject_id"] for f in findings] + list(result["provenance_subjects"])
    names = view.hidden_names(registry, involved)

    def text(value: str) -> str:
        if not value:
            return value
        return "; ".join(redact_reasons([value], view.requester, view.visible, view.grants, names))

    def shown(subject: str) -> str:
        return subject if subject in view.visible else view.pseudonym(registry, subject)

    for finding in findings:
        if finding["subject_id"] not in view.visible:
            finding["name"] = REGISTERED_PERSON
        finding["subject_id"] = shown(finding["subject_id"])
        finding["reason"] = text(finding["reason"])
    result["provenance_subjects"] = [shown(s) for s in result["provenance_subjects"]]
    result["consent"] = text(result["consent"])
    result["error"] = text(result["error"])
    return result


def _job_json(receipt: Receipt) -> dict[str, Any]:
    """A job receipt with its released outputs inlined as base64 signed PNGs."""
    outputs = [
        {
            "media_type": "image/png",
            "sha256": hashlib.sha256(data).hexdigest(),
            "data_base64": base64.b64encode(data).decode("ascii"),
        }
        for data in receipt.outputs
    ]
    return receipt.to_json() | {"outputs": outputs}


def create_app(
    registry: Registry,
    engine: FaceEngine,
    admin_key_sha256: str,
    *,
    refuse_unknown_faces: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_images: int | None = None,
    model_dir: Path | None = None,
    backend: Backend | None = None,
    limits: Limits | None = None,
    checkpointer: Checkpointer | None = None,
    wait_for_proof: bool = False,
    serial: bool = False,
    follow_interval: float | None = DEFAULT_FOLLOW_INTERVAL,
    owns_registry: bool = False,
) -> FastAPI:
    """The service for one open registry and one face engine.

    ``model_dir`` is the local diffusers folder that ``/v1/generate`` and
    ``/v1/restore`` run (loaded here, so a bad folder fails at start); ``backend``
    replaces the diffusers backend built from it (the same protocol). ``limits``
    (default ``Limits()``, the CLI's) bounds every job; ``max_images``, when given,
    overrides its image count only. ``checkpointer``: checkpoints on its cadence
    (started with the app), else one per decision; ``wait_for_proof``: a check
    waits for its proof and returns it; ``serial``: every check under one lock
    (the old mode); ``follow_interval``: seconds between background refreshes of
    the identity index and consent state (None: only per decision);
    ``owns_registry``: close the registry when the app shuts down.
    """

    admin_digest = admin_key_sha256.strip().lower()
    if len(admin_digest) != 64:
        raise InputError("the admin key hash must be a SHA-256 in hex")
    bounds = limits or Limits()
    if max_images is not None:
        bounds = replace(bounds, max_images=max_images)
    gateway = Gateway(
        registry,
        engine,
        refuse_unknown_faces=refuse_unknown_faces,
        limits=bounds,
        checkpointer=checkpointer,
        wait_for_proof=wait_for_proof,
    )
    faces_lock = threading.Lock()
    pipeline_lock = threading.Lock()
    if backend is None and model_dir is not None:
        from consentry.generation.backends.diffusers_backend import DiffusersBackend

        backend = DiffusersBackend(model_dir)  # loaded now: a bad folder fails at start

    def job_backend() -> Backend:
        if backend is None:
            raise ApiError(503, "no_model", "this server has no model: start it with --model DIR")
        return backend

    def bounded_job(
        images: int | None = None,
        steps: int | None = None,
        size: int | None = None,
        strength: float | None = None,
        prompt: str | None = None,
    ) -> None:
        """The one ``Limits``, with the CLI's wording; 422 before anything runs."""
        try:
            bounds.check_job(
                images=images, steps=steps, size=size, strength=strength, prompt=prompt
            )
        except JobLimitError as exc:
            code = "too_many_images" if exc.field == "images" else "bad_job"
            raise ApiError(422, code, str(exc)) from None

    def needs_model(prior_id: str | None) -> bool:
        """Every job runs the model but a personal restoration with an exemplars prior."""
        if prior_id is None:
            return True
        with registry.db.read() as session:
            row = session.get(Prior, prior_id)
        return row is None or row.kind != "exemplars"  # an unknown prior is refused later

    views: dict[str, tuple[int, _GranteeView]] = {}

    def view_of(grantee_id: str) -> _GranteeView:
        """The grantee's view, rebuilt only when a grant was added since: grants are
        append-only and a view holds grants in every state, so a view read after
        the log held ``n`` grants is still whole while it holds ``n``."""
        count = len(registry.consent.grants)
        cached = views.get(grantee_id)
        if cached is not None and cached[0] == count:
            return cached[1]
        view = _GranteeView.of(registry, grantee_id)  # rows read after the count
        views[grantee_id] = (count, view)
        return view

    def for_grantee(grantee: Grantee, receipt: Receipt) -> Receipt:
        """What the grantee may read of a receipt (the log keeps every id)."""
        return view_of(grantee.id).receipt(registry, receipt)

    def run(grantee: Grantee, request: RunRequest) -> dict[str, Any]:
        runner = job_backend() if needs_model(request.prior) else backend
        with pipeline_lock, faces_lock:
            receipt = run_job(gateway, request, runner)
        return _job_json(for_grantee(grantee, receipt))

    def face_work(has_images: bool) -> AbstractContextManager[object]:
        """The face lock for a request with images (or every check when serial)."""
        return faces_lock if has_images or serial else nullcontext()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if checkpointer is not None:
            checkpointer.start()
        if follow_interval is not None:
            gateway.index.follow(follow_interval)
        try:
            yield
        finally:
            gateway.index.stop()
            if checkpointer is not None:
                checkpointer.stop()  # signs a last checkpoint: nothing logged is left uncovered
            if owns_registry:
                registry.close()

    app = FastAPI(
        title="Consentry",
        version="1",
        description="Consent-aware likeness registry: gateway checks, grants, the signed log.",
        dependencies=[Depends(_strict_form)],
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.admin_digest = admin_digest
    app.state.gateway = gateway
    app.state.checkpointer = checkpointer
    app.state.faces_lock = faces_lock  # taken only by requests with face work

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(ConsentryError)
    async def _consentry_error(request: Request, exc: ConsentryError) -> JSONResponse:
        status, code = _map_consentry(exc)
        if status >= 500:
            log.error("%s on %s: %s", type(exc).__name__, request.url.path, exc)
            return _error_response(status, code, f"{type(exc).__name__} (see the server log)")
        return _error_response(status, code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for item in exc.errors():
            where = ".".join(str(p) for p in item.get("loc", ()))
            parts.append(f"{where}: {item.get('msg', 'invalid')}")
        return _error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return _error_response(exc.status_code, code, str(exc.detail))

    # ---------------------------------------------------------------- grantee
    @app.post("/v1/check", tags=["gateway"])
    def check(
        http: Request,
        grantee: AuthGrantee,
        purpose: Annotated[str, Form(description=f"One of: {', '.join(PURPOSES)}.")],
        images: Annotated[list[UploadFile] | None, File(description="Input images.")] = None,
        prompt: Annotated[str, Form()] = "",
        prior: Annotated[str | None, Form(description="Registered prior id.")] = None,
    ) -> JSONResponse:
        """Decide a job for the calling grantee; every decision is logged.

        A refusal is a 200 with ``allowed: false`` and its reasons.
        """
        files = list(images or [])
        _parsed_all(http, "images", len(files))
        bounded_job(images=len(files), prompt=prompt)
        if purpose not in PURPOSES:
            raise InputError(f"unknown purpose {purpose!r}: choose from {', '.join(PURPOSES)}")
        datas = [f.file.read() for f in files]
        request = CheckRequest(grantee.id, purpose, datas, prompt, prior or None)
        with face_work(bool(datas)):
            receipt = gateway.check(request)
        # the receipt's JSON is plain JSON values: rendered as is, no response model
        return JSONResponse(for_grantee(grantee, receipt).to_json())

    @app.post("/v1/generate", tags=["gateway"])
    def generate(
        grantee: AuthGrantee,
        prompt: Annotated[str, Form(description="What to generate.")],
        prior: Annotated[str | None, Form(description="Registered prior id.")] = None,
        steps: Annotated[int, Form()] = 20,
        size: Annotated[int, Form()] = 512,
        seed: Annotated[int, Form()] = 0,
    ) -> dict[str, Any]:
        """Generate for the calling grantee: checked, run, post-checked, logged, signed.

        A refusal is a 200 with ``allowed: false`` and no outputs.
        """
        bounded_job(steps=steps, size=size, prompt=prompt)
        return run(
            grantee,
            RunRequest(
                grantee.id,
                "generate",
                prompt,
                model_dir or Path(),
                None,
                prior or None,
                steps,
                size,
                seed,
            ),
        )

    @app.post("/v1/restore", tags=["gateway"])
    def restore(
        http: Request,
        grantee: AuthGrantee,
        image: Annotated[UploadFile, File(description="The image to restore.")],
        prompt: Annotated[str, Form()] = "a sharp photo",
        prior: Annotated[str | None, Form(description="Registered prior id.")] = None,
        steps: Annotated[int, Form()] = 20,
        size: Annotated[int, Form()] = 512,
        seed: Annotated[int, Form()] = 0,
        strength: Annotated[float, Form()] = 0.6,
    ) -> dict[str, Any]:
        """Restore an image for the calling grantee (img2img through the gateway)."""
        _parsed_all(http, "image", 1)
        bounded_job(images=1, steps=steps, size=size, strength=strength, prompt=prompt)
        data = image.file.read()
        return run(
            grantee,
            RunRequest(
                grantee.id,
                "restore",
                prompt,
                model_dir or Path(),
                data,
                prior or None,
                steps,
                size,
                seed,
                strength,
            ),
        )

    # ---------------------------------------------------------------- admin
    @app.post("/v1/subjects", status_code=201, tags=["admin"], dependencies=_ADMIN)
    def create_subject(body: SubjectIn) -> dict[str, Any]:
        """Register a subject (no key: their grants are made by the operator)."""
        row = registry.add_subject(body.name, body.aliases)
        registry.checkpoint()
        return subject_json(row)

    @app.post("/v1/subjects/{subject}/enroll", tags=["admin"], dependencies=_ADMIN)
    def enroll_subject(
        http: Request,
        subject: str,
        photos: Annotated[list[UploadFile], File(description="Enrollment photos.")],
        keep_photos: Annotated[bool, Form(description="Keep aligned photos, encrypted.")] = False,
    ) -> dict[str, Any]:
        """Enroll a subject's face from photos: all pass the quality gates, or none."""
        from consentry.identity.enroll import enroll_photo_bytes

        _parsed_all(http, "photos", len(photos))
        if not photos or len(photos) > bounds.max_images:
            raise ApiError(422, "bad_input", f"give 1..{bounds.max_images} photos")
        datas = [(p.filename or f"photo-{n}", p.file.read()) for n, p in enumerate(photos)]
        with faces_lock:
            row = enroll_photo_bytes(registry, engine, subject, datas, keep_photos)
        registry.checkpoint()
        return {
            "id": row.id,
            "subject": row.subject_id,
            "engine": row.engine,
            "photos": sum(1 for b in row.blobs if b["kind"] == "embedding"),
            "kept_photos": sum(1 for b in row.blobs if b["kind"] != "embedding"),
            "log_index": row.log_index,
        }

    @app.post("/v1/subjects/{subject}/erase", tags=["admin"], dependencies=_ADMIN)
    def erase(subject: str, body: EraseIn) -> dict[str, Any]:
        """Crypto-erase a subject's biometric data; final."""
        from consentry.registry.biometrics import erase_subject

        if not body.confirm:
            raise ApiError(422, "confirm_required", f"erasure is final; {ERASE_WARNING}")
        row = erase_subject(registry, subject, body.reason)
        registry.checkpoint()
        return {
            "id": row.id,
            "subject": row.subject_id,
            "log_index": row.log_index,
            "protected": False,
            "warning": ERASE_WARNING,
        }

    @app.post("/v1/subjects/{subject}/opt-out", tags=["admin"], dependencies=_ADMIN)
    def opt_out(subject: str, body: EraseIn) -> dict[str, Any]:
        """Opt a subject out: keep only what refusing needs; every job with their face,
        name or prior is refused from then on, whatever the grants; final."""
        from consentry.registry.biometrics import opt_out_subject

        if not body.confirm:
            raise ApiError(
                422, "confirm_required", "an opt-out is final: send confirm: true to proceed"
            )
        row = opt_out_subject(registry, subject, body.reason)
        registry.checkpoint()
        return {"id": row.id, "subject": row.subject_id, "log_index": row.log_index,
                "protected": True}  # fmt: skip

    @app.post("/v1/grants", status_code=201, tags=["admin"], dependencies=_ADMIN)
    def create_grant(body: GrantIn) -> dict[str, Any]:
        """Record a subject's consent for a grantee (subjects without keys only)."""
        row = registry.grant(
            body.subject,
            body.grantee,
            body.purposes,
            priors=body.priors,
            not_before=parse_until(body.not_before),
            not_after=parse_until(body.until),
        )
        registry.checkpoint()
        return grant_json(registry.get_grant(row.id), "active")

    @app.post("/v1/grants/{grant_id}/revoke", tags=["admin"], dependencies=_ADMIN)
    def revoke_grant(grant_id: str, body: RevokeIn) -> dict[str, Any]:
        """Revoke a grant; final."""
        row = registry.revoke(grant_id, body.reason)
        registry.checkpoint()
        return {
            "id": row.id,
            "grant": row.grant_id,
            "reason": row.reason,
            "created_at": row.created_at,
            "log_index": row.log_index,
        }

    @app.get("/v1/grants", tags=["admin"], dependencies=_ADMIN)
    def list_grants(
        subject: str | None = None, grantee: str | None = None, active: bool = False
    ) -> list[dict[str, Any]]:
        """Grants in log order with their status now."""
        rows = registry.list_grants(subject=subject, grantee=grantee, active_only=active)
        return [grant_json(g, s) for g, s in rows]

    # ---------------------------------------------------------------- public
    @app.get("/v1/log/checkpoint", response_class=PlainTextResponse, tags=["log"])
    def checkpoint() -> str:
        """The latest signed checkpoint (a signed note)."""
        return registry.latest_checkpoint()

    @app.get("/v1/log/proof/{index}", tags=["log"], response_model=None)
    def proof(index: int, format: str = "json") -> dict[str, Any] | Response:
        """Inclusion proof of log entry ``index`` against the latest checkpoint, once
        a checkpoint covers it (waits about a second for the cadence, else signs one).
        ``format=tlog-proof``: the C2SP tlog-proof text instead of JSON."""
        if format not in ("json", "tlog-proof"):
            raise ApiError(422, "invalid_request", "format: json or tlog-proof")
        if checkpointer is not None and 0 <= index < registry.log_size():
            checkpointer.covering(index)
        found = registry.inclusion_proof(index)
        if format == "tlog-proof":
            return PlainTextResponse(tlog_proof(found))
        return found.to_json()

    @app.post("/v1/verify", tags=["provenance"])
    def verify(
        http: Request, file: Annotated[UploadFile, File(description="The image to verify.")]
    ) -> Any:
        """Verify an output's C2PA manifest and the consent it claims."""
        from consentry.provenance.verify import mime_of_bytes, verify_media

        _parsed_all(http, "file", 1)

        data = file.file.read(MAX_BYTES_DEFAULT + 1)
        if len(data) > MAX_BYTES_DEFAULT:
            raise ImageTooLargeError(f"more than {MAX_BYTES_DEFAULT} bytes")
        return verify_media(registry, data, mime_of_bytes(data)).to_json()

    @app.post("/v1/audit", tags=["provenance"])
    def audit(
        http: Request,
        caller: AuthAny,
        file: Annotated[UploadFile, File(description="The image to audit.")],
    ) -> Any:
        """Provenance, consent and registered faces of one image (no face crops).

        Needs a key. The admin sees subject ids and names; a grantee sees the ids
        and names of the subjects it holds a grant from and, for every other
        registered face, only a pseudonym of its own (never a name or id: this is
        not a public face-recognition lookup). At most the job face cap of faces.
        """
        from consentry.faces.images import load_image
        from consentry.provenance.audit import audit_data

        _parsed_all(http, "file", 1)
        data = file.file.read(MAX_BYTES_DEFAULT + 1)
        if len(data) > MAX_BYTES_DEFAULT:
            raise ImageTooLargeError(f"more than {MAX_BYTES_DEFAULT} bytes")
        names = {s.id: s.display_name for s in registry.list_subjects()}
        too_many = ApiError(
            422, "too_many_faces", f"more than {bounds.max_faces} faces: at most that per job"
        )
        with faces_lock:
            try:  # the cap before anything is embedded or searched
                found = len(engine.detect(load_image(data).pixels))
            except ConsentryError:
                found = 0  # unreadable: audit_data reports the error
            if found > bounds.max_faces:
                raise too_many
            item = audit_data(
                registry, engine, gateway.index, names, data, file.filename or "upload"
            )
        if item.faces > bounds.max_faces:
            raise too_many
        result = asdict(item)
        for finding in result["findings"]:
            finding.pop("crop_png", None)
        if caller is None:
            return result
        return _audit_for_grantee(registry, _GranteeView.of(registry, caller.id), result)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # routers of other route groups are included here, before the guard wraps the app
    from consentry.generation.tiles_api import tiles_router

    app.include_router(tiles_router())  # GET /checkpoint, /tile/... (tlog-tiles)
    app.add_middleware(_GuardMiddleware, max_body_bytes=max_body_bytes)
    return app
