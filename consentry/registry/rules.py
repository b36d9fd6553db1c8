"""The pure rules a record must meet before the registry signs it, and grant status.

Invariants
- Every function here reads only its arguments (no database, no clock): the
  registry (``consentry.registry.store``) calls them before its write
  transaction, or inside it on rows it read there.
- A grant is *active* at time t iff ``not_before <= t < not_after`` (no upper
  bound when ``not_after`` is null) and it has no revocation
  (:func:`grant_status`; times compare as ``YYYY-MM-DDTHH:MM:SSZ`` text).
- A subject holding a key co-signs every grant and revocation that concerns
  them, with exactly that key (:func:`subject_cosigners`); a subject holding
  none is given no co-signer.
- Bad input is an ``InputError`` (a missing or wrong subject key a
  ``SignatureError``), never a partial record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from consentry.errors import (
    GrantExpiredError,
    GrantNotYetValidError,
    GrantRevokedError,
    InputError,
    SignatureError,
)
from consentry.hashing import SHA256_HEX, hash_file
from consentry.registry.grant_policy import GrantPolicy
from consentry.registry.models import Grant, Revocation, Subject
from consentry.registry.safetensors_header import check_safetensors
from consentry.registry.signing import SigningKey, canonical_json, key_id_of, public_key_from_hex
from consentry.registry.statements import PRIOR_KINDS, PURPOSES, format_time

__all__ = [
    "GrantStatus",
    "GrantTerms",
    "checked_grant_terms",
    "grant_status",
    "grant_terms",
    "prior_digest",
    "raise_unless_active",
    "subject_cosigners",
]

GrantStatus = Literal["active", "expired", "not-yet-valid", "revoked"]


def grant_status(grant: Grant, revocation: Revocation | None, at: datetime) -> GrantStatus:
    """The status of ``grant`` at ``at`` (see the module's invariants)."""
    if revocation is not None:
        return "revoked"
    moment = format_time(at)
    if moment < grant.not_before:
        return "not-yet-valid"
    if grant.not_after is not None and moment >= grant.not_after:
        return "expired"
    return "active"


def raise_unless_active(grant: Grant, status: GrantStatus) -> None:
    """The GrantError ``status`` stands for; nothing when it is ``active``."""
    if status == "revoked":
        raise GrantRevokedError(f"grant {grant.id} was revoked")
    if status == "expired":
        raise GrantExpiredError(f"grant {grant.id} expired at {grant.not_after}")
    if status == "not-yet-valid":
        raise GrantNotYetValidError(f"grant {grant.id} is valid from {grant.not_before}")


def grant_terms(
    purposes: Iterable[str],
    priors: Iterable[str],
    evidence_sha256: str | None,
    start: datetime,
    not_after: datetime | None,
) -> tuple[list[str], list[str]]:
    """The sorted purposes and prior hashes of a grant starting at ``start``, after
    checking them: known purposes (at least one), SHA-256 hex hashes, an end after
    the start."""
    wanted = sorted(set(purposes))
    if not wanted:
        raise InputError("a grant needs at least one purpose")
    bad = [p for p in wanted if p not in PURPOSES]
    if bad:
        raise InputError(f"unknown purpose {bad[0]!r}: choose from {', '.join(PURPOSES)}")
    prior_list = sorted({p.lower() for p in priors})
    for value in [*prior_list, *([evidence_sha256] if evidence_sha256 else [])]:
        if not SHA256_HEX.match(value):
            raise InputError(f"not a SHA-256 in hex: {value!r}")
    if not_after is not None and not_after <= start:
        raise InputError("the grant would end before it starts (--until before --from)")
    return wanted, prior_list


@dataclass(frozen=True)
class GrantTerms:
    """A grant's terms after :func:`grant_terms` and the registry's legal limits
    (``review_by`` from :class:`~consentry.registry.grant_policy.GrantPolicy`)."""

    purposes: list[str]
    priors: list[str]
    start: datetime
    not_after: datetime | None
    constraints: dict[str, Any]
    evidence_sha256: str | None
    review_by: str | None

    def row(
        self,
        grant_id: str,
        subject_id: str,
        grantee_id: str,
        issuer_key_id: str,
        subject_key_id: str | None,
        created_at: datetime,
        sign_by: str | None = None,
    ) -> Grant:
        """The grant row these terms make (``log_index`` -1: not yet appended)."""
        return Grant(
            id=grant_id,
            subject_id=subject_id,
            grantee_id=grantee_id,
            purposes_json=json.dumps(self.purposes),
            priors_json=json.dumps(self.priors),
            not_before=format_time(self.start),
            not_after=format_time(self.not_after) if self.not_after is not None else None,
            constraints_json=canonical_json(self.constraints).decode(),
            evidence_sha256=self.evidence_sha256,
            issuer_key_id=issuer_key_id,
            subject_key_id=subject_key_id,
            sign_by=sign_by,
            review_by=self.review_by,
            created_at=format_time(created_at),
            log_index=-1,
        )


def checked_grant_terms(
    purposes: Iterable[str],
    priors: Iterable[str],
    evidence_sha256: str | None,
    start: datetime,
    not_after: datetime | None,
    constraints: dict[str, Any] | None,
    policy: GrantPolicy,
) -> GrantTerms:
    """:func:`grant_terms` and the registry's legal limits, as one value."""
    wanted, prior_list = grant_terms(purposes, priors, evidence_sha256, start, not_after)
    review_by = policy.review_by(start, not_after, evidence_sha256)
    return GrantTerms(
        wanted, prior_list, start, not_after, dict(constraints or {}), evidence_sha256, review_by
    )


def subject_cosigners(
    subject: Subject, subject_key: SigningKey | None, action: str, current: str | None = None
) -> list[SigningKey]:
    """The co-signers a ``action`` (grant, revocation) concerning ``subject`` needs:
    ``[subject_key]`` when the subject holds that key, ``[]`` when it holds none.
    ``current``: the subject's key after their newest key change (public key hex;
    None: the key they registered with)."""
    public_key = current or subject.public_key
    if public_key is None:
        if subject_key is not None:
            raise InputError(f"subject {subject.id} holds no key", hint="drop --subject-key")
        return []
    if subject_key is None:
        raise SignatureError(
            f"subject {subject.id} holds a key: the {action} needs their signature "
            "(--subject-key FILE)"
        )
    if subject_key.public_hex != public_key:
        raise SignatureError(
            f"--subject-key is not the key of subject {subject.id} "
            f"(expected key {key_id_of(public_key_from_hex(public_key))[:16]})"
        )
    return [subject_key]


def prior_digest(
    kind: str, path: Path | None, sha256: str | None, size: int | None
) -> tuple[str, int]:
    """``(sha256, size)`` of a prior: hashed from ``path`` (a weights file checked to
    be well-formed safetensors first, every kind but ``exemplars``), else the given
    pair, checked."""
    if kind not in PRIOR_KINDS:
        raise InputError(f"unknown prior kind {kind!r}: choose from {', '.join(PRIOR_KINDS)}")
    if path is not None:
        if kind != "exemplars":
            check_safetensors(path)
        try:
            sha256, size = hash_file(path)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    if sha256 is None or size is None or not SHA256_HEX.match(sha256):
        raise InputError("a prior needs a file, or its SHA-256 and size")
    return sha256, size
