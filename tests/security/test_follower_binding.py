"""The consent follower binds what it follows to the witnessed tree (``registry.frontier``).

``Registry.open`` reads O(log n) stored hashes, not every leaf, so a leaf rewritten
in the database is refused where it is used: the follower recomputes the root of
every entry it follows and checks it against the checkpoint this process proved
its witness state holds (with none, the stored tree), before applying any fact of
them; its sealed snapshot records that root and frontier and is bound the same way.

Each attack replaces Bob's revocation (log index 7) with another validly signed
leaf (a replay of the grantee entry at index 3): every signature verifies, so
without the binding Bob's revoked grant would be active again. Each test shows
the honest registry refusing Bob (revoked) and allowing Alice, then the refusal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from consentry.errors import LogIntegrityError, RollbackError
from consentry.faces.engine import FaceEngine
from consentry.faces.engines import get_engine
from consentry.gate import CheckRequest, Gateway, is_integrity_failure
from consentry.registry import consent, merkle, tiles
from consentry.registry.decisions import record_decision
from consentry.registry.store import Registry
from tests.security.conftest import World, assert_reported, rebuild_tree_hashes

ALICE = "a portrait of Alice Example"
BOB = "a portrait of Bob Example"


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return get_engine("sface")


def reopen(w: World, witness_dir: Path | None = None) -> Registry:
    return Registry.open(
        w.registry.home.root, w.registry.db.url, clock=w.clock, witness_dir=witness_dir
    )


def check(registry: Registry, engine: FaceEngine, prompt: str) -> tuple[bool, bool, Any]:
    receipt = Gateway(registry, engine).check(
        CheckRequest(registry.get_grantee("Acme Studios").id, "generate", prompt=prompt)
    )
    return receipt.allowed, is_integrity_failure(receipt), receipt.reasons


def fresh_check(
    w: World, engine: FaceEngine, prompt: str, witness_dir: Path | None = None
) -> tuple[bool, bool, Any]:
    registry = reopen(w, witness_dir)
    try:
        return check(registry, engine, prompt)
    finally:
        registry.close()


def assert_honest(w: World, engine: FaceEngine, witness_dir: Path | None = None) -> None:
    assert fresh_check(w, engine, ALICE, witness_dir)[0]
    allowed, integrity, reasons = fresh_check(w, engine, BOB, witness_dir)
    assert not allowed and not integrity and any("revoked" in r for r in reasons), reasons


def assert_refused(registry: Registry, engine: FaceEngine) -> None:
    for prompt in (BOB, ALICE):  # every job stops, not only the one the leaf is about
        allowed, integrity, reasons = check(registry, engine, prompt)
        assert not allowed and integrity, reasons


def replace_revocation(w: World, tree: str) -> int:
    """Put a replay of the grantee leaf (index 3) where the revocation is, with its
    leaf hash column; ``tree``: "leaf" also rewrites its stored leaf hash (not the
    interior nodes), "all" rebuilds every stored hash from the edited leaves."""
    target, source = w.index_of(w.revocation.id), w.index_of(w.acme.id)
    with w.registry.db.writer.begin() as conn:
        leaf_json, kind, record_id = conn.execute(
            text("SELECT leaf_json, kind, record_id FROM log_entries WHERE idx = :i"),
            {"i": source},
        ).one()
        digest = merkle.leaf_hash(leaf_json.encode())
        conn.execute(
            text(
                "UPDATE log_entries SET leaf_json = :j, kind = :k, record_id = :r, "
                "leaf_hash = :h WHERE idx = :i"
            ),
            {"j": leaf_json, "k": kind, "r": record_id, "h": digest.hex(), "i": target},
        )
        if tree == "leaf":
            conn.execute(
                text("UPDATE log_tree_hashes SET hash = :h WHERE level = 0 AND idx = :i"),
                {"h": digest, "i": target},
            )
        else:
            rebuild_tree_hashes(conn)
    return target


@pytest.mark.attack("log leaf replaced by another signed leaf, with its stored leaf hash")
def test_a_leaf_replaced_with_its_stored_leaf_hash_is_refused_at_its_first_follow(
    world: World, engine: FaceEngine
) -> None:
    """The stored leaf hash agrees with the leaf, the interior nodes and the witnessed
    root are unchanged: the open passes (as the old full leaf scan did too), and the
    follower refuses, because the root of what it read is not the witnessed one."""
    w = world
    assert_honest(w, engine)
    index = replace_revocation(w, tree="leaf")
    registry = reopen(w)  # O(log n): nothing it reads changed
    try:
        with pytest.raises(LogIntegrityError, match="witnessed tree"):
            registry.consent.refresh()
        assert registry.consent.size == 0  # no fact of the rewritten log was applied
        assert_refused(registry, engine)
    finally:
        registry.close()
    # a party with no witness state and no checkpoint to trust binds to the stored
    # tree (whose root, from the unchanged interior nodes, is the honest one): refused
    with w.registry.db.writer.begin() as conn:
        conn.execute(text("DELETE FROM checkpoints"))
    registry = reopen(w, w.registry.home.root.parent / "new-witness")
    try:
        assert registry.log.witnessed_root is None
        with pytest.raises(LogIntegrityError, match="differ from the stored tree"):
            registry.consent.refresh()
    finally:
        registry.close()
    assert_reported(w.registry.verify_log(), f"stored hash level 1 index {index // 2}")


@pytest.mark.attack("log rewritten with its whole tree after the registry opened")
def test_a_log_rewritten_with_its_tree_after_the_open_is_refused_by_the_follower(
    world: World, engine: FaceEngine
) -> None:
    """The open proved the log extends the witness; then the leaf and every stored
    hash are rewritten (a consistent, other tree). The cheap per-decision check only
    looks at the witnessed tail, so it passes; the follower, bound to the root the
    open proved, refuses. A process opening now is refused at the open."""
    w = world
    w.registry.add_grantee("Filler Studio")  # the revocation is not the witnessed tail
    w.registry.checkpoint()
    assert_honest(w, engine)
    registry = reopen(w)
    try:
        replace_revocation(w, tree="all")
        registry.check_not_rolled_back()  # the witnessed tail leaf is intact
        with pytest.raises(LogIntegrityError, match="witnessed tree"):
            registry.consent.refresh()
        assert_refused(registry, engine)
    finally:
        registry.close()
    with pytest.raises(RollbackError):
        reopen(w)


def _refusal(w: World) -> None:
    """One honest decision appended by the world's registry (a refusal: its writer
    reads nothing of the consent state)."""
    record_decision(w.registry, w.acme.id, "generate", False, ["a test refusal"], [], [],
                    None, [], [])  # fmt: skip


def _count_full_binds(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the follower's full binds (stored size read, then the covered part
    bound); the common bind is one read of the stored root at the new size."""
    calls: list[int] = []
    full = registry.consent._bind_stored

    def counted(*args: Any) -> None:
        calls.append(1)
        full(*args)

    monkeypatch.setattr(registry.consent, "_bind_stored", counted)
    return calls


@pytest.mark.attack("log rewritten with its whole tree under a follower that is following it")
def test_a_log_rewritten_with_its_tree_under_a_running_follower_is_refused_at_its_next_follow(
    world: World, engine: FaceEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running follower, its anchor proved, binds each new entry in one read: the
    stored root at the new size must equal the root of every leaf it followed. The
    revocation (followed long ago) is replaced by a replayed signed leaf and every
    stored hash rebuilt (a consistent, other tree), then an honest decision is
    appended on top of it: the follower refuses at that entry, and every job with it."""
    w = world
    w.registry.add_grantee("Filler Studio")  # the revocation is not the witnessed tail
    w.registry.checkpoint()
    registry = reopen(w)
    try:
        registry.consent.refresh()  # binds everything and proves the witnessed anchor
        full_binds = _count_full_binds(registry, monkeypatch)
        _refusal(w)
        assert registry.consent.refresh() == 1 and full_binds == []  # the one-read bind
        replace_revocation(w, tree="all")
        _refusal(w)
        with pytest.raises(LogIntegrityError, match="differ from the stored tree"):
            registry.consent.refresh()
        assert full_binds == [1]  # the one-read bind did not match: the full bind names it
        assert_refused(registry, engine)
    finally:
        registry.close()


def test_entries_the_stored_tree_does_not_cover_yet_are_followed_and_bound_later(
    world: World, engine: FaceEngine
) -> None:
    """An entry with no stored hashes yet (written by an older release) is followed on
    its signature and left unbound (the one-read bind finds a node missing and the
    full bind binds what the stored tree covers); once the stored hashes catch up,
    the next follow binds it with the entries after it."""
    w = world
    registry = reopen(w)
    try:
        registry.consent.refresh()
        _refusal(w)
        with w.registry.db.writer.begin() as conn:
            last = conn.execute(text("SELECT max(idx) FROM log_entries")).scalar_one()
            conn.execute(  # every stored node over the newest leaf
                text("DELETE FROM log_tree_hashes WHERE idx = (:n / (1 << level))"), {"n": last}
            )
        assert registry.consent.refresh() == 1
        assert registry.consent.size == last + 1
        assert registry.consent._unbound  # followed, not bound yet
        assert check(registry, engine, ALICE)[0]
        with w.registry.db.write() as session:
            tiles.sync(session)
        _refusal(w)
        registry.consent.refresh()
        size = registry.consent.size
        assert registry.consent._unbound == [] and registry.consent._frontier.size == size
        assert check(registry, engine, ALICE)[0]
    finally:
        registry.close()


def _fill(w: World, count: int) -> None:
    for _ in range(count):
        record_decision(w.registry, w.acme.id, "generate", True, [], [w.grant_a.id],
                        [w.alice.id], None, [], [])  # fmt: skip


@pytest.mark.attack("consent snapshot over a log rewritten or cut with its whole tree")
@pytest.mark.parametrize("attack", ["rewritten", "truncated"])
def test_a_snapshot_that_does_not_bind_fails_the_follower_closed(
    world: World, engine: FaceEngine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, attack: str
) -> None:
    """A party with no witness state of its own (trust on first use) opens any
    consistent log; the home's sealed snapshot is then the evidence of what this home
    verified. Before, a snapshot whose root was not the log's was dropped and the log
    replayed from 0, which accepts a replayed leaf or a cut tail (both verify):
    Bob's revocation would be gone. Now the follower refuses."""
    w = world
    monkeypatch.setattr(consent, "SNAPSHOT_EVERY", 4)
    _fill(w, 5)  # the writer's follower seals a snapshot covering the revocation
    registry = reopen(w, tmp_path / "first-use")
    try:
        registry.consent.refresh()
        assert registry.consent.loaded_snapshot > w.index_of(w.revocation.id)  # honest: bound
    finally:
        registry.close()
    assert_honest(w, engine, tmp_path / "first-use-2")
    if attack == "rewritten":
        replace_revocation(w, tree="all")
    else:  # the revocation and everything after it, rows and checkpoints too
        cut = w.index_of(w.revocation.id)
        with w.registry.db.writer.begin() as conn:
            for table in ("revocations", "decisions"):
                conn.execute(text(f"DELETE FROM {table} WHERE log_index >= :n"), {"n": cut})
            conn.execute(text("DELETE FROM log_entries WHERE idx >= :n"), {"n": cut})
            conn.execute(text("DELETE FROM checkpoints"))
            rebuild_tree_hashes(conn)
    registry = reopen(w, tmp_path / "first-use-3")  # no witness state: the open passes
    try:
        with pytest.raises(LogIntegrityError, match="consent snapshot"):
            registry.consent.refresh()
        assert_refused(registry, engine)
    finally:
        registry.close()
