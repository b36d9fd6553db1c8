"""Images for ``bench/provenance.py``: photo-like JPEGs, face canvases, landscapes, manifest.

Everything is generated from the photos shipped in ``consentry/data/faces`` (public
domain, see its SOURCES.md) and seeded noise, so the benchmark runs on a fresh clone.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from consentry.provenance.c2pa_io import minimal_manifest

SHIPPED = Path(__file__).resolve().parent.parent / "consentry" / "data" / "faces"
PHOTOS = ("obama.jpg", "obama2.jpg", "biden.jpg", "astronaut.jpg")
JPEG_QUALITY = 90
CANVAS_SIDE = 1024  # 1024 x 1024 = 1.05 megapixels
TDM_ENTRIES = (
    "cawg.ai_generative_training",
    "cawg.ai_inference",
    "cawg.ai_training",
    "cawg.data_mining",
)

Array = np.ndarray


def jpeg(pixels: Array, quality: int = JPEG_QUALITY) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(
        out, "JPEG", quality=quality
    )
    return out.getvalue()


def _open(name: str) -> Image.Image:
    with Image.open(SHIPPED / name) as image:
        return image.convert("RGB")


def _grain(pixels: Array, sigma: float, rng: np.random.Generator) -> Array:
    noisy = pixels.astype(np.float32) + rng.normal(0.0, sigma, pixels.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def photo_like(side: int, seed: int = 0) -> bytes:
    """``obama.jpg``, centre-cropped square, resized (Lanczos) to ``side``, sensor-like
    grain (sigma 2.5), JPEG quality 90: content that compresses like a photograph."""
    image = _open("obama.jpg")
    short = min(image.size)
    left, top = (image.width - short) // 2, (image.height - short) // 2
    square = image.crop((left, top, left + short, top + short))
    resized = np.asarray(square.resize((side, side), Image.Resampling.LANCZOS))
    return jpeg(_grain(resized, 2.5, np.random.default_rng(seed)))


def _smooth_field(rng: np.random.Generator, side: int, cells: int, amplitude: float) -> Array:
    """Low-frequency noise: a ``cells x cells`` random grid upscaled bicubically."""
    grid = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
    image = Image.fromarray(grid, mode="F").resize((side, side), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32) * amplitude


def backdrop(rng: np.random.Generator, side: int = CANVAS_SIDE) -> Array:
    """A studio-like backdrop: a two-colour diagonal gradient, mottling and grain."""
    a, b = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    ramp = np.add.outer(np.arange(side), np.arange(side)).astype(np.float32) / (2 * side - 2)
    pixels = a + (b - a) * ramp[..., None]
    pixels += _smooth_field(rng, side, 6, 12.0)[..., None]
    return _grain(np.clip(pixels, 0, 255), 4.0, rng)


def face_canvas(index: int, side: int = CANVAS_SIDE) -> Array:
    """One or two shipped photos (alternating) pasted whole onto a backdrop.

    One photo: its longer side 700-900 px; two: 480-560 px each, one per half."""
    rng = np.random.default_rng(1000 + index)
    canvas = backdrop(rng, side)
    count = 1 + index % 2
    names = [PHOTOS[(index + k) % len(PHOTOS)] for k in range(count)]
    slot = side // count
    for k, name in enumerate(names):
        photo = _open(name)
        longest = int(rng.integers(700, 901)) if count == 1 else int(rng.integers(480, 561))
        scale = longest / max(photo.size)
        full = (round(photo.width * scale), round(photo.height * scale))
        width, height = min(full[0], slot), min(full[1], side)
        pasted = np.asarray(photo.resize(full, Image.Resampling.LANCZOS))[:height, :width]
        x = k * slot + int(rng.integers(0, slot - width + 1))
        y = int(rng.integers(0, side - height + 1))
        canvas[y : y + height, x : x + width] = pasted
    return canvas


def landscape(index: int, side: int = CANVAS_SIDE) -> Array:
    """A face-free landscape: sky gradient, rolling horizon, ground, texture and grain."""
    rng = np.random.default_rng(5000 + index)
    rows = np.arange(side, dtype=np.float32)[:, None]
    cols = np.arange(side, dtype=np.float32)[None, :]
    horizon = side * rng.uniform(0.35, 0.65) + side * 0.06 * np.sin(
        cols / side * rng.uniform(2, 9) + rng.uniform(0, 6.3)
    )
    sky_top, sky_low = rng.uniform([20, 60, 140], [90, 130, 230]), rng.uniform(150, 235, 3)
    ground_near, ground_far = rng.uniform([30, 50, 10], [110, 130, 60]), rng.uniform(60, 150, 3)
    t_sky = np.clip(rows / np.maximum(horizon, 1), 0, 1)[..., None]
    t_ground = np.clip((rows - horizon) / np.maximum(side - horizon, 1), 0, 1)[..., None]
    sky = sky_top + (sky_low - sky_top) * t_sky
    ground = ground_far + (ground_near - ground_far) * t_ground
    pixels = np.where((rows < horizon)[..., None], sky, ground)
    pixels += _smooth_field(rng, side, 12, 14.0)[..., None]
    pixels += _smooth_field(rng, side, 64, 6.0)[..., None]
    return _grain(np.clip(pixels, 0, 255), 5.0, rng)


def manifest(title: str = "generated portrait") -> dict[str, Any]:
    """A definition shaped like Consentry's outputs: c2pa.actions.v2 created by a trained
    model, every CAWG training/mining use notAllowed, and a consent assertion."""
    return minimal_manifest(
        title,
        "consentry/0.1.0",
        assertions=[
            {
                "label": "cawg.training-mining",
                "data": {"entries": {name: {"use": "notAllowed"} for name in TDM_ENTRIES}},
            },
            {
                "label": "org.consentry.consent",
                "data": {
                    "grant_id": "grt_5f0c1d2e3a4b5c6d7e8f",
                    "subject_id": "sub_0a1b2c3d4e5f60718293",
                    "purposes": ["restore"],
                    "decision": "allow",
                    "log_index": 42,
                },
            },
        ],
        format="image/jpeg",
    )
