"""Concurrent writers: log indexes stay gap-free and unique, every write lands once."""

from __future__ import annotations

import itertools
from pathlib import Path

from sqlalchemy import text

from consentry.registry.store import Registry
from tests.security import _worker
from tests.security.conftest import assert_ok, assert_rows_match_log

WORKERS = 4
ROUNDS = 25  # each round is one grant and one revocation


def test_concurrent_grants_and_revocations_keep_the_log_gap_free(
    tmp_path: Path, db_url: str
) -> None:
    home = tmp_path / "home"
    registry = Registry.init(home, db_url)
    try:
        subject = registry.add_subject("Alice Example")
        grantee, _ = registry.add_grantee("Acme Studios")
        start = registry.log_size()
        go = _worker.barrier(WORKERS + 1)
        children = [
            _worker.start(_worker.churn, str(home), db_url, subject.id, grantee.id, ROUNDS, go, me)
            for me in range(WORKERS)
        ]
        try:
            go.wait(timeout=30)  # all four start writing at once
            for child in children:
                child.join(timeout=120)
                assert child.exitcode == 0, f"writer {child.pid} failed: {child.exitcode}"
        finally:
            for child in children:
                if child.is_alive():
                    child.kill()
                    child.join()

        expected = start + WORKERS * ROUNDS * 2
        assert assert_rows_match_log(registry) == expected
        assert registry.log_size() == expected
        with registry.db.read() as session:
            grants = session.execute(text("SELECT COUNT(*) FROM grants")).scalar_one()
            revoked = session.execute(text("SELECT COUNT(*) FROM revocations")).scalar_one()
            writers = [str(r[0]).split()[1] for r in session.execute(
                text("SELECT reason FROM revocations ORDER BY log_index"))]
        assert grants == revoked == WORKERS * ROUNDS
        assert sorted(writers) == sorted(str(me) for me in range(WORKERS) for _ in range(ROUNDS))
        switches = sum(a != b for a, b in itertools.pairwise(writers))
        assert switches >= WORKERS, f"writers ran one after another ({switches} switches)"
        registry.checkpoint()
        report = registry.verify_log()
        assert_ok(report)
        assert report.size == expected
    finally:
        registry.close()


def test_a_fresh_writer_process_can_grant_and_revoke(tmp_path: Path, sqlite_url: str) -> None:
    """Precondition of the test above: a process whose first registry call is ``grant``
    (as in ``consentry grant``) writes; no earlier ORM query warms anything up."""
    home = tmp_path / "home"
    registry = Registry.init(home, sqlite_url)
    try:
        subject = registry.add_subject("Alice Example")
        grantee, _ = registry.add_grantee("Acme Studios")
        start = registry.log_size()
        go = _worker.barrier(2)
        child = _worker.start(_worker.churn, str(home), sqlite_url, subject.id, grantee.id, 1,
                              go, 0)
        go.wait(timeout=30)
        child.join(timeout=60)
        assert child.exitcode == 0, "a fresh process could not grant (see its stderr)"
        assert registry.log_size() == start + 2
    finally:
        registry.close()
