"""Witness state kept outside the registry home: what stops a rollback.

Whoever runs a gateway, a verifier or an independent witness keeps, per log, the
newest checkpoint it has verified, in a folder of its own that the registry's
database operator cannot restore together with the database:

1. an explicit folder (``--witness-dir``), else
2. ``CONSENTRY_WITNESS_DIR``, else
3. the per-user state folder (``platformdirs.user_state_dir("consentry")/witness``).

Layout::

    WITNESS/logs/<sha256(origin)[:32]>.checkpoint   newest checkpoint seen of that log
                                                    (signed note, cosignatures kept)
    WITNESS/logs/<...>.lock                         serialises check-and-advance
    WITNESS/witness.key                             optional co-signing key (0600),
    WITNESS/witness.vkey                            and its verifier key line

Invariants
----------
* A state file only moves forward: :meth:`WitnessStore.advance` writes a checkpoint
  only when it is larger than the stored one, and the caller proves first (with a
  consistency proof) that the log extends the stored one; every write is atomic and
  fsynced (:func:`consentry.fsutil.atomic_write`), under an exclusive lock.
* :func:`check_extends` is the one rule: same origin, not smaller, equal size means
  equal root, larger size needs a verifying RFC 9162 consistency proof. Any failure
  is a :class:`~consentry.errors.RollbackError` (a rollback or a split view).
* The first checkpoint seen of a log is trusted on first use; from then on the log
  can only grow. A fresh witness folder therefore protects only from the moment it
  first sees the log: run the witness where the database operator cannot reach it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from consentry.errors import CheckpointError, ConfigError, ProofError, RollbackError
from consentry.fsutil import atomic_write
from consentry.registry import checkpoint as cp
from consentry.registry import merkle

try:  # POSIX; elsewhere the rename alone keeps each write atomic
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "WITNESS_DIR_ENV",
    "WitnessStore",
    "Witnessed",
    "check_extends",
    "resolve_witness_dir",
]

WITNESS_DIR_ENV = "CONSENTRY_WITNESS_DIR"


def resolve_witness_dir(explicit: Path | str | None = None) -> Path:
    """The witness folder to use (not created here); see the module docstring."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser().resolve()
    env = os.environ.get(WITNESS_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_state_dir("consentry", appauthor=False)) / "witness"


@dataclass(frozen=True)
class Witnessed:
    """One stored witness state: the note as stored and its parsed checkpoint."""

    note: str
    checkpoint: cp.Checkpoint


def check_extends(trusted: cp.Checkpoint, new: cp.Checkpoint, proof: Sequence[bytes]) -> None:
    """Refuse ``new`` unless it is ``trusted`` or a tree that extends it.

    ``proof`` is the RFC 9162 consistency proof from ``trusted.tree_size`` to
    ``new.tree_size`` (empty for equal sizes). Raises :class:`RollbackError`.
    """
    if new.origin != trusted.origin:
        raise RollbackError(
            f"checkpoint of log {new.origin!r}, but this witness tracks {trusted.origin!r}"
        )
    cp.check_not_rollback(trusted, new)
    if trusted.tree_size == 0 or new.tree_size == trusted.tree_size:
        return
    try:
        merkle.verify_consistency(
            trusted.tree_size, new.tree_size, trusted.root_hash, new.root_hash, proof
        )
    except ProofError as exc:
        raise RollbackError(
            f"the tree of size {new.tree_size} does not extend the witnessed tree of size "
            f"{trusted.tree_size} ({exc}): the log was rewritten or rolled back"
        ) from exc


class WitnessStore:
    """The witness states in one folder, one file per log origin."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def resolve(cls, explicit: Path | str | None = None) -> WitnessStore:
        return cls(resolve_witness_dir(explicit))

    @property
    def logs_dir(self) -> Path:
        return self.folder / "logs"

    @property
    def key_file(self) -> Path:
        return self.folder / "witness.key"

    @property
    def vkey_file(self) -> Path:
        return self.folder / "witness.vkey"

    def path_for(self, origin: str) -> Path:
        """The state file of the log named ``origin``."""
        digest = hashlib.sha256(origin.encode("utf-8")).hexdigest()[:32]
        return self.logs_dir / f"{digest}.checkpoint"

    def latest(self, origin: str) -> Witnessed | None:
        """The newest checkpoint witnessed of ``origin``, or None if never seen.

        A state file that cannot be read or parsed, or that names another origin,
        is a :class:`ConfigError`: the witness never silently forgets what it saw.
        """
        path = self.path_for(origin)
        try:
            note = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the witness state {path}: {exc}") from exc
        try:
            checkpoint, _ = cp.parse_checkpoint(note)
        except CheckpointError as exc:
            raise ConfigError(f"the witness state {path} is damaged: {exc}") from exc
        if checkpoint.origin != origin:
            raise ConfigError(f"the witness state {path} is of log {checkpoint.origin!r}")
        return Witnessed(note, checkpoint)

    @contextlib.contextmanager
    def locked(self, origin: str) -> Iterator[None]:
        """Hold the exclusive lock of ``origin``'s state (check, then advance)."""
        self.logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.path_for(origin).with_suffix(".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def advance(self, note: str) -> bool:
        """Store ``note`` as its log's state if it is larger than the stored one.

        The caller holds :meth:`locked` and has checked (``check_extends``) that the
        note's tree extends the stored one. Returns whether it was written.
        """
        checkpoint, _ = cp.parse_checkpoint(note)
        current = self.latest(checkpoint.origin)
        if current is not None:
            cp.check_not_rollback(current.checkpoint, checkpoint)
            if current.checkpoint.tree_size >= checkpoint.tree_size and not _adds_lines(
                current.note, note
            ):
                return False
        atomic_write(self.path_for(checkpoint.origin), note, 0o600)
        return True


def _adds_lines(old: str, new: str) -> bool:
    """Whether ``new`` is the same checkpoint as ``old`` with more signature lines."""
    if old == new:
        return False
    try:
        old_cp, old_sigs = cp.parse_checkpoint(old)
        new_cp, new_sigs = cp.parse_checkpoint(new)
    except CheckpointError:
        return False
    return old_cp == new_cp and set(old_sigs) < set(new_sigs)
