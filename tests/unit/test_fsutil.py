"""``atomic_write``: whole files only, the asked mode, no temporary files left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from consentry.fsutil import atomic_write


def test_atomic_write_replaces_with_mode_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.txt"
    atomic_write(target, "one\n", 0o600)
    assert target.read_text() == "one\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    old_umask = os.umask(0o077)
    try:
        atomic_write(target, b"two", 0o644)  # the umask does not narrow the mode
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.txt"]


def test_exclusive_write_never_replaces(tmp_path: Path) -> None:
    target = tmp_path / "key"
    atomic_write(target, b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write(target, b"second", exclusive=True)
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk error before the rename (fsync fails) leaves the old bytes, no temp file."""
    target = tmp_path / "config.json"
    atomic_write(target, "{}\n")

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output"):
        atomic_write(target, '{"new": 1}\n')
    assert target.read_text() == "{}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
