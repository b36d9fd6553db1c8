"""Witness state kept outside the registry home: what stops a rollback.

Whoever runs a gateway, a verifier or an independent witness keeps, per log, the
newest checkpoint it has verified, in a folder of its own that the registry's
database operator cannot restore together with the database:

1. an explicit folder (``--witness-dir``), else
2. ``CONSENTRY_WITNESS_DIR``, else
3. the per-user state folder (``platformdirs.user_state_dir("consentry")/witness``).

Layout::

    WITNESS/logs/<sha256(origin)[:32]>.checkpoint      newest checkpoint verified of
                                                       that log (gateways, verifiers)
    WITNESS/cosigned/<sha256(origin)[:32]>.checkpoint  newest checkpoint this witness
                                                       co-signed (``witness cosign``)
    WITNESS/*/<...>.lock                               serialise check-and-advance
    WITNESS/witness.key                                optional co-signing key (0600),
    WITNESS/witness.vkey                               and its verifier key line

Co-signing (C2SP tlog-witness style, offline): :func:`cosign` verifies the log
operator's signature on the newest checkpoint, proves with a consistency proof that
it extends the checkpoint this witness co-signed last, and only then adds its
``cosignature/v1`` line (:func:`consentry.registry.checkpoint.cosign_checkpoint`).
A smaller tree, another root at the same size, a proof that fails or another log
is refused with :class:`~consentry.errors.RollbackError`, and nothing is signed.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import platformdirs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consentry.config import WITNESS_DIR_ENV  # re-exported: defined where the CLI reads it
from consentry.errors import CheckpointError, ConfigError, ProofError, RollbackError
from consentry.fsutil import atomic_write
from consentry.registry import checkpoint as cp
from consentry.registry import merkle
from consentry.registry.signing import SigningKey

try:  # POSIX; elsewhere the rename alone keeps each write atomic
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "WITNESS_DIR_ENV",
    "WitnessKey",
    "WitnessStore",
    "Witnessed",
    "check_extends",
    "cosign",
    "operator_checkpoint",
    "resolve_witness_dir",
]


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

    def __init__(self, folder: Path, role: str = "logs") -> None:
        self.folder = folder
        self.role = role
        # origin -> (file identity, what latest() parsed from it): see latest_unchanged
        self._parsed: dict[str, tuple[tuple[int, int, int], Witnessed | None]] = {}

    @classmethod
    def resolve(cls, explicit: Path | str | None = None, role: str = "logs") -> WitnessStore:
        """The store in the resolved witness folder; ``role`` is ``logs`` (what was
        verified) or ``cosigned`` (what this witness co-signed)."""
        return cls(resolve_witness_dir(explicit), role)

    @property
    def logs_dir(self) -> Path:
        return self.folder / self.role

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

    def latest_unchanged(self, origin: str) -> Witnessed | None:
        """:meth:`latest`, parsed again only when the state file changed.

        The file's identity (inode, size, modification time in ns) decides: every
        state is written by an atomic replace, so a new state is a new inode. For the
        per-decision rollback check only; checking and advancing under
        :meth:`locked` always read the file afresh (:meth:`latest`).
        """
        path = self.path_for(origin)
        try:
            st = path.stat()
        except FileNotFoundError:
            self._parsed.pop(origin, None)
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read the witness state {path}: {exc}") from exc
        identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._parsed.get(origin)
        if cached is not None and cached[0] == identity:
            return cached[1]
        found = self.latest(origin)
        self._parsed[origin] = (identity, found)
        return found

    @contextlib.contextmanager
    def locked(self, origin: str) -> Iterator[None]:
        """Hold the exclusive lock of ``origin``'s state (check, then advance).

        A folder that cannot be created or written is a :class:`ConfigError`.
        """
        lock_path = self.path_for(origin).with_suffix(".lock")
        try:
            self.logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot use the witness folder {self.folder}: {exc.strerror or exc} "
                f"(set --witness-dir or {WITNESS_DIR_ENV})"
            ) from exc
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
        try:
            atomic_write(self.path_for(checkpoint.origin), note, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the witness state in {self.folder}: {exc.strerror or exc}"
            ) from exc
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


@dataclass(frozen=True)
class WitnessKey:
    """A witness's co-signing key and its signed-note key name."""

    name: str
    key: SigningKey

    @property
    def vkey(self) -> str:
        """The verifier key line verifiers pass as ``--witness-key``."""
        return cp.format_vkey(self.name, self.key.public_key)

    @classmethod
    def create(cls, store: WitnessStore, name: str | None = None) -> WitnessKey:
        """Make the witness key of ``store``'s folder (0600); refuses to replace one."""
        if store.key_file.exists():
            raise ConfigError(f"a witness key already exists: {store.key_file}")
        key = SigningKey.generate()
        witness = cls(name or f"consentry-witness/{key.key_id[:16]}", key)
        witness.vkey  # noqa: B018 - validates the name before anything is written
        try:
            key.save(store.key_file)
            atomic_write(store.vkey_file, witness.vkey + "\n", 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot write the witness key in {store.folder}: {exc}") from exc
        return witness

    @classmethod
    def load(cls, store: WitnessStore) -> WitnessKey:
        if not store.key_file.exists():
            raise ConfigError(
                f"no witness key in {store.folder}", hint="run 'consentry witness init' first"
            )
        key = SigningKey.load(store.key_file)
        try:
            name, public = cp.parse_vkey(store.vkey_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, CheckpointError) as exc:
            raise ConfigError(f"cannot read the witness key line {store.vkey_file}: {exc}") from exc
        if public.public_bytes_raw() != key.public_key.public_bytes_raw():
            raise ConfigError(f"{store.vkey_file} does not match {store.key_file}")
        return cls(name, key)


def operator_checkpoint(note: str, operator_keys: Mapping[str, Ed25519PublicKey]) -> cp.Checkpoint:
    """The checkpoint of ``note`` if one of the log's operator keys (by key name) signed it."""
    _, signatures = cp.parse_checkpoint(note)
    for signature in signatures:
        public = operator_keys.get(signature.key_name)
        if public is not None:
            return cp.verify_checkpoint(note, signature.key_name, public)
    raise CheckpointError("the checkpoint is not signed by an operator key of this log")


def cosign(
    store: WitnessStore,
    witness: WitnessKey,
    note: str,
    proof: Callable[[int], Sequence[bytes]] | Sequence[bytes],
    operator_keys: Mapping[str, Ed25519PublicKey],
    now: datetime,
    origin: str | None = None,
) -> str:
    """Co-sign ``note`` if it extends what this witness co-signed last; return it
    with the witness's cosignature line added, and record it.

    ``proof`` is the consistency proof from the witness's last tree size to the
    note's (or a function of that size returning it). ``origin``, when given, is
    the log the caller expects: a checkpoint of another log is refused. Raises
    :class:`RollbackError` (and signs nothing) for a non-extending checkpoint.
    """
    checkpoint = operator_checkpoint(note, operator_keys)
    if origin is not None and checkpoint.origin != origin:
        raise RollbackError(
            f"the checkpoint is of log {checkpoint.origin!r}, not {origin!r}: refusing it"
        )
    with store.locked(checkpoint.origin):
        seen = store.latest(checkpoint.origin)
        if seen is not None:
            last = seen.checkpoint.tree_size
            needs_proof = 0 < last < checkpoint.tree_size
            hashes = (proof(last) if callable(proof) else proof) if needs_proof else []
            check_extends(seen.checkpoint, checkpoint, hashes)
        cosigned = cp.cosign_checkpoint(note, witness.name, witness.key.private_key, now)
        store.advance(cosigned)
    return cosigned
