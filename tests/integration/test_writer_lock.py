"""The writer lock under more concurrent writers than connections in the pool.

On PostgreSQL one engine (one pool: 5 connections + 10 overflow) serves readers
and writers. Writers waiting on the advisory lock must not drain that pool: the
writer holding the lock may need a connection to read (the consent follower
does), and with every connection held by a waiting writer it waited for the
pool's timeout (30 s) and failed; meanwhile nothing was written. Real SQLite and
a real PostgreSQL server, real threads.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest
from sqlalchemy import text

import consentry.registry.db as db_module
from consentry.faces.engines import get_engine
from consentry.gate import CheckRequest, Gateway
from consentry.registry.checkpointer import Checkpointer
from consentry.registry.db import Database
from consentry.registry.store import Registry

WRITERS = 40  # well over the pool's 15 connections
DEADLINE = 25.0  # under the pool's 30 s timeout: a drained pool fails here


def test_writers_waiting_on_the_lock_leave_connections_for_the_holder(db_url: str) -> None:
    db = Database.connect(db_url)
    concurrent: list[int] = []
    holders = [0]
    guard = threading.Lock()

    def writer(number: int) -> int:
        with db.write() as session:
            with guard:
                holders[0] += 1
                concurrent.append(holders[0])
            session.execute(text("SELECT 1"))
            with db.read() as reader:  # what the consent follower does under the lock
                value = int(reader.execute(text("SELECT :n"), {"n": number}).scalar_one())
            with guard:
                holders[0] -= 1
        return value

    try:
        with ThreadPoolExecutor(WRITERS) as pool:
            futures = [pool.submit(writer, n) for n in range(WRITERS)]
            done, pending = wait(futures, timeout=DEADLINE)
            assert not pending, f"{len(pending)} of {WRITERS} writers stalled (pool drained)"
            assert sorted(f.result() for f in done) == list(range(WRITERS))
    finally:
        db.dispose()
    assert max(concurrent) == 1  # one writer at a time inside the lock
    # the honest case still works: a lone writer and a lone reader
    db = Database.connect(db_url)
    try:
        with db.write() as session:
            assert session.execute(text("SELECT 1")).scalar_one() == 1
        with db.read() as reader:
            assert reader.execute(text("SELECT 2")).scalar_one() == 2
    finally:
        db.dispose()


def test_many_concurrent_checks_in_one_gateway_all_complete(tmp_path: Path, db_url: str) -> None:
    """The symptom: more concurrent prompt-only checks than pooled connections (what
    uvicorn's 40-thread pool sends one ``serve`` process) stalled on PostgreSQL."""
    _thirty_concurrent_checks(tmp_path, db_url)


def test_checks_never_wait_for_the_consent_lock_holding_a_connection(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same checks through a pool of two connections (the fewest that can work:
    the writer's, and one for whoever follows the log). A check that waited for the
    consent state's lock while holding a pooled connection (the rows' check did)
    starved the lock's holder, which needs one to read the log's tail: under load
    the 15-connection pool ran dry the same way (an allowed check refused with
    "QueuePool limit ... timed out", CI). With two connections it happens at once."""
    small_pool = functools.partial(db_module.create_engine, pool_size=2, max_overflow=0)
    monkeypatch.setattr(db_module, "create_engine", small_pool)
    _thirty_concurrent_checks(tmp_path, db_url)


def _thirty_concurrent_checks(tmp_path: Path, db_url: str) -> None:
    """30 concurrent prompt-only checks, half of a grantee with a grant: each answer
    as its grant says, each one logged, all within the deadline."""
    registry = Registry.init(tmp_path / "home", db_url)
    try:
        obama = registry.add_subject("Barack Obama", ["Obama"])
        registry.add_grantee("Granted")
        registry.add_grantee("Other")
        registry.grant(obama.id, "Granted", ["generate"])
        registry.checkpoint()
        start = registry.log_size()
        checkpointer = Checkpointer(registry, interval=0.3)
        gateway = Gateway(registry, get_engine("sface"), checkpointer=checkpointer)
        jobs = [("Granted", True), ("Other", False)] * 15

        def check(job: tuple[str, bool]) -> tuple[bool, tuple[str, ...]]:
            request = CheckRequest(grantee=job[0], purpose="generate", prompt="Obama on a beach")
            receipt = gateway.check(request)
            return receipt.allowed, receipt.reasons

        with checkpointer, ThreadPoolExecutor(len(jobs)) as pool:
            futures = [pool.submit(check, job) for job in jobs]
            _, pending = wait(futures, timeout=DEADLINE * 2)
            assert not pending, f"{len(pending)} of {len(jobs)} checks stalled"
            wrong = [
                (job, reasons)
                for job, (allowed, reasons) in zip(jobs, (f.result() for f in futures), strict=True)
                if allowed != job[1]
            ]
            assert not wrong, wrong
        assert registry.log_size() == start + len(jobs)
    finally:
        registry.close()
