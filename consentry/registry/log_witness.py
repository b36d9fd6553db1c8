"""The witness rules of one registry's log (``registry.log``'s :class:`LogWitness`).

Invariants
- **The log extends what this party witnessed.** :meth:`LogWitness.check` (at every
  open) and every checkpoint prove, with an RFC 9162 consistency proof from stored
  hashes (O(log n) rows), that the whole log extends the newest checkpoint this
  party's witness state (``consentry.registry.witness``, outside the home) has
  seen of this origin; a smaller log or another history raises ``RollbackError``.
- **The witness state only moves forward.** :meth:`LogWitness.advance` records a
  checkpoint under the state's lock, after proving the log again, and only if it
  is not smaller than the stored one; a checkpoint becomes the state only when an
  operator key signed it for this origin and its root is the log's prefix root.
- **The log is the one its origin names.** Its genesis entry is the key the
  origin (``config.json``) is named after, else ``RollbackError``.
- **The home's own copy.** A checkpoint is never signed over a log smaller than,
  or differing from, the checkpoint the home's witness file holds.
- :meth:`LogWitness.check_not_rolled_back` is the cheap check before every
  decision: the last leaf of the tree last proved still there, unchanged, and the
  witness state not moved past it (else the full :meth:`LogWitness.check`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlmodel import Session, col, select

from consentry.errors import ConsentryError, RollbackError
from consentry.registry import checkpoint as cp
from consentry.registry import merkle, tiles
from consentry.registry.coalesce import CoalescedRuns
from consentry.registry.models import CheckpointRow, LogEntry, OperatorKey
from consentry.registry.raw_sql import RawStatement
from consentry.registry.signing import checkpoint_key_name, public_key_from_hex
from consentry.registry.witness import check_extends

if TYPE_CHECKING:
    from consentry.registry.log import RegistryLog

__all__ = ["LogWitness"]

_LEAF_HASH_AT = RawStatement(f"SELECT leaf_hash FROM {LogEntry.__tablename__} WHERE idx = :idx")
_VERIFY_HINT = "run 'consentry log verify'"


class LogWitness:
    """The witness checks of one :class:`~consentry.registry.log.RegistryLog`, and
    what they proved last (the tail leaf and the witnessed root)."""

    def __init__(
        self, log: RegistryLog, tree: Callable[[], AbstractContextManager[tiles.StoredTree]]
    ) -> None:
        self._log = log
        self._tree = tree  # the whole log's stored tree, in one read session
        # (size, leaf hash hex at size - 1) of the tree last proved to extend the witness
        self._witnessed_tail: tuple[int, str] | None = None
        self._cheap_lock = threading.Lock()  # coalesced cheap checks (check_not_rolled_back)
        self._cheap_checks = CoalescedRuns()
        # (size, root) of that witnessed checkpoint: what the consent follower binds to
        self._witnessed_root: tuple[int, bytes] | None = None

    @property
    def witnessed_root(self) -> tuple[int, bytes] | None:
        """``(tree size, root)`` of the newest checkpoint proved (at open, and at each
        checkpoint) to be in the witness state and extended by the log; None before any."""
        return self._witnessed_root

    def check(self) -> None:
        """Prove that the whole log extends this party's witness state, then advance
        the state to the newest stored checkpoint that verifies against the log.

        Roots and the consistency proof come from stored hashes: O(log n) rows.
        Also checks that the log is the one ``config.json`` names (its origin is
        bound to the genesis key). Raises ``RollbackError``.
        """
        with self._tree() as tree:
            session = tree.session
            genesis = session.get(LogEntry, 0)
            newest = session.exec(
                select(CheckpointRow).order_by(col(CheckpointRow.tree_size).desc())
            ).first()
            keys = {
                checkpoint_key_name(k.key_id): public_key_from_hex(k.public_key)
                for k in session.exec(select(OperatorKey))
            }
            if genesis is not None:
                self._check_genesis(genesis, tree.leaf(0))
            self.check_extends(tree)
            if newest is not None:
                candidate = self._verified_note(newest.note, keys, tree)
                if candidate is not None:
                    self.advance(tree, candidate)

    def check_not_rolled_back(self) -> None:
        """The cheap check before each decision (O(1) queries, no tree).

        The log still holds, unchanged, the last leaf of the tree this Registry
        proved to extend its witness, and the witness state has not moved past it
        (another process saw more: then the full :meth:`check` runs). A
        rollback under a running gateway therefore refuses the next job; a
        rewrite that keeps that leaf is caught by the full proof at the next
        checkpoint (before anything is released) and at every open.

        Coalesced (:mod:`consentry.registry.coalesce`): a call that waited while another
        check began after it and passed returns at once. Only a pass covers: after a
        failure every waiting call checks again (and fails the same way).
        """
        ticket = self._cheap_checks.ticket()
        with self._cheap_lock:
            if self._cheap_checks.covered(ticket):
                return
            number = self._cheap_checks.begin()
            self._check_tail_unchanged()
            self._cheap_checks.completed(number)

    def _check_tail_unchanged(self) -> None:
        """The uncoalesced check of :meth:`check_not_rolled_back`."""
        seen = self._log.witness.latest_unchanged(self._log.origin)
        tail = self._witnessed_tail
        if tail is None or (seen is not None and seen.checkpoint.tree_size > tail[0]):
            self.check()
            return
        size, leaf = tail
        with self._log.db.read_one() as connection:  # one statement, no transaction
            found = _LEAF_HASH_AT.first(connection, {"idx": size - 1})
        if found is None or found[0] != leaf:
            raise RollbackError(
                f"rollback: the log no longer holds entry {size - 1} as witnessed "
                f"(witness {self._log.witness.folder}): the database was restored from an older "
                "copy or rewritten; refusing every job"
            )

    def _check_genesis(self, genesis: LogEntry, genesis_hash: bytes) -> None:
        """The log's first entry is the key its origin is named after."""
        try:
            leaf = json.loads(genesis.leaf_json)
        except ValueError:
            leaf = {}
        key_id = str(leaf.get("id", "")) if isinstance(leaf, dict) else ""
        if (
            merkle.leaf_hash(genesis.leaf_json.encode()) != genesis_hash
            or not isinstance(leaf, dict)
            or leaf.get("kind") != "key"
            or self._log.origin != f"consentry.registry/{key_id[:16]}"
        ):
            raise RollbackError(
                f"the database holds another log than {self._log.origin!r} (its genesis key is "
                f"{key_id[:16] or 'missing'}): refusing it"
            )

    def _verified_note(
        self, note: str, keys: Mapping[str, Ed25519PublicKey], tree: tiles.StoredTree
    ) -> str | None:
        """``note`` if an operator key signed it for this origin and its root is the
        log's prefix root; else None (``log verify`` reports why)."""
        try:
            _, signatures = cp.parse_checkpoint(note)
            for signature in signatures:
                public = keys.get(signature.key_name)
                if public is None:
                    continue
                checkpoint = cp.verify_checkpoint(note, signature.key_name, public)
                if (
                    checkpoint.origin == self._log.origin
                    and checkpoint.tree_size <= len(tree)
                    and tree.root_at(checkpoint.tree_size) == checkpoint.root_hash
                ):
                    return note
                return None
        except ConsentryError:
            return None
        return None

    def check_extends(self, tree: tiles.StoredTree) -> None:
        """The log extends the witness state (consistency proof), or RollbackError."""
        seen = self._log.witness.latest(self._log.origin)
        if seen is None:
            return  # first sight: trusted on first use, recorded by _advance_witness
        trusted = seen.checkpoint
        if trusted.tree_size > len(tree):
            with self._tree() as fresh:  # another process may have grown the log since
                if len(fresh) < trusted.tree_size:
                    raise RollbackError(
                        f"rollback: the log has {len(fresh)} entries but the witness "
                        f"{self._log.witness.folder} saw {trusted.tree_size} of "
                        f"{self._log.origin!r}: "
                        "the database was restored from an older copy or truncated; "
                        "refusing it"
                    )
                self._prove_extends(fresh, trusted)
            return
        self._prove_extends(tree, trusted)

    def _prove_extends(self, tree: tiles.StoredTree, trusted: cp.Checkpoint) -> None:
        size = len(tree)
        proof = tree.consistency_proof(trusted.tree_size) if 0 < trusted.tree_size < size else []
        current = cp.Checkpoint(self._log.origin, size, tree.root, trusted.timestamp)
        try:
            check_extends(trusted, current, proof)
        except RollbackError as exc:
            raise RollbackError(
                f"rollback: the log does not extend the checkpoint of size "
                f"{trusted.tree_size} seen by the witness {self._log.witness.folder} ({exc}); "
                "refusing it"
            ) from exc
        self._remember_tail(tree, trusted.tree_size, trusted.root_hash)

    def advance(self, tree: tiles.StoredTree, note: str) -> None:
        """Record ``note``, a checkpoint of a prefix of the log ``tree``, as the
        witness state. Under the state's lock the whole log is proved again to extend
        what is stored, so the stored and the new checkpoint are both prefixes of one
        tree and the state only moves forward."""
        checkpoint, _ = cp.parse_checkpoint(note)
        with self._log.witness.locked(self._log.origin):
            self.check_extends(tree)
            seen = self._log.witness.latest(self._log.origin)
            if seen is None or checkpoint.tree_size >= seen.checkpoint.tree_size:
                self._log.witness.advance(note)
                self._remember_tail(tree, checkpoint.tree_size, checkpoint.root_hash)

    def _remember_tail(self, tree: tiles.StoredTree, size: int, root: bytes) -> None:
        if 0 < size <= len(tree) and (
            self._witnessed_tail is None or self._witnessed_tail[0] <= size
        ):
            self._witnessed_tail = (size, tree.leaf(size - 1).hex())
            self._witnessed_root = (size, root)

    def check_home_copy(self, session: Session, tree: tiles.StoredTree) -> None:
        """The log must extend the newest checkpoint this home has witnessed."""
        path = self._log.home.witness_checkpoint
        if not path.exists():
            return
        note = path.read_text()
        keys = {
            checkpoint_key_name(k.key_id): public_key_from_hex(k.public_key)
            for k in session.exec(select(OperatorKey))
        }
        _, signatures = cp.parse_checkpoint(note)
        names = [s.key_name for s in signatures if s.key_name in keys]
        if not names:
            raise RollbackError("the witness checkpoint is not signed by this registry's keys")
        witness = cp.verify_checkpoint(note, names[0], keys[names[0]])
        if witness.tree_size > len(tree):
            raise RollbackError(
                f"the log has {len(tree)} entries but this home witnessed "
                f"{witness.tree_size}: log truncated",
                hint=_VERIFY_HINT,
            )
        if tree.root_at(witness.tree_size) != witness.root_hash:
            raise RollbackError(
                "the log's first entries differ from the witnessed checkpoint: log rewritten",
                hint=_VERIFY_HINT,
            )
