"""``atomic_write``: whole files only, the asked mode, no temporary files left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from consentry.fsutil import atomic_output, atomic_write, replace_durably, staging_dir


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


def test_atomic_output_publishes_a_file_a_library_wrote(tmp_path: Path) -> None:
    target = tmp_path / "new" / "prior.safetensors"
    with atomic_output(target, 0o644) as staged:
        assert staged.name == target.name and staged.parent.parent == target.parent
        assert not target.exists()
        staged.write_bytes(b"weights")
        (staged.parent / "extra.json").write_text("{}")  # a library's side file: not published
    assert target.read_bytes() == b"weights"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["prior.safetensors"]


def test_atomic_output_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "class.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer died"), atomic_output(target) as staged:
        staged.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["class.png"]


def test_a_staged_folder_is_fsynced_then_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    target = tmp_path / "checkpoint-2"
    with staging_dir(tmp_path, "checkpoint-2-") as staging:
        (staging / "state.safetensors").write_bytes(b"state")
        (staging / "meta.json").write_text("{}")
        monkeypatch.setattr(os, "fsync", recording_fsync)
        replace_durably(staging, target)
        monkeypatch.undo()
    assert sorted(p.name for p in target.iterdir()) == ["meta.json", "state.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-2"]  # no staging folder left
    # both files and the staged folder before the rename, the parent folder after it
    assert set(synced[:3]) == {"meta.json", "state.safetensors", staging.name}
    assert synced[-1] == tmp_path.name
