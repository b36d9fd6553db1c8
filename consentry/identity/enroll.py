"""From photos to an enrollment: safe loading, quality gates, embedding.

Invariants
- A photo is enrolled only if it passes every gate: exactly one dominant face
  (the largest face at least four times the area of the next), a face box at
  least ``min_face`` pixels on its short side, a detector score of at least
  ``min_score``, and a sharpness (variance of the Laplacian of the aligned
  face) of at least ``min_sharpness``.
- Enrollment is all or nothing: if any photo fails, nothing is stored and
  every failure is reported, one line per photo.
- Kept photos are the face aligned by its five landmarks into a 256 px frame
  with margin (usable as exemplars and re-detectable by any engine).
- The photos of one enrollment show one person: each photo's embedding must
  reach the engine's threshold in force (the calibrated one where present)
  against the normalised mean of the others' (leave one out), or the whole
  enrollment is refused naming the photos that do not match. This cannot be
  overridden.
- A subject enrolled before with the same engine: every new photo (a single
  one too) must also reach the threshold against the mean of their earlier
  embeddings, or the enrollment is refused unless ``allow_mismatch`` is given
  (a deliberate change of appearance).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from consentry.errors import EnrollmentRejectedError, InputError, NotFoundError
from consentry.faces.engine import FaceEngine
from consentry.faces.images import BYTES_SOURCE, LoadedImage, load_image
from consentry.faces.quality import QualityGates, align_exemplar, assess, face_quality
from consentry.faces.thresholds import DEFAULT_THRESHOLDS
from consentry.registry.biometrics import (
    EngineInfo,
    Sample,
    calibration_for,
    decrypt_photos,
    enroll,
    subject_embeddings,
)
from consentry.registry.models import Enrollment
from consentry.registry.store import Registry

__all__ = [
    "PhotoRejected",
    "consistency_problems",
    "engine_info",
    "enroll_photo_bytes",
    "enroll_photos",
    "enroll_samples",
    "reenroll_kept_photos",
    "threshold_in_force",
]

@dataclass(frozen=True)
class PhotoRejected:
    source: str
    reason: str


def threshold_in_force(registry: Registry, engine: str) -> float:
    """The engine's match threshold: the newest calibration's, else the shipped default."""
    try:
        return calibration_for(registry, engine).threshold
    except NotFoundError:
        return DEFAULT_THRESHOLDS.get(engine, 0.5)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: np.ndarray = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return unit


def _to_mean(vector: np.ndarray, others: np.ndarray) -> float:
    mean = others.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return float(vector @ mean / norm) if norm > 0 else -1.0


def consistency_problems(
    sources: Sequence[str],
    embeddings: np.ndarray,
    earlier: np.ndarray,
    threshold: float,
) -> tuple[list[PhotoRejected], list[PhotoRejected]]:
    """Photos that do not match the rest of their enrollment, and photos that do
    not match the subject's ``earlier`` embeddings (rows; none: nothing to compare).

    A photo matches the others iff its cosine to the normalised mean of the
    others' embeddings is at least ``threshold``; a lone photo has no others.
    """
    new = _unit_rows(embeddings)
    within: list[PhotoRejected] = []
    if len(new) > 1:
        for i, source in enumerate(sources):
            score = _to_mean(new[i], np.delete(new, i, axis=0))
            if score < threshold:
                within.append(
                    PhotoRejected(
                        source,
                        f"does not match the other photos of this enrollment (similarity "
                        f"{score:.3f} < threshold {threshold:.3f}): one enrollment, one person",
                    )
                )
    against: list[PhotoRejected] = []
    old = _unit_rows(earlier) if earlier.size else np.zeros((0, new.shape[1]))
    if len(old):
        for i, source in enumerate(sources):
            score = _to_mean(new[i], old)
            if score < threshold:
                against.append(
                    PhotoRejected(
                        source,
                        f"does not match the subject's earlier enrollment (similarity "
                        f"{score:.3f} < threshold {threshold:.3f}); if this really is them, "
                        "pass --allow-mismatch",
                    )
                )
    return within, against


def _check_consistency(
    registry: Registry,
    engine: str,
    subject: str,
    sources: Sequence[str],
    samples: Sequence[Sample],
    allow_mismatch: bool,
) -> None:
    """Raise EnrollmentRejectedError unless the samples show one person (who is
    the subject enrolled before, unless ``allow_mismatch``)."""
    subject_id = registry.get_subject(subject).id
    earlier = subject_embeddings(registry, subject_id, engine)
    within, against = consistency_problems(
        sources,
        np.stack([s.embedding for s in samples]),
        earlier,
        threshold_in_force(registry, engine),
    )
    problems = within + ([] if allow_mismatch else against)
    if problems:
        raise EnrollmentRejectedError([(r.source, r.reason) for r in problems])


def engine_info(engine: FaceEngine) -> EngineInfo:
    return EngineInfo(engine.name, engine.version, dict(engine.model_hashes))


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def enroll_samples(
    engine: FaceEngine,
    images: Sequence[LoadedImage],
    keep_photos: bool,
    gates: QualityGates,
) -> tuple[list[Sample], list[PhotoRejected]]:
    """Embed every photo that passes the gates; collect a reason for every other."""
    samples: list[Sample] = []
    rejected: list[PhotoRejected] = []
    for loaded in images:
        face, reason = assess(engine, loaded.pixels, gates)
        if face is None:
            rejected.append(PhotoRejected(loaded.source, reason or "rejected"))
            continue
        embedding = engine.embed(loaded.pixels, face)
        aligned = _png(align_exemplar(loaded.pixels, face)) if keep_photos else None
        quality = face_quality(loaded.pixels, face, gates)
        samples.append(Sample(loaded.sha256, embedding, aligned, quality))
    return samples, rejected


def enroll_photos(
    registry: Registry,
    engine: FaceEngine,
    subject: str,
    photos: Sequence[Path | str],
    keep_photos: bool = False,
    gates: QualityGates | None = None,
    allow_mismatch: bool = False,
) -> Enrollment:
    """Load, gate, embed, check and enroll ``photos`` for ``subject``: all or nothing."""
    return _enroll_sources(
        registry, engine, subject, [(str(p), p) for p in photos], keep_photos, gates, allow_mismatch
    )


def enroll_photo_bytes(
    registry: Registry,
    engine: FaceEngine,
    subject: str,
    photos: Sequence[tuple[str, bytes]],
    keep_photos: bool = False,
    gates: QualityGates | None = None,
    allow_mismatch: bool = False,
) -> Enrollment:
    """As :func:`enroll_photos`, for ``(label, data)`` pairs (uploads); all or nothing."""
    return _enroll_sources(
        registry, engine, subject, list(photos), keep_photos, gates, allow_mismatch
    )


def reenroll_kept_photos(
    registry: Registry,
    engine: FaceEngine,
    subject: str,
    allow_mismatch: bool = False,
    gates: QualityGates | None = None,
) -> Enrollment:
    """Enroll the subject's kept photos with ``engine``, checked as any enrollment
    (one person; the subject's earlier enrollment with this engine, if any)."""
    photos = decrypt_photos(registry, subject)
    if not photos:
        raise InputError("no kept photos for this subject: enroll again with --keep-photos")
    checks = gates or QualityGates()
    samples: list[Sample] = []
    sources: list[str] = []
    for photo_sha256, png in photos:
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        face, reason = assess(engine, pixels, checks)
        if face is None:
            raise InputError(f"kept photo {photo_sha256[:12]}: {reason} with {engine.name}")
        quality = face_quality(pixels, face, checks)
        samples.append(Sample(photo_sha256, engine.embed(pixels, face), png, quality))
        sources.append(f"kept photo {photo_sha256[:12]}")
    _check_consistency(registry, engine.name, subject, sources, samples, allow_mismatch)
    return enroll(registry, subject, engine_info(engine), samples)


def _enroll_sources(
    registry: Registry,
    engine: FaceEngine,
    subject: str,
    photos: Sequence[tuple[str, Path | str | bytes]],
    keep_photos: bool,
    gates: QualityGates | None,
    allow_mismatch: bool = False,
) -> Enrollment:
    if not photos:
        raise InputError("give at least one photo")
    checks = gates or QualityGates()
    images: list[LoadedImage] = []
    rejected: list[PhotoRejected] = []
    for label, photo in photos:
        try:
            images.append(replace(load_image(photo), source=label))
        except InputError as exc:
            rejected.append(PhotoRejected(label, str(exc).replace(BYTES_SOURCE, label)))
    samples, gated = enroll_samples(engine, images, keep_photos, checks)
    rejected.extend(gated)
    if rejected:
        raise EnrollmentRejectedError([(r.source, r.reason) for r in rejected])
    sources = [loaded.source for loaded in images]  # every photo passed the gates
    _check_consistency(registry, engine.name, subject, sources, samples, allow_mismatch)
    return enroll(registry, subject, engine_info(engine), samples)
