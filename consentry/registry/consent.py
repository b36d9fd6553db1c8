"""The consent state, followed from the signed log: what the gate and ``verify`` trust.

Invariants
- Every fact here comes from a log leaf that passed :class:`LogChecker` (canonical
  JSON, leaf hash, the operator key in force at its index, the subject's
  co-signature on grants and revocations) when this process followed it. Rows are
  never read for a fact: they are a cache that the gate may check against these
  facts (encrypted embeddings, which are not in the log), never the truth.
- Following is incremental: :meth:`ConsentState.refresh` reads only the entries
  after the last one followed, verifies each once, in index order, and applies it.
  It never advances past an entry that does not verify: the state is then
  *broken* and every later refresh raises :class:`LogIntegrityError`, so the gate
  fails closed until the log is repaired and the process restarted.
- The log is anchored to this home: the registry's own operator key must be one of
  the log's operator keys (genesis or a rotation), so a database whose whole log
  was replaced under another key is refused.
- Facts only grow (the log is append-only), so a reader holding the lock-free view
  between two refreshes sees a consistent prefix.
- What is followed is bound to the log's tree (``registry.frontier``): before the
  facts of newly read entries are applied, the root of every entry followed so far
  (kept as a frontier, O(log n) hashes) must be consistent with the checkpoint this
  process proved its witness state holds (``registry.log.witnessed_root``; with none,
  equal to the stored tree's root). A leaf rewritten in the database, with or
  without its stored leaf hash, is refused (``LogIntegrityError``) at its first
  follow, so ``Registry.open`` need not read every leaf. Entries the stored tree
  does not cover yet (written by an older release, or appended raw) are followed
  on their signatures and bound as soon as it does.
- A new process need not re-verify the whole log: the state of a verified prefix
  is kept in ``HOME/cache/consent.bin``, sealed (AES-256-GCM) under a key derived
  from the master key, so only the home's holder can write it, and recording the
  prefix's size, Merkle root and frontier. At load that root is bound like any
  followed root (O(log n)); a snapshot that does not bind (the log's first
  ``size`` entries are not those this home verified: rewritten or truncated) fails
  the state closed; one that does not unseal or parse is ignored (replay from 0).
  The entries after it are then verified and bound as usual.
"""

from __future__ import annotations

import bisect
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Table
from sqlmodel import Session

from consentry.errors import AmbiguousNameError, ConsentryError, LogIntegrityError, NotFoundError
from consentry.fsutil import atomic_write
from consentry.registry import merkle, tiles
from consentry.registry.coalesce import CoalescedRuns
from consentry.registry.consent_facts import (
    BiometricEvent,
    SignedBlob,
    SignedEnrollment,
    SignedGrant,
    SignedGrantee,
    SignedPrior,
    SignedSubject,
    calibration_event,
)
from consentry.registry.consent_facts import strings as _strings
from consentry.registry.consent_rows import RowChecks
from consentry.registry.consent_snapshot import restore_body, snapshot_body
from consentry.registry.db import core
from consentry.registry.frontier import Frontier, bind_prefix
from consentry.registry.grantee_keys import GranteeKeyFollower
from consentry.registry.log_checker import LogChecker
from consentry.registry.models import LogEntry
from consentry.registry.raw_sql import RawStatement
from consentry.registry.review_state import ReviewFollower
from consentry.registry.vault import seal, unseal

if TYPE_CHECKING:
    from consentry.registry.store import Registry

__all__ = [
    "BiometricEvent",
    "ConsentState",
    "SignedBlob",
    "SignedEnrollment",
    "SignedGrant",
    "SignedGrantee",
    "SignedPrior",
    "SignedSubject",
]


_LOG = cast(Table, LogEntry.__table__)  # type: ignore[attr-defined]
_TAIL_COLUMNS = ("idx", "kind", "record_id", "leaf_json", "leaf_hash", "created_at")
_TAIL = RawStatement(  # on the cursor (raw_sql): it runs several times per decision
    f"SELECT {', '.join(_TAIL_COLUMNS)} FROM {_LOG.name} WHERE idx >= :start "
    "ORDER BY idx LIMIT :limit"
)
_VERIFY_HINT = "run 'consentry log verify'"
TAIL_CHUNK = 5_000  # entries read, bound and followed at a time

_SNAPSHOT_MAGIC = b"CSCS1"
SNAPSHOT_EVERY = 256  # entries followed since the last snapshot before a new one is written


class ConsentState(RowChecks, ReviewFollower, GranteeKeyFollower):
    """Consent facts of one registry, followed from its signed log (see module doc)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._lock = threading.RLock()
        self._refreshes = CoalescedRuns()  # session-less refreshes (see refresh)
        self._reset()
        self._snapshot_tried = False
        self._snapshot_size = 0
        self.loaded_snapshot = 0  # size of the verified prefix taken from a snapshot
        # SHA-256 of an API key -> signed grantee, derived from ``grantees`` (see
        # grantee_by_key_sha256); rebuilt when that dict is replaced or grows
        self._key_map: tuple[object, int, dict[str, SignedGrantee]] = (None, 0, {})

    def _reset(self) -> None:
        """The state of an empty log (nothing followed)."""
        self._checker = LogChecker(deferred=False)
        self._size = 0
        self._frontier = Frontier()  # the followed prefix bound to the log's tree
        self._unbound: list[bytes] = []  # leaf hashes followed past it (not stored yet)
        # the anchor (witnessed size, root) the frontier was last proved to extend
        self._proved_anchor: tuple[int, bytes] | None = None
        self._broken: str | None = None
        self.subjects: dict[str, SignedSubject] = {}
        self._newest_subject = -1
        self.grantees: dict[str, SignedGrantee] = {}
        self.grants: dict[str, SignedGrant] = {}
        self.revoked: dict[str, int] = {}  # grant id -> index of its revocation
        self.priors: dict[str, SignedPrior] = {}
        self.erased: dict[str, int] = {}  # subject id -> index of its erasure
        self.opted_out: dict[str, int] = {}  # subject id -> index of its opt-out
        self.enrollments: dict[str, SignedEnrollment] = {}
        self.thresholds: dict[str, float] = {}  # engine -> newest signed calibration
        self._by_subject: dict[str, list[str]] = {}
        self._by_prior: dict[str, list[str]] = {}
        self._grantees_named: dict[str, list[str]] = {}  # signed name -> grantee ids
        self._priors_of_sha: dict[str, list[str]] = {}  # sha256 -> prior ids
        self._events: list[BiometricEvent] = []
        self._event_index: list[int] = []
        self._reset_reviews()  # holds and reviews (consentry.registry.review_state)

    # ------------------------------------------------------------------ following
    @property
    def size(self) -> int:
        """How many log entries have been followed (the next index to read)."""
        return self._size

    def refresh(self, session: Session | Connection | None = None) -> int:
        """Follow every entry appended since the last refresh; returns how many.

        ``session``: read inside the caller's transaction (the decision's write
        transaction reads the tail there, so it sees every entry committed before it
        took the writer lock). Raises :class:`LogIntegrityError` when an entry does
        not verify (and on every later call).

        Coalesced (:mod:`consentry.registry.coalesce`): a session-less call that
        waited for the lock while another session-less refresh began after it and
        completed returns 0 without reading. A refresh in a caller's transaction
        always reads: it must see that transaction's view.
        """
        ticket = self._refreshes.ticket()
        with self._lock:
            if self._broken is not None:
                raise LogIntegrityError(self._broken, hint=_VERIFY_HINT)
            if session is not None:
                return self._follow_tail(session)
            if self._refreshes.covered(ticket):
                return 0
            number = self._refreshes.begin()
            followed = self._follow_tail(None)
            self._refreshes.completed(number)
            # never under the caller's transaction (the writer lock); geometric spacing
            # keeps the cost of snapshots amortised O(1) per entry
            due = max(SNAPSHOT_EVERY, self._snapshot_size // 4)
            if self._size - self._snapshot_size >= due:
                self._save_snapshot()
            return followed

    def _follow_tail(self, session: Session | Connection | None) -> int:
        """Read, bind and follow every entry after the followed prefix (the lock held);
        returns how many."""
        if not self._snapshot_tried:
            self._snapshot_tried = True
            self._load_snapshot()
        anchor = self.registry.log.witnessed_root  # proved before the reads below began
        followed = 0
        while True:  # in chunks: a first catch-up of a long log holds one chunk at a time
            entries = self._tail(session)
            if entries:
                self._bind(session, entries, anchor)
            for entry in entries:
                self._follow(entry)
            followed += len(entries)
            if len(entries) < TAIL_CHUNK:
                break
        if followed and self.registry.key_id not in self._checker.keys:
            self._fail(
                f"this home's operator key {self.registry.key_id[:16]} is not an operator "
                "key of the database's log: the log was replaced"
            )
        return followed

    def _tail(self, session: Session | Connection | None) -> list[LogEntry]:
        """The next entries (at most ``TAIL_CHUNK``) at ``size`` and after, in index
        order: one SELECT on the cursor (``raw_sql``: this runs several times per
        decision) in the caller's transaction or on a one-statement connection. The
        entries are plain values read from the rows; :meth:`_follow` verifies each
        before anything is applied."""
        params = {"start": self._size, "limit": TAIL_CHUNK}
        if session is not None:
            rows = _TAIL.rows(core(session), params)
        else:
            with self.registry.db.read_one() as connection:  # one statement, its own snapshot
                rows = _TAIL.rows(connection, params)
        return [
            LogEntry.model_construct(**dict(zip(_TAIL_COLUMNS, row, strict=True))) for row in rows
        ]

    @contextmanager
    def _binding_session(self, session: Session | Connection | None) -> Iterator[Session]:
        """A session for binding the tail to the tree: the caller's own (the writer's
        transaction), one on the caller's connection (same transaction), or a fresh
        read session (its snapshot is no older than the tail's read)."""
        if isinstance(session, Session):
            yield session
        elif session is not None:
            with Session(bind=session) as bound:
                yield bound
        else:
            with self.registry.db.read() as reader:
                yield reader

    def _fail(self, message: str) -> NoReturn:
        self._broken = f"{message}; the gate refuses every job until the log verifies"
        raise LogIntegrityError(self._broken, hint=_VERIFY_HINT)

    def _bind(
        self,
        session: Session | Connection | None,
        entries: list[LogEntry],
        anchor: tuple[int, bytes] | None,
    ) -> None:
        """Bind the followed prefix plus ``entries`` to the log's tree, before any of
        their facts is applied (see module doc), in ``session`` (the caller's
        transaction) or in fresh reads. Stops at the first entry that ``_follow``
        will refuse (a gap, a leaf hash that differs from its content)."""
        hashes: list[bytes] = []
        for expected, entry in enumerate(entries, start=self._size):
            digest = merkle.leaf_hash(entry.leaf_json.encode())
            if entry.idx != expected or digest.hex() != entry.leaf_hash:
                break
            hashes.append(digest)
        pending = self._unbound + hashes
        # The frontier grows by appending in memory, so it extends every tree it was
        # proved to extend: under an unchanged anchor already proved, only the stored
        # root at the new size must equal ours (no consistency proof again).
        proved = anchor is not None and anchor == self._proved_anchor
        if proved and pending and self._bound_in_one_read(session, pending):
            return
        with self._binding_session(session) as reader:
            self._bind_stored(reader, pending, anchor, proved)

    def _bound_in_one_read(
        self, session: Session | Connection | None, pending: list[bytes]
    ) -> bool:
        """The common bind (anchor already proved, the stored tree covering every
        pending leaf) in ONE statement: the stored root at the new size, read outside
        any transaction (or in the caller's), must equal the extended frontier's. True
        if bound; False leaves everything as it was for :meth:`_bind_stored`, which
        decides (a stored tree that is shorter, has a node missing or malformed, or a
        root that differs: it names what)."""
        frontier = self._frontier.copy()
        frontier.extend(pending)
        try:
            if session is None:
                with self.registry.db.read_one() as connection:
                    stored_root = tiles.StoredTree(connection, frontier.size).root
            else:
                stored_root = tiles.StoredTree(session, frontier.size).root
        except LogIntegrityError:
            return False
        if stored_root != frontier.root:
            return False
        self._frontier, self._unbound = frontier, []
        return True

    def _bind_stored(
        self,
        reader: Session,
        pending: list[bytes],
        anchor: tuple[int, bytes] | None,
        proved: bool,
    ) -> None:
        """The full bind of ``pending`` (the leaf hashes followed past the frontier):
        as many as the stored tree covers, proved against ``anchor`` unless
        ``proved``; the rest stay unbound."""
        start = self._frontier.size
        stored = tiles.stored_size(reader)
        take = max(0, min(len(pending), stored - start))
        if take == 0:
            self._unbound = pending
            return
        frontier = self._frontier.copy()
        frontier.extend(pending[:take])
        try:
            bind_prefix(
                reader, frontier.size, frontier.root, None if proved else anchor, stored=stored
            )
        except LogIntegrityError as exc:
            bad = tiles.first_stored_mismatch(reader, start, pending[:take])
            self._fail(
                f"log entry {bad} differs from its stored leaf hash (the log was rewritten "
                "in the database)"
                if bad is not None
                else str(exc)
            )
        self._frontier, self._unbound = frontier, pending[take:]
        if anchor is not None and anchor[0] <= min(frontier.size, stored):
            self._proved_anchor = anchor  # bind_prefix proved the frontier extends it

    def _follow(self, entry: LogEntry) -> None:
        if entry.idx != self._size:
            self._fail(f"log entry {self._size} is missing (next is {entry.idx})")
        leaf = entry.leaf_json.encode()
        if merkle.leaf_hash(leaf).hex() != entry.leaf_hash:
            self._fail(f"log entry {entry.idx}: stored leaf hash differs from its content")
        try:
            kind, statement = self._checker.check_leaf(entry, leaf)
        except ConsentryError as exc:
            self._fail(
                f"{entry.kind} {entry.record_id} (log index {entry.idx}) does not verify: {exc}"
            )
        self._apply(entry.idx, kind, statement)
        self._size = entry.idx + 1

    def _apply(self, index: int, kind: str, s: dict[str, Any]) -> None:
        """Fold one consent fact into the state (kinds without one, decisions and
        keys, change nothing): one handler per kind (``_APPLY``)."""
        handler = _APPLY.get(kind)
        if handler is not None:
            handler(self, index, str(s.get("id")), s)

    def _on_subject(self, index: int, record_id: str, s: dict[str, Any]) -> None:
        self.subjects[record_id] = SignedSubject(
            record_id,
            str(s.get("display_name")),
            _strings(s.get("aliases")),
            s.get("public_key"),
            index,
        )
        self._newest_subject = index

    def _on_grantee(self, index: int, record_id: str, s: dict[str, Any]) -> None:
        self.grantees[record_id] = SignedGrantee(
            record_id, str(s.get("name")), str(s.get("api_key_sha256")), s.get("public_key"),
            index,
        )  # fmt: skip
        self._grantees_named.setdefault(str(s.get("name")), []).append(record_id)

    def _on_grant(self, index: int, record_id: str, s: dict[str, Any]) -> None:
        grant = SignedGrant(
            record_id,
            str(s.get("subject")),
            str(s.get("grantee")),
            _strings(s.get("purposes")),
            _strings(s.get("priors")),
            str(s.get("not_before")),
            None if s.get("not_after") is None else str(s.get("not_after")),
            index,
        )
        self.grants[record_id] = grant
        self._by_subject.setdefault(grant.subject, []).append(record_id)
        for sha in grant.priors:
            self._by_prior.setdefault(sha, []).append(record_id)

    def _on_revocation(self, index: int, record_id: str, s: dict[str, Any]) -> None:
        self.revoked.setdefault(str(s.get("grant")), index)

    def _on_prior(self, index: int, record_id: str, s: dict[str, Any]) -> None:
        details = s.get("details")
        self.priors[record_id] = SignedPrior(
            record_id,
            str(s.get("subject")),
            str(s.get("kind")),
            str(s.get("sha256")),
            index,
            dict(details) if isinstance(details, dict) else {},
        )
        self._priors_of_sha.setdefault(str(s.get("sha256")), []).append(record_id)

    def _on_enrollment(self, index: int, record_id: str, s: dict[str, Any]) -> None:
        blobs = tuple(SignedBlob.of(b) for b in s.get("blobs") or ())
        enrollment = SignedEnrollment(
            record_id, str(s.get("subject")), str(s.get("engine")), blobs, index
        )
        self.enrollments[record_id] = enrollment
        self._event(BiometricEvent(index, "enrollment", enrollment=enrollment))

    def _on_erasure(self, index: int, record_id: str, s: dict[str, Any]) -> None:
        subject = str(s.get("subject"))
        self.erased.setdefault(subject, index)
        self._event(BiometricEvent(index, "erasure", subject=subject))

    def _on_opt_out(self, index: int, record_id: str, s: dict[str, Any]) -> None:
        self.opted_out.setdefault(str(s.get("subject")), index)

    def _on_calibration(self, index: int, record_id: str, s: dict[str, Any]) -> None:
        event = calibration_event(index, s)  # with its 1:N operating point, if any
        self.thresholds[str(event.engine)] = float(event.threshold or 0.0)
        self._event(event)

    def _event(self, event: BiometricEvent) -> None:
        self._events.append(event)
        self._event_index.append(event.index)

    # ------------------------------------------------------------------ snapshot
    def _snapshot_path(self) -> Path:
        return self.registry.home.root / "cache" / "consent.bin"

    def _snapshot_key(self) -> bytes | None:
        if not self.registry.home.master_key.exists():
            return None  # a home without a master key keeps no snapshot
        return self.registry.master_key.derive("consent-snapshot")

    def _save_snapshot(self) -> None:
        """Seal the state of the prefix followed so far (best effort: a failure to
        write only costs the next process a longer replay)."""
        key = self._snapshot_key()
        if key is None or self._size == 0 or self._unbound:
            return  # only a prefix bound to the log's tree is sealed
        body = snapshot_body(self)
        blob = _SNAPSHOT_MAGIC + seal(key, json.dumps(body).encode(), _SNAPSHOT_MAGIC)
        path = self._snapshot_path()
        try:
            atomic_write(path, blob, 0o600)  # a cache: a failed write only costs a replay
        except OSError:
            return
        self._snapshot_size = self._size

    def _load_snapshot(self) -> None:
        """Start from the sealed snapshot if it authenticates and parses (else from 0:
        nothing is trusted half-way), after binding its root to the log's tree: a
        snapshot whose prefix is not the log's fails the state closed."""
        key = self._snapshot_key()
        try:
            blob = self._snapshot_path().read_bytes()
        except OSError:
            return
        if key is None or not blob.startswith(_SNAPSHOT_MAGIC):
            return
        try:
            body = json.loads(unseal(key, blob[len(_SNAPSHOT_MAGIC) :], _SNAPSHOT_MAGIC))
            size = int(body["size"])
            frontier = Frontier.from_json(size, body["frontier"])
            if size <= 0 or frontier.root.hex() != body["root"]:
                return
        except (ConsentryError, ValueError, KeyError, TypeError):
            return  # an unreadable snapshot (or one an older release wrote): replay from 0
        anchor = self.registry.log.witnessed_root
        with self.registry.db.read() as reader:
            visible = tiles.log_size(reader)
            try:
                if size > visible:
                    raise LogIntegrityError(f"the log holds only {visible} entries")
                bind_prefix(reader, size, frontier.root, anchor)
            except LogIntegrityError as exc:
                self._fail(
                    f"this home verified and sealed (consent snapshot) a log whose first "
                    f"{size} entries are not the database's ({exc}): the log was rewritten "
                    f"or truncated; if the database was restored on purpose, delete "
                    f"{self._snapshot_path()}"
                )
        try:
            restore_body(self, body)
        except (ConsentryError, ValueError, KeyError, TypeError):
            self._reset()  # an unreadable snapshot: replay from 0
            return
        self._frontier, self._unbound = frontier, []
        self._proved_anchor = None  # the next bind proves the loaded frontier afresh
        self._size = self._snapshot_size = self.loaded_snapshot = size

    # ------------------------------------------------------------------ reading
    def events_since(self, index: int) -> list[BiometricEvent]:
        """Enrollments, erasures and calibrations at log index ``index`` or later."""
        with self._lock:
            return self._events[bisect.bisect_left(self._event_index, index) :]

    def operator_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every operator key the signed log introduced (genesis, then rotations)."""
        with self._lock:
            return dict(self._checker.keys)

    def key_active_at(self, index: int) -> str | None:
        """The operator key that signs entries at ``index`` (a rotation's new key from
        the entry after the rotation)."""
        with self._lock:
            for key_id, (start, retired) in self._checker.key_span.items():
                if start <= index and (retired is None or index < retired):
                    return key_id
            return None

    def subjects_in_order(self) -> list[SignedSubject]:
        with self._lock:
            return sorted(self.subjects.values(), key=lambda s: s.index)

    def subject_stamp(self) -> tuple[int, int]:
        """(number of subjects, log index of the newest): changes iff one was added."""
        with self._lock:
            return len(self.subjects), self._newest_subject

    def grantee_by_key_sha256(self, digest: str) -> SignedGrantee | None:
        """The signed grantee whose signed entry carries ``digest`` (the SHA-256 hex of
        an API key), or None: a hash lookup, not a loop over the grantees. Grantees
        are append-only; a signed key rotation or disabling (``grantee_keys``) resets
        the map, so it is rebuilt only then, when it gained a grantee, or when it
        was replaced (a snapshot load or a reset). The map holds current keys only.
        Should two signed entries carry one hash, the first in log order wins (what
        a scan in log order found). A state that stopped verifying raises
        LogIntegrityError, as :meth:`refresh` does."""
        with self._lock:
            if self._broken is not None:
                raise LogIntegrityError(self._broken, hint=_VERIFY_HINT)
            source, count, mapping = self._key_map
            if source is not self.grantees or count != len(self.grantees):
                mapping = {}
                for signed in sorted(self.grantees.values(), key=lambda g: g.index):
                    if signed.key_sha256 is not None:
                        mapping.setdefault(signed.key_sha256, signed)
                self._key_map = (self.grantees, len(self.grantees), mapping)
            return mapping.get(digest)

    def opted_out_among(self, subjects: Iterable[str]) -> frozenset[str]:
        """Those of ``subjects`` the followed log says opted out (no refresh)."""
        with self._lock:
            return frozenset(s for s in subjects if s in self.opted_out)

    def resolve_grantee(self, ref: str) -> SignedGrantee:
        """A signed grantee by id, or by a signed name that exactly one grantee has."""
        with self._lock:
            found = self.grantees.get(ref)
            if found is not None:
                return found
            named = [self.grantees[g] for g in self._grantees_named.get(ref, ())]
        if not named:
            raise NotFoundError(f"no grantee {ref!r}", hint="see 'consentry grantee list'")
        if len(named) > 1:
            raise AmbiguousNameError(f"{len(named)} grantees are named {ref!r}", hint="use the id")
        return named[0]

    def grants_for(self, subjects: Iterable[str], prior_sha256: str | None) -> list[SignedGrant]:
        """Every signed grant of ``subjects`` and every one naming ``prior_sha256``,
        in log order."""
        with self._lock:
            ids = {g for s in subjects for g in self._by_subject.get(s, ())}
            if prior_sha256 is not None:
                ids.update(self._by_prior.get(prior_sha256, ()))
            return sorted((self.grants[g] for g in ids), key=lambda g: g.index)

    def priors_with_sha(self, sha256: str) -> list[SignedPrior]:
        with self._lock:
            return [self.priors[p] for p in self._priors_of_sha.get(sha256, ())]

    def grant_valid_at(self, grant_id: str, index: int, moment: str) -> tuple[bool, str]:
        """Was the signed grant valid for a decision at log ``index`` taken at ``moment``
        (``YYYY-MM-DDTHH:MM:SSZ``)? Appended before ``index``, ``moment`` in its window,
        no revocation appended before ``index``. Returns ``(valid, one-line why)``."""
        with self._lock:
            grant = self.grants.get(grant_id)
            revoked = self.revoked.get(grant_id)
        if grant is None:
            return False, f"grant {grant_id} is not in this registry's signed log"
        name, before = f"grant {grant_id}", f"before the decision at {index}"
        if grant.index >= index:
            return False, f"{name} was appended at log index {grant.index}, not {before}"
        if moment < grant.not_before:
            return False, f"{name} was not yet valid at {moment} (from {grant.not_before})"
        if grant.not_after is not None and moment >= grant.not_after:
            return False, f"{name} had expired at {moment} (until {grant.not_after})"
        if revoked is not None and revoked < index:
            return False, f"{name} was revoked at log index {revoked}, {before}"
        return True, f"{name} was valid at log index {index}"

    def subject_key(self, subject_id: str) -> str | None:
        """The subject's current public key (hex), key changes applied, as the log holds it."""
        with self._lock:
            return self._checker.subject_keys.get(subject_id)


_APPLY: dict[str, Callable[[ConsentState, int, str, dict[str, Any]], None]] = {
    "subject": ConsentState._on_subject,
    "grantee": ConsentState._on_grantee,
    "grant": ConsentState._on_grant,
    "revocation": ConsentState._on_revocation,
    "prior": ConsentState._on_prior,
    "enrollment": ConsentState._on_enrollment,
    "erasure": ConsentState._on_erasure,
    "opt-out": ConsentState._on_opt_out,
    "calibration": ConsentState._on_calibration,
    "decision": ReviewFollower._on_decision,
    "review": ReviewFollower._on_review,
    "grantee-key": GranteeKeyFollower._on_grantee_key,
}
