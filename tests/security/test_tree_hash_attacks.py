"""Attacks on the stored tree hashes (``registry.tiles``), on SQLite and PostgreSQL.

Roots, proofs and tiles are served from stored complete-subtree hashes, not from
the leaves. A forged stored hash must never yield a proof that verifies against an
honest checkpoint, ``log verify`` must name it (level, index, tile), and a log cut
or rewritten under stale stored hashes is still refused.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import text

from consentry.errors import LogIntegrityError, ProofError, RollbackError
from consentry.registry import checkpoint as cp
from consentry.registry import merkle
from consentry.registry.store import Registry
from tests.security.conftest import World, assert_ok, assert_reported, canonical_json


def _forge(registry: Registry, level: int, idx: int) -> None:
    with registry.db.writer.begin() as conn:
        changed = conn.execute(
            text("UPDATE log_tree_hashes SET hash = :h WHERE level = :l AND idx = :i"),
            {"h": hashlib.sha256(b"forged").digest(), "l": level, "i": idx},
        ).rowcount
    assert changed == 1


def _proof_verifies(registry: Registry, index: int) -> None:
    proof = registry.inclusion_proof(index)
    root = cp.parse_checkpoint(registry.latest_checkpoint())[0].root_hash
    merkle.verify_inclusion(proof.leaf_hash, index, proof.tree_size, proof.hashes, root)


@pytest.mark.attack("stored tree hash forged")
@pytest.mark.parametrize(
    ("level", "idx", "prove"),
    [(0, 5, 4), (1, 1, 0), (2, 1, 0), (3, 0, None)],
    ids=["leaf hash", "level 1", "level 2", "root node"],
)
def test_forged_stored_hash_is_named_and_no_proof_from_it_verifies(
    world: World, level: int, idx: int, prove: int | None
) -> None:
    registry = world.registry
    assert registry.log_size() == 8
    assert_ok(registry.verify_log())  # honest: clean, every proof verifies
    for index in range(8):
        _proof_verifies(registry, index)
    registry.checkpoint()

    _forge(registry, level, idx)
    assert_reported(
        registry.verify_log(), f"stored hash level {level} index {idx}", "forged stored hash"
    )
    if prove is not None:
        with pytest.raises(ProofError):
            _proof_verifies(registry, prove)
    else:  # the root itself: never signed, the stored checkpoint of size 8 disagrees
        with pytest.raises(RollbackError):
            registry.checkpoint()


@pytest.mark.attack("log leaf rewritten under stale stored hashes")
def test_a_leaf_rewritten_under_stale_stored_hashes_is_refused(world: World) -> None:
    """The open no longer reads every leaf (O(log n)): the rewritten leaf is refused
    where it would be used. The consent follower of a new process refuses it at its
    first follow, before any fact is applied (every decision then refuses), ``log
    verify`` names it, and no inclusion proof is served for it."""
    registry = world.registry
    honest = Registry.open(registry.home.root, registry.db.url)  # honest: opens, follows
    try:
        assert honest.consent.refresh() == registry.log_size()
    finally:
        honest.close()
    entry = registry.entry(3)
    data = canonical_json({**json.loads(entry.leaf_json), "id": "grt_forged"})
    with registry.db.writer.begin() as conn:  # leaf and its hash column, not the tree
        conn.execute(
            text("UPDATE log_entries SET leaf_json = :j, leaf_hash = :h WHERE idx = 3"),
            {"j": data.decode(), "h": merkle.leaf_hash(data).hex()},
        )
    fresh = Registry.open(registry.home.root, registry.db.url)
    try:
        for _ in range(2):  # and on every later refresh: the state fails closed
            with pytest.raises(LogIntegrityError, match="log entry 3 differs from its stored"):
                fresh.consent.refresh()
        assert fresh.consent.size == 0  # nothing of the rewritten log was applied
    finally:
        fresh.close()
    assert_reported(registry.verify_log(), "stored hash level 0 index 3", "tile 0/0")
    with pytest.raises(LogIntegrityError, match="entry 3 differs from its stored hash"):
        registry.inclusion_proof(3)


@pytest.mark.attack("log truncated under stale stored hashes")
@pytest.mark.parametrize("then", ["append", "checkpoint"])
def test_a_log_cut_under_stale_stored_hashes_is_refused(world: World, then: str) -> None:
    registry = world.registry
    registry.add_subject("Carol Honest")  # honest: appends and checkpoints
    registry.checkpoint()
    size = registry.log_size()
    with registry.db.writer.begin() as conn:
        conn.execute(text("DELETE FROM log_entries WHERE idx >= :n"), {"n": size - 2})
    with pytest.raises(RollbackError, match="log truncated"):
        if then == "append":
            registry.add_subject("Dave After The Cut")
        else:
            registry.checkpoint()
    assert_reported(registry.verify_log(), "stored hash level 0", "past the log")
