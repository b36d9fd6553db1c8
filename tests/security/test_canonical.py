"""Non-canonical JSON spellings of a signed grant are refused, even when re-signed."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from consentry.errors import NonCanonicalError
from consentry.registry.signing import (
    Envelope,
    EnvelopeSignature,
    SigningKey,
    _pae,
    parse_canonical,
)
from tests.security.conftest import (
    World,
    assert_ok,
    assert_reported,
    envelope_at,
    rewrite_leaf,
    write_leaf_bytes,
)


def _whitespace(payload: bytes) -> bytes:
    return json.dumps(json.loads(payload), sort_keys=True, indent=1).encode()


def _reordered(payload: bytes) -> bytes:
    items = list(json.loads(payload).items())
    return json.dumps(dict(reversed(items)), separators=(",", ":"), ensure_ascii=False).encode()


def _duplicate_key(payload: bytes) -> bytes:
    statement = json.loads(payload)
    # the same key twice with the same value: any last-wins parser sees equal content
    return b'{"id":' + json.dumps(statement["id"]).encode() + b"," + payload[1:]


def _float_version(payload: bytes) -> bytes:
    assert payload.count(b'"version":1') == 1
    return payload.replace(b'"version":1', b'"version":1.0')


def _unicode_escape(payload: bytes) -> bytes:
    assert payload.count(b'"restore"') == 1
    return payload.replace(b'"restore"', b'"\\u0072estore"')


def _trailing_newline(payload: bytes) -> bytes:
    return payload + b"\n"


VARIANTS: dict[str, Callable[[bytes], bytes]] = {
    "whitespace": _whitespace,
    "reordered-keys": _reordered,
    "duplicate-key": _duplicate_key,
    "float-1.0": _float_version,
    "unicode-escape": _unicode_escape,
    "trailing-newline": _trailing_newline,
}


def resigned(envelope: Envelope, payload: bytes, keys: list[SigningKey]) -> Envelope:
    """``payload`` with valid signatures over its exact bytes (as a signer would make)."""
    message = _pae(envelope.payload_type, payload)
    return Envelope(
        envelope.payload_type,
        payload,
        tuple(EnvelopeSignature(k.key_id, k.sign(message)) for k in keys),
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_noncanonical_variant_of_signed_grant_is_refused(sqlite_world: World, variant: str) -> None:
    w = sqlite_world
    envelope = envelope_at(w.registry, w.index_of(w.grant_a.id))
    keys = [w.operator, w.alice_key]
    trusted = {k.key_id: k.public_key for k in keys}
    required = [k.key_id for k in keys]
    envelope.verify(trusted, required)  # the canonical original verifies

    payload = VARIANTS[variant](envelope.payload)
    assert payload != envelope.payload
    assert json.loads(payload) == json.loads(envelope.payload)  # semantically equal

    for forged in (replace(envelope, payload=payload), resigned(envelope, payload, keys)):
        with pytest.raises(NonCanonicalError):
            forged.verify(trusted, required)
        with pytest.raises(NonCanonicalError):
            _ = forged.statement


def test_resigning_the_canonical_bytes_is_accepted(sqlite_world: World) -> None:
    """Control for the test above: the re-signing helper makes valid envelopes."""
    w = sqlite_world
    envelope = envelope_at(w.registry, w.index_of(w.grant_a.id))
    keys = [w.operator, w.alice_key]
    resigned(envelope, envelope.payload, keys).verify(
        {k.key_id: k.public_key for k in keys}, [k.key_id for k in keys]
    )


@pytest.mark.parametrize("variant", ["whitespace", "float-1.0"])
def test_noncanonical_payload_in_log_is_reported(world: World, variant: str) -> None:
    """The grant's leaf carries a re-signed, semantically equal, non-canonical payload."""
    w = world
    assert_ok(w.registry.verify_log())
    index = w.index_of(w.grant_a.id)
    envelope = envelope_at(w.registry, index)
    forged = resigned(envelope, VARIANTS[variant](envelope.payload), [w.operator, w.alice_key])

    def swap(leaf: dict[str, Any]) -> None:
        leaf["envelope"] = forged.to_json()

    rewrite_leaf(w.registry, index, swap)
    assert_reported(w.registry.verify_log(), w.grant_a.id, f"(log index {index})", "canonical")


def test_noncanonical_leaf_json_in_log_is_reported(world: World) -> None:
    """The leaf itself (not the payload) re-serialised with whitespace."""
    w = world
    index = w.index_of(w.grant_a.id)
    leaf = json.loads(w.registry.entry(index).leaf_json)
    write_leaf_bytes(w.registry, index, json.dumps(leaf, sort_keys=True, indent=2).encode())
    assert_reported(w.registry.verify_log(), w.grant_a.id, f"(log index {index})", "canonical")


OUT_OF_DOMAIN = {
    "integer-beyond-2**53": b'{"a":9007199254740993,"type":"consentry.grant","version":1}',
    "float-overflow": b'{"a":1e400,"type":"consentry.grant","version":1}',
    "nan": b'{"a":NaN,"type":"consentry.grant","version":1}',
    "lone-surrogate": b'{"a":"\\ud800","type":"consentry.grant","version":1}',
}


@pytest.mark.parametrize("case", OUT_OF_DOMAIN)
def test_json_outside_the_jcs_domain_is_noncanonical(case: str) -> None:
    """JSON that RFC 8785 cannot express at all is refused as non-canonical, with the
    registry's own error (not a third-party ValueError that escapes every handler)."""
    payload = OUT_OF_DOMAIN[case]
    json.loads(payload)  # Python's parser accepts it
    with pytest.raises(NonCanonicalError):
        parse_canonical(payload)
    key = SigningKey.generate()
    ptype = "application/vnd.consentry.consentry.grant+json; version=1"
    envelope = Envelope(ptype, payload, (EnvelopeSignature(key.key_id, key.sign(
        _pae(ptype, payload))),))
    with pytest.raises(NonCanonicalError):
        envelope.verify({key.key_id: key.public_key}, [key.key_id])


def test_leaf_with_out_of_domain_number_is_reported_not_crashing(world: World) -> None:
    """A leaf whose JSON holds an integer beyond 2**53: ``verify_log`` must name the
    record (like any other tampered leaf) instead of raising out of the whole run."""
    w = world
    index = w.index_of(w.grant_a.id)
    text = w.registry.entry(index).leaf_json
    assert text.endswith(',"version":1}')
    write_leaf_bytes(w.registry, index,
                     (text[: -len("1}")] + "9007199254740993}").encode())
    assert_reported(w.registry.verify_log(), w.grant_a.id, f"(log index {index})")
