"""Personalized (exemplar) restoration and its fidelity metrics, on real photos.

Uses the photos shipped in ``consentry/data/faces``: ``obama.jpg`` and ``obama2.jpg``
are the same person, ``biden.jpg`` another. The truth is obama2's face aligned into the
256 px enrollment frame, degraded x8 (16 px face) with the default degradation; the
exemplar is obama.jpg's aligned face (biden's for the control).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from consentry.errors import ImageError, InputError
from consentry.faces.engine import Face
from consentry.faces.engines import get_engine
from consentry.faces.quality import EXEMPLAR_TEMPLATE as _EXEMPLAR_TEMPLATE
from consentry.faces.quality import align_exemplar
from consentry.generation.restoration.degrade import Degradation, consistency_error
from consentry.generation.restoration.exemplar import (
    EXEMPLAR_TEMPLATE,
    RestorationResult,
    RestoreOptions,
    face_mask,
    restore,
)
from consentry.generation.restoration.generic import bicubic_upscale
from consentry.generation.restoration.metrics import (
    CopyScore,
    copy_score,
    embed_aligned,
    face_weights,
    identity_similarity,
    psnr,
    ssim,
)

SEEDS = (0, 1, 2)


def _photo(name: str) -> np.ndarray:
    folder = Path(str(importlib.resources.files("consentry.data"))) / "faces"
    with Image.open(folder / name) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def _face(image: np.ndarray) -> Face:
    faces = get_engine("sface").detect(image)
    assert faces, "the shipped portrait must have a detectable face"
    return faces[0]


@pytest.fixture(scope="module")
def aligned() -> dict[str, np.ndarray]:
    """The three portraits' faces in the 256 px enrollment (exemplar) frame."""
    out = {}
    for name in ("obama", "obama2", "biden"):
        image = _photo(f"{name}.jpg")
        out[name] = align_exemplar(image, _face(image))
    return out


@dataclasses.dataclass(frozen=True)
class Run:
    degradation: Degradation
    low: np.ndarray
    bicubic: np.ndarray
    own: RestorationResult
    other: RestorationResult


@pytest.fixture(scope="module")
def runs(aligned: dict[str, np.ndarray]) -> list[Run]:
    """obama2 degraded x8 with three noise seeds; restored with obama / biden exemplars."""
    truth = aligned["obama2"]
    out: list[Run] = []
    for seed in SEEDS:
        degradation = Degradation(scale=8, seed=seed)
        low = degradation.apply(truth)
        out.append(Run(
            degradation,
            low,
            bicubic_upscale(low, 8),
            restore(low, [aligned["obama"]], degradation, aligned=True),
            restore(low, [aligned["biden"]], degradation, aligned=True),
        ))
    return out


# ----------------------------------------------------------------------------- method


def test_exemplar_frame_matches_enrollment() -> None:
    np.testing.assert_allclose(EXEMPLAR_TEMPLATE, _EXEMPLAR_TEMPLATE, atol=1e-4)


def test_own_exemplar_beats_bicubic_and_another_persons(
    aligned: dict[str, np.ndarray], runs: list[Run]
) -> None:
    truth = embed_aligned(aligned["obama2"])
    bicubic, own, other = [], [], []
    for run in runs:
        bicubic.append(identity_similarity(run.bicubic, truth))
        own.append(identity_similarity(run.own.image, truth))
        other.append(identity_similarity(run.other.image, truth))
    assert np.mean(own) > np.mean(bicubic) + 0.05, (own, bicubic)
    assert np.mean(own) > np.mean(other) + 0.05, (own, other)
    assert all(o > b for o, b in zip(own, bicubic, strict=True)), (own, bicubic)


def test_result_shape_and_bookkeeping(runs: list[Run]) -> None:
    for run in runs:
        result = run.own
        assert isinstance(result, RestorationResult)
        assert result.image.shape == (256, 256, 3) and result.image.dtype == np.uint8
        assert not result.image.flags.writeable
        assert result.exemplar_index == 0 and result.exemplar_indices == (0,)
        assert len(result.exemplar_scores) == 1
        assert result.geometry == "aligned"
        assert 0 < result.seconds < 5
        assert set(result.timings) == {"locate", "search", "transfer", "consistency"}


def test_consistency_error_is_bounded(
    aligned: dict[str, np.ndarray], runs: list[Run]
) -> None:
    for run in runs:
        result, low, degradation = run.own, run.low, run.degradation
        truth_error = consistency_error(aligned["obama2"], low, degradation)
        reported = consistency_error(result.image, low, degradation)
        assert result.consistency_error == pytest.approx(reported)
        # No worse than the mismatch the true face itself has, and not fitted to zero.
        assert 0.5 < result.consistency_error <= truth_error
        assert result.target_error > 0


def test_back_projection_stops_at_true_face_mismatch(aligned: dict[str, np.ndarray]) -> None:
    truth = aligned["obama2"]
    # Noise-free, JPEG-free: a true face has (almost) no mismatch, so back-projection runs.
    clean = Degradation(scale=8, noise_sigma=0.0, jpeg_quality=None)
    low = clean.apply(truth)
    result = restore(low, [aligned["obama"]], clean, aligned=True)
    assert result.target_error < 1.0
    assert result.iterations > 0
    assert result.consistency_error < result.initial_error
    # Exact back-projection (stop_factor 0) goes further than the default stop.
    noisy = Degradation(scale=8, seed=5)
    low = noisy.apply(truth)
    stopped = restore(low, [aligned["obama"]], noisy, aligned=True)
    exact = restore(low, [aligned["obama"]], noisy, aligned=True,
                    options=RestoreOptions(stop_factor=0.0, max_iterations=10))
    assert exact.iterations == 10
    assert exact.consistency_error < stopped.consistency_error


def test_deterministic_and_best_exemplar_chosen(aligned: dict[str, np.ndarray]) -> None:
    degradation = Degradation(scale=8, seed=7)
    low = degradation.apply(aligned["obama2"])
    exemplars = [aligned["biden"], aligned["obama"]]
    first = restore(low, exemplars, degradation, aligned=True)
    second = restore(low, exemplars, degradation, aligned=True)
    assert np.array_equal(first.image, second.image)
    assert first.exemplar_index == int(np.argmin(first.exemplar_scores))
    # An exemplar that *is* the truth is found and matched almost perfectly.
    with_truth = restore(low, [*exemplars, aligned["obama2"]], degradation, aligned=True)
    assert with_truth.exemplar_index == 2
    assert with_truth.pose[2:] == (0, 0)


def test_exemplars_of_other_sizes_are_resampled(aligned: dict[str, np.ndarray]) -> None:
    degradation = Degradation(scale=4, seed=1)
    low = degradation.apply(aligned["obama2"][::2, ::2].copy())  # 128 px frame -> 32 px
    small = np.ascontiguousarray(aligned["obama"][::2, ::2])
    result = restore(low, [small], degradation, aligned=True)
    assert result.image.shape == (128, 128, 3)


def test_whole_photo_paths() -> None:
    photo = _photo("obama2.jpg")
    face = _face(photo)
    x, y, w, h = (int(v) for v in face.bbox)
    # A 512 px window around the face, downscaled x8 (the face becomes ~30 px).
    x0, y0 = max(0, x + w // 2 - 256), max(0, y + h // 2 - 256)
    window = np.ascontiguousarray(photo[y0:y0 + 512, x0:x0 + 512])
    assert window.shape == (512, 512, 3)
    degradation = Degradation(scale=8, seed=2)
    low = degradation.apply(window)
    exemplar = align_exemplar(_photo("obama.jpg"), _face(_photo("obama.jpg")))
    shifted = _face(window)
    box = tuple(v / 8 for v in shifted.bbox)
    by_box = restore(low, [exemplar], degradation, bbox=box)
    assert by_box.geometry == "bbox" and by_box.image.shape == (512, 512, 3)
    points = (shifted.landmarks + 0.5) / 8 - 0.5
    by_points = restore(low, [exemplar], degradation, landmarks=points)
    assert by_points.geometry == "landmarks"
    detected = restore(low, [exemplar], degradation, bbox=box, detector=get_engine("sface"))
    assert detected.geometry in {"detected", "bbox"}
    # Far from the face, the output is the bicubic upsample, untouched.
    up = bicubic_upscale(low, 8)
    changed = np.any(by_points.image != up, axis=2)
    assert changed.any()
    ys, xs = np.nonzero(changed)
    cx, cy = shifted.bbox[0] + shifted.bbox[2] / 2, shifted.bbox[1] + shifted.bbox[3] / 2
    assert np.max(np.hypot(xs - cx, ys - cy)) < 3 * max(shifted.bbox[2], shifted.bbox[3])


def test_errors_are_typed(aligned: dict[str, np.ndarray]) -> None:
    degradation = Degradation(scale=8)
    low = degradation.apply(aligned["obama2"])
    with pytest.raises(InputError, match="at least one exemplar") as caught:
        restore(low, [], degradation, aligned=True)
    assert not isinstance(caught.value, ImageError)
    with pytest.raises(ImageError):
        restore(low.astype(np.float32), [aligned["obama"]], degradation, aligned=True)
    with pytest.raises(ImageError):
        restore(low[:, :, 0].copy(), [aligned["obama"]], degradation, aligned=True)
    with pytest.raises(ImageError, match="too small"):
        restore(low[:2, :2].copy(), [aligned["obama"]], degradation, aligned=True)
    with pytest.raises(ImageError, match="square"):
        restore(low, [aligned["obama"][:, :200].copy()], degradation, aligned=True)
    with pytest.raises(ImageError, match="square"):
        restore(low[:, :20].copy(), [aligned["obama"]], degradation, aligned=True)
    with pytest.raises(ImageError, match="no face found"):
        restore(low, [aligned["obama"]], degradation)  # nothing to locate the face by
    with pytest.raises(InputError, match="exemplars must be a sequence"):
        restore(low, aligned["obama"], degradation, aligned=True)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="landmarks"):
        restore(low, [aligned["obama"]], degradation, landmarks=np.zeros((4, 2)))
    with pytest.raises(InputError, match="bbox"):
        restore(low, [aligned["obama"]], degradation, bbox=(1.0, 1.0, 0.0, 4.0))
    for bad in ({"top_k": 0}, {"scales": ()}, {"stop_factor": -1.0}, {"step": 0.0}):
        with pytest.raises(InputError):
            RestoreOptions(**bad)


def test_face_mask_is_a_feathered_ellipse() -> None:
    mask = face_mask()
    assert mask.shape == (256, 256) and not mask.flags.writeable
    assert mask[142, 128] == 1.0 and mask[0, 0] == 0.0
    assert 0.0 < mask[142, 128 + 62] < 1.0  # the edge is feathered
    assert dataclasses.is_dataclass(RestoreOptions())


# ----------------------------------------------------------------------------- metrics


def test_psnr_and_ssim_sanity(aligned: dict[str, np.ndarray]) -> None:
    image = aligned["obama2"]
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == 1.0
    assert ssim(image, image, gray=False) == 1.0
    brighter = np.clip(image.astype(np.int16) + 1, 0, 255).astype(np.uint8)
    changed = float(np.mean((brighter.astype(float) - image) ** 2))
    assert psnr(image, brighter) == pytest.approx(10 * math.log10(255**2 / changed))
    other = aligned["biden"]
    value = ssim(image, other)
    assert -1.0 <= value < 0.9
    assert value == pytest.approx(ssim(other, image))
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 10, image.shape), 0, 255)
    assert ssim(image, noisy.astype(np.uint8)) > value
    # Masks restrict both to a region: a change outside it does not count.
    weights = face_weights(256)
    edited = image.copy()
    edited[:20] = 0  # the top rows, well outside the face ellipse
    assert weights[:30].max() == 0.0
    assert psnr(image, edited, mask=weights) == math.inf
    assert psnr(image, edited) < 40
    assert ssim(image, edited, mask=weights) == pytest.approx(1.0)
    assert ssim(image, edited) < 0.99
    with pytest.raises(ImageError):
        psnr(image, image, mask=weights[:100])
    with pytest.raises(InputError):
        ssim(image, image, mask=np.zeros((256, 256)))
    with pytest.raises(ImageError):
        psnr(image, image[:100])
    with pytest.raises(ImageError):
        ssim(image[:8, :8], image[:8, :8])


def test_identity_metrics(aligned: dict[str, np.ndarray]) -> None:
    same = identity_similarity(aligned["obama"], aligned["obama2"])
    different = identity_similarity(aligned["obama"], aligned["biden"])
    assert identity_similarity(aligned["obama"], aligned["obama"]) == pytest.approx(1.0, abs=1e-5)
    assert same > 0.365 > different  # SFace's threshold at FMR 1e-3 on shared/faces
    dlib_same = identity_similarity(aligned["obama"], aligned["obama2"], engine="dlib")
    dlib_different = identity_similarity(aligned["obama"], aligned["biden"], engine="dlib")
    assert dlib_same > dlib_different
    vector = embed_aligned(aligned["obama"])
    assert vector.shape == (128,) and identity_similarity(vector, aligned["obama"]) > 0.999


def test_copy_score(aligned: dict[str, np.ndarray], runs: list[Run]) -> None:
    truth, exemplar = aligned["obama2"], aligned["obama"]
    copied = copy_score(exemplar, truth, [exemplar])
    assert isinstance(copied, CopyScore)
    assert copied.output_identity == pytest.approx(1.0, abs=1e-5) and copied.output_ssim == 1.0
    assert copied.identity_excess > 0.2 and copied.ssim_excess > 0.2
    image = runs[0].own.image
    score = copy_score(image, truth, [aligned["biden"], exemplar])
    assert score.exemplar_index == 1  # nearest by embedding
    pinned = copy_score(image, truth, [aligned["biden"], exemplar], exemplar_index=1)
    assert pinned == score
    with pytest.raises(InputError):
        copy_score(truth, truth, [])
    with pytest.raises(InputError):
        copy_score(truth, truth, [exemplar], exemplar_index=3)
