"""dlib face engine: HOG detector, 5-point shape predictor, ResNet 128-d descriptor.

Models: ``shape_predictor_5_face_landmarks.dat`` and
``dlib_face_recognition_resnet_model_v1.dat`` from the ``face-recognition-models``
package (released into the public domain by their author, Davis King, per the
dlib-models notes), SHA-256-checked before loading (:mod:`consentry.faces.models`).
The 68-point model in the same package is never loaded: its training data
(iBUG 300-W) excludes commercial use.

Invariants
- ``detect`` runs dlib's HOG frontal-face detector with ``upsample`` pyramid
  up-steps (default 1) on the RGB image, or on a copy downscaled to ``max_side``
  when the image is larger; boxes are mapped back and clipped to the image.
- ``score`` = ``1 / (1 + exp(-m))`` where ``m`` is the HOG detector's SVM margin.
  The margin is unbounded (about 0 to 3.5 on real photos); faces are reported
  when ``m >= 0``, so reported scores lie in ``[0.5, 1)``, 0.5 being the
  detector's own decision boundary. This is a monotone squash, not a calibrated
  probability, and is not comparable with other engines' scores.
- Landmarks: dlib's 5-point model gives the two corners of each eye and the
  base of the nose (points 0-1: the subject's left eye, 2-3: the subject's right
  eye, 4: just under the nose tip); it gives no mouth. ``Face.landmarks`` follows
  the documented engine order with eye centres = mean of each eye's two corners,
  and **estimates** the nose tip and mouth corners. In a frame whose origin is
  the midpoint of the eyes, whose x axis is the vector from the right to the left
  eye centre and whose y axis is that vector turned 90 degrees towards the chin,
  with dlib's nose point at ``(nx, ny)``: nose tip = ``(1.5 nx, 0.76 ny)``; mouth
  corners = ``(0.4 nx -+ 0.47, 1.37 ny)``. The coefficients were fitted to
  YuNet's landmarks on 125 photos; the mean error is about 0.08 (nose) and 0.10
  (mouth) of the eye distance. They are estimates for alignment and display,
  never used for identity.
- Embeddings come from dlib's own 150 x 150 face chip (padding 0.25) built from
  the 5 shape points, which the shape predictor recomputes from ``face.bbox``
  (cheap, and exactly what ``detect`` used). The 128-d descriptor is L2-normalised
  so that :func:`~consentry.faces.engine.cosine` works like for every engine.
  dlib's customary rule, Euclidean distance < 0.6 on *raw* descriptors, does not
  carry over: raw descriptors are not unit length (norms about 1.3 to 1.6), so
  ``1 - d**2 / 2`` is not their cosine. Measured on ``shared/faces`` (125 photos):
  raw distance 0.6 accepts 13 of 7513 impostor pairs; on the normalised vectors
  cosine 0.922 gives FMR <= 1e-3 (FNMR 0.8%), while 0.833, the cosine that raw
  distance 0.578 would mean for unit vectors, accepts 47% of impostor pairs.
  Normalised dlib vectors all sit high (different people average 0.83, the same
  person 0.96): calibrate this engine's threshold, never convert 0.6.
- One engine may be shared between threads: every dlib call runs under a lock.
"""

from __future__ import annotations

import importlib
import math
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from consentry.errors import EngineError, InputError
from consentry.faces.engine import (
    Face,
    FloatArray,
    ImageArray,
    analyze_with,
    check_image,
    clip_bbox,
    sort_faces,
    unit_vector,
)
from consentry.faces.models import DLIB_RESNET, DLIB_SHAPE5, dlib_models_dir, verified_path

__all__ = ["DlibEngine", "landmarks_from_dlib5"]

_CHIP = 150
_CHIP_PADDING = 0.25


def landmarks_from_dlib5(points: npt.ArrayLike) -> FloatArray:
    """Engine-order (5, 2) landmarks from dlib's five shape points (see the module docstring)."""
    p = np.asarray(points, dtype=np.float64).reshape(5, 2)
    right_eye = (p[2] + p[3]) / 2.0
    left_eye = (p[0] + p[1]) / 2.0
    origin = (right_eye + left_eye) / 2.0
    ex = left_eye - right_eye
    ey = np.array([-ex[1], ex[0]])
    d2 = float(ex @ ex)
    if d2 < 1e-9:
        raise EngineError("dlib returned coincident eye points")
    rel = p[4] - origin
    nx, ny = float(rel @ ex) / d2, float(rel @ ey) / d2

    def at(u: float, v: float) -> npt.NDArray[np.float64]:
        point: npt.NDArray[np.float64] = origin + u * ex + v * ey
        return point

    out = np.stack(
        [
            right_eye,
            left_eye,
            at(1.5 * nx, 0.76 * ny),
            at(0.4 * nx - 0.47, 1.37 * ny),
            at(0.4 * nx + 0.47, 1.37 * ny),
        ]
    ).astype(np.float32)
    return out


def _squash(margin: float) -> float:
    if margin >= 0:
        return 1.0 / (1.0 + math.exp(-margin))
    z = math.exp(margin)
    return z / (1.0 + z)


class DlibEngine:
    """dlib HOG + 5-point landmarks + ResNet descriptor (128-d)."""

    name = "dlib"
    dim = 128

    def __init__(
        self, upsample: int = 1, *, models_dir: Path | None = None, max_side: int = 1280
    ) -> None:
        if not 0 <= upsample <= 3:
            raise InputError(f"upsample must be 0..3, got {upsample}")
        if max_side < 64:
            raise InputError(f"max_side must be at least 64, got {max_side}")
        self.upsample = int(upsample)
        self.max_side = int(max_side)
        self.scan_side = self.max_side  # the face scan's tile: detected without shrinking
        try:
            dlib: Any = importlib.import_module("dlib")
        except ImportError as exc:
            raise EngineError(
                f"the dlib engine needs the dlib module (pip install dlib-bin): {exc}"
            ) from exc
        folder = Path(models_dir) if models_dir is not None else dlib_models_dir()
        shape_path = verified_path(folder, DLIB_SHAPE5)
        resnet_path = verified_path(folder, DLIB_RESNET)
        try:
            self._detector: Any = dlib.get_frontal_face_detector()
            self._shape: Any = dlib.shape_predictor(str(shape_path))
            self._resnet: Any = dlib.face_recognition_model_v1(str(resnet_path))
        except RuntimeError as exc:
            raise EngineError(f"dlib could not load its models: {exc}") from exc
        self._dlib: Any = dlib
        self._lock = threading.Lock()
        self.model_hashes: dict[str, str] = {
            DLIB_SHAPE5.name: DLIB_SHAPE5.sha256,
            DLIB_RESNET.name: DLIB_RESNET.sha256,
        }
        self.version = f"dlib-resnet-v1+shape5+hog/dlib-{dlib.__version__}"

    def __repr__(self) -> str:
        return f"DlibEngine(version={self.version!r}, upsample={self.upsample})"

    def _rect(self, bbox: tuple[float, float, float, float]) -> Any:
        x, y, w, h = bbox
        left, top = round(x), round(y)
        return self._dlib.rectangle(
            left, top, max(left, round(x + w) - 1), max(top, round(y + h) - 1)
        )

    def _shape_points(self, rgb: ImageArray, bbox: tuple[float, float, float, float]) -> Any:
        return self._shape(rgb, self._rect(bbox))

    def detect(self, image: ImageArray) -> list[Face]:
        """Faces in an RGB image, largest first; ``[]`` when there are none."""
        rgb = check_image(image)
        height, width = rgb.shape[:2]
        longest = max(height, width)
        scale = 1.0
        work = rgb
        if longest > self.max_side:
            scale = self.max_side / longest
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            work = np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
        faces: list[Face] = []
        with self._lock:
            rects, margins, _kinds = self._detector.run(work, self.upsample, 0.0)
            for rect, margin in zip(rects, margins, strict=True):
                bbox = clip_bbox(
                    rect.left() / scale,
                    rect.top() / scale,
                    (rect.right() + 1) / scale,
                    (rect.bottom() + 1) / scale,
                    width,
                    height,
                )
                if bbox is None:
                    continue
                shape = self._shape_points(rgb, bbox)
                points = [(part.x, part.y) for part in shape.parts()]
                faces.append(
                    Face(
                        bbox=bbox,
                        landmarks=landmarks_from_dlib5(points),
                        score=_squash(float(margin)),
                    )
                )
        return sort_faces(faces)

    def align(self, image: ImageArray, face: Face) -> ImageArray:
        """dlib's 150 x 150 RGB face chip (padding 0.25), the input of its ResNet."""
        rgb = check_image(image)
        with self._lock:
            shape = self._shape_points(rgb, face.bbox)
            chip = self._dlib.get_face_chip(rgb, shape, size=_CHIP, padding=_CHIP_PADDING)
        out: ImageArray = np.ascontiguousarray(chip, dtype=np.uint8)
        return out

    def embed(self, image: ImageArray, face: Face) -> FloatArray:
        """Unit-norm 128-d dlib descriptor of ``face``."""
        chip = self.align(image, face)
        with self._lock:
            descriptor = self._resnet.compute_face_descriptor(chip)
        vector = np.array(descriptor, dtype=np.float32).reshape(-1)
        if vector.size != self.dim:
            raise EngineError(f"dlib returned {vector.size} values, expected {self.dim}")
        return unit_vector(vector)

    def analyze(self, image: ImageArray) -> list[Face]:
        """Every face in the image, largest first, each with its embedding."""
        return analyze_with(self, image)
