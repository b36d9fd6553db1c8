"""Face crops of the public-domain photos shipped in ``consentry/data/faces``."""

from __future__ import annotations

from importlib import resources

import cv2
import numpy as np
from PIL import Image

__all__ = ["face_crop"]

# Square crops around each face's five YuNet landmarks (about 2.4 eye distances a side).
_CROPS = {"obama": (137, 393, 369, 625), "biden": (214, 450, 360, 596)}


def face_crop(name: str, size: int = 128) -> np.ndarray:
    """A ``size x size`` RGB crop of a shipped photo's face, area-resampled."""
    with resources.as_file(resources.files("consentry.data") / "faces" / f"{name}.jpg") as path:
        photo = np.asarray(Image.open(path).convert("RGB"))
    y0, y1, x0, x1 = _CROPS[name]
    crop = photo[y0:y1, x0:x1]
    return np.ascontiguousarray(
        cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA), dtype=np.uint8
    )
