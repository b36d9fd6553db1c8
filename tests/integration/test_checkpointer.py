"""The checkpointer: checkpoints on a cadence over a real registry (SQLite and
PostgreSQL), covering notes for waiters, C2SP tlog-proof text, and a refused
checkpoint raised to every waiter."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from consentry.errors import NotFoundError, RollbackError
from consentry.registry import checkpoint as cp
from consentry.registry import merkle
from consentry.registry.checkpointer import TLOG_PROOF_HEADER, Checkpointer, tlog_proof
from consentry.registry.store import Registry


@pytest.fixture
def registry(tmp_path: Path, db_url: str) -> Iterator[Registry]:
    made = Registry.init(tmp_path / "home", db_url)
    try:
        yield made
    finally:
        made.close()


def _size(note: str) -> int:
    return cp.parse_checkpoint(note)[0].tree_size


def _grow(registry: Registry, count: int) -> int:
    """Append ``count`` entries; returns the index of the last."""
    for _ in range(count):
        registry.add_grantee(f"Grantee {registry.new_id('x')}")
    return registry.log_size() - 1


def test_the_cadence_covers_new_entries_without_one_checkpoint_each(registry: Registry) -> None:
    with Checkpointer(registry, interval=0.2) as checkpointer:
        last = _grow(registry, 20)
        began = time.monotonic()
        note = checkpointer.covering(last, wait=5)
        assert _size(note) > last and time.monotonic() - began < 5
        assert checkpointer.signed <= 3  # a few ticks, not one per entry
        deadline = time.monotonic() + 5
        while checkpointer.covered_size <= last and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpointer.covered_size > last  # the thread, nobody asking
    proof = registry.inclusion_proof(last, note)
    merkle.verify_inclusion(
        proof.leaf_hash, last, proof.tree_size, proof.hashes, cp.parse_checkpoint(note)[0].root_hash
    )


def test_without_a_thread_covering_signs_at_once_and_stop_covers_the_rest(
    registry: Registry,
) -> None:
    checkpointer = Checkpointer(registry, interval=None)
    last = _grow(registry, 2)
    assert _size(checkpointer.covering(last)) == last + 1
    assert checkpointer.signed == 1
    assert checkpointer.covering(last) == checkpointer.covering(0)  # no new signing
    assert checkpointer.signed == 1
    with pytest.raises(NotFoundError):
        checkpointer.covering(last + 5)
    _grow(registry, 3)
    checkpointer.stop()  # the exit: nothing logged is left uncovered
    assert _size(registry.latest_checkpoint()) == registry.log_size()


def test_a_checkpoint_signed_by_another_process_is_reused(registry: Registry) -> None:
    checkpointer = Checkpointer(registry, interval=None)
    last = _grow(registry, 2)
    with Registry.open(registry.home.root, registry.db.url) as other:
        signed_there = other.checkpoint()
    assert checkpointer.covering(last) == signed_there and checkpointer.signed == 0


def test_tlog_proof_text_is_c2sp_shaped_and_proves_the_entry(registry: Registry) -> None:
    last = _grow(registry, 6)
    proof = Checkpointer(registry, interval=None).proof(3)
    assert last >= 3
    body, _, note = tlog_proof(proof).partition("\n\n")
    lines = body.split("\n")
    assert lines[0] == TLOG_PROOF_HEADER and lines[1] == "index 3"
    hashes = [base64.b64decode(h) for h in lines[2:]]
    assert hashes == proof.hashes and note == proof.checkpoint
    checkpoint = cp.parse_checkpoint(note)[0]
    leaf = merkle.leaf_hash(registry.entry(3).leaf_json.encode())
    merkle.verify_inclusion(leaf, 3, checkpoint.tree_size, hashes, checkpoint.root_hash)


def test_a_truncated_log_is_never_covered(registry: Registry) -> None:
    """Entries cut after a checkpoint was witnessed: the checkpointer refuses to sign
    and every waiter gets the RollbackError (nothing is released without a proof)."""
    last = _grow(registry, 3)
    checkpointer = Checkpointer(registry, interval=0.1)
    checkpointer.covering(last)  # honest: covered
    with registry.db.write() as session:
        cut = last - 1
        session.execute(text("DELETE FROM log_entries WHERE idx >= :n"), {"n": cut})
        session.execute(text("DELETE FROM checkpoints"))
        # a careful attacker also cuts the stored tree hashes back to the shorter log
        # (else the next append is refused already: stored hashes cover more entries)
        session.execute(
            text("DELETE FROM log_tree_hashes WHERE ((idx + 1) << level) > :n"), {"n": cut}
        )
    _grow(registry, 3)  # regrown past the witnessed size: another history
    with checkpointer, pytest.raises(RollbackError):
        checkpointer.covering(registry.log_size() - 1, wait=0.5)
    with pytest.raises(RollbackError):
        checkpointer.covering(registry.log_size() - 1)
