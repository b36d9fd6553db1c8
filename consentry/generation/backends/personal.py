"""Personalised restoration of a real photo: the subject's exemplar prior applied to the
largest face of the input, with the forward model estimated from the photo.

:func:`consentry.generation.restoration.exemplar.restore` needs the degradation that
made its input; a user's photo comes without one, so it is estimated here:

- **scale**: the power of two (1..8) that brings the face's box to about
  :data:`TARGET_FACE` pixels, the size at which the enrollment frame holds a face;
- **blur**: ``0.25 * scale`` pixels of the restored frame (the x8 setting of the
  experiments: sigma 2), none at scale 1;
- **noise**: Immerkaer's estimator on the face crop's luma (a Laplacian-difference
  kernel, robust to edges);
- **JPEG**: quality 75 assumed for JPEG inputs, none otherwise (it only sets the
  early-stopping target of the data-consistency step).

Invariants
- Only the region around the largest face is restored (a square of twice the face's
  size, clipped to the photo); the output is that region at ``scale`` times, at most
  :data:`MAX_OUTPUT_SIDE` pixels a side (the crop shrinks to fit).
- An input without a face is refused (:class:`InputError`): there is nothing for a
  personal prior to restore.
- The exemplars are decrypted in memory by the caller; nothing is written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from consentry.errors import InputError
from consentry.faces.engine import FaceEngine, sort_faces
from consentry.generation.restoration.degrade import Degradation
from consentry.generation.restoration.exemplar import RestorationResult, restore

__all__ = [
    "MAX_OUTPUT_SIDE",
    "TARGET_FACE",
    "PersonalRestoration",
    "estimate_noise_sigma",
    "restore_face_photo",
]

TARGET_FACE = 112.0
MAX_OUTPUT_SIDE = 1024
_LAPLACE_DIFF = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class PersonalRestoration:
    """The restored face region and how it was made (for the receipt and manifest)."""

    image: np.ndarray
    crop: tuple[int, int, int, int]  # x, y, width, height in the input
    degradation: Degradation
    result: RestorationResult

    def details(self) -> dict[str, Any]:
        """JSON-ready facts: method, crop, estimated forward model, consistency."""
        d = self.degradation
        return {
            "method": "exemplar-detail-transfer",
            "crop": list(self.crop),
            "scale": d.scale,
            "blur_sigma": round(d.blur_sigma, 3),
            "noise_sigma": round(d.noise_sigma, 3),
            "jpeg_quality": d.jpeg_quality,
            "consistency_error": round(self.result.consistency_error, 3),
            "target_error": round(self.result.target_error, 3),
            "exemplar_index": self.result.exemplar_index,
            "geometry": self.result.geometry,
        }


def estimate_noise_sigma(pixels: np.ndarray) -> float:
    """Immerkaer (1996) noise estimate of an RGB image's luma, 0..255 units."""
    luma = cv2.cvtColor(np.ascontiguousarray(pixels, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    height, width = int(luma.shape[0]), int(luma.shape[1])
    if height < 3 or width < 3:
        return 0.0
    response = cv2.filter2D(luma.astype(np.float64), -1, _LAPLACE_DIFF)[1:-1, 1:-1]
    total = float(np.abs(response).sum())
    return float(total * math.sqrt(math.pi / 2) / (6.0 * (width - 2) * (height - 2)))


def _scale_for(face_side: float) -> int:
    if face_side <= 0:
        raise InputError("the face has no size")
    wanted = TARGET_FACE / face_side
    if wanted <= 1.0:
        return 1
    return int(min(8, 2 ** math.ceil(math.log2(wanted) - 0.25)))


def restore_face_photo(
    engine: FaceEngine,
    pixels: np.ndarray,
    exemplars: list[np.ndarray],
    *,
    is_jpeg: bool = False,
) -> PersonalRestoration:
    """Restore the largest face of ``pixels`` (RGB uint8) with the subject's exemplars."""
    image = np.ascontiguousarray(pixels, dtype=np.uint8)
    faces = sort_faces(engine.detect(image))
    if not faces:
        raise InputError(
            "no face found in the input image: a personal prior has nothing to restore"
        )
    face = faces[0]
    x, y, w, h = face.bbox
    side = max(w, h)
    scale = _scale_for(side)
    crop_side = min(2.0 * side, MAX_OUTPUT_SIDE / scale)
    height, width = image.shape[:2]
    cx, cy = x + w / 2, y + h / 2
    x0 = int(max(0, math.floor(cx - crop_side / 2)))
    y0 = int(max(0, math.floor(cy - crop_side / 2)))
    x1 = int(min(width, math.ceil(cx + crop_side / 2)))
    y1 = int(min(height, math.ceil(cy + crop_side / 2)))
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    if min(crop.shape[:2]) < 4:
        raise InputError("the face is too close to the edge or too small to restore")
    degradation = Degradation(
        scale=scale,
        blur_sigma=0.25 * scale if scale > 1 else 0.0,
        noise_sigma=estimate_noise_sigma(crop),
        jpeg_quality=75 if is_jpeg else None,
        seed=0,
    )
    landmarks = None
    if face.landmarks is not None:
        landmarks = np.asarray(face.landmarks, dtype=np.float64) - np.array([x0, y0])
    result = restore(crop, exemplars, degradation, landmarks=landmarks, detector=None)
    return PersonalRestoration(result.image, (x0, y0, x1 - x0, y1 - y0), degradation, result)
