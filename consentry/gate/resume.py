"""Resuming a held job under a person's approval (issue 14).

:func:`approved_facts` is pure: given the facts of the resubmitted job and the
signed hold and approving review (already checked to be of this job by
:func:`consentry.registry.reviews.approval_for`), it drops exactly the held
candidates, nothing else.

Invariants
- Only an *uncertain* candidate is dropped, and only on the face the hold named
  (image, position) and for the subject it named: a face that is now a certain
  match of that subject, another candidate of the same face, and every other face,
  name and prior are decided as always ("approval still needs the subject's
  grant" for every match the reviewer did not judge).
- A face left with no fact becomes an unregistered face, so
  ``refuse_unknown_faces`` and the restore rules apply to it as to any stranger.
"""

from __future__ import annotations

import dataclasses

from consentry.gate.job_facts import FaceFact, JobFacts
from consentry.registry.review_state import SignedHold, SignedReview

__all__ = ["approved_facts"]


def _held_keys(hold: SignedHold) -> set[tuple[int, int, str]]:
    keys = set()
    for face in hold.faces:
        try:
            keys.add((int(face["image"]), int(face["face"]), str(face["subject"])))
        except (KeyError, TypeError, ValueError):
            continue  # a malformed held face drops nothing
    return keys


def approved_facts(
    facts: JobFacts, hold: SignedHold, review: SignedReview
) -> tuple[JobFacts, list[str]]:
    """``facts`` without the candidates the review approved, and a note per dropped
    candidate naming the review (for the resumed decision's reasons)."""
    held = _held_keys(hold)
    kept: list[FaceFact] = []
    notes: list[str] = []
    dropped: set[tuple[int, int]] = set()
    for face in facts.input_faces:
        key = (face.image, face.face, str(face.subject_id))
        if face.certain is False and key in held:
            dropped.add((face.image, face.face))
            notes.append(
                f"input image {face.image} face {face.face}: review {review.id} by "
                f"{review.reviewer} judged it is not subject {face.subject_id} "
                f"(held decision {hold.id})"
            )
            continue
        kept.append(face)
    still = {(f.image, f.face) for f in kept}
    for image, position in sorted(dropped - still):
        kept.append(FaceFact(image, position, None, 0.0))
    return dataclasses.replace(facts, input_faces=tuple(kept)), notes
