"""Where the face is: the similarity from the upsampled input to the exemplar frame.

Step 1 of :func:`consentry.generation.restoration.exemplar.restore` (see its module
docstring for the order in which ``aligned``, ``landmarks``, the detector and
``bbox`` are tried) and the perturbations its search tries.

Invariants
- A :class:`Geometry` maps HR-frame ``(x, y, 1)`` to exemplar-frame ``(x, y, 1)``
  (3 x 3, last row ``0 0 1``); ``source`` names what it came from: ``"aligned"``,
  ``"landmarks"``, ``"detected"`` or ``"bbox"``.
- Bad caller input (landmarks that are not a finite 5 x 2 array, a box that is not a
  finite ``(x, y, w, h)`` with positive sides) is an :class:`InputError`; no face to
  locate, a non-square aligned input, or a face outside the image is an
  :class:`ImageError`.
- Pure: nothing here reads files or keeps state; the detector is only asked to detect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from consentry.errors import ImageError, InputError
from consentry.faces.engine import ARCFACE_TEMPLATE_112, Face, FaceEngine

__all__ = [
    "BBOX_LANDMARKS",
    "EXEMPLAR_SIZE",
    "EXEMPLAR_TEMPLATE",
    "FACE_AXES",
    "FACE_CENTRE",
    "Geometry",
    "locate",
    "perturbation",
    "region",
    "translation",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

EXEMPLAR_SIZE = 256
"""Side of the enrollment exemplar frame (:data:`consentry.faces.quality.EXEMPLAR_SIZE`)."""

EXEMPLAR_TEMPLATE: F32 = ((ARCFACE_TEMPLATE_112 - 56.0) * 1.25 + EXEMPLAR_SIZE / 2).astype(
    np.float32
)
"""Where the five landmarks sit in an exemplar (the enrollment frame's template)."""

BBOX_LANDMARKS: F32 = np.array(
    [[0.261, 0.364], [0.731, 0.364], [0.494, 0.569], [0.302, 0.727], [0.712, 0.727]],
    dtype=np.float32,
)
"""Mean landmark positions inside a YuNet face box, as fractions of ``(w, h)``, measured
on the 126 labelled photos of shared/faces (per-point spread about 0.05 of the box).
Used only when no landmarks can be found (the crop-geometry fallback)."""

# The face region in the exemplar frame: an ellipse around the landmarks (forehead to
# chin, cheek to cheek) with a feathered edge.
FACE_CENTRE = (128.0, 142.0)
FACE_AXES = (62.0, 80.0)


def _to_h(matrix: F64) -> F64:
    out: F64 = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return out


def _similarity(src: npt.ArrayLike, dst: npt.ArrayLike) -> F64:
    """Least-squares similarity (2 x 3) taking ``src`` points onto ``dst`` points."""
    matrix, _ = cv2.estimateAffinePartial2D(
        np.asarray(src, dtype=np.float32).reshape(-1, 2),
        np.asarray(dst, dtype=np.float32).reshape(-1, 2),
        method=cv2.RANSAC,
        ransacReprojThreshold=1e7,
        maxIters=10,
        refineIters=50,
    )
    if matrix is None:
        raise ImageError("could not fit a similarity transform to the face landmarks")
    out: F64 = np.asarray(matrix, dtype=np.float64)
    return out


@dataclass(frozen=True)
class Geometry:
    to_exemplar: F64  # 3 x 3: HR-frame (x, y, 1) -> exemplar-frame (x, y, 1)
    source: str


def _from_landmarks(points_hr: npt.ArrayLike, source: str) -> Geometry:
    return Geometry(_to_h(_similarity(points_hr, EXEMPLAR_TEMPLATE)), source)


def _lr_to_hr(points: F32, scale: int) -> F32:
    out: F32 = ((points + 0.5) * scale - 0.5).astype(np.float32)
    return out


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def locate(
    up: U8,
    scale: int,
    *,
    aligned: bool,
    landmarks: npt.ArrayLike | None,
    bbox: Sequence[float] | None,
    detector: FaceEngine | None,
) -> Geometry:
    """The face's geometry in the upsampled input ``up``: the first of ``aligned``,
    ``landmarks``, the detected face (best overlapping ``bbox`` if given), ``bbox``
    alone that applies (see the module docstring), or :class:`ImageError`."""
    if aligned:
        return _aligned(up, scale)
    if landmarks is not None:
        return _given_landmarks(landmarks, scale)
    box_hr = _box_hr(bbox, scale) if bbox is not None else None
    if detector is not None:
        chosen = _detected(detector.detect(up), box_hr)
        if chosen is not None:
            return _from_landmarks(chosen.landmarks, "detected")
    if box_hr is not None:
        x, y, w, h = box_hr
        points = BBOX_LANDMARKS * np.array([w, h], dtype=np.float32) + np.array([x, y])
        return _from_landmarks(points, "bbox")
    raise ImageError(
        "no face found in the upsampled input: pass bbox=, landmarks= or "
        "aligned=True (an input already in the exemplar frame)"
    )


def _aligned(up: U8, scale: int) -> Geometry:
    """An input already in the exemplar frame (square): a pure scale."""
    height, width = up.shape[:2]
    if height != width:
        raise ImageError(
            f"an aligned input must be square, got {width // scale} x {height // scale}"
        )
    k = EXEMPLAR_SIZE / width
    return Geometry(
        np.array([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5], [0.0, 0.0, 1.0]]), "aligned"
    )


def _given_landmarks(landmarks: npt.ArrayLike, scale: int) -> Geometry:
    """The caller's five LR landmarks, mapped to the HR frame."""
    points = np.asarray(landmarks, dtype=np.float32)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise InputError(f"landmarks must be a finite (5, 2) array, got {points.shape}")
    return _from_landmarks(_lr_to_hr(points, scale), "landmarks")


def _box_hr(bbox: Sequence[float], scale: int) -> tuple[float, float, float, float]:
    """The caller's LR face box ``(x, y, w, h)`` in the HR frame."""
    if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox) or min(bbox[2:]) <= 0:
        raise InputError(f"bbox must be a finite (x, y, w, h) with w, h > 0, got {bbox!r}")
    return (bbox[0] * scale, bbox[1] * scale, bbox[2] * scale, bbox[3] * scale)


def _detected(faces: list[Face], box_hr: tuple[float, float, float, float] | None) -> Face | None:
    """The first detected face, or with a box the one overlapping it most (IoU at least
    0.3; the last of equals), or None."""
    if box_hr is None:
        return faces[0] if faces else None
    chosen: Face | None = None
    best = 0.3
    for face in faces:
        value = _iou(face.bbox, box_hr)
        if value >= best:
            chosen, best = face, value
    return chosen


def region(
    geometry: Geometry, width: int, height: int, scale: int, pad: int
) -> tuple[int, int, int, int]:
    """HR box ``(x0, y0, x1, y1)`` holding the exemplar frame plus ``pad``, on the LR grid."""
    if geometry.source == "aligned":
        return 0, 0, width, height
    inverse = np.linalg.inv(geometry.to_exemplar)
    e = float(EXEMPLAR_SIZE)
    corners = inverse @ np.array([[0, e, 0, e], [0, 0, e, e], [1, 1, 1, 1]], dtype=np.float64)
    x0 = max(0, math.floor((corners[0].min() - pad) / scale) * scale)
    y0 = max(0, math.floor((corners[1].min() - pad) / scale) * scale)
    x1 = min(width, math.ceil((corners[0].max() + pad) / scale) * scale)
    y1 = min(height, math.ceil((corners[1].max() + pad) / scale) * scale)
    if x1 - x0 < 2 * scale or y1 - y0 < 2 * scale:
        raise ImageError("the located face lies outside the image")
    return x0, y0, x1, y1


def perturbation(scale: float, degrees: float) -> F64:
    """Similarity about the face centre in the exemplar frame."""
    cx, cy = FACE_CENTRE
    angle = math.radians(degrees)
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy], [0.0, 0.0, 1.0]])


def translation(dx: float, dy: float) -> F64:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
