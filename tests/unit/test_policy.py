"""The consent policy: a decision table over every combination, named attacks,
fail-closed behaviour on malformed facts, and properties (totality, monotonicity).

The expected verdicts in the table come from a small oracle written here from
the rules in the issue, independently of ``consentry.gate.policy``.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentry.gate.policy import (
    FaceFact,
    GrantFact,
    JobFacts,
    Limits,
    PriorFact,
    Verdict,
    active_grant,
    decide,
    grant_problems,
)

NOW = "2026-03-01T12:00:00Z"
PAST = "2025-01-01T00:00:00Z"
FUTURE = "2027-01-01T00:00:00Z"
ME = "gte_me"
SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_OTHER = "c" * 64
KNOWN = frozenset({"sub_a", "sub_b"})


def grant(
    gid: str = "grt_a",
    subject: str = "sub_a",
    grantee: str = ME,
    purposes: tuple[str, ...] = ("restore", "generate", "train"),
    priors: tuple[str, ...] = (),
    not_before: str = PAST,
    not_after: str | None = FUTURE,
    revoked: bool = False,
) -> GrantFact:
    return GrantFact(gid, subject, grantee, purposes, priors, not_before, not_after, revoked)


def facts(**changes: Any) -> JobFacts:
    base = JobFacts(requester=ME, purpose="restore", now=NOW, input_faces=(), known_subjects=KNOWN)
    return dataclasses.replace(base, **changes)


def face(subject: str | None, image: int = 0, index: int = 0) -> FaceFact:
    return FaceFact(image=image, face=index, subject_id=subject, similarity=0.9)


def has(verdict: Verdict, fragment: str) -> bool:
    return any(fragment in reason for reason in verdict.reasons)


# ---------------------------------------------------------------- decision table
FACES = ("matched", "unmatched")
GRANTS = (
    "none",
    "active",
    "expired",
    "not_yet_valid",
    "revoked",
    "other_grantee",
    "other_purpose",
)
PRIORS = ("none", "matching", "hash_mismatch", "other_subject")
PROMPTS = ("alias_present", "alias_absent")
PURPOSES = ("restore", "generate")


def table_facts(
    face_case: str, grant_case: str, prior_case: str, prompt: str, purpose: str
) -> JobFacts:
    """Subject A's facts for one row; subject B always has an active grant naming B's prior."""
    a_grant = {
        "none": None,
        "active": grant(purposes=(purpose,), priors=(SHA_A,)),
        "expired": grant(purposes=(purpose,), priors=(SHA_A,), not_after="2026-02-01T00:00:00Z"),
        "not_yet_valid": grant(
            purposes=(purpose,), priors=(SHA_A,), not_before="2026-06-01T00:00:00Z"
        ),
        "revoked": grant(purposes=(purpose,), priors=(SHA_A,), revoked=True),
        "other_grantee": grant(purposes=(purpose,), priors=(SHA_A,), grantee="gte_other"),
        "other_purpose": grant(purposes=("train",), priors=(SHA_A,)),
    }[grant_case]
    b_grant = grant("grt_b", "sub_b", purposes=(purpose,), priors=(SHA_B,))
    prior = {
        "none": None,
        "matching": PriorFact("pri_a", "sub_a", SHA_A, SHA_A, "lora"),
        "hash_mismatch": PriorFact("pri_a", "sub_a", SHA_A, SHA_OTHER, "lora"),
        "other_subject": PriorFact("pri_b", "sub_b", SHA_B, SHA_B, "lora"),
    }[prior_case]
    return facts(
        purpose=purpose,
        input_faces=(face("sub_a" if face_case == "matched" else None),),
        grants=(b_grant,) if a_grant is None else (a_grant, b_grant),
        prior=prior,
        prompt_subjects=("sub_a",) if prompt == "alias_present" else (),
    )


WHY_NOT = {
    "expired": "grant grt_a for subject sub_a expired at 2026-02-01T00:00:00Z",
    "not_yet_valid": "grant grt_a for subject sub_a is not yet valid",
    "revoked": "grant grt_a for subject sub_a is revoked",
    "other_grantee": "grant grt_a for subject sub_a is for another grantee (gte_other)",
    "other_purpose": "grant grt_a for subject sub_a does not cover purpose",
}


def oracle(
    face_case: str, grant_case: str, prior_case: str, prompt: str, purpose: str
) -> tuple[bool, list[str]]:
    """The expected verdict, written plainly from the rules: (allowed, reason fragments)."""
    reasons: list[str] = []
    a_is_involved = (
        face_case == "matched"
        or prompt == "alias_present"
        or prior_case in ("matching", "hash_mismatch")
    )
    a_has_grant = grant_case == "active"
    if a_is_involved and not a_has_grant:
        reasons.append(f"no active grant for subject sub_a (grantee gte_me, purpose {purpose})")
        if grant_case != "none":
            reasons.append(WHY_NOT[grant_case])
        if face_case == "matched":
            reasons.append("input image 0 face 0 shows subject sub_a")
        if prompt == "alias_present":
            reasons.append("prompt names subject sub_a")
    if prior_case == "hash_mismatch":
        reasons.append("prior pri_a: file hash differs from the registered sha256")
    if prior_case in ("matching", "hash_mismatch") and not a_has_grant:
        reasons.append("prior pri_a is not named by an active grant for subject sub_a")
    if prior_case == "other_subject" and purpose == "restore" and face_case == "matched":
        reasons.append("prior pri_b belongs to sub_b but the input shows sub_a")
    if prior_case != "none" and purpose == "restore" and face_case == "unmatched":
        owner = "sub_b" if prior_case == "other_subject" else "sub_a"
        prior_id = "pri_b" if prior_case == "other_subject" else "pri_a"
        reasons.append(
            f"prior {prior_id} belongs to {owner} but input image 0 shows an unregistered face"
        )
    return (not reasons, reasons)


TABLE = list(itertools.product(FACES, GRANTS, PRIORS, PROMPTS, PURPOSES))


def test_table_is_complete() -> None:
    assert len(TABLE) == 2 * 7 * 4 * 2 * 2


@pytest.mark.parametrize(("face_case", "grant_case", "prior_case", "prompt", "purpose"), TABLE)
def test_decision_table(
    face_case: str, grant_case: str, prior_case: str, prompt: str, purpose: str
) -> None:
    verdict = decide(table_facts(face_case, grant_case, prior_case, prompt, purpose))
    allowed, fragments = oracle(face_case, grant_case, prior_case, prompt, purpose)
    assert verdict.allowed is allowed, verdict.reasons
    assert verdict.reasons, "every verdict explains itself"
    for fragment in fragments:
        assert has(verdict, fragment), (fragment, verdict.reasons)
    a_counted = face_case == "matched" or prompt == "alias_present" or prior_case == "matching"
    if allowed:
        assert not has(verdict, "no active grant")
        assert not any(r.startswith("malformed") for r in verdict.reasons)
        assert ("grt_a" in verdict.grants_used) is a_counted
        if a_counted:
            assert has(verdict, "grant grt_a covers subject sub_a")
        if prior_case == "other_subject":
            assert "grt_b" in verdict.grants_used
            assert "sub_b" in verdict.subjects
    # B is always covered: B appears in a refusal only through the restore rules.
    for reason in verdict.reasons:
        if "sub_b" in reason and not verdict.allowed:
            assert reason == "prior pri_b belongs to sub_b but the input shows sub_a" or (
                reason.startswith("prior pri_b belongs to sub_b but input image 0 shows an ")
            )
    # A's grant is never explained away when it is the one that counts.
    if grant_case == "active":
        assert not has(verdict, "grant grt_a for subject sub_a")


# ---------------------------------------------------------------- named cases
def test_b_prior_on_a_photo_is_refused_even_with_both_grants() -> None:
    verdict = decide(
        facts(
            purpose="restore",
            input_faces=(face("sub_a"),),
            prior=PriorFact("pri_b", "sub_b", SHA_B, SHA_B, "exemplars"),
            grants=(grant(priors=(SHA_A,)), grant("grt_b", "sub_b", priors=(SHA_B,))),
        )
    )
    assert not verdict.allowed
    assert verdict.reasons == ("prior pri_b belongs to sub_b but the input shows sub_a",)


def test_a_prior_on_a_photo_is_allowed() -> None:
    verdict = decide(
        facts(
            input_faces=(face("sub_a"),),
            prior=PriorFact("pri_a", "sub_a", SHA_A, SHA_A, "exemplars"),
            grants=(grant(priors=(SHA_A,)),),
        )
    )
    assert verdict.allowed, verdict.reasons
    assert verdict.grants_used == ("grt_a",)
    assert verdict.subjects == ("sub_a",)
    assert has(verdict, "grant grt_a names prior pri_a")


def test_group_photo_with_one_subjects_prior_is_refused_for_restore() -> None:
    verdict = decide(
        facts(
            input_faces=(face("sub_a"), face("sub_b", index=1)),
            prior=PriorFact("pri_b", "sub_b", SHA_B, SHA_B, "lora"),
            grants=(grant(), grant("grt_b", "sub_b", priors=(SHA_B,))),
        )
    )
    assert not verdict.allowed
    assert has(verdict, "prior pri_b belongs to sub_b but the input shows sub_a")
    assert not has(verdict, "input shows sub_b")


def test_prior_named_only_by_a_grant_of_another_subject_is_refused() -> None:
    # A's grant lists B's prior; B has a grant that does not. B's prior is not usable.
    verdict = decide(
        facts(
            purpose="generate",
            prior=PriorFact("pri_b", "sub_b", SHA_B, SHA_B, "lora"),
            grants=(grant(priors=(SHA_B,)), grant("grt_b", "sub_b")),
        )
    )
    assert not verdict.allowed
    assert has(verdict, "prior pri_b is not named by an active grant for subject sub_b")
    assert has(verdict, "grant grt_a names prior pri_b but is for subject sub_a")


def test_prior_implies_its_subject_for_generation() -> None:
    prior = PriorFact("pri_a", "sub_a", SHA_A, SHA_A, "dreambooth")
    refused = decide(facts(purpose="generate", prior=prior))
    assert not refused.allowed
    assert has(refused, "no active grant for subject sub_a (grantee gte_me, purpose generate)")
    allowed = decide(facts(purpose="generate", prior=prior, grants=(grant(priors=(SHA_A,)),)))
    assert allowed.allowed, allowed.reasons
    assert allowed.subjects == ("sub_a",)


def test_prior_needs_a_grant_that_names_it() -> None:
    verdict = decide(
        facts(
            purpose="generate",
            prior=PriorFact("pri_a", "sub_a", SHA_A, SHA_A, "lora"),
            grants=(grant(priors=(SHA_OTHER,)),),
        )
    )
    assert not verdict.allowed
    assert has(verdict, "prior pri_a is not named by an active grant for subject sub_a")
    assert not has(verdict, "no active grant for subject sub_a")  # the subject is covered


def test_prior_hash_compared_case_insensitively() -> None:
    prior = PriorFact("pri_a", "sub_a", SHA_A, SHA_A.upper(), "lora")
    verdict = decide(facts(purpose="generate", prior=prior, grants=(grant(priors=(SHA_A,)),)))
    assert verdict.allowed, verdict.reasons


def test_unknown_faces_allowed_by_default() -> None:
    verdict = decide(facts(input_faces=(face(None), face(None, image=1))))
    assert verdict.allowed
    assert verdict.subjects == ()
    assert has(verdict, "no registered subject involved")
    assert has(verdict, "unregistered face in image 1 allowed")


def test_unknown_faces_refused_with_the_setting() -> None:
    verdict = decide(
        facts(input_faces=(face(None), face(None, 0, 1), face(None, 2)), refuse_unknown_faces=True)
    )
    assert not verdict.allowed
    assert verdict.reasons == (
        "unregistered face in image 0 (refuse_unknown_faces)",
        "unregistered face in image 2 (refuse_unknown_faces)",
    )


def test_unknown_output_face_refused_with_the_setting() -> None:
    verdict = decide(facts(stage="post", output_faces=(face(None),), refuse_unknown_faces=True))
    assert not verdict.allowed
    assert has(verdict, "unregistered face in output image 0 (refuse_unknown_faces)")
    assert has(verdict, "output withheld")


def test_post_stage_output_shows_subject_without_grant() -> None:
    verdict = decide(
        facts(
            purpose="generate",
            stage="post",
            input_faces=(face("sub_a"),),
            output_faces=(face("sub_a"), face("sub_b", image=1)),
            grants=(grant(),),
        )
    )
    assert not verdict.allowed
    assert has(verdict, "output image 1 face 0 shows subject sub_b")
    assert has(verdict, "no active grant for subject sub_b (grantee gte_me, purpose generate)")
    assert has(verdict, "post-check failed: output withheld")
    assert not has(verdict, "no active grant for subject sub_a")
    assert verdict.grants_used == ("grt_a",)
    assert verdict.subjects == ("sub_a", "sub_b")


def test_post_stage_allowed_when_outputs_covered() -> None:
    verdict = decide(
        facts(
            stage="post",
            input_faces=(face("sub_a"),),
            output_faces=(face("sub_a"),),
            grants=(grant(),),
        )
    )
    assert verdict.allowed, verdict.reasons
    assert has(verdict, "output image 0 face 0 shows subject sub_a")


def test_revoked_during_job_refused_at_release() -> None:
    before = facts(input_faces=(face("sub_a"),), grants=(grant(),))
    assert decide(before).allowed
    after = dataclasses.replace(
        before,
        stage="post",
        output_faces=(face("sub_a"),),
        grants=(grant(revoked=True),),
    )
    verdict = decide(after)
    assert not verdict.allowed
    assert has(verdict, "grant grt_a for subject sub_a is revoked")
    assert has(verdict, "output withheld")


def test_revocation_wins_over_another_revoked_duplicate_window() -> None:
    # A second grant that is revoked does not hide an active one, and vice versa.
    both = (grant(revoked=True), grant("grt_a2"))
    assert decide(facts(input_faces=(face("sub_a"),), grants=both)).grants_used == ("grt_a2",)


def test_expiry_boundary_is_exclusive_and_start_inclusive() -> None:
    g = grant(not_before=NOW, not_after="2026-03-01T12:00:01Z")
    assert active_grant([g], "sub_a", ME, "restore", NOW) is g
    assert active_grant([g], "sub_a", ME, "restore", "2026-03-01T12:00:01Z") is None
    assert active_grant([g], "sub_a", ME, "restore", "2026-03-01T11:59:59Z") is None
    assert active_grant([grant(not_after=None)], "sub_a", ME, "restore", "9999-12-31T23:59:59Z")


def test_grant_problems_lists_every_failing_condition() -> None:
    g = grant(grantee="gte_x", purposes=("train",), revoked=True, not_after=PAST)
    problems = grant_problems(g, "sub_a", ME, "restore", NOW)
    assert problems == (
        "grant grt_a for subject sub_a is for another grantee (gte_x)",
        "grant grt_a for subject sub_a does not cover purpose restore (covers train)",
        "grant grt_a for subject sub_a is revoked",
        "grant grt_a for subject sub_a expired at 2025-01-01T00:00:00Z",
    )
    assert grant_problems(grant(), "sub_a", ME, "restore", NOW) == ()
    assert grant_problems(grant(), "sub_b", ME, "restore", NOW)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"images": 9}, "too many images: 9 > 8"),
        ({"pixels": 16_777_217}, "too many pixels: 16777217 > 16777216"),
        ({"steps": 51}, "too many steps: 51 > 50"),
        ({"steps": 11, "limits": Limits(max_steps=10)}, "too many steps: 11 > 10"),
    ],
)
def test_limits(changes: dict[str, Any], reason: str) -> None:
    verdict = decide(facts(**changes))
    assert not verdict.allowed
    assert reason in verdict.reasons


def test_limits_at_the_boundary_allowed() -> None:
    assert decide(facts(images=8, pixels=16_777_216, steps=50)).allowed


def test_all_reasons_reported_together() -> None:
    verdict = decide(
        facts(
            images=9,
            steps=200,
            input_faces=(face("sub_a"), face(None, 1)),
            prompt_subjects=("sub_b",),
            refuse_unknown_faces=True,
        )
    )
    assert not verdict.allowed
    for fragment in (
        "too many images",
        "too many steps",
        "no active grant for subject sub_a",
        "no active grant for subject sub_b",
        "prompt names subject sub_b",
        "unregistered face in image 1",
    ):
        assert has(verdict, fragment), fragment


def test_prompt_alias_needs_a_grant() -> None:
    verdict = decide(facts(purpose="generate", prompt_subjects=("sub_b",), grants=(grant(),)))
    assert not verdict.allowed
    assert has(verdict, "prompt names subject sub_b")
    ok = decide(
        facts(purpose="generate", prompt_subjects=("sub_b",), grants=(grant("g", "sub_b"),))
    )
    assert ok.allowed


# ---------------------------------------------------------------- fail closed
@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"now": "yesterday"}, "the check time is not"),
        ({"now": "2026-02-30T00:00:00Z"}, "the check time is not"),
        ({"grants": (grant(not_before="2026-01-01"),)}, "unparsable not_before"),
        ({"grants": (grant(not_after="soon"),)}, "unparsable not_after"),
        ({"grants": (grant(purposes="restore"),)}, "malformed purposes"),  # type: ignore[arg-type]
        ({"grants": (grant(), grant(revoked=True))}, "appears twice"),
        ({"grants": ("grt_a",)}, "not a GrantFact"),
        ({"input_faces": (face("sub_ghost"),)}, "sub_ghost, which has no record"),
        ({"output_faces": (face("sub_ghost"),)}, "sub_ghost, which has no record"),
        ({"prompt_subjects": ("sub_ghost",)}, "'sub_ghost', which has no record"),
        ({"input_faces": (FaceFact(0, 0, "sub_a", float("nan")),)}, "bad similarity"),
        ({"input_faces": (FaceFact(-1, 0, None, 0.1),)}, "bad image index"),
        ({"input_faces": None}, "not a sequence"),
        ({"purpose": "paint"}, "unknown purpose 'paint'"),
        ({"requester": ""}, "no requester"),
        ({"stage": "during"}, "unknown stage"),
        ({"refuse_unknown_faces": "no"}, "refuse_unknown_faces is not a boolean"),
        ({"images": -1}, "images is not a non-negative integer"),
        ({"limits": None}, "limits is not a Limits"),
        ({"known_subjects": None}, "known_subjects is not a set"),
        ({"prior": PriorFact("pri_x", "sub_ghost", SHA_A, SHA_A, "lora")}, "has no record"),
        ({"prior": PriorFact("pri_x", "sub_a", "nothex", SHA_A, "lora")}, "not SHA-256 hex"),
        ({"prior": PriorFact("pri_x", "sub_a", SHA_A, SHA_A, "magic")}, "unknown kind"),
        ({"prior": "pri_a"}, "not a PriorFact"),
    ],
)
def test_malformed_facts_refuse_never_raise(changes: dict[str, Any], fragment: str) -> None:
    base = facts(input_faces=(face("sub_a"),), grants=(grant(priors=(SHA_A,)),))
    assert decide(base).allowed
    verdict = decide(dataclasses.replace(base, **changes))
    assert not verdict.allowed
    assert has(verdict, fragment), verdict.reasons
    assert has(verdict, "malformed facts: ")


def test_malformed_grant_of_an_uninvolved_subject_still_refuses() -> None:
    verdict = decide(facts(grants=(grant("grt_x", "sub_b", not_before="?"),)))
    assert not verdict.allowed
    assert has(verdict, "grant grt_x has an unparsable not_before: '?'")


def test_not_a_jobfacts() -> None:
    verdict = decide(None)  # type: ignore[arg-type]
    assert verdict == Verdict(False, ("malformed facts: not a JobFacts: NoneType",), (), ())


def test_subjects_only_lists_known_subjects() -> None:
    verdict = decide(facts(input_faces=(face("sub_ghost"), face("sub_a", 1)), grants=(grant(),)))
    assert not verdict.allowed
    assert verdict.subjects == ("sub_a",)


def test_active_grant_skips_malformed_and_bad_now() -> None:
    good = grant("grt_ok")
    assert active_grant([grant(not_before="x"), "junk", good], "sub_a", ME, "restore", NOW) is good  # type: ignore[list-item]
    assert active_grant([good], "sub_a", ME, "restore", "not a time") is None


# ---------------------------------------------------------------- properties
IDS = st.sampled_from(["sub_a", "sub_b", "sub_c"])
TIMES = st.sampled_from([PAST, NOW, FUTURE, "2026-03-01T12:00:01Z", "2026-03-01T11:59:59Z"])
PURPOSE = st.sampled_from(["restore", "generate", "train"])
GRANTEES = st.sampled_from([ME, "gte_other"])
SHAS = st.sampled_from([SHA_A, SHA_B, SHA_OTHER])


@st.composite
def good_grant(draw: st.DrawFn, gid: str) -> GrantFact:
    return GrantFact(
        id=gid,
        subject_id=draw(IDS),
        grantee_id=draw(GRANTEES),
        purposes=tuple(draw(st.lists(PURPOSE, max_size=3, unique=True))),
        priors=tuple(draw(st.lists(SHAS, max_size=2, unique=True))),
        not_before=draw(TIMES),
        not_after=draw(st.none() | TIMES),
        revoked=draw(st.booleans()),
    )


@st.composite
def good_facts(draw: st.DrawFn) -> JobFacts:
    faces = st.builds(
        FaceFact,
        image=st.integers(0, 3),
        face=st.integers(0, 3),
        subject_id=st.none() | IDS,
        similarity=st.floats(-1, 1),
        certain=st.booleans(),
    ).map(lambda f: f if f.subject_id is not None else dataclasses.replace(f, certain=True))
    n = draw(st.integers(0, 5))
    grants = tuple(draw(good_grant(f"grt_{i}")) for i in range(n))
    prior = draw(
        st.none()
        | st.builds(
            PriorFact,
            id=st.just("pri_1"),
            subject_id=IDS,
            registered_sha256=SHAS,
            file_sha256=SHAS,
            kind=st.sampled_from(["lora", "exemplars"]),
        )
    )
    return JobFacts(
        requester=ME,
        purpose=draw(PURPOSE),
        now=NOW,
        input_faces=tuple(draw(st.lists(faces, max_size=3))),
        output_faces=tuple(draw(st.lists(faces, max_size=2))),
        prior=prior,
        prompt_subjects=tuple(draw(st.lists(IDS, max_size=2))),
        grants=grants,
        known_subjects=frozenset({"sub_a", "sub_b", "sub_c"}),
        refuse_unknown_faces=draw(st.booleans()),
        images=draw(st.integers(0, 10)),
        pixels=draw(st.integers(0, 20_000_000)),
        steps=draw(st.integers(0, 200)),
        stage=draw(st.sampled_from(["pre", "post"])),
        opted_out=frozenset(draw(st.lists(IDS, max_size=1))),
    )


ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    TIMES,
    IDS,
    st.lists(st.text(max_size=3), max_size=2).map(tuple),
)


@st.composite
def wild_facts(draw: st.DrawFn) -> JobFacts:
    """Well-formed facts with some fields, or some grants' fields, replaced by junk."""
    base = draw(good_facts())
    names = [f.name for f in dataclasses.fields(JobFacts)]
    for name in draw(st.lists(st.sampled_from(names), max_size=3)):
        base = dataclasses.replace(base, **{name: draw(ANY)})
    if (
        isinstance(base.grants, tuple)
        and base.grants
        and isinstance(base.grants[0], GrantFact)
        and draw(st.booleans())
    ):
        broken = dataclasses.replace(
            base.grants[0],
            **{draw(st.sampled_from([f.name for f in dataclasses.fields(GrantFact)])): draw(ANY)},
        )
        base = dataclasses.replace(base, grants=(broken, *base.grants[1:]))
    return base


FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(wild_facts())
def test_decide_is_total_and_refusals_explain(job: JobFacts) -> None:
    verdict = decide(job)
    assert isinstance(verdict, Verdict)
    assert isinstance(verdict.allowed, bool)
    assert all(isinstance(r, str) and r for r in verdict.reasons)
    if not verdict.allowed:
        assert len(verdict.reasons) >= 1
    assert decide(job) == verdict  # pure


@FAST
@given(good_facts())
def test_well_formed_facts_are_never_refused_as_malformed(job: JobFacts) -> None:
    verdict = decide(job)
    assert not any(r.startswith(("malformed", "policy error")) for r in verdict.reasons)
    assert verdict.reasons
    assert set(verdict.grants_used) <= {g.id for g in job.grants}


@FAST
@given(good_facts(), st.data())
def test_adding_a_grant_never_turns_allow_into_refuse(job: JobFacts, data: st.DataObject) -> None:
    extra = data.draw(good_grant("grt_new"))
    position = data.draw(st.integers(0, len(job.grants)))
    grants = (*job.grants[:position], extra, *job.grants[position:])
    if decide(job).allowed:
        assert decide(dataclasses.replace(job, grants=grants)).allowed


@FAST
@given(good_facts(), st.data())
def test_removing_a_grant_never_turns_refuse_into_allow(job: JobFacts, data: st.DataObject) -> None:
    if not job.grants:
        return
    drop = data.draw(st.integers(0, len(job.grants) - 1))
    fewer = job.grants[:drop] + job.grants[drop + 1 :]
    if not decide(job).allowed:
        assert not decide(dataclasses.replace(job, grants=fewer)).allowed


@FAST
@given(good_facts())
def test_revoking_never_turns_refuse_into_allow(job: JobFacts) -> None:
    revoked = tuple(dataclasses.replace(g, revoked=True) for g in job.grants)
    if not decide(job).allowed:
        assert not decide(dataclasses.replace(job, grants=revoked)).allowed
    # With every grant revoked, any involved registered subject means refusal.
    verdict = decide(dataclasses.replace(job, grants=revoked))
    if verdict.subjects:
        assert not verdict.allowed


# ---------------------------------------------------------------- memorization
@pytest.mark.parametrize(
    ("copy", "allowed", "fragment"),
    [
        (None, True, "no registered subject involved"),
        (0.31, True, "memorization check passed: copy SSIM 0.310 < 0.700"),
        (0.7, False, "near-copy of a photo of the prior (copy SSIM 0.700 >= 0.700)"),
        (0.97, False, "near-copy"),
        (float("nan"), False, "copy_ssim is not a finite number"),
    ],
)
def test_a_near_copy_of_a_prior_photo_is_withheld(
    copy: float | None, allowed: bool, fragment: str
) -> None:
    verdict = decide(facts(stage="post", copy_ssim=copy))
    assert verdict.allowed is allowed, verdict.reasons
    assert has(verdict, fragment), verdict.reasons


def test_the_copy_limit_is_a_setting() -> None:
    strict = Limits(max_copy_ssim=0.3)
    assert not decide(facts(stage="post", copy_ssim=0.31, limits=strict)).allowed
    assert decide(facts(stage="post", copy_ssim=0.29, limits=strict)).allowed


# ---------------------------------------------------------------- review (issue 14)
def rank(verdict: Verdict) -> int:
    """The outcome order of the monotonicity invariant: refused < held < allowed."""
    assert not (verdict.allowed and verdict.held)
    return 2 if verdict.allowed else 1 if verdict.held else 0


def candidate(subject: str = "sub_a", image: int = 0, index: int = 0) -> FaceFact:
    return FaceFact(image, index, subject, 0.31, certain=False)


CANDIDATE_GRANTS = ("none", "active", "revoked", "other_grantee")
OBSTACLES = ("none", "certain_b_without_grant", "too_many_steps")
SETTINGS = ("plain", "opted_out", "refuse_unknown", "post", "prior")
REVIEW_TABLE = list(itertools.product(CANDIDATE_GRANTS, OBSTACLES, SETTINGS))


def review_facts(grant_case: str, obstacle: str, setting: str) -> JobFacts:
    a_grant = {
        "none": (),
        "active": (grant(),),
        "revoked": (grant(revoked=True),),
        "other_grantee": (grant(grantee="gte_other"),),
    }[grant_case]
    faces: tuple[FaceFact, ...] = (candidate(),)
    if obstacle == "certain_b_without_grant":
        faces = (*faces, face("sub_b", index=1))
    c_grant = grant("grt_c", "sub_c", purposes=("generate",), priors=(SHA_OTHER,))
    return facts(
        purpose="generate",
        input_faces=faces,
        grants=(*a_grant, c_grant),
        known_subjects=frozenset({"sub_a", "sub_b", "sub_c"}),
        steps=10_000 if obstacle == "too_many_steps" else 0,
        opted_out=frozenset({"sub_a"}) if setting == "opted_out" else frozenset(),
        refuse_unknown_faces=setting == "refuse_unknown",
        stage="post" if setting == "post" else "pre",
        prior=PriorFact("pri_c", "sub_c", SHA_OTHER, SHA_OTHER, "lora")
        if setting == "prior"
        else None,
    )


def review_oracle(grant_case: str, obstacle: str, setting: str) -> str:
    """The expected outcome, written plainly from the rules of the policy's docstring."""
    covered = grant_case == "active" and setting != "opted_out"
    refused_otherwise = obstacle != "none"
    if covered:
        return "refused" if refused_otherwise else "allowed"
    if setting in ("refuse_unknown", "post", "prior") or refused_otherwise:
        return "refused"
    return "held"


@pytest.mark.parametrize(("grant_case", "obstacle", "setting"), REVIEW_TABLE)
def test_review_table(grant_case: str, obstacle: str, setting: str) -> None:
    verdict = decide(review_facts(grant_case, obstacle, setting))
    outcome = ("refused", "held", "allowed")[rank(verdict)]
    assert outcome == review_oracle(grant_case, obstacle, setting), verdict.reasons
    covered = grant_case == "active" and setting != "opted_out"
    if not (covered and outcome == "refused"):  # a refusal lists obstacles, not covers
        assert has(verdict, "input image 0 face 0 is an uncertain match of subject sub_a")
    assert "sub_a" in verdict.subjects
    if outcome == "held":
        assert verdict.holds == ((0, 0, "sub_a", 0.31),)
        assert has(verdict, "held for review")
    else:
        assert verdict.holds == ()
    if outcome == "allowed":
        assert "grt_a" in verdict.grants_used


def test_an_uncertain_candidate_in_the_output_is_refused_not_held() -> None:
    verdict = decide(facts(purpose="generate", output_faces=(candidate(),)))
    assert not verdict.allowed and not verdict.held
    assert has(verdict, "not held: the output is withheld")


def test_uncertain_of_no_subject_is_malformed() -> None:
    bad = FaceFact(0, 0, None, 0.3, certain=False)
    verdict = decide(facts(input_faces=(bad,)))
    assert not verdict.allowed and not verdict.held and has(verdict, "malformed")
    junk = dataclasses.replace(candidate(), certain="no")  # type: ignore[arg-type]
    assert has(decide(facts(input_faces=(junk,))), "certain is not a boolean")


def test_two_candidates_of_one_face_are_each_held() -> None:
    verdict = decide(facts(input_faces=(candidate("sub_a"), candidate("sub_b"))))
    assert verdict.held and {h[2] for h in verdict.holds} == {"sub_a", "sub_b"}
    covered = decide(facts(input_faces=(candidate("sub_a"), candidate("sub_b")), grants=(grant(),)))
    assert covered.held and [h[2] for h in covered.holds] == ["sub_b"]


@FAST
@given(good_facts(), st.data())
def test_adding_a_grant_never_lowers_the_outcome(job: JobFacts, data: st.DataObject) -> None:
    extra = data.draw(good_grant("grt_new"))
    assert rank(decide(dataclasses.replace(job, grants=(*job.grants, extra)))) >= rank(decide(job))


@FAST
@given(good_facts())
def test_revoking_never_raises_the_outcome_and_holds_explain(job: JobFacts) -> None:
    verdict = decide(job)
    revoked = tuple(dataclasses.replace(g, revoked=True) for g in job.grants)
    assert rank(decide(dataclasses.replace(job, grants=revoked))) <= rank(verdict)
    if verdict.held:
        assert verdict.holds and verdict.reasons and job.stage == "pre"
        assert all(not f.certain for f in job.input_faces if (f.image, f.face, f.subject_id,
                   f.similarity) in set(verdict.holds))  # fmt: skip
