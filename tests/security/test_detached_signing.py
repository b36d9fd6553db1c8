"""Consent signed on the subject's own device (consentry.registry.detached): every
refusal of a prepared statement, each next to the honest flow that is accepted."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from consentry.errors import (
    DuplicateError,
    InputError,
    NonCanonicalError,
    NotFoundError,
    SignatureError,
    StatementExpiredError,
)
from consentry.registry.detached import (
    describe,
    prepare_grant,
    prepare_key_change,
    prepare_revocation,
    sign_prepared,
    submit,
)
from consentry.registry.models import Grant, Revocation, SubjectKeyChange
from consentry.registry.signing import Envelope, SigningKey
from consentry.registry.store import Registry
from tests.support.clock import T0, Clock


@dataclass
class Parties:
    registry: Registry
    clock: Clock
    ada_key: SigningKey
    ada: str
    studio: str


@pytest.fixture
def parties(tmp_path: Path) -> Iterator[Parties]:
    clock = Clock()
    registry = Registry.init(tmp_path / "home", f"sqlite:///{tmp_path}/r.db", clock=clock)
    key = SigningKey.generate()
    ada = registry.add_subject("Ada", public_key=key.public_key)
    studio, _api_key = registry.add_grantee("Studio")
    yield Parties(registry, clock, key, ada.id, studio.id)
    registry.close()


def _prepared(p: Parties, **terms: object) -> Envelope:
    return prepare_grant(p.registry, p.ada, p.studio, ["restore"], **terms)  # type: ignore[arg-type]


def _over_the_wire(envelope: Envelope) -> Envelope:
    """What travels between the devices: the DSSE JSON text."""
    return Envelope.loads(envelope.dumps())


def test_the_honest_flow_grants_and_revokes_with_the_subjects_own_key(p: Parties) -> None:
    prepared = _over_the_wire(_prepared(p, not_after=T0 + timedelta(days=90)))
    assert prepared.signatures == ()
    words = "\n".join(describe(prepared))
    assert "Studio" in words or p.studio in words
    assert "restore" in words and "2026-08-30" in words
    signed = _over_the_wire(sign_prepared(prepared, p.ada_key, T0 + timedelta(hours=1)))
    grant = submit(p.registry, signed)
    assert isinstance(grant, Grant) and grant.log_index > 0
    assert p.registry.check_grant(grant.id).subject_key_id == p.ada_key.key_id
    revocation = submit(
        p.registry,
        sign_prepared(prepare_revocation(p.registry, grant.id, "changed my mind"), p.ada_key, T0),
    )
    assert isinstance(revocation, Revocation) and revocation.log_index > grant.log_index
    assert p.registry.grant_status(grant, revocation, T0) == "revoked"
    p.registry.checkpoint()
    assert p.registry.verify_log().ok  # the log checker accepts both co-signed entries


@pytest.fixture
def p(parties: Parties) -> Parties:
    return parties


@pytest.mark.attack("detached grant changed after signing")
def test_a_statement_changed_after_signing_is_refused(p: Parties) -> None:
    signed = sign_prepared(_prepared(p), p.ada_key, T0)
    statement = json.loads(signed.payload)
    statement["purposes"] = ["generate", "restore"]  # widened after Ada signed
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    forged = Envelope(signed.payload_type, payload, signed.signatures)
    size = p.registry.log_size()
    with pytest.raises(SignatureError, match="bad signature"):
        submit(p.registry, forged)
    assert p.registry.log_size() == size
    assert submit(p.registry, signed).log_index == size  # the signed one is accepted


@pytest.mark.attack("detached grant signed by another key")
def test_a_statement_signed_by_another_key_is_refused(p: Parties) -> None:
    mallory = SigningKey.generate()
    prepared = _prepared(p)
    with pytest.raises(SignatureError, match="this statement is for key"):
        sign_prepared(prepared, mallory, T0)
    # signing around the check: mallory's signature under Ada's key id
    theirs = prepared.countersign(mallory)
    relabelled = Envelope(
        theirs.payload_type,
        theirs.payload,
        tuple(type(s)(p.ada_key.key_id, s.signature) for s in theirs.signatures),
    )
    for forged in (theirs, relabelled):
        with pytest.raises(SignatureError):
            submit(p.registry, forged)
    assert isinstance(submit(p.registry, sign_prepared(prepared, p.ada_key, T0)), Grant)


@pytest.mark.attack("detached grant replayed after revocation")
def test_a_grant_replayed_after_its_revocation_is_refused(p: Parties) -> None:
    signed = sign_prepared(_prepared(p), p.ada_key, T0)
    grant = submit(p.registry, signed)
    revoke = sign_prepared(prepare_revocation(p.registry, grant.id, "no more"), p.ada_key, T0)
    submit(p.registry, revoke)
    size = p.registry.log_size()
    with pytest.raises(DuplicateError, match="replay"):
        submit(p.registry, signed)
    with pytest.raises(DuplicateError):
        submit(p.registry, revoke)
    assert p.registry.log_size() == size
    assert p.registry.grant_status(grant, p.registry.revocation_of(grant.id), T0) == "revoked"
    # a fresh grant, prepared and signed again, is accepted
    assert isinstance(submit(p.registry, sign_prepared(_prepared(p), p.ada_key, T0)), Grant)


@pytest.mark.attack("keyless revocation prepare probes a grant id")
def test_a_grant_id_alone_reveals_nothing_on_the_keyless_route(p: Parties) -> None:
    grant = submit(p.registry, sign_prepared(_prepared(p), p.ada_key, T0))
    bob = p.registry.add_subject("Bob", public_key=SigningKey.generate().public_key)
    messages = []
    for grant_id, subject_id in ((grant.id, bob.id), ("gr_unknown", bob.id)):
        with pytest.raises(NotFoundError) as caught:
            prepare_revocation(p.registry, grant_id, "probe", subject_id=subject_id)
        messages.append(str(caught.value).replace(grant_id, "GRANT"))
    assert messages[0] == messages[1]  # another's grant reads as an unknown one
    assert p.ada not in messages[0] and p.ada_key.key_id not in messages[0]
    submit(p.registry, sign_prepared(prepare_revocation(p.registry, grant.id, "x"), p.ada_key, T0))
    with pytest.raises(NotFoundError):  # nor whether it is revoked
        prepare_revocation(p.registry, grant.id, "probe", subject_id=bob.id)
    own = prepare_revocation(p.registry, _fresh_grant(p), "mine", subject_id=p.ada)
    assert own.statement["type"] == "consentry.revocation"


def _fresh_grant(p: Parties) -> str:
    return submit(p.registry, sign_prepared(_prepared(p), p.ada_key, T0)).id


@pytest.mark.attack("detached grant signed past its sign-by time")
def test_a_statement_past_its_sign_by_time_is_refused(p: Parties) -> None:
    prepared = _prepared(p, sign_within=timedelta(days=2))
    late = T0 + timedelta(days=2, seconds=1)
    with pytest.raises(StatementExpiredError):
        sign_prepared(prepared, p.ada_key, late)
    signed_in_time = sign_prepared(prepared, p.ada_key, T0 + timedelta(days=1))
    p.clock.now = late
    with pytest.raises(StatementExpiredError):
        submit(p.registry, signed_in_time)
    p.clock.now = T0 + timedelta(days=1, hours=23)
    assert isinstance(submit(p.registry, signed_in_time), Grant)


@pytest.mark.attack("detached statement with a far sign-by time")
def test_a_self_made_statement_with_unbounded_times_is_refused(p: Parties) -> None:
    """Someone writes the statement themselves, with a sign-by years away."""
    prepared = _prepared(p)
    statement = json.loads(prepared.payload)
    statement["sign_by"] = "2036-01-01T00:00:00Z"
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    crafted = sign_prepared(Envelope(prepared.payload_type, payload, ()), p.ada_key, T0)
    with pytest.raises(InputError, match="out of bounds"):
        submit(p.registry, crafted)
    assert isinstance(submit(p.registry, sign_prepared(prepared, p.ada_key, T0)), Grant)


@pytest.mark.attack("detached statement re-serialised")
def test_a_non_canonical_payload_is_refused(p: Parties) -> None:
    prepared = _prepared(p)
    spaced = json.dumps(json.loads(prepared.payload), indent=1).encode()
    data = json.loads(prepared.dumps())
    data["payload"] = base64.b64encode(spaced).decode()
    with pytest.raises(NonCanonicalError):
        submit(p.registry, sign_prepared(Envelope.from_json(data), p.ada_key, T0))
    assert isinstance(submit(p.registry, sign_prepared(prepared, p.ada_key, T0)), Grant)


@pytest.mark.attack("detached statement names a retired operator key")
def test_a_statement_prepared_before_a_key_rotation_is_refused(p: Parties) -> None:
    signed = sign_prepared(_prepared(p), p.ada_key, T0)
    p.registry.rotate_key()
    with pytest.raises(SignatureError, match="not the key signing now"):
        submit(p.registry, signed)
    assert isinstance(submit(p.registry, sign_prepared(_prepared(p), p.ada_key, T0)), Grant)


def test_subjects_without_a_key_are_told_to_grant_in_place(tmp_path: Path) -> None:
    registry = Registry.init(tmp_path / "h", f"sqlite:///{tmp_path}/r.db")
    try:
        bob = registry.add_subject("Bob")
        registry.add_grantee("Studio")
        with pytest.raises(InputError, match="holds no key") as caught:
            prepare_grant(registry, bob.id, "Studio", ["restore"])
        assert caught.value.hint == "grant or revoke without --prepare"
    finally:
        registry.close()


# ------------------------------------------------------------------ key changes
def _change_key(p: Parties, new: SigningKey, **how: object) -> SubjectKeyChange:
    prepared = prepare_key_change(p.registry, p.ada, new.public_key, **how)  # type: ignore[arg-type]
    signed = sign_prepared(prepared, new, T0)
    if not how.get("by_operator"):
        signed = sign_prepared(signed, p.ada_key, T0)
    row = submit(p.registry, signed)
    assert isinstance(row, SubjectKeyChange)
    return row


def test_a_subject_changes_their_key_and_only_the_new_one_signs_after(p: Parties) -> None:
    new = SigningKey.generate()
    change = _change_key(p, new)
    assert change.old_key_id == p.ada_key.key_id and change.new_key_id == new.key_id
    assert "replaced by" in "\n".join(describe(prepare_key_change(p.registry, p.ada,
        SigningKey.generate().public_key)))  # fmt: skip
    grant = submit(p.registry, sign_prepared(_prepared(p), new, T0))
    assert isinstance(grant, Grant) and grant.subject_key_id == new.key_id
    assert p.registry.grant("Ada", "Studio", ["generate"], subject_key=new).subject_key_id == (
        new.key_id
    )
    p.registry.checkpoint()
    assert p.registry.verify_log().ok


@pytest.mark.attack("old subject key signs after a key change")
def test_the_old_key_signs_nothing_after_a_key_change(p: Parties) -> None:
    old_prepared = _prepared(p)  # prepared (for the old key) before the change
    old_signed = sign_prepared(old_prepared, p.ada_key, T0)
    _change_key(p, SigningKey.generate())
    size = p.registry.log_size()
    with pytest.raises(SignatureError, match="current key"):
        submit(p.registry, old_signed)
    with pytest.raises(SignatureError, match="not the key of subject"):
        p.registry.grant("Ada", "Studio", ["restore"], subject_key=p.ada_key)
    assert p.registry.log_size() == size


@pytest.mark.attack("subject key change without the old key")
def test_a_key_change_by_the_subject_needs_the_old_keys_signature(p: Parties) -> None:
    thief = SigningKey.generate()
    prepared = prepare_key_change(p.registry, p.ada, thief.public_key)
    only_new = sign_prepared(prepared, thief, T0)
    with pytest.raises(SignatureError, match="missing required signature"):
        submit(p.registry, only_new)
    assert p.registry.consent.subject_key(p.ada) == p.ada_key.public_hex
    assert isinstance(submit(p.registry, sign_prepared(only_new, p.ada_key, T0)), SubjectKeyChange)


@pytest.mark.attack("operator key change without a reason")
def test_a_key_change_by_the_operator_needs_a_reason_and_the_new_key(p: Parties) -> None:
    new = SigningKey.generate()
    with pytest.raises(InputError, match="needs a reason"):
        prepare_key_change(p.registry, p.ada, new.public_key, by_operator=True)
    prepared = prepare_key_change(p.registry, p.ada, new.public_key, by_operator=True,
                                  reason="phone lost")  # fmt: skip
    with pytest.raises(SignatureError, match="missing required signature"):
        submit(p.registry, prepared)  # no proof the subject holds the new key
    change = submit(p.registry, sign_prepared(prepared, new, T0))
    assert isinstance(change, SubjectKeyChange) and change.authority == "operator"
    assert change.reason == "phone lost"
    p.registry.checkpoint()
    assert p.registry.verify_log().ok
