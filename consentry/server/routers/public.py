"""The public routes: the signed log, verification, audit and health.

- ``GET /v1/log/checkpoint`` (text), ``GET /v1/log/proof/{index}``,
  ``POST /v1/verify``, ``GET /healthz``: no key (the log is public); ``/healthz``
  says ``degraded`` past the 1:N gallery budget (:mod:`.metrics`, which serves
  ``GET /metrics``).
- ``POST /v1/audit`` (grantee or admin key): provenance and registered faces of one
  image, at most ``Limits.max_faces`` faces (checked before anything is embedded or
  searched); a grantee gets a pseudonym of its own for every subject it holds no
  grant from, never a name or id (this is not a public face-recognition lookup).

Invariants: with a checkpointer, ``/v1/log/proof/{index}`` waits (bounded) for a
checkpoint covering ``index``; every proof is against a signed checkpoint. An
upload over ``MAX_BYTES_DEFAULT`` is a 413 before it is decoded.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response

from consentry.errors import ConsentryError, ImageTooLargeError
from consentry.faces.images import MAX_BYTES_DEFAULT, load_image
from consentry.provenance.audit import AuditReport, audit_data
from consentry.provenance.verify import mime_of_bytes, verify_media
from consentry.registry.checkpointer import tlog_proof
from consentry.server.auth import AuthAny
from consentry.server.errors import ApiError
from consentry.server.guard import parsed_all
from consentry.server.openapi_errors import errors
from consentry.server.routers.metrics import budget_warnings
from consentry.server.state import ServiceDep, ServiceState
from consentry.server.views import GranteeView, audit_for_grantee

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/log/checkpoint", response_class=PlainTextResponse, tags=["log"])
def checkpoint(state: ServiceDep) -> str:
    """The latest signed checkpoint (a signed note)."""
    return state.registry.latest_checkpoint()


@router.get("/v1/log/proof/{index}", tags=["log"], response_model=None)
def proof(state: ServiceDep, index: int, format: str = "json") -> dict[str, Any] | Response:
    """Inclusion proof of log entry ``index`` against the latest checkpoint, once
    a checkpoint covers it (waits about a second for the cadence, else signs one).
    ``format=tlog-proof``: the C2SP tlog-proof text instead of JSON."""
    if format not in ("json", "tlog-proof"):
        raise ApiError(422, "invalid_request", "format: json or tlog-proof")
    registry = state.registry
    if state.checkpointer is not None and 0 <= index < registry.log_size():
        state.checkpointer.covering(index)
    found = registry.inclusion_proof(index)
    if format == "tlog-proof":
        return PlainTextResponse(tlog_proof(found))
    return found.to_json()


def _upload(file: UploadFile) -> bytes:
    """The uploaded bytes, at most ``MAX_BYTES_DEFAULT`` (else 413)."""
    data = file.file.read(MAX_BYTES_DEFAULT + 1)
    if len(data) > MAX_BYTES_DEFAULT:
        raise ImageTooLargeError(f"more than {MAX_BYTES_DEFAULT} bytes")
    return data


@router.post("/v1/verify", tags=["provenance"])
def verify(
    http: Request,
    state: ServiceDep,
    file: Annotated[UploadFile, File(description="The image to verify.")],
) -> Any:
    """Verify an output's C2PA manifest and the consent it claims."""
    parsed_all(http, "file", 1)
    data = _upload(file)
    return verify_media(state.registry, data, mime_of_bytes(data)).to_json()


def _audit(state: ServiceState, data: bytes, filename: str) -> dict[str, Any]:
    """The audit of one image as the admin reads it; 422 over the face cap."""
    registry, bounds = state.registry, state.limits
    names = {s.id: s.display_name for s in registry.list_subjects()}
    too_many = ApiError(
        422, "too_many_faces", f"more than {bounds.max_faces} faces: at most that per job"
    )
    with state.faces_lock:
        try:  # the cap before anything is embedded or searched
            found = len(state.engine.detect(load_image(data).pixels))
        except ConsentryError:
            found = 0  # unreadable: audit_data reports the error
        if found > bounds.max_faces:
            raise too_many
        item = audit_data(registry, state.engine, state.gateway.index, names, data, filename)
    if item.faces > bounds.max_faces:
        raise too_many
    # the CLI report's item: severity and action included, face crops left out
    result: dict[str, Any] = AuditReport([item]).to_json()["items"][0]
    return result


@router.post("/v1/audit", tags=["provenance"], responses=errors(503))
def audit(
    http: Request,
    state: ServiceDep,
    caller: AuthAny,
    file: Annotated[UploadFile, File(description="The image to audit.")],
) -> Any:
    """Provenance, consent and registered faces of one image (no face crops).

    Needs a key. The admin sees subject ids and names; a grantee sees the ids
    and names of the subjects it holds a grant from and, for every other
    registered face, only a pseudonym of its own (never a name or id: this is
    not a public face-recognition lookup). At most the job face cap of faces.
    """
    parsed_all(http, "file", 1)
    result = _audit(state, _upload(file), file.filename or "upload")
    if caller is None:
        return result
    view = GranteeView.of(state.registry, caller.id)
    return audit_for_grantee(state.registry, view, result)


@router.get("/healthz", tags=["health"])
def healthz(state: ServiceDep) -> dict[str, Any]:
    """``{"status": "ok"}``, or ``"degraded"`` with ``warnings`` (still 200) when the
    registry holds more subjects than the 1:N calibration in force allows."""
    warnings = budget_warnings(state)
    if not warnings:
        return {"status": "ok"}
    return {"status": "degraded", "warnings": warnings}
