"""The demo's comparison: six ways to see one degraded face, scored against the truth.

``consentry demo`` restores a held-out photo degraded until its face is about 14 px
wide. :func:`compare` puts that restoration (the signed output, made with the
subject's own photos) beside what a method that does not know who it is can do, and
beside what a prior of the *wrong* person paints, all in the output's frame:

1. the input, enlarged by nearest neighbour (what the gateway was given);
2. bicubic;
3. Real-ESRGAN x4plus (x4, then bicubic x2 for the demo's x8);
4. another person's photos: the same exemplar method with Joe Biden's shipped photo,
   aligned as enrollment aligns it;
5. the subject's own photos: the gateway's signed output;
6. the truth, the held-out photo at the output's scale.

Invariants
- Only panel 5 went through the gateway. Panels 2-4 are unsigned comparisons made in
  memory from the demo's own input and shipped public-domain photos; panel 4 never
  reads Biden's vault photos or any prior: it is not a restoration released under a
  grant (the gateway refuses it: a restore may show only its prior's subject) and it
  is never written on its own, only inside ``comparison.png``.
- Every panel is scored at the same geometry: the truth's five landmarks carried into
  the panel's frame, aligned into the 256 px enrollment frame, embedded without
  detection (:mod:`consentry.generation.restoration.metrics`), cosine to the aligned
  truth, by SFace and by dlib. The truth panel is the truth resampled: it scores near 1.
- A panel that cannot be made (Real-ESRGAN's package missing) is drawn blank and
  labelled unavailable, with no scores; the others are unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from consentry.faces.engine import FaceEngine, align_by_landmarks, sort_faces
from consentry.generation.restoration.exemplar import EXEMPLAR_SIZE, EXEMPLAR_TEMPLATE

__all__ = [
    "ENGINES",
    "PANEL_KEYS",
    "Panel",
    "carry_landmarks",
    "draw_comparison",
    "largest_landmarks",
    "panel_seams",
    "score_panels",
]

U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]

ENGINES: tuple[str, ...] = ("sface", "dlib")
PANEL_KEYS: tuple[str, ...] = (
    "input",
    "bicubic",
    "realesrgan",
    "other_person",
    "restored",
    "truth",
)
_TILE = 224
_LABEL_H = 16
_SCORE_H = 30
_GAP = 6


@dataclass
class Panel:
    """One panel: what it shows (``image`` in the output frame, or None when it could
    not be made, ``note`` saying why) and its identity scores (engine -> cosine)."""

    key: str
    label: str
    image: U8 | None
    scores: dict[str, float]
    note: str = ""

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, **self.scores} | ({"note": self.note} if self.note else {})


def largest_landmarks(engine: FaceEngine, image: U8) -> F64:
    """The five landmarks of the largest face the engine finds, or ValueError."""
    faces = sort_faces(engine.detect(image))
    if not faces or faces[0].landmarks is None:
        raise ValueError("no face found")
    return np.asarray(faces[0].landmarks, dtype=np.float64)


def carry_landmarks(
    points: F64,
    truth_shape: tuple[int, int],
    low_shape: tuple[int, int],
    crop: Sequence[float],
    scale: float,
) -> F64:
    """Landmarks of the truth (pixel coordinates) in the output frame: the input is the
    truth resized to ``low_shape`` (H, W), the output ``crop`` of it at ``scale``;
    pixel centres map to pixel centres."""
    ratio = np.array([low_shape[1] / truth_shape[1], low_shape[0] / truth_shape[0]])
    in_low = (points + 0.5) * ratio - 0.5
    out: F64 = (in_low - np.array([float(crop[0]), float(crop[1])]) + 0.5) * scale - 0.5
    return out


def _aligned(image: U8, points: F64) -> U8:
    return np.asarray(align_by_landmarks(image, points, EXEMPLAR_SIZE, EXEMPLAR_TEMPLATE))


def score_panels(
    panels: Sequence[Panel],
    points: F64,
    reference: U8,
    engines: dict[str, FaceEngine],
) -> None:
    """Fill each made panel's scores: cosine to the aligned ``reference`` per engine,
    the panel aligned by ``points`` (its frame's landmarks)."""
    from consentry.generation.restoration.metrics import embed_aligned, identity_similarity

    truth_vectors = {name: embed_aligned(reference, engine) for name, engine in engines.items()}
    for panel in panels:
        if panel.image is None:
            continue
        face = _aligned(panel.image, points)
        for name, engine in engines.items():
            vector = embed_aligned(face, engine)
            panel.scores[name] = round(identity_similarity(vector, truth_vectors[name]), 4)


def panel_seams(
    panels: Sequence[Panel], points: F64, keys: Sequence[str] = ("other_person", "restored")
) -> dict[str, float]:
    """Seam ratio (:func:`~consentry.generation.restoration.metrics.seam_ratio`) of the
    exemplar panels' detail over the bicubic panel, aligned by ``points``."""
    from consentry.generation.restoration.metrics import seam_ratio, seam_weights

    by_key = {panel.key: panel for panel in panels}
    base = by_key["bicubic"].image
    if base is None:
        return {}
    boundary, interior = seam_weights(EXEMPLAR_SIZE)
    flat = _aligned(base, points)
    out: dict[str, float] = {}
    for key in keys:
        image = by_key[key].image if key in by_key else None
        if image is not None:
            out[key] = round(seam_ratio(_aligned(image, points), flat, boundary, interior), 4)
    return out


def _tile(image: U8 | None) -> Image.Image:
    if image is None:
        return Image.new("RGB", (_TILE, _TILE), (64, 64, 64))
    height, width = image.shape[:2]
    k = _TILE / max(height, width)
    size = (max(1, round(width * k)), max(1, round(height * k)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
    tile = Image.new("RGB", (_TILE, _TILE), (255, 255, 255))
    tile.paste(Image.fromarray(np.ascontiguousarray(resized)), ((_TILE - size[0]) // 2, 0))
    return tile


def draw_comparison(panels: Sequence[Panel], target: Path, title: str) -> None:
    """Write the panels side by side as a PNG: a title line, then per panel its label
    above and its scores below (PIL's default font)."""
    font = ImageFont.load_default()
    width = len(panels) * (_TILE + _GAP) + _GAP
    height = _LABEL_H + _GAP + _LABEL_H + _TILE + _SCORE_H + _GAP
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((_GAP, 2), title, fill=(0, 0, 0), font=font)
    top = _LABEL_H + _GAP
    for i, panel in enumerate(panels):
        x = _GAP + i * (_TILE + _GAP)
        draw.text((x, top + 2), panel.label, fill=(0, 0, 0), font=font)
        sheet.paste(_tile(panel.image), (x, top + _LABEL_H))
        lines = [f"{name} {panel.scores[name]:.3f}" for name in ENGINES if name in panel.scores]
        if not lines:
            lines = [panel.note or "not scored"]
        below = "   ".join(lines[:2]) if panel.scores else lines[0]
        draw.text((x, top + _LABEL_H + _TILE + 4), below, fill=(0, 0, 0), font=font)
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target, format="PNG")
