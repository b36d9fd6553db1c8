"""Keys, key ids, canonical JSON and envelopes."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.errors import (
    InputError,
    NonCanonicalError,
    SignatureError,
    UnknownKeyError,
)
from consentry.registry.signing import (
    Envelope,
    PendingSignature,
    SignatureBatcher,
    SigningKey,
    canonical_json,
    key_id_of,
    load_public_key,
    parse_canonical,
)

STATEMENT = {"type": "consentry.grant", "version": 1, "id": "grt_1", "purposes": ["restore"]}


def test_key_id_is_sha256_of_raw_public_key() -> None:
    key = SigningKey.generate()
    raw = key.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key.key_id == hashlib.sha256(raw).hexdigest()
    assert key_id_of(key.public_key) == key.key_id


def test_private_key_file_is_0600_and_never_overwritten(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "k.pem"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKey.load(path).key_id == key.key_id
    with pytest.raises(FileExistsError):
        SigningKey.generate().save(path)


def test_public_key_loads_from_pem_or_private_file(tmp_path: Path) -> None:
    key = SigningKey.generate()
    key.save(tmp_path / "k")
    key.save_public(tmp_path / "k.pub")
    assert key_id_of(load_public_key(tmp_path / "k.pub")) == key.key_id
    assert key_id_of(load_public_key(tmp_path / "k")) == key.key_id


def test_garbage_key_file_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "bad").write_text("not a key")
    with pytest.raises(InputError):
        SigningKey.load(tmp_path / "bad")
    with pytest.raises(InputError):
        load_public_key(tmp_path / "bad")
    with pytest.raises(InputError):
        SigningKey.load(tmp_path / "missing")


def test_canonical_json_sorts_keys_and_strips_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [1.0, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()


@pytest.mark.parametrize(
    "text",
    [
        b'{"b":1, "a":2}',
        b'{"b":1,"a":2}',
        b'{"a":1,"a":1}',
        b'{"a":1.0}',
        b'{"a":"\\u0041"}',
        b"[1]",
        b"\xff",
    ],
)
def test_parse_canonical_rejects_every_other_spelling(text: bytes) -> None:
    with pytest.raises(NonCanonicalError):
        parse_canonical(text)


def test_envelope_round_trip_and_verify() -> None:
    operator, subject = SigningKey.generate(), SigningKey.generate()
    envelope = Envelope.sign(STATEMENT, [operator, subject])
    again = Envelope.loads(envelope.dumps())
    trusted = {operator.key_id: operator.public_key, subject.key_id: subject.public_key}
    again.verify(trusted, [operator.key_id, subject.key_id])
    assert again.statement == STATEMENT


def test_envelope_missing_required_signature_fails() -> None:
    operator, subject = SigningKey.generate(), SigningKey.generate()
    envelope = Envelope.sign(STATEMENT, [operator])
    trusted = {operator.key_id: operator.public_key, subject.key_id: subject.public_key}
    with pytest.raises(SignatureError, match="missing required signature"):
        envelope.verify(trusted, [operator.key_id, subject.key_id])


def test_envelope_required_key_unknown_fails() -> None:
    operator = SigningKey.generate()
    envelope = Envelope.sign(STATEMENT, [operator])
    with pytest.raises(UnknownKeyError):
        envelope.verify({}, [operator.key_id])


def test_envelope_payload_type_binds_statement_type() -> None:
    key = SigningKey.generate()
    envelope = Envelope.sign(STATEMENT, [key])
    relabelled = Envelope(
        envelope.payload_type.replace("grant", "revocation"),
        envelope.payload,
        envelope.signatures,
    )
    with pytest.raises(SignatureError, match="payload type"):
        relabelled.verify({key.key_id: key.public_key}, [key.key_id])


def test_statement_without_type_and_version_cannot_be_signed() -> None:
    with pytest.raises(InputError):
        Envelope.sign({"id": "x"}, [SigningKey.generate()])


@pytest.mark.parametrize("text", ["{}", "[]", '{"payload": "!!", "payloadType": "x"}', "nope"])
def test_malformed_envelope_is_a_signature_error(text: str) -> None:
    with pytest.raises(SignatureError):
        Envelope.loads(text)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**60), max_value=2**60)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6), children, max_size=4),
        max_leaves=12,
    )
)
def test_canonical_json_fast_path_equals_rfc8785(value: object) -> None:
    try:
        expected = bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, UnicodeEncodeError, ValueError):
        return  # not representable in JCS at all (e.g. lone surrogates, huge ints)
    assert canonical_json(value) == expected


def test_signature_batcher_checks_in_workers_and_keeps_order() -> None:
    key = SigningKey.generate()
    raw = key.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    items = []
    for i in range(11):
        message = f"message {i}".encode()
        signature = key.sign(message)
        if i in (3, 9):  # forged
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        items.append(PendingSignature(raw, signature, message))
    batcher = SignatureBatcher(chunk=4, workers=2)  # 2 chunks to the pool, 3 inline
    for item in items:
        batcher.add(item)
    assert batcher.results() == [i not in (3, 9) for i in range(11)]


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**60), max_value=2**60)
        | st.floats()
        | st.text(),
        lambda children: st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=6) | st.integers(0, 3), children, max_size=4),
        max_leaves=12,
    )
)
def test_plain_stack_walk_equals_the_recursive_rules(value: object) -> None:
    """The hot-path walk decides exactly as the reference spelling of the rules."""
    from consentry.registry.canonical import _plain, _plain_any

    assert _plain(value) == _plain_any(value)


def test_signature_batcher_bounds_what_is_in_flight_and_harvests_in_order() -> None:
    """With one chunk in flight at most, ``add`` waits for the oldest; ``ready()`` and
    then ``results()`` give one bool per item, in order, bad ones where they were."""
    key = SigningKey.generate()
    raw = key.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    bad = {2, 7, 12}
    batcher = SignatureBatcher(chunk=3, workers=1, max_in_flight=1)
    harvested: list[bool] = []
    for i in range(14):
        message = b"message %d" % i
        signature = key.sign(message)
        if i in bad:
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        batcher.add(PendingSignature(raw, signature, message))
        assert len(batcher._futures) <= 1
        harvested += batcher.ready()
    everything = harvested + batcher.results()
    assert everything == [i not in bad for i in range(14)]
    assert batcher.ready() == [] and batcher.results() == []
