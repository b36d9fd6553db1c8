"""Resuming a held job (issue 14): an approval drops exactly the reviewed candidate."""

from __future__ import annotations

from consentry.gate.job_facts import FaceFact, GrantFact, JobFacts
from consentry.gate.policy import decide
from consentry.gate.resume import approved_facts
from consentry.registry.review_state import SignedHold, SignedReview

NOW = "2026-03-01T12:00:00Z"
HOLD = SignedHold(
    "dec_h", "gte_me", "restore", ("a" * 64,),
    ({"image": 0, "face": 0, "bbox": [1, 2, 3, 4], "subject": "sub_a", "similarity": 0.31},),
    (0.28, 0.33), NOW, 7,
)  # fmt: skip
REVIEW = SignedReview("rev_r", "dec_h", "approve", "ana", "not her", NOW, 8)


def job(*faces: FaceFact, refuse_unknown: bool = False) -> JobFacts:
    return JobFacts(
        requester="gte_me", purpose="restore", now=NOW, input_faces=faces,
        known_subjects=frozenset({"sub_a", "sub_b"}), refuse_unknown_faces=refuse_unknown,
    )  # fmt: skip


def test_the_reviewed_candidate_becomes_an_unknown_face() -> None:
    facts, notes = approved_facts(job(FaceFact(0, 0, "sub_a", 0.31, False)), HOLD, REVIEW)
    assert facts.input_faces == (FaceFact(0, 0, None, 0.0),)
    assert len(notes) == 1 and "rev_r" in notes[0] and "dec_h" in notes[0]
    assert decide(facts).allowed
    strict, _ = approved_facts(
        job(FaceFact(0, 0, "sub_a", 0.31, False), refuse_unknown=True), HOLD, REVIEW
    )
    assert not decide(strict).allowed  # now an unregistered face, refused as such


def test_certain_matches_other_candidates_and_other_faces_stay() -> None:
    faces = (
        FaceFact(0, 0, "sub_a", 0.9, True),  # a certain match of the reviewed subject
        FaceFact(0, 0, "sub_b", 0.30, False),  # another candidate of the reviewed face
        FaceFact(0, 1, "sub_a", 0.30, False),  # the subject's candidate on another face
        FaceFact(1, 0, "sub_a", 0.30, False),  # ... in another image
    )
    facts, notes = approved_facts(job(*faces), HOLD, REVIEW)
    assert facts.input_faces == faces and notes == []
    verdict = decide(facts)
    assert not verdict.allowed and not verdict.held  # the certain match needs a grant
    grant = GrantFact("grt_a", "sub_a", "gte_me", ("restore",), (), "2025-01-01T00:00:00Z",
                      None, False)  # fmt: skip
    covered = decide(JobFacts(**{**facts.__dict__, "grants": (grant,)}))
    assert covered.held and {h[2] for h in covered.holds} == {"sub_b"}
