"""``log verify``: recompute the log from the rows and check everything.

What is checked, in one pass over the log in index order:

1. indexes run 0..n-1 without a gap; each stored leaf hash is
   ``leaf_hash(leaf_json)`` and each leaf is canonical JSON;
2. each leaf's envelope verifies: canonical payload, payload type, and a
   signature by the operator key active at that index (the genesis key, then
   each rotation's successor); grants and revocations of a subject holding a
   key also carry that subject's signature; a retired key signs nothing later;
3. each leaf's statement equals ``statement_of`` its row (so any edited column
   is named), the row points back at the leaf, and every row has a leaf;
4. every stored tree hash (``registry.tiles``, what roots, proofs and tiles are
   served from) equals the one recomputed from the leaves, in bounded memory; a
   forged one is named by level, index and tile;
5. every stored checkpoint verifies under an operator key and its root equals
   the root of the log prefix of its size; so does the home's witness
   checkpoint, so a truncated or rewritten log is caught even when the
   checkpoints table was edited too.

Problems are collected, not raised, so one run names every bad record.

Memory is bounded by the chunk size, not the log: entries are read in chunks of
``_ENTRY_CHUNK`` by index, each chunk's rows by primary key; the tree is kept as a
frontier (O(log n) hashes, ``registry.frontier``) that also yields the prefix root
at every checkpoint's size; signatures are checked in worker processes and
harvested as they finish (``SignatureBatcher``). What grows with the log is one
byte per entry (which entries matched their row, for the unlogged-rows check),
one int and hash per checkpoint, and the history ``LogChecker`` needs to judge
later entries (subject keys, grant -> subject, grantee ids, signed enrollment
statements): O(records other than decisions), about 150 bytes each.

Steps 1 and 2 are :class:`LogChecker`, which reads no row: the consent follower
(``registry.consent``) runs the same checks, entry by entry, to build the facts the
gateway and ``consentry verify`` trust. Step 3 and the biometric checks (every blob
a signed enrollment of a subject not erased commits to, and that subject's data
key, are present; an erased subject keeps neither) are this module's alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from sqlmodel import Session, col, select

from consentry.errors import ConsentryError
from consentry.registry import checkpoint as cp
from consentry.registry import merkle, tiles
from consentry.registry.frontier import Frontier
from consentry.registry.log_checker import LogChecker, LogReport, prefix_roots
from consentry.registry.models import (
    BiometricBlob,
    Calibration,
    CheckpointRow,
    Decision,
    Enrollment,
    Erasure,
    Grant,
    Grantee,
    GranteeKeyChange,
    LogEntry,
    OperatorKey,
    OptOut,
    Prior,
    Review,
    Revocation,
    Subject,
    SubjectDataKey,
    SubjectKeyChange,
)
from consentry.registry.signing import (
    checkpoint_key_name,
    sha256_hex,
)
from consentry.registry.statements import rotation_statement, statement_of

__all__ = ["LogChecker", "LogReport", "prefix_roots", "verify_log"]

_MAX_TREE_PROBLEMS = 20  # stored-hash problems listed before the rest are summarised
_ENTRY_CHUNK = 2000  # log entries (and their rows) held at once
_ROW_CHUNK = 5000  # rows per query in the unlogged-rows check
_ROW_TYPES: dict[str, type[Any]] = {
    "subject": Subject,
    "grantee": Grantee,
    "grant": Grant,
    "revocation": Revocation,
    "prior": Prior,
    "key": OperatorKey,
    "key-rotation": OperatorKey,
    "enrollment": Enrollment,
    "erasure": Erasure,
    "calibration": Calibration,
    "decision": Decision,
    "opt-out": OptOut,
    "subject-key": SubjectKeyChange,
    "grantee-key": GranteeKeyChange,
    "review": Review,
}


def _table_kind(kind: str) -> str:
    return "key" if kind == "key-rotation" else kind


class _Verifier(LogChecker):
    """``log verify``: the leaves (``LogChecker``), then every row against its leaf,
    streaming (see the module doc for what is kept)."""

    def __init__(self, session: Session) -> None:
        super().__init__(deferred=True)
        self.session = session
        self.report = LogReport()
        self.key_rows: dict[str, OperatorKey] = {
            r.key_id: r for r in session.exec(select(OperatorKey))
        }
        self.chunk_rows: dict[str, dict[str, Any]] = {}  # this chunk's rows, by kind and id
        # per entry: 1 once its row was compared under the entry's own record id
        self.matched = bytearray()
        self.odd_seen: set[tuple[str, str]] = set()  # compared under another id
        self.frontier = Frontier()
        self.wanted_roots: set[int] = set()  # checkpoint sizes whose prefix root is kept
        self.roots: dict[int, bytes] = {}
        self.enrollments: list[dict[str, Any]] = []  # signed enrollment statements
        self.holds: set[str] = set()  # held decisions (grows with holds only)
        self.reviewed: set[str] = set()  # held decisions with their one review

    def problem(self, text: str) -> None:
        self.report.problems.append(text)

    def _chunks(self) -> Iterator[list[LogEntry]]:
        start = 0
        while True:
            chunk = list(
                self.session.exec(
                    select(LogEntry)
                    .where(col(LogEntry.idx) >= start)
                    .order_by(col(LogEntry.idx))
                    .limit(_ENTRY_CHUNK)
                )
            )
            if not chunk:
                return
            yield chunk
            start = chunk[-1].idx + 1

    def _load_rows(self, chunk: Sequence[LogEntry]) -> None:
        wanted: dict[str, list[str]] = {}
        for entry in chunk:
            if entry.kind in _ROW_TYPES and _table_kind(entry.kind) != "key":
                wanted.setdefault(entry.kind, []).append(entry.record_id)
        self.chunk_rows = {}
        for kind, ids in wanted.items():
            table = _ROW_TYPES[kind]
            self.chunk_rows[kind] = {
                r.id: r for r in self.session.exec(select(table).where(col(table.id).in_(ids)))
            }

    def _row(self, kind: str, record_id: str) -> Any:
        if kind == "key":
            return self.key_rows.get(record_id)
        rows = self.chunk_rows.get(kind, {})
        if record_id in rows:
            return rows[record_id]
        return self.session.get(_ROW_TYPES[kind], record_id)  # an id other than the entry's

    def check_entries(self) -> None:
        expected = 0
        for chunk in self._chunks():
            self._load_rows(chunk)
            self.matched.extend(bytes(len(chunk)))
            for entry in chunk:
                if entry.idx != expected:
                    self.problem(
                        f"log entry {expected} is missing (next is {entry.idx}): gap in log"
                    )
                    del self.matched[expected:]
                    self.report.size = expected
                    return
                leaf = entry.leaf_json.encode()
                computed = merkle.leaf_hash(leaf)
                if computed.hex() != entry.leaf_hash:
                    self.problem(
                        f"log entry {entry.idx}: stored leaf hash differs from its content"
                    )
                self.frontier.push(computed)
                if self.frontier.size in self.wanted_roots:
                    self.roots[self.frontier.size] = self.frontier.root
                try:
                    self.check_leaf(entry, leaf)
                except ConsentryError as exc:
                    self.problem(f"{entry.kind} {entry.record_id} (log index {entry.idx}): {exc}")
                expected += 1
            self.chunk_rows = {}
            self.session.expunge_all()  # nothing of the chunk stays in the identity map
            self.harvest_signatures()
        self.report.size = expected

    def seen(self, entry: LogEntry, kind: str, record_id: str) -> None:
        if record_id == entry.record_id and _table_kind(entry.kind) == kind:
            self.matched[entry.idx] = 1
        else:
            self.odd_seen.add((kind, record_id))

    def on_genesis(self, entry: LogEntry, key_id: str, statement: dict[str, Any]) -> None:
        self.compare_row(entry, "key", key_id, statement)

    def on_rotation(
        self, entry: LogEntry, old: str, new_id: str, statement: dict[str, Any]
    ) -> None:
        self.seen(entry, "key", new_id)
        old_row = self.key_rows.get(old)
        new_row = self.key_rows.get(new_id)
        if new_row is None or old_row is None:
            raise ConsentryError("key row missing")
        if rotation_statement(old_row, new_row) != statement:
            raise ConsentryError("key rows differ from the signed rotation")
        if old_row.retired_at_index != entry.idx or new_row.log_index != entry.idx:
            raise ConsentryError("key rows do not point at the rotation entry")

    def on_record(
        self, entry: LogEntry, kind: str, record_id: str, statement: dict[str, Any]
    ) -> None:
        if kind == "enrollment":
            self.enrollments.append(statement)
        self.compare_row(entry, kind, record_id, statement)
        if kind == "decision" and isinstance(statement.get("held"), dict):
            self.holds.add(record_id)
        elif kind == "review":  # one verdict on an earlier hold (issue 14)
            held = str(statement.get("decision"))
            if held not in self.holds:
                raise ConsentryError(f"reviews {held}, which is not a hold earlier in the log")
            if held in self.reviewed:
                raise ConsentryError(f"a second review of held decision {held}")
            self.reviewed.add(held)

    def report_signatures(self) -> None:
        for label in self.check_signatures():
            self.problem(f"{label}: bad signature")

    def compare_row(
        self, entry: LogEntry, kind: str, record_id: str, statement: dict[str, Any]
    ) -> None:
        self.seen(entry, kind, record_id)
        row = self._row(kind, record_id)
        if row is None:
            raise ConsentryError("row missing (deleted from its table)")
        expected = statement_of(row)
        if expected != statement:
            fields = sorted(
                k for k in statement.keys() | expected.keys() if statement.get(k) != expected.get(k)
            )
            raise ConsentryError(f"row differs from its signed log entry in {', '.join(fields)}")
        if row.log_index != entry.idx:
            raise ConsentryError(f"row claims log index {row.log_index}")

    def check_key_rows(self) -> None:
        """A key is marked retired only by a rotation entry that retires it."""
        for key_id, row in self.key_rows.items():
            expected = self.rotations.get(key_id, (None, None))
            if (row.retired_at_index, row.successor_key_id) != expected:
                self.problem(
                    f"key {key_id}: retirement columns differ from the log "
                    f"(row says retired at {row.retired_at_index}, log says {expected[0]})"
                )

    def _was_seen(self, kind: str, record_id: str, at: int, entry: tuple[Any, Any]) -> bool:
        """Was a verified entry's row of ``kind`` compared under ``record_id``? First
        the entry the row points at (``at``: one join), else any entry of that id."""
        entry_kind, entry_id = entry
        if (kind, record_id) in self.odd_seen:
            return True
        if (
            entry_id == record_id
            and entry_kind is not None
            and _table_kind(entry_kind) == kind
            and 0 <= at < len(self.matched)
            and self.matched[at]
        ):
            return True
        others = self.session.execute(
            select(LogEntry.idx, LogEntry.kind).where(LogEntry.record_id == record_id)
        ).all()
        return any(
            _table_kind(k) == kind and 0 <= i < len(self.matched) and self.matched[i]
            for i, k in others
        )

    def check_unlogged_rows(self) -> None:
        """Every row of every table was compared with a verified log entry, streaming
        each table by primary key, joined with the entry its ``log_index`` names."""
        for kind, table in _ROW_TYPES.items():
            if kind == "key-rotation":
                continue
            key = table.key_id if table is OperatorKey else table.id
            last: str | None = None
            while True:
                query = (
                    select(key, table.log_index, LogEntry.kind, LogEntry.record_id)
                    .join(LogEntry, LogEntry.idx == table.log_index, isouter=True)
                    .order_by(key)
                    .limit(_ROW_CHUNK)
                )
                if last is not None:
                    query = query.where(key > last)
                rows = self.session.execute(query).all()
                if not rows:
                    break
                for record_id, at, entry_kind, entry_id in rows:
                    at = -1 if at is None else int(at)
                    if not self._was_seen(kind, record_id, at, (entry_kind, entry_id)):
                        self.problem(
                            f"{kind} {record_id}: row has no log entry (inserted outside the log)"
                        )
                last = rows[-1][0]

    def check_biometrics(self) -> None:
        """Every signed enrollment of a subject not erased keeps exactly its logged blobs
        and its subject's data key; an erased subject keeps no blob and no data key."""
        blobs = {b.id: b for b in self.session.exec(select(BiometricBlob))}
        keyed = set(self.session.exec(select(SubjectDataKey.subject_id)))
        expected: set[str] = set()
        needs_key: set[str] = set()
        for enrollment in self.enrollments:
            subject_id = str(enrollment["subject"])
            if subject_id in self.erased:
                continue
            if enrollment.get("blobs"):
                needs_key.add(subject_id)
            self._check_enrollment_blobs(enrollment, blobs, expected)
        for blob_id in blobs.keys() - expected:
            self.problem(f"biometric {blob_id}: not recorded by a live enrollment")
        for subject_id in sorted(needs_key - keyed):
            self.problem(
                f"subject {subject_id}: data key missing (deleted outside an erasure): "
                "their enrolled biometrics can no longer be decrypted"
            )
        for subject_id in sorted(self.erased & keyed):
            self.problem(f"subject {subject_id}: erased, but its data key still exists")

    def _check_enrollment_blobs(
        self,
        enrollment: dict[str, Any],
        blobs: dict[str, BiometricBlob],
        expected: set[str],
    ) -> None:
        """One live enrollment's logged blobs are stored, unchanged (a photo of an
        opted-out subject must be gone); adds the ids it accounts for to ``expected``."""
        enrollment_id, subject_id = str(enrollment["id"]), str(enrollment["subject"])
        for item in enrollment.get("blobs") or []:
            if item["kind"] == "photo" and subject_id in self.opted_out:
                if item["id"] in blobs:
                    self.problem(
                        f"enrollment {enrollment_id}: photo {item['id']} survived "
                        "the subject's opt-out"
                    )
                    expected.add(item["id"])
                continue
            expected.add(item["id"])
            blob = blobs.get(item["id"])
            if blob is None:
                self.problem(
                    f"enrollment {enrollment_id}: {item['kind']} {item['id']} is missing "
                    "(deleted outside an erasure)"
                )
            elif (blob.sha256, blob.enrollment_id, blob.subject_id, blob.kind) != (
                item["sha256"],
                enrollment_id,
                subject_id,
                item["kind"],
            ) or sha256_hex(blob.ciphertext) != blob.sha256:
                self.problem(f"enrollment {enrollment_id}: {item['id']} differs from the log")

    def _notes(self, witness: str | None) -> Iterator[tuple[str, str]]:
        """Every stored checkpoint (by tree size, a chunk at a time), then the home's."""
        last = -1
        while True:
            rows = self.session.execute(
                select(CheckpointRow.tree_size, CheckpointRow.note)
                .where(col(CheckpointRow.tree_size) > last)
                .order_by(col(CheckpointRow.tree_size))
                .limit(_ROW_CHUNK)
            ).all()
            if not rows:
                break
            for tree_size, note in rows:
                yield f"checkpoint {tree_size}", note
            last = rows[-1][0]
        if witness is not None:
            yield "witness checkpoint", witness

    def want_checkpoint_roots(self, witness: str | None) -> None:
        """Before the pass: the tree sizes the checkpoints claim (unverified), so the
        pass keeps the prefix root at each (one hash per checkpoint)."""
        for _, note in self._notes(witness):
            try:
                self.wanted_roots.add(cp.parse_checkpoint(note)[0].tree_size)
            except ConsentryError:
                continue  # reported by check_checkpoints
        if 0 in self.wanted_roots:
            self.roots[0] = merkle.EMPTY_ROOT

    def check_checkpoints(self, witness: str | None) -> None:
        size = self.report.size
        latest: cp.Checkpoint | None = None
        for label, note in self._notes(witness):
            checkpoint = self.verify_note(label, note)
            if checkpoint is None:
                continue
            if checkpoint.tree_size > size:
                self.problem(
                    f"{label}: covers {checkpoint.tree_size} entries but the log has "
                    f"{size}: log truncated"
                )
                continue
            if self.roots.get(checkpoint.tree_size) != checkpoint.root_hash:
                self.problem(f"{label}: root differs from the log's (log rewritten, or split view)")
                continue
            if latest is None or checkpoint.tree_size >= latest.tree_size:
                latest = checkpoint
            self.report.checkpoints += 1
        if latest is None and size:
            self.problem("no valid checkpoint covers the log")

    def verify_note(self, label: str, note: str) -> cp.Checkpoint | None:
        try:
            _, signatures = cp.parse_checkpoint(note)
        except ConsentryError as exc:
            self.problem(f"{label}: {exc}")
            return None
        for signature in signatures:
            for key_id, public in self.keys.items():
                if signature.key_name == checkpoint_key_name(key_id):
                    try:
                        checkpoint = cp.verify_checkpoint(note, signature.key_name, public)
                    except ConsentryError as exc:
                        self.problem(f"{label}: {exc}")
                        return None
                    start, retired = self.key_span[key_id]
                    # a key may sign trees that contain its introduction and not its retirement
                    if checkpoint.tree_size <= start or (
                        retired is not None and checkpoint.tree_size > retired
                    ):
                        self.problem(
                            f"{label}: signed by key {key_id[:16]}, which was not the operator "
                            f"key for a tree of size {checkpoint.tree_size}"
                        )
                        return None
                    return checkpoint
        self.problem(f"{label}: not signed by any operator key of this registry")
        return None


def verify_log(session: Session, witness: str | None = None) -> LogReport:
    """Verify the whole registry; see the module docstring for what is checked.
    ``session`` must not have run a query yet (on PostgreSQL it is made one
    repeatable-read snapshot)."""
    began = time.perf_counter()
    if session.get_bind().dialect.name == "postgresql":
        # one snapshot for the whole streamed pass (SQLite's read transaction is one):
        # rows and checkpoints written meanwhile must not look unlogged or unrooted
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    verifier = _Verifier(session)
    verifier.want_checkpoint_roots(witness)
    verifier.check_entries()
    verifier.check_unlogged_rows()
    verifier.check_key_rows()
    verifier.check_biometrics()
    verifier.report_signatures()
    verifier.check_checkpoints(witness)
    for count, problem in enumerate(tiles.check_stored(session, verifier.report.size)):
        if count == _MAX_TREE_PROBLEMS:
            verifier.problem("stored tree hashes: more problems not listed")
            break
        verifier.problem(problem)
    verifier.report.root = verifier.frontier.root
    verifier.report.seconds = time.perf_counter() - began
    return verifier.report
