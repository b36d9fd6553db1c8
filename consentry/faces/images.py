"""Safe image input: the one way any Consentry command reads a photo.

Every command that takes a photo goes through :func:`load_image` (a path or raw
bytes) or :func:`load_image_bytes`, and gets back a :class:`LoadedImage` whose
pixels are an ``H x W x 3`` ``uint8`` RGB array, or an
:class:`~consentry.errors.ImageError`.

Invariants
----------
1. **Bounded reading.** At most ``max_bytes + 1`` bytes are ever read from a
   path; a regular file whose size already exceeds ``max_bytes`` is refused from
   ``fstat`` without reading it. Bytes input longer than ``max_bytes`` is refused
   before it is hashed or parsed. Either way: :class:`ImageTooLargeError`.
2. **Magic bytes decide the format, not the file name.** Before Pillow sees the
   data, its first bytes must be a JPEG (``FF D8 FF``), PNG (``89 50 4E 47 0D 0A
   1A 0A``), WebP (``RIFF....WEBP``) or TIFF (``II*\\0`` / ``MM\\0*``) signature;
   anything else (GIF, BMP, SVG, PDF, HEIC, text, ...) is an
   :class:`UnsupportedImageError` that names what was seen. Pillow is then asked
   to try *only* the plugin for that format (``Image.open(fp, formats=[...])``),
   so a PNG named ``.jpg`` loads as PNG and a polyglot cannot reach another
   decoder. (Pillow's JPEG plugin hands multi-picture JPEGs to its MPO subclass;
   that is still JPEG, and is reported as ``"JPEG"``.)
3. **Pixel budget from the header, before decoding.** Width and height come from
   the header (``im.size`` after ``Image.open``, which decodes no pixels); zero
   or negative sizes are :class:`CorruptImageError`, a side over
   :data:`MAX_SIDE` or ``width * height > max_pixels`` is
   :class:`ImageTooLargeError`, all before ``load()``. Pillow's own guard is kept
   and made strict: ``DecompressionBombError`` and ``DecompressionBombWarning``
   (the latter turned into an error inside a ``warnings.catch_warnings()``
   block, restored on exit) are :class:`ImageTooLargeError` too. So the
   effective limit is ``min(max_pixels, Image.MAX_IMAGE_PIXELS)``. Pillow's
   ``UserWarning`` noise about damaged metadata is silenced in the same block.
4. **Bounded parsing work.** Where Pillow or libjpeg would spend time out of
   proportion to the pixels, the structure is checked first, with cheap scans:
   a PNG of more than 50,000 chunks, a JPEG with more than 10,000 markers, fill
   or junk bytes before its first scan, a JPEG with more than 100 scans
   (progressive-scan attack), more than :data:`MAX_FRAMES` frames or TIFF
   pages: :class:`ImageTooLargeError`. Worst case with the default limits:
   about a second of CPU (measured), not minutes.
5. **No raw exceptions.** Whatever Pillow (or numpy, while converting) raises on
   hostile input -- ``OSError``, ``SyntaxError``, ``ValueError``,
   ``struct.error``, ``EOFError``, ``MemoryError``, or anything else -- becomes a
   :class:`CorruptImageError` (:class:`ImageTooLargeError` for memory and
   decompression-bomb errors) with a one-line message that starts with the
   source; the original exception is kept as ``__cause__``. A missing path, a
   directory or an unreadable file is a plain :class:`ImageError`.
6. **Normalised output.** ``pixels`` is the first frame only (``frames``
   reports how many the source holds; :func:`face_views` gives every frame and,
   for frames with transparency, every way a viewer could show them, for the
   face scan, re-decoding the kept file bytes under the same guards. APNG as
   its acTL declares, animated WebP, MPO, and multi-page TIFF counted by
   walking the directory chain here, because Pillow's ``n_frames`` is
   quadratic in the page count; over :data:`MAX_FRAMES` is
   :class:`ImageTooLargeError`, a looping chain is corrupt); EXIF orientation
   applied (the same eight transforms as ``ImageOps.exif_transpose``; an
   unreadable EXIF block is ignored, not fatal); every mode converted to RGB:
   anything with alpha or a transparency key (``RGBA``, ``LA``, ``PA``, ``P`` /
   ``L`` / ``RGB`` with ``tRNS``) is composited onto white; 16-bit (``I;16*``)
   is scaled by ``255 / 65535`` with rounding (not clipped); ``I`` is treated as
   16-bit when its values fit ``0..65535`` and min-max stretched otherwise;
   ``F`` is scaled by 255 when it fits ``0..1``, taken as is when it fits
   ``0..255``, min-max stretched otherwise (NaN and infinities become 0);
   ``CMYK``, ``1``, ``L``, ``YCbCr`` etc. use Pillow's conversion (ICC profiles
   are not applied). ``pixels`` is C-contiguous and read-only; ``width`` and
   ``height`` describe it (after rotation).
7. **No leaked global state.** ``Image.MAX_IMAGE_PIXELS`` and
   ``ImageFile.LOAD_TRUNCATED_IMAGES`` are read, never written. Truncation
   detection relies on ``LOAD_TRUNCATED_IMAGES`` staying ``False`` (Pillow's
   default): nothing in Consentry may enable it. ``warnings.catch_warnings``
   swaps the process-wide filter list (before Python 3.14), so two overlapping
   blocks in different threads can leave one's filters installed for good; the
   Pillow part of every load therefore runs under a module lock, one thread at
   a time (use processes to decode in parallel). Code elsewhere that enters
   ``catch_warnings`` from another thread at the same moment can still race.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, UnidentifiedImageError

from consentry.errors import (
    CorruptImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)

__all__ = [
    "ALLOWED_FORMATS",
    "BYTES_SOURCE",
    "FACE_MAX_FRAMES",
    "FACE_MAX_TOTAL_PIXELS",
    "MAX_BYTES_DEFAULT",
    "MAX_FRAMES",
    "MAX_PIXELS_DEFAULT",
    "MAX_SIDE",
    "FaceView",
    "LoadedImage",
    "face_views",
    "load_image",
    "load_image_bytes",
    "sniff_format",
]

MAX_PIXELS_DEFAULT: Final = 40_000_000
"""Default pixel budget (width x height of the first frame)."""

MAX_BYTES_DEFAULT: Final = 50 * 1024 * 1024
"""Default byte budget for one image file."""

ALLOWED_FORMATS: Final = ("JPEG", "PNG", "WEBP", "TIFF")
"""The only formats accepted, by Pillow's format names."""

MAX_SIDE: Final = 65_535
"""No side may be longer than this (JPEG's own limit), whatever ``max_pixels`` says."""

MAX_FRAMES: Final = 10_000
"""A source with more frames or pages than this is refused (only the first is decoded)."""

FACE_MAX_FRAMES: Final = 64
"""An image with more frames or pages than this is refused for face purposes
(:func:`face_views`), because every frame is scanned for faces."""

FACE_MAX_TOTAL_PIXELS: Final = 64 * 1024 * 1024
"""The pixels of all frames together that :func:`face_views` decodes at most."""

BYTES_SOURCE: Final = "<bytes>"
"""``LoadedImage.source`` for images given as bytes."""

_READ_CHUNK: Final = 1 << 20
_WARNINGS_LOCK: Final = threading.Lock()  # see invariant 7
_MESSAGE_LIMIT: Final = 200

_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC: Final = b"\xff\xd8\xff"
_TIFF_MAGICS: Final = (b"II*\x00", b"MM\x00*")

# Pillow format names each sniffed format may come back as.
_PILLOW_FORMATS: Final[dict[str, frozenset[str]]] = {
    "JPEG": frozenset({"JPEG", "MPO"}),
    "PNG": frozenset({"PNG"}),
    "WEBP": frozenset({"WEBP"}),
    "TIFF": frozenset({"TIFF"}),
}

_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})

_U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded, normalised image and where it came from.

    ``pixels`` is ``height x width x 3``, ``uint8``, RGB, C-contiguous and
    read-only. ``sha256`` is the hex digest of the file bytes as read.
    ``frames`` is the number of frames in the source (only the first is used).
    ``has_alpha`` is true when the first frame has an alpha channel or a
    transparency key that makes some pixel less than opaque. ``data`` holds the
    file bytes when :func:`face_views` needs to decode more than ``pixels``
    (``frames > 1`` or ``has_alpha``), and is empty otherwise.
    Equality is identity (the array has no scalar ``==``).
    """

    pixels: _U8 = field(repr=False)
    format: str
    width: int
    height: int
    sha256: str
    source: str
    frames: int = 1
    has_alpha: bool = False
    data: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, eq=False)
class FaceView:
    """One way a viewer could show one frame of an image, for the face scan.

    ``kind`` is ``"image"`` (a frame without transparency), or for a frame with
    transparency one of ``"over-white"``, ``"over-black"`` (the frame
    composited onto a white / black background), ``"ignoring-alpha"`` (its RGB
    as a viewer that ignores alpha shows it) and ``"alpha"`` (the alpha plane as
    a grey image). ``pixels`` is ``H x W x 3`` uint8 RGB, read-only, oriented
    like ``LoadedImage.pixels`` (the first frame's EXIF orientation applied).
    """

    frame: int
    kind: str
    pixels: _U8 = field(repr=False)


def load_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = MAX_PIXELS_DEFAULT,
    max_bytes: int = MAX_BYTES_DEFAULT,
) -> LoadedImage:
    """Load an image from a path (``str`` / ``Path``) or from raw ``bytes``.

    ``bytes`` are always image data, never a path. Raises an
    :class:`~consentry.errors.ImageError` subclass for anything that is not a
    readable JPEG, PNG, WebP or TIFF within the limits.
    """
    _check_limits(max_pixels, max_bytes)
    if isinstance(source, bytes):
        return _decode(source, BYTES_SOURCE, max_pixels=max_pixels, max_bytes=max_bytes)
    name = os.fspath(source)
    data = _read_bounded(Path(name), _printable(name), max_bytes)
    return _decode(data, name, max_pixels=max_pixels, max_bytes=max_bytes)


def load_image_bytes(
    data: bytes,
    *,
    max_pixels: int = MAX_PIXELS_DEFAULT,
    max_bytes: int = MAX_BYTES_DEFAULT,
) -> LoadedImage:
    """Load an image from raw bytes; ``source`` is reported as ``"<bytes>"``."""
    _check_limits(max_pixels, max_bytes)
    return _decode(bytes(data), BYTES_SOURCE, max_pixels=max_pixels, max_bytes=max_bytes)


# -- reading -----------------------------------------------------------------


def _check_limits(max_pixels: int, max_bytes: int) -> None:
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")


def _read_bounded(path: Path, label: str, max_bytes: int) -> bytes:
    """Read at most ``max_bytes + 1`` bytes; refuse oversized regular files unread."""
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(f"{label}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{label}: cannot open ({_one_line(exc.strerror or exc)})") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"{label}: is a directory, not an image file")
        if stat.S_ISREG(info.st_mode) and info.st_size > max_bytes:
            raise ImageTooLargeError(
                f"{label}: file is {info.st_size} bytes, more than the limit of {max_bytes}"
            )
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise ImageError(f"{label}: cannot read ({_one_line(exc.strerror or exc)})") from exc
    finally:
        os.close(fd)
    if total > max_bytes:
        raise ImageTooLargeError(f"{label}: file is more than the limit of {max_bytes} bytes")
    return b"".join(chunks)


# -- format sniffing ---------------------------------------------------------


def sniff_format(data: bytes) -> str | None:
    """The allowed format (``JPEG``, ``PNG``, ``WEBP``, ``TIFF``) the magic bytes
    announce, or ``None``."""
    if data.startswith(_JPEG_MAGIC):
        return "JPEG"
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in _TIFF_MAGICS:
        return "TIFF"
    return None


def _is_truncated_signature(data: bytes) -> bool:
    """True if ``data`` is too short to hold a signature it begins to spell."""
    if len(data) < 12 and data.startswith(b"RIFF"):
        return True
    signatures = (_JPEG_MAGIC, _PNG_MAGIC, b"RIFF", *_TIFF_MAGICS)
    return any(len(data) < len(sig) and sig.startswith(data) for sig in signatures)


_ISO_BMFF_BRANDS: Final = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"hevc": "HEIC",
    b"hevx": "HEIC",
    b"heim": "HEIC",
    b"heis": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"crx ": "Canon CR3 raw",
    b"jxl ": "JPEG XL",
}

_PREFIXES: Final = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"%PDF", "PDF"),
    (b"%!PS", "PostScript"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "Photoshop PSD"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000 codestream"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL codestream"),
    (b"qoif", "QOI"),
    (b"v/1\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"\x7fELF", "ELF executable"),
    (b"MZ", "Windows executable"),
)


def _describe(data: bytes) -> str:
    """A short, printable description of data that is not an allowed image."""
    head = data[:1024]
    for prefix, name in _PREFIXES:
        if head.startswith(prefix):
            return name
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        known = _ISO_BMFF_BRANDS.get(brand)
        return known or f"ISO media file (brand {brand.decode('latin-1')!r})"
    if head.startswith(b"RIFF"):
        return f"RIFF container of type {head[8:12].decode('latin-1')!r}, not WEBP"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"1234567" and head[2:3].isspace():
        return "PNM / PAM"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in text or (text.startswith(b"<?xml") and b"<svg" in data[:65536].lower()):
        return "SVG"
    if text.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    if text.startswith(b"<"):
        return "XML / markup text"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        decoded = None
    if decoded is not None and all(c.isprintable() or c in "\t\r\n\f" for c in decoded):
        return "text"
    return f"unrecognised data starting {data[:8].hex(' ')}"


# -- structure budget --------------------------------------------------------

# Pillow walks PNG chunks and the JPEG header (markers, fill and junk bytes up
# to the first scan) in Python, at 2-10 us a step: a 50 MB file of 12-byte PNG
# chunks or of 0xFF fill bytes costs it a minute or more. These caps keep its
# worst case near a second; real photos use a few dozen steps.
_MAX_PNG_CHUNKS: Final = 50_000
_MAX_JPEG_HEADER_STEPS: Final = 10_000
# libjpeg re-processes the whole coefficient buffer for every progressive scan;
# a 30 KB file can hold thousands of tiny scans (seconds each at 40 MP).
# Encoders write about 10; ``FF DA`` cannot occur inside entropy-coded data.
_MAX_JPEG_SCANS: Final = 100
_FF_RUN: Final = re.compile(rb"\xff+")


def _check_structure(data: bytes, fmt: str, label: str) -> None:
    """Refuse files whose structure alone would keep Pillow's parser busy for long."""
    if fmt == "PNG" and _png_chunks(data) > _MAX_PNG_CHUNKS:
        raise ImageTooLargeError(f"{label}: PNG has more than {_MAX_PNG_CHUNKS} chunks")
    if fmt == "JPEG" and (scans := data.count(b"\xff\xda")) > _MAX_JPEG_SCANS:
        raise ImageTooLargeError(
            f"{label}: JPEG has {scans} scans, more than the limit of {_MAX_JPEG_SCANS}"
        )
    if fmt == "JPEG" and _jpeg_header_steps(data) > _MAX_JPEG_HEADER_STEPS:
        raise ImageTooLargeError(
            f"{label}: JPEG has more than {_MAX_JPEG_HEADER_STEPS} markers, fill or junk"
            " bytes before its image data"
        )


def _png_chunks(data: bytes) -> int:
    """Chunks up to IEND (or the end of data), counting stops past the cap."""
    pos, count = len(_PNG_MAGIC), 0
    while pos + 8 <= len(data) and count <= _MAX_PNG_CHUNKS:
        (length,) = struct.unpack_from(">I", data, pos)
        count += 1
        if data[pos + 4 : pos + 8] == b"IEND":
            break
        pos += 12 + length
    return count


def _jpeg_header_steps(data: bytes) -> int:
    """Steps Pillow's JPEG header loop takes before the first scan (SOS), capped.

    Like Pillow, skip junk bytes and 0xFF fill one at a time (one step each),
    segments with a length in one step, standalone markers in one step.
    """
    pos, steps, end = 2, 0, len(data)
    while pos < end and steps <= _MAX_JPEG_HEADER_STEPS:
        ff = data.find(b"\xff", pos)
        if ff < 0:
            break
        run = _FF_RUN.match(data, ff)
        run_end = run.end() if run else ff + 1
        steps += (ff - pos) + (run_end - ff)  # junk bytes, then the 0xFF run
        if run_end >= end:
            break
        marker = data[run_end]
        pos = run_end + 1
        if marker == 0xDA:  # start of scan: libjpeg (C) takes over
            break
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD9:
            continue  # no length field
        if pos + 2 > end:
            break
        pos += int.from_bytes(data[pos : pos + 2], "big")
    return steps


# -- decoding ----------------------------------------------------------------


def _decode(data: bytes, source: str, *, max_pixels: int, max_bytes: int) -> LoadedImage:
    label = _printable(source)
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"{label}: {len(data)} bytes is more than the limit of {max_bytes} bytes"
        )
    if not data:
        raise CorruptImageError(f"{label}: empty file (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        if _is_truncated_signature(data):
            raise CorruptImageError(f"{label}: only {len(data)} bytes, truncated image header")
        allowed = ", ".join(ALLOWED_FORMATS)
        raise UnsupportedImageError(
            f"{label}: not an allowed image format (saw {_describe(data)}; allowed: {allowed})"
        )
    _check_structure(data, fmt, label)
    digest = hashlib.sha256(data).hexdigest()

    with _WARNINGS_LOCK, _pillow_errors(label, fmt), warnings.catch_warnings():
        # Pillow's UserWarnings ("Corrupt EXIF data", "Tag data larger than file")
        # describe the hostile file, not a bug; the image decodes or is refused.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            if im.format not in _PILLOW_FORMATS[fmt]:
                raise CorruptImageError(f"{label}: not a valid {fmt} image (read as {im.format})")
            _check_size(label, fmt, im.size, max_pixels)
            frames = _tiff_pages(data, label) if fmt == "TIFF" else _count_frames(im, label)
            if frames > 1:
                im.seek(0)
                _check_size(label, fmt, im.size, max_pixels)
            im.load()
            _check_size(label, fmt, im.size, max_pixels)
            orientation = _orientation(im)
            rgb = _to_rgb(im, label)
            pixels = np.ascontiguousarray(_orient(rgb, orientation), dtype=np.uint8)
            has_alpha = _has_alpha(im)

    pixels.setflags(write=False)
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    return LoadedImage(
        pixels=pixels,
        format=fmt,
        width=width,
        height=height,
        sha256=digest,
        source=source,
        frames=frames,
        has_alpha=has_alpha,
        data=data if frames > 1 or has_alpha else b"",
    )


def face_views(
    image: LoadedImage,
    *,
    max_frames: int = FACE_MAX_FRAMES,
    max_total_pixels: int = FACE_MAX_TOTAL_PIXELS,
    max_pixels: int = MAX_PIXELS_DEFAULT,
) -> list[FaceView]:
    """Every way a viewer could show ``image``: each frame, and for a frame with
    transparency the four views of :class:`FaceView`.

    Invariants: a single-frame image without transparency gives exactly one view,
    ``image.pixels`` itself (nothing is decoded again). Otherwise the file is
    decoded again under the same guards as :func:`load_image`; views whose pixels
    are identical to an earlier one (a still frame repeated, alpha that changes
    nothing visible) are given once. More than ``max_frames`` frames, or more than
    ``max_total_pixels`` pixels over all frames, is an :class:`ImageTooLargeError`
    (refused for face purposes, never scanned in part). Frame sizes may differ
    (TIFF pages); each is checked against ``max_pixels``.
    """
    label = _printable(image.source)
    if image.frames > max_frames:
        raise ImageTooLargeError(
            f"{label}: has {image.frames} frames; the face check scans every frame and"
            f" at most {max_frames}, so this image is refused for face purposes"
        )
    if image.frames == 1 and not image.has_alpha:
        return [FaceView(0, "image", image.pixels)]
    if not image.data:
        raise CorruptImageError(
            f"{label}: {image.frames} frame(s) with transparency={image.has_alpha}, but the"
            " file bytes were not kept: cannot show every view to the face check"
        )
    fmt = image.format
    views: list[FaceView] = []
    seen: set[tuple[tuple[int, ...], bytes]] = set()
    total = 0
    with _WARNINGS_LOCK, _pillow_errors(label, fmt), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(image.data), formats=[fmt]) as im:
            orientation = _orientation(im)
            for number in range(image.frames):
                im.seek(number)
                _check_size(label, fmt, im.size, max_pixels)
                total += im.size[0] * im.size[1]
                if total > max_total_pixels:
                    raise ImageTooLargeError(
                        f"{label}: its {image.frames} frames hold more than {max_total_pixels}"
                        " pixels together, more than the face check scans: refused"
                    )
                im.load()
                for kind, rgb in _frame_views(im, label):
                    pixels = np.ascontiguousarray(_orient(rgb, orientation), dtype=np.uint8)
                    key = (pixels.shape, hashlib.blake2b(pixels.data, digest_size=16).digest())
                    if key in seen:
                        continue
                    seen.add(key)
                    pixels.setflags(write=False)
                    views.append(FaceView(number, kind, pixels))
    return views


def _has_alpha(im: Image.Image) -> bool:
    """True if the loaded frame makes any pixel less than opaque."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return isinstance(im.info.get("transparency"), int) and im.mode != "F"
    if im.mode not in _ALPHA_MODES and not im.has_transparency_data:
        return False
    alpha = np.asarray(im.convert("RGBA"))[:, :, 3]
    return bool(alpha.size) and int(alpha.min()) < 255


def _frame_views(im: Image.Image, label: str) -> list[tuple[str, _U8]]:
    """The views of one loaded frame (see :class:`FaceView`), not yet oriented."""
    if not _has_alpha(im):
        return [("image", _to_rgb(im, label))]
    if im.mode.startswith("I;16") or im.mode == "I":
        keyed = _gray_high_depth_to_rgb(im)
        plain = _gray_high_depth_to_rgb(_without_key(im))
        return [("over-white", keyed), ("ignoring-alpha", plain)]
    rgba = np.asarray(im.convert("RGBA"))
    rgb, alpha = rgba[:, :, :3], rgba[:, :, 3]
    black = np.zeros_like(rgb)
    return [
        ("over-white", _over_white(rgb, alpha)),
        ("over-black", _over(rgb, alpha, black)),
        ("ignoring-alpha", np.ascontiguousarray(rgb)),
        ("alpha", np.repeat(alpha[:, :, np.newaxis], 3, axis=2)),
    ]


def _without_key(im: Image.Image) -> Image.Image:
    copy = im.copy()
    copy.info.pop("transparency", None)
    return copy


@contextmanager
def _pillow_errors(label: str, fmt: str) -> Iterator[None]:
    """Turn whatever a decoder raises on hostile input into an ImageError."""
    try:
        yield
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise CorruptImageError(f"{label}: not a valid {fmt} image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            f"{label}: {fmt} header declares too many pixels ({_one_line(exc)})"
        ) from exc
    except MemoryError as exc:
        raise ImageTooLargeError(f"{label}: not enough memory to decode this {fmt} image") from exc
    except Exception as exc:
        # Hostile input can make a Pillow plugin raise nearly anything (OSError,
        # SyntaxError, ValueError, struct.error, EOFError, IndexError, KeyError,
        # TypeError, ZeroDivisionError, RecursionError, ...): all mean "corrupt".
        raise CorruptImageError(
            f"{label}: corrupt or truncated {fmt} image ({type(exc).__name__}: {_one_line(exc)})"
        ) from exc


def _check_size(label: str, fmt: str, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"{label}: {fmt} header declares an empty {width}x{height} image")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ImageTooLargeError(
            f"{label}: {fmt} image is {width}x{height}, a side is longer than {MAX_SIDE}"
        )
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{label}: {fmt} image is {width}x{height} = {width * height} pixels,"
            f" more than the limit of {max_pixels}"
        )


def _count_frames(im: Image.Image, label: str) -> int:
    """Pillow's frame count (APNG: declared in acTL; WebP: from libwebp's demuxer)."""
    frames = getattr(im, "n_frames", 1)
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        raise CorruptImageError(f"{label}: bad frame count {_one_line(repr(frames))}")
    if frames > MAX_FRAMES:
        raise ImageTooLargeError(
            f"{label}: declares {frames} frames, more than the limit of {MAX_FRAMES}"
        )
    return frames


def _tiff_pages(data: bytes, label: str) -> int:
    """Count a TIFF's pages by walking its IFD chain (offsets only, no tags).

    Not Pillow's ``n_frames``: that parses every directory and is quadratic in
    the page count (50,000 one-pixel pages, 5.7 MB: two minutes).
    """
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", data, 4)
    seen: set[int] = set()
    while offset:
        if offset in seen:
            raise CorruptImageError(f"{label}: TIFF directory chain loops back to {offset}")
        if len(seen) == MAX_FRAMES:
            raise ImageTooLargeError(f"{label}: TIFF has more than {MAX_FRAMES} pages")
        if offset + 2 > len(data):
            raise CorruptImageError(f"{label}: TIFF directory offset {offset} is past the end")
        seen.add(offset)
        (entries,) = struct.unpack_from(order + "H", data, offset)
        link = offset + 2 + 12 * entries
        if link + 4 > len(data):
            raise CorruptImageError(f"{label}: truncated TIFF directory at {offset}")
        (offset,) = struct.unpack_from(order + "I", data, link)
    return max(len(seen), 1)


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8); 1 if absent, out of range or unreadable."""
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return 1  # a broken EXIF block does not make the pixels unusable
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8:
        return value
    return 1


def _orient(rgb: _U8, orientation: int) -> _U8:
    """Apply an EXIF orientation, as ``ImageOps.exif_transpose`` would."""
    if orientation == 2:  # mirror horizontal (FLIP_LEFT_RIGHT)
        return rgb[:, ::-1]
    if orientation == 3:  # rotate 180
        return rgb[::-1, ::-1]
    if orientation == 4:  # mirror vertical (FLIP_TOP_BOTTOM)
        return rgb[::-1]
    if orientation == 5:  # TRANSPOSE (mirror along the main diagonal)
        return rgb.swapaxes(0, 1)
    if orientation == 6:  # rotate 90 clockwise (ROTATE_270)
        return np.rot90(rgb, k=-1)
    if orientation == 7:  # TRANSVERSE (mirror along the anti-diagonal)
        return rgb[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:  # rotate 90 counter-clockwise (ROTATE_90)
        return np.rot90(rgb, k=1)
    return rgb


# -- colour conversion -------------------------------------------------------


def _to_rgb(im: Image.Image, label: str) -> _U8:
    """Convert a loaded frame of any mode to ``H x W x 3`` uint8 RGB."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _gray_high_depth_to_rgb(im)
    if mode in _ALPHA_MODES or im.has_transparency_data:
        rgba = np.asarray(im.convert("RGBA"))
        return _over_white(rgba[:, :, :3], rgba[:, :, 3])
    if mode == "RGB":
        return np.asarray(im)
    try:
        converted = im.convert("RGB")
    except ValueError as exc:
        raise UnsupportedImageError(
            f"{label}: colour mode {mode!r} cannot be converted to RGB"
        ) from exc
    return np.asarray(converted)


def _gray_high_depth_to_rgb(im: Image.Image) -> _U8:
    """16-bit, 32-bit integer and float gray to RGB, scaled (not clipped) to 8 bits."""
    raw = np.asarray(im)
    if im.mode == "F":
        gray = _float_to_u8(raw.astype(np.float64))
    elif raw.size and (int(raw.min()) < 0 or int(raw.max()) > 65535):
        gray = _stretch(raw.astype(np.float64))
    else:  # 16-bit range: 65535 -> 255, 32768 -> 128, rounded
        gray = ((raw.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    rgb = np.repeat(gray[:, :, np.newaxis], 3, axis=2)
    key = im.info.get("transparency")
    if im.mode != "F" and isinstance(key, int) and not isinstance(key, bool):
        alpha = np.where(raw == key, 0, 255).astype(np.uint8)
        return _over_white(rgb, alpha)
    return rgb


def _float_to_u8(values: npt.NDArray[np.float64]) -> _U8:
    finite = np.isfinite(values)
    clean = np.where(finite, values, 0.0)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    lo, hi = float(clean[finite].min()), float(clean[finite].max())
    if lo >= 0.0 and hi <= 1.0:
        return np.rint(clean * 255.0).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        return np.rint(clean).astype(np.uint8)
    return _stretch(clean)


def _stretch(values: npt.NDArray[np.float64]) -> _U8:
    """Min-max stretch to 0..255 (a constant image becomes 0)."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = np.rint((values - lo) * (255.0 / (hi - lo)))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _over_white(rgb: _U8, alpha: _U8) -> _U8:
    """Composite straight-alpha RGB onto a white background."""
    a = alpha.astype(np.uint16)[:, :, np.newaxis]
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _over(rgb: _U8, alpha: _U8, background: _U8) -> _U8:
    """Composite straight-alpha RGB onto ``background`` (same shape as ``rgb``)."""
    a = alpha.astype(np.uint16)[:, :, np.newaxis]
    out = (rgb.astype(np.uint16) * a + background.astype(np.uint16) * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _printable(text: str) -> str:
    """``text`` with control and other unprintable characters escaped."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        for ch in text
    )


def _one_line(value: object) -> str:
    """``str(value)`` as one printable line, at most ~200 characters."""
    text = _printable(str(value))
    if len(text) > _MESSAGE_LIMIT:
        text = text[: _MESSAGE_LIMIT - 3] + "..."
    return text
