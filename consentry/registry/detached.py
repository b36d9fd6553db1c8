"""Consent signed on the subject's own device: prepare, sign, submit.

The same flow changes a subject's key (:func:`prepare_key_change`): signed by the
new key and the old one, or, when the old one is lost, made by the operator with a
recorded reason and signed by the new key; the old key signs nothing after it.

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

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlmodel import Session, select

from consentry.errors import (
    DuplicateError,
    InputError,
    NotFoundError,
    OptedOutError,
    SignatureError,
    StatementExpiredError,
)
from consentry.registry.grant_policy import policy_of
from consentry.registry.models import (
    Grant,
    Grantee,
    OptOut,
    Revocation,
    Subject,
    SubjectKeyChange,
)
from consentry.registry.rules import checked_grant_terms, grant_terms
from consentry.registry.signing import (
    Envelope,
    SigningKey,
    canonical_json,
    key_id_of,
    parse_canonical,
    payload_type_for,
    public_key_from_hex,
    public_key_hex,
)
from consentry.registry.statements import format_time, leaf_kind_of, parse_time, statement_of
from consentry.registry.store import Registry

__all__ = [
    "DEFAULT_SIGN_WITHIN",
    "MAX_SIGN_WITHIN",
    "Presigned",
    "describe",
    "prepare_grant",
    "prepare_key_change",
    "prepare_revocation",
    "receipt_of",
    "sign_prepared",
    "sign_window",
    "signers_of",
    "submit",
]

DEFAULT_SIGN_WITHIN = timedelta(days=7)
MAX_SIGN_WITHIN = timedelta(days=30)
_KINDS = {
    "consentry.grant": "grant",
    "consentry.revocation": "revocation",
    "consentry.subject-key": "subject-key",
}
_CLOCK_SKEW = timedelta(minutes=5)


# ------------------------------------------------------------------ prepare
Presigned = Grant | Revocation | SubjectKeyChange


def _unsigned(row: Presigned) -> Envelope:
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


def _current_key_id(registry: Registry, subject: Subject) -> str:
    """The key id the subject signs with now (their newest key change applied, as the
    signed log holds it)."""
    state = registry.consent
    state.refresh()
    current = state.subject_key(subject.id)
    if current is None:
        raise InputError(
            f"subject {subject.id} holds no key: their consent is recorded where it is made",
            hint="grant or revoke without --prepare",
        )
    return key_id_of(public_key_from_hex(current))


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
    terms = checked_grant_terms(
        purposes, priors or [], evidence_sha256, start, not_after, constraints,
        policy_of(registry.home),
    )  # fmt: skip
    subject_row = registry.get_subject(subject)
    grantee_row = registry.get_grantee(grantee)
    if subject_row.id in registry.consent.opted_out:
        raise OptedOutError(f"subject {subject_row.id} opted out: no grant can be made")
    row = terms.row(
        registry.new_id("grt"),
        subject_row.id,
        grantee_row.id,
        registry.key_id,
        _current_key_id(registry, subject_row),
        registry.now(),
        _sign_by(registry, sign_within),
    )
    return _unsigned(row)


def prepare_revocation(
    registry: Registry,
    grant_id: str,
    reason: str,
    sign_within: timedelta = DEFAULT_SIGN_WITHIN,
    *,
    subject_id: str | None = None,
) -> Envelope:
    """A revocation of ``grant_id`` for its subject to sign; nothing is written.

    With ``subject_id`` (the public, keyless route) the grant must be that subject's:
    an unknown grant and another subject's grant raise the same
    :class:`NotFoundError`, so a grant id alone reveals nothing about its subject,
    its key or whether it is revoked."""
    if not reason.strip():
        raise InputError("a revocation needs a reason")
    grant = registry.get_grant(grant_id) if subject_id is None else _grant_of(
        registry, grant_id, subject_id
    )
    if registry.revocation_of(grant.id) is not None:
        raise DuplicateError(f"grant {grant.id} is already revoked")
    row = Revocation(
        id=registry.new_id("rev"),
        grant_id=grant.id,
        reason=reason.strip(),
        issuer_key_id=registry.key_id,
        subject_key_id=_current_key_id(registry, registry.get_subject(grant.subject_id)),
        sign_by=_sign_by(registry, sign_within),
        created_at=format_time(registry.now()),
        log_index=-1,
    )
    return _unsigned(row)


def _grant_of(registry: Registry, grant_id: str, subject_id: str) -> Grant:
    """The grant ``grant_id`` if it is ``subject_id``'s; one error for every other case."""
    try:
        grant = registry.get_grant(grant_id)
    except NotFoundError:
        grant = None
    if grant is None or grant.subject_id != subject_id:
        raise NotFoundError(
            f"no grant {grant_id!r} of subject {subject_id!r}",
            hint="give the grant id and your own subject id, as 'consentry me' shows them",
        )
    return grant


def prepare_key_change(
    registry: Registry,
    subject: str,
    new_key: Ed25519PublicKey,
    *,
    reason: str = "",
    by_operator: bool = False,
    sign_within: timedelta = DEFAULT_SIGN_WITHIN,
) -> Envelope:
    """A change of ``subject``'s key to ``new_key``, to be signed by the new key and,
    unless ``by_operator`` (the old key is lost: a ``reason`` is required), by the
    old one; nothing is written."""
    row = registry.get_subject(subject)
    state = registry.consent
    state.refresh()
    current = state.subject_key(row.id)
    if by_operator and not reason.strip():
        raise InputError("a key change by the operator needs a reason (why the old key is lost)")
    if not by_operator and current is None:
        raise InputError(
            f"subject {row.id} holds no key to sign the change", hint="use --by-operator"
        )
    change = SubjectKeyChange(
        id=registry.new_id("skc"),
        subject_id=row.id,
        old_key_id=None if current is None else key_id_of(public_key_from_hex(current)),
        new_public_key=public_key_hex(new_key),
        new_key_id=key_id_of(new_key),
        authority="operator" if by_operator else "subject",
        reason=reason.strip(),
        issuer_key_id=registry.key_id,
        sign_by=_sign_by(registry, sign_within),
        created_at=format_time(registry.now()),
        log_index=-1,
    )
    if change.new_key_id == change.old_key_id:
        raise InputError("the new key is the subject's current key")
    return _unsigned(change)


def signers_of(statement: dict[str, Any]) -> list[str]:
    """The subject-side key ids a prepared statement needs signatures from."""
    if statement.get("type") != "consentry.subject-key":
        return [str(statement.get("subject_key"))]
    old = statement.get("old_key")
    by_subject = statement.get("authority") == "subject" and isinstance(old, str)
    return [str(statement.get("new_key")), *([str(old)] if by_subject else [])]


# ------------------------------------------------------------------ read and sign
def _statement(envelope: Envelope) -> dict[str, Any]:
    """The envelope's statement, checked to be a prepared grant or revocation."""
    statement = parse_canonical(envelope.payload)
    kind = statement.get("type")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise InputError(f"only grants and revocations are signed on a device, not {kind!r}")
    if envelope.payload_type != payload_type_for(str(kind), int(statement.get("version", -1))):
        raise SignatureError("the envelope's payload type does not match its statement")
    signer = "new_key" if kind == "consentry.subject-key" else "subject_key"
    if not isinstance(statement.get("sign_by"), str) or not isinstance(statement.get(signer), str):
        raise InputError("not a statement prepared for signing (no sign_by or subject key)")
    return statement


def describe(envelope: Envelope) -> list[str]:
    """The statement in plain words, from the signed bytes alone."""
    s = _statement(envelope)
    if s["type"] == "consentry.subject-key":
        old = s.get("old_key")
        lines = [
            (f"Your key {str(old)[:16]} is replaced by " if old else "You had no key; now ")
            + f"{str(s.get('new_key'))[:16]}"
            + (": from then on only the new key signs for you." if old else " signs for you."),
            "Signed by your old key and your new key."
            if s.get("authority") == "subject"
            else f"Made by the operator because: {s.get('reason')}",
        ]
    elif s["type"] == "consentry.revocation":
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
    keys = ", ".join(k[:16] for k in signers_of(s))
    lines[-1] += f"sign by {s['sign_by']}. Keys to sign: {keys}."
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
    wanted = signers_of(statement)
    if key.key_id not in wanted:
        raise SignatureError(
            f"this statement is for key {', '.join(k[:16] for k in wanted)}; "
            f"yours is {key.key_id[:16]}"
        )
    _check_deadline(statement, now)
    return envelope.countersign(key)


# ------------------------------------------------------------------ submit
def _row_of(statement: dict[str, Any]) -> Presigned:
    """The row the statement describes (``statement_of`` of it must give it back)."""
    try:
        if statement["type"] == "consentry.subject-key":
            return SubjectKeyChange(
                id=str(statement["id"]),
                subject_id=str(statement["subject"]),
                old_key_id=statement["old_key"],
                new_public_key=str(statement["new_public_key"]),
                new_key_id=str(statement["new_key"]),
                authority=str(statement["authority"]),
                reason=str(statement["reason"]),
                issuer_key_id=str(statement["issuer"]),
                sign_by=str(statement["sign_by"]),
                created_at=str(statement["time"]),
                log_index=-1,
            )
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
                review_by=statement.get("review_by"),
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


def _check_subject_signature(registry: Registry, subject_id: str, envelope: Envelope) -> None:
    """Signed by the subject's current key as the signed log holds it (key changes
    applied), which the statement names."""
    current = registry.consent.subject_key(subject_id)
    if subject_id not in registry.consent.subjects:
        raise NotFoundError(f"no subject {subject_id!r}")
    if current is None:
        raise InputError(f"subject {subject_id} holds no key", hint="grant or revoke in place")
    public = public_key_from_hex(current)
    if envelope.statement.get("subject_key") != key_id_of(public):
        raise SignatureError(f"the statement does not name subject {subject_id}'s current key")
    envelope.verify({key_id_of(public): public}, [key_id_of(public)])


def _check_key_change(registry: Registry, row: SubjectKeyChange, envelope: Envelope) -> None:
    """From the current key, to a new one, signed by every key :func:`signers_of` names."""
    state = registry.consent
    if row.subject_id not in state.subjects:
        raise NotFoundError(f"no subject {row.subject_id!r}")
    current = state.subject_key(row.subject_id)
    current_id = None if current is None else key_id_of(public_key_from_hex(current))
    if row.old_key_id != current_id:
        raise SignatureError("the key change does not start from the subject's current key")
    new = public_key_from_hex(row.new_public_key)
    if key_id_of(new) != row.new_key_id or row.new_key_id == current_id:
        raise InputError("the new key does not match its id, or is the current key")
    if row.authority == "operator" and not row.reason.strip():
        raise InputError("a key change by the operator needs a reason")
    if row.authority not in ("subject", "operator") or (
        row.authority == "subject" and current is None
    ):
        raise InputError("a key change is signed by the old key, or made by the operator")
    trusted = {row.new_key_id: new}
    if current is not None and current_id is not None:
        trusted[current_id] = public_key_from_hex(current)
    envelope.verify(trusted, signers_of(envelope.statement))


def _check_grant_terms(registry: Registry, session: Session, row: Grant) -> None:
    start = parse_time(row.not_before)
    end = parse_time(row.not_after) if row.not_after is not None else None
    grant_terms(row.purposes, row.priors, row.evidence_sha256, start, end)
    if policy_of(registry.home).review_by(start, end, row.evidence_sha256) != row.review_by:
        raise InputError(
            "the grant's review date is not the one this registry sets now",
            hint="prepare the statement again",
        )
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


def receipt_of(row: Presigned) -> dict[str, Any]:
    """What a submitter is told: the record's kind, id and log index."""
    kind = leaf_kind_of(row)
    return {"type": kind, "id": row.id, "log_index": row.log_index, "created_at": row.created_at}


def submit(registry: Registry, envelope: Envelope) -> Presigned:
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
    registry.consent.refresh()
    with registry.db.write() as session:
        if session.get(type(row), row.id) is not None:
            kind = _KINDS[statement["type"]]
            raise DuplicateError(f"{kind} {row.id} is in the log already (a replay)")
        if isinstance(row, SubjectKeyChange):
            _check_key_change(registry, row, envelope)
        elif isinstance(row, Grant):
            _check_grant_terms(registry, session, row)
            _check_subject_signature(registry, row.subject_id, envelope)
        else:
            subject_id = _check_revocation_terms(session, row)
            _check_subject_signature(registry, subject_id, envelope)
        row.log_index = registry.log.record_presigned(session, row, envelope)
    return row
