"""Gateway decisions in the registry, and grant validity at a log index.

Invariants
- Every decision the gateway takes, allow or refuse, is one :class:`Decision` row
  and one log leaf signed by the operator key, written in one transaction. The
  row holds ids and SHA-256 hashes only, never an image or an embedding.
- A decision names only records already in the log: its grantee, its subjects and
  its grants (``log verify`` checks this in log order).
- **Consent at the time** (DESIGN.md): a grant is valid at log index *i* iff it
  was appended before *i*, its window contains the decision time, and no
  revocation of it was appended before *i*. A revocation appended after a
  decision does not undo it: outputs released under it stay valid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session, select

from consentry.errors import InputError, NotFoundError
from consentry.registry.models import Decision, Grant, Grantee, Revocation, Subject
from consentry.registry.signing import Envelope, canonical_json
from consentry.registry.statements import PURPOSES, format_time, parse_time, statement_of

if TYPE_CHECKING:
    from consentry.registry.store import Registry

__all__ = ["get_decision", "grant_valid_at_index", "record_decision"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _hashes(values: Iterable[str], what: str) -> list[str]:
    result = []
    for value in values:
        clean = str(value).strip().lower()
        if not _SHA256.match(clean):
            raise InputError(f"{what}: not a SHA-256 in hex: {value!r}")
        result.append(clean)
    return result


def _unique(values: Iterable[str]) -> list[str]:
    """Drop duplicates, keep the first order (the order the gateway saw them)."""
    return list(dict.fromkeys(str(v) for v in values))


def _grantee_id(session: Session, ref: str) -> str:
    row = session.get(Grantee, ref)
    if row is None:
        row = session.exec(select(Grantee).where(Grantee.name == ref)).first()
    if row is None:
        raise NotFoundError(f"no grantee {ref!r}: see 'consentry grantee list'")
    return row.id


def record_decision(
    registry: Registry,
    grantee: str,
    purpose: str,
    allowed: bool,
    reasons: Sequence[str],
    grants: Sequence[str],
    subjects: Sequence[str],
    prior_sha256: str | None,
    inputs: Sequence[str],
    outputs: Sequence[str],
) -> Decision:
    """Log one gateway decision, signed by the operator key; returns its row.

    ``grantee`` is an id or a unique name; ``grants`` and ``subjects`` are ids that
    must exist (NotFoundError otherwise); ``prior_sha256``, ``inputs`` and ``outputs``
    are SHA-256 hex digests. A refusal needs at least one reason.
    """
    if purpose not in PURPOSES:
        raise InputError(f"unknown purpose {purpose!r}: choose from {', '.join(PURPOSES)}")
    reason_list = [str(r).strip() for r in reasons if str(r).strip()]
    if not allowed and not reason_list:
        raise InputError("a refusal needs at least one reason")
    grant_ids = _unique(grants)
    subject_ids = _unique(subjects)
    prior = _hashes([prior_sha256], "prior")[0] if prior_sha256 is not None else None
    input_hashes = _hashes(inputs, "input")
    output_hashes = _hashes(outputs, "output")
    with registry.db.write() as session:
        grantee_id = _grantee_id(session, grantee)
        for grant_id in grant_ids:
            if session.get(Grant, grant_id) is None:
                raise NotFoundError(f"no grant {grant_id!r}: see 'consentry grants'")
        for subject_id in subject_ids:
            if session.get(Subject, subject_id) is None:
                raise NotFoundError(f"no subject {subject_id!r}: see 'consentry subject list'")
        row = Decision(
            id=registry.new_id("dec"),
            grantee_id=grantee_id,
            purpose=purpose,
            allowed=bool(allowed),
            reasons_json=canonical_json(reason_list).decode(),
            grants_json=canonical_json(grant_ids).decode(),
            subjects_json=canonical_json(subject_ids).decode(),
            prior_sha256=prior,
            inputs_json=canonical_json(input_hashes).decode(),
            outputs_json=canonical_json(output_hashes).decode(),
            created_at=format_time(registry.now()),
            log_index=-1,
        )
        key = registry.signing_key(session)
        registry.append(session, row, "decision", row.id, Envelope.sign(statement_of(row), [key]))
    return row


def get_decision(registry: Registry, decision_id: str) -> Decision:
    """A decision by id; NotFoundError if there is none."""
    with registry.db.read() as session:
        row = session.get(Decision, decision_id)
    if row is None:
        raise NotFoundError(f"no decision {decision_id!r}")
    return row


def grant_valid_at_index(
    registry: Registry, grant_id: str, index: int, at_time: datetime | str
) -> tuple[bool, str]:
    """Was ``grant_id`` valid for a decision at log index ``index`` taken at ``at_time``?

    Returns ``(True, why)`` or ``(False, why)``; ``why`` is one line naming the rule
    that decided. See the module docstring for the rule.
    """
    moment = format_time(parse_time(at_time) if isinstance(at_time, str) else at_time)
    with registry.db.read() as session:
        grant = session.get(Grant, grant_id)
        revocation = (
            None
            if grant is None
            else session.exec(select(Revocation).where(Revocation.grant_id == grant_id)).first()
        )
    if grant is None:
        return False, f"grant {grant_id} does not exist in this registry"
    if grant.log_index >= index:
        return False, (
            f"grant {grant_id} was appended at log index {grant.log_index}, "
            f"not before the decision at {index}"
        )
    if moment < grant.not_before:
        return False, f"grant {grant_id} was not yet valid at {moment} (from {grant.not_before})"
    if grant.not_after is not None and moment >= grant.not_after:
        return False, f"grant {grant_id} had expired at {moment} (until {grant.not_after})"
    if revocation is not None and revocation.log_index < index:
        return False, (
            f"grant {grant_id} was revoked at log index {revocation.log_index}, "
            f"before the decision at {index}"
        )
    return True, f"grant {grant_id} was valid at log index {index}"
