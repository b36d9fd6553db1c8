"""Group commit of gateway decisions: one writer transaction for many callers.

:class:`DecisionSequencer` (one per :class:`~consentry.registry.store.Registry`,
``registry.sequencer``) is what ``record_decision`` hands its validated
:class:`~consentry.registry.decisions.DecisionRequest` to. Concurrent callers
queue; the first of them to find no batch in flight becomes the *leader*, takes
up to ``max_batch`` queued requests (its own among them) and writes them all in
ONE writer transaction; the others wait on their own slot. When its own request
is done the leader hands the lead to the oldest request still queued (that
caller wakes up and writes the next batch) or, with nothing queued, lays it
down. No thread runs when no decision is being recorded: a lone caller leads a
batch of one, which is exactly the single-decision path.

Before taking the writer lock, a leader whose batch holds an allow follows the
log (``registry.consent.refresh()``, the previous batch's leaves among the new
entries), so only the tail is read under the lock. Then, all inside
``registry.db.write()`` (the writer lock held from the first statement to the
commit):

1. one decision time (``registry.now()``), shared by the batch;
2. when the batch holds an allow, one ``registry.consent.refresh(session)``: the
   consent state then holds every entry committed before the lock was taken;
   a log that does not verify turns every allow of the batch into a refusal;
3. ONE statement for the rest of what the batch reads: the log's sizes (the next
   index ``start``, ``registry.log.next_index_from``), the operator key's row
   (``registry.log.checked_key``, used at step 6) and step 4's existence checks;
   with an allow in the batch, ``consent.size`` must equal ``start`` (else every
   allow is refused);
4. the grantee, grant and subject existence checks of the batch's distinct ids
   (rows, read in the writer's transaction, as before). A request
   naming one that does not exist fails *alone* with its NotFoundError, before
   anything is written, and gets no index; the others are numbered gap-free, in
   queue order, without it;
5. each allow re-checked at its own index ``start + position`` (``recheck_at``):
   a grant revoked or out of its window, a prior's owner erased, a subject opted
   out turn it into a logged refusal (``RACE_PREFIX``);
6. ``registry.log.record_many``: the operator key as checked at step 3, each statement
   signed, rows, log entries and stored tree hashes written with one executemany
   each, then the commit.

Invariants
- **Revocation wins every race, batched too.** Steps 2 to 6 run in one
  transaction holding the writer lock, so nothing is appended between a batch's
  re-check and its leaves; grants, revocations, erasures and opt-outs
  (``registry.log.record``) take the same lock and so land
  wholly before the batch (seen by step 2, honoured) or wholly after it (at a
  later index: consent at the time lets the earlier decisions stand).
- **Re-checking at the position is sound.** The only entries between ``start``
  and a request's index are the earlier decisions of its own batch, and a
  decision changes no consent fact (``ConsentState`` ignores decision leaves):
  the state refreshed at ``start`` is the state at every index of the batch.
  Each allow is nevertheless judged at its *own* index, so a grant's "appended
  before the decision" and "no revocation before the decision" rules read the
  index the leaf really gets.
- **Fail closed, never misattributed.** Every caller gets the row of its own
  request (the one built from it, with the index its leaf got) only after the
  batch's transaction committed. Any error after step 4 (signing key retired,
  a database error, the commit itself) rolls the whole batch back and is raised
  to every caller of that batch: none gets a receipt, allow or refusal, for an
  entry that is not committed. Requests are never retried by the sequencer.
- Indexes are unique and gap-free because only the holder of the writer lock
  assigns them: ``start`` is read under the lock and the batch's leaves take
  ``start, start + 1, ...`` in the same transaction (``log.record_many``).

Coordination across processes is the database's writer lock, unchanged
(``consentry.registry.db``): SQLite ``BEGIN IMMEDIATE``; on PostgreSQL the
transaction-scoped advisory lock ``pg_advisory_xact_lock`` taken as the first
statement of every write transaction. That lock is the per-log coordinator
issue 12 asks for: it is held exactly while a batch assigns indexes and is
released by the commit or the rollback (a crashed writer's lock dies with its
session), so no lease or coordinator row is needed. Each process (each
Registry) batches its own callers; batches of different processes serialize.

``max_wait`` (default 0: no linger). In process, callers that arrive while a
batch is being written queue behind it and form the next batch by themselves,
so a linger only delays a lone caller (measured: ``python -m bench sequencer
--seq-wait 0.002`` doubled the mean batch at 32 threads without raising the
rate). It pays only where a commit is dear (a remote PostgreSQL,
``synchronous=FULL``). It is bounded by 0.25 s, the issue's upper bound, and a
leader lingers only while its batch is not full.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import String, bindparam, cast, literal, or_, select, union_all
from sqlalchemy.sql.elements import BindParameter
from sqlmodel import Session

from consentry.errors import ConsentryError, InputError, NotFoundError
from consentry.registry import tiles
from consentry.registry.decisions import DecisionRequest, decision_row, recheck_at
from consentry.registry.models import Decision, Grant, Grantee, OperatorKey, Subject
from consentry.registry.statements import format_time

if TYPE_CHECKING:
    from consentry.registry.store import Registry

__all__ = ["MAX_BATCH", "MAX_WAIT_LIMIT", "DecisionSequencer", "SequencerStats"]

MAX_BATCH = 256
"""Decisions per writer transaction at most (the issue's batch size)."""
MAX_WAIT_LIMIT = 0.25
"""The longest linger ``max_wait`` may ask for, in seconds (the issue's bound)."""


@dataclass(frozen=True)
class SequencerStats:
    """Counters since the sequencer was made: batches committed, decisions in
    them, the largest batch, and batches that failed (rolled back)."""

    batches: int
    decisions: int
    largest_batch: int
    failed_batches: int

    @property
    def mean_batch(self) -> float:
        return self.decisions / self.batches if self.batches else 0.0


class _Slot:
    """One caller's request and, once its batch is done, its row or its error."""

    __slots__ = ("done", "error", "request", "row", "wake")

    def __init__(self, request: DecisionRequest) -> None:
        self.request = request
        self.row: Decision | None = None
        self.error: BaseException | None = None
        self.done = False
        self.wake = threading.Event()  # set when done, or when handed the lead

    def finish(self, row: Decision | None, error: BaseException | None) -> None:
        self.row, self.error, self.done = row, error, True
        self.wake.set()

    def result(self) -> Decision:
        if self.error is not None:
            raise self.error
        assert self.row is not None
        return self.row


class DecisionSequencer:
    """Group commit of ``record_decision`` calls for one Registry (module doc)."""

    def __init__(self, registry: Registry, max_batch: int = MAX_BATCH, max_wait: float = 0.0):
        if not 1 <= max_batch <= 100_000:
            raise InputError(f"max_batch must be between 1 and 100000, not {max_batch}")
        if not 0.0 <= max_wait <= MAX_WAIT_LIMIT:
            raise InputError(f"max_wait must be between 0 and {MAX_WAIT_LIMIT} s, not {max_wait}")
        self.registry = registry
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: list[_Slot] = []
        self._leading = False
        self._batches = self._decisions = self._largest = self._failed = 0

    # ------------------------------------------------------------------ callers
    def submit(self, request: DecisionRequest) -> Decision:
        """Log ``request`` in the next batch; returns its committed row (with its
        log index), or raises the error that kept it out of the log."""
        slot = _Slot(request)
        with self._lock:
            self._queue.append(slot)
            lead = not self._leading
            self._leading = True
            self._arrived.notify()
        if not lead:
            slot.wake.wait()
            if slot.done:
                return slot.result()
            # handed the lead by the previous leader: our slot heads the queue
        self._lead(slot)
        return slot.result()

    def pending(self) -> int:
        """Requests queued and not yet taken into a batch."""
        with self._lock:
            return len(self._queue)

    @property
    def leading(self) -> bool:
        """Whether a caller is writing (or about to write) a batch now."""
        with self._lock:
            return self._leading

    def stats(self) -> SequencerStats:
        with self._lock:
            return SequencerStats(self._batches, self._decisions, self._largest, self._failed)

    # ------------------------------------------------------------------ leader
    def _lead(self, own: _Slot) -> None:
        """Write batches until ``own`` is done, then hand the lead on."""
        try:
            while not own.done:
                batch = self._take()
                if any(slot.request.allowed for slot in batch):
                    # catch up outside the writer lock (the previous batch's leaves among
                    # them), so only the tail is read under it; the re-check reports errors
                    with contextlib.suppress(ConsentryError):
                        self.registry.consent.refresh()
                self._commit(batch)
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].wake.set()  # not done: it wakes up as the leader
                else:
                    self._leading = False

    def _take(self) -> list[_Slot]:
        with self._lock:
            if self.max_wait > 0 and len(self._queue) < self.max_batch:
                deadline = time.monotonic() + self.max_wait
                while len(self._queue) < self.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._arrived.wait(left)
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
        return batch

    def _commit(self, batch: list[_Slot]) -> None:
        """Write ``batch`` in one transaction and finish every slot in it (row or
        error); never returns with a slot of the batch unfinished."""
        outcomes: dict[int, Decision | BaseException] = {}
        try:
            with self.registry.db.write() as session:
                written = self._write(session, [s.request for s in batch], outcomes)
        except BaseException as exc:
            with self._lock:
                self._failed += 1
            for slot in batch:
                if not slot.done:  # fail closed: nobody gets a receipt of this batch
                    failed = outcomes.get(id(slot.request))
                    slot.finish(None, failed if isinstance(failed, BaseException) else exc)
            if not isinstance(exc, Exception):
                raise
            return
        with self._lock:
            self._batches += 1
            self._decisions += written
            self._largest = max(self._largest, written)
        for slot in batch:
            outcome = outcomes[id(slot.request)]
            if isinstance(outcome, BaseException):
                slot.finish(None, outcome)
            else:
                slot.finish(outcome, None)

    def _write(
        self,
        session: Session,
        requests: Sequence[DecisionRequest],
        outcomes: dict[int, Decision | BaseException],
    ) -> int:
        """Steps 1 to 6 of the module doc in ``session`` (the writer's); fills
        ``outcomes`` (by ``id(request)``) and returns how many rows it appended."""
        registry = self.registry
        moment = format_time(registry.now())
        state = registry.consent
        broken: str | None = None
        if any(r.allowed for r in requests):
            try:
                state.refresh(session)
            except ConsentryError as exc:
                broken = f"integrity error: {exc}"
        known = _known(session, requests, registry.log.key_id)  # and the log's sizes, the key
        start = registry.log.next_index_from(session, *known.sizes)
        if broken is None and any(r.allowed for r in requests) and state.size != start:
            broken = (
                f"integrity error: the consent state holds {state.size} entries but the "
                f"log's next index is {start}"
            )
        accepted: list[tuple[DecisionRequest, str]] = []
        for request in requests:
            missing = _missing(request, known)
            if missing is not None:
                outcomes[id(request)] = missing
            else:
                accepted.append((request, known.grantees[request.grantee]))
        if not accepted:
            return 0
        rows: list[Decision] = []
        for position, (request, grantee_id) in enumerate(accepted):
            late: list[str] = []
            if request.allowed:
                late = [broken] if broken is not None else recheck_at(
                    state, start + position, request.grants, request.subjects,
                    request.prior_sha256, moment,
                )  # fmt: skip
            row = decision_row(request, registry.new_id("dec"), moment, late, grantee_id)
            rows.append(row)
        key = registry.log.checked_key(known.key_row)
        registry.log.record_many(session, rows, start=start, key=key)
        for (request, _), row in zip(accepted, rows, strict=True):
            outcomes[id(request)] = row
        return len(rows)


_CHUNK = 500  # ids of each kind per existence query
_REFS: BindParameter[list[str]] = bindparam("refs", expanding=True)
_GRANTS: BindParameter[list[str]] = bindparam("grants", expanding=True)
_SUBJECTS: BindParameter[list[str]] = bindparam("subjects", expanding=True)
_GRANTEE = Grantee.__table__.c  # type: ignore[attr-defined]
_GRANT = Grant.__table__.c  # type: ignore[attr-defined]
_SUBJECT = Subject.__table__.c  # type: ignore[attr-defined]
_KEY = OperatorKey.__table__.c  # type: ignore[attr-defined]
# ONE round trip for what a batch reads before it appends (built once: cached compiled
# form): the three existence checks, the log's two sizes (next_index) and the
# operator key's retired_at_index (checked_key); numbers as text, one column type
_EXISTING = union_all(
    select(literal("grantee").label("kind"), _GRANTEE.id, _GRANTEE.name).where(
        or_(_GRANTEE.id.in_(_REFS), _GRANTEE.name.in_(_REFS))
    ),
    select(literal("grant"), _GRANT.id, _GRANT.id).where(_GRANT.id.in_(_GRANTS)),
    select(literal("subject"), _SUBJECT.id, _SUBJECT.id).where(_SUBJECT.id.in_(_SUBJECTS)),
    select(literal("sizes"), cast(tiles.LAST_LOG_INDEX, String),
           cast(tiles.LAST_STORED_INDEX, String)),
    select(literal("key"), _KEY.key_id, cast(_KEY.retired_at_index, String))
    .where(_KEY.key_id == bindparam("key_id")),
)  # fmt: skip


@dataclass
class _Known:
    """What the batch read found: which of its grantee refs, grant ids and subject
    ids have rows; the log's ``(size, stored size)``; the operator key's row as
    ``(retired_at_index,)``, None when it has none."""

    grantees: dict[str, str]  # ref (id or unique name) -> grantee id
    grants: set[str]
    subjects: set[str]
    sizes: tuple[int, int] = (0, 0)
    key_row: tuple[int | None] | None = None


def _known(session: Session, requests: Sequence[DecisionRequest], key_id: str) -> _Known:
    """The batch read (:data:`_EXISTING`), one query per ``_CHUNK`` ids of each kind
    (the sizes and the key row come with each, identical under the writer lock). A
    grantee ref that is some grantee's id names that one, else the one so named
    (names are unique), as in the single-decision lookup."""
    refs = sorted({r.grantee for r in requests})
    grant_ids = sorted({g for r in requests for g in r.grants})
    subject_ids = sorted({s for r in requests for s in r.subjects})
    ids: set[str] = set()
    by_name: dict[str, str] = {}
    known = _Known({}, set(), set())
    for at in range(0, max(len(refs), len(grant_ids), len(subject_ids), 1), _CHUNK):
        part = {
            "refs": refs[at : at + _CHUNK],
            "grants": grant_ids[at : at + _CHUNK],
            "subjects": subject_ids[at : at + _CHUNK],
            "key_id": key_id,
        }
        for kind, first, second in session.connection().execute(_EXISTING, part):
            if kind == "grantee":
                ids.add(str(first))
                by_name[str(second)] = str(first)
            elif kind == "grant":
                known.grants.add(str(first))
            elif kind == "subject":
                known.subjects.add(str(first))
            elif kind == "sizes":
                known.sizes = tiles.sizes_from(first, second)
            elif kind == "key":
                known.key_row = (None if second is None else int(second),)
    known.grantees = {ref: by_name[ref] for ref in refs if ref in by_name}
    known.grantees.update({ref: ref for ref in refs if ref in ids})  # an id wins over a name
    return known


def _missing(request: DecisionRequest, known: _Known) -> NotFoundError | None:
    """The NotFoundError the request fails with alone, or None (same messages and
    order as the single-decision checks: grantee, then grants, then subjects)."""
    if request.grantee not in known.grantees:
        return NotFoundError(f"no grantee {request.grantee!r}", hint="see 'consentry grantee list'")
    for grant_id in request.grants:
        if grant_id not in known.grants:
            return NotFoundError(f"no grant {grant_id!r}", hint="see 'consentry grants'")
    for subject_id in request.subjects:
        if subject_id not in known.subjects:
            return NotFoundError(f"no subject {subject_id!r}", hint="see 'consentry subject list'")
    return None
