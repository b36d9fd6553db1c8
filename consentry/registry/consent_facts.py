"""The consent facts the signed log holds, as the follower keeps them in memory.

Invariant: every value here was read from a log entry whose signature and place in
the tree the follower verified (:mod:`consentry.registry.consent`); none is read from
a database row. ``index`` is always the log index of the entry that stated it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BiometricEvent",
    "SignedBlob",
    "SignedEnrollment",
    "SignedGrant",
    "SignedGrantee",
    "SignedPrior",
    "SignedSubject",
    "blob_quality",
    "calibration_event",
    "strings",
]


def strings(value: Any) -> tuple[str, ...]:
    """A signed list as a tuple of strings (None: empty)."""
    return tuple(str(v) for v in value or ())


@dataclass(frozen=True)
class SignedSubject:
    id: str
    display_name: str
    aliases: tuple[str, ...]
    public_key: str | None
    index: int


@dataclass(frozen=True)
class SignedGrantee:
    """A grantee as signed. ``api_key_sha256`` is the hash its own entry carries
    (what its row must match); ``rotated_sha256`` the hash of the newest signed key
    rotation (``grantee-key`` entries, :mod:`consentry.registry.grantee_keys`);
    ``disabled`` the index of the signed entry that disabled it (final)."""

    id: str
    name: str
    api_key_sha256: str
    public_key: str | None
    index: int
    rotated_sha256: str | None = None
    disabled: int | None = None

    @property
    def key_sha256(self) -> str | None:
        """The hash of the one API key that authenticates it now (None: disabled)."""
        if self.disabled is not None:
            return None
        return self.rotated_sha256 or self.api_key_sha256


@dataclass(frozen=True)
class SignedGrant:
    id: str
    subject: str
    grantee: str
    purposes: tuple[str, ...]
    priors: tuple[str, ...]
    not_before: str
    not_after: str | None
    index: int


@dataclass(frozen=True)
class SignedPrior:
    id: str
    subject: str
    kind: str
    sha256: str
    index: int
    details: dict[str, Any] = field(default_factory=dict)  # how it was made (photo hashes)


def blob_quality(value: Any) -> float | None:
    """A signed blob's ``quality`` if it is a finite number in ``(0, 1]``, else None
    (it weighs 1: a weight can only hold a match for review, never allow one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0.0 < number <= 1.0 else None


@dataclass(frozen=True)
class SignedBlob:
    """One blob an enrollment commits to; ``sha256`` is of its ciphertext."""

    id: str
    kind: str
    photo_sha256: str
    sha256: str
    quality: float | None = None  # an embedding's signed second-stage weight, if measured

    @classmethod
    def of(cls, signed: dict[str, Any]) -> SignedBlob:
        """A blob as an enrollment statement lists it."""
        keys = (str(signed["id"]), str(signed["kind"]), str(signed["photo_sha256"]))
        return cls(*keys, str(signed["sha256"]), blob_quality(signed.get("quality")))


@dataclass(frozen=True)
class SignedEnrollment:
    id: str
    subject: str
    engine: str
    blobs: tuple[SignedBlob, ...]
    index: int

    def embeddings(self) -> list[tuple[int, SignedBlob]]:
        """``(vector id, blob)`` of each embedding: log index * 1000 + position, the ids
        every process derives (``registry.biometrics``)."""
        found = [b for b in self.blobs if b.kind == "embedding"]
        return [(self.index * 1000 + position, blob) for position, blob in enumerate(found)]


@dataclass(frozen=True)
class BiometricEvent:
    """What the identity index follows: an enrollment, an erasure or a calibration."""

    index: int
    kind: str  # "enrollment" | "erasure" | "calibration"
    enrollment: SignedEnrollment | None = None
    subject: str | None = None  # erasure
    engine: str | None = None  # calibration
    threshold: float | None = None  # calibration
    review_threshold: float | None = None  # calibration: lower edge of the review band
    fpir_target: float | None = None  # calibration: the 1:N budget it was chosen for
    gallery_size: int | None = None  # calibration: the N it was chosen at
    max_gallery: int | None = None  # calibration: the largest N the budget allows


def _optional(s: dict[str, Any], key: str, kind: type[float] | type[int]) -> Any:
    value = s.get(key)
    return None if value is None else kind(value)


def calibration_event(index: int, s: dict[str, Any]) -> BiometricEvent:
    """The event of a signed calibration statement ``s`` (its 1:N keys None when absent)."""
    return BiometricEvent(
        index,
        "calibration",
        engine=str(s.get("engine")),
        threshold=float(s.get("threshold", 0.0)),
        review_threshold=_optional(s, "review_threshold", float),
        fpir_target=_optional(s, "fpir_target", float),
        gallery_size=_optional(s, "gallery_size", int),
        max_gallery=_optional(s, "max_gallery", int),
    )
