"""A key retired by rotation signs nothing more; what it signed before still verifies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from consentry.errors import RetiredKeyError
from consentry.registry import checkpoint as cp
from consentry.registry.models import OperatorKey
from consentry.registry.offline import verify_inclusion_bundle
from consentry.registry.signing import Envelope, SigningKey, checkpoint_key_name
from consentry.registry.statements import format_time, rotation_statement
from consentry.registry.store import Registry
from tests.security.conftest import (
    World,
    append_leaf,
    assert_ok,
    assert_reported,
    envelope_at,
    forged_grant,
    raw,
    sign_row,
)


def rotate(w: World) -> tuple[SigningKey, int]:
    """Rotate the operator key; returns the retired key and the rotation's log index."""
    old = w.operator
    new_row = w.registry.rotate_key()
    assert w.registry.key_id == new_row.key_id != old.key_id
    return old, new_row.log_index


def refuses_everything(stale: Registry, w: World) -> None:
    size = w.registry.log_size()
    with pytest.raises(RetiredKeyError, match="retired at log index"):
        stale.grant(w.alice.id, w.acme.id, ["train"], subject_key=w.alice_key)
    with pytest.raises(RetiredKeyError):
        stale.revoke(w.grant_a.id, "stale", subject_key=w.alice_key)
    with pytest.raises(RetiredKeyError):
        stale.add_subject("Mallory")
    with pytest.raises(RetiredKeyError):
        stale.checkpoint()
    with pytest.raises(RetiredKeyError):
        stale.rotate_key()
    assert w.registry.log_size() == size


def test_registry_opened_before_rotation_refuses_to_sign(world: World) -> None:
    w = world
    stale = Registry.open(w.registry.home.root, w.registry.db.url, clock=w.clock)
    try:
        assert stale.key_id == w.operator.key_id
        rotate(w)
        assert_ok(w.registry.verify_log())
        refuses_everything(stale, w)
    finally:
        stale.close()
    assert_ok(w.registry.verify_log())


def test_registry_opened_with_old_key_file_refuses_to_sign(world: World, tmp_path: Path) -> None:
    w = world
    old, _ = rotate(w)
    copy = tmp_path / "stale-home"
    (copy / "keys").mkdir(parents=True)
    shutil.copy(w.registry.home.config_file, copy / "config.json")
    old.save(copy / "keys" / "operator.key")  # the old key file's content
    stale = Registry.open(copy, w.registry.db.url, clock=w.clock)
    try:
        assert stale.key_id == old.key_id
        refuses_everything(stale, w)
    finally:
        stale.close()


def test_grant_forged_with_retired_key_after_rotation_is_reported(world: World) -> None:
    w = world
    old, _ = rotate(w)
    assert_ok(w.registry.verify_log())
    row = forged_grant(w, subject=w.alice, issuer_key_id=old.key_id,
                       subject_key_id=w.alice_key.key_id)
    index = append_leaf(w.registry, "grant", row.id, sign_row(row, [old, w.alice_key]),
                        "grants", row)
    assert_reported(w.registry.verify_log(), row.id, f"grant {row.id} (log index {index})",
                    f"signed by retired operator key {old.key_id[:16]}")


def test_rotation_forged_by_retired_key_is_reported(world: World) -> None:
    """The retired key tries to hand the registry to an attacker's key."""
    w = world
    old, _ = rotate(w)
    attacker = SigningKey.generate()
    old_row = OperatorKey(key_id=old.key_id, public_key=old.public_hex,
                          created_at=format_time(w.clock()), log_index=0)
    new_row = OperatorKey(key_id=attacker.key_id, public_key=attacker.public_hex,
                          created_at=format_time(w.clock()), log_index=-1)
    envelope = Envelope.sign(rotation_statement(old_row, new_row), [old, attacker])
    index = append_leaf(w.registry, "key-rotation", attacker.key_id, envelope, "keys", new_row)
    assert_reported(w.registry.verify_log(), attacker.key_id,
                    f"key-rotation {attacker.key_id} (log index {index})",
                    f"signed by retired operator key {old.key_id[:16]}")


def test_unretiring_the_old_key_is_reported(world: World) -> None:
    """The attacker clears ``retired_at_index``: the old key can sign again at runtime,
    and both the edited key row and what the old key signs are reported."""
    w = world
    stale = Registry.open(w.registry.home.root, w.registry.db.url, clock=w.clock)
    try:
        old, rotation_index = rotate(w)
        raw(w.registry, "UPDATE keys SET retired_at_index = NULL, successor_key_id = NULL"
            " WHERE key_id = :k", k=old.key_id)
        grant = stale.grant(w.alice.id, w.acme.id, ["train"], subject_key=w.alice_key)
    finally:
        stale.close()
    report = w.registry.verify_log()
    new_id = w.registry.key_id
    assert_reported(report, new_id, f"key-rotation {new_id} (log index {rotation_index})",
                    "key rows do not point at the rotation entry")
    assert_reported(report, grant.id, f"signed by retired operator key {old.key_id[:16]}")


def test_entries_signed_before_rotation_still_verify(world: World) -> None:
    w = world
    before_note = w.registry.home.witness_checkpoint.read_text()
    old, rotation_index = rotate(w)
    new = SigningKey.load(w.registry.home.operator_key)
    assert new.key_id == w.registry.key_id
    later = w.registry.grant(w.alice.id, w.acme.id, ["train"], subject_key=w.alice_key)
    after_note = w.registry.checkpoint()
    report = w.registry.verify_log()
    assert_ok(report)
    assert report.size == rotation_index + 2

    trusted = w.registry.trusted_keys()
    assert set(trusted) == {old.key_id, new.key_id}
    for index in range(1, rotation_index):
        envelope_at(w.registry, index).verify(trusted, [old.key_id])
    envelope_at(w.registry, w.index_of(later.id)).verify(trusted, [new.key_id])

    # old checkpoints keep verifying under the old key, new ones under the new key
    cp.verify_checkpoint(before_note, checkpoint_key_name(old.key_id), old.public_key)
    cp.verify_checkpoint(after_note, checkpoint_key_name(new.key_id), new.public_key)
    # an entry signed by the old key is proven against the new key's checkpoint
    proof = w.registry.inclusion_proof(w.index_of(w.grant_a.id)).to_json()
    assert json.loads(proof["leaf"])["envelope"]["signatures"][0]["keyid"] == old.key_id
    verify_inclusion_bundle(proof, [new.public_key])
    # ... and the old key's row records where it was retired
    assert w.registry.operator_keys()[0].retired_at_index == rotation_index
