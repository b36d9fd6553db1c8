"""The review queue (issue 14): held decisions, a person's verdict, and approvals.

A job whose only obstacle is an uncertain face match is *held*
(:mod:`consentry.gate.policy`): logged as a signed decision whose statement
carries a ``held`` key (:func:`hold_record`: the face's image, position and box,
the candidate subject and similarity, the band), next to the requester, the
purpose and the SHA-256 of every input the decision already binds. A person then
gives one signed review (:func:`record_review`, a ``consentry.review`` statement
signed by the operator key): ``approve`` (the face is not the candidate) or
``reject`` (it is, or cannot be told). The client resubmits the same job naming
the held decision; :func:`approval_for` is what the gateway accepts it on.

Invariants
- The queue and every verdict come from the signed log as followed
  (:class:`~consentry.registry.review_state.ReviewFollower`), never from rows: a
  review row without its signed entry, or one that differs from it, is a
  :class:`~consentry.errors.LogIntegrityError`; a missing row with a signed
  review present is one too.
- One review per hold: a second is refused (:class:`~consentry.errors.ReviewError`)
  inside the write transaction, after the tail is followed there, so two
  reviewers racing cannot both write.
- An approval applies only to the job that was held: same requester, same
  purpose, the same input images (SHA-256, in order), and only within
  :data:`APPROVAL_VALID_FOR` of the review. It removes the held candidates of the
  held faces only (the gateway's part); every other fact is decided as always.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from consentry.errors import InputError, LogIntegrityError, NotFoundError, ReviewError
from consentry.registry.models import Review
from consentry.registry.review_state import VERDICTS, SignedHold, SignedReview
from consentry.registry.statements import format_time, parse_time

if TYPE_CHECKING:
    from consentry.registry.store import Registry

__all__ = [
    "APPROVAL_VALID_FOR",
    "VERDICTS",
    "approval_for",
    "get_hold",
    "hold_json",
    "hold_record",
    "pending_holds",
    "record_review",
]

APPROVAL_VALID_FOR = timedelta(hours=24)
"""How long after its review an approval may be resubmitted under."""

_MAX_NOTE = 2000
_MAX_REVIEWER = 200


def hold_record(
    holds: Sequence[tuple[int, int, str, float]],
    shown: Sequence[dict[str, object]],
    band: tuple[float, float],
) -> dict[str, Any]:
    """What a hold binds, for the decision's ``held`` key: each held face (image,
    position, bbox from the receipt's shown list, candidate subject, similarity)
    and the band ``[review_threshold, threshold)`` it fell in."""
    boxes = {(f.get("image"), f.get("face")): f.get("bbox") for f in shown}
    return {
        "faces": [
            {
                "image": image,
                "face": face,
                "bbox": list(boxes.get((image, face)) or ()),  # type: ignore[call-overload]
                "subject": subject,
                "similarity": round(float(similarity), 6),
            }
            for image, face, subject, similarity in holds
        ],
        "band": [round(float(band[0]), 6), round(float(band[1]), 6)],
    }


def _check_row(registry: Registry, decision_id: str, review: SignedReview | None) -> None:
    """The review rows of ``decision_id`` must be exactly the signed review."""
    with registry.db.read() as session:
        rows = list(session.exec(select(Review).where(Review.decision_id == decision_id)))
    signed = (
        None
        if review is None
        else (review.id, review.verdict, review.reviewer, review.note, review.time)
    )
    found = [(r.id, r.verdict, r.reviewer, r.note, r.created_at) for r in rows]
    if signed is None and found:
        raise LogIntegrityError(
            f"decision {decision_id}: review row {found[0][0]} has no signed log entry (forged row)"
        )
    if signed is not None and found != [signed]:
        raise LogIntegrityError(
            f"decision {decision_id}: its review row is missing or differs from the signed log"
        )


def get_hold(registry: Registry, decision_id: str) -> tuple[SignedHold, SignedReview | None]:
    """The signed hold and its signed review (None: pending), after following the log.
    NotFoundError when ``decision_id`` is no held decision; LogIntegrityError when
    the review rows contradict the log."""
    state = registry.consent
    state.refresh()
    hold, review = state.hold_and_review(str(decision_id))
    if hold is None:
        raise NotFoundError(f"no held decision {decision_id!r}", hint="see 'consentry review list'")
    _check_row(registry, hold.id, review)
    return hold, review


def pending_holds(registry: Registry) -> list[SignedHold]:
    """The held decisions no review has judged yet, oldest first (from the log)."""
    state = registry.consent
    state.refresh()
    return state.pending_holds()


def record_review(
    registry: Registry, decision_id: str, verdict: str, reviewer: str, note: str
) -> Review:
    """Sign and log a person's verdict on a held decision; returns its row.

    ``verdict``: ``approve`` (the held face is not the candidate subject) or
    ``reject``. InputError for a bad verdict or reviewer; NotFoundError when there
    is no such hold; ReviewError when it was reviewed already (checked after
    following the tail inside the write transaction).
    """
    if verdict not in VERDICTS:
        raise InputError(f"a review's verdict is one of {', '.join(VERDICTS)}, not {verdict!r}")
    who, why = str(reviewer).strip(), str(note).strip()
    if not who or len(who) > _MAX_REVIEWER:
        raise InputError(f"a review names its reviewer (1 to {_MAX_REVIEWER} characters)")
    if len(why) > _MAX_NOTE:
        raise InputError(f"a review's note has at most {_MAX_NOTE} characters")
    get_hold(registry, decision_id)  # NotFound / integrity before the writer lock
    state = registry.consent
    with registry.db.write() as session:
        state.refresh(session)
        hold, review = state.hold_and_review(str(decision_id))
        if hold is None:  # pragma: no cover - holds are never removed from the log
            raise NotFoundError(f"no held decision {decision_id!r}")
        if review is not None:
            raise ReviewError(
                f"decision {hold.id} was already reviewed ({review.verdict} by "
                f"{review.reviewer} at {review.time}, review {review.id}): one verdict per hold"
            )
        row = Review(
            id=registry.new_id("rev"),
            decision_id=hold.id,
            verdict=verdict,
            reviewer=who,
            note=why,
            created_at=format_time(registry.now()),
            log_index=-1,
        )
        registry.log.record(session, row)
    return row


def approval_for(
    registry: Registry,
    decision_id: str,
    grantee_id: str,
    purpose: str,
    inputs: Sequence[str],
) -> tuple[SignedHold, SignedReview]:
    """The signed hold and its approving review, if they apply to this job.

    ReviewError (never an allow) when the hold is unreviewed, rejected, expired
    (:data:`APPROVAL_VALID_FOR` after the review), or was of another job: another
    requester, purpose, or input images (SHA-256, in order)."""
    hold, review = get_hold(registry, decision_id)
    if review is None:
        raise ReviewError(f"held decision {hold.id} is not reviewed yet: it stays held")
    if review.verdict != "approve":
        raise ReviewError(
            f"held decision {hold.id} was rejected by {review.reviewer} (review {review.id})"
        )
    problems = []
    if hold.grantee != grantee_id:
        problems.append("another requester")
    if hold.purpose != purpose:
        problems.append(f"purpose {hold.purpose}, not {purpose}")
    if list(hold.inputs) != [str(i).lower() for i in inputs]:
        problems.append("other input images (SHA-256)")
    if problems:
        raise ReviewError(
            f"review {review.id} approved held decision {hold.id}, which was of another "
            f"job: {', '.join(problems)}"
        )
    if registry.now() >= parse_time(review.time) + APPROVAL_VALID_FOR:
        raise ReviewError(
            f"review {review.id} of held decision {hold.id} expired (approvals are valid "
            f"for {APPROVAL_VALID_FOR} after the review, given at {review.time})"
        )
    return hold, review


def hold_json(hold: SignedHold, review: SignedReview | None = None) -> dict[str, Any]:
    """A hold (and its review) as the CLI and the HTTP review routes show them."""
    return {
        "decision": hold.id,
        "time": hold.time,
        "log_index": hold.index,
        "requester": hold.grantee,
        "purpose": hold.purpose,
        "inputs": list(hold.inputs),
        "faces": [dict(f) for f in hold.faces],
        "band": list(hold.band),
        "review": None
        if review is None
        else {
            "id": review.id,
            "verdict": review.verdict,
            "reviewer": review.reviewer,
            "note": review.note,
            "time": review.time,
            "log_index": review.index,
        },
    }
