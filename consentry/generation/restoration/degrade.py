"""The degradation (forward) model of face-restoration experiments, and data consistency.

A low-resolution observation ``y`` of a high-resolution RGB face ``x`` is modelled as::

    y = JPEG_q( quantise( A(x) + n ) ),   A = D_s o G_sigma,   n ~ N(0, noise_sigma^2)

where ``G_sigma`` is a Gaussian blur, ``D_s`` an area downscale by the integer
factor ``s`` (the mean of each ``s x s`` block), ``n`` i.i.d. Gaussian noise per
pixel and channel, ``quantise`` rounds and clips to uint8, and ``JPEG_q`` is a
JPEG encode/decode round trip at quality ``q``. :meth:`Degradation.apply` makes
``y``; :meth:`Degradation.forward` is the noise-free linear operator ``A``;
:func:`consistency_error` measures how well a restored face explains an
observation.

Invariants
- Units: every array is RGB ``H x W x 3`` in 0..255 units; ``apply`` takes and
  returns uint8, ``forward`` returns float32 (not rounded, not clipped).
- Sides must be multiples of ``scale``: the output is exactly
  ``(H / scale, W / scale)``; nothing is cropped or padded silently.
- ``apply`` is a pure function of (degradation, image): the noise comes from a
  fresh ``numpy.random.default_rng(seed)`` on every call, so repeated calls give
  identical bytes and different seeds give different noise.
- ``forward`` is linear, shift-free and preserves constants: ``A(c) = c`` for a
  constant image (normalised kernel, reflect-101 borders, block means).
- ``apply`` and ``forward`` share one code path for blur and downscale, so with
  ``noise_sigma == 0`` and ``jpeg_quality is None``,
  ``apply(x) == round(clip(forward(x), 0, 255))`` exactly.
- ``blur_sigma == 0`` means no blur; ``noise_sigma == 0`` means no noise;
  ``jpeg_quality is None`` means no JPEG round trip. The JPEG is written by
  Pillow, baseline, 4:2:0 chroma subsampling, not optimised.
- ``consistency_error`` is the RMS of ``forward(restored) - low_res`` over all
  pixels and channels, in 0..255 units. It does not go to zero for the truth:
  a true face leaves the noise and JPEG error (about ``noise_sigma`` and a few
  levels more); a restoration pushed below that is fitting noise.
- Bad arrays raise :class:`~consentry.errors.ImageError`; bad parameters
  :class:`~consentry.errors.InputError`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from consentry.errors import ImageError, InputError

__all__ = [
    "Degradation",
    "FloatImage",
    "UInt8Image",
    "consistency_error",
    "jpeg_roundtrip",
    "rgb_float",
    "rgb_uint8",
]

UInt8Image = npt.NDArray[np.uint8]
FloatImage = npt.NDArray[np.float32]


def rgb_uint8(image: object, what: str = "image") -> UInt8Image:
    """``image`` as a C-contiguous ``H x W x 3`` uint8 array, or :class:`ImageError`."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"{what} must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"{what} must be H x W x 3 (RGB), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"{what} is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


def rgb_float(image: object, what: str = "image") -> FloatImage:
    """A uint8 or finite floating ``H x W x 3`` array as float32 (0..255 units), or ImageError."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.dtype == np.uint8:
        return rgb_uint8(image, what).astype(np.float32)
    if not np.issubdtype(image.dtype, np.floating):
        raise ImageError(f"{what} must be uint8 or floating RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"{what} must be H x W x 3 (RGB), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"{what} is empty: shape {image.shape}")
    out: FloatImage = np.ascontiguousarray(image, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ImageError(f"{what} has non-finite values")
    return out


@dataclass(frozen=True)
class Degradation:
    """Blur, area downscale, noise and JPEG: one fixed, seeded degradation.

    The defaults are the x8 setting of DESIGN section 5 (128 px faces to 16 px):
    blur sigma 2, noise sigma 5 (0..255 units), JPEG quality 50.
    """

    scale: int = 8
    blur_sigma: float = 2.0
    noise_sigma: float = 5.0
    jpeg_quality: int | None = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, int) or self.scale < 1:
            raise InputError(f"scale must be a positive integer, got {self.scale!r}")
        for name in ("blur_sigma", "noise_sigma"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
        q = self.jpeg_quality
        if q is not None and (isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 95):
            raise InputError(f"jpeg_quality must be None or an integer in 1..95, got {q!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}")

    # -- geometry --------------------------------------------------------------

    def low_res_shape(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` of the observation of a ``height x width`` image."""
        if height < 1 or width < 1 or height % self.scale or width % self.scale:
            raise ImageError(
                f"image sides must be positive multiples of scale {self.scale}, "
                f"got {height} x {width}"
            )
        return height // self.scale, width // self.scale

    # -- the operators ---------------------------------------------------------

    def _blur_downscale(self, image: FloatImage) -> FloatImage:
        """``A(image)``: blur then block-mean downscale, float32, on a validated float image."""
        height, width = image.shape[:2]
        low_h, low_w = self.low_res_shape(height, width)
        blurred = image
        if self.blur_sigma > 0:
            radius = math.ceil(3.0 * self.blur_sigma)
            ksize = 2 * radius + 1
            blurred = np.asarray(
                cv2.GaussianBlur(
                    image,
                    (ksize, ksize),
                    sigmaX=float(self.blur_sigma),
                    sigmaY=float(self.blur_sigma),
                    borderType=cv2.BORDER_REFLECT_101,
                ),
                dtype=np.float32,
            )
        s = self.scale
        blocks = blurred.reshape(low_h, s, low_w, s, 3).astype(np.float64)
        out: FloatImage = blocks.mean(axis=(1, 3)).astype(np.float32)
        return out

    def forward(self, image: npt.NDArray[np.generic]) -> FloatImage:
        """The noise-free forward operator ``A = D_s o G_sigma``: float32, 0..255 units.

        Accepts uint8 or floating RGB. Used to check a restored image against
        the observation it should explain (see :func:`consistency_error`).
        """
        return self._blur_downscale(rgb_float(image))

    def apply(self, image: npt.NDArray[np.uint8]) -> UInt8Image:
        """The full degradation of a uint8 RGB image: blur, downscale, noise, JPEG.

        Deterministic: the same degradation and image always give the same bytes.
        """
        rgb = rgb_uint8(image)
        low = self._blur_downscale(rgb.astype(np.float32))
        if self.noise_sigma > 0:
            rng = np.random.default_rng(self.seed)
            noise = rng.normal(0.0, float(self.noise_sigma), size=low.shape)
            low = (low.astype(np.float64) + noise).astype(np.float32)
        quantised: UInt8Image = np.clip(np.rint(low), 0, 255).astype(np.uint8)
        if self.jpeg_quality is None:
            return quantised
        return jpeg_roundtrip(quantised, self.jpeg_quality)


def jpeg_roundtrip(image: UInt8Image, quality: int) -> UInt8Image:
    """Encode ``image`` as a baseline 4:2:0 JPEG at ``quality`` with Pillow and decode it."""
    buffer = io.BytesIO()
    Image.fromarray(rgb_uint8(image)).save(
        buffer, format="JPEG", quality=int(quality), subsampling=2, optimize=False
    )
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        out: UInt8Image = np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()
    return out


def consistency_error(
    restored: npt.NDArray[np.generic],
    low_res: npt.NDArray[np.generic],
    degradation: Degradation,
) -> float:
    """RMS of ``degradation.forward(restored) - low_res`` in 0..255 units.

    ``restored`` must be exactly ``scale`` times ``low_res`` in both sides. A
    true face scores about the noise + JPEG level of the observation, not zero.
    """
    high = rgb_float(restored, "restored image")
    low = rgb_float(low_res, "low-resolution image")
    expected = degradation.low_res_shape(high.shape[0], high.shape[1])
    if low.shape[:2] != expected:
        raise ImageError(
            f"restored image {high.shape[1]} x {high.shape[0]} at scale {degradation.scale} "
            f"maps to {expected[1]} x {expected[0]}, but the low-resolution image is "
            f"{low.shape[1]} x {low.shape[0]}"
        )
    diff = degradation.forward(high).astype(np.float64) - low.astype(np.float64)
    return float(np.sqrt(np.mean(diff * diff)))
