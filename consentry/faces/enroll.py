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
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from consentry.errors import EnrollmentRejectedError, InputError
from consentry.faces.engine import ARCFACE_TEMPLATE_112, Face, FaceEngine, align_by_landmarks
from consentry.faces.images import BYTES_SOURCE, LoadedImage, load_image
from consentry.registry.biometrics import EngineInfo, Sample, enroll
from consentry.registry.models import Enrollment
from consentry.registry.store import Registry

__all__ = [
    "EXEMPLAR_SIZE",
    "PhotoRejected",
    "QualityGates",
    "align_exemplar",
    "assess",
    "engine_info",
    "enroll_photo_bytes",
    "enroll_photos",
    "enroll_samples",
]

EXEMPLAR_SIZE = 256
# ArcFace's five-point template, scaled into a 256 px frame with margin.
_EXEMPLAR_TEMPLATE = (ARCFACE_TEMPLATE_112 - 56.0) * 1.25 + EXEMPLAR_SIZE / 2


@dataclass(frozen=True)
class QualityGates:
    min_face: int = 48
    min_score: float = 0.7
    min_sharpness: float = 15.0
    dominance: float = 4.0


@dataclass(frozen=True)
class PhotoRejected:
    source: str
    reason: str


def engine_info(engine: FaceEngine) -> EngineInfo:
    return EngineInfo(engine.name, engine.version, dict(engine.model_hashes))


def align_exemplar(image: np.ndarray, face: Face) -> np.ndarray:
    """The face aligned by its landmarks into a 256 px RGB frame with margin."""
    return align_by_landmarks(image, face.landmarks, EXEMPLAR_SIZE, _EXEMPLAR_TEMPLATE)


def _sharpness(aligned: np.ndarray) -> float:
    gray = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def assess(
    engine: FaceEngine, image: np.ndarray, gates: QualityGates
) -> tuple[Face | None, str | None]:
    """The one enrollable face of ``image``, or the reason there is none."""
    faces = engine.detect(image)
    if not faces:
        return None, "no face found"
    areas = sorted((f.bbox[2] * f.bbox[3] for f in faces), reverse=True)
    if len(areas) > 1 and areas[0] < gates.dominance * areas[1]:
        return None, f"{len(faces)} faces and none dominant: crop the photo to one person"
    face = max(faces, key=lambda f: f.bbox[2] * f.bbox[3])
    short = min(face.bbox[2], face.bbox[3])
    if short < gates.min_face:
        return None, f"face too small ({short:.0f} px; need at least {gates.min_face} px)"
    if face.score < gates.min_score:
        return None, f"detector score {face.score:.2f} below {gates.min_score:.2f}"
    sharpness = _sharpness(align_exemplar(image, face))
    if sharpness < gates.min_sharpness:
        return None, f"too blurry (sharpness {sharpness:.1f}; need {gates.min_sharpness:.0f})"
    return face, None


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
        samples.append(Sample(loaded.sha256, embedding, aligned))
    return samples, rejected


def enroll_photos(
    registry: Registry,
    engine: FaceEngine,
    subject: str,
    photos: Sequence[Path | str],
    keep_photos: bool = False,
    gates: QualityGates | None = None,
) -> Enrollment:
    """Load, gate, embed and enroll ``photos`` for ``subject``: all or nothing."""
    return _enroll_sources(
        registry, engine, subject, [(str(p), p) for p in photos], keep_photos, gates
    )


def enroll_photo_bytes(
    registry: Registry,
    engine: FaceEngine,
    subject: str,
    photos: Sequence[tuple[str, bytes]],
    keep_photos: bool = False,
    gates: QualityGates | None = None,
) -> Enrollment:
    """As :func:`enroll_photos`, for ``(label, data)`` pairs (uploads); all or nothing."""
    return _enroll_sources(registry, engine, subject, list(photos), keep_photos, gates)


def _enroll_sources(
    registry: Registry,
    engine: FaceEngine,
    subject: str,
    photos: Sequence[tuple[str, Path | str | bytes]],
    keep_photos: bool,
    gates: QualityGates | None,
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
    return enroll(registry, subject, engine_info(engine), samples)
