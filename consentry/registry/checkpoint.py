"""Signed log checkpoints in the C2SP tlog-checkpoint / signed-note format.

A checkpoint body is exactly four lines, each ending in a newline::

    <origin>
    <tree size, decimal, no leading zeros>
    <root hash, standard base64 with padding>
    time <YYYY-MM-DDTHH:MM:SSZ>

A signed note is the body, one blank line, then one or more signature lines::

    \u2014 <key name> <base64(key hash (4 bytes) || signature)>

For Ed25519 the key hash is the first four bytes of
``SHA-256(key_name || "\\n" || 0x01 || raw 32-byte public key)`` and the signature
is Ed25519 over the UTF-8 body bytes exactly.

Invariants
----------
* :class:`Checkpoint` values are always well formed: the origin is non-empty with no
  control characters, the size is in ``0..2**64 - 1``, the root is 32 bytes and the
  timestamp is timezone-aware UTC with no sub-second part. Formatting then parsing a
  checkpoint gives back an equal one.
* Parsing is strict and canonical: any text this module would not have written
  (extra or missing lines, ``\\r``, control characters, non-canonical base64,
  leading zeros, ``+`` signs, non-ASCII digits, a time that is not UTC whole seconds)
  raises :class:`~consentry.errors.CheckpointError`.
* :func:`verify_checkpoint` accepts a note only if at least one signature line names
  the expected key *and* carries its key hash *and* verifies; lines from other keys
  are ignored.
* :func:`check_not_rollback` only compares two checkpoints; that a larger tree
  extends a smaller one is checked with :func:`consentry.registry.merkle.verify_consistency`.

Witness cosignatures (C2SP tlog-cosignature, ``cosignature/v1``)
----------------------------------------------------------------
A witness that has checked a checkpoint extends everything it saw before adds one
more signature line to the note. Its key hash uses the algorithm byte ``0x04``
(so an operator key and a witness key never share a key hash), its blob is
``key hash (4) || timestamp (8, big-endian seconds) || Ed25519 signature (64)``,
and the signature covers::

    cosignature/v1
    time <timestamp, decimal seconds>
    <the checkpoint body>

Verifiers name a witness by its verifier key line ``<name>+<key hash hex>+<base64(
0x04 || public key)>`` (:func:`format_vkey` / :func:`parse_vkey`). Cosignature lines
are ignored by :func:`verify_checkpoint` (other algorithm, other length), and
operator signature lines by :func:`verify_cosignature`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consentry.errors import CheckpointError, RollbackError

__all__ = [
    "MAX_SIGNATURES",
    "Checkpoint",
    "NoteSignature",
    "add_signature",
    "check_not_rollback",
    "cosign_checkpoint",
    "cosignature_key_hash",
    "ed25519_key_hash",
    "format_body",
    "format_vkey",
    "merge_signatures",
    "parse_checkpoint",
    "parse_vkey",
    "sign_checkpoint",
    "verify_checkpoint",
    "verify_cosignature",
]

ROOT_HASH_SIZE = 32
MAX_TREE_SIZE = 2**64 - 1
MAX_SIGNATURES = 100
"""Most signature lines a note may carry (as in the Go note package)."""

_SIG_PREFIX = "\u2014 "  # em dash, space
_ED25519_ALG = b"\x01"
_COSIGNATURE_ALG = b"\x04"
_COSIGNATURE_HEADER = "cosignature/v1\ntime "
_KEY_HASH_SIZE = 4
_ED25519_SIG_SIZE = 64

_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_TIME_RE = re.compile(r"time ([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


@dataclass(frozen=True)
class Checkpoint:
    """One log state: origin, size, root hash and the time it was cut (UTC)."""

    origin: str
    tree_size: int
    root_hash: bytes
    timestamp: datetime

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise CheckpointError("checkpoint origin must be a non-empty string")
        if _has_control(self.origin):
            raise CheckpointError("checkpoint origin must not contain control characters")
        if (
            isinstance(self.tree_size, bool)
            or not isinstance(self.tree_size, int)
            or not 0 <= self.tree_size <= MAX_TREE_SIZE
        ):
            raise CheckpointError(f"checkpoint tree size {self.tree_size!r} is out of range")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != ROOT_HASH_SIZE:
            raise CheckpointError(f"checkpoint root hash must be {ROOT_HASH_SIZE} bytes")
        ts = self.timestamp
        if not isinstance(ts, datetime) or ts.utcoffset() != timedelta(0):
            raise CheckpointError("checkpoint timestamp must be a timezone-aware UTC datetime")
        if ts.microsecond:
            raise CheckpointError("checkpoint timestamp must be whole seconds")


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a signed note, not yet verified."""

    key_name: str
    key_hash: bytes
    signature: bytes


def _format_time(ts: datetime) -> str:
    return (
        f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}:{ts.minute:02d}:{ts.second:02d}Z"
    )


def format_body(cp: Checkpoint) -> str:
    """Return the checkpoint body text, the exact text that signatures cover."""
    root = base64.b64encode(cp.root_hash).decode("ascii")
    return f"{cp.origin}\n{cp.tree_size}\n{root}\ntime {_format_time(cp.timestamp)}\n"


def _check_key_name(key_name: str) -> None:
    if (
        not key_name
        or "+" in key_name
        or any(c.isspace() for c in key_name)
        or _has_control(key_name)
    ):
        raise CheckpointError(
            f"key name {key_name!r} must be non-empty, without spaces, '+' or control characters"
        )


def ed25519_key_hash(key_name: str, public_key: Ed25519PublicKey) -> bytes:
    """Return the signed-note key hash of an Ed25519 key: 4 bytes of
    ``SHA-256(key_name || "\\n" || 0x01 || public key)``."""
    material = key_name.encode("utf-8") + b"\n" + _ED25519_ALG + public_key.public_bytes_raw()
    return hashlib.sha256(material).digest()[:_KEY_HASH_SIZE]


def sign_checkpoint(cp: Checkpoint, key_name: str, private_key: Ed25519PrivateKey) -> str:
    """Return the signed note for ``cp``: body, blank line, one signature line."""
    _check_key_name(key_name)
    body = format_body(cp)
    signature = private_key.sign(body.encode("utf-8"))
    key_hash = ed25519_key_hash(key_name, private_key.public_key())
    blob = base64.b64encode(key_hash + signature).decode("ascii")
    return f"{body}\n{_SIG_PREFIX}{key_name} {blob}\n"


def _decode_base64(text: str, what: str) -> bytes:
    # Standard alphabet with padding, and canonical: re-encoding gives the same text.
    if not _BASE64_RE.fullmatch(text):
        raise CheckpointError(f"{what} is not standard base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError(f"{what} is not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise CheckpointError(f"{what} is not canonical base64")
    return raw


def _parse_body(body: str) -> Checkpoint:
    lines = body.split("\n")
    # body ends with "\n", so the split leaves one empty string at the end.
    if len(lines) != 5 or lines[-1] != "":
        raise CheckpointError(
            "checkpoint body must be exactly four lines: origin, size, root, time"
        )
    origin, size_text, root_text, time_text = lines[:4]
    if not origin:
        raise CheckpointError("checkpoint origin is empty")
    if not _SIZE_RE.fullmatch(size_text):
        raise CheckpointError(f"checkpoint tree size {size_text!r} is not a canonical decimal")
    tree_size = int(size_text)
    root = _decode_base64(root_text, "checkpoint root hash")
    if len(root) != ROOT_HASH_SIZE:
        raise CheckpointError(f"checkpoint root hash is {len(root)} bytes, not {ROOT_HASH_SIZE}")
    match = _TIME_RE.fullmatch(time_text)
    if match is None:
        raise CheckpointError(f"checkpoint time line {time_text!r} is not 'time <UTC time>Z'")
    try:
        year, month, day, hour, minute, second = (int(g) for g in match.groups())
        timestamp = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint time {time_text!r} is not a valid date") from exc
    return Checkpoint(origin=origin, tree_size=tree_size, root_hash=root, timestamp=timestamp)


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_SIG_PREFIX):
        raise CheckpointError("signature line must start with an em dash and a space")
    parts = line[len(_SIG_PREFIX) :].split(" ")
    if len(parts) != 2:
        raise CheckpointError("signature line must be '\u2014 <key name> <base64>'")
    key_name, blob_text = parts
    _check_key_name(key_name)
    blob = _decode_base64(blob_text, "signature")
    if len(blob) <= _KEY_HASH_SIZE:
        raise CheckpointError("signature is too short to hold a key hash and a signature")
    return NoteSignature(
        key_name=key_name, key_hash=blob[:_KEY_HASH_SIZE], signature=blob[_KEY_HASH_SIZE:]
    )


def _split_note(note: str) -> tuple[str, list[str]]:
    if not isinstance(note, str):
        raise CheckpointError("a note must be text")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CheckpointError("note is not valid UTF-8 text") from exc
    if any((ord(c) < 0x20 and c != "\n") or ord(c) == 0x7F for c in note):
        raise CheckpointError("note contains a control character (such as \\r)")
    if not note.endswith("\n"):
        raise CheckpointError("note must end with a newline")
    sep = note.find("\n\n")
    if sep < 0:
        raise CheckpointError("note has no blank line between body and signatures")
    body, sig_text = note[: sep + 1], note[sep + 2 :]
    sig_lines = sig_text.split("\n")[:-1]  # sig_text ends with "\n"
    if not sig_lines:
        raise CheckpointError("note has no signature lines")
    if len(sig_lines) > MAX_SIGNATURES:
        raise CheckpointError(f"note has more than {MAX_SIGNATURES} signature lines")
    return body, sig_lines


def _parse_note(note: str) -> tuple[str, Checkpoint, list[NoteSignature]]:
    body, sig_lines = _split_note(note)
    checkpoint = _parse_body(body)
    signatures = [_parse_signature_line(line) for line in sig_lines]
    return body, checkpoint, signatures


def parse_checkpoint(note: str) -> tuple[Checkpoint, list[NoteSignature]]:
    """Parse a signed checkpoint note strictly, without checking any signature.

    Raises :class:`CheckpointError` if the note is malformed in any way.
    """
    _, checkpoint, signatures = _parse_note(note)
    return checkpoint, signatures


def verify_checkpoint(note: str, key_name: str, public_key: Ed25519PublicKey) -> Checkpoint:
    """Parse ``note`` and return its checkpoint if ``public_key`` signed it as ``key_name``.

    Raises :class:`CheckpointError` if the note is malformed or no signature line with
    this key name and key hash verifies over the body.
    """
    body, checkpoint, signatures = _parse_note(note)
    _check_key_name(key_name)
    key_hash = ed25519_key_hash(key_name, public_key)
    message = body.encode("utf-8")
    for sig in signatures:
        if sig.key_name != key_name or sig.key_hash != key_hash:
            continue
        if len(sig.signature) != _ED25519_SIG_SIZE:
            continue
        try:
            public_key.verify(sig.signature, message)
        except InvalidSignature:
            continue
        return checkpoint
    raise CheckpointError(f"no valid signature by key {key_name!r} on checkpoint")


def check_not_rollback(trusted: Checkpoint, new: Checkpoint) -> None:
    """Refuse a checkpoint that goes back on ``trusted``.

    Raises :class:`CheckpointError` if the origins differ, and
    :class:`RollbackError` if ``new`` is smaller than ``trusted`` or has the same size
    with a different root (a split view). Timestamps are not compared. Whether a
    larger ``new`` extends ``trusted`` needs a consistency proof
    (:func:`consentry.registry.merkle.verify_consistency`).
    """
    if new.origin != trusted.origin:
        raise CheckpointError(
            f"checkpoint origin {new.origin!r} differs from trusted {trusted.origin!r}"
        )
    if new.tree_size < trusted.tree_size:
        raise RollbackError(
            f"checkpoint size {new.tree_size} is smaller than trusted size {trusted.tree_size}"
        )
    if new.tree_size == trusted.tree_size and new.root_hash != trusted.root_hash:
        raise RollbackError(
            f"checkpoint root differs from the trusted root at the same size "
            f"{new.tree_size} (split view)"
        )


# -- witness cosignatures (C2SP tlog-cosignature) -------------------------------------


def cosignature_key_hash(key_name: str, public_key: Ed25519PublicKey) -> bytes:
    """The key hash of a ``cosignature/v1`` key: 4 bytes of
    ``SHA-256(key_name || "\\n" || 0x04 || public key)``."""
    material = key_name.encode("utf-8") + b"\n" + _COSIGNATURE_ALG + public_key.public_bytes_raw()
    return hashlib.sha256(material).digest()[:_KEY_HASH_SIZE]


def _cosigned_message(body: str, seconds: int) -> bytes:
    return f"{_COSIGNATURE_HEADER}{seconds}\n{body}".encode()


def _body_of(note: str) -> str:
    body, _ = _split_note(note)
    return body


def add_signature(note: str, line: str) -> str:
    """``note`` with one more signature line; a line of the same key name and key
    hash is replaced (a newer cosignature supersedes the older one)."""
    body, lines = _split_note(note)
    _parse_body(body)
    new = _parse_signature_line(line)
    kept: list[str] = []
    for old in lines:
        sig = _parse_signature_line(old)
        if (sig.key_name, sig.key_hash) != (new.key_name, new.key_hash):
            kept.append(old)
    if len(kept) + 1 > MAX_SIGNATURES:
        raise CheckpointError(f"note would have more than {MAX_SIGNATURES} signature lines")
    return body + "\n" + "".join(f"{old}\n" for old in [*kept, line])


def merge_signatures(note: str, other: str) -> str:
    """``note`` with every signature line of ``other`` added; both notes must have
    the same body (the same checkpoint)."""
    body, _ = _split_note(note)
    other_body, lines = _split_note(other)
    if other_body != body:
        raise CheckpointError("the notes are of different checkpoints")
    merged = note
    for line in lines:
        if line not in _split_note(merged)[1]:
            merged = add_signature(merged, line)
    return merged


def cosign_checkpoint(
    note: str, key_name: str, private_key: Ed25519PrivateKey, timestamp: datetime
) -> str:
    """``note`` with a ``cosignature/v1`` line by ``private_key`` at ``timestamp`` added.

    The caller has verified the note and that it extends what this witness saw.
    """
    _check_key_name(key_name)
    body = _body_of(note)
    _parse_body(body)
    if timestamp.utcoffset() != timedelta(0):
        raise CheckpointError("cosignature time must be a timezone-aware UTC datetime")
    seconds = int(timestamp.timestamp())
    if not 0 <= seconds < 2**63:
        raise CheckpointError("cosignature time is out of range")
    signature = private_key.sign(_cosigned_message(body, seconds))
    blob = (
        cosignature_key_hash(key_name, private_key.public_key())
        + seconds.to_bytes(8, "big")
        + signature
    )
    line = f"{_SIG_PREFIX}{key_name} {base64.b64encode(blob).decode('ascii')}"
    return add_signature(note, line)


def verify_cosignature(
    note: str, key_name: str, public_key: Ed25519PublicKey
) -> tuple[Checkpoint, datetime]:
    """The checkpoint and cosignature time if the witness key cosigned ``note``.

    Raises :class:`CheckpointError` if the note is malformed or carries no valid
    ``cosignature/v1`` line by this key (name and key hash must both match).
    """
    body, checkpoint, signatures = _parse_note(note)
    _check_key_name(key_name)
    key_hash = cosignature_key_hash(key_name, public_key)
    for sig in signatures:
        if sig.key_name != key_name or sig.key_hash != key_hash:
            continue
        if len(sig.signature) != 8 + _ED25519_SIG_SIZE:
            continue
        seconds = int.from_bytes(sig.signature[:8], "big")
        try:
            public_key.verify(sig.signature[8:], _cosigned_message(body, seconds))
        except InvalidSignature:
            continue
        return checkpoint, datetime.fromtimestamp(seconds, UTC)
    raise CheckpointError(f"no valid cosignature by witness {key_name!r} on the checkpoint")


def format_vkey(key_name: str, public_key: Ed25519PublicKey) -> str:
    """The verifier key line of a witness: ``name+hash+base64(0x04 || key)``."""
    _check_key_name(key_name)
    key_hash = cosignature_key_hash(key_name, public_key).hex()
    blob = base64.b64encode(_COSIGNATURE_ALG + public_key.public_bytes_raw()).decode("ascii")
    return f"{key_name}+{key_hash}+{blob}"


def parse_vkey(text: str) -> tuple[str, Ed25519PublicKey]:
    """The key name and public key of a witness verifier key line (strict)."""
    parts = text.strip().split("+", 2)  # the name and hex hash hold no '+'; base64 may
    if len(parts) != 3:
        raise CheckpointError("a witness key is '<name>+<key hash hex>+<base64 key>'")
    key_name, hash_text, blob_text = parts
    _check_key_name(key_name)
    blob = _decode_base64(blob_text, "witness key")
    if len(blob) != 33 or blob[:1] != _COSIGNATURE_ALG:
        raise CheckpointError("witness key is not a cosignature/v1 Ed25519 key")
    public_key = Ed25519PublicKey.from_public_bytes(blob[1:])
    if cosignature_key_hash(key_name, public_key).hex() != hash_text:
        raise CheckpointError("witness key hash does not match its name and key")
    return key_name, public_key
