"""A writer SIGKILLed at a random moment leaves no half-written record behind."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from sqlalchemy import text

from consentry.registry.store import Registry
from tests.security import _worker
from tests.security.conftest import assert_ok, assert_rows_match_log

KILLS = 4


def test_writer_killed_mid_write_leaves_log_and_rows_consistent(
    tmp_path: Path, db_url: str
) -> None:
    rng = random.Random(20300101)
    home = tmp_path / "home"
    registry = Registry.init(home, db_url)
    try:
        subject = registry.add_subject("Alice Example")
        grantee, _ = registry.add_grantee("Acme Studios")
        sizes = [registry.log_size()]
        for _ in range(KILLS):
            ready = _worker.event()
            child = _worker.start(_worker.crash, str(home), db_url, subject.id, grantee.id, ready)
            try:
                deadline = time.monotonic() + 60
                while not ready.wait(timeout=0.05):
                    assert child.is_alive(), f"the writer died before committing: {child.exitcode}"
                    assert time.monotonic() < deadline, "the writer never committed"
                time.sleep(rng.uniform(0.02, 0.3))
                assert child.is_alive(), f"the writer stopped before the kill: {child.exitcode}"
                child.kill()  # SIGKILL: no cleanup, no rollback, mid-transaction
                child.join(timeout=30)
            finally:
                if child.is_alive():
                    child.kill()
                    child.join()
            assert child.exitcode == -signal.SIGKILL
            # whatever the killed writer left must already be consistent
            sizes.append(assert_rows_match_log(registry))
            assert sizes[-1] > sizes[-2], "the writer committed nothing before it was killed"

        with registry.db.read() as session:
            grants = session.execute(text("SELECT COUNT(*) FROM grants")).scalar_one()
        assert grants > 0
        # a fresh writer can still write after the crashes (no lock left behind)
        registry.grant(subject.id, grantee.id, ["train"])
        registry.checkpoint()
        assert_rows_match_log(registry)
        assert_ok(registry.verify_log())
    finally:
        registry.close()
