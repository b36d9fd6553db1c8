"""An invisible watermark carrying a release id: DWT, DCT, SVD, decoded at a canonical size.

Our own implementation of the DWT-DCT-SVD family (``invisible-watermark``'s
``dwtDctSvd`` is the same idea; its package forces ``opencv-python`` beside our
``opencv-python-headless``, so it is not a dependency). Algorithm name in manifests:
:data:`WATERMARK_ALG`.

Embedding: the luma (YCrCb's Y) is resized to ``CANONICAL x CANONICAL``; its
one-level Haar DWT's LL band is cut into 4x4 blocks; each block's 2-D DCT has its
largest singular value quantized (quantization index modulation, step
:data:`STEP`) to carry one bit. The difference this makes at the canonical size is
resized back to the image's own size and added to its luma, so the image keeps its
size and aspect. Decoding resizes to the canonical size again, which is what lets a
resized copy decode.

The payload (:func:`encode_payload`): a 64-bit release id and a CRC-32 over it
(with a domain tag), 96 bits, whitened by a fixed mask. Each bit is carried by
about 10 blocks spread over the image by a fixed permutation; decoding sums each
bit's soft votes (majority), then checks the CRC.

Invariants
- A decode is exact or ``None``: a payload whose CRC fails returns ``None``, never
  an id (a random image passes the CRC with probability 2^-32 per decode).
- :func:`embed` checks its own work: the watermarked pixels, as returned (uint8),
  decode to the id given, or it raises ProvenanceError (an image too small or too
  flat to carry the mark).
- Deterministic: the same pixels and id give the same output; no key, no state.
- A watermark alone proves nothing: anyone can copy it onto another image. Recovery
  also requires the fingerprint (:mod:`consentry.provenance.fingerprint`) to agree.
"""

from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
import pywt
from numpy.typing import NDArray

from consentry.errors import InputError, ProvenanceError

__all__ = [
    "CANONICAL",
    "PAYLOAD_BITS",
    "STEP",
    "WATERMARK_ALG",
    "Decoded",
    "decode",
    "decode_payload",
    "embed",
    "encode_payload",
    "new_release_id",
]

WATERMARK_ALG = "org.consentry.watermark.dwtdctsvd.1"
CANONICAL = 256  # decode size, pixels a side
BLOCK = 4  # DCT block side in the LL band
STEP = 40.0  # quantization step of the largest singular value
_GAINS = (1.0, 1.1, 1.2, 1.3, 0.9, 0.8)  # luma gains a decode tries, in order
_TAG = b"consentry.watermark.1"
ID_BYTES = 8
PAYLOAD_BITS = 8 * (ID_BYTES + 4)  # id + CRC-32
_SEED = 0x436F6E73  # fixed: the permutation and whitening mask are public, not a key

_rng = np.random.default_rng(_SEED)
_MASK = _rng.integers(0, 2, PAYLOAD_BITS).astype(np.uint8)
_BLOCKS = (CANONICAL // 2 // BLOCK) ** 2
_BIT_OF_BLOCK = _rng.permutation(np.arange(_BLOCKS) % PAYLOAD_BITS)


def _dct_matrix(n: int) -> NDArray[np.float64]:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    m[0, :] = np.sqrt(1.0 / n)
    return np.asarray(m, dtype=np.float64)


_D = _dct_matrix(BLOCK)


@dataclass(frozen=True)
class Decoded:
    """A decode: ``release_id`` (hex, 16 digits) or None when the CRC failed, and
    ``margin``: the mean absolute soft vote per bit, 0 (noise) to 1 (clean)."""

    release_id: str | None
    margin: float


def new_release_id() -> str:
    """A fresh random 64-bit release id, in hex (chosen before the decision is logged)."""
    return secrets.token_hex(ID_BYTES)


def _crc(raw: bytes) -> bytes:
    return zlib.crc32(_TAG + raw).to_bytes(4, "big")


def encode_payload(release_id: str) -> NDArray[np.uint8]:
    """The 96 whitened bits carrying ``release_id`` (16 hex digits); InputError otherwise."""
    try:
        raw = bytes.fromhex(release_id)
    except ValueError as exc:
        raise InputError(f"a release id is 16 hex digits, not {release_id!r}") from exc
    if len(raw) != ID_BYTES:
        raise InputError(f"a release id is 16 hex digits, not {release_id!r}")
    bits = np.unpackbits(np.frombuffer(raw + _crc(raw), dtype=np.uint8))
    return np.asarray(bits ^ _MASK, dtype=np.uint8)


def decode_payload(bits: NDArray[np.uint8]) -> str | None:
    """The release id the bits carry, or None when their CRC does not check."""
    if bits.shape != (PAYLOAD_BITS,):
        return None
    data = np.packbits(np.asarray(bits, dtype=np.uint8) ^ _MASK).tobytes()
    raw, crc = data[:ID_BYTES], data[ID_BYTES:]
    return raw.hex() if _crc(raw) == crc else None


def _luma(pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise InputError("the watermark works on RGB uint8 pixels (H, W, 3)")
    ycc = cv2.cvtColor(pixels, cv2.COLOR_RGB2YCrCb)
    return np.asarray(ycc[:, :, 0], dtype=np.float32)


def _resize(plane: NDArray[np.float32], width: int, height: int) -> NDArray[np.float32]:
    shrink = width < plane.shape[1] or height < plane.shape[0]
    method = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(plane, (width, height), interpolation=method), np.float32)


def _blocks(ll: NDArray[np.float64]) -> NDArray[np.float64]:
    n = ll.shape[0] // BLOCK
    cut = ll.reshape(n, BLOCK, n, BLOCK).transpose(0, 2, 1, 3).reshape(-1, BLOCK, BLOCK)
    return np.asarray(_D @ cut @ _D.T)


def _unblocks(coeffs: NDArray[np.float64]) -> NDArray[np.float64]:
    n = int(np.sqrt(coeffs.shape[0]))
    spatial = _D.T @ coeffs @ _D
    tiles = spatial.reshape(n, n, BLOCK, BLOCK).transpose(0, 2, 1, 3)
    return np.asarray(tiles.reshape(n * BLOCK, -1))


def _soft_votes(canonical: NDArray[np.float32]) -> NDArray[np.float64]:
    ll, _ = pywt.dwt2(canonical.astype(np.float64), "haar")
    singular = np.linalg.svd(_blocks(ll), compute_uv=False)[:, 0]
    phase = (singular / STEP) % 1.0
    return np.asarray(np.sin(2 * np.pi * phase))  # +1: bit 0, -1: bit 1


def _decode_votes(votes: NDArray[np.float64]) -> Decoded:
    sums = np.bincount(_BIT_OF_BLOCK, weights=votes, minlength=PAYLOAD_BITS)
    counts = np.bincount(_BIT_OF_BLOCK, minlength=PAYLOAD_BITS)
    bits = (sums < 0).astype(np.uint8)
    return Decoded(decode_payload(bits), float(np.mean(np.abs(sums) / counts)))


def decode(pixels: NDArray[np.uint8]) -> Decoded:
    """Decode the release id from RGB pixels at the canonical size (see the invariants).

    A brightness or contrast change scales the luma, and the singular values with
    it: the decode undoes each gain of :data:`_GAINS` in turn and keeps the first
    that passes the CRC (so a random image passes with probability 6 x 2^-32)."""
    canonical = _resize(_luma(pixels), CANONICAL, CANONICAL)
    best = Decoded(None, 0.0)
    for gain in _GAINS:
        found = _decode_votes(_soft_votes(canonical / gain))
        if found.release_id is not None:
            return found
        best = found if gain == 1.0 else best
    return best


def _marked_canonical(
    canonical: NDArray[np.float32], bits: NDArray[np.uint8]
) -> NDArray[np.float32]:
    ll, details = pywt.dwt2(canonical.astype(np.float64), "haar")
    u, s, vt = np.linalg.svd(_blocks(ll))
    offset = np.where(bits[_BIT_OF_BLOCK] == 0, 0.25, 0.75)
    s[:, 0] = (np.floor(s[:, 0] / STEP) + offset) * STEP
    coeffs = (u * s[:, None, :]) @ vt
    return np.asarray(pywt.idwt2((_unblocks(coeffs), details), "haar"), np.float32)


def embed(pixels: NDArray[np.uint8], release_id: str) -> NDArray[np.uint8]:
    """RGB uint8 pixels carrying ``release_id`` (same size); see the invariants."""
    bits = encode_payload(release_id)
    height, width = pixels.shape[:2]
    ycc = cv2.cvtColor(pixels, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    luma = ycc[:, :, 0]
    canonical = _resize(luma, CANONICAL, CANONICAL)
    residual = _marked_canonical(canonical, bits) - canonical
    ycc[:, :, 0] = luma + _resize(residual, width, height)
    out = cv2.cvtColor(np.clip(np.rint(ycc), 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)
    result = np.asarray(out, dtype=np.uint8)
    if decode(result).release_id != release_id:
        raise ProvenanceError(
            f"a {width}x{height} image cannot carry the watermark (it does not decode back)"
        )
    return result
