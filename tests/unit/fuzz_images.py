"""Atheris fuzz harness for :mod:`consentry.faces.images`, and its seed images.

Run as a script (``tests/security/test_image_attacks.py`` does, for ~20 s)::

    python tests/unit/fuzz_images.py -max_total_time=20 -timeout=10 CORPUS_DIR

``CORPUS_DIR`` should hold seeds (:func:`write_seeds` makes them: small valid
JPEG, MPO, PNG, APNG, WebP and TIFF files in many modes). Each input goes to
``load_image_bytes``: an :class:`~consentry.errors.ImageError` is the expected
way to refuse it; any other exception, a result that breaks the ``LoadedImage``
invariants, a hang (``-timeout``) or a memory blow-up (``-rss_limit_mb``) is a
crash, and libFuzzer exits non-zero. Pillow and the loader are instrumented for
coverage feedback (the C decoders underneath are not).

Imported as a module (by the tests) it only offers the seed builders; nothing
here imports atheris, Pillow or Consentry at import time, so that the script can
import them under instrumentation first.
"""

from __future__ import annotations

import io
import pkgutil
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

FUZZ_MAX_PIXELS = 1_000_000
FUZZ_MAX_BYTES = 1 << 20

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# atheris instruments whole top-level packages (``include``) minus exact module
# names (``exclude``). Instrumenting all of Pillow costs ~10 s of start-up, so
# every Pillow module outside this set, which an allowed image can reach, is
# left out.
PILLOW_INSTRUMENTED = frozenset(
    {
        "ExifTags",
        "Image",
        "ImageFile",
        "ImageMode",
        "ImagePalette",
        "JpegImagePlugin",
        "MpoImagePlugin",
        "PngImagePlugin",
        "TiffImagePlugin",
        "TiffTags",
        "WebPImagePlugin",
        "_binary",
        "_util",
    }
)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_declaring(width: int, height: int, *, rows: int = 4) -> bytes:
    """A small, well-formed 8-bit grayscale PNG whose IHDR claims ``width x height``.

    The IDAT holds ``rows`` all-zero scanlines (capped at 4096 bytes wide) compressed
    with zlib: a decompression bomb in miniature, a few hundred bytes long.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    line = b"\x00" + b"\x00" * min(width, 4096)
    idat = zlib.compress(line * rows, 9)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def tiff_with_pages(pages: int, *, loop: bool = False) -> bytes:
    """A little-endian TIFF of ``pages`` chained one-pixel grey directories.

    Every IFD points at the same single pixel byte. With ``loop``, the last
    directory links back to the first (an endless chain).
    """
    tags = [
        (256, 3, 1),  # ImageWidth
        (257, 3, 1),  # ImageLength
        (258, 3, 8),  # BitsPerSample
        (259, 3, 1),  # Compression: none
        (262, 3, 1),  # PhotometricInterpretation: black is zero
        (273, 4, -1),  # StripOffsets: patched below
        (277, 3, 1),  # SamplesPerPixel
        (278, 3, 1),  # RowsPerStrip
        (279, 4, 1),  # StripByteCounts
    ]
    ifd_size = 2 + 12 * len(tags) + 4
    first = 8
    pixel = first + pages * ifd_size
    out = bytearray(b"II*\x00" + struct.pack("<I", first))
    for page in range(pages):
        out += struct.pack("<H", len(tags))
        for tag, kind, value in tags:
            value = pixel if value == -1 else value
            packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, 1) + packed
        last = page == pages - 1
        out += struct.pack("<I", (first if loop else 0) if last else len(out) + 4)
    out += b"\x80"
    return bytes(out)


def encode(image: Any, fmt: str, **params: Any) -> bytes:
    """``image.save`` into bytes, on copies.

    Copies, because Pillow leaves encoder state on a saved image object: after an
    MPO save, saving the same objects as a multi-page TIFF fails with
    ``TypeError: function takes at most 4 arguments (18 given)``.
    """
    if "append_images" in params:
        params["append_images"] = [extra.copy() for extra in params["append_images"]]
    out = io.BytesIO()
    image.copy().save(out, fmt, **params)
    return out.getvalue()


def seed_images() -> dict[str, bytes]:
    """Small valid images covering every allowed format and the modes the loader converts."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(20240611)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (12, 16, 4), dtype=np.uint8))
    gray = rgb.convert("L")
    gray16 = Image.fromarray((np.arange(12 * 16, dtype=np.uint16) * 300).reshape(12, 16))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    cmyk = rgb.convert("CMYK")
    frames = [Image.new("RGB", (16, 12), c) for c in ("red", "lime", "blue")]
    exif = Image.Exif()
    exif[0x0112] = 6

    return {
        "rgb.jpg": encode(rgb, "JPEG", quality=80),
        "progressive.jpg": encode(rgb, "JPEG", quality=80, progressive=True),
        "gray.jpg": encode(gray, "JPEG"),
        "cmyk.jpg": encode(cmyk, "JPEG"),
        "orient6.jpg": encode(rgb, "JPEG", exif=exif.tobytes()),
        "two.mpo": encode(frames[0], "MPO", save_all=True, append_images=frames[1:2]),
        "rgb.png": encode(rgb, "PNG"),
        "rgba.png": encode(rgba, "PNG"),
        "gray.png": encode(gray, "PNG"),
        "gray16.png": encode(gray16, "PNG"),
        "palette.png": encode(palette, "PNG", transparency=0),
        "bilevel.png": encode(rgb.convert("1"), "PNG"),
        "anim.png": encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50),
        "lossy.webp": encode(rgb, "WEBP", quality=50),
        "lossless.webp": encode(rgba, "WEBP", lossless=True),
        "anim.webp": encode(
            frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50
        ),
        "rgb.tif": encode(rgb, "TIFF"),
        "lzw.tif": encode(rgba, "TIFF", compression="tiff_lzw"),
        "deflate.tif": encode(gray, "TIFF", compression="tiff_adobe_deflate"),
        "gray16.tif": encode(gray16, "TIFF"),
        "float.tif": encode(gray.convert("F"), "TIFF"),
        "cmyk.tif": encode(cmyk, "TIFF"),
        "pages.tif": encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "orient6.tif": encode(rgb, "TIFF", tiffinfo={0x0112: 6}),
    }


def write_seeds(directory: Path) -> list[Path]:
    """Write :func:`seed_images` into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in seed_images().items():
        path = directory / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def main(argv: list[str]) -> None:
    """Fuzz ``load_image_bytes`` with libFuzzer flags and corpus dirs from ``argv``."""
    import warnings

    import atheris

    # Pillow warns about odd EXIF and the like on stderr: noise, not findings.
    warnings.simplefilter("ignore")

    # The consentry package pulls in the registry stack (SQLAlchemy, ...): import it
    # uninstrumented first, then instrument only the loader and part of Pillow.
    import PIL

    from consentry.errors import ImageError

    excluded = [
        f"PIL.{module.name}"
        for module in pkgutil.iter_modules(PIL.__path__)
        if module.name not in PILLOW_INSTRUMENTED
    ]
    with atheris.instrument_imports(include=["PIL", "consentry"], exclude=excluded):
        from PIL import Image

        from consentry.faces import images

        Image.init()  # import (and so instrument) every plugin now, not lazily

    def one_input(data: bytes) -> None:
        try:
            loaded = images.load_image_bytes(
                data, max_pixels=FUZZ_MAX_PIXELS, max_bytes=FUZZ_MAX_BYTES
            )
        except ImageError:
            return
        pixels = loaded.pixels
        assert pixels.dtype.name == "uint8", pixels.dtype
        assert pixels.shape == (loaded.height, loaded.width, 3), pixels.shape
        assert pixels.flags.c_contiguous and not pixels.flags.writeable
        assert 0 < loaded.width * loaded.height <= FUZZ_MAX_PIXELS
        assert loaded.format in images.ALLOWED_FORMATS, loaded.format
        assert loaded.frames >= 1, loaded.frames

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
