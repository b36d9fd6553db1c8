"""The degradation model: determinism, shapes, the forward operator, data consistency.

Real images only: 128 x 128 face crops of the public-domain photos shipped in
``consentry/data/faces`` (no mocks, no synthetic stand-ins where a face matters).
"""

from __future__ import annotations

import numpy as np
import pytest

from consentry.errors import ImageError, InputError
from consentry.generation.restoration.degrade import (
    Degradation,
    consistency_error,
    jpeg_roundtrip,
)
from tests.support.faces import face_crop


@pytest.fixture(scope="module")
def obama() -> np.ndarray:
    return face_crop("obama")


@pytest.fixture(scope="module")
def biden() -> np.ndarray:
    return face_crop("biden")


# -- parameters and shapes ------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale": 0},
        {"scale": 2.0},
        {"scale": True},
        {"blur_sigma": -1.0},
        {"blur_sigma": float("nan")},
        {"noise_sigma": float("inf")},
        {"jpeg_quality": 0},
        {"jpeg_quality": 100},
        {"jpeg_quality": 50.0},
        {"seed": -1},
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        Degradation(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_shapes_and_dtypes(obama: np.ndarray, scale: int) -> None:
    d = Degradation(scale=scale)
    low = d.apply(obama)
    assert low.shape == (128 // scale, 128 // scale, 3)
    assert low.dtype == np.uint8
    fwd = d.forward(obama)
    assert fwd.shape == low.shape
    assert fwd.dtype == np.float32
    assert d.low_res_shape(128, 96) == (128 // scale, 96 // scale)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((128, 124, 3), np.uint8),  # 124 is not a multiple of 8
        np.zeros((128, 128), np.uint8),
        np.zeros((128, 128, 4), np.uint8),
        np.zeros((128, 128, 3), np.float32),  # apply takes uint8 only
        np.zeros((0, 0, 3), np.uint8),
        [[0, 0, 0]],
    ],
)
def test_bad_images_are_refused(image: object) -> None:
    with pytest.raises(ImageError):
        Degradation().apply(image)  # type: ignore[arg-type]


def test_forward_refuses_non_finite() -> None:
    image = np.full((16, 16, 3), np.nan, np.float32)
    with pytest.raises(ImageError):
        Degradation(scale=2).forward(image)


# -- determinism ----------------------------------------------------------------


def test_apply_is_deterministic_given_the_seed(obama: np.ndarray) -> None:
    a = Degradation(seed=7).apply(obama)
    b = Degradation(seed=7).apply(obama)
    assert np.array_equal(a, b)
    assert np.array_equal(Degradation(seed=7).apply(obama), a)  # no state kept between calls
    c = Degradation(seed=8).apply(obama)
    assert not np.array_equal(a, c)


def test_apply_does_not_modify_its_input(obama: np.ndarray) -> None:
    before = obama.copy()
    Degradation().apply(obama)
    assert np.array_equal(obama, before)


# -- the forward operator -------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_apply_without_noise_or_jpeg_is_the_rounded_forward(obama: np.ndarray, scale: int) -> None:
    d = Degradation(scale=scale, blur_sigma=2.0, noise_sigma=0.0, jpeg_quality=None)
    expected = np.clip(np.rint(d.forward(obama)), 0, 255).astype(np.uint8)
    assert np.array_equal(d.apply(obama), expected)


def test_forward_preserves_constants_and_is_linear(obama: np.ndarray, biden: np.ndarray) -> None:
    d = Degradation(scale=8, blur_sigma=2.0)
    flat = np.full((128, 128, 3), 137, np.uint8)
    assert np.allclose(d.forward(flat), 137.0, atol=1e-3)
    a = obama.astype(np.float32)
    b = biden.astype(np.float32)
    assert np.allclose(d.forward(a + 0.5 * b), d.forward(a) + 0.5 * d.forward(b), atol=1e-2)


def test_no_blur_is_the_block_mean(obama: np.ndarray) -> None:
    d = Degradation(scale=4, blur_sigma=0.0)
    blocks = obama.astype(np.float64).reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))
    assert np.allclose(d.forward(obama), blocks, atol=1e-3)


def test_noise_has_the_stated_sigma() -> None:
    gray = np.full((512, 512, 3), 128, np.uint8)  # mid-gray: no clipping
    d = Degradation(scale=2, blur_sigma=0.0, noise_sigma=5.0, jpeg_quality=None)
    residual = d.apply(gray).astype(np.float64) - 128.0
    assert abs(residual.mean()) < 0.1
    assert abs(residual.std() - 5.0) < 0.15  # rounding adds 1/12 to the variance


def test_jpeg_quality_matters(obama: np.ndarray) -> None:
    low = Degradation(scale=4, noise_sigma=0.0, jpeg_quality=None).apply(obama)
    q10 = jpeg_roundtrip(low, 10)
    q90 = jpeg_roundtrip(low, 90)
    err10 = np.abs(q10.astype(int) - low).mean()
    err90 = np.abs(q90.astype(int) - low).mean()
    assert 0 < err90 < err10


# -- data consistency -----------------------------------------------------------


def test_truth_is_consistent_and_a_wrong_face_is_not(obama: np.ndarray, biden: np.ndarray) -> None:
    for scale in (4, 8):
        d = Degradation(scale=scale)  # blur 2, noise 5, JPEG 50
        low = d.apply(obama)
        truth = consistency_error(obama, low, d)
        other_person = consistency_error(biden, low, d)
        flat = np.full_like(obama, obama.reshape(-1, 3).mean(axis=0).astype(np.uint8))
        flat_err = consistency_error(flat, low, d)
        shifted = consistency_error(np.roll(obama, 12, axis=1), low, d)
        # The truth leaves only the noise (sigma 5) and the JPEG error, which is
        # large on 16-32 px images with 4:2:0 chroma (measured: 9.2 at x4, 12.5 at x8).
        assert 3.0 < truth < 15.0, truth
        assert other_person > 2 * truth, (truth, other_person)
        assert flat_err > 2 * truth, (truth, flat_err)
        assert shifted > 1.5 * truth, (truth, shifted)


def test_noise_free_observation_of_the_truth_has_zero_error(obama: np.ndarray) -> None:
    d = Degradation(scale=8)
    assert consistency_error(obama, d.forward(obama), d) < 1e-4


def test_consistency_error_checks_shapes(obama: np.ndarray) -> None:
    d = Degradation(scale=8)
    with pytest.raises(ImageError):
        consistency_error(obama, np.zeros((32, 32, 3), np.uint8), d)
    with pytest.raises(ImageError):
        consistency_error(obama[:, :124], np.zeros((16, 15, 3), np.uint8), d)
