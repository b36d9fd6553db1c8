"""Crash-safe file writes: one helper for every file that matters.

:func:`atomic_write` writes a new file next to the target, flushes and fsyncs it,
renames it over the target and fsyncs the folder, so after a crash (kill -9, power
loss) the target holds either its old bytes or its new bytes, never a torn mix,
and a write that returned is durable.

Invariants
----------
* The temporary file is created ``O_EXCL`` in the target's folder (same file
  system, so the rename is atomic) with the requested mode set by ``fchmod``
  (the umask neither widens nor narrows it), and removed if anything fails.
* ``exclusive=True`` never replaces an existing target (``os.link`` fails on an
  existing name with ``FileExistsError``): for keys and other files made once.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir"]


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new name in ``folder`` durable (no-op where unsupported)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems (and Windows) cannot fsync a directory
    finally:
        os.close(handle)


def atomic_write(
    path: Path | str, data: bytes | str, mode: int = 0o600, *, exclusive: bool = False
) -> None:
    """Write ``data`` to ``path`` atomically and durably, with permissions ``mode``.

    ``str`` data is written as UTF-8. With ``exclusive`` an existing ``path`` is
    left alone and ``FileExistsError`` is raised. The parent folder is created if
    missing.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".{target.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(staged, target)  # FileExistsError if the target exists
            staged.unlink()
        else:
            os.replace(staged, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
        raise
    fsync_dir(folder)
