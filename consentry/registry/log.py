"""The registry's transparency log: one object (``registry.log``) owning the
tree, the checkpoints, the witness checks, the proofs, verification, and the ONE
write path.

Invariants
- **Every leaf is the signed statement of its row.** Rows reach the log only
  through :meth:`RegistryLog.record` / :meth:`RegistryLog.record_many` (and the two
  key entries, :meth:`RegistryLog.record_genesis` and
  :meth:`RegistryLog.record_rotation`). Each derives the leaf's kind (one table,
  ``statements.leaf_kind_of``: model class -> kind), its record id
  (``statements.record_id_of``) and the signed statement (``statement_of``) from
  the row itself, so no caller can append a leaf that disagrees with its row.
- **The operator key signs, unless retired.** Before signing, the current key is
  looked up in the caller's transaction (``_signing_key``): a key not in this
  registry is a SignatureError, a retired one a RetiredKeyError. Grants and
  revocations carry the issuing key's id, set here to the key that signs.
- **One transaction, the writer lock.** Every write method takes the caller's
  ``Database.write`` session: the row, its leaf and the stored tree hashes commit
  together or not at all, and ``max(idx) + 1`` (read under the lock) is the next
  free index, so indexes are unique and gap-free.
- **Witness rules** (enforced by :class:`~consentry.registry.log_witness.LogWitness`,
  ``log.witnessing``). Every Registry proves, when it opens and whenever it signs a
  checkpoint, that the log extends the newest checkpoint its *own* witness state
  (``consentry.registry.witness``, outside the home) has seen, with an RFC 9162
  consistency proof, and advances that state only forward (under its lock, after
  proving again); a log that does not extend it (smaller, or another history), or
  whose genesis entry is not the key its origin names, raises ``RollbackError``.
  ``check_not_rolled_back`` is the cheap check the gateway runs before every
  decision; a checkpoint is never signed over a truncated or rewritten log.
- Roots and proofs come from stored hashes (``consentry.registry.tiles``):
  O(log n) rows each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import bindparam, func, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from consentry.config import Home
from consentry.errors import (
    ConsentryError,
    DuplicateError,
    InputError,
    LogIntegrityError,
    NotFoundError,
    RetiredKeyError,
    RollbackError,
    SignatureError,
)
from consentry.fsutil import atomic_write
from consentry.registry import checkpoint as cp
from consentry.registry import merkle, tiles
from consentry.registry.db import Database
from consentry.registry.log_witness import LogWitness
from consentry.registry.models import (
    CheckpointRow,
    Grant,
    LogEntry,
    OperatorKey,
    Revocation,
    SubjectKeyChange,
)
from consentry.registry.signing import (
    Envelope,
    SigningKey,
    canonical_json,
    checkpoint_key_name,
)
from consentry.registry.statements import (
    Row,
    format_time,
    leaf_kind_of,
    record_id_of,
    rotation_statement,
    statement_of,
)
from consentry.registry.verify import LogReport, verify_log
from consentry.registry.witness import WitnessStore

__all__ = ["InclusionProof", "RegistryLog", "leaf_bytes"]

Clock = Callable[[], datetime]

_LEAF_HASH_AT = select(LogEntry.leaf_hash).where(col(LogEntry.idx) == bindparam("idx"))
_KEY_RETIRED = select(OperatorKey.retired_at_index).where(OperatorKey.key_id == bindparam("key_id"))
_INSERTS: dict[type[Any], Any] = {}
_VERIFY_HINT = "run 'consentry log verify'"
_CHECKPOINT_HINT = "run 'consentry log checkpoint'"


def _insert_for(model: type[Any]) -> Any:
    """A cached Core INSERT for ``model``'s table (built once per process)."""
    statement = _INSERTS.get(model)
    if statement is None:
        statement = _INSERTS[model] = insert(model.__table__)
    return statement


def leaf_bytes(kind: str, record_id: str, envelope: Envelope) -> bytes:
    """The canonical JSON of one log leaf (what RFC 9162 ``leaf_hash`` hashes)."""
    return canonical_json(
        {
            "type": "consentry.log-leaf",
            "version": 1,
            "kind": kind,
            "id": record_id,
            "envelope": envelope.to_json(),
        }
    )


@dataclass(frozen=True)
class InclusionProof:
    """Everything an offline verifier needs to check one entry against a checkpoint."""

    index: int
    tree_size: int
    leaf_hash: bytes
    hashes: list[bytes]
    checkpoint: str
    leaf: str

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "leaf_hash": self.leaf_hash.hex(),
            "hashes": [h.hex() for h in self.hashes],
            "checkpoint": self.checkpoint,
            "leaf": self.leaf,
        }


class RegistryLog:
    """The transparency log of one registry (``registry.log``): see the module doc."""

    def __init__(
        self, home: Home, db: Database, key: SigningKey, clock: Clock, witness: WitnessStore
    ) -> None:
        self.home = home
        self.db = db
        self._key = key
        self._clock = clock
        self.witness = witness
        self._origin = ""
        # the witness rules and what they proved last (``consentry.registry.log_witness``)
        self.witnessing = LogWitness(self, self._tree)

    @property
    def origin(self) -> str:
        """The checkpoint origin (``config.json``), named after the genesis key."""
        if not self._origin:
            self._origin = self.home.read_config().get("origin", "")
        return self._origin

    @origin.setter
    def origin(self, value: str) -> None:
        self._origin = value

    @property
    def key_id(self) -> str:
        """The current operator key id."""
        return self._key.key_id

    def use_key(self, key: SigningKey) -> None:
        """Sign with ``key`` from now on (after a committed :meth:`record_rotation`)."""
        self._key = key

    # ------------------------------------------------------------------ writing
    def record(self, session: Session, row: Row, cosigners: Sequence[SigningKey] = ()) -> int:
        """Sign ``row``'s statement with the operator key (and ``cosigners``, e.g. a
        subject's key) and append it with its row, in the caller's write
        transaction; returns its index. Kind, record id and statement come from the
        row. Operator keys enter only through :meth:`record_genesis` and
        :meth:`record_rotation`."""
        if isinstance(row, OperatorKey):
            raise InputError("operator keys are logged by the genesis or a key rotation")
        key = self._signing_key(session)
        return self._append(session, [self._signed(row, key, cosigners)])[0]

    def record_many(
        self,
        session: Session,
        rows: Sequence[Row],
        start: int | None = None,
        key: SigningKey | None = None,
    ) -> list[int]:
        """:meth:`record` for a batch (the sequencer's decisions): the key checked
        once, each row signed, all appended at consecutive indexes with one
        executemany per table. ``start``: the caller's :meth:`next_index`, read in
        this same transaction (the writer lock held since); read here when not given.
        ``key``: the caller's :meth:`checked_key` of a row read in this transaction;
        checked here when not given."""
        if not rows:
            return []
        if any(isinstance(row, OperatorKey) for row in rows):
            raise InputError("operator keys are logged by the genesis or a key rotation")
        if key is None:
            key = self._signing_key(session)
        return self._append(session, [self._signed(row, key) for row in rows], start)

    def record_presigned(
        self, session: Session, row: Grant | Revocation | SubjectKeyChange, subject_signed: Envelope
    ) -> int:
        """Append a grant or revocation its subject signed elsewhere
        (:mod:`consentry.registry.detached`): ``subject_signed`` holds the canonical
        statement and the subject's signature, and the operator key signs the very
        same bytes. ``row`` must be exactly that statement (the row is what the
        statement says, never more), and name the current operator key as issuer."""
        key = self._signing_key(session)
        if row.issuer_key_id != key.key_id:
            raise SignatureError(
                f"the statement names operator key {row.issuer_key_id[:16]}, which is not "
                f"the key signing now ({key.key_id[:16]})",
                hint="prepare the statement again",
            )
        if canonical_json(statement_of(row)) != subject_signed.payload:
            raise SignatureError("the signed statement is not the record it would append")
        envelope = subject_signed.countersign(key)
        return self._append(session, [(row, leaf_kind_of(row), record_id_of(row), envelope)])[0]

    def record_genesis(self, session: Session, created_at: str) -> OperatorKey:
        """Entry 0 of a new log: the operator key, self-signed (it is not in the
        registry yet, so it is not looked up). Refused on a log that has entries."""
        if self.next_index(session) != 0:
            raise DuplicateError("the log already has a genesis entry")
        key = self._key
        row = OperatorKey(
            key_id=key.key_id, public_key=key.public_hex, created_at=created_at, log_index=0
        )
        envelope = Envelope.sign(statement_of(row), [key])
        self._append(session, [(row, "key", key.key_id, envelope)])
        return row

    def record_rotation(self, session: Session, new_key: SigningKey) -> OperatorKey:
        """Log ``new_key`` replacing the current operator key: the rotation
        statement signed by both, the old key's row marked retired at that index,
        in the caller's write transaction. The caller moves the key file after the
        commit and then calls :meth:`use_key`."""
        old_key = self._signing_key(session)
        old_row = session.get(OperatorKey, old_key.key_id)
        if old_row is None:  # _signing_key just found it in this transaction
            raise SignatureError(f"operator key {old_key.key_id[:16]} is not in this registry")
        new_row = OperatorKey(
            key_id=new_key.key_id,
            public_key=new_key.public_hex,
            created_at=format_time(self._clock()),
            log_index=-1,
        )
        envelope = Envelope.sign(rotation_statement(old_row, new_row), [old_key, new_key])
        [index] = self._append(session, [(new_row, "key-rotation", new_key.key_id, envelope)])
        old_row.retired_at_index = index
        old_row.successor_key_id = new_key.key_id
        session.add(old_row)
        return new_row

    def _signing_key(self, session: Session) -> SigningKey:
        """The operator key, after checking (in ``session``) that it is not retired."""
        found = session.connection().execute(_KEY_RETIRED, {"key_id": self._key.key_id}).first()
        return self.checked_key(None if found is None else (found[0],))

    def checked_key(self, found: tuple[int | None] | None) -> SigningKey:
        """The operator key, given its ``keys`` row's ``retired_at_index`` as read in
        the caller's write transaction (``found`` None: no row). SignatureError when
        the key is not in this registry, RetiredKeyError when it was retired."""
        if found is None:
            raise SignatureError(f"operator key {self._key.key_id[:16]} is not in this registry")
        if found[0] is not None:
            raise RetiredKeyError(
                f"operator key {self._key.key_id[:16]} was retired at log index "
                f"{found[0]} and can no longer sign"
            )
        return self._key

    @staticmethod
    def _signed(
        row: Row, key: SigningKey, cosigners: Sequence[SigningKey] = ()
    ) -> tuple[Row, str, str, Envelope]:
        if isinstance(row, (Grant, Revocation)):
            row.issuer_key_id = key.key_id
        envelope = Envelope.sign(statement_of(row), [key, *cosigners])
        return row, leaf_kind_of(row), record_id_of(row), envelope

    def next_index(self, session: Session) -> int:
        """The index the next leaf appended in ``session`` gets: ``max(idx) + 1``.

        The caller holds the writer lock (``Database.write``), so no other writer can
        take it before the caller's commit. Stored hashes an older release did not
        write are caught up first (a truncated log is refused: ``tiles.sync``).
        """
        with session.no_autoflush:
            index, stored = tiles.sizes(session)
        return self.next_index_from(session, index, stored)

    def next_index_from(self, session: Session, log_size: int, stored_size: int) -> int:
        """:meth:`next_index` given the two sizes as the caller read them in ``session``
        (the writer lock held) in one statement of its own."""
        if stored_size != log_size:
            with session.no_autoflush:
                tiles.sync(session)  # leaves an older release wrote; refuses a truncated log
        return log_size

    def _append(
        self,
        session: Session,
        items: Sequence[tuple[Row | None, str, str, Envelope]],
        start: int | None = None,
    ) -> list[int]:
        """Append ``(row, kind, record_id, envelope)`` leaves at consecutive indexes,
        in order, inside the caller's write transaction; returns their indexes.
        Only the ``record*`` methods above call it (they build each tuple from its row).

        Each row's ``log_index`` is set to its leaf's index. Rows of one table, the
        log entries and the stored tree hashes (``tiles.rows_to_store``, which reads
        the stored right edge first) each go in with one executemany, all three
        pipelined (``Database.pipelined``: one round trip on PostgreSQL); a conflict
        with a stored row is a DuplicateError and the transaction rolls back.
        ``start``: the caller's :meth:`next_index`, read in this same transaction
        (the writer lock held since, so it is still the next index); read here when
        not given.
        """
        if not items:
            return []
        if start is None:
            start = self.next_index(session)
        created = format_time(self._clock())
        tables: dict[type[Any], list[dict[str, Any]]] = {}
        entries: list[dict[str, Any]] = []
        digests: list[bytes] = []
        for index, (row, kind, record_id, envelope) in enumerate(items, start):
            data = leaf_bytes(kind, record_id, envelope)
            digest = merkle.leaf_hash(data)
            if row is not None:
                row.log_index = index
                tables.setdefault(type(row), []).append(row.model_dump())
            entries.append(
                {
                    "idx": index,
                    "kind": kind,
                    "record_id": record_id,
                    "leaf_json": data.decode(),
                    "leaf_hash": digest.hex(),
                    "created_at": created,
                }
            )
            digests.append(digest)
        try:
            session.flush()  # what autoflush did before the first insert: Core from here
            connection = session.connection()
            tree_rows = tiles.rows_to_store(connection, start, digests)  # reads the right edge
            with self.db.pipelined(session):  # the inserts in one round trip (PostgreSQL)
                for model, rows in tables.items():
                    connection.execute(_insert_for(model), rows)
                connection.execute(_insert_for(LogEntry), entries)
                tiles.insert_rows(connection, tree_rows)
        except IntegrityError as exc:
            _, kind, record_id, _ = items[0]
            what = f"{kind} {record_id}" if len(items) == 1 else f"one of {len(items)} records"
            raise DuplicateError(f"{what} conflicts with an existing record") from exc
        return list(range(start, start + len(items)))

    # ------------------------------------------------------------------ reading
    def log_size(self) -> int:
        """Entries in the log (``max(idx) + 1``; indexes are gap-free)."""
        with self.db.read() as session:
            last = session.exec(select(func.max(LogEntry.idx))).one()
        return 0 if last is None else int(last) + 1

    def leaf_hashes(self, size: int | None = None) -> list[bytes]:
        """The leaf hashes of the first ``size`` entries (default: all), in index
        order, as the log rows hold them: O(n) rows, for whole-log checks and
        benches; roots and proofs use the stored tree instead (O(log n))."""
        query = select(LogEntry.leaf_hash).order_by(col(LogEntry.idx))
        if size is not None:
            query = query.where(col(LogEntry.idx) < size)
        with self.db.read() as session:
            return [bytes.fromhex(h) for h in session.exec(query)]

    def prefix_root(self, size: int) -> bytes | None:
        """RFC 9162 root of the first ``size`` entries, from O(log n) stored hashes;
        None when the log holds fewer entries."""
        with self._tree() as tree:
            if not 0 <= size <= len(tree):
                return None
            return tree.root_at(size)

    def entry(self, index: int) -> LogEntry:
        """Log entry ``index``; ``NotFoundError`` when the log has none."""
        with self.db.read() as session:
            row = session.get(LogEntry, index)
        if row is None:
            raise NotFoundError(f"no log entry {index}")
        return row

    @contextmanager
    def _tree(self) -> Iterator[tiles.StoredTree]:
        """The whole log's tree from stored hashes, in one read session (O(log n)
        rows per root or proof). Leaves without stored hashes (a home an older
        release wrote) get them first, in a write transaction. Stored hashes past
        the log's end (entries deleted) are ignored here: the witness proofs then
        see the smaller log and refuse it."""
        with self.db.read() as session:
            size = tiles.log_size(session)
            if tiles.stored_size(session) >= size:
                yield tiles.StoredTree(session, size)
                return
        with self.db.write() as session:
            yield tiles.StoredTree(session, tiles.sync(session))

    def check_at_open(self) -> None:
        """What every Registry proves when it opens: the stored hashes are brought up
        to the log (:meth:`_sync_stored_hashes`), then the whole log must extend this
        party's witness state (:meth:`LogWitness.check`; else ``RollbackError``)."""
        self._sync_stored_hashes()
        self.witnessing.check()

    def _sync_stored_hashes(self) -> None:
        """Bring the stored hashes up to the log (upgrade in place, once).
        Two O(1) queries when they are already there. Leaves are not compared with
        their stored hashes here (that was O(n)): the follower's binding refuses a
        leaf rewritten under unchanged stored hashes at the first follow of it."""
        with self.db.read() as session:
            behind = tiles.stored_size(session) < tiles.log_size(session)
        if behind:
            with self.db.write() as session:
                tiles.sync(session)

    def checkpoint(self) -> str:
        """Sign a checkpoint of the whole log now; store it and the home's witness copy.

        Refuses (``RollbackError``) when the log no longer extends the witness
        checkpoint this home saw last, or a stored checkpoint of the same size has
        another root: a truncated or rewritten log is never re-signed. The root
        and the witness proofs come from stored hashes (O(log n) rows).
        """
        with self.db.write() as session:
            key = self._signing_key(session)
            size = tiles.sync(session)
            tree = tiles.StoredTree(session, size)
            self.witnessing.check_home_copy(session, tree)
            self.witnessing.check_extends(tree)
            root = tree.root
            existing = session.get(CheckpointRow, size)
            if existing is not None:
                if existing.root_hash != root.hex():
                    raise RollbackError(
                        f"a stored checkpoint of size {size} has another root: "
                        "the log was rewritten",
                        hint=_VERIFY_HINT,
                    )
                note = existing.note
            else:
                checkpoint = cp.Checkpoint(self.origin, size, root, self._clock())
                note = cp.sign_checkpoint(
                    checkpoint, checkpoint_key_name(key.key_id), key.private_key
                )
                session.add(
                    CheckpointRow(
                        tree_size=size,
                        root_hash=root.hex(),
                        note=note,
                        key_id=key.key_id,
                        created_at=format_time(self._clock()),
                    )
                )
        atomic_write(self.home.witness_checkpoint, note, 0o644)
        with self._tree() as tree:
            self.witnessing.advance(tree, note)
        return note

    # ------------------------------------------------------------------ witness
    def check_not_rolled_back(self) -> None:
        """:meth:`LogWitness.check_not_rolled_back`: the cheap check before a decision."""
        self.witnessing.check_not_rolled_back()

    @property
    def witnessed_root(self) -> tuple[int, bytes] | None:
        """:attr:`LogWitness.witnessed_root`: what the consent follower binds to."""
        return self.witnessing.witnessed_root

    def add_cosignatures(self, note: str) -> str:
        """Store the signature lines of ``note`` (a witness-cosigned copy of a stored
        checkpoint) on that checkpoint; returns the stored note.

        Only lines are added: the body must be exactly a stored checkpoint's, so a
        witness can never change what the operator signed.
        """
        checkpoint, _ = cp.parse_checkpoint(note)
        with self.db.write() as session:
            row = session.get(CheckpointRow, checkpoint.tree_size)
            if row is None or cp.parse_checkpoint(row.note)[0] != checkpoint:
                raise NotFoundError(
                    f"no stored checkpoint of size {checkpoint.tree_size} with this body"
                )
            merged = cp.merge_signatures(row.note, note)
            if merged != row.note:
                row.note = merged
                session.add(row)
        return merged

    def cosigned_size(self, key_name: str, public_key: Ed25519PublicKey) -> int:
        """The largest tree size of a stored checkpoint that the witness key cosigned
        and whose root is the log's prefix root; 0 when there is none."""
        with self.db.read() as session:
            notes = [
                r.note
                for r in session.exec(
                    select(CheckpointRow).order_by(col(CheckpointRow.tree_size).desc())
                )
            ]
        for note in notes:
            try:
                checkpoint, _ = cp.verify_cosignature(note, key_name, public_key)
            except ConsentryError:
                continue
            with self._tree() as tree:
                if (
                    checkpoint.origin == self.origin
                    and checkpoint.tree_size <= len(tree)
                    and tree.root_at(checkpoint.tree_size) == checkpoint.root_hash
                ):
                    return checkpoint.tree_size
        return 0

    def latest_checkpoint(self) -> str:
        with self.db.read() as session:
            row = session.exec(
                select(CheckpointRow).order_by(col(CheckpointRow.tree_size).desc())
            ).first()
        if row is None:
            raise NotFoundError("the log has no checkpoint yet", hint=_CHECKPOINT_HINT)
        return row.note

    def inclusion_proof(self, index: int, checkpoint_note: str | None = None) -> InclusionProof:
        """Proof that entry ``index`` is in the tree of the given (default: latest) checkpoint."""
        note = checkpoint_note or self.latest_checkpoint()
        checkpoint, _ = cp.parse_checkpoint(note)
        if not 0 <= index < checkpoint.tree_size:
            raise NotFoundError(
                f"entry {index} is not covered by the checkpoint of size {checkpoint.tree_size}",
                hint=f"{_CHECKPOINT_HINT} first",
            )
        with self._tree() as whole:
            if len(whole) < checkpoint.tree_size:
                raise RollbackError(
                    f"the log has {len(whole)} entries but the checkpoint covers "
                    f"{checkpoint.tree_size}: log truncated",
                    hint=_VERIFY_HINT,
                )
            tree = tiles.StoredTree(whole.session, checkpoint.tree_size)
            leaf_hash = tree.leaf(index)
            hashes = tree.inclusion_proof(index)
            entry = whole.session.get(LogEntry, index)
        if (
            entry is None
            or entry.leaf_hash != leaf_hash.hex()
            or merkle.leaf_hash(entry.leaf_json.encode()) != leaf_hash
        ):
            raise LogIntegrityError(
                f"log entry {index} differs from its stored hash: the log was rewritten",
                hint=_VERIFY_HINT,
            )
        return InclusionProof(
            index=index,
            tree_size=checkpoint.tree_size,
            leaf_hash=leaf_hash,
            hashes=hashes,
            checkpoint=note,
            leaf=entry.leaf_json,
        )

    def verify_log(self) -> LogReport:
        """Verify every row, leaf, signature and checkpoint (see ``registry.verify``),
        and that the log extends this party's witness state (reported, not raised)."""
        witness_file = self.home.witness_checkpoint
        witness = witness_file.read_text() if witness_file.exists() else None
        with self.db.read() as session:
            report = verify_log(session, witness)
        try:
            self.witnessing.check()
        except RollbackError as exc:
            report.problems.append(f"external witness: {exc}")
        return report

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof from ``old_size`` to ``new_size`` (default: the
        whole log), from O(log n) stored hashes."""
        with self._tree() as whole:
            size = len(whole) if new_size is None else new_size
            if size > len(whole):
                raise NotFoundError(f"the log has only {len(whole)} entries")
            if not 0 < old_size <= size:
                raise InputError(f"old size must be between 1 and {size}")
            return tiles.StoredTree(whole.session, size).consistency_proof(old_size)
