"""Coalesced refreshes and rollback checks: a call may reuse another thread's work only
when that work began after the call was made (real SQLite, real threads).

The input each guard never sees is the one these tests make: an entry committed
while an *earlier* refresh is half-way through its reads, and a rollback check that
fails while others wait for it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from consentry.errors import RollbackError
from consentry.registry.consent import ConsentState
from consentry.registry.store import Registry

WAIT = 10.0


def _watch_tail(
    state: ConsentState, pause_first: bool = True
) -> tuple[threading.Event, threading.Event, list[int]]:
    """Count every tail read of ``state``; with ``pause_first``, the first one stops
    half-way (after its SELECT) until released. Returns (paused, release, reads)."""
    paused, release, reads = threading.Event(), threading.Event(), [0]
    original: Callable[..., Any] = state._tail

    def tail(session: Any) -> Any:
        rows = original(session)
        reads[0] += 1
        if pause_first and reads[0] == 1:
            paused.set()
            assert release.wait(WAIT)
        return rows

    state._tail = tail  # type: ignore[method-assign]
    return paused, release, reads


def _run(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(target()))
    thread.start()
    return thread, out


@pytest.fixture
def registries(tmp_path: Path, sqlite_url: str) -> tuple[Registry, Registry]:
    """A gateway's registry (its consent state caught up) and a second handle on the
    same database, standing in for another process."""
    gateway = Registry.init(tmp_path / "home", sqlite_url)
    gateway.add_grantee("Studio")
    gateway.consent.refresh()
    other = Registry.open(tmp_path / "home")
    yield gateway, other
    other.close()
    gateway.close()


def test_a_refresh_begun_before_the_call_does_not_cover_it(
    registries: tuple[Registry, Registry],
) -> None:
    gateway, other = registries
    state = gateway.consent
    paused, release, _ = _watch_tail(state)
    early, _ = _run(state.refresh)  # begins its reads before the grant exists
    assert paused.wait(WAIT)
    subject = other.add_subject("Ada Lovelace")  # committed after those reads
    late, followed = _run(state.refresh)  # called after the commit: must see it
    release.set()
    early.join(WAIT)
    late.join(WAIT)
    assert subject.id in state.subjects
    assert followed and isinstance(followed[0], int) and followed[0] >= 1


def test_a_refresh_begun_after_the_call_covers_it(registries: tuple[Registry, Registry]) -> None:
    gateway, other = registries
    state = gateway.consent
    paused, release, reads = _watch_tail(state)
    early, _ = _run(state.refresh)
    assert paused.wait(WAIT)
    subject = other.add_subject("Ada Lovelace")
    waiting = [_run(state.refresh) for _ in range(4)]  # four calls after the commit
    release.set()
    early.join(WAIT)
    for thread, _ in waiting:
        thread.join(WAIT)
    assert subject.id in state.subjects
    # the early refresh, then one for the four waiting calls (its reads began after
    # every one of them was made): the other three reused it
    assert reads[0] == 2, reads
    assert sorted(out[0] for _, out in waiting) == [0, 0, 0, 1]  # type: ignore[type-var]


def test_a_refresh_in_a_transaction_always_reads(registries: tuple[Registry, Registry]) -> None:
    gateway, other = registries
    state = gateway.consent
    subject = other.add_subject("Ada Lovelace")
    with gateway.db.write() as session:
        assert state.refresh(session) == 1
    assert subject.id in state.subjects


def test_the_rows_check_refreshes_only_for_a_row_it_cannot_explain(
    registries: tuple[Registry, Registry],
) -> None:
    """Rows the followed facts explain need no tail read; a grant committed since S0
    (its row read, its entry not yet followed) is not called forged: the check
    follows the log and judges again."""
    gateway, other = registries
    subject = other.add_subject("Ada Lovelace")
    state = gateway.consent
    state.refresh()
    _, _, reads = _watch_tail(state, pause_first=False)
    state.check_rows([subject.id])
    assert reads[0] == 0  # explained by the facts: no tail read
    grant = other.grant(subject.id, "Studio", ["generate"])  # after S0, before the rows
    state.check_rows([subject.id])
    assert reads[0] == 1 and grant.id in state.grants


def test_a_failed_rollback_check_covers_no_waiting_call(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A database restored from an older copy under a running gateway: every call
    fails, the ones that waited for a failing check too (a pass only covers)."""
    registry = Registry.init(tmp_path / "home", sqlite_url)
    try:
        registry.add_grantee("Studio")
        registry.checkpoint()
        database = Path(sqlite_url.removeprefix("sqlite:///"))
        backup = tmp_path / "backup.db"
        _copy_database(database, backup)
        registry.add_subject("Ada Lovelace")
        registry.checkpoint()
        registry.check_not_rolled_back()  # passes on the current log
        _copy_database(backup, database)  # the older copy, under the running registry
        start = threading.Barrier(6)

        def check(_: int) -> str:
            start.wait(WAIT)  # all six at once: five wait while the first fails
            try:
                registry.check_not_rolled_back()
            except RollbackError:
                return "refused"
            return "passed"

        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(check, range(6))) == ["refused"] * 6
    finally:
        registry.close()


def _copy_database(source: Path, target: Path) -> None:
    """``source`` over ``target`` with SQLite's backup API (what a restore does; a file
    copy would miss the write-ahead log)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
