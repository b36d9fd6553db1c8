"""Grants and revocations of a subject who holds a key need that subject's signature."""

from __future__ import annotations

import pytest

from consentry.errors import GrantRevokedError, SignatureError
from consentry.registry.signing import SigningKey
from tests.security.conftest import (
    World,
    append_leaf,
    assert_ok,
    assert_reported,
    forged_revocation,
    sign_row,
)


def test_revoke_with_another_subjects_key_is_refused(world: World) -> None:
    w = world
    size = w.registry.log_size()
    with pytest.raises(SignatureError, match=f"not the key of subject {w.alice.id}"):
        w.registry.revoke(w.grant_a.id, "bob says so", subject_key=w.bob_key)
    assert w.registry.log_size() == size
    assert w.registry.revocation_of(w.grant_a.id) is None
    assert w.registry.check_grant(w.grant_a.id).id == w.grant_a.id
    assert_ok(w.registry.verify_log())


def test_revoke_without_subject_key_is_refused(world: World) -> None:
    w = world
    size = w.registry.log_size()
    with pytest.raises(SignatureError, match="needs their signature"):
        w.registry.revoke(w.grant_a.id, "operator alone")
    assert w.registry.log_size() == size
    assert w.registry.revocation_of(w.grant_a.id) is None


def test_revoke_with_the_subjects_key_is_accepted(world: World) -> None:
    """Control: the honest revocation goes through and verifies."""
    w = world
    w.registry.revoke(w.grant_a.id, "changed my mind", subject_key=w.alice_key)
    with pytest.raises(GrantRevokedError):
        w.registry.check_grant(w.grant_a.id)
    assert_ok(w.registry.verify_log())


@pytest.mark.parametrize("key", ["none", "other-subject", "fresh"])
def test_grant_without_the_subjects_key_is_refused(world: World, key: str) -> None:
    w = world
    subject_key = {"none": None, "other-subject": w.bob_key, "fresh": SigningKey.generate()}[key]
    size = w.registry.log_size()
    grants = len(w.registry.list_grants())
    with pytest.raises(SignatureError, match=w.alice.id):
        w.registry.grant(w.alice.id, w.acme.id, ["train"], subject_key=subject_key)
    assert w.registry.log_size() == size
    assert len(w.registry.list_grants()) == grants


@pytest.mark.parametrize("forgery", ["operator-only", "claims-subject-key", "other-subject-key"])
def test_revocation_without_subject_signature_is_reported(world: World, forgery: str) -> None:
    """Someone holding the operator key (but not Alice's) revokes Alice's grant."""
    w = world
    assert_ok(w.registry.verify_log())
    if forgery == "operator-only":
        row = forged_revocation(w, w.grant_a, issuer_key_id=w.operator.key_id,
                                subject_key_id=None)
        keys, expected = [w.operator], "lacks the signature of the subject's key"
    elif forgery == "claims-subject-key":
        row = forged_revocation(w, w.grant_a, issuer_key_id=w.operator.key_id,
                                subject_key_id=w.alice_key.key_id)
        keys = [w.operator]
        expected = f"missing required signature by key {w.alice_key.key_id[:16]}"
    else:
        row = forged_revocation(w, w.grant_a, issuer_key_id=w.operator.key_id,
                                subject_key_id=w.bob_key.key_id)
        keys, expected = [w.operator, w.bob_key], "lacks the signature of the subject's key"
    index = append_leaf(w.registry, "revocation", row.id, sign_row(row, keys), "revocations", row)
    with pytest.raises(GrantRevokedError):  # the runtime believes the table
        w.registry.check_grant(w.grant_a.id)
    assert_reported(w.registry.verify_log(), row.id,
                    f"revocation {row.id} (log index {index})", expected)
