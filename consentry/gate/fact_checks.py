"""Well-formedness of a job's facts: every malformed or inconsistent fact, as lines.

The policy (:func:`consentry.gate.policy.decide`) is total: it refuses on any
line :func:`fact_defects` gives rather than trusting the type annotations of
:mod:`consentry.gate.job_facts`.

Invariants
- Pure and total over well-typed :class:`JobFacts`: no I/O; each function returns
  its findings (or a bool) and raises only where a field is not even iterable,
  which :func:`~consentry.gate.policy.decide` turns into a refusal.
- :func:`fact_defects` lists every defect, in a fixed order (scalars, subject sets,
  input then output faces, prompt subjects, prior, grants, sizes, limits), each
  line naming the fact; an empty list means well formed.
- A grant is well formed (:func:`grant_defect` is None) iff it is a
  :class:`GrantFact` with non-blank ids, string tuples or lists of purposes and
  priors, ``YYYY-MM-DDTHH:MM:SSZ`` times naming real instants, and a boolean
  ``revoked``. Such time strings sort by time.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

from consentry.gate.job_facts import FaceFact, GrantFact, JobFacts, Limits, PriorFact
from consentry.hashing import is_sha256_hex
from consentry.registry.statements import PRIOR_KINDS, PURPOSES

__all__ = ["fact_defects", "grant_defect", "is_id", "is_int", "is_time", "sha"]

_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")


def is_time(value: object) -> bool:
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


def is_int(value: object) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_id(value: object) -> bool:
    """A string that is not blank."""
    return isinstance(value, str) and value.strip() != ""


def _is_str_seq(value: object) -> bool:
    return isinstance(value, tuple | list) and all(isinstance(v, str) for v in value)


def sha(value: str) -> str:
    """A SHA-256 hex string as compared: stripped and lower-cased."""
    return value.strip().lower()


def grant_defect(grant: object) -> str | None:
    """Why ``grant`` is not a well-formed GrantFact, or None if it is."""
    if not isinstance(grant, GrantFact):
        return f"a grant is not a GrantFact: {type(grant).__name__}"
    name = grant.id if is_id(grant.id) else repr(grant.id)
    if not is_id(grant.id):
        return f"grant {name} has no id"
    if not is_id(grant.subject_id):
        return f"grant {name} has no subject id"
    if not is_id(grant.grantee_id):
        return f"grant {name} has no grantee id"
    if not _is_str_seq(grant.purposes):
        return f"grant {name} has malformed purposes: {grant.purposes!r}"
    if not _is_str_seq(grant.priors):
        return f"grant {name} has malformed priors: {grant.priors!r}"
    if not is_time(grant.not_before):
        return f"grant {name} has an unparsable not_before: {grant.not_before!r}"
    if grant.not_after is not None and not is_time(grant.not_after):
        return f"grant {name} has an unparsable not_after: {grant.not_after!r}"
    if not isinstance(grant.revoked, bool):
        return f"grant {name} has a non-boolean revoked flag: {grant.revoked!r}"
    return None


def _face_defects(faces: object, where: str, known: frozenset[str]) -> list[str]:
    """Every malformed face of the ``where`` (input / output) faces."""
    if not isinstance(faces, tuple | list):
        return [f"{where} faces are not a sequence: {type(faces).__name__}"]
    out: list[str] = []
    for face in faces:
        out += _one_face_defects(face, where, known)
    return out


def _one_face_defects(face: object, where: str, known: frozenset[str]) -> list[str]:
    if not isinstance(face, FaceFact):
        return [f"an {where} face is not a FaceFact: {type(face).__name__}"]
    out: list[str] = []
    if not (is_int(face.image) and face.image >= 0):
        out.append(f"an {where} face has a bad image index: {face.image!r}")
    if not (is_int(face.face) and face.face >= 0):
        out.append(f"an {where} face has a bad face index: {face.face!r}")
    sim = face.similarity
    if isinstance(sim, bool) or not isinstance(sim, int | float) or not math.isfinite(sim):
        out.append(f"{where} image {face.image} face {face.face} has a bad similarity: {sim!r}")
    if not isinstance(face.certain, bool):
        out.append(f"{where} image {face.image} face {face.face} certain is not a boolean")
    elif not face.certain and face.subject_id is None:
        out.append(f"{where} image {face.image} face {face.face} is uncertain of no subject")
    if face.subject_id is not None and face.subject_id not in known:
        out.append(
            f"{where} image {face.image} face {face.face} matches subject "
            f"{face.subject_id}, which has no record in the facts"
        )
    return out


def _is_id_set(value: object) -> bool:
    return isinstance(value, frozenset | set) and all(isinstance(s, str) for s in value)


def fact_defects(facts: JobFacts) -> list[str]:
    """Every malformed or inconsistent fact, as lines (without a prefix)."""
    out = _scalar_defects(facts)
    known_ok = _is_id_set(facts.known_subjects)
    if not known_ok:
        out.append("known_subjects is not a set of subject ids")
    if not _is_id_set(facts.opted_out):
        out.append("opted_out is not a set of subject ids")
    known = frozenset(facts.known_subjects) if known_ok else frozenset()
    out += _face_defects(facts.input_faces, "input", known)
    out += _face_defects(facts.output_faces, "output", known)
    out += _prompt_defects(facts.prompt_subjects, known)
    if facts.prior is not None:
        out += _prior_defects(facts.prior, known)
    out += _grant_list_defects(facts.grants)
    out += _size_defects(facts)
    out += _limits_defects(facts.limits)
    return out


def _scalar_defects(facts: JobFacts) -> list[str]:
    """The requester, purpose, check time, stage and refuse_unknown_faces."""
    out: list[str] = []
    if not is_id(facts.requester):
        out.append(f"no requester (grantee id): {facts.requester!r}")
    if facts.purpose not in PURPOSES:
        out.append(f"unknown purpose {facts.purpose!r} (choose from {', '.join(PURPOSES)})")
    if not is_time(facts.now):
        out.append(f"the check time is not a YYYY-MM-DDTHH:MM:SSZ time: {facts.now!r}")
    if facts.stage not in ("pre", "post"):
        out.append(f"unknown stage {facts.stage!r}")
    if not isinstance(facts.refuse_unknown_faces, bool):
        out.append(f"refuse_unknown_faces is not a boolean: {facts.refuse_unknown_faces!r}")
    return out


def _prompt_defects(prompt_subjects: object, known: frozenset[str]) -> list[str]:
    if not isinstance(prompt_subjects, tuple | list):
        return ["prompt_subjects is not a sequence"]
    return [
        f"the prompt names subject {subject!r}, which has no record in the facts"
        for subject in prompt_subjects
        if subject not in known
    ]


def _prior_defects(prior: object, known: frozenset[str]) -> list[str]:
    if not isinstance(prior, PriorFact):
        return [f"the prior is not a PriorFact: {type(prior).__name__}"]
    name = prior.id if is_id(prior.id) else repr(prior.id)
    out: list[str] = []
    if not is_id(prior.id):
        out.append(f"prior {name} has no id")
    if prior.subject_id not in known:
        out.append(f"prior {name} is of subject {prior.subject_id!r}, which has no record")
    for label, value in (
        ("registered", prior.registered_sha256),
        ("file", prior.file_sha256),
    ):
        if not isinstance(value, str) or not is_sha256_hex(sha(value)):
            out.append(f"prior {name}: the {label} sha256 is not SHA-256 hex: {value!r}")
    if prior.kind not in PRIOR_KINDS:
        out.append(f"prior {name} has an unknown kind {prior.kind!r}")
    return out


def _grant_list_defects(grants: object) -> list[str]:
    """Malformed grants, and ids shared by grants with different contents."""
    if not isinstance(grants, tuple | list):
        return ["grants is not a sequence"]
    out: list[str] = []
    seen: dict[str, GrantFact] = {}
    for grant in grants:
        defect = grant_defect(grant)
        if defect is not None:
            out.append(defect)
            continue
        if grant.id in seen and seen[grant.id] != grant:
            out.append(f"grant {grant.id} appears twice with different contents")
        seen.setdefault(grant.id, grant)
    return out


def _size_defects(facts: JobFacts) -> list[str]:
    return [
        f"{label} is not a non-negative integer: {value!r}"
        for label in ("images", "pixels", "steps")
        if not (is_int(value := getattr(facts, label)) and value >= 0)
    ]


def _limits_defects(limits: object) -> list[str]:
    if not isinstance(limits, Limits):
        return [f"limits is not a Limits: {type(limits).__name__}"]
    return [
        f"limit {label} is not a non-negative integer: {value!r}"
        for label in ("max_images", "max_pixels", "max_steps")
        if not (is_int(value := getattr(limits, label)) and value >= 0)
    ]
