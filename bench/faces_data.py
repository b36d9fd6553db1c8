"""Data for ``python -m bench faces``: the labelled photos, face picking, transforms, scenes.

- Photos come from ``<faces dir>/MANIFEST.tsv`` (``path``, ``identity``, ``bbox`` =
  ``x,y,w,h`` of the labelled face, ``n_faces``), loaded with Consentry's own
  :func:`~consentry.faces.images.load_image`.
- In a photo with several faces the face used is the detected face with the highest
  IoU to the labelled bbox; a detection counts only at IoU >= :data:`MIN_IOU`.
- Every transform returns the new image and where the labelled face went (the bbox
  mapped through the same geometry; rotations give the axis-aligned box of the
  rotated corners), so the probe face is picked the same way after the transform.
- Randomness (noise, scene placement) is seeded per photo: runs are repeatable.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from consentry.faces.images import load_image, load_image_bytes

Box = tuple[float, float, float, float]  # x, y, w, h
Array = np.ndarray

MIN_IOU = 0.3
SCENE_SIDE = 1024


@dataclass(frozen=True)
class Photo:
    index: int
    path: str  # relative to the faces folder, as in the manifest
    identity: str
    bbox: Box  # the labelled face
    n_faces: int
    pixels: Array  # H x W x 3 uint8 RGB, read-only
    sha256: str


def default_faces_dir() -> Path:
    """``shared/faces`` beside the repository (``<repo>/../shared/faces``)."""
    return Path(__file__).resolve().parent.parent.parent / "shared" / "faces"


def load_photos(folder: Path) -> list[Photo]:
    manifest = folder / "MANIFEST.tsv"
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    photos: list[Photo] = []
    for i, row in enumerate(rows):
        loaded = load_image(folder / row["path"])
        x, y, w, h = (float(v) for v in row["bbox"].split(","))
        photos.append(
            Photo(i, row["path"], row["identity"], (x, y, w, h), int(row["n_faces"] or 1),
                  loaded.pixels, loaded.sha256)
        )
    return photos


# ---------------------------------------------------------------- boxes
def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def pick(boxes: Sequence[Box], label: Box) -> int | None:
    """Index of the box with the highest IoU to ``label``, if that IoU is >= MIN_IOU."""
    best, best_iou = None, MIN_IOU
    for i, box in enumerate(boxes):
        value = iou(box, label)
        if value >= best_iou:
            best, best_iou = i, value
    return best


def _clip_box(box: Box, width: int, height: int) -> Box:
    x0, y0 = max(0.0, box[0]), max(0.0, box[1])
    x1, y1 = min(float(width), box[0] + box[2]), min(float(height), box[1] + box[3])
    return (float(x0), float(y0), float(max(1.0, x1 - x0)), float(max(1.0, y1 - y0)))


def _margin_crop(image: Array, box: Box, margin: float) -> tuple[Array, int, int]:
    """``image`` cropped to ``box`` grown by ``margin`` of its size on every side (clipped)."""
    height, width = image.shape[:2]
    x, y, w, h = box
    x0 = max(0, int(np.floor(x - margin * w)))
    y0 = max(0, int(np.floor(y - margin * h)))
    x1 = min(width, int(np.ceil(x + w + margin * w)))
    y1 = min(height, int(np.ceil(y + h + margin * h)))
    return np.ascontiguousarray(image[y0:y1, x0:x1]), x0, y0


# ---------------------------------------------------------------- transforms
Transform = Callable[[Photo], tuple[Array, Box]]


def _u8(values: Array) -> Array:
    return np.ascontiguousarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _identity(p: Photo) -> tuple[Array, Box]:
    return p.pixels, p.bbox


def _blur(p: Photo) -> tuple[Array, Box]:
    return np.asarray(cv2.GaussianBlur(p.pixels, (0, 0), sigmaX=2.0, sigmaY=2.0)), p.bbox


def _down_up(p: Photo) -> tuple[Array, Box]:
    h, w = p.pixels.shape[:2]
    small = cv2.resize(p.pixels, (max(1, round(w / 4)), max(1, round(h / 4))),
                       interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)), p.bbox


def _jpeg(p: Photo) -> tuple[Array, Box]:
    buffer = io.BytesIO()
    Image.fromarray(p.pixels).save(buffer, format="JPEG", quality=25)
    return load_image_bytes(buffer.getvalue()).pixels, p.bbox


def _gray(p: Photo) -> tuple[Array, Box]:
    gray = cv2.cvtColor(p.pixels, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)), p.bbox


def _rotate(angle: float) -> Transform:
    def apply(p: Photo) -> tuple[Array, Box]:
        h, w = p.pixels.shape[:2]
        matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
        out = cv2.warpAffine(p.pixels, matrix, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        x, y, bw, bh = p.bbox
        corners = np.array([[x, y, 1], [x + bw, y, 1], [x, y + bh, 1], [x + bw, y + bh, 1]])
        moved = corners @ matrix.T
        lo, hi = moved.min(axis=0), moved.max(axis=0)
        box = _clip_box((lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]), w, h)
        return np.asarray(out), box

    return apply


def _flip(p: Photo) -> tuple[Array, Box]:
    w = p.pixels.shape[1]
    x, y, bw, bh = p.bbox
    return np.ascontiguousarray(p.pixels[:, ::-1]), (w - x - bw, y, bw, bh)


def _tight_crop(p: Photo) -> tuple[Array, Box]:
    crop, x0, y0 = _margin_crop(p.pixels, p.bbox, 0.10)
    x, y, bw, bh = p.bbox
    return crop, _clip_box((x - x0, y - y0, bw, bh), crop.shape[1], crop.shape[0])


def _brightness(factor: float) -> Transform:
    def apply(p: Photo) -> tuple[Array, Box]:
        return _u8(p.pixels.astype(np.float32) * factor), p.bbox

    return apply


def _noise(p: Photo) -> tuple[Array, Box]:
    rng = np.random.default_rng(1000 + p.index)
    noisy = p.pixels.astype(np.float32) + rng.normal(0.0, 10.0, p.pixels.shape)
    return _u8(noisy), p.bbox


def neutral_scene(side: int = SCENE_SIDE) -> Array:
    """A gray vertical gradient (96 at the top to 160 at the bottom) with a soft horizontal
    ramp, so that the background is neither flat nor busy."""
    ys = np.linspace(96.0, 160.0, side)[:, None]
    xs = np.linspace(-12.0, 12.0, side)[None, :]
    gray = ys + xs
    return _u8(np.repeat(gray[:, :, None], 3, axis=2))


def face_patch(p: Photo, width: int, margin: float, *, face_width: bool = False
               ) -> tuple[Array, Box]:
    """The labelled face cropped with ``margin`` and resized so that the crop (or, with
    ``face_width``, the labelled bbox inside it) is ``width`` px wide; returns the patch
    and the labelled bbox in patch coordinates."""
    crop, x0, y0 = _margin_crop(p.pixels, p.bbox, margin)
    scale = width / (p.bbox[2] if face_width else crop.shape[1])
    width = max(1, round(crop.shape[1] * scale))
    height = max(1, round(crop.shape[0] * scale))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    patch = np.asarray(cv2.resize(crop, (width, height), interpolation=interp))
    x, y, bw, bh = p.bbox
    box = ((x - x0) * scale, (y - y0) * scale, bw * scale, bh * scale)
    return patch, _clip_box(box, width, height)


def _tiny_in_scene(p: Photo) -> tuple[Array, Box]:
    patch, box = face_patch(p, 64, 0.25)
    scene = neutral_scene().copy()
    rng = np.random.default_rng(2000 + p.index)
    ph, pw = patch.shape[:2]
    px = int(rng.integers(64, SCENE_SIDE - 64 - pw))
    py = int(rng.integers(64, SCENE_SIDE - 64 - ph))
    scene[py : py + ph, px : px + pw] = patch
    return scene, (box[0] + px, box[1] + py, box[2], box[3])


#: (key, label, transform, target match rate)
TRANSFORMS: list[tuple[str, str, Transform, float]] = [
    ("none", "untransformed (baseline)", _identity, 0.95),
    ("blur2", "Gaussian blur sigma 2", _blur, 0.95),
    ("down4", "downscale 1/4 (area) and back (bilinear)", _down_up, 0.95),
    ("jpeg25", "JPEG quality 25", _jpeg, 0.95),
    ("gray", "grayscale", _gray, 0.95),
    ("rot+15", "rotate +15 deg (counter-clockwise)", _rotate(15.0), 0.95),
    ("rot-15", "rotate -15 deg (clockwise)", _rotate(-15.0), 0.95),
    ("flip", "horizontal flip", _flip, 0.95),
    ("crop10", "tight crop, 10% margin around the bbox", _tight_crop, 0.95),
    ("bright+40", "brightness +40% (x1.4, clipped)", _brightness(1.4), 0.95),
    ("bright-40", "brightness -40% (x0.6)", _brightness(0.6), 0.95),
    ("noise10", "Gaussian noise sigma 10", _noise, 0.95),
    ("tiny64", "face (25% margin) at 64 px wide in a 1024x1024 scene", _tiny_in_scene, 0.85),
]


# ---------------------------------------------------------------- speed canvases
def compose_canvas(photos: Sequence[Photo], widths: Sequence[int]) -> tuple[Array, list[Box]]:
    """Paste each photo's labelled face (cropped with 25% margin), scaled so that the face
    (labelled bbox) is ``widths[i]`` px wide, into a 1024x1024 neutral scene, on a grid of
    non-overlapping cells (one face: centred)."""
    scene = neutral_scene().copy()
    boxes: list[Box] = []
    cells = [(512, 512)] if len(photos) == 1 else [
        (170, 250), (512, 250), (854, 250), (300, 770), (724, 770)
    ]
    if len(photos) > len(cells):
        raise ValueError(f"at most {len(cells)} faces per canvas")
    for photo, width, (cx, cy) in zip(photos, widths, cells, strict=False):
        patch, box = face_patch(photo, width, 0.25, face_width=True)
        ph, pw = patch.shape[:2]
        x0 = min(max(0, cx - pw // 2), SCENE_SIDE - pw)
        y0 = min(max(0, cy - ph // 2), SCENE_SIDE - ph)
        scene[y0 : y0 + ph, x0 : x0 + pw] = patch
        boxes.append((box[0] + x0, box[1] + y0, box[2], box[3]))
    return scene, boxes
