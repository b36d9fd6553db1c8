"""SHA-256, one way: of bytes, of a file, and the one pattern of a hex digest.

Every digest Consentry records (priors, photos, model files, API keys, log
blobs) is SHA-256 as 64 lower-case hex digits. This module is where that is
computed and checked, so every caller agrees on the spelling and on how a file
is read.

Invariants
----------
* :data:`SHA256_HEX` matches exactly 64 lower-case hex digits and nothing
  else: it is anchored with ``\\A`` and ``\\Z``, so ``match``, ``fullmatch``
  and ``search`` agree and a trailing newline (which ``$`` would let through)
  is refused. Upper case is not a digest until :func:`normalise_sha256` says so.
* :func:`hash_file` reads the file once, in 1 MiB chunks, never whole; the
  digest and the size it returns describe the same bytes (the size is counted
  while reading, not taken from ``stat``), and with ``copy_to`` those are also
  the bytes written to the copy. Errors are the ``OSError`` of the read or the
  write, left to the caller to name (each says what file it was reading).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import BinaryIO, NamedTuple

from consentry.errors import InputError

__all__ = [
    "SHA256_HEX",
    "FileDigest",
    "hash_file",
    "is_sha256_hex",
    "normalise_sha256",
    "sha256_file",
    "sha256_hex",
]

SHA256_HEX: re.Pattern[str] = re.compile(r"\A[0-9a-f]{64}\Z")
"""A SHA-256 hex digest as Consentry writes it: 64 lower-case hex digits, nothing more."""

CHUNK = 1 << 20
"""Bytes read at a time from a file being hashed."""


class FileDigest(NamedTuple):
    """The SHA-256 (hex) of a file's bytes and how many bytes there were."""

    sha256: str
    size: int


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def is_sha256_hex(value: object) -> bool:
    """True when ``value`` is a string of exactly 64 lower-case hex digits."""
    return isinstance(value, str) and SHA256_HEX.match(value) is not None


def normalise_sha256(digest: object) -> str:
    """``digest`` as 64 lower-case hex digits (surrounding spaces and upper case
    forgiven), or :class:`InputError`."""
    value = digest.strip().lower() if isinstance(digest, str) else ""
    if not SHA256_HEX.match(value):
        raise InputError(f"not a SHA-256 hex digest: {digest!r}")
    return value


def hash_file(path: Path | str, *, copy_to: BinaryIO | None = None) -> FileDigest:
    """SHA-256 and size of the file at ``path``, read once in 1 MiB chunks.

    With ``copy_to`` every chunk is also written there as it is hashed, so the
    copy is exactly the bytes the digest describes (what a check-then-load needs:
    parse the copy, never the original, which could change after the check).
    Raises the ``OSError`` of the failed read or write.
    """
    digest = hashlib.sha256()
    size = 0
    with Path(path).open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if copy_to is not None:
                copy_to.write(chunk)
    return FileDigest(digest.hexdigest(), size)


def sha256_file(path: Path | str) -> str:
    """Lowercase hex SHA-256 of the file at ``path`` (see :func:`hash_file`)."""
    return hash_file(path).sha256
