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
  decision does not undo it: outputs released under it stay valid. Validity is
  judged from the signed log (``registry.consent``), never from grant rows.
- **Revocation wins every race**: an *allow* is re-checked inside its own write
  transaction, after the writer lock is taken, against the log's tail as it is
  then (entries committed by any process): a grant it names that is now revoked
  or outside its window, or the subject of the prior it uses now erased, turns it
  into a logged refusal. Nothing can be appended between that
  re-check and the decision's leaf.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session, select

from consentry.errors import ConsentryError, InputError, NotFoundError
from consentry.hashing import is_sha256_hex
from consentry.registry.models import Decision, Grant, Grantee, Subject
from consentry.registry.signing import Envelope, canonical_json
from consentry.registry.statements import PURPOSES, format_time, parse_time, statement_of

if TYPE_CHECKING:
    from consentry.registry.store import Registry

__all__ = ["RACE_PREFIX", "get_decision", "grant_valid_at_index", "record_decision"]

# The reasons of an allow turned into a refusal by the in-transaction re-check start so.
RACE_PREFIX = "refused at release: "


def _hashes(values: Iterable[str], what: str) -> list[str]:
    result = []
    for value in values:
        clean = str(value).strip().lower()
        if not is_sha256_hex(clean):
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
    if allowed:  # catch up outside the writer lock, so only the tail is read under it
        with contextlib.suppress(ConsentryError):  # the re-check below reports it
            registry.consent.refresh()
    with registry.db.write() as session:
        moment = format_time(registry.now())
        if allowed:
            late = _recheck(registry, session, grant_ids, subject_ids, prior, moment)
            if late:
                allowed, reason_list = False, [RACE_PREFIX + r for r in late]
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
            created_at=moment,
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


def _recheck(
    registry: Registry,
    session: Session,
    grant_ids: Sequence[str],
    subject_ids: Sequence[str],
    prior_sha256: str | None,
    moment: str,
) -> list[str]:
    """Why an allow no longer holds at the log's tail, read in the writer's ``session``
    (empty: it still holds). A log that does not verify is a reason too."""
    state = registry.consent
    try:
        state.refresh(session)
    except ConsentryError as exc:
        return [f"integrity error: {exc}"]
    index = state.size  # the index the decision is about to get
    problems: list[str] = []
    for grant_id in grant_ids:
        valid, why = state.grant_valid_at(grant_id, index, moment)
        if not valid:
            problems.append(why)
    # an erasure leaves consent in place (the subject's face becomes unknown, their
    # name still needs a grant) but ends the use of their priors
    owners = [p.subject for p in state.priors_with_sha(prior_sha256)] if prior_sha256 else []
    for subject_id in dict.fromkeys(s for s in owners if s in state.erased):
        problems.append(
            f"subject {subject_id}, whose prior the job uses, was erased at log index "
            f"{state.erased[subject_id]}"
        )
    # an opt-out withdraws every use of the subject's likeness, grants or not
    for subject_id in dict.fromkeys([*subject_ids, *owners]):
        if subject_id in state.opted_out:
            problems.append(
                f"subject {subject_id} opted out at log index {state.opted_out[subject_id]}"
            )
    return problems


def grant_valid_at_index(
    registry: Registry, grant_id: str, index: int, at_time: datetime | str
) -> tuple[bool, str]:
    """Was ``grant_id`` valid for a decision at log index ``index`` taken at ``at_time``?

    Returns ``(True, why)`` or ``(False, why)``; ``why`` is one line naming the rule
    that decided. See the module docstring for the rule. Judged from the signed log
    (``registry.consent``, followed first); raises LogIntegrityError when it does not
    verify.
    """
    moment = format_time(parse_time(at_time) if isinstance(at_time, str) else at_time)
    state = registry.consent
    state.refresh()
    return state.grant_valid_at(grant_id, index, moment)
