"""A truncated log is caught by the stored checkpoints and by the home's witness copy."""

from __future__ import annotations

import pytest

from consentry.errors import RollbackError
from tests.security.conftest import World, assert_ok, raw


def truncate_tail(w: World) -> int:
    """Delete the last two entries (grant_a and the revocation of grant_r) and their rows.

    Returns the size of the log before. Afterwards grant_r looks active again.
    """
    size = w.registry.log_size()
    assert w.index_of(w.revocation.id) == size - 1
    assert w.index_of(w.grant_a.id) == size - 2
    raw(w.registry, "DELETE FROM revocations WHERE id = :r", r=w.revocation.id)
    raw(w.registry, "DELETE FROM grants WHERE id = :g", g=w.grant_a.id)
    assert raw(w.registry, "DELETE FROM log_entries WHERE idx >= :n", n=size - 2) == 2
    assert w.registry.log_size() == size - 2
    assert w.registry.check_grant(w.grant_r.id).id == w.grant_r.id  # un-revoked
    return size


def test_truncated_log_with_checkpoints_deleted_is_caught_by_witness(world: World) -> None:
    w = world
    assert_ok(w.registry.verify_log())
    size = truncate_tail(w)
    raw(w.registry, "DELETE FROM checkpoints")
    assert w.registry.home.witness_checkpoint.exists()
    report = w.registry.verify_log()
    assert not report.ok
    assert (
        f"witness checkpoint: covers {size} entries but the log has {size - 2}: log truncated"
        in report.problems
    ), report.problems


def test_truncated_log_with_checkpoints_intact_is_caught(world: World) -> None:
    w = world
    size = truncate_tail(w)
    w.registry.home.witness_checkpoint.unlink()  # only the stored checkpoints remain
    report = w.registry.verify_log()
    assert (
        f"checkpoint {size}: covers {size} entries but the log has {size - 2}: log truncated"
        in report.problems
    ), report.problems


def test_truncated_log_rows_kept_is_reported(world: World) -> None:
    """Only the log entries are cut; the rows that pointed at them are now unlogged."""
    w = world
    size = w.registry.log_size()
    raw(w.registry, "DELETE FROM log_entries WHERE idx >= :n", n=size - 2)
    raw(w.registry, "DELETE FROM checkpoints")
    report = w.registry.verify_log()
    assert f"revocation {w.revocation.id}: row has no log entry (inserted outside the log)" in (
        report.problems)
    assert any("witness checkpoint" in p and "log truncated" in p for p in report.problems)


@pytest.mark.parametrize("then", ["checkpoint", "write-and-checkpoint"])
def test_truncation_is_not_laundered_by_the_next_checkpoint(world: World, then: str) -> None:
    """After a truncation (checkpoint rows deleted too) the operator signs the next
    checkpoint, as every CLI write command does. The home's witness must not move
    backwards or sideways: either ``checkpoint()`` refuses with RollbackError and
    leaves the witness alone, or ``verify_log`` keeps reporting the cut.

    ``write-and-checkpoint``: three honest grants first, so the new tree is larger than
    the witnessed one but does not extend it (its entries 6 and 7 differ).
    """
    w = world
    truncate_tail(w)
    raw(w.registry, "DELETE FROM checkpoints")
    witness_before = w.registry.home.witness_checkpoint.read_text()
    try:  # the stored tree hashes still cover the cut entries: appends are refused too
        if then == "write-and-checkpoint":
            for purpose in ("restore", "generate", "train"):
                w.registry.grant(w.alice.id, w.acme.id, [purpose], subject_key=w.alice_key)
        w.registry.checkpoint()
    except RollbackError:
        assert w.registry.home.witness_checkpoint.read_text() == witness_before
    report = w.registry.verify_log()
    assert any("log truncated" in p or "log rewritten" in p for p in report.problems), (
        "the revocation of grant_r was cut from the log, and after checkpoint() the "
        f"registry verifies clean: problems={report.problems}"
    )


def test_rewritten_tail_is_caught_by_witness(world: World) -> None:
    """Truncate, then let the registry append honest new entries up to the old size:
    the witness root no longer matches the prefix."""
    w = world
    size = truncate_tail(w)
    raw(w.registry, "DELETE FROM checkpoints")
    w.registry.grant(w.alice.id, w.acme.id, ["restore"], subject_key=w.alice_key)
    w.registry.grant(w.alice.id, w.acme.id, ["generate"], subject_key=w.alice_key)
    assert w.registry.log_size() == size
    report = w.registry.verify_log()
    assert "witness checkpoint: root differs from the log's (log rewritten, or split view)" in (
        report.problems), report.problems
