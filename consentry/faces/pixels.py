"""Pixel normalisation: any decoded Pillow frame to ``H x W x 3`` uint8 RGB.

The colour half of :mod:`consentry.faces.images` (which decodes under its guards and
calls these on a loaded frame); nothing here reads files or opens images.

Invariants
----------
* Output is always ``H x W x 3`` ``uint8`` RGB; nothing is clipped that could be
  scaled. Anything with alpha or a transparency key (``RGBA``, ``LA``, ``PA``,
  ``P`` / ``L`` / ``RGB`` with ``tRNS``) is composited onto white by
  :func:`to_rgb`; 16-bit (``I;16*``) is scaled by ``255 / 65535`` with rounding;
  ``I`` is treated as 16-bit when its values fit ``0..65535`` and min-max
  stretched otherwise; ``F`` is scaled by 255 when it fits ``0..1``, taken as is
  when it fits ``0..255``, min-max stretched otherwise (NaN and infinities become
  0); other modes use Pillow's conversion, and a mode it cannot convert is an
  :class:`~consentry.errors.UnsupportedImageError`.
* :func:`frame_views` gives one ``"image"`` view for a frame without
  transparency, and otherwise every way a viewer could show it (over white, over
  black, ignoring alpha, the alpha plane; high-depth gray with a key: over white
  and ignoring the key).
* :func:`exif_orientation` never raises (a broken EXIF block means 1);
  :func:`orient` applies the same eight transforms as ``ImageOps.exif_transpose``.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image

from consentry.errors import UnsupportedImageError

__all__ = ["exif_orientation", "frame_has_alpha", "frame_views", "orient", "to_rgb"]

_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})

_U8 = npt.NDArray[np.uint8]


def frame_has_alpha(im: Image.Image) -> bool:
    """True if the loaded frame makes any pixel less than opaque."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return isinstance(im.info.get("transparency"), int) and im.mode != "F"
    if im.mode not in _ALPHA_MODES and not im.has_transparency_data:
        return False
    alpha = np.asarray(im.convert("RGBA"))[:, :, 3]
    return bool(alpha.size) and int(alpha.min()) < 255


def frame_views(im: Image.Image, label: str) -> list[tuple[str, _U8]]:
    """The views of one loaded frame (see :class:`FaceView`), not yet oriented."""
    if not frame_has_alpha(im):
        return [("image", to_rgb(im, label))]
    if im.mode.startswith("I;16") or im.mode == "I":
        keyed = _gray_high_depth_to_rgb(im)
        plain = _gray_high_depth_to_rgb(_without_key(im))
        return [("over-white", keyed), ("ignoring-alpha", plain)]
    rgba = np.asarray(im.convert("RGBA"))
    rgb, alpha = rgba[:, :, :3], rgba[:, :, 3]
    black = np.zeros_like(rgb)
    return [
        ("over-white", _over_white(rgb, alpha)),
        ("over-black", _over(rgb, alpha, black)),
        ("ignoring-alpha", np.ascontiguousarray(rgb)),
        ("alpha", np.repeat(alpha[:, :, np.newaxis], 3, axis=2)),
    ]


def _without_key(im: Image.Image) -> Image.Image:
    copy = im.copy()
    copy.info.pop("transparency", None)
    return copy


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8); 1 if absent, out of range or unreadable."""
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return 1  # a broken EXIF block does not make the pixels unusable
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8:
        return value
    return 1


def orient(rgb: _U8, orientation: int) -> _U8:
    """Apply an EXIF orientation, as ``ImageOps.exif_transpose`` would."""
    if orientation == 2:  # mirror horizontal (FLIP_LEFT_RIGHT)
        return rgb[:, ::-1]
    if orientation == 3:  # rotate 180
        return rgb[::-1, ::-1]
    if orientation == 4:  # mirror vertical (FLIP_TOP_BOTTOM)
        return rgb[::-1]
    if orientation == 5:  # TRANSPOSE (mirror along the main diagonal)
        return rgb.swapaxes(0, 1)
    if orientation == 6:  # rotate 90 clockwise (ROTATE_270)
        return np.rot90(rgb, k=-1)
    if orientation == 7:  # TRANSVERSE (mirror along the anti-diagonal)
        return rgb[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:  # rotate 90 counter-clockwise (ROTATE_90)
        return np.rot90(rgb, k=1)
    return rgb


# -- colour conversion -------------------------------------------------------


def to_rgb(im: Image.Image, label: str) -> _U8:
    """Convert a loaded frame of any mode to ``H x W x 3`` uint8 RGB."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _gray_high_depth_to_rgb(im)
    if mode in _ALPHA_MODES or im.has_transparency_data:
        rgba = np.asarray(im.convert("RGBA"))
        return _over_white(rgba[:, :, :3], rgba[:, :, 3])
    if mode == "RGB":
        return np.asarray(im)
    try:
        converted = im.convert("RGB")
    except ValueError as exc:
        raise UnsupportedImageError(
            f"{label}: colour mode {mode!r} cannot be converted to RGB"
        ) from exc
    return np.asarray(converted)


def _gray_high_depth_to_rgb(im: Image.Image) -> _U8:
    """16-bit, 32-bit integer and float gray to RGB, scaled (not clipped) to 8 bits."""
    raw = np.asarray(im)
    if im.mode == "F":
        gray = _float_to_u8(raw.astype(np.float64))
    elif raw.size and (int(raw.min()) < 0 or int(raw.max()) > 65535):
        gray = _stretch(raw.astype(np.float64))
    else:  # 16-bit range: 65535 -> 255, 32768 -> 128, rounded
        gray = ((raw.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    rgb = np.repeat(gray[:, :, np.newaxis], 3, axis=2)
    key = im.info.get("transparency")
    if im.mode != "F" and isinstance(key, int) and not isinstance(key, bool):
        alpha = np.where(raw == key, 0, 255).astype(np.uint8)
        return _over_white(rgb, alpha)
    return rgb


def _float_to_u8(values: npt.NDArray[np.float64]) -> _U8:
    finite = np.isfinite(values)
    clean = np.where(finite, values, 0.0)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    lo, hi = float(clean[finite].min()), float(clean[finite].max())
    if lo >= 0.0 and hi <= 1.0:
        return np.rint(clean * 255.0).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        return np.rint(clean).astype(np.uint8)
    return _stretch(clean)


def _stretch(values: npt.NDArray[np.float64]) -> _U8:
    """Min-max stretch to 0..255 (a constant image becomes 0)."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = np.rint((values - lo) * (255.0 / (hi - lo)))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _over_white(rgb: _U8, alpha: _U8) -> _U8:
    """Composite straight-alpha RGB onto a white background."""
    a = alpha.astype(np.uint16)[:, :, np.newaxis]
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _over(rgb: _U8, alpha: _U8, background: _U8) -> _U8:
    """Composite straight-alpha RGB onto ``background`` (same shape as ``rgb``)."""
    a = alpha.astype(np.uint16)[:, :, np.newaxis]
    out = (rgb.astype(np.uint16) * a + background.astype(np.uint16) * (255 - a) + 127) // 255
    return out.astype(np.uint8)
