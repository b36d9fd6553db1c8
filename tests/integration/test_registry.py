"""The Registry facade on real SQLite and real PostgreSQL."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from consentry import (
    GrantExpiredError,
    GrantNotYetValidError,
    GrantRevokedError,
    Registry,
    SignatureError,
)
from consentry.errors import (
    AmbiguousNameError,
    DuplicateError,
    InputError,
    NotFoundError,
    RetiredKeyError,
)
from consentry.registry import checkpoint as cp
from consentry.registry.offline import verify_consistency_bundle, verify_inclusion_bundle
from consentry.registry.signing import SigningKey, load_public_key, public_key_from_hex
from tests.support.clock import T0, Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(tmp_path: Path, db_url: str, clock: Clock) -> Iterator[Registry]:
    reg = Registry.init(tmp_path / "home", db_url, clock=clock)
    yield reg
    reg.close()


def test_init_creates_key_0600_genesis_and_checkpoint(registry: Registry) -> None:
    key_file = registry.home.operator_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert registry.log_size() == 1
    assert registry.entry(0).kind == "key"
    checkpoint, _ = cp.parse_checkpoint(registry.latest_checkpoint())
    assert checkpoint.tree_size == 1
    assert registry.verify_log().ok


def test_init_twice_is_refused(registry: Registry, db_url: str) -> None:
    with pytest.raises(DuplicateError):
        Registry.init(registry.home.root, db_url)


def test_open_reads_home_config(registry: Registry, clock: Clock) -> None:
    registry.add_subject("Ada")
    reopened = Registry.open(registry.home.root, clock=clock)
    try:
        assert [s.display_name for s in reopened.list_subjects()] == ["Ada"]
        assert reopened.key_id == registry.key_id
    finally:
        reopened.close()


def test_subject_lookup_by_id_and_unique_name(registry: Registry) -> None:
    ada = registry.add_subject("Ada Lovelace", ["Ada", " Countess ", ""])
    assert ada.aliases == ["Ada", "Countess"]
    assert registry.get_subject(ada.id).id == ada.id
    assert registry.get_subject("Ada Lovelace").id == ada.id
    registry.add_subject("Ada Lovelace")
    with pytest.raises(AmbiguousNameError):
        registry.get_subject("Ada Lovelace")
    with pytest.raises(NotFoundError):
        registry.get_subject("nobody")


def test_grantee_api_key_is_hashed_and_authenticates(registry: Registry) -> None:
    grantee, api_key = registry.add_grantee("Studio")
    assert api_key not in grantee.api_key_sha256
    assert registry.authenticate_grantee(api_key).id == grantee.id
    with pytest.raises(SignatureError):
        registry.authenticate_grantee(api_key + "x")
    with pytest.raises(DuplicateError):
        registry.add_grantee("Studio")


def test_api_key_map_gains_grantees_added_by_another_process(
    registry: Registry, clock: Clock
) -> None:
    """The signed key-hash map is built on first use; a grantee another process adds
    afterwards authenticates here at once (a miss follows the log), and an unknown
    key is still refused after the map was rebuilt."""
    first, first_key = registry.add_grantee("Studio")
    assert registry.authenticate_grantee(first_key).id == first.id  # the map is built
    other = Registry.open(registry.home.root, registry.db.url, clock=clock)
    try:
        late, late_key = other.add_grantee("Late Studio")
    finally:
        other.close()
    assert registry.consent.grantee_by_key_sha256(late.api_key_sha256) is None  # not followed
    assert registry.authenticate_grantee(late_key).id == late.id
    assert registry.authenticate_grantee(first_key).id == first.id
    with pytest.raises(SignatureError):
        registry.authenticate_grantee(late_key + "x")
    assert registry.consent.grantee_by_key_sha256(late.api_key_sha256) is not None


def test_grant_fields_and_lookup_by_names(registry: Registry) -> None:
    ada = registry.add_subject("Ada")
    registry.add_grantee("Studio")
    prior = "ab" * 32
    grant = registry.grant(
        "Ada",
        "Studio",
        ["restore", "generate", "restore"],
        priors=[prior.upper()],
        not_after=T0 + timedelta(days=30),
        constraints={"max_outputs": 3},
        evidence_sha256="cd" * 32,
    )
    stored = registry.get_grant(grant.id)
    assert stored.subject_id == ada.id
    assert stored.purposes == ["generate", "restore"]
    assert stored.priors == [prior]
    assert stored.constraints == {"max_outputs": 3}
    assert stored.not_before == "2026-06-01T12:00:00Z"
    assert stored.not_after == "2026-07-01T12:00:00Z"
    assert stored.issuer_key_id == registry.key_id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"purposes": []}, "at least one purpose"),
        ({"purposes": ["impersonate"]}, "unknown purpose"),
        ({"priors": ["nothex"]}, "SHA-256"),
        ({"not_after": T0 - timedelta(days=1)}, "end before it starts"),
    ],
)
def test_bad_grants_are_input_errors_and_write_nothing(
    registry: Registry, kwargs: dict[str, object], message: str
) -> None:
    registry.add_subject("Ada")
    registry.add_grantee("Studio")
    size = registry.log_size()
    args: dict[str, object] = {"purposes": ["restore"]} | kwargs
    purposes = args.pop("purposes")
    with pytest.raises(InputError, match=message):
        registry.grant("Ada", "Studio", purposes, **args)  # type: ignore[arg-type]
    assert registry.log_size() == size


def test_grant_lifecycle_statuses(registry: Registry, clock: Clock) -> None:
    registry.add_subject("Ada")
    registry.add_grantee("Studio")
    later = registry.grant("Ada", "Studio", ["train"], not_before=T0 + timedelta(days=1))
    window = registry.grant("Ada", "Studio", ["restore"], not_after=T0 + timedelta(hours=1))
    with pytest.raises(GrantNotYetValidError):
        registry.check_grant(later.id)
    assert registry.check_grant(window.id).id == window.id
    clock.now = T0 + timedelta(hours=1)
    with pytest.raises(GrantExpiredError):
        registry.check_grant(window.id)
    assert registry.check_grant(later.id, at=T0 + timedelta(days=2)).id == later.id
    active = registry.list_grants(active_only=True, at=T0 + timedelta(days=2))
    assert [g.id for g, _ in active] == [later.id]
    registry.revoke(later.id, "withdrawn")
    with pytest.raises(GrantRevokedError):
        registry.check_grant(later.id, at=T0 + timedelta(days=2))
    with pytest.raises(DuplicateError):
        registry.revoke(later.id, "again")
    statuses = {g.id: s for g, s in registry.list_grants(at=T0 + timedelta(days=2))}
    assert statuses == {later.id: "revoked", window.id: "expired"}


def test_list_grants_filters(registry: Registry) -> None:
    registry.add_subject("Ada")
    registry.add_subject("Bob")
    registry.add_grantee("Studio")
    registry.add_grantee("Lab")
    a = registry.grant("Ada", "Studio", ["restore"])
    b = registry.grant("Bob", "Lab", ["restore"])
    assert [g.id for g, _ in registry.list_grants(subject="Ada")] == [a.id]
    assert [g.id for g, _ in registry.list_grants(grantee="Lab")] == [b.id]


def test_subject_key_must_cosign_grants_and_revocations(registry: Registry, tmp_path: Path) -> None:
    subject_key, other = SigningKey.generate(), SigningKey.generate()
    subject_key.save_public(tmp_path / "s.pub")
    registry.add_subject("Ada", public_key=load_public_key(tmp_path / "s.pub"))
    registry.add_grantee("Studio")
    size = registry.log_size()
    with pytest.raises(SignatureError, match="needs their signature"):
        registry.grant("Ada", "Studio", ["restore"])
    with pytest.raises(SignatureError, match="not the key of subject"):
        registry.grant("Ada", "Studio", ["restore"], subject_key=other)
    assert registry.log_size() == size
    grant = registry.grant("Ada", "Studio", ["restore"], subject_key=subject_key)
    assert grant.subject_key_id == subject_key.key_id
    with pytest.raises(SignatureError):
        registry.revoke(grant.id, "no", subject_key=other)
    registry.revoke(grant.id, "no", subject_key=subject_key)
    registry.checkpoint()
    assert registry.verify_log().ok


def test_prior_registration_hashes_the_file(registry: Registry, tmp_path: Path) -> None:
    registry.add_subject("Ada")
    blob = tmp_path / "lora.safetensors"
    blob.write_bytes(save({"lora_up": np.zeros((16, 10), np.float32)}))  # a real safetensors file
    prior = registry.add_prior("Ada", "lora", "sd15", blob)
    assert prior.size == blob.stat().st_size
    assert len(prior.sha256) == 64
    assert [p.id for p in registry.list_priors("Ada")] == [prior.id]
    with pytest.raises(InputError, match="unknown prior kind"):
        registry.add_prior("Ada", "hypernetwork", "sd15", blob)
    with pytest.raises(InputError):
        registry.add_prior("Ada", "lora", "sd15", tmp_path / "missing")


def test_every_change_is_one_log_entry_and_verifies(registry: Registry) -> None:
    registry.add_subject("Ada")
    registry.add_grantee("Studio")
    grant = registry.grant("Ada", "Studio", ["restore"])
    registry.revoke(grant.id, "done")
    kinds = [registry.entry(i).kind for i in range(registry.log_size())]
    assert kinds == ["key", "subject", "grantee", "grant", "revocation"]
    leaf = json.loads(registry.entry(3).leaf_json)
    assert leaf["id"] == grant.id
    registry.checkpoint()
    report = registry.verify_log()
    assert report.ok, report.problems
    assert report.size == 5


def test_key_rotation_keeps_old_entries_verifiable(registry: Registry) -> None:
    registry.add_subject("Ada")
    old_key_id = registry.key_id
    old_note = registry.latest_checkpoint()
    new = registry.rotate_key()
    assert registry.key_id == new.key_id != old_key_id
    retired = {k.key_id: k for k in registry.operator_keys()}[old_key_id]
    assert retired.retired_at_index == new.log_index
    registry.add_grantee("Studio")
    registry.checkpoint()
    assert registry.verify_log().ok
    # the reopened registry signs with the new key file
    reopened = Registry.open(registry.home.root, registry.db.url)
    try:
        assert reopened.key_id == new.key_id
    finally:
        reopened.close()
    # a proof across the rotation verifies with both public keys
    keys = [SigningKey.load(registry.home.operator_key).public_key]
    old_public = public_key_from_hex(retired.public_key)
    old, _ = cp.parse_checkpoint(old_note)
    bundle = {
        "old_checkpoint": old_note,
        "new_checkpoint": registry.latest_checkpoint(),
        "hashes": [h.hex() for h in registry.consistency_proof(old.tree_size)],
    }
    verify_consistency_bundle(bundle, [old_public, *keys])


def test_retired_key_cannot_sign(registry: Registry, tmp_path: Path) -> None:
    old = SigningKey.load(registry.home.operator_key)
    registry.rotate_key()
    stale = Registry(registry.home, registry.db, old, registry._clock)
    with pytest.raises(RetiredKeyError):
        stale.add_subject("Mallory")
    with pytest.raises(RetiredKeyError):
        stale.checkpoint()


def test_inclusion_proofs_verify_offline_for_every_entry(registry: Registry) -> None:
    for name in ["A", "B", "C", "D", "E"]:
        registry.add_subject(name)
    registry.checkpoint()
    public = SigningKey.load(registry.home.operator_key).public_key
    for index in range(registry.log_size()):
        bundle = registry.inclusion_proof(index).to_json()
        checkpoint = verify_inclusion_bundle(bundle, [public])
        assert checkpoint.tree_size == 6
    with pytest.raises(NotFoundError):
        registry.inclusion_proof(6)


def test_consistency_proof_between_checkpoints(registry: Registry) -> None:
    first = registry.latest_checkpoint()
    for name in ["A", "B", "C"]:
        registry.add_subject(name)
    second = registry.checkpoint()
    old, _ = cp.parse_checkpoint(first)
    new, _ = cp.parse_checkpoint(second)
    bundle = {
        "old_checkpoint": first,
        "new_checkpoint": second,
        "hashes": [h.hex() for h in registry.consistency_proof(old.tree_size, new.tree_size)],
    }
    public = SigningKey.load(registry.home.operator_key).public_key
    older, newer = verify_consistency_bundle(bundle, [public])
    assert (older.tree_size, newer.tree_size) == (1, 4)
