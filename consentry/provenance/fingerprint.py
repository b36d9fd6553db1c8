"""Perceptual fingerprints of a released image: the ISCC image code and PDQ.

- ISCC Content-Code Image (``iscc-core``'s ``gen_image_code_v0``, 64 bits, ISO 24138):
  a DCT hash of the image as 32x32 grayscale, on the C2PA soft-binding algorithm
  list as ``io.iscc.v0`` (:data:`ISCC_ALG`).
- PDQ (``pdqhash``, Meta's 256-bit DCT hash, with a quality score 0..100), our
  second opinion; not on that list, so named :data:`PDQ_ALG` by us.

Both are computed on the final (watermarked) pixels: what is released is what is
fingerprinted.

Invariants
- :func:`fingerprint` is a pure function of the pixels (deterministic, no state).
- :func:`agrees` holds only when *both* distances are within their thresholds
  (:data:`ISCC_MAX_BITS` of 64, :data:`PDQ_MAX_BITS` of 256), measured by
  ``python -m bench marks`` (bench/README.md): the edits of the robustness matrix
  stay under them, unrelated photos lie far above.
- A fingerprint only says "looks like": it never recovers a release alone (a
  look-alike is not the release); recovery needs the watermark too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from consentry.errors import InputError

__all__ = [
    "ISCC_ALG",
    "ISCC_MAX_BITS",
    "PDQ_ALG",
    "PDQ_MAX_BITS",
    "Fingerprint",
    "agrees",
    "distances",
    "fingerprint",
    "iscc_bits",
    "iscc_code",
    "pdq_hash",
]

ISCC_ALG = "io.iscc.v0"
PDQ_ALG = "org.consentry.fingerprint.pdq.1"
ISCC_MAX_BITS = 8  # of 64 (see bench/README.md, "marks")
PDQ_MAX_BITS = 40  # of 256
PDQ_SIDE = 512  # pixels a side PDQ is computed at, at most


@dataclass(frozen=True)
class Fingerprint:
    """``iscc``: the ISCC code (``ISCC:...``); ``pdq``: 64 hex digits;
    ``pdq_quality``: PDQ's quality score (low on flat images)."""

    iscc: str
    pdq: str
    pdq_quality: int

    def to_json(self) -> dict[str, Any]:
        return {"iscc": self.iscc, "pdq": self.pdq, "pdq_quality": self.pdq_quality}

    @classmethod
    def from_json(cls, data: Any) -> Fingerprint:
        """From :meth:`to_json`'s form; InputError for anything else."""
        try:
            found = cls(str(data["iscc"]), str(data["pdq"]).lower(), int(data["pdq_quality"]))
            iscc_bits(found.iscc)
            bytes.fromhex(found.pdq)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a fingerprint: {data!r}") from exc
        if len(found.pdq) != 64:
            raise InputError(f"a PDQ hash is 64 hex digits: {found.pdq!r}")
        return found


def _rgb(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise InputError("a fingerprint is computed on RGB uint8 pixels (H, W, 3)")
    return pixels


def iscc_code(pixels: NDArray[np.uint8]) -> str:
    """The 64-bit ISCC Content-Code Image of RGB pixels (32x32 grayscale, bicubic)."""
    import iscc_core

    small = Image.fromarray(_rgb(pixels)).convert("L").resize((32, 32), Image.Resampling.BICUBIC)
    gray = [int(v) for v in np.asarray(small).reshape(-1)]
    return str(iscc_core.gen_image_code_v0(gray, bits=64)["iscc"])


def iscc_bits(code: str) -> int:
    """The 64-bit body of an ISCC image code, as an integer; ValueError otherwise."""
    import iscc_core

    body = iscc_core.Code(code)
    if body.maintype != iscc_core.MT.CONTENT or body.subtype != iscc_core.ST_CC.IMAGE:
        raise ValueError(f"not an ISCC image code: {code!r}")
    return int.from_bytes(body.hash_bytes, "big")


def pdq_hash(pixels: NDArray[np.uint8]) -> tuple[str, int]:
    """PDQ's 256-bit hash (hex) and quality score of RGB pixels, first shrunk (area) to
    at most :data:`PDQ_SIDE` pixels a side, as PDQ's reference advises (faster, same hash
    family: PDQ itself works on a 64x64 reduction)."""
    import pdqhash

    rgb = _rgb(pixels)
    height, width = rgb.shape[:2]
    scale = PDQ_SIDE / max(height, width)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
    bits, quality = pdqhash.compute(np.ascontiguousarray(rgb))
    packed = np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()
    return packed.hex(), int(quality)


def fingerprint(pixels: NDArray[np.uint8]) -> Fingerprint:
    """Both fingerprints of RGB uint8 pixels."""
    pdq, quality = pdq_hash(pixels)
    return Fingerprint(iscc_code(pixels), pdq, quality)


def distances(a: Fingerprint, b: Fingerprint) -> tuple[int, int]:
    """Hamming distances (ISCC bits of 64, PDQ bits of 256)."""
    iscc = (iscc_bits(a.iscc) ^ iscc_bits(b.iscc)).bit_count()
    pdq = (int(a.pdq, 16) ^ int(b.pdq, 16)).bit_count()
    return iscc, pdq


def agrees(a: Fingerprint, b: Fingerprint) -> bool:
    """Both distances within their thresholds (see the invariants)."""
    iscc, pdq = distances(a, b)
    return iscc <= ISCC_MAX_BITS and pdq <= PDQ_MAX_BITS
