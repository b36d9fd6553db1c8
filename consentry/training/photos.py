"""The subject's photos, made ready for training, in memory only.

Photos are decrypted enrollment photos (or, for a library caller, images it
holds). :func:`prepare_photos` checks and squares them; the trainer then
VAE-encodes the arrays.

Invariants
----------
* Photos never touch the disk: nothing here (or downstream) writes their
  pixels or anything derived from them except the trained weights and, in
  checkpoint metadata, :func:`pixels_sha256` (a digest used to refuse a resume
  with other photos).
* A photo is a PIL image or an ``(H, W, 3)`` ``uint8`` RGB array of at most
  64 megapixels; at most 1,000 photos; anything else is an
  :class:`~consentry.errors.ImageError` or :class:`~consentry.errors.InputError`.
* Photos are centre-cropped to a square and resized (LANCZOS) to the training
  resolution, never upscaled: a shorter side below it is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from consentry.errors import ImageError, InputError

__all__ = ["MAX_PHOTOS", "Photo", "PhotoArray", "pixels_sha256", "prepare_photos"]

Photo = np.ndarray[Any, Any] | Image.Image
"""A subject photo in memory: a PIL image, or an ``(H, W, 3)`` ``uint8`` RGB array."""

PhotoArray = np.ndarray[Any, np.dtype[np.uint8]]
"""A prepared photo: a square ``(resolution, resolution, 3)`` ``uint8`` RGB array."""

MAX_PHOTOS = 1000
_MAX_PHOTO_PIXELS = 64_000_000
_PIXELS_FORMAT = b"consentry-train-photos/1\n"


def _photo_image(photo: Photo, index: int) -> Image.Image:
    if isinstance(photo, Image.Image):
        if photo.width * photo.height > _MAX_PHOTO_PIXELS:
            raise ImageError(f"photo {index} has too many pixels ({photo.width}x{photo.height})")
        return photo.convert("RGB")
    if isinstance(photo, np.ndarray):
        if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
            raise ImageError(
                f"photo {index} must be an (H, W, 3) uint8 RGB array, "
                f"not {photo.dtype} {photo.shape}"
            )
        if photo.shape[0] * photo.shape[1] > _MAX_PHOTO_PIXELS:
            raise ImageError(f"photo {index} has too many pixels {photo.shape[:2]}")
        return Image.fromarray(np.ascontiguousarray(photo), mode="RGB")
    raise ImageError(f"photo {index} is a {type(photo).__name__}, not a PIL image or array")


def _square(image: Image.Image, resolution: int) -> PhotoArray:
    """Centre-crop to a square and resize to ``resolution`` (LANCZOS), as uint8 RGB."""
    side = min(image.size)
    left = (image.width - side) // 2
    top = (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    if side != resolution:
        square = square.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(square, dtype=np.uint8)


def prepare_photos(photos: Sequence[Photo], resolution: int) -> list[PhotoArray]:
    """Check ``photos`` and return each as a ``resolution`` square (see the invariants)."""
    if isinstance(photos, str | bytes | np.ndarray | Image.Image) or not isinstance(
        photos, Sequence
    ):
        raise InputError("photos must be a list of in-memory images")
    if not photos:
        raise InputError("no photos: a prior needs at least one photo of the subject")
    if len(photos) > MAX_PHOTOS:
        raise InputError(f"too many photos ({len(photos)}, at most {MAX_PHOTOS})")
    prepared = []
    for index, photo in enumerate(photos):
        image = _photo_image(photo, index)
        if min(image.size) < resolution:
            raise ImageError(
                f"photo {index} is {image.width}x{image.height}: its shorter side must be at "
                f"least the training resolution {resolution} (photos are never upscaled)"
            )
        prepared.append(_square(image, resolution))
    return prepared


def pixels_sha256(arrays: Sequence[PhotoArray]) -> str:
    """A SHA-256 over the prepared pixels, in order (what a checkpoint binds to)."""
    digest = hashlib.sha256(_PIXELS_FORMAT)
    for array in arrays:
        digest.update(len(array.tobytes()).to_bytes(8, "big"))
        digest.update(array.tobytes())
    return digest.hexdigest()
