"""`consentry.hashing`: one SHA-256 of bytes and files, one hex-digest pattern."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from consentry.errors import InputError
from consentry.hashing import (
    CHUNK,
    SHA256_HEX,
    hash_file,
    is_sha256_hex,
    normalise_sha256,
    sha256_file,
    sha256_hex,
)

GOOD = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "value",
    [GOOD + "\n", GOOD.upper(), GOOD[:-1], GOOD + "0", " " + GOOD, GOOD[:-1] + "g", "", "\n"],
)
def test_the_pattern_refuses_everything_but_64_lower_hex(value: str) -> None:
    assert not is_sha256_hex(value)
    assert SHA256_HEX.match(value) is None and SHA256_HEX.search(value) is None
    assert is_sha256_hex(GOOD) and SHA256_HEX.match(GOOD)


def test_non_strings_are_not_digests() -> None:
    assert not is_sha256_hex(None) and not is_sha256_hex(GOOD.encode())


def test_normalise_forgives_case_and_spaces_only() -> None:
    assert normalise_sha256(f"  {GOOD.upper()}\n") == GOOD
    for bad in (GOOD[:-1], GOOD + "00", 7, None, "sha256:" + GOOD):
        with pytest.raises(InputError, match="not a SHA-256"):
            normalise_sha256(bad)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 2 * CHUNK + 17])
def test_hash_file_reads_every_byte_once_and_copies_them(tmp_path: Path, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "blob"
    path.write_bytes(data)
    sink = io.BytesIO()
    digest = hash_file(path, copy_to=sink)
    assert digest == (hashlib.sha256(data).hexdigest(), size)
    assert sink.getvalue() == data
    assert sha256_file(path) == sha256_hex(data) == digest.sha256


def test_hash_file_raises_the_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        sha256_file(tmp_path)
