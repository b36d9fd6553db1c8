"""The facts of a job and the verdict on it: what the consent policy may look at.

:func:`consentry.generation.policy.decide` reads a :class:`JobFacts` and nothing else,
and returns a :class:`Verdict`; the gateway fills the facts. :class:`Limits` is the
one source of job bounds for the CLI, the HTTP service and the policy.

Invariants: every type here is a frozen dataclass holding plain values (no I/O, no
registry handle), so a verdict depends on the facts' values alone. Nothing here
checks that the facts are well formed: :mod:`consentry.generation.fact_checks` does,
and the policy refuses malformed facts rather than trusting these annotations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

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
