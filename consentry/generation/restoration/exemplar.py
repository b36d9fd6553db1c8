"""Personalized face restoration: the subject's own photos as the prior (DESIGN section 5).

Given a degraded low-resolution image (an aligned face crop or a whole photo), the
:class:`~consentry.generation.restoration.degrade.Degradation` that describes how it
was made, and the subject's *exemplars* (their own photos, aligned into the 256 px
enrollment frame of :func:`consentry.faces.quality.align_exemplar`), :func:`restore`
returns a high-resolution image in four steps:

1. **Upsample and locate.** The input is upsampled (bicubic) by the degradation's
   scale into the *HR frame*. The face's geometry is a similarity transform from the
   HR frame to the exemplar frame, taken from the first of these that applies:
   ``aligned=True`` (the input already is an exemplar-frame crop: the transform is a
   pure scale), ``landmarks=`` given by the caller, the face the detector finds in the
   upsampled input (the one best overlapping ``bbox`` when a box is given), and last
   the crop geometry: ``bbox`` alone, mapped to the template through the average
   position of the five landmarks inside a YuNet box (:data:`BBOX_LANDMARKS`). The
   detector often fails on 16 px faces; the alignment search of step 2 absorbs the
   few-pixel error of the box geometry. With none of these, :class:`ImageError`.
2. **Choose exemplars by low-resolution consistency.** Every exemplar is warped into
   the HR frame under a small grid of perturbations (scales, rotations about the face
   centre, integer shifts), passed through the noise-free forward model (blur, area
   downscale) and compared with the input on the face region: the distance is the
   weighted normalised cross-correlation distance ``2 (1 - rho)`` of the luma, so
   exposure and contrast differences between photos do not decide. The best
   (exemplar, perturbation) wins; nothing but the input and the forward model is used.
3. **Transfer detail.** Low frequencies come from the upsampled input, high
   frequencies from the chosen exemplar: ``x0 = up + g * mask * (E - U(F(E)))`` on the
   luma, where ``E`` is the warped exemplar, ``F`` the forward model, ``U`` bicubic
   upsampling, ``mask`` a feathered face ellipse and ``g`` the exemplar-to-input
   contrast gain fitted at low resolution (clipped to ``[0.5, 2]``).
4. **Data consistency, stopped early.** Back-projection ``x += step * U(y - F(x))``
   (over the exemplar frame's region; the whole image for an aligned input) until the
   RMS mismatch ``y - F(x)`` on that region falls to ``stop_factor`` times the
   mismatch a *true* face has under the same degradation, estimated by degrading the
   chosen exemplar (a real photo of this face, warped into place, with real texture)
   with the full degradation (blur, noise, JPEG) and measuring its own mismatch. On
   shared/faces at x8 that estimate averages 9.31 against the truths' 9.29 (r = 0.85),
   while an estimate from the smooth restored image itself comes out at half that.
   Exact back-projection fits the noise and JPEG artefacts and costs identity (DESIGN
   section 5); this never drives the mismatch to zero. With noise and JPEG as strong as
   the x8 default, the detail-transfer estimate is usually already below the target, so
   no step is taken; without noise or JPEG the target is near zero and back-projection
   runs its ``max_iterations``.

Cost: about 0.1-0.2 s per face on 2 CPU cores for an aligned 32 px input and a handful
of exemplars (search ~40 %, the stopping target's two JPEG round trips and the
consistency check most of the rest). Work is done in the HR frame over the face's
region, so a face that is large in the upsampled image (hundreds of px) costs more
(about 1 s at 700 px).

Invariants
- The output is ``uint8`` RGB of exactly ``(h * scale, w * scale)`` for a ``h x w``
  input; outside the face region of a whole photo it equals the bicubic upsample.
- Exemplar choice depends only on the input, the degradation and the exemplars, never
  on any ground truth; the same inputs give the same output (no randomness beyond the
  degradation's own seed, used only to estimate the stopping target).
- ``RestorationResult.consistency_error`` is
  :func:`~consentry.generation.restoration.degrade.consistency_error` of the returned
  image against the input over the whole frame; ``target_error`` is the stopping
  target (on the back-projection region); ``iterations`` counts back-projection steps taken.
- Errors are typed: no exemplars is an :class:`InputError`; an input or exemplar that
  is not a usable RGB ``uint8`` image (or whose face cannot be located) is an
  :class:`ImageError`.
- The method copies its exemplar's fine detail (expression included). Judge results
  with data consistency, pixel fidelity and a copy score, not identity alone
  (:mod:`consentry.generation.restoration.metrics`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

from consentry.errors import ImageError, InputError
from consentry.faces.engine import FaceEngine
from consentry.generation.restoration.degrade import Degradation, consistency_error
from consentry.generation.restoration.generic import bicubic_upscale
from consentry.generation.restoration.geometry import (
    BBOX_LANDMARKS,
    EXEMPLAR_SIZE,
    EXEMPLAR_TEMPLATE,
    FACE_AXES,
    FACE_CENTRE,
    locate,
    perturbation,
    region,
    translation,
)

__all__ = [
    "BBOX_LANDMARKS",
    "EXEMPLAR_SIZE",
    "EXEMPLAR_TEMPLATE",
    "RestorationResult",
    "RestoreOptions",
    "face_mask",
    "restore",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

_FEATHER = 8.0
DETAIL_GROW = 0.85
DETAIL_FEATHER = 16.0
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_MIN_LOW_RES = 4


@dataclass(frozen=True)
class RestoreOptions:
    """Tuning of :func:`restore`; the defaults are the ones the fidelity bench measures.

    Shifts are in exemplar-frame pixels (converted to the HR frame and rounded);
    ``scales`` and ``rotations`` (degrees) perturb the geometry about the face centre;
    ``bbox_rotations`` replace ``rotations`` when the geometry comes from a box or from
    the detector run on the blurry upsample, whose landmarks are unreliable (on
    shared/faces, 16 px faces in 384 px windows: detector geometry 0.444 SFace identity
    with ``rotations`` only, 0.464 with these, against 0.495 from the true landmarks).
    ``top_k`` > 1 averages the detail of the k best (exemplar, pose) matches, each from a
    different exemplar. ``stop_factor`` scales the true-face mismatch at which
    back-projection stops; ``0`` means exact back-projection for ``max_iterations``.
    ``detail_gain`` scales the transferred detail after the fitted contrast gain: 2 is
    where the fidelity bench's identity peaks on both embedders (x8, shared/faces, 19
    identities; see bench/README.md) at a cost in pixel fidelity (PSNR, SSIM), and the
    output still resembles its exemplar less than the real face does (copy score).
    """

    max_shift: float = 6.0
    shift_step: float = 2.0
    scales: tuple[float, ...] = (0.94, 1.0, 1.06)
    rotations: tuple[float, ...] = (0.0,)
    bbox_rotations: tuple[float, ...] = (-8.0, 0.0, 8.0)
    top_k: int = 1
    detail_gain: float = 2.0
    detail_grow: float = DETAIL_GROW
    detail_feather: float = DETAIL_FEATHER
    max_iterations: int = 8
    step: float = 1.0
    stop_factor: float = 1.0

    def __post_init__(self) -> None:
        if not (self.max_shift >= 0 and self.shift_step > 0):
            raise InputError("max_shift must be >= 0 and shift_step > 0")
        if not self.scales or any(not 0.5 <= s <= 2.0 for s in self.scales):
            raise InputError("scales must be a non-empty tuple of values in [0.5, 2]")
        if not self.rotations or not self.bbox_rotations:
            raise InputError("rotations must not be empty")
        if self.top_k < 1:
            raise InputError("top_k must be at least 1")
        if not 0.0 <= self.detail_gain <= 4.0:
            raise InputError("detail_gain must lie in [0, 4]")
        if not (0.2 <= self.detail_grow <= 1.5 and 1.0 <= self.detail_feather <= 64.0):
            raise InputError("detail_grow must lie in [0.2, 1.5] and detail_feather in [1, 64]")
        if self.max_iterations < 0 or not 0.0 < self.step <= 2.0:
            raise InputError("max_iterations must be >= 0 and step in (0, 2]")
        if self.stop_factor < 0:
            raise InputError("stop_factor must be >= 0")


@dataclass(frozen=True, eq=False)
class RestorationResult:
    """What :func:`restore` returns; see the module docstring for the invariants.

    ``image``: the restored ``uint8`` RGB image (read-only). ``exemplar_index``: the
    exemplar whose detail was used (the best match; with ``top_k`` > 1 all used are in
    ``exemplar_indices``). ``exemplar_scores``: each exemplar's best low-resolution
    match distance ``2 (1 - rho)`` (lower is closer). ``consistency_error``: RMS
    mismatch of ``F(image)`` and the input, whole frame, 0..255 units.
    ``initial_error``: the same for the detail-transfer estimate, face region, before
    back-projection; ``target_error``: the true-face mismatch it was stopped at.
    ``geometry``: how the face was located (``aligned``, ``landmarks``, ``detected``,
    ``bbox``). ``pose``: chosen (scale, rotation, dx, dy) perturbation. ``seconds``:
    wall time of the call; ``timings``: seconds per step.
    """

    image: U8 = field(repr=False)
    exemplar_index: int
    exemplar_indices: tuple[int, ...]
    exemplar_scores: tuple[float, ...]
    consistency_error: float
    initial_error: float
    target_error: float
    iterations: int
    geometry: str
    pose: tuple[float, float, int, int]
    seconds: float
    timings: dict[str, float]


# ----------------------------------------------------------------------------- helpers


def _check_rgb(image: object, what: str) -> U8:
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(
            f"{what} must be an H x W x 3 uint8 RGB array, got {image.dtype} {image.shape}"
        )
    out: U8 = np.ascontiguousarray(image)
    return out


def _luma(image: npt.NDArray[np.floating] | U8) -> F32:
    out: F32 = np.tensordot(image.astype(np.float32), _LUMA, axes=([2], [0])).astype(np.float32)
    return out


@lru_cache(maxsize=8)
def face_mask(size: int = EXEMPLAR_SIZE, grow: float = 1.0, feather: float = _FEATHER) -> F32:
    """The feathered face ellipse of the exemplar frame at ``size`` px, values in [0, 1].

    ``grow`` scales the ellipse axes; ``feather`` (exemplar-frame px) is the half width
    of the smoothstep ramp across the ellipse's edge. Read-only and cached.
    """
    k = size / EXEMPLAR_SIZE
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = ((c + 0.5) * k - 0.5 for c in FACE_CENTRE)
    ax, ay = (a * k * grow for a in FACE_AXES)
    radius = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
    # Signed distance (approx., in px) outside the ellipse, then a smooth ramp.
    outside = (radius - 1.0) * min(ax, ay)
    mask = np.clip(0.5 - outside / (2.0 * feather * k), 0.0, 1.0).astype(np.float32)
    out: F32 = (mask * mask * (3.0 - 2.0 * mask)).astype(np.float32)  # smoothstep
    out.setflags(write=False)
    return out


def _warp(
    image: npt.NDArray[np.floating] | U8,
    to_source: F64,
    width: int,
    height: int,
    interpolation: int = cv2.INTER_LINEAR,
) -> F32:
    """``out[v, u] = image(to_source @ (u, v, 1))`` (a 2 x 3 map into ``image``), float32."""
    warped = cv2.warpAffine(
        np.ascontiguousarray(image, dtype=np.float32),
        to_source[:2],
        (width, height),
        flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    out: F32 = np.asarray(warped, dtype=np.float32)
    return out


def _upsample(low: npt.NDArray[np.floating], scale: int) -> F32:
    height, width = low.shape[:2]
    out: F32 = np.asarray(
        cv2.resize(
            np.ascontiguousarray(low, dtype=np.float32),
            (width * scale, height * scale),
            interpolation=cv2.INTER_CUBIC,
        ),
        dtype=np.float32,
    )
    if out.ndim == 2 and low.ndim == 3:
        out = out[:, :, None]
    return out


def _box_down(image: F32, scale: int) -> F32:
    height, width = image.shape[0] // scale, image.shape[1] // scale
    cut = image[: height * scale, : width * scale]
    out: F32 = cut.reshape(height, scale, width, scale, *cut.shape[2:]).mean(axis=(1, 3))
    return out.astype(np.float32)


def _weighted_rms(residual: F32, weight: F32) -> float:
    sq = residual.astype(np.float64) ** 2
    if sq.ndim == 3:
        sq = sq.mean(axis=2)
    total = float(weight.sum())
    return math.sqrt(float((sq * weight).sum()) / total) if total > 0 else 0.0


# ----------------------------------------------------------------------------- search


@dataclass(frozen=True)
class _Match:
    distance: float
    exemplar: int
    scale: float
    rotation: float
    dx: int
    dy: int


def _normalise(values: F64, weight: F64) -> F64:
    """Weighted zero-mean, unit-variance over the last two axes."""
    total = weight.sum()
    mean = (values * weight).sum(axis=(-2, -1), keepdims=True) / total
    centred = values - mean
    var = (centred**2 * weight).sum(axis=(-2, -1), keepdims=True) / total
    out: F64 = centred / np.sqrt(np.maximum(var, 1e-6))
    return out


def _search(
    exemplar_luma: F32,
    index: int,
    to_exemplar: F64,
    target: F64,
    weight: F64,
    shape_hr: tuple[int, int],
    scale: int,
    blur_sigma: float,
    shifts: npt.NDArray[np.int64],
    options: RestoreOptions,
    rotations: tuple[float, ...],
) -> list[_Match]:
    """Best distance of every pose of one exemplar (all shifts, scales, rotations)."""
    height, width = shape_hr
    n_rows, n_cols = height // scale, width // scale
    pad = int(np.abs(shifts).max()) if shifts.size else 0
    rows = (pad + shifts)[:, None] + scale * np.arange(n_rows + 1)[None, :]  # (S, n+1)
    cols = (pad + shifts)[:, None] + scale * np.arange(n_cols + 1)[None, :]
    area = float(scale * scale)
    out: list[_Match] = []
    for zoom in options.scales:
        for rotation in rotations:
            to_source = perturbation(zoom, rotation) @ to_exemplar @ translation(-pad, -pad)
            warped = _warp(exemplar_luma, to_source, width + 2 * pad, height + 2 * pad)
            if blur_sigma > 0:
                ksize = 2 * math.ceil(3.0 * blur_sigma) + 1  # the forward model's kernel
                warped = np.asarray(
                    cv2.GaussianBlur(
                        warped, (ksize, ksize), blur_sigma, borderType=cv2.BORDER_REFLECT_101
                    ),
                    dtype=np.float32,
                )
            integral = np.asarray(cv2.integral(warped, sdepth=cv2.CV_64F), dtype=np.float64)
            # corners[a, b, i, j] = integral[rows[a, i], cols[b, j]]
            corners = integral[rows[:, None, :, None], cols[None, :, None, :]]
            boxes = (
                corners[..., 1:, 1:]
                - corners[..., :-1, 1:]
                - corners[..., 1:, :-1]
                + corners[..., :-1, :-1]
            ) / area  # (S, S, n, m): dy, dx
            distance = ((_normalise(boxes, weight) - target) ** 2 * weight).sum(
                axis=(-2, -1)
            ) / weight.sum()
            a, b = np.unravel_index(int(np.argmin(distance)), distance.shape)
            out.append(
                _Match(float(distance[a, b]), index, zoom, rotation, int(shifts[b]), int(shifts[a]))
            )
    return out


# ----------------------------------------------------------------------------- restore


def _prepare_exemplars(exemplars: Sequence[U8]) -> list[U8]:
    if isinstance(exemplars, np.ndarray) and exemplars.ndim == 3:
        raise InputError("exemplars must be a sequence of images, not one image")
    prepared: list[U8] = []
    for i, image in enumerate(exemplars):
        rgb = _check_rgb(image, f"exemplar {i}")
        if rgb.shape[0] != rgb.shape[1] or rgb.shape[0] < 32:
            raise ImageError(
                f"exemplar {i} must be a square aligned face of at least 32 px "
                f"(the enrollment frame), got {rgb.shape[1]} x {rgb.shape[0]}"
            )
        if rgb.shape[0] != EXEMPLAR_SIZE:
            interpolation = cv2.INTER_AREA if rgb.shape[0] > EXEMPLAR_SIZE else cv2.INTER_CUBIC
            rgb = np.ascontiguousarray(
                cv2.resize(rgb, (EXEMPLAR_SIZE, EXEMPLAR_SIZE), interpolation=interpolation),
                dtype=np.uint8,
            )
        prepared.append(rgb)
    if not prepared:
        raise InputError("personalized restoration needs at least one exemplar photo")
    return prepared


def _fit_gain(target: F64, source: F64, weight: F64) -> float:
    """Slope of the weighted least-squares fit ``target ~ a * source + b``, in [0.5, 2]."""
    total = weight.sum()
    ms = (source * weight).sum() / total
    mt = (target * weight).sum() / total
    var = ((source - ms) ** 2 * weight).sum() / total
    if var < 1e-6:
        return 1.0
    cov = ((source - ms) * (target - mt) * weight).sum() / total
    return float(np.clip(cov / var, 0.5, 2.0))


def _true_face_mismatch(references: Sequence[U8], degradation: Degradation, weight: F32) -> float:
    """The mismatch a true face has: RMS of ``apply(E) - forward(E)`` on the region.

    ``E`` are the chosen exemplars warped into place: real photos of this face, with
    real texture, so the noise and the JPEG error of their degradation are what the
    truth's would be (on shared/faces, x8: mean 9.31 against the truths' 9.29, r = 0.85).
    Averaged over two noise seeds derived from the degradation's own.
    """
    samples: list[float] = []
    for reference in references:
        for offset in (0, 1):
            trial = dataclasses.replace(degradation, seed=int(degradation.seed) + 7919 + offset)
            degraded = np.asarray(trial.apply(reference), dtype=np.float32)
            clean = np.asarray(trial.forward(reference), dtype=np.float32)
            samples.append(_weighted_rms(degraded - clean, weight))
    return float(np.mean(samples))


def restore(
    low_res: U8,
    exemplars: Sequence[U8],
    degradation: Degradation,
    *,
    aligned: bool = False,
    landmarks: npt.ArrayLike | None = None,
    bbox: Sequence[float] | None = None,
    detector: FaceEngine | None = None,
    options: RestoreOptions | None = None,
) -> RestorationResult:
    """Restore ``low_res`` (``uint8`` RGB) with the subject's ``exemplars`` as the prior.

    ``degradation`` describes how ``low_res`` was made (its scale is the upsampling
    factor; its blur is the forward model; its noise and JPEG set the stopping target).
    ``exemplars`` are aligned enrollment-frame face photos (square; resized to 256 px).
    Locating the face: ``aligned=True`` when ``low_res`` is itself an exemplar-frame
    crop; else ``landmarks`` (5 x 2, low-res pixel coordinates, the engine order), else
    a face found by ``detector`` in the upsampled input (best IoU to ``bbox`` when
    given), else ``bbox`` (low-res ``x, y, w, h``) alone. Pass ``detector=None`` to
    skip detection. See the module docstring for the method and its invariants.
    """
    began = time.perf_counter()
    opts = options or RestoreOptions()
    low = _check_rgb(low_res, "low_res")
    if min(low.shape[:2]) < _MIN_LOW_RES:
        raise ImageError(
            f"low_res is too small ({low.shape[1]} x {low.shape[0]}); need at "
            f"least {_MIN_LOW_RES} px on each side"
        )
    prepared = _prepare_exemplars(exemplars)
    scale = int(degradation.scale)
    timings: dict[str, float] = {}

    up = np.ascontiguousarray(bicubic_upscale(low, scale), dtype=np.uint8)
    height, width = up.shape[:2]
    if (height, width) != (low.shape[0] * scale, low.shape[1] * scale):
        raise ImageError("bicubic_upscale returned an unexpected size")
    geometry = locate(up, scale, aligned=aligned, landmarks=landmarks, bbox=bbox, detector=detector)
    k = float(math.sqrt(abs(np.linalg.det(geometry.to_exemplar[:2, :2]))))  # exemplar px/HR px
    step = max(1, round(opts.shift_step / k))
    reach = math.floor(opts.max_shift / k / step) * step
    shifts = np.arange(-reach, reach + 1, step, dtype=np.int64)
    pad = reach + 4 * scale
    x0, y0, x1, y1 = region(geometry, width, height, scale, pad)
    roi_w, roi_h = x1 - x0, y1 - y0
    to_exemplar = geometry.to_exemplar @ translation(x0, y0)  # ROI coords -> exemplar frame
    low_roi = low[y0 // scale : y1 // scale, x0 // scale : x1 // scale].astype(np.float32)
    up_roi = up[y0:y1, x0:x1].astype(np.float32)
    # Face masks in the ROI: detail transfer and matching on the face; back-projection on
    # the exemplar frame (the whole frame for an aligned input).
    face = _warp(face_mask(), to_exemplar, roi_w, roi_h)
    detail_mask = _warp(
        face_mask(EXEMPLAR_SIZE, opts.detail_grow, opts.detail_feather), to_exemplar, roi_w, roi_h
    )
    if geometry.source == "aligned":
        bp_mask = np.ones((roi_h, roi_w), dtype=np.float32)
    else:
        frame = np.zeros((EXEMPLAR_SIZE, EXEMPLAR_SIZE), dtype=np.float32)
        frame[16:-16, 16:-16] = 1.0
        frame = np.asarray(cv2.GaussianBlur(frame, (0, 0), 8.0), dtype=np.float32)
        bp_mask = np.asarray(
            cv2.warpAffine(
                frame,
                to_exemplar[:2],
                (roi_w, roi_h),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderValue=0.0,
            ),
            dtype=np.float32,
        )
    detail_mask *= bp_mask
    match_weight = _box_down(face * bp_mask, scale).astype(np.float64)
    region_weight = (_box_down(bp_mask, scale) >= 0.99).astype(np.float32)
    if float(match_weight.sum()) < 1.0 or float(region_weight.sum()) < 1.0:
        raise ImageError("the located face is too small or outside the image")
    timings["locate"] = time.perf_counter() - began

    # 2. exemplar choice by low-resolution consistency
    mark = time.perf_counter()
    target = _normalise(_luma(low_roi).astype(np.float64), match_weight)
    loose = geometry.source in ("bbox", "detected")
    rotations = opts.bbox_rotations if loose else opts.rotations
    lumas = [_luma(e) for e in prepared]
    blur_sigma = float(degradation.blur_sigma)
    best_per_exemplar: list[_Match] = []
    for i, luma in enumerate(lumas):
        poses = _search(
            luma,
            i,
            to_exemplar,
            target,
            match_weight,
            (roi_h, roi_w),
            scale,
            blur_sigma,
            shifts,
            opts,
            rotations,
        )
        best_per_exemplar.append(min(poses, key=lambda m: m.distance))
    ranked = sorted(best_per_exemplar, key=lambda m: (m.distance, m.exemplar))
    chosen = ranked[: opts.top_k]
    timings["search"] = time.perf_counter() - mark

    # 3. detail transfer: low frequencies from the input, high frequencies from exemplars
    mark = time.perf_counter()
    low_luma = _luma(low_roi).astype(np.float64)
    detail = np.zeros((roi_h, roi_w), dtype=np.float32)
    references: list[U8] = []
    for match in chosen:
        to_source = (
            perturbation(match.scale, match.rotation)
            @ to_exemplar
            @ translation(match.dx, match.dy)
        )
        warped = _warp(prepared[match.exemplar], to_source, roi_w, roi_h, cv2.INTER_CUBIC)
        references.append(np.clip(np.rint(warped), 0, 255).astype(np.uint8))
        forward = np.asarray(degradation.forward(warped), dtype=np.float32)
        smooth = _upsample(forward, scale)
        gain = _fit_gain(low_luma, _luma(forward).astype(np.float64), match_weight)
        detail += gain * (_luma(warped) - _luma(smooth))
    detail *= opts.detail_gain / len(chosen)
    estimate = up_roi + (detail_mask * detail)[:, :, None]
    timings["transfer"] = time.perf_counter() - mark

    # 4. data consistency: back-project, stopping at a true face's mismatch
    mark = time.perf_counter()
    target_error = 0.0
    if opts.stop_factor > 0:
        target_error = opts.stop_factor * _true_face_mismatch(
            references, degradation, region_weight
        )
    initial_error = _weighted_rms(
        low_roi - np.asarray(degradation.forward(np.clip(estimate, 0.0, 255.0)), dtype=np.float32),
        region_weight,
    )
    iterations = 0
    current = estimate
    for _ in range(opts.max_iterations):
        clipped = np.clip(current, 0.0, 255.0)
        residual = low_roi - np.asarray(degradation.forward(clipped), dtype=np.float32)
        if _weighted_rms(residual, region_weight) <= target_error:
            break
        current = clipped + opts.step * bp_mask[:, :, None] * _upsample(residual, scale)
        iterations += 1
    restored_roi = np.clip(np.rint(current), 0, 255).astype(np.uint8)
    timings["consistency"] = time.perf_counter() - mark

    image = up.copy()
    image[y0:y1, x0:x1] = restored_roi
    image.setflags(write=False)
    error = float(consistency_error(image, low, degradation))
    best = chosen[0]
    return RestorationResult(
        image=image,
        exemplar_index=best.exemplar,
        exemplar_indices=tuple(m.exemplar for m in chosen),
        exemplar_scores=tuple(m.distance for m in best_per_exemplar),
        consistency_error=error,
        initial_error=initial_error,
        target_error=target_error,
        iterations=iterations,
        geometry=geometry.source,
        pose=(best.scale, best.rotation, best.dx, best.dy),
        seconds=time.perf_counter() - began,
        timings=timings,
    )
