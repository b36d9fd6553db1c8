"""Fidelity metrics for restored faces: identity, pixel fidelity, copying.

Identity alone rewards copying an exemplar (DESIGN section 5), so results are judged
on four things together: identity by the embedder the method used *and* by one it did
not (:func:`identity_similarity` with ``"sface"`` and ``"dlib"``), pixel fidelity to
the truth (:func:`psnr`, :func:`ssim`), and a copy score (:func:`copy_score`): is the
output closer to an exemplar than the real face is? Pasted detail is also checked for
seams (:func:`seam_ratio`).

Invariants
- Images are ``H x W x 3`` ``uint8`` RGB; two images compared pixel-wise must have the
  same shape (else :class:`ImageError`).
- "Aligned" images are faces in the 256 px enrollment frame
  (:func:`consentry.faces.quality.align_exemplar`, any square size: coordinates scale).
  They are embedded without detection, at the frame's known geometry: SFace (or any
  landmark-driven engine) at :data:`EXEMPLAR_TEMPLATE`, dlib from its face box
  :data:`DLIB_BOX` (dlib re-fits its own five points inside the box). So every method's
  output is measured at the same geometry, even one in which a detector would fail.
- Similarities are cosines of unit embeddings of one engine, in ``[-1, 1]``.
- :func:`psnr` of identical images is ``inf``; :func:`ssim` of identical images is
  exactly ``1.0``. SSIM is Wang et al. (2004): 11 x 11 Gaussian window, sigma 1.5,
  ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``, on the BT.601 luma by default (mean of the
  per-channel SSIMs with ``gray=False``), valid region only (no padding).
- Both take an optional ``mask`` of pixel weights. Whole-frame numbers of aligned faces
  are dominated by background (and by black where the frame runs off the photo, which a
  generic upscaler reproduces cleanly); :func:`face_weights` gives the face region.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from consentry.errors import ImageError, InputError
from consentry.faces.engine import Face, FaceEngine, FloatArray, cosine
from consentry.faces.engines import get_engine
from consentry.generation.restoration.exemplar import EXEMPLAR_SIZE, EXEMPLAR_TEMPLATE, face_mask

__all__ = [
    "DLIB_BOX",
    "CopyScore",
    "aligned_face",
    "copy_score",
    "embed_aligned",
    "face_weights",
    "identity_similarity",
    "psnr",
    "seam_ratio",
    "seam_weights",
    "ssim",
]

U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]

DLIB_BOX: tuple[float, float, float, float] = (73.0, 92.0, 108.0, 107.0)
"""Where dlib's HOG detector puts the face box in the 256 px exemplar frame (mean over
the 126 aligned photos of shared/faces; spread about 6 px)."""

_SSIM_K1, _SSIM_K2, _SSIM_SIGMA, _SSIM_WINDOW = 0.01, 0.03, 1.5, 11


def _rgb(image: object, what: str) -> U8:
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
        or min(image.shape[:2]) < 1
    ):
        shape = getattr(image, "shape", None)
        raise ImageError(f"{what} must be an H x W x 3 uint8 RGB array, got {shape}")
    out: U8 = np.ascontiguousarray(image)
    return out


def _pair(a: object, b: object) -> tuple[U8, U8]:
    first, second = _rgb(a, "first image"), _rgb(b, "second image")
    if first.shape != second.shape:
        raise ImageError(f"images differ in shape: {first.shape} vs {second.shape}")
    return first, second


def _engine(engine: FaceEngine | str) -> FaceEngine:
    return get_engine(engine) if isinstance(engine, str) else engine


def aligned_face(size: int) -> Face:
    """The :class:`Face` record of an exemplar-frame image of side ``size``: landmarks at
    the template and dlib's customary box, scaled to ``size``."""
    k = size / EXEMPLAR_SIZE
    x, y, w, h = DLIB_BOX
    return Face(
        bbox=(x * k, y * k, w * k, h * k), landmarks=(EXEMPLAR_TEMPLATE + 0.5) * k - 0.5, score=1.0
    )


def embed_aligned(image: U8, engine: FaceEngine | str = "sface") -> FloatArray:
    """Unit embedding of an aligned (exemplar-frame, square) face, without detection."""
    rgb = _rgb(image, "image")
    if rgb.shape[0] != rgb.shape[1]:
        raise ImageError(f"an aligned face must be square, got {rgb.shape[1]} x {rgb.shape[0]}")
    return _engine(engine).embed(rgb, aligned_face(rgb.shape[0]))


def identity_similarity(
    a: U8 | FloatArray, b: U8 | FloatArray, engine: FaceEngine | str = "sface"
) -> float:
    """Cosine of the ``engine`` embeddings of two aligned faces (or of given embeddings:
    a 1-D float array is taken as an embedding of that engine)."""
    va = a if a.ndim == 1 else embed_aligned(a.astype(np.uint8, copy=False), engine)
    vb = b if b.ndim == 1 else embed_aligned(b.astype(np.uint8, copy=False), engine)
    return cosine(va, vb)


def _weights(mask: npt.ArrayLike | None, shape: tuple[int, ...]) -> F64 | None:
    if mask is None:
        return None
    weights = np.asarray(mask, dtype=np.float64)
    if weights.shape != shape[:2]:
        raise ImageError(f"mask must be H x W = {shape[:2]}, got {weights.shape}")
    if not np.isfinite(weights).all() or weights.min() < 0 or weights.sum() <= 0:
        raise InputError("mask must be finite, non-negative and not all zero")
    return weights


def face_weights(size: int) -> F64:
    """The face region of a ``size`` px exemplar-frame image as pixel weights in [0, 1]:
    the feathered face ellipse of :func:`~consentry.generation.restoration.exemplar.face_mask`
    (forehead to chin, cheek to cheek), for face-only :func:`psnr` / :func:`ssim`."""
    out: F64 = face_mask(size).astype(np.float64)
    return out


def psnr(a: U8, b: U8, *, peak: float = 255.0, mask: npt.ArrayLike | None = None) -> float:
    """Peak signal-to-noise ratio in dB over all channels; ``inf`` if equal.

    ``mask`` (``H x W`` non-negative weights) restricts it to a region (weighted MSE).
    """
    first, second = _pair(a, b)
    weights = _weights(mask, first.shape)
    sq = ((first.astype(np.float64) - second.astype(np.float64)) ** 2).mean(axis=2)
    mse = float(sq.mean()) if weights is None else float((sq * weights).sum() / weights.sum())
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def _ssim_map(x: F64, y: F64, peak: float) -> F64:
    c1, c2 = (_SSIM_K1 * peak) ** 2, (_SSIM_K2 * peak) ** 2
    half = _SSIM_WINDOW // 2
    if min(x.shape) < _SSIM_WINDOW:
        raise ImageError(f"SSIM needs images of at least {_SSIM_WINDOW} px per side")

    def filt(v: F64) -> F64:
        out: F64 = np.asarray(
            cv2.GaussianBlur(
                v, (_SSIM_WINDOW, _SSIM_WINDOW), _SSIM_SIGMA, borderType=cv2.BORDER_REFLECT
            ),
            dtype=np.float64,
        )[half:-half, half:-half]
        return out

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    out: F64 = num / den
    return out


def ssim(
    a: U8, b: U8, *, gray: bool = True, peak: float = 255.0, mask: npt.ArrayLike | None = None
) -> float:
    """Structural similarity (Wang et al. 2004) of two same-shape RGB images, <= 1.

    The mean of the SSIM map over the valid region (windows wholly inside the image);
    ``mask`` (``H x W`` weights) makes it a weighted mean, the weight of a window being
    the mask at its centre.
    """
    first, second = _pair(a, b)
    weights = _weights(mask, first.shape)
    x, y = first.astype(np.float64), second.astype(np.float64)
    if gray:
        luma = np.array([0.299, 0.587, 0.114])
        maps = [_ssim_map(x @ luma, y @ luma, peak)]
    else:
        maps = [_ssim_map(x[..., c], y[..., c], peak) for c in range(3)]
    value = np.mean(maps, axis=0)
    if weights is None:
        return float(value.mean())
    half = _SSIM_WINDOW // 2
    inner = weights[half:-half, half:-half]
    if inner.sum() <= 0:
        raise InputError("mask has no weight inside the SSIM valid region")
    return float((value * inner).sum() / inner.sum())


@dataclass(frozen=True)
class CopyScore:
    """How close an output is to an exemplar, against how close the truth is to it.

    ``exemplar_index``: the exemplar compared (the one the method used, or the one
    nearest the output by embedding). ``output_identity`` / ``truth_identity``: embedding
    cosine of output / truth to that exemplar; ``output_ssim`` / ``truth_ssim``: SSIM to
    it. ``identity_excess`` / ``ssim_excess``: output minus truth; above 0 means the
    output resembles the exemplar more than the real face does (copying).
    """

    exemplar_index: int
    output_identity: float
    truth_identity: float
    output_ssim: float
    truth_ssim: float

    @property
    def identity_excess(self) -> float:
        return self.output_identity - self.truth_identity

    @property
    def ssim_excess(self) -> float:
        return self.output_ssim - self.truth_ssim


def copy_score(
    output: U8,
    truth: U8,
    exemplars: Sequence[U8],
    *,
    engine: FaceEngine | str = "sface",
    exemplar_index: int | None = None,
    exemplar_embeddings: Sequence[FloatArray] | None = None,
    mask: npt.ArrayLike | None = None,
) -> CopyScore:
    """Copy score of ``output`` against ``exemplars`` (aligned faces, all one shape).

    ``exemplar_index`` picks the exemplar (else: the one whose embedding is nearest the
    output's). ``exemplar_embeddings`` (same engine, same order) saves re-embedding.
    ``mask`` restricts the SSIMs to a region (e.g. :func:`face_weights`: backgrounds of
    different photos say nothing about copying a face).
    """
    if len(exemplars) == 0:
        raise InputError("copy_score needs at least one exemplar")
    out_rgb, truth_rgb = _pair(output, truth)
    model = _engine(engine)
    if exemplar_embeddings is not None and len(exemplar_embeddings) != len(exemplars):
        raise InputError("exemplar_embeddings must match exemplars one to one")
    out_vec = embed_aligned(out_rgb, model)
    truth_vec = embed_aligned(truth_rgb, model)
    if exemplar_index is None:
        vectors = (
            list(exemplar_embeddings)
            if exemplar_embeddings is not None
            else [embed_aligned(e, model) for e in exemplars]
        )
        sims = [cosine(out_vec, v) for v in vectors]
        index = int(np.argmax(sims))
        chosen_vec = vectors[index]
    else:
        if not 0 <= exemplar_index < len(exemplars):
            raise InputError(f"exemplar_index {exemplar_index} out of range")
        index = exemplar_index
        chosen_vec = (
            exemplar_embeddings[index]
            if exemplar_embeddings is not None
            else embed_aligned(exemplars[index], model)
        )
    exemplar = _rgb(exemplars[index], "exemplar")
    if exemplar.shape != out_rgb.shape:
        exemplar = np.ascontiguousarray(
            cv2.resize(
                exemplar, (out_rgb.shape[1], out_rgb.shape[0]), interpolation=cv2.INTER_AREA
            ),
            dtype=np.uint8,
        )
    return CopyScore(
        exemplar_index=index,
        output_identity=cosine(out_vec, chosen_vec),
        truth_identity=cosine(truth_vec, chosen_vec),
        output_ssim=ssim(out_rgb, exemplar, mask=mask),
        truth_ssim=ssim(truth_rgb, exemplar, mask=mask),
    )


_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])


def seam_weights(size: int) -> tuple[F64, F64]:
    """``(boundary, interior)`` pixel weights of a ``size`` px exemplar-frame image for
    :func:`seam_ratio`: the ring along the face ellipse's edge (``4 m (1 - m)`` of the
    :func:`~consentry.generation.restoration.exemplar.face_mask` ``m``, 1 on the edge,
    0 well inside and outside: where an exemplar's own face outline lands when it is
    pasted), and the inner face (the ellipse shrunk to 0.6: eyes, nose, mouth)."""
    edge = face_mask(size).astype(np.float64)
    boundary: F64 = 4.0 * edge * (1.0 - edge)
    interior: F64 = face_mask(size, 0.6).astype(np.float64)
    return boundary, interior


def seam_ratio(output: U8, base: U8, boundary: npt.ArrayLike, interior: npt.ArrayLike) -> float:
    """How much sharper the transferred detail is along a boundary than inside: a seam score.

    The detail is ``luma(output) - luma(base)`` (what a method added to ``base``, e.g. a
    bicubic upsample); its gradient energy (squared 3 x 3 Sobel magnitude) is averaged
    with the ``boundary`` weights and with the ``interior`` weights (``H x W``), and the
    ratio returned. Detail blended in smoothly fades towards the boundary: the ratio is
    well below 1. A hard-edged paste, or an exemplar's outline pasted inside the face,
    puts strong edges on the boundary: the ratio reaches 1 and more. With no detail at
    all inside, the ratio is ``inf`` (or 0 when there is none on the boundary either).
    """
    first, second = _pair(output, base)
    w_edge = _weights(boundary, first.shape)
    w_inner = _weights(interior, first.shape)
    assert w_edge is not None and w_inner is not None
    detail = first.astype(np.float64) @ _LUMA_WEIGHTS - second.astype(np.float64) @ _LUMA_WEIGHTS
    gx = cv2.Sobel(detail, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(detail, cv2.CV_64F, 0, 1, ksize=3)
    energy = gx * gx + gy * gy
    edge = float((energy * w_edge).sum() / w_edge.sum())
    inner = float((energy * w_inner).sum() / w_inner.sum())
    if inner <= 0.0:
        return 0.0 if edge <= 0.0 else math.inf
    return edge / inner
