"""Signed checkpoints that go back (smaller) or sideways (split view) are refused."""

from __future__ import annotations

import pytest

from consentry.errors import ProofError, RollbackError
from consentry.registry import checkpoint as cp
from consentry.registry import merkle
from consentry.registry.offline import verify_consistency_bundle
from consentry.registry.signing import checkpoint_key_name
from tests.security.conftest import World, assert_reported


def sign_tree(w: World, leaf_hashes: list[bytes]) -> str:
    """A checkpoint over ``leaf_hashes`` signed with the real operator key."""
    checkpoint = cp.Checkpoint(w.registry.origin, len(leaf_hashes),
                               merkle.root_hash(leaf_hashes), w.clock())
    return cp.sign_checkpoint(checkpoint, checkpoint_key_name(w.operator.key_id),
                              w.operator.private_key)


def forked_hashes(w: World, size: int) -> list[bytes]:
    """The real leaf hashes with leaf 2 replaced: another history of ``size`` leaves."""
    hashes = w.registry.log.leaf_hashes()[:size]
    hashes[2] = merkle.leaf_hash(b"a different subject")
    while len(hashes) < size:
        hashes.append(merkle.leaf_hash(b"extra %d" % len(hashes)))
    return hashes


def parse(note: str, w: World) -> cp.Checkpoint:
    return cp.verify_checkpoint(note, checkpoint_key_name(w.operator.key_id),
                                w.operator.public_key)


def test_smaller_checkpoint_is_a_rollback(sqlite_world: World) -> None:
    w = sqlite_world
    old_note = w.registry.checkpoint()
    w.registry.grant(w.alice.id, w.acme.id, ["train"], subject_key=w.alice_key)
    new_note = w.registry.checkpoint()
    old, new = parse(old_note, w), parse(new_note, w)
    assert old.tree_size < new.tree_size
    cp.check_not_rollback(old, new)  # forward is fine
    cp.check_not_rollback(new, new)  # so is the same checkpoint again
    with pytest.raises(RollbackError, match="smaller than trusted"):
        cp.check_not_rollback(new, old)

    keys = [w.operator.public_key]
    honest = {"old_checkpoint": old_note, "new_checkpoint": new_note,
              "hashes": [h.hex() for h in w.registry.consistency_proof(old.tree_size)]}
    verify_consistency_bundle(honest, keys)
    backwards = {"old_checkpoint": new_note, "new_checkpoint": old_note, "hashes": []}
    with pytest.raises(RollbackError):
        verify_consistency_bundle(backwards, keys)


def test_split_view_at_the_same_size_is_refused(sqlite_world: World) -> None:
    w = sqlite_world
    trusted_note = w.registry.checkpoint()
    trusted = parse(trusted_note, w)
    fork_note = sign_tree(w, forked_hashes(w, trusted.tree_size))
    fork = parse(fork_note, w)  # genuinely signed by the operator key
    assert fork.tree_size == trusted.tree_size and fork.root_hash != trusted.root_hash
    with pytest.raises(RollbackError, match="split view"):
        cp.check_not_rollback(trusted, fork)
    with pytest.raises(RollbackError, match="split view"):
        cp.check_not_rollback(fork, trusted)
    bundle = {"old_checkpoint": trusted_note, "new_checkpoint": fork_note, "hashes": []}
    with pytest.raises(RollbackError):
        verify_consistency_bundle(bundle, [w.operator.public_key])


def test_split_view_fork_that_grows_fails_consistency(sqlite_world: World) -> None:
    """The fork is one entry bigger and comes with its own (internally valid) proof."""
    w = sqlite_world
    trusted_note = w.registry.checkpoint()
    size = parse(trusted_note, w).tree_size
    fork = forked_hashes(w, size + 1)
    bundle = {
        "old_checkpoint": trusted_note,
        "new_checkpoint": sign_tree(w, fork),
        "hashes": [h.hex() for h in merkle.consistency_proof(fork, size)],
    }
    with pytest.raises(ProofError):
        verify_consistency_bundle(bundle, [w.operator.public_key])
    # control: the honest extension verifies with the same machinery
    honest = [*w.registry.log.leaf_hashes(), merkle.leaf_hash(b"next")]
    bundle["new_checkpoint"] = sign_tree(w, honest)
    bundle["hashes"] = [h.hex() for h in merkle.consistency_proof(honest, size)]
    verify_consistency_bundle(bundle, [w.operator.public_key])


def test_split_view_witness_is_reported_by_verify_log(world: World) -> None:
    w = world
    size = w.registry.log_size()
    w.registry.home.witness_checkpoint.write_text(sign_tree(w, forked_hashes(w, size)))
    assert_reported(w.registry.verify_log(), "witness checkpoint",
                    "root differs from the log's (log rewritten, or split view)")
