"""The facts of a job and the verdict on it: what the consent policy may look at.

:func:`consentry.gate.policy.decide` reads a :class:`JobFacts` and nothing else,
and returns a :class:`Verdict`; the gateway fills the facts. :class:`Limits` is the
one source of job bounds for the CLI, the HTTP service and the policy.

Invariants: every type here is a frozen dataclass holding plain values (no I/O, no
registry handle), so a verdict depends on the facts' values alone. Nothing here
checks that the facts are well formed: :mod:`consentry.gate.fact_checks` does,
and the policy refuses malformed facts rather than trusting these annotations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from consentry.limits import Limits

__all__ = [
    "FaceFact",
    "GrantFact",
    "JobFacts",
    "Limits",
    "PriorFact",
    "Stage",
    "Verdict",
]

Stage = Literal["pre", "post"]


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
    # False: the face is only an uncertain candidate of ``subject_id`` (its score is in
    # the review band of the index), not a match
    certain: bool = True


@dataclass(frozen=True)
class JobFacts:
    """Everything :func:`decide` may look at; nothing else is consulted.

    ``requester`` is the grantee id; ``purpose`` one of ``PURPOSES``; ``now`` the
    time of the check; ``prompt_subjects`` the subject ids whose alias occurs in
    the prompt (see :mod:`consentry.gate.aliases`); ``grants`` the grants
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
    """The outcome: ``allowed``, ``held``, and every reason for it.

    Three outcomes: allowed (``allowed``), held for a person's review (``held``:
    not allowed, and the only obstacle is an uncertain face match, see
    :mod:`consentry.gate.policy`), refused (neither). ``allowed`` and ``held`` are
    never both true. A refusal or a hold has at least one reason. ``grants_used``
    are the grants that covered a subject or named the prior (on a refusal too: those that did
    count); ``subjects`` the involved subjects that are in ``known_subjects``, in
    order of first involvement, so both can be passed to ``record_decision``.
    """

    allowed: bool
    reasons: tuple[str, ...]
    grants_used: tuple[str, ...]
    subjects: tuple[str, ...]
    held: bool = False
    # the uncertain candidates that held the job: (image, face, subject, similarity)
    holds: tuple[tuple[int, int, str, float], ...] = ()
