"""Safe image input: the one way any Consentry command reads a photo.

Every command that takes a photo goes through :func:`load_image` (a path or raw
bytes) or :func:`load_image_bytes`, and gets back a :class:`LoadedImage` whose
pixels are an ``H x W x 3`` ``uint8`` RGB array, or an
:class:`~consentry.errors.ImageError`. The bounded read and the magic-byte
sniffing are :mod:`consentry.media` (shared with provenance); the conversion of a
decoded frame to RGB is :mod:`consentry.faces.pixels`; this module holds the guards
around Pillow and the decode itself.

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
from PIL import Image, UnidentifiedImageError

from consentry.errors import (
    CorruptImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from consentry.faces.pixels import (
    exif_orientation,
    frame_has_alpha,
    frame_views,
    orient,
    to_rgb,
)
from consentry.media import (
    ALLOWED_FORMATS,
    MAX_BYTES_DEFAULT,
    PNG_MAGIC,
    describe,
    is_truncated_signature,
    one_line,
    printable,
    read_bounded,
    sniff_format,
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

_WARNINGS_LOCK: Final = threading.Lock()  # see invariant 7

# Pillow format names each sniffed format may come back as.
_PILLOW_FORMATS: Final[dict[str, frozenset[str]]] = {
    "JPEG": frozenset({"JPEG", "MPO"}),
    "PNG": frozenset({"PNG"}),
    "WEBP": frozenset({"WEBP"}),
    "TIFF": frozenset({"TIFF"}),
}

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
    data = read_bounded(Path(name), max_bytes, label=printable(name))
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


# -- limits ------------------------------------------------------------------


def _check_limits(max_pixels: int, max_bytes: int) -> None:
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")


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
    pos, count = len(PNG_MAGIC), 0
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
    label = printable(source)
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"{label}: {len(data)} bytes is more than the limit of {max_bytes} bytes"
        )
    if not data:
        raise CorruptImageError(f"{label}: empty file (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        if is_truncated_signature(data):
            raise CorruptImageError(f"{label}: only {len(data)} bytes, truncated image header")
        allowed = ", ".join(ALLOWED_FORMATS)
        raise UnsupportedImageError(
            f"{label}: not an allowed image format (saw {describe(data)}; allowed: {allowed})"
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
            orientation = exif_orientation(im)
            rgb = to_rgb(im, label)
            pixels = np.ascontiguousarray(orient(rgb, orientation), dtype=np.uint8)
            has_alpha = frame_has_alpha(im)

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
    label = printable(image.source)
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
            orientation = exif_orientation(im)
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
                for kind, rgb in frame_views(im, label):
                    pixels = np.ascontiguousarray(orient(rgb, orientation), dtype=np.uint8)
                    key = (pixels.shape, hashlib.blake2b(pixels.data, digest_size=16).digest())
                    if key in seen:
                        continue
                    seen.add(key)
                    pixels.setflags(write=False)
                    views.append(FaceView(number, kind, pixels))
    return views


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
            f"{label}: {fmt} header declares too many pixels ({one_line(exc)})"
        ) from exc
    except MemoryError as exc:
        raise ImageTooLargeError(f"{label}: not enough memory to decode this {fmt} image") from exc
    except Exception as exc:
        # Hostile input can make a Pillow plugin raise nearly anything (OSError,
        # SyntaxError, ValueError, struct.error, EOFError, IndexError, KeyError,
        # TypeError, ZeroDivisionError, RecursionError, ...): all mean "corrupt".
        raise CorruptImageError(
            f"{label}: corrupt or truncated {fmt} image ({type(exc).__name__}: {one_line(exc)})"
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
        raise CorruptImageError(f"{label}: bad frame count {one_line(repr(frames))}")
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
