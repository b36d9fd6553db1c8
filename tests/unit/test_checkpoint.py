"""Tests for consentry.registry.checkpoint (signed-note checkpoints)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.errors import CheckpointError, RollbackError
from consentry.registry.checkpoint import (
    Checkpoint,
    NoteSignature,
    check_not_rollback,
    ed25519_key_hash,
    format_body,
    parse_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
NAME = "registry.example"
ROOT = hashlib.sha256(b"root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()
WHEN = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
CP = Checkpoint(origin="consentry.example/log", tree_size=42, root_hash=ROOT, timestamp=WHEN)
BODY = f"consentry.example/log\n42\n{ROOT_B64}\ntime 2026-11-27T08:00:00Z\n"


def note_for(body: str, *sig_lines: str) -> str:
    return body + "\n" + "".join(sig_lines)


def sig_line(body: str, name: str = NAME, key: Ed25519PrivateKey = KEY) -> str:
    """A signature line built independently of the module under test."""
    raw_pub = key.public_key().public_bytes_raw()
    key_hash = hashlib.sha256(name.encode() + b"\n\x01" + raw_pub).digest()[:4]
    blob = base64.b64encode(key_hash + key.sign(body.encode())).decode()
    return f"\u2014 {name} {blob}\n"


VALID = note_for(BODY, sig_line(BODY))


# --- format and round trip --------------------------------------------------------------


def test_body_format_is_exact() -> None:
    assert format_body(CP) == BODY


def test_signed_note_is_body_blank_line_signature() -> None:
    assert sign_checkpoint(CP, NAME, KEY) == VALID


def test_key_hash_matches_note_spec() -> None:
    raw_pub = KEY.public_key().public_bytes_raw()
    expected = hashlib.sha256(NAME.encode() + b"\n" + b"\x01" + raw_pub).digest()[:4]
    assert ed25519_key_hash(NAME, KEY.public_key()) == expected


def test_round_trip_sign_parse_verify() -> None:
    note = sign_checkpoint(CP, NAME, KEY)
    parsed, sigs = parse_checkpoint(note)
    assert parsed == CP
    assert len(sigs) == 1
    assert sigs[0].key_name == NAME
    assert sigs[0].key_hash == ed25519_key_hash(NAME, KEY.public_key())
    assert len(sigs[0].signature) == 64
    KEY.public_key().verify(sigs[0].signature, BODY.encode())
    assert verify_checkpoint(note, NAME, KEY.public_key()) == CP


def test_parsed_timestamp_is_utc() -> None:
    parsed, _ = parse_checkpoint(VALID)
    assert parsed.timestamp.utcoffset() == timedelta(0)


def test_empty_tree_checkpoint_round_trips() -> None:
    cp = replace(CP, tree_size=0, root_hash=hashlib.sha256(b"").digest())
    assert verify_checkpoint(sign_checkpoint(cp, NAME, KEY), NAME, KEY.public_key()) == cp


def test_largest_size_round_trips() -> None:
    cp = replace(CP, tree_size=2**64 - 1)
    assert verify_checkpoint(sign_checkpoint(cp, NAME, KEY), NAME, KEY.public_key()) == cp


def test_non_ascii_origin_round_trips() -> None:
    cp = replace(CP, origin="consentry.example/журнал")
    assert verify_checkpoint(sign_checkpoint(cp, NAME, KEY), NAME, KEY.public_key()) == cp


def test_early_year_is_zero_padded() -> None:
    cp = replace(CP, timestamp=datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert "time 0999-01-02T03:04:05Z\n" in format_body(cp)
    assert verify_checkpoint(sign_checkpoint(cp, NAME, KEY), NAME, KEY.public_key()) == cp


def test_zero_offset_timezone_is_accepted() -> None:
    cp = replace(CP, timestamp=WHEN.astimezone(timezone(timedelta(0), "Z")))
    assert format_body(cp) == BODY


# --- signatures ----------------------------------------------------------------------


def test_wrong_public_key_fails() -> None:
    with pytest.raises(CheckpointError, match="no valid signature"):
        verify_checkpoint(VALID, NAME, OTHER_KEY.public_key())


def test_signature_under_another_key_name_fails() -> None:
    note = note_for(BODY, sig_line(BODY, name="someone.else"))
    with pytest.raises(CheckpointError, match="no valid signature"):
        verify_checkpoint(note, NAME, KEY.public_key())


def test_expected_name_with_another_key_hash_fails() -> None:
    # Signed by OTHER_KEY but labelled with our name: the key hash does not match.
    note = note_for(BODY, sig_line(BODY, key=OTHER_KEY))
    with pytest.raises(CheckpointError, match="no valid signature"):
        verify_checkpoint(note, NAME, KEY.public_key())


def test_valid_signature_with_our_key_hash_under_another_name_fails() -> None:
    key_hash = ed25519_key_hash(NAME, KEY.public_key())
    blob = base64.b64encode(key_hash + KEY.sign(BODY.encode())).decode()
    note = note_for(BODY, f"\u2014 someone.else {blob}\n")
    with pytest.raises(CheckpointError, match="no valid signature"):
        verify_checkpoint(note, NAME, KEY.public_key())


def test_valid_signature_under_our_name_with_wrong_key_hash_fails() -> None:
    blob = base64.b64encode(b"\x00\x00\x00\x00" + KEY.sign(BODY.encode())).decode()
    note = note_for(BODY, f"\u2014 {NAME} {blob}\n")
    with pytest.raises(CheckpointError, match="no valid signature"):
        verify_checkpoint(note, NAME, KEY.public_key())


def test_matching_key_hash_with_bad_signature_fails() -> None:
    _, sigs = parse_checkpoint(VALID)
    bad_sig = bytes([sigs[0].signature[0] ^ 1]) + sigs[0].signature[1:]
    blob = base64.b64encode(sigs[0].key_hash + bad_sig).decode()
    note = note_for(BODY, f"\u2014 {NAME} {blob}\n")
    with pytest.raises(CheckpointError, match="no valid signature"):
        verify_checkpoint(note, NAME, KEY.public_key())


def test_matching_key_hash_with_short_signature_fails() -> None:
    key_hash = ed25519_key_hash(NAME, KEY.public_key())
    blob = base64.b64encode(key_hash + b"\x00" * 63).decode()
    note = note_for(BODY, f"\u2014 {NAME} {blob}\n")
    with pytest.raises(CheckpointError, match="no valid signature"):
        verify_checkpoint(note, NAME, KEY.public_key())


def test_signature_over_other_body_fails() -> None:
    other_body = BODY.replace("\n42\n", "\n43\n")
    note = note_for(BODY, sig_line(other_body))
    with pytest.raises(CheckpointError, match="no valid signature"):
        verify_checkpoint(note, NAME, KEY.public_key())


def test_any_matching_signature_among_several_is_enough() -> None:
    note = note_for(BODY, sig_line(BODY, "witness.example", OTHER_KEY), sig_line(BODY))
    assert verify_checkpoint(note, NAME, KEY.public_key()) == CP
    assert verify_checkpoint(note, "witness.example", OTHER_KEY.public_key()) == CP
    _, sigs = parse_checkpoint(note)
    assert [s.key_name for s in sigs] == ["witness.example", NAME]


def test_foreign_signature_formats_are_parsed_but_ignored() -> None:
    # Other algorithms carry signatures of other lengths; they must not break parsing.
    foreign = "\u2014 witness.example " + base64.b64encode(b"\x01\x02\x03\x04" + bytes(72)).decode()
    note = note_for(BODY, foreign + "\n", sig_line(BODY))
    _, sigs = parse_checkpoint(note)
    assert sigs[0] == NoteSignature("witness.example", b"\x01\x02\x03\x04", bytes(72))
    assert verify_checkpoint(note, NAME, KEY.public_key()) == CP


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("\n42\n", "\n43\n"),
        (ROOT_B64, base64.b64encode(hashlib.sha256(b"other").digest()).decode()),
        ("T08:00:00Z", "T08:00:01Z"),
        ("consentry.example/log\n", "consentry.example/lag\n"),
    ],
    ids=["size", "root", "time", "origin"],
)
def test_tampered_body_fails_verification(old: str, new: str) -> None:
    tampered = VALID.replace(old, new, 1)
    assert tampered != VALID
    parse_checkpoint(tampered)  # still well formed: the signature is what fails
    with pytest.raises(CheckpointError, match="no valid signature"):
        verify_checkpoint(tampered, NAME, KEY.public_key())


@pytest.mark.parametrize("name", ["", "has space", "plus+sign", "tab\tname", "nl\nname"])
def test_sign_rejects_bad_key_names(name: str) -> None:
    with pytest.raises(CheckpointError, match="key name"):
        sign_checkpoint(CP, name, KEY)


def test_verify_rejects_bad_key_name() -> None:
    with pytest.raises(CheckpointError, match="key name"):
        verify_checkpoint(VALID, "bad name", KEY.public_key())


# --- malformed notes -------------------------------------------------------------------

SIG = sig_line(BODY)
SIG_BLOB = SIG.split(" ")[2].rstrip("\n")


def body_with(old: str, new: str) -> str:
    body = BODY.replace(old, new, 1)
    assert body != BODY
    return body


def signed(body: str) -> str:
    """A note whose signature is valid for exactly this body, so only parsing can fail."""
    return note_for(body, sig_line(body))


MALFORMED: list[tuple[str, str]] = [
    ("empty", ""),
    ("body only", BODY),
    ("no blank line", BODY + SIG),
    ("no signature lines", BODY + "\n"),
    ("no trailing newline", VALID.rstrip("\n")),
    ("trailing blank line", VALID + "\n"),
    ("blank line between signatures", note_for(BODY, SIG, "\n", SIG)),
    ("crlf line endings", VALID.replace("\n", "\r\n")),
    ("carriage return in origin", signed(body_with("log\n", "log\r\n"))),
    ("nul in origin", signed(body_with("log\n", "log\x00\n"))),
    ("tab in origin", signed(body_with("consentry", "\tconsentry"))),
    ("lone surrogate", note_for(body_with("log\n", "log\udc80\n"), SIG)),
    ("empty origin", signed(body_with("consentry.example/log", ""))),
    ("extra body line", signed(BODY + "extra line\n")),
    ("extra extension line", signed(BODY + "time 2026-11-27T08:00:00Z\n")),
    ("missing time line", signed(BODY.replace("time 2026-11-27T08:00:00Z\n", ""))),
    ("missing origin line", signed(BODY.split("\n", 1)[1])),
    ("size negative", signed(body_with("\n42\n", "\n-42\n"))),
    ("size leading zero", signed(body_with("\n42\n", "\n042\n"))),
    ("size plus sign", signed(body_with("\n42\n", "\n+42\n"))),
    ("size with space", signed(body_with("\n42\n", "\n 42\n"))),
    ("size with underscore", signed(body_with("\n42\n", "\n4_2\n"))),
    ("size decimal point", signed(body_with("\n42\n", "\n42.0\n"))),
    ("size hex", signed(body_with("\n42\n", "\n0x2a\n"))),
    ("size non-ascii digits", signed(body_with("\n42\n", "\n\u0664\u0662\n"))),
    ("size empty", signed(body_with("\n42\n", "\n\n"))),
    ("size above 2**64-1", signed(body_with("\n42\n", f"\n{2**64}\n"))),
    ("root not base64", signed(body_with(ROOT_B64, "!" + ROOT_B64[1:]))),
    ("root urlsafe base64", signed(body_with(ROOT_B64, ROOT_B64.replace("+", "-")))),
    ("root missing padding", signed(body_with(ROOT_B64, ROOT_B64.rstrip("=")))),
    ("root 31 bytes", signed(body_with(ROOT_B64, base64.b64encode(ROOT[:31]).decode()))),
    ("root 33 bytes", signed(body_with(ROOT_B64, base64.b64encode(ROOT + b"\x00").decode()))),
    ("root empty", signed(body_with(ROOT_B64, ""))),
    ("root as hex", signed(body_with(ROOT_B64, ROOT.hex()))),
    ("time missing Z", signed(body_with("08:00:00Z", "08:00:00"))),
    ("time offset", signed(body_with("08:00:00Z", "08:00:00+00:00"))),
    ("time fraction", signed(body_with("08:00:00Z", "08:00:00.000Z"))),
    ("time lowercase z", signed(body_with("08:00:00Z", "08:00:00z"))),
    ("time space separator", signed(body_with("27T08", "27 08"))),
    ("time bad date", signed(body_with("2026-11-27", "2026-02-30"))),
    ("time hour 24", signed(body_with("T08:", "T24:"))),
    ("time leap second", signed(body_with(":00:00Z", ":00:60Z"))),
    ("time year zero", signed(body_with("2026-", "0000-"))),
    ("time keyword case", signed(body_with("time ", "Time "))),
    ("time double space", signed(body_with("time ", "time  "))),
    ("time trailing space", signed(body_with("00Z\n", "00Z \n"))),
    ("time unix seconds", signed(body_with("2026-11-27T08:00:00Z", "1795766400"))),
    ("sig hyphen instead of em dash", note_for(BODY, SIG.replace("\u2014", "-"))),
    ("sig en dash", note_for(BODY, SIG.replace("\u2014", "\u2013"))),
    ("sig no space after dash", note_for(BODY, SIG.replace("\u2014 ", "\u2014"))),
    ("sig missing blob", note_for(BODY, f"\u2014 {NAME}\n")),
    ("sig extra field", note_for(BODY, f"\u2014 {NAME} {SIG_BLOB} extra\n")),
    ("sig double space", note_for(BODY, f"\u2014 {NAME}  {SIG_BLOB}\n")),
    ("sig empty key name", note_for(BODY, f"\u2014  {SIG_BLOB}\n")),
    ("sig plus in key name", note_for(BODY, f"\u2014 a+b {SIG_BLOB}\n")),
    ("sig bad base64", note_for(BODY, f"\u2014 {NAME} ***{SIG_BLOB[3:]}\n")),
    ("sig unpadded base64", note_for(BODY, f"\u2014 {NAME} {SIG_BLOB.rstrip('=')}\n")),
    ("sig only key hash", note_for(BODY, f"\u2014 {NAME} {base64.b64encode(b'abcd').decode()}\n")),
    ("sig trailing space", note_for(BODY, SIG.replace("\n", " \n"))),
    ("too many signatures", note_for(BODY, *[SIG] * 101)),
]


@pytest.mark.parametrize("note", [n for _, n in MALFORMED], ids=[i for i, _ in MALFORMED])
def test_malformed_note_is_rejected(note: str) -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint(note)
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, NAME, KEY.public_key())


def test_non_canonical_base64_root_is_rejected() -> None:
    # "...=" with non-zero unused low bits decodes to the same bytes but is not canonical.
    last = ROOT_B64[-2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = alphabet[alphabet.index(last) ^ 1]
    mangled = ROOT_B64[:-2] + twin + "="
    assert base64.b64decode(mangled) == ROOT
    with pytest.raises(CheckpointError, match="canonical"):
        parse_checkpoint(signed(body_with(ROOT_B64, mangled)))


def test_valid_note_passes_the_malformed_checks() -> None:
    # Guards the table above: the unmodified note must parse and verify.
    assert parse_checkpoint(VALID)[0] == CP
    assert verify_checkpoint(VALID, NAME, KEY.public_key()) == CP


# --- checkpoint values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"origin": ""},
        {"origin": "a\nb"},
        {"origin": "a\rb"},
        {"tree_size": -1},
        {"tree_size": 2**64},
        {"tree_size": True},
        {"root_hash": ROOT[:31]},
        {"root_hash": ROOT + b"\x00"},
        {"timestamp": datetime(2026, 11, 27, 8, 0, 0)},  # naive on purpose
        {"timestamp": datetime(2026, 11, 27, 8, 0, 0, tzinfo=timezone(timedelta(hours=1)))},
        {"timestamp": WHEN.replace(microsecond=1)},
    ],
    ids=[
        "empty origin",
        "newline origin",
        "cr origin",
        "negative size",
        "size too large",
        "bool size",
        "short root",
        "long root",
        "naive time",
        "non-utc time",
        "sub-second time",
    ],
)
def test_invalid_checkpoint_values_are_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(CheckpointError):
        replace(CP, **changes)


# --- rollback -------------------------------------------------------------------------------


def test_same_checkpoint_is_not_a_rollback() -> None:
    check_not_rollback(CP, CP)


def test_larger_checkpoint_is_not_a_rollback() -> None:
    check_not_rollback(CP, replace(CP, tree_size=43, root_hash=hashlib.sha256(b"x").digest()))


def test_same_size_and_root_with_new_time_is_accepted() -> None:
    check_not_rollback(CP, replace(CP, timestamp=WHEN + timedelta(hours=1)))


def test_smaller_checkpoint_is_a_rollback() -> None:
    with pytest.raises(RollbackError, match="smaller"):
        check_not_rollback(CP, replace(CP, tree_size=41))


def test_smaller_checkpoint_with_same_root_is_still_a_rollback() -> None:
    with pytest.raises(RollbackError):
        check_not_rollback(CP, replace(CP, tree_size=0))


def test_same_size_other_root_is_a_split_view() -> None:
    with pytest.raises(RollbackError, match="split view"):
        check_not_rollback(CP, replace(CP, root_hash=hashlib.sha256(b"fork").digest()))


def test_other_origin_is_a_checkpoint_error_not_a_rollback() -> None:
    with pytest.raises(CheckpointError, match="origin") as info:
        check_not_rollback(CP, replace(CP, origin="elsewhere.example/log", tree_size=50))
    assert not isinstance(info.value, RollbackError)


# --- property ------------------------------------------------------------------------------

origins = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=40)
times = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59),
    timezones=st.just(UTC),
).map(lambda t: t.replace(microsecond=0))


@settings(max_examples=60, deadline=None)
@given(
    origin=origins,
    size=st.integers(0, 2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    when=times,
)
def test_property_round_trip(origin: str, size: int, root: bytes, when: datetime) -> None:
    cp = Checkpoint(origin=origin, tree_size=size, root_hash=root, timestamp=when)
    note = sign_checkpoint(cp, NAME, KEY)
    assert parse_checkpoint(note)[0] == cp
    assert verify_checkpoint(note, NAME, KEY.public_key()) == cp
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, NAME, OTHER_KEY.public_key())
