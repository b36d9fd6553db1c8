"""Forged signatures and signatures by keys the registry does not know."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest

from consentry.errors import SignatureError, UnknownKeyError
from consentry.registry.signing import Envelope, EnvelopeSignature, SigningKey
from tests.security.conftest import (
    World,
    append_leaf,
    assert_ok,
    assert_reported,
    envelope_at,
    flip_b64_byte,
    forged_grant,
    forged_revocation,
    rewrite_leaf,
    sign_row,
)

# -- 1. a flipped signature byte ---------------------------------------------------


@pytest.mark.parametrize("position", [0, 31, 63])
def test_flipped_signature_byte_fails_envelope_verify(sqlite_world: World, position: int) -> None:
    w = sqlite_world
    envelope = envelope_at(w.registry, w.index_of(w.grant_a.id))
    trusted = {w.operator.key_id: w.operator.public_key, w.alice_key.key_id: w.alice_key.public_key}
    required = [w.operator.key_id, w.alice_key.key_id]
    envelope.verify(trusted, required)  # honest envelope verifies

    first = envelope.signatures[0]
    assert first.key_id == w.operator.key_id
    flipped = bytearray(first.signature)
    flipped[position] ^= 0x01
    forged = replace(
        envelope, signatures=(EnvelopeSignature(first.key_id, bytes(flipped)),
                              *envelope.signatures[1:])
    )
    with pytest.raises(SignatureError, match="bad signature by key") as info:
        forged.verify(trusted, required)
    assert type(info.value) is SignatureError


def test_flipped_payload_byte_fails_envelope_verify(sqlite_world: World) -> None:
    """Same signature, one letter of the (still canonical) payload changed."""
    w = sqlite_world
    envelope = envelope_at(w.registry, w.index_of(w.grant_a.id))
    trusted = {w.operator.key_id: w.operator.public_key, w.alice_key.key_id: w.alice_key.public_key}
    envelope.verify(trusted, [w.operator.key_id])
    payload = envelope.payload.replace(b'"restore"', b'"restorf"')
    assert payload != envelope.payload
    with pytest.raises(SignatureError, match="bad signature"):
        replace(envelope, payload=payload).verify(trusted, [w.operator.key_id])


@pytest.mark.parametrize("signer", ["operator", "subject"])
def test_log_leaf_with_altered_signature_is_reported(world: World, signer: str) -> None:
    w = world
    assert_ok(w.registry.verify_log())
    index = w.index_of(w.grant_a.id)
    key_id = w.operator.key_id if signer == "operator" else w.alice_key.key_id

    def flip(leaf: dict[str, Any]) -> None:
        for sig in leaf["envelope"]["signatures"]:
            if sig["keyid"] == key_id:
                sig["sig"] = flip_b64_byte(sig["sig"], 7)
                return
        raise AssertionError(f"no signature by {key_id}")

    rewrite_leaf(w.registry, index, flip)
    report = w.registry.verify_log()
    assert_reported(report, w.grant_a.id, f"grant {w.grant_a.id} (log index {index})",
                    "bad signature")
    # the recomputed leaf hash hides nothing from the checkpoint either
    assert any("root differs" in p for p in report.problems), report.problems


# -- 2. a grant signed by an unknown key -------------------------------------------


def test_envelope_by_unknown_key_raises_unknown_key_error(world: World) -> None:
    w = world
    rogue = SigningKey.generate()
    row = forged_grant(w, subject=w.alice, issuer_key_id=rogue.key_id,
                       subject_key_id=w.alice_key.key_id)
    envelope = sign_row(row, [rogue, w.alice_key])
    envelope.verify({rogue.key_id: rogue.public_key}, [rogue.key_id])  # well formed
    with pytest.raises(UnknownKeyError, match=rogue.key_id[:16]):
        envelope.verify(w.registry.trusted_keys(), [rogue.key_id])


def test_grant_signed_by_unknown_key_is_reported(world: World) -> None:
    """A rogue operator key, co-signed by the real subject: only the operator is missing."""
    w = world
    assert_ok(w.registry.verify_log())
    rogue = SigningKey.generate()
    row = forged_grant(w, subject=w.alice, issuer_key_id=rogue.key_id,
                       subject_key_id=w.alice_key.key_id)
    index = append_leaf(w.registry, "grant", row.id, sign_row(row, [rogue, w.alice_key]),
                        "grants", row)
    assert w.registry.check_grant(row.id).id == row.id  # the runtime trusts the table
    assert_reported(w.registry.verify_log(), row.id, f"(log index {index})",
                    "not signed by the active operator key")


def test_grant_signed_by_unknown_key_under_operator_key_id_is_reported(world: World) -> None:
    """The rogue signature is labelled with the real operator's key id."""
    w = world
    rogue = SigningKey.generate()
    row = forged_grant(w, subject=w.alice, issuer_key_id=w.operator.key_id,
                       subject_key_id=w.alice_key.key_id)
    envelope = sign_row(row, [rogue, w.alice_key])
    envelope = replace(
        envelope,
        signatures=(EnvelopeSignature(w.operator.key_id, envelope.signatures[0].signature),
                    envelope.signatures[1]),
    )
    index = append_leaf(w.registry, "grant", row.id, envelope, "grants", row)
    assert_reported(w.registry.verify_log(), row.id, f"(log index {index})", "bad signature")


def test_envelope_signature_json_roundtrip_keeps_forgery_detectable(world: World) -> None:
    """A signature swapped through the JSON form (as stored in a leaf) still fails."""
    w = world
    envelope = envelope_at(w.registry, w.index_of(w.grant_r.id))
    data = envelope.to_json()
    other = envelope_at(w.registry, w.index_of(w.grant_a.id)).to_json()
    data["signatures"][0]["sig"] = other["signatures"][0]["sig"]  # a valid sig, other payload
    forged = Envelope.from_json(data)
    assert base64.b64decode(data["signatures"][0]["sig"]) == forged.signatures[0].signature
    with pytest.raises(SignatureError, match="bad signature"):
        forged.verify(w.registry.trusted_keys(), [w.operator.key_id])


def test_half_checked_envelope_does_not_derail_later_reports(world: World) -> None:
    """Entry 8 passes the operator's signature but lacks the subject's; entry 9 carries a
    forged operator signature. Each must be reported under its own record id: the first
    failure must neither crash ``verify_log`` nor shift the signature results of the
    entries after it onto other records (or drop them)."""
    w = world
    revocation = forged_revocation(w, w.grant_a, issuer_key_id=w.operator.key_id,
                                   subject_key_id=w.alice_key.key_id)
    first = append_leaf(w.registry, "revocation", revocation.id,
                        sign_row(revocation, [w.operator]), "revocations", revocation)
    rogue = SigningKey.generate()
    grant = forged_grant(w, subject=w.alice, issuer_key_id=w.operator.key_id,
                         subject_key_id=w.alice_key.key_id)
    envelope = sign_row(grant, [rogue, w.alice_key])
    envelope = replace(
        envelope,
        signatures=(EnvelopeSignature(w.operator.key_id, envelope.signatures[0].signature),
                    envelope.signatures[1]),
    )
    second = append_leaf(w.registry, "grant", grant.id, envelope, "grants", grant)
    report = w.registry.verify_log()
    assert_reported(report, revocation.id, f"revocation {revocation.id} (log index {first})",
                    f"missing required signature by key {w.alice_key.key_id[:16]}")
    assert_reported(report, grant.id, f"grant {grant.id} (log index {second})", "bad signature")
    wrongly_blamed = [p for p in report.problems if "bad signature" in p and grant.id not in p]
    assert not wrongly_blamed, wrongly_blamed
