"""Strict validation of ``multipart/form-data`` bodies before any parser sees them.

Lenient multipart parsers (python-multipart, used by Starlette) accept a body
whose close delimiter is missing, or whose last part's headers are cut off, and
simply drop what they could not finish: an image silently vanishes and the job
is judged without it. The service therefore checks every multipart body with
:func:`validate_multipart` first and answers 400 on any defect; only a body that
passes reaches the app's parser, and the parts found here are compared with
what the route declares (see ``consentry.server.guard``).

Accepted (a strict subset of RFC 2046 section 5.1 and RFC 7578; clients such as
httpx, requests, curl and browsers produce it):

- ``Content-Type: multipart/form-data; boundary=B`` with exactly one ``boundary``
  of 1..70 RFC 2046 ``bchars`` (not ending in a space), token or quoted.
- The body starts with ``--B CRLF`` (no preamble); every part is headers,
  ``CRLF CRLF``, content; parts are separated by ``CRLF --B CRLF``; the body ends
  with ``CRLF --B--`` and at most one ``CRLF`` after it (no epilogue).
- Part headers: CRLF-terminated ``Name: value`` lines (no folding, no bare CR or
  LF, at most ``MAX_HEADER_BYTES``): exactly one ``Content-Disposition:
  form-data; name="..."`` with an optional ``filename="..."``, and at most one
  ``Content-Type``. Any other header (``Content-Transfer-Encoding`` included),
  any other or repeated disposition parameter (``filename*`` included), an
  unclosed quote, or a control character in a filename: refused. (Only field
  names and the presence of a filename decide anything; names are restricted
  below, so the parsers cannot disagree on them.)
- Field names are 1..64 of ``A-Z a-z 0-9 _ . - [ ]``; 1..``MAX_PARTS`` parts.

Invariant: :func:`validate_multipart` either returns every part of the body, in
order, or raises :class:`MultipartError`; it never returns a prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from consentry.errors import InputError

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_PARTS",
    "MultipartError",
    "Part",
    "boundary_of",
    "validate_multipart",
]

MAX_PARTS = 64
MAX_HEADER_BYTES = 8 * 1024

_BCHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")
_PARAM = re.compile(r'\s*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*("[^"]*"|[^";\s]+)\s*')
_BAD_VALUE = re.compile(r"[\x00-\x1f\x7f]")


class MultipartError(InputError):
    """The body is not a well-formed ``multipart/form-data`` body (HTTP 400)."""


@dataclass(frozen=True)
class Part:
    """One part: its field ``name``, ``filename`` (None for a plain field), size."""

    name: str
    filename: str | None
    size: int


def _params(text: str, what: str) -> dict[str, str]:
    """``; key=value`` parameters after a media type or disposition, strictly."""
    params: dict[str, str] = {}
    if not text.strip():
        return params
    if not text.startswith(";"):
        raise MultipartError(f"malformed {what}: expected ';' parameters")
    for segment in _split_params(text[1:], what):
        match = _PARAM.fullmatch(segment)
        if match is None:
            raise MultipartError(f"malformed {what} parameter {segment.strip()!r}")
        key, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = value[1:-1]
        if key in params:
            raise MultipartError(f"{what} repeats the parameter {key!r}")
        params[key] = value
    return params


def _split_params(text: str, what: str) -> list[str]:
    """Split on ``;`` outside double quotes; an unclosed quote is an error."""
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise MultipartError(f"malformed {what}: unclosed quote")
    out.append("".join(current))
    return out


def boundary_of(content_type: str) -> str | None:
    """The boundary of a ``multipart/form-data`` Content-Type; None for another
    media type; :class:`MultipartError` for a multipart one without a valid one."""
    media, separator, rest = content_type.partition(";")
    media = media.strip().lower()
    if not media.startswith("multipart/"):
        return None
    if media != "multipart/form-data":
        raise MultipartError(f"unsupported multipart type {media!r}: use multipart/form-data")
    params = _params(separator + rest, "Content-Type")
    boundary = params.get("boundary")
    if boundary is None:
        raise MultipartError("the multipart Content-Type has no boundary")
    if not _BCHARS.fullmatch(boundary):
        raise MultipartError("the multipart boundary is not 1..70 RFC 2046 characters")
    return boundary


def _part_headers(block: bytes, number: int) -> tuple[str, str | None]:
    """The field name and filename of part ``number``, from its header ``block``.

    Refused (:class:`MultipartError`, the first fault in header order): over
    ``MAX_HEADER_BYTES``, not UTF-8, any header but one Content-Disposition and at most
    one Content-Type, or a disposition that is not a plain form-data field."""
    if len(block) > MAX_HEADER_BYTES:
        raise MultipartError(f"part {number}: headers over {MAX_HEADER_BYTES} bytes")
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        raise MultipartError(f"part {number}: headers are not UTF-8") from None
    return _disposition_field(_disposition(text, number), number)


def _disposition(text: str, number: int) -> str:
    """The Content-Disposition value of a part's headers, checking every line."""
    disposition: str | None = None
    seen_type = False
    for line in text.split("\r\n"):
        key, value = _header_line(line, number)
        if key == "content-disposition":
            if disposition is not None:
                raise MultipartError(f"part {number}: two Content-Disposition headers")
            disposition = value.strip()
        else:  # content-type: _header_line accepts no other header
            if seen_type:
                raise MultipartError(f"part {number}: two Content-Type headers")
            seen_type = True
            if re.search(r"[\x00-\x1f\x7f]", value):
                raise MultipartError(f"part {number}: a control character in Content-Type")
    if disposition is None:
        raise MultipartError(f"part {number}: no Content-Disposition header")
    return disposition


def _header_line(line: str, number: int) -> tuple[str, str]:
    """``(lower-cased name, value)`` of one header line: a token, a colon, a value;
    the name Content-Disposition or Content-Type."""
    if "\r" in line or "\n" in line:
        raise MultipartError(f"part {number}: a bare CR or LF in its headers")
    name, colon, value = line.partition(":")
    if not colon or not _TOKEN.fullmatch(name):
        raise MultipartError(f"part {number}: malformed header line {line[:60]!r}")
    key = name.lower()
    if key not in ("content-disposition", "content-type"):
        raise MultipartError(f"part {number}: header {name!r} is not accepted")
    return key, value


def _disposition_field(disposition: str, number: int) -> tuple[str, str | None]:
    """``(name, filename)`` of a ``form-data`` disposition with only those parameters."""
    kind, separator, rest = disposition.partition(";")
    if kind.strip().lower() != "form-data":
        raise MultipartError(f"part {number}: the disposition is not form-data")
    params = _params(separator + rest, "Content-Disposition")
    if set(params) - {"name", "filename"}:
        extra = ", ".join(sorted(set(params) - {"name", "filename"}))
        raise MultipartError(f"part {number}: unexpected disposition parameter(s) {extra}")
    field = params.get("name")
    if field is None or not _NAME.fullmatch(field):
        raise MultipartError(f"part {number}: a missing or malformed field name")
    filename = params.get("filename")
    if filename is not None and _BAD_VALUE.search(filename):
        raise MultipartError(f"part {number}: a malformed filename")
    return field, filename


def validate_multipart(body: bytes, boundary: str) -> list[Part]:
    """Every part of ``body`` (see the module docstring), or :class:`MultipartError`."""
    dash = b"--" + boundary.encode("ascii")
    delimiter = b"\r\n" + dash
    if not body.startswith(dash + b"\r\n"):
        raise MultipartError("the body does not start with the boundary")
    position = len(dash) + 2
    parts: list[Part] = []
    while True:
        number = len(parts)
        if number >= MAX_PARTS:
            raise MultipartError(f"more than {MAX_PARTS} parts")
        end_headers = body.find(b"\r\n\r\n", position, position + MAX_HEADER_BYTES + 4)
        if end_headers < 0:
            raise MultipartError(f"part {number}: its headers are truncated or too long")
        name, filename = _part_headers(body[position:end_headers], number)
        start = end_headers + 4
        end = body.find(delimiter, start)
        if end < 0:
            raise MultipartError(f"part {number}: no boundary after it (truncated body)")
        parts.append(Part(name, filename, end - start))
        position = end + len(delimiter)
        tail = body[position : position + 2]
        if tail == b"\r\n":
            position += 2
            continue
        if tail == b"--":
            rest = body[position + 2 :]
            if rest not in (b"", b"\r\n"):
                raise MultipartError("bytes after the closing boundary")
            return parts
        raise MultipartError(f"part {number}: the boundary is not followed by CRLF or '--'")
