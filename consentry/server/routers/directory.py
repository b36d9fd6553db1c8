"""The admin's read routes of who is registered: subjects and grantees, as the
signed log holds them. Every route needs the admin key (a grantee key is a 401).

- ``GET /v1/subjects``, ``GET /v1/subjects/{id}``: id, name, aliases, public key,
  the engines they are enrolled with, and their state (``active``, ``erased``,
  ``opted_out``, each with the log index that made it so).
- ``GET /v1/grantees``, ``GET /v1/grantees/{id}``: id, name, public key and the
  state of the API key: ``{"state", "log_index"}``, ``active`` (the grantee's own
  entry carries its hash), ``rotated`` or ``disabled`` (``log_index`` of the grantee's
  entry; a change's own index is in the change's answer).
- ``POST /v1/grantees/{id}/rotate-key`` (JSON ``{"reason"}``, optional): a new API
  key, returned once in ``api_key``; the old one is refused (401) from then on.
- ``POST /v1/grantees/{id}/disable`` (JSON ``{"reason"}``): every request with the
  grantee's key is a 401 from then on; final (a second one is a 409).

Both changes are signed log entries (:mod:`consentry.registry.grantee_keys`),
checkpointed before they are answered.

Invariants: the states are read from the followed signed log (``registry.consent``,
refreshed first), not from rows; no answer carries API key material (neither a key
nor its hash), nor any biometric data.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from consentry.registry.consent import ConsentState
from consentry.registry.grantee_keys import disable_grantee, rotate_grantee_key
from consentry.registry.models import Grantee, Subject
from consentry.registry.views import grantee_json, grantee_key_change_json, subject_json
from consentry.server.auth import ADMIN
from consentry.server.openapi_errors import errors
from consentry.server.state import ServiceDep

__all__ = ["router"]

router = APIRouter(tags=["admin"], dependencies=ADMIN)


def _subject(consent: ConsentState, row: Subject) -> dict[str, Any]:
    engines = sorted({e.engine for e in consent.enrollments.values() if e.subject == row.id})
    state: dict[str, Any] = {"state": "active"}
    if row.id in consent.erased:
        state = {"state": "erased", "log_index": consent.erased[row.id]}
    if row.id in consent.opted_out:
        state = {"state": "opted_out", "log_index": consent.opted_out[row.id]}
    return subject_json(row) | {"enrolled": engines, "status": state}


def _grantee(consent: ConsentState, row: Grantee) -> dict[str, Any]:
    signed = consent.grantees.get(row.id)
    if signed is None:
        return grantee_json(row) | {"api_key": {"state": "unknown"}}
    state = (
        "disabled"
        if signed.disabled is not None
        else "rotated"
        if signed.rotated_sha256
        else "active"
    )
    return grantee_json(row) | {"api_key": {"state": state, "log_index": signed.index}}


class KeyChangeIn(BaseModel):
    reason: str = Field(default="", description="Why (signed into the log).")


class DisableIn(BaseModel):
    reason: str = Field(description="Why (signed into the log).")


@router.get("/v1/subjects")
def list_subjects(state: ServiceDep) -> list[dict[str, Any]]:
    """Subjects in log order with their state (no biometric data)."""
    consent = state.registry.consent
    consent.refresh()
    return [_subject(consent, row) for row in state.registry.list_subjects()]


@router.get("/v1/subjects/{subject}")
def show_subject(state: ServiceDep, subject: str) -> dict[str, Any]:
    """One subject by id or unique name."""
    consent = state.registry.consent
    consent.refresh()
    return _subject(consent, state.registry.get_subject(subject))


@router.get("/v1/grantees")
def list_grantees(state: ServiceDep) -> list[dict[str, Any]]:
    """Grantees in log order with the state of their API key (never the key)."""
    consent = state.registry.consent
    consent.refresh()
    return [_grantee(consent, row) for row in state.registry.list_grantees()]


@router.get("/v1/grantees/{grantee}")
def show_grantee(state: ServiceDep, grantee: str) -> dict[str, Any]:
    """One grantee by id or unique name."""
    consent = state.registry.consent
    consent.refresh()
    return _grantee(consent, state.registry.get_grantee(grantee))


@router.post("/v1/grantees/{grantee}/rotate-key", status_code=201, responses=errors(409))
def rotate_key(state: ServiceDep, grantee: str, body: KeyChangeIn) -> dict[str, Any]:
    """A new API key for the grantee (shown once); the old one stops working."""
    row, api_key = rotate_grantee_key(state.registry, grantee, body.reason)
    state.registry.checkpoint()
    return grantee_key_change_json(row) | {"api_key": api_key}


@router.post("/v1/grantees/{grantee}/disable", status_code=201, responses=errors(409))
def disable(state: ServiceDep, grantee: str, body: DisableIn) -> dict[str, Any]:
    """Disable the grantee: no key of theirs opens anything from then on; final."""
    row = disable_grantee(state.registry, grantee, body.reason)
    state.registry.checkpoint()
    return grantee_key_change_json(row)
