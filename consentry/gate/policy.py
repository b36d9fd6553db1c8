"""The consent policy: a pure function from the facts of a job to a verdict.

The gateway gathers the facts (face matches, grants with their revocation state,
the prior and the SHA-256 of the file it loaded, the subjects the prompt names,
the time of the check, the job's sizes and limits), calls :func:`decide` before
running a job (``stage="pre"``) and again on the outputs before releasing them
(``stage="post"``, with ``output_faces`` and the revocation state re-read), and
records every verdict with ``consentry.registry.decisions.record_decision``.
The facts and the verdict are :mod:`consentry.gate.job_facts` (re-exported
here); their well-formedness is :mod:`consentry.gate.fact_checks`.

Invariants
- Pure: no I/O, no clock, no database; the same facts give the same verdict.
- Total: :func:`decide` never raises. Malformed or inconsistent facts (an
  unparsable time, a face matched to a subject with no record in
  ``known_subjects``, a bad hash, an unknown purpose...) and any internal error
  give a refusal whose reasons say what was wrong. Fail closed.
- A refusal carries at least one reason, each a short line naming ids; an allow
  carries reasons too, explaining which grant covers whom.
- A grant *covers* subject S for a job iff it is for S, for the requester, lists
  the job's purpose, is well-formed, is not revoked, and
  ``not_before <= now < not_after`` (no upper bound when ``not_after`` is None),
  the rule of ``Registry.grant_status``. Times are ``YYYY-MM-DDTHH:MM:SSZ``.
- Every registered subject involved (an input face, an output face, a subject
  the prompt names, the prior's own subject) needs a covering grant.
- A prior is usable only if the file's SHA-256 equals the registered one, a
  grant covering the prior's own subject lists that SHA-256 in ``priors``, and,
  for ``restore``, no other registered subject appears in the input (restoring
  A's photo with B's prior paints B onto A).
- Faces of unregistered people are allowed unless ``refuse_unknown_faces``.
- Sizes beyond ``limits`` (images, pixels of the largest image, steps) refuse.
- Monotonic in consent: adding a well-formed grant (with an id of its own) never
  turns an allow into a refusal, and removing one never turns a refusal into an
  allow. (A malformed grant, or two grants sharing an id, is a malformed fact: it
  refuses the whole job.)
- Revocation wins: a grant with ``revoked=True`` never covers anything, at
  either stage.
- Opt-out wins: a subject in ``opted_out`` (a signed opt-out is logged) is never
  covered; every job involving them (face, name, prior) is refused, whatever
  the grants.

Review, the third outcome (issue 14). A face fact with ``certain=False`` is an
*uncertain candidate*: its score lies in the index's review band (or the top match
had no margin), so the face may be the subject or somebody else.
- A candidate S is *covered* when a grant covers S (the rule above) and S has not
  opted out: the job proceeds as for a match (S is involved, the grant is used).
- An uncovered candidate in an input face *holds* the job (``Verdict.held``, not
  allowed) when nothing else refuses it: the reasons name the image, the face, the
  subject and the similarity, and ``Verdict.holds`` lists each (image, face,
  subject, similarity) for the review queue. A person then judges the face.
- An opted-out candidate holds too (not refuses): the face may not be theirs, and
  a hold puts it before a person; their grants never cover them.
- Held only when uncertainty is the only obstacle: any refusal reason refuses the
  job (the candidate lines are then listed as refusals too). Uncertainty never
  holds where either answer refuses: an uncovered candidate with
  ``refuse_unknown_faces`` (the face is S without a grant, or an unknown face), one
  in the input of a job using a prior (restore: it may be somebody the prior would
  be painted onto), and one in an output (the post-check refuses, nothing is held
  after a run: the output is withheld).
- Monotonic in consent, with outcomes ordered refused < held < allowed: adding a
  well-formed grant never lowers the outcome (it may cover a candidate: held ->
  allowed), removing one never raises it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from consentry.gate.fact_checks import fact_defects, grant_defect, is_int, is_time, sha
from consentry.gate.job_facts import (
    FaceFact,
    GrantFact,
    JobFacts,
    Limits,
    PriorFact,
    Stage,
    Verdict,
)

__all__ = [
    "REGISTERED_PERSON",
    "FaceFact",
    "GrantFact",
    "JobFacts",
    "Limits",
    "PriorFact",
    "Stage",
    "Verdict",
    "active_grant",
    "decide",
    "grant_problems",
    "redact_reasons",
]

_MALFORMED = "malformed facts: "


# ------------------------------------------------------------------ coverage
def grant_problems(
    grant: GrantFact, subject_id: str, grantee_id: str, purpose: str, now: str
) -> tuple[str, ...]:
    """Why ``grant`` does not cover ``subject_id`` for this grantee, purpose and time.

    Empty iff it covers. Every failing condition is listed; ``now`` must be a
    ``YYYY-MM-DDTHH:MM:SSZ`` time (otherwise nothing is covered). Never raises.
    """
    defect = grant_defect(grant)
    if defect is not None:
        return (defect,)
    head = f"grant {grant.id} for subject {grant.subject_id}"
    problems: list[str] = []
    if grant.subject_id != subject_id:
        problems.append(f"grant {grant.id} is for subject {grant.subject_id}, not {subject_id}")
    if grant.grantee_id != grantee_id:
        problems.append(f"{head} is for another grantee ({grant.grantee_id})")
    if purpose not in grant.purposes:
        covers = ", ".join(grant.purposes) or "nothing"
        problems.append(f"{head} does not cover purpose {purpose} (covers {covers})")
    if grant.revoked:
        problems.append(f"{head} is revoked")
    if not is_time(now):
        problems.append(f"{head} cannot be checked: the check time {now!r} is unparsable")
    else:
        if now < grant.not_before:
            problems.append(f"{head} is not yet valid (from {grant.not_before})")
        if grant.not_after is not None and now >= grant.not_after:
            problems.append(f"{head} expired at {grant.not_after}")
    return tuple(problems)


def active_grant(
    grants: Iterable[GrantFact], subject_id: str, grantee_id: str, purpose: str, now: str
) -> GrantFact | None:
    """The first grant in ``grants`` that covers the subject (see the module
    docstring), or None. Malformed grants never cover. Never raises for bad
    grants; ``now`` unparsable means None."""
    for grant in grants:
        if not grant_problems(grant, subject_id, grantee_id, purpose, now):
            return grant
    return None


# ------------------------------------------------------------------ limits
def _limit_reasons(facts: JobFacts) -> list[str]:
    if not isinstance(facts.limits, Limits):
        return []
    out = []
    for what, value, limit in (
        ("images", facts.images, facts.limits.max_images),
        ("pixels", facts.pixels, facts.limits.max_pixels),
        ("steps", facts.steps, facts.limits.max_steps),
    ):
        if is_int(value) and is_int(limit) and value > limit:
            out.append(f"too many {what}: {value} > {limit}")
    copy, most = facts.copy_ssim, facts.limits.max_copy_ssim
    if copy is not None:
        if not isinstance(copy, float | int) or not math.isfinite(copy):
            out.append(f"{_MALFORMED}copy_ssim is not a finite number: {copy!r}")
        elif copy >= most:
            out.append(
                f"output is a near-copy of a photo of the prior "
                f"(copy SSIM {copy:.3f} >= {most:.3f})"
            )
    return out


# ------------------------------------------------------------------ decision
def _refusal(
    reasons: Iterable[str], grants: Iterable[str] = (), subjects: Iterable[str] = ()
) -> Verdict:
    lines = tuple(dict.fromkeys(reasons)) or ("refused (no reason recorded)",)
    return Verdict(False, lines, tuple(dict.fromkeys(grants)), tuple(dict.fromkeys(subjects)))


@dataclass
class _Tally:
    """The reasons gathered so far: refusals, notes for an allow, grants that counted."""

    refusals: list[str]
    notes: list[str] = field(default_factory=list)
    used: list[str] = field(default_factory=list)
    holds: list[tuple[int, int, str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class _Involvement:
    """Who a job involves: each registered subject with the lines saying how (input
    and output faces, then prompt names, then the prior's own subject, in that order),
    the subjects shown in the input, and the images with an unregistered face."""

    subjects: dict[str, list[str]]
    input_subjects: tuple[str, ...]
    unknown_images: tuple[tuple[str, int], ...]
    candidates: tuple[tuple[str, FaceFact], ...] = ()  # (where, uncertain face fact)


def _involvement(facts: JobFacts, prior: PriorFact | None) -> _Involvement:
    involved: dict[str, list[str]] = {}
    input_subjects: dict[str, None] = {}
    unknown_images: dict[tuple[str, int], None] = {}
    candidates: list[tuple[str, FaceFact]] = []
    for where, faces in (("input", facts.input_faces), ("output", facts.output_faces)):
        for face in faces:
            if not isinstance(face, FaceFact):
                continue
            if face.certain is False and face.subject_id is not None:
                candidates.append((where, face))
                continue
            if face.subject_id is None:
                unknown_images.setdefault((where, face.image), None)
                continue
            subject = str(face.subject_id)
            line = f"{where} image {face.image} face {face.face} shows subject {subject}"
            involved.setdefault(subject, []).append(line)
            if where == "input":
                input_subjects.setdefault(subject, None)
    for subject in facts.prompt_subjects:
        involved.setdefault(str(subject), []).append(f"prompt names subject {subject}")
    if prior is not None:
        owner = str(prior.subject_id)
        involved.setdefault(owner, []).append(f"prior {prior.id} is of subject {owner}")
    return _Involvement(involved, tuple(input_subjects), tuple(unknown_images), tuple(candidates))


def _check_prior(
    facts: JobFacts,
    prior: PriorFact,
    grants: list[GrantFact],
    seen: _Involvement,
    tally: _Tally,
) -> GrantFact | None:
    """The grant of the prior's own subject that names the prior, or None; records the
    prior's refusals (hash, naming grant, restore onto someone else) in ``tally``."""
    owner = str(prior.subject_id)
    requester, purpose, now = facts.requester, facts.purpose, facts.now
    registered = sha(str(prior.registered_sha256))
    if sha(str(prior.file_sha256)) != registered:
        tally.refusals.append(f"prior {prior.id}: file hash differs from the registered sha256")
    naming = [g for g in grants if registered in {sha(p) for p in g.priors}]
    prior_grant = active_grant(
        (g for g in naming if g.subject_id == owner), owner, requester, purpose, now
    )
    if prior_grant is None:
        tally.refusals += _unnamed_prior(facts, prior, owner, naming)
    else:
        tally.used.append(prior_grant.id)
        tally.notes.append(f"grant {prior_grant.id} names prior {prior.id}")
    if purpose == "restore":
        tally.refusals += _restore_conflicts(prior, owner, seen)
    return prior_grant


def _unnamed_prior(
    facts: JobFacts, prior: PriorFact, owner: str, naming: list[GrantFact]
) -> list[str]:
    """Why no active grant of the prior's subject names it (and which grants of other
    subjects do)."""
    return [
        f"prior {prior.id} is not named by an active grant for subject {owner} "
        f"(grantee {facts.requester}, purpose {facts.purpose})",
        *(
            f"grant {grant.id} names prior {prior.id} but is for subject "
            f"{grant.subject_id}, not the prior's subject {owner}"
            for grant in naming
            if grant.subject_id != owner
        ),
    ]


def _restore_conflicts(prior: PriorFact, owner: str, seen: _Involvement) -> list[str]:
    """A restore may show only the prior's own subject in the input."""
    others = [
        f"prior {prior.id} belongs to {owner} but the input shows {subject}"
        for subject in seen.input_subjects
        if subject != owner
    ]
    unknown = [
        f"prior {prior.id} belongs to {owner} but input image {image} shows an "
        "unregistered face: restoring it with this prior would paint "
        f"{owner} onto someone else"
        for where, image in seen.unknown_images
        if where == "input"
    ]
    return others + unknown


def _check_subject(
    facts: JobFacts,
    subject: str,
    lines: list[str],
    grants: list[GrantFact],
    prior_cover: GrantFact | None,
    opted_out: frozenset[str] | set[str] | tuple[()],
    tally: _Tally,
) -> None:
    """Record whether ``subject`` is covered: opted out (never), by ``prior_cover``
    (the prior's grant, for the prior's own subject), or by an active grant."""
    requester, purpose = facts.requester, facts.purpose
    if subject in opted_out:
        tally.refusals += lines
        tally.refusals.append(
            f"subject {subject} opted out: no grant covers them, every job with their "
            "face, name or prior is refused"
        )
        return
    cover = (
        prior_cover
        if prior_cover is not None
        else active_grant(grants, subject, requester, purpose, facts.now)
    )
    if cover is not None:
        tally.used.append(cover.id)
        tally.notes += lines
        tally.notes.append(
            f"grant {cover.id} covers subject {subject} (grantee {requester}, purpose {purpose})"
        )
        return
    tally.refusals += lines
    tally.refusals.append(
        f"no active grant for subject {subject} (grantee {requester}, purpose {purpose})"
    )
    for near in grants:
        if near.subject_id == subject:
            tally.refusals += grant_problems(near, subject, requester, purpose, facts.now)


def _candidate_line(where: str, face: FaceFact, band: str) -> str:
    return (
        f"{where} image {face.image} face {face.face} is an uncertain match of subject "
        f"{face.subject_id} (similarity {face.similarity:.4f}, {band})"
    )


def _check_candidates(
    facts: JobFacts,
    seen: _Involvement,
    grants: list[GrantFact],
    opted_out: frozenset[str] | set[str] | tuple[()],
    tally: _Tally,
) -> list[str]:
    """Sort the uncertain candidates (module doc): covered ones are noted and their
    grants used, the others become hold lines (returned, with ``tally.holds``) or,
    where a hold could only end in a refusal, refusals."""
    holds: list[str] = []
    requester, purpose = facts.requester, facts.purpose
    for where, face in seen.candidates:
        subject = str(face.subject_id)
        cover = None
        if subject not in opted_out:
            cover = active_grant(grants, subject, requester, purpose, facts.now)
        line = _candidate_line(where, face, "in the review band")
        if cover is not None:
            tally.used.append(cover.id)
            tally.notes += [
                line,
                f"grant {cover.id} covers subject {subject} (grantee {requester}, "
                f"purpose {purpose})",
            ]
            continue
        why = _unholdable(facts, where)
        if why is not None:
            tally.refusals += [line, why]
            continue
        holds.append(
            line
            + ": held for review"
            + (f" (subject {subject} opted out)" if subject in opted_out else "")
        )
        tally.holds.append((face.image, face.face, subject, float(face.similarity)))
    return holds


def _unholdable(facts: JobFacts, where: str) -> str | None:
    """Why a hold of an uncovered candidate could only end in a refusal, or None."""
    if where == "output" or facts.stage == "post":
        return "an uncertain match in an output is not held: the output is withheld"
    if facts.prior is not None:
        return "an uncertain match in the input of a job with a prior is not held"
    if facts.refuse_unknown_faces is not False:
        return (
            "an uncertain match without a grant is not held with refuse_unknown_faces: "
            "the face is either the subject without a grant or an unregistered face"
        )
    return None


def _unknown_faces(facts: JobFacts, seen: _Involvement, tally: _Tally) -> None:
    for where, image in seen.unknown_images:
        place = f"image {image}" if where == "input" else f"output image {image}"
        if facts.refuse_unknown_faces is False:
            tally.notes.append(
                f"unregistered face in {place} allowed (refuse_unknown_faces is off)"
            )
        else:
            tally.refusals.append(f"unregistered face in {place} (refuse_unknown_faces)")


def _memorization_note(facts: JobFacts) -> list[str]:
    """The passed memorization check, as a note, when there was one."""
    copy, limits = facts.copy_ssim, facts.limits
    finite = isinstance(copy, float | int) and math.isfinite(copy)
    if finite and copy is not None and isinstance(limits, Limits) and copy < limits.max_copy_ssim:
        return [f"memorization check passed: copy SSIM {copy:.3f} < {limits.max_copy_ssim:.3f}"]
    return []


def _evaluate(facts: JobFacts, defects: list[str]) -> Verdict:
    tally = _Tally([_MALFORMED + d for d in defects])
    tally.refusals += _limit_reasons(facts)
    grants = [g for g in facts.grants if grant_defect(g) is None]
    known = facts.known_subjects if isinstance(facts.known_subjects, frozenset | set) else ()
    prior = facts.prior if isinstance(facts.prior, PriorFact) else None
    seen = _involvement(facts, prior)
    prior_grant = _check_prior(facts, prior, grants, seen, tally) if prior is not None else None
    opted_out = facts.opted_out if isinstance(facts.opted_out, frozenset | set) else ()
    for subject, lines in seen.subjects.items():
        prior_cover = prior_grant if prior is not None and subject == prior.subject_id else None
        _check_subject(facts, subject, lines, grants, prior_cover, opted_out, tally)
    holds = _check_candidates(facts, seen, grants, opted_out, tally)
    _unknown_faces(facts, seen, tally)
    tally.notes += _memorization_note(facts)

    candidates = [str(face.subject_id) for _, face in seen.candidates]
    subjects = [s for s in dict.fromkeys([*seen.subjects, *candidates]) if s in known]
    if tally.refusals:
        if facts.stage == "post":
            tally.refusals.append("post-check failed: output withheld")
        return _refusal([*tally.refusals, *holds], tally.used, subjects)
    if holds:
        return Verdict(
            False,
            tuple(dict.fromkeys([*holds, *tally.notes])),
            tuple(dict.fromkeys(tally.used)),
            tuple(subjects),
            held=True,
            holds=tuple(dict.fromkeys(tally.holds)),
        )
    notes = tally.notes
    if not seen.subjects and not candidates:
        notes.insert(0, "no registered subject involved")
    return Verdict(
        True, tuple(dict.fromkeys(notes)), tuple(dict.fromkeys(tally.used)), tuple(subjects)
    )


def decide(facts: JobFacts) -> Verdict:
    """Allow or refuse the job described by ``facts``, with every reason.

    Pure and total: never raises; malformed facts and internal errors refuse.
    """
    try:
        if not isinstance(facts, JobFacts):
            return _refusal([f"{_MALFORMED}not a JobFacts: {type(facts).__name__}"])
        defects = fact_defects(facts)
    except Exception as exc:
        return _refusal([f"policy error: {type(exc).__name__}: {exc}"])
    try:
        return _evaluate(facts, defects)
    except Exception as exc:
        return _refusal(
            [*(_MALFORMED + d for d in defects), f"policy error: {type(exc).__name__}: {exc}"]
        )


# ------------------------------------------------------------------ redaction
REGISTERED_PERSON = "a registered person"
"""What a grantee is told in place of a subject it holds no grant from."""

_SUBJECT_ID = re.compile(r"\bsub_[0-9a-f]{20}\b")
_OTHER_ID = re.compile(r"\b(?:grt|gte)_[0-9a-f]{20}\b")


def redact_reasons(
    reasons: Iterable[str],
    requester: str,
    visible_subjects: Iterable[str],
    own_grants: Iterable[str],
    hidden_names: Iterable[str] = (),
) -> tuple[str, ...]:
    """The reasons a grantee may read: the logged reasons with every subject it
    holds no grant from replaced by "a registered person".

    Pure. Every registry subject id (``sub_`` + 20 hex) not in
    ``visible_subjects``, and every name in ``hidden_names`` (the display names and
    aliases of those subjects, matched case-insensitively), becomes
    :data:`REGISTERED_PERSON`; a line naming a grant that is not in ``own_grants``
    or a grantee other than ``requester`` (another grantee's consent, which is
    none of this grantee's business) is dropped. A refusal never comes back
    without a reason: if every line was dropped, one generic line remains. The
    operator's log keeps the full reasons.
    """
    given = tuple(reasons)
    visible = set(visible_subjects)
    mine = set(own_grants) | {requester}
    names = sorted({n.strip() for n in hidden_names if n.strip()}, key=len, reverse=True)
    pattern = (
        re.compile(
            r"(?<!\w)(?:" + "|".join(re.escape(n) for n in names) + r")(?!\w)", re.IGNORECASE
        )
        if names
        else None
    )
    out: list[str] = []
    for line in given:
        if any(token not in mine for token in _OTHER_ID.findall(line)):
            continue
        text = _SUBJECT_ID.sub(
            lambda m: m.group(0) if m.group(0) in visible else REGISTERED_PERSON, line
        )
        if pattern is not None:
            text = pattern.sub(REGISTERED_PERSON, text)
        text = text.replace(f"subject {REGISTERED_PERSON}", REGISTERED_PERSON)
        out.append(text)
    lines = tuple(dict.fromkeys(out))
    if not lines and given:
        return (f"{REGISTERED_PERSON} is involved (details withheld)",)
    return lines
