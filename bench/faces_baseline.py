"""The named baseline of ``python -m bench faces``: the real ``face_recognition`` library.

``face_recognition==1.3.0`` (a pure-Python wheel over dlib) is installed into the
bench venv with ``--no-deps``; its model package ``face_recognition_models``
imports ``pkg_resources``, which setuptools >= 81 no longer ships. When
``import pkg_resources`` fails here, ``<venv>/bench-pkg-resources`` (setuptools<81
installed with ``pip install --target``, see bench/README.md) is *appended* to
``sys.path``: only ``pkg_resources`` comes from there, the venv's own setuptools
still wins. Nothing is shimmed: the library and its model package import for real.

Side effects of importing face_recognition, undone or noted here:
- ``face_recognition.api`` sets ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True`` at
  import; Consentry's ``load_image`` relies on it staying False, so it is restored
  right after the import.
- It loads every model of ``face_recognition_models`` at import, the 68-point
  shape predictor (non-commercial training data) included; the default pipeline
  measured here (``model="small"``) uses the 5-point predictor only.
- If ``face_recognition_models`` fails to import, ``face_recognition.api`` calls
  ``quit()``: that ``SystemExit`` is caught and reported as "not available".
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import sys
import warnings
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from bench.faces_data import Box

TOLERANCE = 0.6  # face_recognition.compare_faces' default
EXTRA_DIR_NAME = "bench-pkg-resources"


def _pkg_resources_note() -> str | None:
    """Make ``pkg_resources`` importable; None if it cannot be."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("pkg_resources")
        return "pkg_resources from the venv's setuptools"
    except ImportError:
        pass
    extra = Path(sys.prefix) / EXTRA_DIR_NAME
    if not (extra / "pkg_resources").is_dir():
        return None
    sys.path.append(str(extra))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("pkg_resources")
    except ImportError:
        sys.path.remove(str(extra))
        return None
    return f"pkg_resources from {extra} (setuptools<81, appended to sys.path)"


def load() -> tuple[ModuleType | None, str]:
    """(the face_recognition module, a note on how it was imported) or (None, why not)."""
    if importlib.util.find_spec("face_recognition") is None:
        return None, ("face_recognition is not installed (see bench/README.md: "
                      "pip install --no-deps face-recognition==1.3.0)")
    note = _pkg_resources_note()
    if note is None:
        return None, ("pkg_resources is missing (setuptools>=81) and "
                      f"{Path(sys.prefix) / EXTRA_DIR_NAME} is absent (see bench/README.md)")
    from PIL import ImageFile

    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    chatter = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")
            module = importlib.import_module("face_recognition")
    except SystemExit:
        return None, f"face_recognition quit on import: {chatter.getvalue().strip()[:200]}"
    except ImportError as exc:
        return None, f"face_recognition failed to import: {exc}"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
    return module, note


def css_to_box(css: tuple[int, int, int, int]) -> Box:
    top, right, bottom, left = css
    return (float(left), float(top), float(right - left), float(bottom - top))


class Pipeline:
    """face_recognition's defaults: HOG with one upsample, 5-point 'small' encodings,
    one jitter, Euclidean ``face_distance``, match iff distance <= 0.6."""

    def __init__(self, module: ModuleType) -> None:
        self.fr: Any = module
        dist = metadata.version("face-recognition")
        self.version = f"face_recognition {dist} (module says {module.__version__})"

    def locations(self, image: np.ndarray) -> list[Box]:
        return [css_to_box(c) for c in self.fr.face_locations(image)]

    def encode(self, image: np.ndarray, boxes: list[Box]) -> list[np.ndarray]:
        css = [(round(y), round(x + w), round(y + h), round(x)) for x, y, w, h in boxes]
        return [np.asarray(e, dtype=np.float64) for e in self.fr.face_encodings(image, css)]

    def analyze(self, image: np.ndarray) -> int:
        """Detect then encode every face (what a caller of the library does); face count."""
        locations = self.fr.face_locations(image)
        return len(self.fr.face_encodings(image, locations))

    def distances(self, known: np.ndarray, probe: np.ndarray) -> np.ndarray:
        return np.asarray(self.fr.face_distance(known, probe), dtype=np.float64)
