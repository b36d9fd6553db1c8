"""The consent policy: a pure function from the facts of a job to a verdict.

The gateway gathers the facts (face matches, grants with their revocation state,
the prior and the SHA-256 of the file it loaded, the subjects the prompt names,
the time of the check, the job's sizes and limits), calls :func:`decide` before
running a job (``stage="pre"``) and again on the outputs before releasing them
(``stage="post"``, with ``output_faces`` and the revocation state re-read), and
records every verdict with ``consentry.registry.decisions.record_decision``.

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
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from consentry.hashing import is_sha256_hex
from consentry.registry.statements import PRIOR_KINDS, PURPOSES

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

Stage = Literal["pre", "post"]

_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")
_MALFORMED = "malformed facts: "


@dataclass(frozen=True)
class GrantFact:
    """A grant as the gateway read it, with its revocation state at the check time.

    ``purposes`` and ``priors`` (SHA-256 hex of the priors it names) are tuples;
    ``not_after`` None means no end.
    """

    id: str
    subject_id: str
    grantee_id: str
    purposes: tuple[str, ...]
    priors: tuple[str, ...]
    not_before: str
    not_after: str | None
    revoked: bool


@dataclass(frozen=True)
class PriorFact:
    """The prior a job uses: its registered SHA-256 and the SHA-256 of the file loaded."""

    id: str
    subject_id: str
    registered_sha256: str
    file_sha256: str
    kind: str


@dataclass(frozen=True)
class FaceFact:
    """One face found in image ``image`` (0-based) of the input or the output.

    ``subject_id`` is the registered subject it matched, or None for a face that
    matched nobody (an unknown person); ``similarity`` is the match score.
    """

    image: int
    face: int
    subject_id: str | None
    similarity: float


@dataclass(frozen=True)
class Limits:
    """Per-job limits: images, pixels of the largest image, sampling steps, output
    size and img2img strength, faces, memorization.

    The one source of job bounds: the CLI (``consentry check/generate/restore``),
    the HTTP service and :func:`decide` all use these values and
    :meth:`check_job`'s wording, so a job one of them refuses, every one refuses.
    """

    max_images: int = 8
    max_pixels: int = 16_777_216
    max_steps: int = 50
    min_size: int = 64  # output side, pixels, a multiple of size_multiple
    max_size: int = 1024
    size_multiple: int = 8
    max_faces: int = 32  # per job, inputs and outputs each; checked before embedding
    max_copy_ssim: float = 0.7  # an output this close to a prior's photo is withheld
    max_prompt_chars: int = 2_000  # bounds the alias matcher's work on one prompt

    def check_job(
        self,
        *,
        images: int | None = None,
        steps: int | None = None,
        size: int | None = None,
        strength: float | None = None,
        prompt: str | None = None,
    ) -> None:
        """Raise :class:`~consentry.errors.JobLimitError` for the first parameter
        outside its bound (None: not part of this job); the message states the bound.
        Checked before anything runs or is logged."""
        from consentry.errors import JobLimitError

        if images is not None and not 0 <= images <= self.max_images:
            raise JobLimitError("images", f"{images} images: at most {self.max_images} per job")
        if steps is not None and not 1 <= steps <= self.max_steps:
            raise JobLimitError("steps", f"steps must be 1..{self.max_steps} (got {steps})")
        if size is not None and (
            not self.min_size <= size <= self.max_size or size % self.size_multiple
        ):
            raise JobLimitError(
                "size",
                f"size must be a multiple of {self.size_multiple} in "
                f"{self.min_size}..{self.max_size} (got {size})",
            )
        if strength is not None and not (math.isfinite(strength) and 0.0 < strength <= 1.0):
            raise JobLimitError("strength", f"strength must be in (0, 1] (got {strength})")
        if prompt is not None and len(prompt) > self.max_prompt_chars:
            raise JobLimitError(
                "prompt",
                f"prompt is {len(prompt)} characters: at most {self.max_prompt_chars} per job",
            )


@dataclass(frozen=True)
class JobFacts:
    """Everything :func:`decide` may look at; nothing else is consulted.

    ``requester`` is the grantee id; ``purpose`` one of ``PURPOSES``; ``now`` the
    time of the check; ``prompt_subjects`` the subject ids whose alias occurs in
    the prompt (see :mod:`consentry.generation.aliases`); ``grants`` the grants
    that may matter (at least every grant of every involved subject);
    ``known_subjects`` the ids of the registered subjects the gateway holds
    records for (every subject id mentioned elsewhere must be one of them).
    """

    requester: str
    purpose: str
    now: str
    input_faces: tuple[FaceFact, ...]
    output_faces: tuple[FaceFact, ...] = ()
    prior: PriorFact | None = None
    prompt_subjects: tuple[str, ...] = ()
    grants: tuple[GrantFact, ...] = ()
    known_subjects: frozenset[str] = frozenset()
    refuse_unknown_faces: bool = False
    images: int = 0
    pixels: int = 0
    steps: int = 0
    limits: Limits = field(default_factory=Limits)
    stage: Stage = "pre"
    copy_ssim: float | None = None  # post: highest copy SSIM of an output to a prior photo
    opted_out: frozenset[str] = frozenset()  # involved subjects with a logged opt-out


@dataclass(frozen=True)
class Verdict:
    """The outcome: ``allowed``, and every reason for it.

    A refusal has at least one reason. ``grants_used`` are the grants that
    covered a subject or named the prior (on a refusal too: those that did
    count); ``subjects`` the involved subjects that are in ``known_subjects``, in
    order of first involvement, so both can be passed to ``record_decision``.
    """

    allowed: bool
    reasons: tuple[str, ...]
    grants_used: tuple[str, ...]
    subjects: tuple[str, ...]


# ------------------------------------------------------------------ helpers
def _is_time(value: object) -> bool:
    """``YYYY-MM-DDTHH:MM:SSZ`` naming a real instant; such strings sort by time."""
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return False
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        return False
    return True


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_id(value: object) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _is_str_seq(value: object) -> bool:
    return isinstance(value, tuple | list) and all(isinstance(v, str) for v in value)


def _sha(value: str) -> str:
    return value.strip().lower()


def _grant_defect(grant: object) -> str | None:
    """Why ``grant`` is not a well-formed GrantFact, or None if it is."""
    if not isinstance(grant, GrantFact):
        return f"a grant is not a GrantFact: {type(grant).__name__}"
    name = grant.id if _is_id(grant.id) else repr(grant.id)
    if not _is_id(grant.id):
        return f"grant {name} has no id"
    if not _is_id(grant.subject_id):
        return f"grant {name} has no subject id"
    if not _is_id(grant.grantee_id):
        return f"grant {name} has no grantee id"
    if not _is_str_seq(grant.purposes):
        return f"grant {name} has malformed purposes: {grant.purposes!r}"
    if not _is_str_seq(grant.priors):
        return f"grant {name} has malformed priors: {grant.priors!r}"
    if not _is_time(grant.not_before):
        return f"grant {name} has an unparsable not_before: {grant.not_before!r}"
    if grant.not_after is not None and not _is_time(grant.not_after):
        return f"grant {name} has an unparsable not_after: {grant.not_after!r}"
    if not isinstance(grant.revoked, bool):
        return f"grant {name} has a non-boolean revoked flag: {grant.revoked!r}"
    return None


def grant_problems(
    grant: GrantFact, subject_id: str, grantee_id: str, purpose: str, now: str
) -> tuple[str, ...]:
    """Why ``grant`` does not cover ``subject_id`` for this grantee, purpose and time.

    Empty iff it covers. Every failing condition is listed; ``now`` must be a
    ``YYYY-MM-DDTHH:MM:SSZ`` time (otherwise nothing is covered). Never raises.
    """
    defect = _grant_defect(grant)
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
    if not _is_time(now):
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


# ------------------------------------------------------------------ validation
def _face_defects(faces: object, where: str, known: frozenset[str]) -> list[str]:
    if not isinstance(faces, tuple | list):
        return [f"{where} faces are not a sequence: {type(faces).__name__}"]
    out: list[str] = []
    for face in faces:
        if not isinstance(face, FaceFact):
            out.append(f"an {where} face is not a FaceFact: {type(face).__name__}")
            continue
        if not (_is_int(face.image) and face.image >= 0):
            out.append(f"an {where} face has a bad image index: {face.image!r}")
        if not (_is_int(face.face) and face.face >= 0):
            out.append(f"an {where} face has a bad face index: {face.face!r}")
        sim = face.similarity
        if isinstance(sim, bool) or not isinstance(sim, int | float) or not math.isfinite(sim):
            out.append(f"{where} image {face.image} face {face.face} has a bad similarity: {sim!r}")
        if face.subject_id is not None and face.subject_id not in known:
            out.append(
                f"{where} image {face.image} face {face.face} matches subject "
                f"{face.subject_id}, which has no record in the facts"
            )
    return out


def _defects(facts: JobFacts) -> list[str]:
    """Every malformed or inconsistent fact, as lines (without the prefix)."""
    out: list[str] = []
    if not _is_id(facts.requester):
        out.append(f"no requester (grantee id): {facts.requester!r}")
    if facts.purpose not in PURPOSES:
        out.append(f"unknown purpose {facts.purpose!r} (choose from {', '.join(PURPOSES)})")
    if not _is_time(facts.now):
        out.append(f"the check time is not a YYYY-MM-DDTHH:MM:SSZ time: {facts.now!r}")
    if facts.stage not in ("pre", "post"):
        out.append(f"unknown stage {facts.stage!r}")
    if not isinstance(facts.refuse_unknown_faces, bool):
        out.append(f"refuse_unknown_faces is not a boolean: {facts.refuse_unknown_faces!r}")
    known_ok = isinstance(facts.known_subjects, frozenset | set) and all(
        isinstance(s, str) for s in facts.known_subjects
    )
    if not known_ok:
        out.append("known_subjects is not a set of subject ids")
    if not (
        isinstance(facts.opted_out, frozenset | set)
        and all(isinstance(s, str) for s in facts.opted_out)
    ):
        out.append("opted_out is not a set of subject ids")
    known = frozenset(facts.known_subjects) if known_ok else frozenset()
    out += _face_defects(facts.input_faces, "input", known)
    out += _face_defects(facts.output_faces, "output", known)
    if not isinstance(facts.prompt_subjects, tuple | list):
        out.append("prompt_subjects is not a sequence")
    else:
        for subject in facts.prompt_subjects:
            if subject not in known:
                out.append(
                    f"the prompt names subject {subject!r}, which has no record in the facts"
                )
    prior = facts.prior
    if prior is not None:
        if not isinstance(prior, PriorFact):
            out.append(f"the prior is not a PriorFact: {type(prior).__name__}")
        else:
            name = prior.id if _is_id(prior.id) else repr(prior.id)
            if not _is_id(prior.id):
                out.append(f"prior {name} has no id")
            if prior.subject_id not in known:
                out.append(f"prior {name} is of subject {prior.subject_id!r}, which has no record")
            for label, value in (
                ("registered", prior.registered_sha256),
                ("file", prior.file_sha256),
            ):
                if not isinstance(value, str) or not is_sha256_hex(_sha(value)):
                    out.append(f"prior {name}: the {label} sha256 is not SHA-256 hex: {value!r}")
            if prior.kind not in PRIOR_KINDS:
                out.append(f"prior {name} has an unknown kind {prior.kind!r}")
    if not isinstance(facts.grants, tuple | list):
        out.append("grants is not a sequence")
    else:
        seen: dict[str, GrantFact] = {}
        for grant in facts.grants:
            defect = _grant_defect(grant)
            if defect is not None:
                out.append(defect)
                continue
            if grant.id in seen and seen[grant.id] != grant:
                out.append(f"grant {grant.id} appears twice with different contents")
            seen.setdefault(grant.id, grant)
    for label in ("images", "pixels", "steps"):
        value = getattr(facts, label)
        if not (_is_int(value) and value >= 0):
            out.append(f"{label} is not a non-negative integer: {value!r}")
    limits = facts.limits
    if not isinstance(limits, Limits):
        out.append(f"limits is not a Limits: {type(limits).__name__}")
    else:
        for label in ("max_images", "max_pixels", "max_steps"):
            value = getattr(limits, label)
            if not (_is_int(value) and value >= 0):
                out.append(f"limit {label} is not a non-negative integer: {value!r}")
    return out


def _limit_reasons(facts: JobFacts) -> list[str]:
    if not isinstance(facts.limits, Limits):
        return []
    out = []
    for what, value, limit in (
        ("images", facts.images, facts.limits.max_images),
        ("pixels", facts.pixels, facts.limits.max_pixels),
        ("steps", facts.steps, facts.limits.max_steps),
    ):
        if _is_int(value) and _is_int(limit) and value > limit:
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


def _evaluate(facts: JobFacts, defects: list[str]) -> Verdict:
    refusals = [_MALFORMED + d for d in defects]
    refusals += _limit_reasons(facts)
    notes: list[str] = []
    used: list[str] = []
    requester, purpose, now = facts.requester, facts.purpose, facts.now
    grants = [g for g in facts.grants if _grant_defect(g) is None]
    known = facts.known_subjects if isinstance(facts.known_subjects, frozenset | set) else ()

    involved: dict[str, list[str]] = {}
    input_subjects: dict[str, None] = {}
    unknown_images: dict[tuple[str, int], None] = {}
    for where, faces in (("input", facts.input_faces), ("output", facts.output_faces)):
        for face in faces:
            if not isinstance(face, FaceFact):
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

    prior = facts.prior if isinstance(facts.prior, PriorFact) else None
    prior_grant: GrantFact | None = None
    if prior is not None:
        owner = str(prior.subject_id)
        involved.setdefault(owner, []).append(f"prior {prior.id} is of subject {owner}")
        registered = _sha(str(prior.registered_sha256))
        if _sha(str(prior.file_sha256)) != registered:
            refusals.append(f"prior {prior.id}: file hash differs from the registered sha256")
        naming = [g for g in grants if registered in {_sha(p) for p in g.priors}]
        prior_grant = active_grant(
            (g for g in naming if g.subject_id == owner), owner, requester, purpose, now
        )
        if prior_grant is None:
            refusals.append(
                f"prior {prior.id} is not named by an active grant for subject {owner} "
                f"(grantee {requester}, purpose {purpose})"
            )
            for grant in naming:
                if grant.subject_id != owner:
                    refusals.append(
                        f"grant {grant.id} names prior {prior.id} but is for subject "
                        f"{grant.subject_id}, not the prior's subject {owner}"
                    )
        else:
            used.append(prior_grant.id)
            notes.append(f"grant {prior_grant.id} names prior {prior.id}")
        if purpose == "restore":
            for subject in input_subjects:
                if subject != owner:
                    refusals.append(
                        f"prior {prior.id} belongs to {owner} but the input shows {subject}"
                    )
            for where, image in unknown_images:
                if where == "input":
                    refusals.append(
                        f"prior {prior.id} belongs to {owner} but input image {image} shows an "
                        "unregistered face: restoring it with this prior would paint "
                        f"{owner} onto someone else"
                    )

    opted_out = facts.opted_out if isinstance(facts.opted_out, frozenset | set) else ()
    for subject, lines in involved.items():
        if subject in opted_out:
            refusals += lines
            refusals.append(
                f"subject {subject} opted out: no grant covers them, every job with their "
                "face, name or prior is refused"
            )
            continue
        cover = (
            prior_grant
            if prior is not None and prior_grant is not None and subject == prior.subject_id
            else active_grant(grants, subject, requester, purpose, now)
        )
        if cover is not None:
            used.append(cover.id)
            notes += lines
            notes.append(
                f"grant {cover.id} covers subject {subject} "
                f"(grantee {requester}, purpose {purpose})"
            )
            continue
        refusals += lines
        refusals.append(
            f"no active grant for subject {subject} (grantee {requester}, purpose {purpose})"
        )
        for near in grants:
            if near.subject_id == subject:
                refusals += grant_problems(near, subject, requester, purpose, now)

    for where, image in unknown_images:
        place = f"image {image}" if where == "input" else f"output image {image}"
        if facts.refuse_unknown_faces is False:
            notes.append(f"unregistered face in {place} allowed (refuse_unknown_faces is off)")
        else:
            refusals.append(f"unregistered face in {place} (refuse_unknown_faces)")

    copy, limits = facts.copy_ssim, facts.limits
    finite = isinstance(copy, float | int) and math.isfinite(copy)
    if finite and copy is not None and isinstance(limits, Limits) and copy < limits.max_copy_ssim:
        notes.append(
            f"memorization check passed: copy SSIM {copy:.3f} < {limits.max_copy_ssim:.3f}"
        )

    subjects = [s for s in involved if s in known]
    if refusals:
        if facts.stage == "post":
            refusals.append("post-check failed: output withheld")
        return _refusal(refusals, used, subjects)
    if not involved:
        notes.insert(0, "no registered subject involved")
    return Verdict(True, tuple(dict.fromkeys(notes)), tuple(dict.fromkeys(used)), tuple(subjects))


def decide(facts: JobFacts) -> Verdict:
    """Allow or refuse the job described by ``facts``, with every reason.

    Pure and total: never raises; malformed facts and internal errors refuse.
    """
    try:
        if not isinstance(facts, JobFacts):
            return _refusal([f"{_MALFORMED}not a JobFacts: {type(facts).__name__}"])
        defects = _defects(facts)
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
