"""Enrollment photo quality: the one enrollable face of a photo, and its aligned crop.

Invariants
- :func:`assess` accepts a photo only with exactly one dominant face (the largest
  at least ``dominance`` times the area of the next), a face box at least
  ``min_face`` pixels on its short side, a detector score of at least
  ``min_score`` and a sharpness (variance of the Laplacian of the aligned face)
  of at least ``min_sharpness``; otherwise it says why, in one line.
- :func:`align_exemplar` puts the face, by its five landmarks, into an
  ``EXEMPLAR_SIZE`` px RGB frame with margin (what enrollment keeps, usable as
  exemplars and re-detectable by any engine).

Pure face work: nothing here reads or writes a registry.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from consentry.faces.engine import ARCFACE_TEMPLATE_112, Face, FaceEngine, align_by_landmarks

__all__ = [
    "EXEMPLAR_SIZE",
    "EXEMPLAR_TEMPLATE",
    "SHARP_REFERENCE",
    "QualityGates",
    "align_exemplar",
    "assess",
    "face_quality",
]

EXEMPLAR_SIZE = 256
# ArcFace's five-point template, scaled into a 256 px frame with margin.
EXEMPLAR_TEMPLATE = (ARCFACE_TEMPLATE_112 - 56.0) * 1.25 + EXEMPLAR_SIZE / 2


@dataclass(frozen=True)
class QualityGates:
    min_face: int = 48
    min_score: float = 0.7
    min_sharpness: float = 15.0
    dominance: float = 4.0


def align_exemplar(image: np.ndarray, face: Face) -> np.ndarray:
    """The face aligned by its landmarks into a 256 px RGB frame with margin."""
    return align_by_landmarks(image, face.landmarks, EXEMPLAR_SIZE, EXEMPLAR_TEMPLATE)


def _sharpness(aligned: np.ndarray) -> float:
    gray = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


SHARP_REFERENCE = 300.0  # Laplacian variance of a crisp aligned 256 px face (measured)


def face_quality(image: np.ndarray, face: Face, gates: QualityGates) -> float:
    """A photo's weight in the second stage of a match, in ``(0, 1]``: the detector's
    score, times how far the face's short side reaches twice the minimum size, times
    how far the aligned face's sharpness reaches :data:`SHARP_REFERENCE` (each factor
    capped at 1). A face just past every gate weighs about ``0.7 * 0.5 * 0.05``; a
    large, sharp, confidently detected one about 1 (the shipped ``obama.jpg``: 0.95;
    blurred with a 4 px Gaussian: 0.59)."""
    short = min(face.bbox[2], face.bbox[3])
    size = min(1.0, short / (2.0 * gates.min_face))
    sharp = min(1.0, _sharpness(align_exemplar(image, face)) / SHARP_REFERENCE)
    score = min(1.0, max(0.0, float(face.score)))
    return max(1e-3, round(score * size * sharp, 4))


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
