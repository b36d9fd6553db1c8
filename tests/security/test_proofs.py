"""Offline inclusion proofs: the right key, the right registry, the right leaf."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consentry.errors import CheckpointError, ProofError
from consentry.registry import checkpoint as cp
from consentry.registry.offline import verify_inclusion_bundle
from consentry.registry.signing import SigningKey, load_public_key
from tests.security.conftest import World, build_world


@pytest.fixture
def other_world(tmp_path: Path) -> Iterator[World]:
    """A second, independent registry with the same shape (and so the same size)."""
    w = build_world(tmp_path / "other-home", f"sqlite:///{tmp_path}/other.db")
    try:
        yield w
    finally:
        w.registry.close()


def proof_of(w: World, index: int) -> dict[str, Any]:
    return json.loads(json.dumps(w.registry.inclusion_proof(index).to_json()))


def test_inclusion_proof_with_a_different_public_key_fails(sqlite_world: World) -> None:
    w = sqlite_world
    public = load_public_key(w.registry.home.operator_public)  # what a verifier is handed
    bundle = proof_of(w, w.index_of(w.grant_a.id))
    verify_inclusion_bundle(bundle, [public])  # honest case
    with pytest.raises(CheckpointError, match="not signed by any of the given public keys"):
        verify_inclusion_bundle(bundle, [SigningKey.generate().public_key])


def test_inclusion_proof_against_another_registrys_checkpoint_fails(
    sqlite_world: World, other_world: World
) -> None:
    a, b = sqlite_world, other_world
    keys = [a.operator.public_key, b.operator.public_key]  # a verifier trusting both
    index = a.index_of(a.grant_a.id)
    bundle = proof_of(a, index)
    verify_inclusion_bundle(bundle, keys)
    other = proof_of(b, b.index_of(b.grant_a.id))
    verify_inclusion_bundle(other, keys)
    b_checkpoint, _ = cp.parse_checkpoint(other["checkpoint"])
    assert b_checkpoint.tree_size == bundle["tree_size"]  # same size: only the root differs

    bundle["checkpoint"] = other["checkpoint"]
    with pytest.raises(ProofError, match="does not lead to the root"):
        verify_inclusion_bundle(bundle, keys)
    with pytest.raises(CheckpointError):
        verify_inclusion_bundle(bundle, [a.operator.public_key])


def test_inclusion_proof_for_a_substituted_leaf_fails(sqlite_world: World) -> None:
    w = sqlite_world
    keys = [w.operator.public_key]
    bundle = proof_of(w, w.index_of(w.grant_a.id))
    bundle["leaf"] = w.registry.entry(w.index_of(w.grant_r.id)).leaf_json
    with pytest.raises(ProofError, match="leaf hash"):
        verify_inclusion_bundle(bundle, keys)
    del bundle["leaf_hash"]  # without the stated hash the audit path itself must fail
    with pytest.raises(ProofError, match="does not lead to the root"):
        verify_inclusion_bundle(bundle, keys)


def test_inclusion_proof_with_a_moved_index_fails(sqlite_world: World) -> None:
    w = sqlite_world
    bundle = proof_of(w, w.index_of(w.grant_a.id))
    bundle["index"] -= 1
    with pytest.raises(ProofError):
        verify_inclusion_bundle(bundle, [w.operator.public_key])
