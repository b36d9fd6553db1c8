"""What a caller hands the gate and what it gets back, and the job in between.

- :class:`CheckRequest` (decide only) and :class:`RunRequest` (decide, run a
  backend, post-check, release) are what a caller asks for.
- :class:`Receipt` is what it gets back: the verdict as logged, its log index,
  the signed outputs (only when allowed), and its proof once a checkpoint covers
  it. :meth:`Receipt.for_grantee` is the redacted view a grantee may read (the
  logged decision keeps every id).
- :class:`Job` is the gate's working state for one request; its verdict starts as
  a refusal and only :func:`consentry.gate.policy.decide` can make it an allow.
- :func:`refusal` turns any exception into a refusal (fail closed), one wording
  for every stage.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

from consentry.errors import ConsentryError, LogIntegrityError
from consentry.faces.images import LoadedImage
from consentry.gate.memorization import MemorizationScore
from consentry.gate.policy import REGISTERED_PERSON, JobFacts, Verdict, redact_reasons

__all__ = [
    "INTEGRITY_PREFIX",
    "CheckRequest",
    "Job",
    "Receipt",
    "RunRequest",
    "is_integrity_failure",
    "refusal",
    "refused",
]

INTEGRITY_PREFIX = "integrity error: "


def refused(reason: str) -> Verdict:
    """A refusal for ``reason``, naming no grant and no subject."""
    return Verdict(False, (reason,), (), ())


def refusal(exc: BaseException, stage: str = "") -> Verdict:
    """The refusal for an exception raised while gathering facts, deciding or running
    (``stage``: " while running" after the pre-check). An integrity error is marked
    (:func:`is_integrity_failure`); anything unexpected is an internal error."""
    if isinstance(exc, LogIntegrityError):
        return refused(f"refused{stage}: {INTEGRITY_PREFIX}{exc}")
    if isinstance(exc, ConsentryError):
        return refused(f"refused{stage}: {exc}")
    return refused(f"internal error{stage}: {type(exc).__name__}: {exc}")


def is_integrity_failure(receipt: Receipt) -> bool:
    """Whether a refusal was for an integrity error (rows contradict the signed log):
    the CLI exits 2 for it."""
    return any(INTEGRITY_PREFIX in reason for reason in receipt.reasons)


@dataclass(frozen=True)
class CheckRequest:
    """A job to decide on: who asks, for what, with which inputs, prompt and prior."""

    grantee: str
    purpose: str
    images: Sequence[Path | bytes] = ()
    prompt: str = ""
    prior: str | None = None  # prior id
    steps: int = 0
    review: str | None = None  # a held decision id: resume the job under its approval


@dataclass(frozen=True)
class Receipt:
    """What the caller gets back: the verdict and where it stands in the log."""

    allowed: bool
    reasons: tuple[str, ...]
    decision_id: str | None
    log_index: int | None
    grants: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    faces: list[dict[str, object]] = field(default_factory=list)
    outputs: list[bytes] = field(default_factory=list)  # signed PNGs, only when allowed
    details: dict[str, object] = field(default_factory=dict)  # restoration, memorization
    proof: str | None = None  # C2SP tlog-proof of the decision, once a checkpoint covers it
    held: bool = False  # held for review: resubmit with review=decision_id once approved
    review: str | None = None  # the review a resumed job was decided under

    def for_grantee(
        self,
        requester: str,
        visible_subjects: Iterable[str],
        own_grants: Iterable[str],
        hidden_names: Iterable[str] = (),
    ) -> Receipt:
        """The receipt a grantee may read (what the HTTP service sends).

        Every subject the grantee holds no grant from (``visible_subjects`` are
        those it holds any grant from) becomes "a registered person" in the
        reasons, ``subjects`` and ``faces``; lines about other grantees' grants are
        dropped (see :func:`~consentry.gate.policy.redact_reasons`); only
        the grantee's own grants are listed. The logged decision is unchanged:
        the operator keeps every id.
        """
        visible = set(visible_subjects)
        mine = set(own_grants)

        def shown(subject: object) -> object:
            return subject if subject in visible else REGISTERED_PERSON

        faces = [
            face
            | {
                key: [shown(s) for s in cast(list[object], face[key])]
                for key in ("subjects", "uncertain")
                if key in face
            }
            for face in self.faces
        ]
        return replace(
            self,
            reasons=redact_reasons(self.reasons, requester, visible, mine, hidden_names),
            grants=tuple(g for g in self.grants if g in mine),
            subjects=tuple(str(shown(s)) for s in self.subjects),
            faces=faces,
        )

    def to_json(self) -> dict[str, object]:
        return (
            {
                "allowed": self.allowed,
                "reasons": list(self.reasons),
                "decision": self.decision_id,
                "log_index": self.log_index,
                "grants": list(self.grants),
                "subjects": list(self.subjects),
                "faces": self.faces,
            }
            | ({"details": self.details} if self.details else {})
            | ({"proof": self.proof} if self.proof is not None else {})
            | ({"held": True} if self.held else {})
            | ({"review": self.review} if self.review is not None else {})
        )


@dataclass(frozen=True)
class RunRequest:
    """A job to run: ``generate`` (text to image) or ``restore`` (img2img of ``image``)."""

    grantee: str
    purpose: str  # "generate" | "restore"
    prompt: str
    model_dir: Path
    image: Path | bytes | None = None
    prior: str | None = None
    steps: int = 20
    size: int = 64
    seed: int = 0
    strength: float = 0.6
    device: str | None = None  # placement names; see consentry.generation.placement
    dtype: str | None = None
    review: str | None = None  # a held decision id: resume the job under its approval

    def check_request(self) -> CheckRequest:
        """The pre-check of this job: its input image (restore), prompt and prior."""
        images = [self.image] if self.image is not None else []
        return CheckRequest(
            self.grantee, self.purpose, images, self.prompt, self.prior, self.steps, self.review
        )


@dataclass
class Job:
    """One request on its way through the gate (see :class:`consentry.gate.Gateway`).

    Filled stage by stage: the requester, inputs and facts by the pre-check, the
    outputs and memorization scores by the release stage; ``verdict`` is what the
    finish step logs. Nothing here is released unless the logged verdict allows it.
    """

    purpose: str
    verdict: Verdict = field(default_factory=lambda: refused("refused: not decided"))
    grantee_id: str | None = None
    prior_sha: str | None = None
    inputs: list[str] = field(default_factory=list)
    shown: list[dict[str, object]] = field(default_factory=list)
    facts: JobFacts | None = None
    images: list[LoadedImage] = field(default_factory=list)
    outputs: list[bytes] = field(default_factory=list)  # PNGs, unsigned until released
    memos: list[MemorizationScore | None] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)
    release_id: str | None = None  # the outputs' watermark id (issue 15), logged with marks
    marks: list[dict[str, object]] = field(default_factory=list)
    held: dict[str, object] | None = None  # what a hold binds (registry.reviews.hold_record)
    review: str | None = None  # the approving review the job resumed under
    started: float = field(default_factory=time.perf_counter)  # for the decision's duration

    def receipt(self, decision_id: str | None, log_index: int | None) -> Receipt:
        """The receipt for the verdict as logged (no outputs: the release adds them)."""
        return Receipt(
            self.verdict.allowed and decision_id is not None,
            self.verdict.reasons,
            decision_id,
            log_index,
            self.verdict.grants_used,
            self.verdict.subjects,
            self.shown,
            [],
            dict(self.details),
            held=self.verdict.held and decision_id is not None,
            review=self.review,
        )
