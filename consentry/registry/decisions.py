"""Gateway decisions in the registry, and grant validity at a log index.

Invariants
- Every decision the gateway takes, allow or refuse, is one :class:`Decision` row
  and one log leaf signed by the operator key, written in one transaction. The
  row holds ids and SHA-256 hashes only, never an image or an embedding.
- A decision names only records already in the log: its grantee, its subjects and
  its grants (``log verify`` checks this in log order).
- **Consent at the time**: a grant is valid at log index *i* iff it
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
- Decisions are sequenced in batches (``registry.sequencer``, see
  ``consentry.registry.sequencer``): concurrent callers share one write
  transaction, and each allow is re-checked at its own index there. The caller
  gets its row, with its log index, only after that transaction commits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from consentry.errors import InputError, NotFoundError
from consentry.hashing import is_sha256_hex
from consentry.registry.models import Decision
from consentry.registry.signing import canonical_json
from consentry.registry.statements import PURPOSES, format_time, parse_time

if TYPE_CHECKING:
    from consentry.registry.consent import ConsentState
    from consentry.registry.store import Registry

__all__ = [
    "RACE_PREFIX",
    "DecisionRequest",
    "check_marks",
    "decision_of_release",
    "decision_row",
    "get_decision",
    "grant_valid_at_index",
    "prepare_decision",
    "recheck_at",
    "record_decision",
]

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


@dataclass(frozen=True)
class DecisionRequest:
    """One validated decision waiting for its log index (see :func:`prepare_decision`).

    Ids are as the caller gave them (``grantee`` an id or a unique name); the
    existence checks run in the writer's transaction (``registry.sequencer``).
    """

    grantee: str
    purpose: str
    allowed: bool
    reasons: tuple[str, ...]
    grants: tuple[str, ...]
    subjects: tuple[str, ...]
    prior_sha256: str | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    release_id: str | None = None  # the release's marks (see :func:`check_marks`)
    marks_json: str | None = None
    held: str | None = None  # canonical JSON of a hold (see consentry.registry.reviews)
    review: str | None = None  # the review a resumed job was decided under


_RELEASE_ID = re.compile(r"[0-9a-f]{16}")
_PDQ = re.compile(r"[0-9a-f]{64}")
_MARK_KEYS = {"watermark", "iscc", "pdq", "pdq_quality"}


def check_marks(
    release_id: str | None, marks: Sequence[Mapping[str, Any]] | None, outputs: int
) -> tuple[str | None, str | None]:
    """A release's marks, checked: the id (16 lowercase hex digits) its watermark
    carries and one entry per output (``watermark``: the algorithm name or None when
    the output could not carry it; ``iscc``, ``pdq``, ``pdq_quality``: its
    fingerprints). Returns the id and the marks as canonical JSON; InputError otherwise."""
    if release_id is None and marks is None:
        return None, None
    if release_id is None or marks is None or not _RELEASE_ID.fullmatch(str(release_id)):
        raise InputError(f"a release needs an id of 16 hex digits and its marks: {release_id!r}")
    if len(marks) != outputs:
        raise InputError(f"{len(marks)} marks for {outputs} outputs")
    clean = [_check_mark(mark) for mark in marks]
    return str(release_id), canonical_json(clean).decode()


def _check_mark(mark: Mapping[str, Any]) -> dict[str, Any]:
    if set(mark) != _MARK_KEYS:
        raise InputError(f"a mark has the keys {sorted(_MARK_KEYS)}: {dict(mark)!r}")
    watermark, iscc, pdq, quality = (mark[k] for k in ("watermark", "iscc", "pdq", "pdq_quality"))
    if not (
        (watermark is None or isinstance(watermark, str))
        and isinstance(iscc, str)
        and iscc.startswith("ISCC:")
        and isinstance(pdq, str)
        and _PDQ.fullmatch(pdq)
        and isinstance(quality, int)
        and not isinstance(quality, bool)
        and 0 <= quality <= 100
    ):
        raise InputError(f"not a mark: {dict(mark)!r}")
    return {"watermark": watermark, "iscc": iscc, "pdq": pdq, "pdq_quality": quality}


def prepare_decision(
    grantee: str,
    purpose: str,
    allowed: bool,
    reasons: Sequence[str],
    grants: Sequence[str],
    subjects: Sequence[str],
    prior_sha256: str | None,
    inputs: Sequence[str],
    outputs: Sequence[str],
    release_id: str | None = None,
    marks: Sequence[Mapping[str, Any]] | None = None,
    held: dict[str, Any] | None = None,
    review: str | None = None,
) -> DecisionRequest:
    """Check what needs no database (purpose, reasons, hashes, marks); InputError otherwise.

    ``held``: what a hold holds (a refusal only); ``review``: the review a resumed
    job was decided under."""
    if purpose not in PURPOSES:
        raise InputError(f"unknown purpose {purpose!r}: choose from {', '.join(PURPOSES)}")
    reason_list = [str(r).strip() for r in reasons if str(r).strip()]
    if not allowed and not reason_list:
        raise InputError("a refusal needs at least one reason")
    release, marks_json = check_marks(release_id, marks, len(outputs))
    if held is not None and allowed:
        raise InputError("an allow cannot be a hold")
    return DecisionRequest(
        grantee=str(grantee),
        purpose=purpose,
        allowed=bool(allowed),
        reasons=tuple(reason_list),
        grants=tuple(_unique(grants)),
        subjects=tuple(_unique(subjects)),
        prior_sha256=_hashes([prior_sha256], "prior")[0] if prior_sha256 is not None else None,
        inputs=tuple(_hashes(inputs, "input")),
        outputs=tuple(_hashes(outputs, "output")),
        release_id=release,
        marks_json=marks_json,
        held=canonical_json(held).decode() if held is not None else None,
        review=str(review) if review is not None else None,
    )


def decision_row(
    request: DecisionRequest, decision_id: str, moment: str, late: Sequence[str], grantee_id: str
) -> Decision:
    """The row of ``request`` as decided: an allow with ``late`` reasons (the
    re-check's) becomes a refusal carrying them, each prefixed with RACE_PREFIX."""
    allowed, reasons = request.allowed, list(request.reasons)
    if allowed and late:
        allowed, reasons = False, [RACE_PREFIX + r for r in late]
    return Decision(
        id=decision_id,
        grantee_id=grantee_id,
        purpose=request.purpose,
        allowed=allowed,
        reasons_json=canonical_json(reasons).decode(),
        grants_json=canonical_json(list(request.grants)).decode(),
        subjects_json=canonical_json(list(request.subjects)).decode(),
        prior_sha256=request.prior_sha256,
        inputs_json=canonical_json(list(request.inputs)).decode(),
        outputs_json=canonical_json(list(request.outputs)).decode(),
        created_at=moment,
        log_index=-1,
        release_id=request.release_id,
        marks_json=request.marks_json,
        held_json=request.held,
        review_id=request.review,
    )


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
    release_id: str | None = None,
    marks: Sequence[Mapping[str, Any]] | None = None,
    held: dict[str, Any] | None = None,
    review: str | None = None,
) -> Decision:
    """Log one gateway decision, signed by the operator key; returns its row.

    ``held``: the decision is a hold (not allowed, queued for review) of what this
    mapping names (see :func:`consentry.registry.reviews.hold_record`); ``review``:
    the approving review a resumed job was decided under.

    ``grantee`` is an id or a unique name; ``grants`` and ``subjects`` are ids that
    must exist (NotFoundError otherwise); ``prior_sha256``, ``inputs`` and ``outputs``
    are SHA-256 hex digests. A refusal needs at least one reason. ``release_id`` and
    ``marks``: the outputs' watermark id and fingerprints (:func:`check_marks`), in
    the signed statement under ``release``. Thread-safe:
    concurrent calls are written in one transaction (``registry.sequencer``); each
    returns its own row, with its log index, once that transaction committed.
    """
    request = prepare_decision(
        grantee, purpose, allowed, reasons, grants, subjects, prior_sha256, inputs, outputs,
        release_id, marks,
        held, review,
    )  # fmt: skip
    # the batch's leader follows the log outside the writer lock, then re-checks every
    # allow of the batch inside it (``consentry.registry.sequencer``)
    return registry.sequencer.submit(request)


def decision_of_release(registry: Registry, release_id: str) -> Decision | None:
    """The decision whose outputs carry watermark id ``release_id``, or None."""
    if not _RELEASE_ID.fullmatch(release_id):
        return None
    with registry.db.read() as session:
        return session.exec(select(Decision).where(Decision.release_id == release_id)).first()


def get_decision(registry: Registry, decision_id: str) -> Decision:
    """A decision by id; NotFoundError if there is none."""
    with registry.db.read() as session:
        row = session.get(Decision, decision_id)
    if row is None:
        raise NotFoundError(f"no decision {decision_id!r}")
    return row


def recheck_at(
    state: ConsentState,
    index: int,
    grant_ids: Sequence[str],
    subject_ids: Sequence[str],
    prior_sha256: str | None,
    moment: str,
) -> list[str]:
    """Why an allow at log ``index`` taken at ``moment`` no longer holds, judged from
    ``state`` (empty: it still holds). The caller refreshed ``state`` in the writer's
    transaction, so it holds every entry before ``state.size``; ``index`` may lie past
    it only by decisions of the same batch, which change no consent fact."""
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
