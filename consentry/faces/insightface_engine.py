"""insightface engine, for users who bring their own model pack (e.g. ``buffalo_l``).

insightface's model packs are licensed for non-commercial research only, and
the library fetches them from the internet by default. Consentry therefore
never downloads them, never depends on insightface, and never makes this engine
the default: the user installs ``insightface`` (and ``onnxruntime``) and points
the engine at a folder that already holds the pack's ``*.onnx`` files.

Invariants
- Refusals come first and say exactly what is missing, in one line, with the
  licence note: the folder does not exist or is not a folder; it holds no
  ``*.onnx`` file, or only one; every file's name identifies its task and none
  is a detector or none a recogniser; ``insightface`` is not installed; or
  insightface itself finds no detection or no recognition model among the files.
  Each raises :class:`~consentry.errors.EngineError`.
- The pack folder is passed to ``insightface.app.FaceAnalysis`` as an absolute
  path whose existence was just checked; insightface then uses it as is and has
  nothing to download. Only the detection and recognition models are loaded.
- ``model_hashes`` records the SHA-256 of every ``*.onnx`` file in the pack, so
  a registry entry can name the exact pack that produced an embedding.
- Landmarks: insightface's five keypoints are already in the engine order
  (image-left eye first, which is the subject's right eye). Scores are the
  detector's own, in [0, 1]. Embeddings are the recogniser's output over a
  112 x 112 crop aligned to the ArcFace template, L2-normalised.
"""

from __future__ import annotations

import importlib
import re
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from consentry.errors import EngineError
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
from consentry.faces.models import hash_files

__all__ = ["LICENCE_NOTE", "InsightFaceEngine", "check_pack"]

LICENCE_NOTE = (
    "insightface model packs are licensed for non-commercial research only and must be "
    "supplied by the user (Consentry never downloads them)"
)

# File names used by the published packs (buffalo_l/m/s/sc, antelopev2). A name that
# matches neither list is left for insightface to classify by the model's shape.
_DETECTION_NAMES = re.compile(r"^(det_|scrfd|retinaface)", re.IGNORECASE)
_RECOGNITION_NAMES = re.compile(r"^(w600k|glint|arcface|webface|ms1m)", re.IGNORECASE)
_OTHER_NAMES = re.compile(r"^(1k3d68|2d106det|genderage)", re.IGNORECASE)


def _refuse(problem: str) -> EngineError:
    return EngineError(f"{problem}; {LICENCE_NOTE}")


def check_pack(pack_dir: Path) -> list[Path]:
    """The pack's ``*.onnx`` files, or :class:`EngineError` saying what is missing.

    Checks only what can be told without insightface: that the folder exists and
    holds at least two ONNX files, and, when every file name is a known one, that
    they include a detection and a recognition model.
    """
    pack = Path(pack_dir).expanduser()
    if not pack.exists():
        raise _refuse(f"insightface model pack folder {pack} does not exist")
    if not pack.is_dir():
        raise _refuse(f"insightface model pack {pack} is not a folder")
    onnx = sorted(p for p in pack.glob("*.onnx") if p.is_file())
    if not onnx:
        raise _refuse(
            f"insightface model pack {pack} has no .onnx files: it needs a detection model "
            "(e.g. det_10g.onnx) and a recognition model (e.g. w600k_r50.onnx)"
        )
    names = [p.name for p in onnx]
    has_det = any(_DETECTION_NAMES.match(n) for n in names)
    has_rec = any(_RECOGNITION_NAMES.match(n) for n in names)
    all_known = all(
        _DETECTION_NAMES.match(n) or _RECOGNITION_NAMES.match(n) or _OTHER_NAMES.match(n)
        for n in names
    )
    if len(onnx) == 1:
        if has_det:
            missing = f"a recognition model (it has only the detector {names[0]})"
        elif has_rec:
            missing = f"a detection model (it has only the recogniser {names[0]})"
        else:
            missing = f"a detection model and a recognition model (it has only {names[0]})"
        raise _refuse(f"insightface model pack {pack} lacks {missing}")
    if all_known and not (has_det and has_rec):
        which = "a detection model" if not has_det else "a recognition model"
        raise _refuse(f"insightface model pack {pack} lacks {which} (it has {', '.join(names)})")
    return onnx


class InsightFaceEngine:
    """Detection + recognition models of a user-supplied insightface pack."""

    name = "insightface"

    def __init__(
        self, pack_dir: Path, *, det_size: tuple[int, int] = (640, 640), det_thresh: float = 0.5
    ) -> None:
        pack = Path(pack_dir).expanduser().resolve()
        onnx = check_pack(pack)
        try:
            app_module: Any = importlib.import_module("insightface.app")
            insightface: Any = importlib.import_module("insightface")
        except ImportError as exc:
            raise _refuse(
                f"the insightface engine needs the insightface package, which is not "
                f"installed ({exc}); pip install insightface onnxruntime"
            ) from exc
        self.model_hashes: dict[str, str] = hash_files(onnx)
        try:
            app = app_module.FaceAnalysis(
                name=str(pack),
                root=str(pack.parent),
                allowed_modules=["detection", "recognition"],
                providers=["CPUExecutionProvider"],
            )
        except AssertionError:
            raise _refuse(f"insightface found no detection model in {pack}") from None
        except Exception as exc:
            raise EngineError(f"insightface could not load the pack at {pack}: {exc}") from exc
        models: dict[str, Any] = dict(app.models)
        if "detection" not in models:
            raise _refuse(f"insightface found no detection model in {pack}")
        if "recognition" not in models:
            raise _refuse(f"insightface found no recognition model in {pack}")
        try:
            app.prepare(ctx_id=-1, det_thresh=det_thresh, det_size=det_size)
        except Exception as exc:
            raise EngineError(f"insightface could not prepare the pack at {pack}: {exc}") from exc
        self.scan_side = int(max(det_size))  # the face scan's tile: the detector's input size
        self._detector: Any = models["detection"]
        self._recogniser: Any = models["recognition"]
        try:  # the recogniser's output length, measured rather than read from its metadata
            probe = self._recogniser.get_feat(np.zeros((112, 112, 3), dtype=np.uint8))
        except Exception as exc:
            raise EngineError(f"insightface's recogniser in {pack} does not run: {exc}") from exc
        self.dim = int(np.asarray(probe).size)
        self._lock = threading.Lock()
        version = getattr(insightface, "__version__", "unknown")
        self.version = f"insightface-{pack.name}/insightface-{version}"
        self.pack_dir = pack

    def __repr__(self) -> str:
        return f"InsightFaceEngine(version={self.version!r})"

    def detect(self, image: ImageArray) -> list[Face]:
        """Faces in an RGB image, largest first; ``[]`` when there are none."""
        rgb = check_image(image)
        height, width = rgb.shape[:2]
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        with self._lock:
            boxes, keypoints = self._detector.detect(bgr, max_num=0, metric="default")
        faces: list[Face] = []
        if boxes is None or keypoints is None:
            return faces
        for box, kps in zip(np.asarray(boxes), np.asarray(keypoints), strict=True):
            bbox = clip_bbox(
                float(box[0]), float(box[1]), float(box[2]), float(box[3]), width, height
            )
            if bbox is None:
                continue
            score = min(1.0, max(0.0, float(box[4])))
            faces.append(Face(bbox=bbox, landmarks=np.asarray(kps).reshape(5, 2), score=score))
        return sort_faces(faces)

    def align(self, image: ImageArray, face: Face) -> ImageArray:
        """112 x 112 RGB crop with the landmarks on the ArcFace template."""
        return align_by_landmarks(check_image(image), face.landmarks, 112, ARCFACE_TEMPLATE_112)

    def embed(self, image: ImageArray, face: Face) -> FloatArray:
        """Unit-norm embedding from the pack's recogniser."""
        crop_bgr = cv2.cvtColor(self.align(image, face), cv2.COLOR_RGB2BGR)
        with self._lock:
            feature = self._recogniser.get_feat(crop_bgr)
        vector = np.asarray(feature, dtype=np.float32).reshape(-1)
        if vector.size != self.dim:
            raise EngineError(f"insightface returned {vector.size} values, expected {self.dim}")
        return unit_vector(vector)

    def analyze(self, image: ImageArray) -> list[Face]:
        """Every face in the image, largest first, each with its embedding."""
        return analyze_with(self, image)
