"""The admin routes: the registry's state changes and its grant list. Every route
needs the admin key (a grantee key is a 401), and every change is logged and
checkpointed before it is answered.

- ``POST /v1/subjects``, ``POST /v1/subjects/{id}/enroll`` (photos, all pass the
  quality gates or none is kept).
- ``POST /v1/subjects/{id}/erase`` and ``/opt-out``: both final, both need
  ``"confirm": true`` (else 422 ``confirm_required``, nothing changes); an
  erasure's answer carries the warning that the person is no longer protected.
- ``POST /v1/grants``, ``POST /v1/grants/{id}/revoke``, ``GET /v1/grants``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile

from consentry.errors import InputError, TooManyImagesError
from consentry.identity.enroll import enroll_photo_bytes
from consentry.registry.biometrics import erase_subject, erase_warning, opt_out_subject
from consentry.registry.store import parse_until
from consentry.registry.views import grant_json, subject_json
from consentry.server.auth import ADMIN
from consentry.server.errors import ApiError
from consentry.server.guard import parsed_all
from consentry.server.models import EraseIn, GrantIn, RevokeIn, SubjectIn
from consentry.server.openapi_errors import errors
from consentry.server.state import ServiceDep

__all__ = ["router"]

router = APIRouter(tags=["admin"], dependencies=ADMIN)


@router.post("/v1/subjects", status_code=201, responses=errors(409))
def create_subject(state: ServiceDep, body: SubjectIn) -> dict[str, Any]:
    """Register a subject (no key: their grants are made by the operator)."""
    row = state.registry.add_subject(body.display_name, body.aliases)
    state.registry.checkpoint()
    return subject_json(row)


@router.post("/v1/subjects/{subject}/enroll", responses=errors(409, 503))
def enroll_subject(
    http: Request,
    state: ServiceDep,
    subject: str,
    photos: Annotated[list[UploadFile], File(description="Enrollment photos.")],
    keep_photos: Annotated[bool, Form(description="Keep aligned photos, encrypted.")] = False,
) -> dict[str, Any]:
    """Enroll a subject's face from photos: all pass the quality gates, or none."""
    parsed_all(http, "photos", len(photos))
    most = state.limits.max_images
    if not photos:  # the same codes and statuses as the exception tree's (README table)
        raise InputError("give at least one photo to enroll")
    if len(photos) > most:
        raise TooManyImagesError(f"{len(photos)} photos: give at most {most}")
    datas = [(p.filename or f"photo-{n}", p.file.read()) for n, p in enumerate(photos)]
    with state.faces_lock:
        row = enroll_photo_bytes(state.registry, state.engine, subject, datas, keep_photos)
    state.registry.checkpoint()
    return {
        "id": row.id,
        "subject": row.subject_id,
        "engine": row.engine,
        "photos": sum(1 for b in row.blobs if b["kind"] == "embedding"),
        "kept_photos": sum(1 for b in row.blobs if b["kind"] != "embedding"),
        "log_index": row.log_index,
    }


@router.post("/v1/subjects/{subject}/erase", responses=errors(409))
def erase(state: ServiceDep, subject: str, body: EraseIn) -> dict[str, Any]:
    """Crypto-erase a subject's biometric data; final."""
    warning = erase_warning(state.registry, subject)  # fitted to a subject who opted out
    if not body.confirm:
        raise ApiError(422, "confirm_required", f"erasure is final; {warning}")
    row = erase_subject(state.registry, subject, body.reason)
    state.registry.checkpoint()
    return {
        "id": row.id,
        "subject": row.subject_id,
        "log_index": row.log_index,
        "protected": False,
        "warning": warning,
    }


@router.post("/v1/subjects/{subject}/opt-out", responses=errors(409))
def opt_out(state: ServiceDep, subject: str, body: EraseIn) -> dict[str, Any]:
    """Opt a subject out: keep only what refusing needs; every job with their face,
    name or prior is refused from then on, whatever the grants; final."""
    if not body.confirm:
        raise ApiError(
            422, "confirm_required", "an opt-out is final: send confirm: true to proceed"
        )
    row = opt_out_subject(state.registry, subject, body.reason)
    state.registry.checkpoint()
    return {"id": row.id, "subject": row.subject_id, "log_index": row.log_index,
            "protected": True}  # fmt: skip


@router.post("/v1/grants", status_code=201, responses=errors(403, 404, 409))
def create_grant(state: ServiceDep, body: GrantIn) -> dict[str, Any]:
    """Record a subject's consent for a grantee (subjects without keys only)."""
    registry = state.registry
    row = registry.grant(
        body.subject,
        body.grantee,
        body.purposes,
        priors=body.priors,
        not_before=parse_until(body.not_before),
        not_after=parse_until(body.not_after),
    )
    registry.checkpoint()
    return grant_json(registry.get_grant(row.id), "active")


@router.post("/v1/grants/{grant_id}/revoke", responses=errors(409))
def revoke_grant(state: ServiceDep, grant_id: str, body: RevokeIn) -> dict[str, Any]:
    """Revoke a grant; final."""
    row = state.registry.revoke(grant_id, body.reason)
    state.registry.checkpoint()
    return {
        "id": row.id,
        "grant": row.grant_id,
        "reason": row.reason,
        "created_at": row.created_at,
        "log_index": row.log_index,
    }


@router.get("/v1/grants")
def list_grants(
    state: ServiceDep,
    subject: str | None = None,
    grantee: str | None = None,
    active: bool = False,
) -> list[dict[str, Any]]:
    """Grants in log order with their status now."""
    rows = state.registry.list_grants(subject=subject, grantee=grantee, active_only=active)
    return [grant_json(g, s) for g, s in rows]
