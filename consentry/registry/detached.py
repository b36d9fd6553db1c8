"""Consent signed on the subject's own device: prepare, sign, submit.

A subject who holds a key never hands it to the operator. The operator prepares a
grant or a revocation (:func:`prepare_grant`, :func:`prepare_revocation`): a DSSE
envelope holding the canonical statement and no signature. The subject reads it in
plain words (:func:`describe`) and signs it on their own device
(:func:`sign_prepared`: the statement and the key, no registry). The operator, or
for a revocation anyone, submits the signed envelope (:func:`submit`): the
registry checks it, co-signs the very same bytes and appends them to the log.

Invariants
- What the subject signs is what the log holds: the payload bytes are never
  re-serialised. :func:`submit` rebuilds the row from the signed statement and
  the log appends only if the row's statement is exactly those bytes
  (:meth:`RegistryLog.record_presigned`), so no row carries more than was signed.
- The plain words come from the statement itself (:func:`describe`), never from
  text the preparer supplies, so a preparer cannot show one thing and have
  another signed.
- A prepared statement names its ``sign_by`` time (default
  :data:`DEFAULT_SIGN_WITHIN` after preparation, at most :data:`MAX_SIGN_WITHIN`);
  signing and submitting after it raise :class:`StatementExpiredError`.
- :func:`submit` refuses, with a typed error and nothing written: a payload that is
  not canonical JSON or whose type is not grant or revocation; a subject holding no
  key; no valid signature by the subject's registered key (a statement changed
  after signing, or signed by another key); a record id the log holds already (a
  replay, also of a grant revoked since); a statement naming another operator key
  than the one signing now; and every term the registry refuses when a grant is
  made in one place (unknown purpose, end before start, unknown grantee, an
  opted-out subject, a grant revoked already).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from consentry.errors import (
    DuplicateError,
    InputError,
    NotFoundError,
    OptedOutError,
    SignatureError,
    StatementExpiredError,
)
from consentry.registry.models import Grant, Grantee, OptOut, Revocation, Subject
from consentry.registry.rules import grant_terms
from consentry.registry.signing import (
    Envelope,
    SigningKey,
    canonical_json,
    key_id_of,
    parse_canonical,
    payload_type_for,
    public_key_from_hex,
)
from consentry.registry.statements import format_time, parse_time, statement_of
from consentry.registry.store import Registry

__all__ = [
    "DEFAULT_SIGN_WITHIN",
    "MAX_SIGN_WITHIN",
    "describe",
    "prepare_grant",
    "prepare_revocation",
    "sign_prepared",
    "sign_window",
    "submit",
]

DEFAULT_SIGN_WITHIN = timedelta(days=7)
MAX_SIGN_WITHIN = timedelta(days=30)
_KINDS = {"consentry.grant": "grant", "consentry.revocation": "revocation"}
_CLOCK_SKEW = timedelta(minutes=5)


# ------------------------------------------------------------------ prepare
def _unsigned(row: Grant | Revocation) -> Envelope:
    statement = statement_of(row)
    ptype = payload_type_for(str(statement["type"]), int(statement["version"]))
    return Envelope(ptype, canonical_json(statement), ())


def _sign_by(registry: Registry, within: timedelta) -> str:
    if not timedelta(minutes=1) <= within <= MAX_SIGN_WITHIN:
        raise InputError(
            f"the time to sign must be between 1 minute and {MAX_SIGN_WITHIN.days} days"
        )
    return format_time(registry.now() + within)


def sign_window(days: float) -> timedelta:
    """A number of days to sign as a span (NaN and infinities refused; the bounds are
    checked when the statement is prepared)."""
    if not math.isfinite(days):
        raise InputError("the time to sign must be a number of days")
    return timedelta(days=days)


def _key_id_of_subject(subject: Subject) -> str:
    if subject.public_key is None:
        raise InputError(
            f"subject {subject.id} holds no key: their consent is recorded where it is made",
            hint="grant or revoke without --prepare",
        )
    return key_id_of(public_key_from_hex(subject.public_key))


def prepare_grant(
    registry: Registry,
    subject: str,
    grantee: str,
    purposes: list[str],
    *,
    priors: list[str] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    constraints: dict[str, Any] | None = None,
    evidence_sha256: str | None = None,
    sign_within: timedelta = DEFAULT_SIGN_WITHIN,
) -> Envelope:
    """A grant for ``subject`` (who holds a key) to sign on their own device;
    nothing is written. The terms are checked as :meth:`Registry.grant` checks them."""
    start = not_before or registry.now()
    wanted, prior_list = grant_terms(purposes, priors or [], evidence_sha256, start, not_after)
    subject_row = registry.get_subject(subject)
    grantee_row = registry.get_grantee(grantee)
    if subject_row.id in registry.consent.opted_out:
        raise OptedOutError(f"subject {subject_row.id} opted out: no grant can be made")
    row = Grant(
        id=registry.new_id("grt"),
        subject_id=subject_row.id,
        grantee_id=grantee_row.id,
        purposes_json=json.dumps(wanted),
        priors_json=json.dumps(prior_list),
        not_before=format_time(start),
        not_after=format_time(not_after) if not_after is not None else None,
        constraints_json=canonical_json(constraints or {}).decode(),
        evidence_sha256=evidence_sha256,
        issuer_key_id=registry.key_id,
        subject_key_id=_key_id_of_subject(subject_row),
        sign_by=_sign_by(registry, sign_within),
        created_at=format_time(registry.now()),
        log_index=-1,
    )
    return _unsigned(row)


def prepare_revocation(
    registry: Registry, grant_id: str, reason: str, sign_within: timedelta = DEFAULT_SIGN_WITHIN
) -> Envelope:
    """A revocation of ``grant_id`` for its subject to sign; nothing is written."""
    if not reason.strip():
        raise InputError("a revocation needs a reason")
    grant = registry.get_grant(grant_id)
    if registry.revocation_of(grant.id) is not None:
        raise DuplicateError(f"grant {grant.id} is already revoked")
    row = Revocation(
        id=registry.new_id("rev"),
        grant_id=grant.id,
        reason=reason.strip(),
        issuer_key_id=registry.key_id,
        subject_key_id=_key_id_of_subject(registry.get_subject(grant.subject_id)),
        sign_by=_sign_by(registry, sign_within),
        created_at=format_time(registry.now()),
        log_index=-1,
    )
    return _unsigned(row)


# ------------------------------------------------------------------ read and sign
def _statement(envelope: Envelope) -> dict[str, Any]:
    """The envelope's statement, checked to be a prepared grant or revocation."""
    statement = parse_canonical(envelope.payload)
    kind = statement.get("type")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise InputError(f"only grants and revocations are signed on a device, not {kind!r}")
    if envelope.payload_type != payload_type_for(str(kind), int(statement.get("version", -1))):
        raise SignatureError("the envelope's payload type does not match its statement")
    if not isinstance(statement.get("sign_by"), str) or not isinstance(
        statement.get("subject_key"), str
    ):
        raise InputError("not a statement prepared for signing (no sign_by or subject key)")
    return statement


def describe(envelope: Envelope) -> list[str]:
    """The statement in plain words, from the signed bytes alone."""
    s = _statement(envelope)
    if s["type"] == "consentry.revocation":
        lines = [
            f"You withdraw your consent given in grant {s.get('grant')}.",
            f"Reason recorded in the public log: {s.get('reason')}",
        ]
    else:
        until = s.get("not_after") or "no end date (until you revoke it)"
        priors = s.get("priors") or []
        lines = [
            f"You ({s.get('subject')}) let {s.get('grantee')} use your likeness.",
            f"For: {', '.join(str(p) for p in s.get('purposes', []))}.",
            f"From {s.get('not_before')} until {until}.",
            "Personal models (priors) it covers: "
            + (", ".join(f"SHA-256 {str(p)[:16]}..." for p in priors) if priors else "none."),
        ]
        if s.get("constraints"):
            lines.append(f"Conditions: {canonical_json(s['constraints']).decode()}")
        if s.get("evidence_sha256"):
            lines.append(f"Consent evidence: SHA-256 {s['evidence_sha256']}")
    lines.append(f"Prepared {s.get('time')} by operator key {str(s.get('issuer'))[:16]}; ")
    lines[-1] += f"sign by {s['sign_by']}. Your key: {str(s['subject_key'])[:16]}."
    return lines


def _check_deadline(statement: dict[str, Any], now: datetime) -> None:
    if format_time(now) > str(statement["sign_by"]):
        raise StatementExpiredError(
            f"the statement had to be signed and sent by {statement['sign_by']}",
            hint="ask for it to be prepared again",
        )


def sign_prepared(envelope: Envelope, key: SigningKey, now: datetime) -> Envelope:
    """The prepared ``envelope`` signed by ``key``, which must be the subject key it
    names; refused past its ``sign_by``. Needs no registry."""
    statement = _statement(envelope)
    if statement["subject_key"] != key.key_id:
        raise SignatureError(
            f"this statement is for key {str(statement['subject_key'])[:16]}; "
            f"yours is {key.key_id[:16]}"
        )
    _check_deadline(statement, now)
    return envelope.countersign(key)


# ------------------------------------------------------------------ submit
def _row_of(statement: dict[str, Any]) -> Grant | Revocation:
    """The row the statement describes (``statement_of`` of it must give it back)."""
    try:
        if statement["type"] == "consentry.grant":
            return Grant(
                id=str(statement["id"]),
                subject_id=str(statement["subject"]),
                grantee_id=str(statement["grantee"]),
                purposes_json=json.dumps(list(statement["purposes"])),
                priors_json=json.dumps(list(statement["priors"])),
                not_before=str(statement["not_before"]),
                not_after=statement["not_after"],
                constraints_json=canonical_json(dict(statement["constraints"])).decode(),
                evidence_sha256=statement["evidence_sha256"],
                issuer_key_id=str(statement["issuer"]),
                subject_key_id=str(statement["subject_key"]),
                sign_by=str(statement["sign_by"]),
                created_at=str(statement["time"]),
                log_index=-1,
            )
        return Revocation(
            id=str(statement["id"]),
            grant_id=str(statement["grant"]),
            reason=str(statement["reason"]),
            issuer_key_id=str(statement["issuer"]),
            subject_key_id=str(statement["subject_key"]),
            sign_by=str(statement["sign_by"]),
            created_at=str(statement["time"]),
            log_index=-1,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed {statement.get('type')} statement: {exc}") from exc


def _check_subject_signature(session: Session, subject_id: str, envelope: Envelope) -> None:
    subject = session.get(Subject, subject_id)
    if subject is None:
        raise NotFoundError(f"no subject {subject_id!r}")
    key_id = _key_id_of_subject(subject)
    if envelope.statement.get("subject_key") != key_id:
        raise SignatureError(f"the statement does not name subject {subject_id}'s key")
    assert subject.public_key is not None  # _key_id_of_subject checked it
    envelope.verify({key_id: public_key_from_hex(subject.public_key)}, [key_id])


def _check_grant_terms(session: Session, row: Grant) -> None:
    start = parse_time(row.not_before)
    end = parse_time(row.not_after) if row.not_after is not None else None
    grant_terms(row.purposes, row.priors, row.evidence_sha256, start, end)
    if session.get(Grantee, row.grantee_id) is None:
        raise NotFoundError(f"no grantee {row.grantee_id!r}")
    if session.exec(select(OptOut).where(OptOut.subject_id == row.subject_id)).first():
        raise OptedOutError(f"subject {row.subject_id} opted out: no grant can be made")


def _check_revocation_terms(session: Session, row: Revocation) -> str:
    """The revoked grant's subject, after checking the grant exists and stands."""
    grant = session.get(Grant, row.grant_id)
    if grant is None:
        raise NotFoundError(f"no grant {row.grant_id!r}")
    if session.exec(select(Revocation).where(Revocation.grant_id == grant.id)).first():
        raise DuplicateError(f"grant {grant.id} is already revoked")
    if not row.reason.strip():
        raise InputError("a revocation needs a reason")
    return grant.subject_id


def submit(registry: Registry, envelope: Envelope) -> Grant | Revocation:
    """Check the subject-signed ``envelope`` (see the module's invariants), co-sign
    it with the operator key and append it; returns the row with its log index."""
    statement = _statement(envelope)
    now = registry.now()
    _check_deadline(statement, now)
    made, deadline = parse_time(str(statement.get("time"))), parse_time(statement["sign_by"])
    if made > now + _CLOCK_SKEW or deadline - made > MAX_SIGN_WITHIN:
        raise InputError(
            f"the statement's times are out of bounds (made {statement.get('time')}, "
            f"sign by {statement['sign_by']}: at most {MAX_SIGN_WITHIN.days} days apart, "
            "not in the future)"
        )
    row = _row_of(statement)
    with registry.db.write() as session:
        if session.get(type(row), row.id) is not None:
            kind = _KINDS[statement["type"]]
            raise DuplicateError(f"{kind} {row.id} is in the log already (a replay)")
        if isinstance(row, Grant):
            subject_id = row.subject_id
            _check_grant_terms(session, row)
        else:
            subject_id = _check_revocation_terms(session, row)
        _check_subject_signature(session, subject_id, envelope)
        row.log_index = registry.log.record_presigned(session, row, envelope)
    return row
