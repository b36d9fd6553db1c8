"""Face crops of the public-domain photos shipped in ``consentry/data/faces``."""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

__all__ = ["PHOTOS", "crowd_png", "face_crop"]

PHOTOS = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"

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


def crowd_png(per_side: int) -> bytes:
    """A PNG of ``per_side``² copies of a registered face (Obama, the shipped photo),
    tiled 128 px apart: more faces than a cap, with real faces to detect."""
    from consentry.faces.engines import get_engine
    from consentry.faces.images import load_image

    with resources.as_file(resources.files("consentry.data") / "faces" / "obama.jpg") as path:
        pixels = load_image(path).pixels
    face = get_engine("sface").detect(pixels)[0]
    x, y, w, h = face.bbox
    side = max(w, h) * 1.6
    tile = Image.fromarray(pixels).crop(
        (
            int(x + w / 2 - side / 2),
            int(y + h / 2 - side / 2),
            int(x + w / 2 + side / 2),
            int(y + h / 2 + side / 2),
        )
    )
    tile = tile.resize((128, 128))
    crowd = Image.new("RGB", (128 * per_side, 128 * per_side))
    for i in range(per_side):
        for j in range(per_side):
            crowd.paste(tile, (128 * i, 128 * j))
    buffer = io.BytesIO()
    crowd.save(buffer, format="PNG")
    return buffer.getvalue()
