"""Safe media reading and format sniffing: how any Consentry command reads a file's bytes.

Photos to scan (:mod:`consentry.faces.images`) and outputs to verify or sign
(:mod:`consentry.provenance`) are read with :func:`read_bounded` and told apart by
:func:`sniff_format`; nothing here decodes pixels.

Invariants
----------
1. **Bounded reading.** At most ``max_bytes + 1`` bytes are ever read from a
   path; a regular file whose size already exceeds ``max_bytes`` is refused from
   ``fstat`` without reading it. Either way: :class:`ImageTooLargeError`. A
   missing path, a directory, an unreadable file (and with ``regular_only``
   anything that is not a regular file) is a plain :class:`ImageError` whose
   message starts with the path, printable.
2. **Magic bytes decide the format, not the file name.** :func:`sniff_format`
   names one of :data:`ALLOWED_FORMATS` only from a JPEG (``FF D8 FF``), PNG
   (``89 50 4E 47 0D 0A 1A 0A``), WebP (``RIFF....WEBP``) or TIFF (``II*\\0`` /
   ``MM\\0*``) signature; :func:`describe` says what anything else looks like,
   for the refusal message, and never raises.
3. **Signable media types.** :func:`mime_of_bytes` gives ``image/jpeg``,
   ``image/png`` or ``image/webp`` (the formats C2PA signing supports here) or
   raises: empty data is :class:`CorruptImageError`, anything else (TIFF
   included) :class:`UnsupportedImageError`.
4. **Printable messages.** Every message built from a path or an exception text
   goes through :func:`printable` / :func:`one_line`: control characters are
   escaped, an exception text is cut to about 200 characters.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from consentry.errors import (
    CorruptImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)

__all__ = [
    "ALLOWED_FORMATS",
    "MAX_BYTES_DEFAULT",
    "SIGNABLE_MIME",
    "describe",
    "is_truncated_signature",
    "mime_of",
    "mime_of_bytes",
    "one_line",
    "printable",
    "read_bounded",
    "read_capped",
    "sniff_format",
]

MAX_BYTES_DEFAULT: Final = 50 * 1024 * 1024
"""Default byte budget for one image file."""

ALLOWED_FORMATS: Final = ("JPEG", "PNG", "WEBP", "TIFF")
"""The only formats accepted, by Pillow's format names."""

SIGNABLE_MIME: Final[dict[str, str]] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
}
"""The sniffed formats an output may be signed or verified in, and their media types."""

PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC: Final = b"\xff\xd8\xff"
TIFF_MAGICS: Final = (b"II*\x00", b"MM\x00*")

_READ_CHUNK: Final = 1 << 20
_MESSAGE_LIMIT: Final = 200


# -- reading -----------------------------------------------------------------


def read_bounded(
    path: Path, max_bytes: int, *, label: str | None = None, regular_only: bool = False
) -> bytes:
    """Read at most ``max_bytes + 1`` bytes; refuse oversized regular files unread.

    ``label`` starts every error message (default: the path, printable). With
    ``regular_only`` anything but a regular file (a FIFO, a device) is refused
    after ``fstat``, before reading.
    """
    name = printable(os.fspath(path)) if label is None else label
    fd = _open_for_reading(path, name)
    try:
        _check_opened(fd, name, max_bytes, regular_only=regular_only)
        data = _read_at_most(fd, max_bytes + 1)
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({one_line(exc.strerror or exc)})") from exc
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"{name}: file is more than the limit of {max_bytes} bytes")
    return data


def read_capped(path: Path, max_bytes: int = MAX_BYTES_DEFAULT) -> bytes:
    """A regular file's bytes, refused (ImageError) before reading past ``max_bytes``."""
    return read_bounded(Path(path), max_bytes, regular_only=True)


def _open_for_reading(path: Path, label: str) -> int:
    """A read-only descriptor for ``path``; ImageError naming why it cannot be opened."""
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(f"{label}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{label}: cannot open ({one_line(exc.strerror or exc)})") from exc


def _check_opened(fd: int, label: str, max_bytes: int, *, regular_only: bool) -> None:
    """Refuse, from ``fstat`` alone, a directory, a non-regular file if asked, an oversized file."""
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{label}: is a directory, not an image file")
    regular = stat.S_ISREG(info.st_mode)
    if regular_only and not regular:
        raise ImageError(f"{label}: not a regular file")
    if regular and info.st_size > max_bytes:
        raise ImageTooLargeError(
            f"{label}: file is {info.st_size} bytes, more than the limit of {max_bytes}"
        )


def _read_at_most(fd: int, limit: int) -> bytes:
    """Read until end of file or ``limit`` bytes, whichever comes first."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = os.read(fd, min(_READ_CHUNK, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


# -- format sniffing ---------------------------------------------------------


def sniff_format(data: bytes) -> str | None:
    """The allowed format (``JPEG``, ``PNG``, ``WEBP``, ``TIFF``) the magic bytes
    announce, or ``None``."""
    if data.startswith(JPEG_MAGIC):
        return "JPEG"
    if data.startswith(PNG_MAGIC):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in TIFF_MAGICS:
        return "TIFF"
    return None


def is_truncated_signature(data: bytes) -> bool:
    """True if ``data`` is too short to hold a signature it begins to spell."""
    if len(data) < 12 and data.startswith(b"RIFF"):
        return True
    signatures = (JPEG_MAGIC, PNG_MAGIC, b"RIFF", *TIFF_MAGICS)
    return any(len(data) < len(sig) and sig.startswith(data) for sig in signatures)


def mime_of_bytes(data: bytes) -> str:
    """``image/jpeg``, ``image/png`` or ``image/webp`` by magic bytes; ImageError otherwise."""
    if not data:
        raise CorruptImageError("the file is empty")
    mime = SIGNABLE_MIME.get(sniff_format(data) or "")
    if mime is None:
        raise UnsupportedImageError("not a JPEG, PNG or WebP image (by its magic bytes)")
    return mime


def mime_of(path: Path | str, max_bytes: int = MAX_BYTES_DEFAULT) -> str:
    """The media type of the image file at ``path`` by its magic bytes (size-capped read)."""
    return mime_of_bytes(read_capped(Path(path), max_bytes))


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


def describe(data: bytes) -> str:
    """A short, printable description of data that is not an allowed image."""
    head = data[:1024]
    return (
        _describe_binary(head)
        or _describe_markup(head, data)
        or _describe_text(head)
        or f"unrecognised data starting {data[:8].hex(' ')}"
    )


def _describe_binary(head: bytes) -> str | None:
    """The name of a binary format ``head`` starts with (signature, ISO BMFF, RIFF, PNM)."""
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
    return None


def _describe_markup(head: bytes, data: bytes) -> str | None:
    """``SVG``, ``HTML`` or ``XML / markup text`` when ``head`` (BOM and blanks
    stripped) opens with markup; SVG is looked for in the first 64 KiB of ``data``."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in text or (text.startswith(b"<?xml") and b"<svg" in data[:65536].lower()):
        return "SVG"
    if text.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    if text.startswith(b"<"):
        return "XML / markup text"
    return None


def _describe_text(head: bytes) -> str | None:
    """``text`` when ``head`` is printable UTF-8 (tabs and line breaks allowed)."""
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(c.isprintable() or c in "\t\r\n\f" for c in decoded):
        return "text"
    return None


# -- messages ----------------------------------------------------------------


def printable(text: str) -> str:
    """``text`` with control and other unprintable characters escaped."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        for ch in text
    )


def one_line(value: object) -> str:
    """``str(value)`` as one printable line, at most ~200 characters."""
    text = printable(str(value))
    if len(text) > _MESSAGE_LIMIT:
        text = text[: _MESSAGE_LIMIT - 3] + "..."
    return text
