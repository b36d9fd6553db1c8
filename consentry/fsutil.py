"""Crash-safe file writes: one way to make a file (or a folder) appear whole.

Every file that matters is written beside its target, fsynced, renamed over the
target and the folder fsynced, so after a crash (kill -9, power loss) the target
holds either its old bytes or its new bytes, never a torn mix, and a write that
returned is durable. Three entry points, one mechanism:

:func:`atomic_write`
    Bytes or text held in memory (keys, configuration, manifests, caches).
:func:`atomic_output`
    A file that someone else writes (a library's ``save(path)``, a streamed
    multi-GB copy): it yields a path in a private staging folder beside the
    target and publishes it when the block ends without an exception.
:func:`replace_durably`
    The last step of both, also for a whole staged folder (a training
    checkpoint): fsync what was staged, rename it over the target, fsync the
    target's folder.

Invariants
----------
* Staged files and folders live in the target's folder (same file system, so
  the rename is atomic), are named with a leading dot and a random part, and are
  removed if anything fails before the rename: a failed write leaves the old
  target and no stray temporary file.
* :func:`atomic_write` creates its temporary file ``O_EXCL`` with the requested
  mode set by ``fchmod`` (the umask neither widens nor narrows it).
* ``exclusive=True`` never replaces an existing target (``os.link`` fails on an
  existing name with ``FileExistsError``): for keys and other files made once.
* A staged folder replaces only a target that does not exist or is an empty
  folder (``os.replace`` refuses a non-empty one): the caller removes an old one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "atomic_output",
    "atomic_write",
    "fsync_dir",
    "fsync_file",
    "replace_durably",
    "staging_dir",
]


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


def fsync_file(path: Path) -> None:
    """Flush a written file's bytes to disk."""
    with Path(path).open("rb") as stream:
        os.fsync(stream.fileno())


def replace_durably(staged: Path, target: Path) -> None:
    """Rename the fully written ``staged`` file or folder over ``target``, durably.

    The staged bytes are fsynced first (every file under a staged folder, and
    each folder), then renamed with ``os.replace``, then the target's folder is
    fsynced, so the new name survives a crash only with its whole content.
    """
    staged, target = Path(staged), Path(target)
    if staged.is_dir():
        for path in sorted(staged.rglob("*")):
            if path.is_file():
                fsync_file(path)
            elif path.is_dir():
                fsync_dir(path)
        fsync_dir(staged)
    else:
        fsync_file(staged)
    os.replace(staged, target)
    fsync_dir(target.parent)


@contextmanager
def staging_dir(parent: Path, prefix: str = "") -> Iterator[Path]:
    """A fresh private (``0700``) folder in ``parent``, removed when the block ends
    unless its content was renamed away (with :func:`replace_durably`)."""
    folder = Path(tempfile.mkdtemp(prefix=f".{prefix}", suffix=".tmp", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def atomic_output(target: Path | str, mode: int | None = None) -> Iterator[Path]:
    """Yield a path (same name as ``target``, in a staging folder beside it) to
    write the new file to; publish it over ``target`` when the block ends.

    On an exception nothing is published and the staged file is removed. ``mode``
    (if given) is set on the file before it is published. The parent folder is
    created if missing.
    """
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(final.parent, f"{final.name}-") as folder:
        staged = folder / final.name
        yield staged
        if mode is not None:
            staged.chmod(mode)
        replace_durably(staged, final)


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
