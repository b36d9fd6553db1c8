"""``log verify`` in chunks: the same findings whatever the chunk size.

The verifier reads entries, rows and checkpoints a chunk at a time (bounded
memory); with chunks of 3 entries and 2 rows the 8-entry world spans several, so
every check must carry its state across chunk boundaries. Each tampering is named
as it is with one chunk, and the honest log verifies with the same root.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consentry.registry import merkle, verify
from consentry.registry.models import Subject
from tests.security.conftest import World, assert_ok, assert_reported, raw, raw_insert


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "_ENTRY_CHUNK", 3)
    monkeypatch.setattr(verify, "_ROW_CHUNK", 2)


def test_the_honest_log_verifies_in_chunks_with_its_root_and_rate(world: World) -> None:
    report = world.registry.verify_log()
    assert_ok(report)
    assert report.size == world.registry.log_size() == 8
    assert report.root == merkle.root_hash(world.registry.log.leaf_hashes())
    assert report.checkpoints >= 1 and report.seconds > 0 and report.entries_per_s > 0


def _edited_row(w: World) -> tuple[str, tuple[str, ...]]:
    raw(w.registry, "UPDATE grants SET purposes_json = :p WHERE id = :g",
        p='["generate","restore","train"]', g=w.grant_a.id)  # fmt: skip
    return w.grant_a.id, ("row differs from its signed log entry in purposes",)


def _repointed_row(w: World) -> tuple[str, tuple[str, ...]]:
    raw(w.registry, "UPDATE revocations SET log_index = 2 WHERE id = :r", r=w.revocation.id)
    return w.revocation.id, ("row claims log index 2",)


def _unlogged_row(w: World) -> tuple[str, tuple[str, ...]]:
    row = Subject(id="sub_forged0000000000000", display_name="Mallory", aliases_json="[]",
                  public_key=None, created_at="2026-01-01T00:00:00Z", log_index=4)  # fmt: skip
    raw_insert(w.registry, "subjects", row.model_dump())
    return row.id, ("row has no log entry",)


def _gap(w: World) -> tuple[str, tuple[str, ...]]:
    raw(w.registry, "DELETE FROM log_entries WHERE idx = 4")
    return "log entry 4 is missing (next is 5)", ("gap in log",)


def _deleted_row(w: World) -> tuple[str, tuple[str, ...]]:
    raw(w.registry, "DELETE FROM grants WHERE id = :g", g=w.grant_a.id)
    return w.grant_a.id, ("row missing (deleted from its table)",)


TAMPERING: dict[str, Callable[[World], tuple[str, tuple[str, ...]]]] = {
    "row edited": _edited_row,
    "row re-pointed": _repointed_row,
    "row inserted outside the log": _unlogged_row,
    "log entry deleted (gap)": _gap,
    "row deleted": _deleted_row,
}


def _verify(w: World) -> verify.LogReport:
    """The verifier alone (``Registry.verify_log`` adds the witness proof, which a
    log with a gap cannot give: it raises before reporting)."""
    with w.registry.db.read() as session:
        return verify.verify_log(session, w.registry.home.witness_checkpoint.read_text())


@pytest.mark.attack("rows or entries tampered, verified in small chunks")
@pytest.mark.parametrize("tamper", list(TAMPERING))
def test_tampering_is_named_across_chunk_boundaries(world: World, tamper: str) -> None:
    assert_ok(_verify(world))  # honest: clean in chunks
    record, fragments = TAMPERING[tamper](world)
    assert_reported(_verify(world), record, *fragments)
