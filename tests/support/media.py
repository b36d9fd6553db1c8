"""Sample media made in code (random pixels: no face in them)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["make_image"]


def make_image(fmt: str = "JPEG", seed: int = 0, size: int = 128) -> bytes:
    """An image of random pixels in ``fmt``, reproducible from ``seed``."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()
