"""Group commit of gateway decisions (``consentry.registry.sequencer``), on real
SQLite and PostgreSQL: many callers share one writer transaction, each gets its
own row and a gap-free, unique index, failures stay with their caller or fail
the whole batch closed, and every allow is re-checked inside the batch.

Batches are formed deterministically where a test needs one: the writer lock is
held from another connection while a first caller blocks inside its batch of
one, the other callers queue behind it, and the lock is let go (their batch is
then the whole queue).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from consentry.errors import InputError, NotFoundError, RetiredKeyError
from consentry.registry.decisions import RACE_PREFIX, prepare_decision, record_decision
from consentry.registry.models import Decision, Grant, Grantee, Subject
from consentry.registry.sequencer import DecisionSequencer
from consentry.registry.store import Registry

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def _clock() -> datetime:
    return T0


@pytest.fixture
def registry(tmp_path: Path, db_url: str) -> Iterator[Registry]:
    reg = Registry.init(tmp_path / "home", db_url, clock=_clock)
    try:
        yield reg
    finally:
        reg.close()


def _people(reg: Registry) -> tuple[Subject, Grantee, Grant]:
    subject = reg.add_subject("Alice Example")
    grantee, _ = reg.add_grantee("Acme Studios")
    grant = reg.grant(subject.id, grantee.id, ["generate"])
    return subject, grantee, grant


def _sha(n: int) -> str:
    return f"{n:064x}"


def _decide(
    reg: Registry, grantee: str, grant: Grant, subject: Subject, n: int, allow: bool
) -> Decision:
    return record_decision(
        reg, grantee, "generate", allow, [] if allow else [f"refusal {n}"],
        [grant.id] if allow else [], [subject.id], None, [_sha(n)], [],
    )  # fmt: skip


def _inputs(row: Decision) -> list[str]:
    import json

    return list(json.loads(row.inputs_json))


def _log(reg: Registry) -> dict[int, str]:
    with reg.db.read() as session:
        return {int(i): str(r) for i, r in session.execute(
            text("SELECT idx, record_id FROM log_entries ORDER BY idx"))}  # fmt: skip


def _assert_log_ok(reg: Registry) -> None:
    log = _log(reg)
    assert sorted(log) == list(range(len(log))), "the log has a gap"
    report = reg.verify_log()
    assert report.ok, report.problems


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Callers:
    """Threads each calling ``call(n)`` once; results or errors by ``n``."""

    def __init__(self) -> None:
        self.results: dict[int, Any] = {}
        self.errors: dict[int, BaseException] = {}
        self.threads: list[threading.Thread] = []

    def start(self, call: Callable[[int], Any], n: int) -> None:
        def body() -> None:
            try:
                self.results[n] = call(n)
            except BaseException as exc:  # reported by the test
                self.errors[n] = exc

        thread = threading.Thread(target=body)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=120)
            assert not thread.is_alive(), "a caller never returned"


@contextmanager
def one_batch(reg: Registry, calls: list[Callable[[], Any]]) -> Iterator[Callers]:
    """Run ``calls[0]`` alone (its batch of one blocks on the held writer lock), then
    queue the rest behind it, then let the lock go: they form one batch."""
    callers = Callers()
    with reg.db.write():  # the writer lock, held from another connection
        callers.start(lambda _: calls[0](), 0)
        _wait(lambda: reg.sequencer.leading and reg.sequencer.pending() == 0, "the first batch")
        time.sleep(0.05)  # it is inside db.write(), waiting for the lock
        for n, call in enumerate(calls[1:], 1):
            callers.start(lambda _, c=call: c(), n)
        _wait(lambda: reg.sequencer.pending() == len(calls) - 1, "the queue")
    callers.join()
    yield callers


def test_a_lone_caller_gets_a_batch_of_one(registry: Registry) -> None:
    subject, grantee, grant = _people(registry)
    start = registry.log_size()
    rows = [_decide(registry, grantee.id, grant, subject, n, n % 2 == 0) for n in range(6)]
    assert [r.log_index for r in rows] == list(range(start, start + 6))
    assert [r.allowed for r in rows] == [True, False] * 3
    stats = registry.sequencer.stats()
    assert (stats.batches, stats.decisions, stats.largest_batch) == (6, 6, 1)
    _assert_log_ok(registry)


def test_concurrent_callers_share_batches_and_get_their_own_rows(registry: Registry) -> None:
    subject, grantee, grant = _people(registry)
    start = registry.log_size()
    threads, each = 12, 15
    go = threading.Barrier(threads)
    rows: dict[int, Decision] = {}
    errors: list[BaseException] = []

    def worker(me: int) -> None:
        go.wait()
        try:
            for k in range(each):
                n = me * each + k
                rows[n] = _decide(registry, grantee.id, grant, subject, n, n % 3 != 0)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(me,)) for me in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    assert not errors, errors
    total = threads * each
    assert len(rows) == total
    indexes = sorted(r.log_index for r in rows.values())
    assert indexes == list(range(start, start + total)), "indexes not gap-free and unique"
    log = _log(registry)
    for n, row in rows.items():
        assert _inputs(row) == [_sha(n)], "a caller got another caller's row"
        assert log[row.log_index] == row.id
        assert row.allowed == (n % 3 != 0), row.reasons
    stats = registry.sequencer.stats()
    assert stats.decisions == total and stats.failed_batches == 0
    _assert_log_ok(registry)


def test_queued_callers_are_written_in_one_batch(registry: Registry) -> None:
    subject, grantee, grant = _people(registry)
    start = registry.log_size()
    count = 20
    calls = [
        (lambda n=n: _decide(registry, grantee.id, grant, subject, n, n % 2 == 0))
        for n in range(count)
    ]
    with one_batch(registry, calls) as callers:
        pass
    assert not callers.errors, callers.errors
    stats = registry.sequencer.stats()
    assert (stats.batches, stats.largest_batch) == (2, count - 1)
    assert stats.mean_batch == count / 2
    rows: dict[int, Decision] = callers.results
    assert sorted(r.log_index for r in rows.values()) == list(range(start, start + count))
    for n, row in rows.items():
        assert _inputs(row) == [_sha(n)] and row.allowed == (n % 2 == 0)
    _assert_log_ok(registry)


def test_max_batch_caps_a_batch(registry: Registry) -> None:
    subject, grantee, grant = _people(registry)
    registry.sequencer = DecisionSequencer(registry, max_batch=4)
    calls = [
        (lambda n=n: _decide(registry, grantee.id, grant, subject, n, False)) for n in range(11)
    ]
    with one_batch(registry, calls) as callers:
        pass
    assert not callers.errors
    stats = registry.sequencer.stats()
    assert stats.largest_batch == 4 and stats.decisions == 11 and stats.batches == 1 + 3
    _assert_log_ok(registry)


def test_bad_settings_are_input_errors(registry: Registry) -> None:
    for kwargs in ({"max_batch": 0}, {"max_wait": -1.0}, {"max_wait": 0.3}):
        with pytest.raises(InputError):
            DecisionSequencer(registry, **kwargs)


def test_an_unknown_id_fails_alone_and_the_batch_stays_gap_free(registry: Registry) -> None:
    subject, grantee, grant = _people(registry)
    start = registry.log_size()

    def good(n: int) -> Callable[[], Decision]:
        return lambda: _decide(registry, grantee.id, grant, subject, n, n % 2 == 0)

    def bad(**change: str) -> Callable[[], Decision]:
        args: dict[str, Any] = {
            "grantee": grantee.name, "grants": [grant.id], "subjects": [subject.id],
        }  # fmt: skip
        for name, value in change.items():
            args[name] = [value] if name != "grantee" else value
        return lambda: record_decision(
            registry, args["grantee"], "generate", True, [], args["grants"], args["subjects"],
            None, [_sha(999)], [],
        )  # fmt: skip

    calls = [good(0), good(1), bad(grantee="grt_nobody"), good(3), bad(grants="grt_none"),
             good(5), bad(subjects="sub_none"), good(7)]  # fmt: skip
    with one_batch(registry, calls) as callers:
        pass
    assert sorted(callers.errors) == [2, 4, 6]
    messages = {n: str(e) for n, e in callers.errors.items()}
    assert all(isinstance(e, NotFoundError) for e in callers.errors.values())
    assert "no grantee 'grt_nobody'" in messages[2]
    assert "no grant 'grt_none'" in messages[4] and "no subject 'sub_none'" in messages[6]
    rows: dict[int, Decision] = callers.results
    assert sorted(rows) == [0, 1, 3, 5, 7]
    assert sorted(r.log_index for r in rows.values()) == list(range(start, start + 5))
    for n, row in rows.items():
        assert _inputs(row) == [_sha(n)]
    assert registry.sequencer.stats().largest_batch == 4  # 1, 3, 5, 7 (2, 4, 6 failed)
    assert registry.log_size() == start + 5
    _assert_log_ok(registry)
    # the grantee given by its unique name resolves as before
    row = bad()()
    assert row.grantee_id == grantee.id and row.allowed


def test_a_batch_that_cannot_commit_fails_every_caller(registry: Registry) -> None:
    """The operator key is retired under a registry still holding it: the whole
    batch rolls back, every caller gets the error, nobody a receipt."""
    subject, grantee, grant = _people(registry)
    stale = Registry.open(registry.home.root, registry.db.url, clock=_clock)
    try:
        registry.rotate_key()
        size = registry.log_size()
        calls = [
            (lambda n=n: _decide(stale, grantee.id, grant, subject, n, n % 2 == 0))
            for n in range(6)
        ]
        with one_batch(stale, calls) as callers:
            pass
        assert not callers.results
        assert sorted(callers.errors) == list(range(6))
        assert all(isinstance(e, RetiredKeyError) for e in callers.errors.values())
        stats = stale.sequencer.stats()
        assert stats.failed_batches == 2 and stats.decisions == 0
        assert registry.log_size() == size
        _assert_log_ok(registry)
        # the registry holding the new key decides as before
        assert _decide(registry, grantee.id, grant, subject, 7, True).allowed
    finally:
        stale.close()


def test_a_revocation_between_two_batches_is_honoured_by_the_later(registry: Registry) -> None:
    subject, grantee, grant = _people(registry)
    first = [
        (lambda n=n: _decide(registry, grantee.id, grant, subject, n, True)) for n in range(5)
    ]
    with one_batch(registry, first) as before:
        pass
    assert all(r.allowed for r in before.results.values()), before.errors
    other = Registry.open(registry.home.root, registry.db.url, clock=_clock)
    try:
        revocation = other.revoke(grant.id, "consent withdrawn between batches")
    finally:
        other.close()
    # straight to the sequencer: the consent state has not followed the revocation,
    # only the batch's own refresh inside the writer's transaction can see it
    assert grant.id not in registry.consent.revoked
    later = [
        (lambda n=n: registry.sequencer.submit(prepare_decision(
            grantee.id, "generate", True, [], [grant.id], [subject.id], None, [_sha(n)], [])))
        for n in range(10, 15)
    ]  # fmt: skip
    with one_batch(registry, later) as after:
        pass
    assert not after.errors
    assert registry.sequencer.stats().largest_batch >= 4
    for row in after.results.values():
        assert not row.allowed and row.log_index > revocation.log_index
        assert row.reasons == [
            f"{RACE_PREFIX}grant {grant.id} was revoked at log index {revocation.log_index}, "
            f"before the decision at {row.log_index}"
        ]
    _assert_log_ok(registry)


def test_each_allow_is_judged_at_its_own_index(registry: Registry) -> None:
    """Every allow of a batch is judged at the index its leaf gets: the refusals of
    one batch name four different decision indexes, not the batch's start."""
    subject, grantee, _ = _people(registry)
    other = Registry.open(registry.home.root, registry.db.url, clock=_clock)
    try:
        late_grant = other.grant(subject.id, grantee.id, ["generate"])
        revocation = other.revoke(late_grant.id, "withdrawn at once")
    finally:
        other.close()
    calls = [
        (lambda n=n: registry.sequencer.submit(prepare_decision(
            grantee.id, "generate", True, [], [late_grant.id], [subject.id], None, [_sha(n)],
            [])))
        for n in range(4)
    ]  # fmt: skip
    with one_batch(registry, calls) as callers:
        pass
    assert not callers.errors
    for row in callers.results.values():
        assert not row.allowed
        assert row.reasons[0].endswith(f"before the decision at {row.log_index}")
    assert len({r.reasons[0] for r in callers.results.values()}) == 4
    assert min(r.log_index for r in callers.results.values()) > revocation.log_index


def test_two_registries_in_threads_share_one_gap_free_log(registry: Registry) -> None:
    """Two Registry objects (as two processes would) over one database, each with
    its own sequencer and threads: batches of both serialize on the writer lock."""
    subject, grantee, grant = _people(registry)
    second = Registry.open(registry.home.root, registry.db.url, clock=_clock)
    start = registry.log_size()
    per_thread, threads = 12, 2
    rows: dict[int, Decision] = {}
    errors: list[BaseException] = []
    go = threading.Barrier(2 * threads + 1)

    def worker(reg: Registry, base: int) -> None:
        go.wait()
        try:
            for k in range(per_thread):
                n = base + k
                rows[n] = _decide(reg, grantee.id, grant, subject, n, n % 2 == 0)
                if k == per_thread // 2 and base == 0:
                    reg.add_subject(f"Interleaved {n}")  # another writer between batches
        except BaseException as exc:
            errors.append(exc)

    try:
        pool = [
            threading.Thread(target=worker, args=(reg, 1000 * (2 * r + t)))
            for r, reg in enumerate((registry, second))
            for t in range(threads)
        ]
        for thread in pool:
            thread.start()
        go.wait()
        for thread in pool:
            thread.join(timeout=120)
        assert not errors, errors
        total = 2 * threads * per_thread
        assert len(rows) == total
        log = _log(registry)
        assert sorted(log) == list(range(len(log)))
        assert len(log) == start + total + 1
        assert len({r.log_index for r in rows.values()}) == total
        for n, row in rows.items():
            assert log[row.log_index] == row.id and _inputs(row) == [_sha(n)]
            assert row.allowed == (n % 2 == 0)
        assert registry.sequencer.stats().decisions + second.sequencer.stats().decisions == total
        _assert_log_ok(registry)
    finally:
        second.close()
