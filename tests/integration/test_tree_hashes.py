"""Stored tree hashes on real SQLite and PostgreSQL: written with every append,
built in place for a home that has none, and the same as the leaves' tree."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import text

from consentry.registry import checkpoint as cp
from consentry.registry import merkle, tiles
from consentry.registry.store import Registry


def _assert_tree_matches_leaves(registry: Registry) -> None:
    leaves = registry.log.leaf_hashes()
    with registry.db.read() as session:
        assert tiles.stored_size(session) == len(leaves)
        assert list(tiles.check_stored(session, len(leaves))) == []
        tree = tiles.StoredTree(session, len(leaves))
        assert tree.root == merkle.root_hash(leaves)
        for index in range(0, len(leaves), 7):
            assert tree.inclusion_proof(index) == merkle.inclusion_proof(leaves, index)


def test_every_append_stores_the_tree_and_proofs_match(tmp_path: Path, db_url: str) -> None:
    with Registry.init(tmp_path / "home", db_url) as registry:
        first = registry.latest_checkpoint()
        for i in range(20):
            registry.add_subject(f"Person {i}")
        note = registry.checkpoint()
        _assert_tree_matches_leaves(registry)
        assert registry.verify_log().ok
        size = cp.parse_checkpoint(note)[0].tree_size
        proof = registry.consistency_proof(1, size)
        assert proof == merkle.consistency_proof(registry.log.leaf_hashes(), 1)
        old = cp.parse_checkpoint(first)[0]
        merkle.verify_consistency(1, size, old.root_hash, cp.parse_checkpoint(note)[0].root_hash,
                                  proof)  # fmt: skip


def test_a_home_without_stored_hashes_is_upgraded_in_place(tmp_path: Path, db_url: str) -> None:
    """What release 0.1.0 left (no ``log_tree_hashes`` rows): built once at open, in
    one write transaction; old checkpoints and proofs still verify."""
    home = tmp_path / "home"
    with Registry.init(home, db_url) as registry:
        for i in range(30):
            registry.add_subject(f"Person {i}")
        old_note = registry.checkpoint()
        old_proof = registry.inclusion_proof(17)
        with registry.db.writer.begin() as conn:
            conn.execute(text("DROP TABLE log_tree_hashes"))
    with Registry.open(home, db_url) as registry:
        _assert_tree_matches_leaves(registry)
        assert registry.verify_log().ok
        again = registry.inclusion_proof(17, old_note)
        assert again.hashes == old_proof.hashes and again.leaf_hash == old_proof.leaf_hash
        registry.add_subject("After the upgrade")
        registry.checkpoint()
        _assert_tree_matches_leaves(registry)


def test_concurrent_appenders_keep_the_stored_tree_gap_free(tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "home"
    Registry.init(home, db_url).close()
    errors: list[BaseException] = []

    def work(me: int) -> None:
        try:
            with Registry.open(home, db_url) as registry:
                for i in range(15):
                    registry.add_subject(f"Writer {me} person {i}")
                    if i % 5 == 4:
                        registry.checkpoint()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(me,)) for me in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    with Registry.open(home, db_url) as registry:
        assert registry.log_size() == 1 + 3 * 15
        _assert_tree_matches_leaves(registry)
        assert registry.verify_log().ok
