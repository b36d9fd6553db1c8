"""Attacks on the image loader (``consentry.faces.images``), one named test each.

Decompression bombs, polyglots and wrong magic, truncation, oversized files, and
bounded fuzzing: atheris (libFuzzer) in a subprocess, plus hypothesis mutations.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from consentry.errors import (
    CorruptImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from consentry.faces import images
from consentry.faces.images import load_image, load_image_bytes
from tests.unit.fuzz_images import (
    encode,
    png_chunk,
    png_declaring,
    seed_images,
    tiff_with_pages,
    write_seeds,
)

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "tests" / "unit" / "fuzz_images.py"
FUZZ_SECONDS = int(os.environ.get("CONSENTRY_FUZZ_SECONDS", "20"))
MB = 1024 * 1024


def _noise_jpeg(size: int = 96) -> bytes:
    noise = np.random.default_rng(3).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return encode(Image.fromarray(noise), "JPEG", quality=90)


# -- decompression bombs --------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (100_000, 100_000),  # over 2x Image.MAX_IMAGE_PIXELS: Pillow's own error
        (10_000, 10_000),  # between 1x and 2x: Pillow's warning, made an error
        (7_000, 7_000),  # under Pillow's limits, over ours: our header check
        (65_535, 65_535),  # JPEG/WebP-sized maximum
    ],
)
def test_decompression_bomb_png_rejected_before_decode(width: int, height: int) -> None:
    # A few hundred bytes: real IHDR and CRCs, an IDAT of zlib-compressed zeros.
    bomb = png_declaring(width, height, rows=64)
    assert len(bomb) < 2048
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="pixels"):
        load_image_bytes(bomb)
    # Decoding even the 7000x7000 one would allocate ~49 MB and take far longer.
    assert time.perf_counter() - start < 1.0


def test_decompression_bomb_within_a_lowered_pixel_budget() -> None:
    bomb = png_declaring(2_000, 2_000, rows=2_000)  # fully valid, 4 MP of zeros, ~4 KB
    assert len(bomb) < 8192
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError):
        load_image_bytes(bomb, max_pixels=1_000_000)
    assert time.perf_counter() - start < 1.0
    assert load_image_bytes(bomb, max_pixels=4_000_000).width == 2_000


def test_tiff_page_flood_rejected_quickly() -> None:
    # 50,000 one-pixel pages in 5.7 MB: Pillow's n_frames needs about two minutes
    # for this (it is quadratic); the loader walks the chain itself and stops.
    flood = tiff_with_pages(50_000)
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="pages"):
        load_image_bytes(flood)
    assert time.perf_counter() - start < 1.0


def test_progressive_jpeg_scan_flood_rejected() -> None:
    # libjpeg re-walks every coefficient for each scan: 400 copies of a 14-byte
    # refinement scan make a 30 KB, 4 MP JPEG take ~3 s; at 40 MP, minutes.
    jpeg = encode(Image.new("RGB", (2000, 2000), "gray"), "JPEG", progressive=True)
    last_scan = jpeg[jpeg.rindex(b"\xff\xda") : -2]
    assert load_image_bytes(jpeg).width == 2000
    flood = jpeg[:-2] + last_scan * 400 + jpeg[-2:]
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="scans"):
        load_image_bytes(flood)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("name", "make"),
    [
        (
            "PNG chunk flood",
            lambda png, jpeg: png[:33] + png_chunk(b"zzZz", b"") * 1_000_000 + png[33:],
        ),
        ("JPEG fill-byte flood", lambda png, jpeg: jpeg[:2] + b"\xff" * 5_000_000 + jpeg[2:]),
        (
            "JPEG marker flood",
            lambda png, jpeg: jpeg[:2] + b"\xff\xfe\x00\x02" * 1_000_000 + jpeg[2:],
        ),
    ],
)
def test_parser_step_flood_rejected_quickly(
    name: str, make: Callable[[bytes, bytes], bytes]
) -> None:
    # Pillow walks PNG chunks and JPEG header bytes in Python (2-10 us a step):
    # unchecked, each of these few-MB files costs it seconds to a minute.
    png = encode(Image.new("L", (4, 4)), "PNG")
    jpeg = encode(Image.new("RGB", (8, 8)), "JPEG")
    flood = make(png, jpeg)
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="more than"):
        load_image_bytes(flood)
    assert time.perf_counter() - start < 1.0


# -- wrong magic, polyglots ---------------------------------------------------------


POLYGLOTS: list[tuple[str, bytes, type[ImageError]]] = [
    (
        "HTML with a PNG appended",
        b"<html><script>alert(1)</script>" + png_declaring(8, 8),
        UnsupportedImageError,
    ),
    ("PDF header, JPEG body", b"%PDF-1.4\n" + _noise_jpeg(), UnsupportedImageError),
    ("GIF header, PNG body", b"GIF89a" + png_declaring(8, 8), UnsupportedImageError),
    (
        "SVG with script",
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>x()</script></svg>',
        UnsupportedImageError,
    ),
    ("ZIP", b"PK\x03\x04" + b"\x00" * 64, UnsupportedImageError),
    ("ELF", b"\x7fELF\x02\x01\x01" + b"\x00" * 64, UnsupportedImageError),
    ("BigTIFF", b"II+\x00\x08\x00\x00\x00" + b"\x00" * 64, UnsupportedImageError),
    ("RIFF WAVE", b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 32, UnsupportedImageError),
    ("JPEG magic, PNG body", b"\xff\xd8\xff" + png_declaring(8, 8)[3:], CorruptImageError),
    ("PNG magic, JPEG body", b"\x89PNG\r\n\x1a\n" + _noise_jpeg()[8:], CorruptImageError),
    (
        "TIFF magic, GIF body",
        b"II*\x00" + encode(Image.new("RGB", (4, 4)), "GIF"),
        CorruptImageError,
    ),
    ("WEBP magic, garbage", b"RIFF\x20\x00\x00\x00WEBPVP8 " + b"\xff" * 24, CorruptImageError),
]


@pytest.mark.parametrize(("name", "data", "error"), POLYGLOTS, ids=[p[0] for p in POLYGLOTS])
def test_polyglot_or_wrong_magic_rejected(
    tmp_path: Path, name: str, data: bytes, error: type[ImageError]
) -> None:
    # The extension promises an image; the magic bytes decide, and only the one
    # matching decoder is ever tried.
    path = tmp_path / "innocent.png"
    path.write_bytes(data)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert type(info.value) is error, info.value
    assert str(info.value).startswith(f"{path}: ")


def test_image_with_trailing_payload_loads_as_the_image_only() -> None:
    # A valid JPEG followed by a ZIP (a classic polyglot) is a valid JPEG: the
    # payload is never interpreted, and the hash covers every byte.
    data = _noise_jpeg() + b"PK\x03\x04" + b"\x00" * 128
    img = load_image_bytes(data)
    assert img.format == "JPEG" and img.width == 96


# -- truncation ---------------------------------------------------------------------


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_truncated_jpeg_rejected(progressive: bool, keep: float) -> None:
    noise = np.random.default_rng(5).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG", quality=90, progressive=progressive)
    with pytest.raises(CorruptImageError, match="truncated"):
        load_image_bytes(data[: int(len(data) * keep)])


# -- size ---------------------------------------------------------------------------


def test_oversized_file_rejected_without_reading_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sparse = tmp_path / "huge.jpg"
    with sparse.open("wb") as f:
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(60 * MB)  # sparse: costs no disk

    read_sizes: list[int] = []
    real_read = os.read

    def counting_read(fd: int, n: int) -> bytes:
        chunk = real_read(fd, n)
        read_sizes.append(len(chunk))
        return chunk

    monkeypatch.setattr(images.os, "read", counting_read)

    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="more than the limit"):
        load_image(sparse)
    assert time.perf_counter() - start < 1.0
    assert read_sizes == []  # refused from fstat alone

    # A stream whose size is unknown up front is read to max_bytes + 1, no further.
    with pytest.raises(ImageTooLargeError):
        load_image("/dev/zero", max_bytes=3 * MB)
    assert sum(read_sizes) == 3 * MB + 1

    # Bytes already in memory: refused before hashing or parsing.
    with pytest.raises(ImageTooLargeError):
        load_image_bytes(b"\xff\xd8\xff" + bytes(60 * MB))


# -- fuzzing --------------------------------------------------------------------------


def test_fuzz_image_loader_never_crashes(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    seeds = write_seeds(corpus)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    cmd = [
        sys.executable,
        str(HARNESS),
        f"-max_total_time={FUZZ_SECONDS}",
        "-timeout=10",  # one input taking longer is a hang, reported as a crash
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}{os.sep}",
        str(corpus),
    ]
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=FUZZ_SECONDS + 120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    tail = output[-4000:]
    assert proc.returncode == 0, f"fuzzer found a crash (exit {proc.returncode}):\n{tail}"
    assert not list(artifacts.iterdir()), tail
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", output) or re.search(
        r"Done (\d+) runs", output
    )
    assert runs is not None, tail
    assert int(runs.group(1)) > len(seeds), tail


SEEDS = list(seed_images().values())


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["set", "flip", "insert", "delete", "truncate", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "splice":
            other = draw(st.sampled_from(SEEDS))
            data[at:] = other[draw(st.integers(0, len(other) - 1)) :]
    return bytes(data)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_images())
def test_mutated_images_raise_only_image_errors(data: bytes) -> None:
    try:
        img = load_image_bytes(data, max_pixels=1_000_000)
    except ImageError as exc:
        message = str(exc)
        assert message.startswith("<bytes>: ") and "\n" not in message
        return
    assert img.pixels.dtype == np.uint8
    assert img.pixels.shape == (img.height, img.width, 3)
    assert img.pixels.flags.c_contiguous
    assert img.format in images.ALLOWED_FORMATS
    assert img.frames >= 1
