"""Labelled calibration sets built from the shipped photos (no external data).

Four shipped photos of three people are too few to calibrate on (that is the
point of the calibration gate); deterministic variants of each photo (mirror,
brightness, contrast, a small rotation, a crop) give a set with enough pairs
for a coarse target FMR. Genuine pairs between variants of one photo are easy,
so such a set only exercises the counting and checking rules; real calibration
uses real photos (shared/faces).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"

# the shipped photos by identity
PEOPLE: dict[str, list[str]] = {
    "obama": ["obama.jpg", "obama2.jpg"],
    "biden": ["biden.jpg"],
    "collins": ["astronaut.jpg"],
}


_SIDE = 400


def _crop(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((w // 20, h // 20, w - w // 20, h - h // 20))


VARIANTS: list[Callable[[Image.Image], Image.Image]] = [
    lambda im: im,
    ImageOps.mirror,
    lambda im: ImageEnhance.Brightness(im).enhance(0.8),
    lambda im: ImageOps.mirror(ImageEnhance.Brightness(im).enhance(1.2)),
    lambda im: im.rotate(4, resample=Image.Resampling.BILINEAR, fillcolor=(128, 128, 128)),
    lambda im: ImageOps.mirror(ImageEnhance.Contrast(im).enhance(0.8)),
    _crop,
    lambda im: ImageOps.mirror(_crop(im)),
]


def labelled_set(folder: Path, variants: int, people: Mapping[str, Sequence[str]] = PEOPLE) -> Path:
    """Write ``folder/<identity>/<photo>_<i>.jpg``, ``variants`` per shipped photo."""
    if not 1 <= variants <= len(VARIANTS):
        raise ValueError(f"1..{len(VARIANTS)} variants")
    for identity, names in people.items():
        (folder / identity).mkdir(parents=True, exist_ok=True)
        for name in names:
            with Image.open(DATA / name) as opened:
                image = opened.convert("RGB")
            image.thumbnail((_SIDE, _SIDE))  # small files: quick to embed
            for i, make in enumerate(VARIANTS[:variants]):
                make(image).save(folder / identity / f"{Path(name).stem}_{i}.jpg", quality=92)
    return folder
