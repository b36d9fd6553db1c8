"""The signed statements behind every registry row, and time formatting.

Invariant: ``statement_of(row)`` is a pure function of the row's columns
(never of ``log_index``), and is exactly the JSON object that was signed and
logged when the row was written. Statement types are ``consentry.<kind>`` with
``version`` 1; the payload type bound into each signature carries both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from consentry.errors import InputError
from consentry.registry.models import (
    Calibration,
    Decision,
    Enrollment,
    Erasure,
    Grant,
    Grantee,
    GranteeKeyChange,
    OperatorKey,
    OptOut,
    Prior,
    Review,
    Revocation,
    Subject,
    SubjectKeyChange,
)

__all__ = [
    "KIND_OF_TYPE",
    "PRIOR_KINDS",
    "PURPOSES",
    "STATEMENT_VERSION",
    "Row",
    "format_time",
    "leaf_kind_of",
    "parse_end_time",
    "parse_time",
    "record_id_of",
    "rotation_statement",
    "statement_of",
]

STATEMENT_VERSION = 1
PURPOSES: tuple[str, ...] = ("restore", "generate", "train")
PRIOR_KINDS: tuple[str, ...] = ("textual_inversion", "lora", "dreambooth", "exemplars")

Row = (
    Subject
    | Grantee
    | Grant
    | Revocation
    | Prior
    | OperatorKey
    | Enrollment
    | Erasure
    | Calibration
    | Decision
    | OptOut
    | SubjectKeyChange
    | GranteeKeyChange
    | Review
)

KIND_OF_TYPE: dict[str, str] = {
    "consentry.operator-key": "key",
    "consentry.key-rotation": "key-rotation",
    "consentry.subject": "subject",
    "consentry.grantee": "grantee",
    "consentry.grant": "grant",
    "consentry.revocation": "revocation",
    "consentry.prior": "prior",
    "consentry.enrollment": "enrollment",
    "consentry.erasure": "erasure",
    "consentry.opt-out": "opt-out",
    "consentry.subject-key": "subject-key",
    "consentry.grantee-key": "grantee-key",
    "consentry.calibration": "calibration",
    "consentry.decision": "decision",
    "consentry.review": "review",
}

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(moment: datetime) -> str:
    """UTC, whole seconds, ``Z`` suffix; naive datetimes are refused."""
    if moment.tzinfo is None:
        raise InputError("times must be timezone-aware")
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


_BARE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_time(text: str) -> datetime:
    """Parse ISO 8601 (``Z`` or an offset; a bare date means midnight UTC)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InputError(f"not an ISO 8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def parse_end_time(text: str) -> datetime:
    """Parse the end of a period: like :func:`parse_time`, except that a bare date
    (``2027-06-30``) means that whole day, so the end is the start of the next day
    (``2027-07-01T00:00:00Z``). A full timestamp keeps its meaning."""
    moment = parse_time(text)
    if _BARE_DATE.fullmatch(text.strip()):
        moment += timedelta(days=1)
    return moment


def _base(kind: str) -> dict[str, Any]:
    return {"type": f"consentry.{kind}", "version": STATEMENT_VERSION}


def _subject(row: Subject) -> dict[str, Any]:
    return _base("subject") | {
        "id": row.id,
        "display_name": row.display_name,
        "aliases": json.loads(row.aliases_json),
        "public_key": row.public_key,
        "time": row.created_at,
    }


def _grantee(row: Grantee) -> dict[str, Any]:
    return _base("grantee") | {
        "id": row.id,
        "name": row.name,
        "api_key_sha256": row.api_key_sha256,
        "public_key": row.public_key,
        "time": row.created_at,
    }


def _grant(row: Grant) -> dict[str, Any]:
    return (
        _base("grant")
        | {
            "id": row.id,
            "subject": row.subject_id,
            "grantee": row.grantee_id,
            "purposes": json.loads(row.purposes_json),
            "priors": json.loads(row.priors_json),
            "not_before": row.not_before,
            "not_after": row.not_after,
            "constraints": json.loads(row.constraints_json),
            "evidence_sha256": row.evidence_sha256,
            "issuer": row.issuer_key_id,
            "subject_key": row.subject_key_id,
            "time": row.created_at,
        }
        | _sign_by(row.sign_by)
        | ({} if row.review_by is None else {"review_by": row.review_by})
    )


def _revocation(row: Revocation) -> dict[str, Any]:
    return (
        _base("revocation")
        | {
            "id": row.id,
            "grant": row.grant_id,
            "reason": row.reason,
            "issuer": row.issuer_key_id,
            "subject_key": row.subject_key_id,
            "time": row.created_at,
        }
        | _sign_by(row.sign_by)
    )


def _sign_by(value: str | None) -> dict[str, Any]:
    """A statement signed on the subject's own device names its deadline; one signed
    where it was made is written as earlier releases wrote it."""
    return {} if value is None else {"sign_by": value}


def _prior(row: Prior) -> dict[str, Any]:
    return _base("prior") | {
        "id": row.id,
        "subject": row.subject_id,
        "kind": row.kind,
        "base_model": row.base_model_id,
        "sha256": row.sha256,
        "size": row.size,
        "details": json.loads(row.details_json),
        "time": row.created_at,
    }


def _enrollment(row: Enrollment) -> dict[str, Any]:
    return _base("enrollment") | {
        "id": row.id,
        "subject": row.subject_id,
        "engine": row.engine,
        "engine_version": row.engine_version,
        "model_hashes": json.loads(row.model_hashes_json),
        "blobs": json.loads(row.blobs_json),
        "time": row.created_at,
    }


def _erasure(row: Erasure) -> dict[str, Any]:
    return _base("erasure") | {
        "id": row.id,
        "subject": row.subject_id,
        "enrollments": json.loads(row.enrollments_json),
        "reason": row.reason,
        "time": row.created_at,
    }


def _opt_out(row: OptOut) -> dict[str, Any]:
    return _base("opt-out") | {
        "id": row.id,
        "subject": row.subject_id,
        "photos": json.loads(row.photos_json),
        "reason": row.reason,
        "time": row.created_at,
    }


def _calibration(row: Calibration) -> dict[str, Any]:
    return (
        _base("calibration")
        | {
            "id": row.id,
            "engine": row.engine,
            "engine_version": row.engine_version,
            "threshold": row.threshold,
            "fmr_target": row.fmr_target,
            "fmr": row.fmr,
            "fnmr": row.fnmr,
            "eer": row.eer,
            "genuine_pairs": row.genuine_pairs,
            "impostor_pairs": row.impostor_pairs,
            "dataset_sha256": row.dataset_sha256,
            "time": row.created_at,
        }
        | (
            # a measurement restating nothing is written as release 0.1.0 wrote it
            {}
            if row.action == "measure" and row.restores is None
            else {"action": row.action, "restores": row.restores}
        )
        | (
            # a 1:N operating point adds its keys; a calibration without one is unchanged
            {}
            if row.fpir_target is None and row.review_threshold is None
            else {
                "review_threshold": row.review_threshold,
                "fpir_target": row.fpir_target,
                "gallery_size": row.gallery_size,
                "max_gallery": row.max_gallery,
            }
        )
    )


def _decision(row: Decision) -> dict[str, Any]:
    return (
        _base("decision")
        | {
            "id": row.id,
            "grantee": row.grantee_id,
            "purpose": row.purpose,
            "allowed": bool(row.allowed),
            "reasons": json.loads(row.reasons_json),
            "grants": json.loads(row.grants_json),
            "subjects": json.loads(row.subjects_json),
            "prior_sha256": row.prior_sha256,
            "inputs": json.loads(row.inputs_json),
            "outputs": json.loads(row.outputs_json),
            "time": row.created_at,
        }
        | (
            # a hold, or a job resumed under a review, adds its keys (issue 14); every
            # other decision is written as before
            ({"held": json.loads(row.held_json)} if row.held_json is not None else {})
            | ({"review": row.review_id} if row.review_id is not None else {})
        )
        | (
            # a release's marks add one key; a decision without them is written as before
            {}
            if row.release_id is None
            else {"release": {"id": row.release_id, "outputs": json.loads(row.marks_json or "[]")}}
        )
    )


def _review(row: Review) -> dict[str, Any]:
    return _base("review") | {
        "id": row.id,
        "decision": row.decision_id,
        "verdict": row.verdict,
        "reviewer": row.reviewer,
        "note": row.note,
        "time": row.created_at,
    }


def _grantee_key_change(row: GranteeKeyChange) -> dict[str, Any]:
    return _base("grantee-key") | {
        "id": row.id,
        "grantee": row.grantee_id,
        "action": row.action,
        "api_key_sha256": row.api_key_sha256,
        "reason": row.reason,
        "time": row.created_at,
    }


def _subject_key_change(row: SubjectKeyChange) -> dict[str, Any]:
    return _base("subject-key") | {
        "id": row.id,
        "subject": row.subject_id,
        "old_key": row.old_key_id,
        "new_key": row.new_key_id,
        "new_public_key": row.new_public_key,
        "authority": row.authority,
        "reason": row.reason,
        "issuer": row.issuer_key_id,
        "sign_by": row.sign_by,
        "time": row.created_at,
    }


def _operator_key(row: OperatorKey) -> dict[str, Any]:
    return _base("operator-key") | {
        "key_id": row.key_id,
        "public_key": row.public_key,
        "time": row.created_at,
    }


# one table: a row's model class -> (its leaf kind, its statement); the kind is
# also the statement type's suffix except for the genesis key ("key")
_BY_TYPE: dict[type[Any], tuple[str, Callable[[Any], dict[str, Any]]]] = {
    Subject: ("subject", _subject),
    Grantee: ("grantee", _grantee),
    Grant: ("grant", _grant),
    Revocation: ("revocation", _revocation),
    Prior: ("prior", _prior),
    Enrollment: ("enrollment", _enrollment),
    Erasure: ("erasure", _erasure),
    OptOut: ("opt-out", _opt_out),
    SubjectKeyChange: ("subject-key", _subject_key_change),
    GranteeKeyChange: ("grantee-key", _grantee_key_change),
    Calibration: ("calibration", _calibration),
    Decision: ("decision", _decision),
    Review: ("review", _review),
    OperatorKey: ("key", _operator_key),
}


def _entry_of(row: Row) -> tuple[str, Callable[[Any], dict[str, Any]]]:
    found = _BY_TYPE.get(type(row))
    if found is None:
        raise InputError(f"no signed statement for a {type(row).__name__} row")
    return found


def statement_of(row: Row) -> dict[str, Any]:
    """The signed statement a row stands for (InputError for a type that has none)."""
    return _entry_of(row)[1](row)


def leaf_kind_of(row: Row) -> str:
    """The log leaf kind a row is appended under (``key`` for an operator key's
    genesis entry; a rotation's new key is ``key-rotation``, see ``rotation_statement``)."""
    return _entry_of(row)[0]


def record_id_of(row: Row) -> str:
    """The record id a row's leaf names: the key id of an operator key, else its id."""
    return row.key_id if isinstance(row, OperatorKey) else row.id


def rotation_statement(old: OperatorKey, new: OperatorKey) -> dict[str, Any]:
    """The statement that retires ``old`` in favour of ``new`` (signed by both)."""
    return _base("key-rotation") | {
        "old_key_id": old.key_id,
        "new_key_id": new.key_id,
        "new_public_key": new.public_key,
        "time": new.created_at,
    }
