"""JSON views of registry rows, shared by the CLI and the HTTP service.

Invariant: a view contains only what the row holds (no secrets: a grantee's
view never includes its API key hash) and is stable across releases.
"""

from __future__ import annotations

from typing import Any

from consentry.registry.models import Grant, Grantee, GranteeKeyChange, Prior, Subject
from consentry.registry.store import GrantStatus

__all__ = ["grant_json", "grantee_json", "grantee_key_change_json", "prior_json", "subject_json"]


def subject_json(row: Subject) -> dict[str, Any]:
    return {
        "id": row.id,
        "display_name": row.display_name,
        "aliases": row.aliases,
        "public_key": row.public_key,
        "created_at": row.created_at,
        "log_index": row.log_index,
    }


def grantee_json(row: Grantee) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "public_key": row.public_key,
        "created_at": row.created_at,
        "log_index": row.log_index,
    }


def grantee_key_change_json(row: GranteeKeyChange) -> dict[str, Any]:
    """A signed key rotation or disabling of a grantee (never a key, nor its hash)."""
    return {
        "id": row.id,
        "grantee": row.grantee_id,
        "action": row.action,
        "reason": row.reason,
        "created_at": row.created_at,
        "log_index": row.log_index,
    }


def grant_json(row: Grant, status: GrantStatus | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {
        "id": row.id,
        "subject": row.subject_id,
        "grantee": row.grantee_id,
        "purposes": row.purposes,
        "priors": row.priors,
        "not_before": row.not_before,
        "not_after": row.not_after,
        "constraints": row.constraints,
        "evidence_sha256": row.evidence_sha256,
        "issuer_key_id": row.issuer_key_id,
        "subject_key_id": row.subject_key_id,
        "review_by": row.review_by,
        "created_at": row.created_at,
        "log_index": row.log_index,
    }
    if status is not None:
        value["status"] = status
    return value


def prior_json(row: Prior) -> dict[str, Any]:
    return {
        "id": row.id,
        "subject": row.subject_id,
        "kind": row.kind,
        "base_model_id": row.base_model_id,
        "sha256": row.sha256,
        "size": row.size,
        "details": row.details,
        "created_at": row.created_at,
        "log_index": row.log_index,
    }
