"""The face-engine interface every detector/embedder in Consentry implements.

A :class:`FaceEngine` turns an RGB image into :class:`Face` records: where the
face is, five landmarks, how sure the detector is and, after embedding, an
identity vector. Engines differ in models, sizes and thresholds; the records do
not.

Invariants
- Images are ``H x W x 3`` ``uint8`` arrays in **RGB** order; anything else is an
  :class:`~consentry.errors.InputError` (see :func:`check_image`). Engines that
  need BGR convert internally.
- ``Face.bbox`` is ``(x, y, w, h)`` in pixels of the image given to ``detect``,
  with ``w > 0`` and ``h > 0``, clipped to the image.
- ``Face.landmarks`` is a read-only ``(5, 2)`` float32 array of image
  coordinates in this order: right eye, left eye, nose tip, right mouth corner,
  left mouth corner, where *right* is the subject's right, i.e. the point nearer
  the image's left edge in a frontal photo (the order of the ArcFace template).
- ``Face.score`` is in ``[0, 1]``; engines document how they map their raw
  detector output into that range. Scores of different engines are not
  comparable.
- ``Face.embedding`` is ``None`` or a read-only 1-D float32 vector of unit L2
  norm (within 1e-3), so :func:`cosine` of two embeddings of one engine is their
  dot product. Embeddings of different engines (or engine versions) are never
  comparable.
- ``detect`` returns faces sorted by bbox area, largest first (ties: higher score
  first); an image without faces gives ``[]``, never an error.
- A :class:`Face` is immutable and compares by identity (its arrays make value
  equality ambiguous).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import numpy.typing as npt

from consentry.errors import EngineError, InputError

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "LANDMARK_NAMES",
    "Face",
    "FaceEngine",
    "align_by_landmarks",
    "analyze_with",
    "check_image",
    "clip_bbox",
    "cosine",
    "sort_faces",
    "unit_vector",
]

FloatArray = npt.NDArray[np.float32]
ImageArray = npt.NDArray[np.uint8]

LANDMARK_NAMES: tuple[str, ...] = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "right_mouth_corner",
    "left_mouth_corner",
)


def _frozen(array: npt.ArrayLike) -> FloatArray:
    out: FloatArray = np.array(array, dtype=np.float32, copy=True)
    out.setflags(write=False)
    return out


#: Where the five landmarks land in a 112 x 112 ArcFace-style aligned crop (x, y),
#: in :data:`LANDMARK_NAMES` order. SFace and the insightface recognisers were
#: trained on crops made with this template.
ARCFACE_TEMPLATE_112: FloatArray = _frozen(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face; see the module docstring for the invariants of each field."""

    bbox: tuple[float, float, float, float]
    landmarks: FloatArray
    score: float
    embedding: FloatArray | None = None

    def __post_init__(self) -> None:
        if len(self.bbox) != 4:
            raise InputError(f"bbox must be (x, y, w, h), got {self.bbox!r}")
        bbox = tuple(float(v) for v in self.bbox)
        if not all(math.isfinite(v) for v in bbox) or bbox[2] <= 0 or bbox[3] <= 0:
            raise InputError(f"bbox must be finite with positive width and height: {bbox!r}")
        landmarks = _frozen(self.landmarks)
        if landmarks.shape != (5, 2) or not np.isfinite(landmarks).all():
            raise InputError(f"landmarks must be a finite (5, 2) array, got {landmarks.shape}")
        score = float(self.score)
        if not 0.0 <= score <= 1.0:
            raise InputError(f"score must lie in [0, 1], got {score}")
        object.__setattr__(self, "bbox", bbox)
        object.__setattr__(self, "landmarks", landmarks)
        object.__setattr__(self, "score", score)
        if self.embedding is not None:
            embedding = _frozen(self.embedding)
            if embedding.ndim != 1 or embedding.size == 0 or not np.isfinite(embedding).all():
                raise InputError("embedding must be a finite non-empty 1-D vector")
            if abs(float(np.linalg.norm(embedding)) - 1.0) > 1e-3:
                raise InputError("embedding must have unit L2 norm")
            object.__setattr__(self, "embedding", embedding)

    @property
    def area(self) -> float:
        """Area of the bbox in square pixels."""
        return self.bbox[2] * self.bbox[3]

    def with_embedding(self, embedding: FloatArray) -> Face:
        """A copy of this face carrying ``embedding``."""
        return dataclasses.replace(self, embedding=embedding)


@runtime_checkable
class FaceEngine(Protocol):
    """What every face engine provides. Engines are safe to share between threads."""

    name: str
    """Short engine name: ``"sface"``, ``"dlib"`` or ``"insightface"``."""
    dim: int
    """Length of the embedding vectors."""
    version: str
    """Models and runtime in one string; embeddings from different versions do not mix."""
    model_hashes: dict[str, str]
    """Model file name -> lowercase hex SHA-256 of the file actually loaded."""

    def detect(self, image: ImageArray) -> list[Face]:
        """Faces in an RGB image, largest first, without embeddings."""
        ...

    def align(self, image: ImageArray, face: Face) -> ImageArray:
        """The engine's aligned RGB crop of ``face`` (size is engine-specific)."""
        ...

    def embed(self, image: ImageArray, face: Face) -> FloatArray:
        """Unit-norm float32 embedding of ``face`` (shape ``(dim,)``)."""
        ...

    def analyze(self, image: ImageArray) -> list[Face]:
        """``detect`` then ``embed`` every face; every returned face has an embedding."""
        ...


def check_image(image: object) -> ImageArray:
    """``image`` as a C-contiguous ``H x W x 3`` uint8 array, or :class:`InputError`."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be H x W x 3 (RGB), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"image is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


def unit_vector(vector: npt.ArrayLike) -> FloatArray:
    """``vector`` flattened, as float32 scaled to unit L2 norm.

    Raises :class:`EngineError` if the vector is zero or not finite: an engine
    that produces such an output is broken, and a silent zero vector would match
    nothing (or, after careless normalisation, everything).
    """
    flat = np.asarray(vector, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(flat))
    if flat.size == 0 or not math.isfinite(norm) or norm == 0.0:
        raise EngineError("embedding model produced an empty, zero or non-finite vector")
    out: FloatArray = (flat / norm).astype(np.float32)
    return out


def cosine(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Cosine similarity of two vectors of the same length, in ``[-1, 1]``.

    Inputs need not be normalised. A zero or non-finite vector, or vectors of
    different lengths, raise :class:`InputError`.
    """
    va = np.asarray(a, dtype=np.float64).reshape(-1)
    vb = np.asarray(b, dtype=np.float64).reshape(-1)
    if va.shape != vb.shape:
        raise InputError(f"cannot compare vectors of lengths {va.size} and {vb.size}")
    na = float(np.linalg.norm(va))
    nb = float(np.linalg.norm(vb))
    if not (math.isfinite(na) and math.isfinite(nb)) or na == 0.0 or nb == 0.0:
        raise InputError("cosine of a zero or non-finite vector is undefined")
    value = float(np.dot(va, vb) / (na * nb))
    return max(-1.0, min(1.0, value))


def align_by_landmarks(
    image: ImageArray,
    landmarks: npt.ArrayLike,
    size: int | tuple[int, int],
    template: npt.ArrayLike,
) -> ImageArray:
    """Warp ``image`` so that ``landmarks`` land on ``template`` (a similarity transform).

    The transform (rotation, uniform scale, translation; no shear, no flip) is
    the least-squares fit of the points to the template: it is estimated by
    ``cv2.estimateAffinePartial2D`` with a RANSAC threshold so large that every
    point is an inlier, followed by its Levenberg-Marquardt refinement, which
    for this model is the closed-form least-squares solution. Pixels outside the
    source are black. ``size`` is the output side, or ``(width, height)``.
    """
    src = np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)
    dst = np.asarray(template, dtype=np.float32).reshape(-1, 2)
    if src.shape != dst.shape or src.shape[0] < 2:
        raise InputError(f"landmarks {src.shape} and template {dst.shape} do not match")
    if float(np.ptp(src, axis=0).max()) < 1e-3:
        raise InputError("landmarks are degenerate (all at one point)")
    matrix, _inliers = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=1e7, maxIters=10, refineIters=50
    )
    if matrix is None:
        raise InputError("could not fit a similarity transform to the landmarks")
    width, height = (size, size) if isinstance(size, int) else size
    warped = cv2.warpAffine(
        image,
        matrix,
        (int(width), int(height)),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    out: ImageArray = np.ascontiguousarray(warped, dtype=np.uint8)
    return out


def clip_bbox(
    x0: float, y0: float, x1: float, y1: float, width: int, height: int
) -> tuple[float, float, float, float] | None:
    """Corner box clipped to a ``width x height`` image, as ``(x, y, w, h)``; ``None`` if empty."""
    cx0 = min(max(x0, 0.0), float(width))
    cy0 = min(max(y0, 0.0), float(height))
    cx1 = min(max(x1, 0.0), float(width))
    cy1 = min(max(y1, 0.0), float(height))
    if cx1 - cx0 < 1.0 or cy1 - cy0 < 1.0:
        return None
    return (cx0, cy0, cx1 - cx0, cy1 - cy0)


def sort_faces(faces: Sequence[Face]) -> list[Face]:
    """Faces ordered by bbox area, largest first; equal areas by score, highest first."""
    return sorted(faces, key=lambda f: (-f.area, -f.score))


def analyze_with(engine: FaceEngine, image: ImageArray) -> list[Face]:
    """Reference ``analyze``: ``engine.detect`` then ``engine.embed`` on each face."""
    return [face.with_embedding(engine.embed(image, face)) for face in engine.detect(image)]
