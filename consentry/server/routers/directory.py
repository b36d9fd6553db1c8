"""The admin's read routes of who is registered: subjects and grantees, as the
signed log holds them. Every route needs the admin key (a grantee key is a 401).

- ``GET /v1/subjects``, ``GET /v1/subjects/{id}``: id, name, aliases, public key,
  the engines they are enrolled with, and their state (``active``, ``erased``,
  ``opted_out``, each with the log index that made it so).
- ``GET /v1/grantees``, ``GET /v1/grantees/{id}``: id, name, public key and the
  state of the API key: ``{"state": "active", "log_index"}``, the signed entry that
  carries its hash.

Invariants: the states are read from the followed signed log (``registry.consent``,
refreshed first), not from rows; no answer carries API key material (neither a key
nor its hash), nor any biometric data.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from consentry.registry.consent import ConsentState
from consentry.registry.models import Grantee, Subject
from consentry.registry.views import grantee_json, subject_json
from consentry.server.auth import ADMIN
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
    key = {"state": "unknown"} if signed is None else {"state": "active", "log_index": signed.index}
    return grantee_json(row) | {"api_key": key}


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
