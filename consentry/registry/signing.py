"""Ed25519 keys, key ids, RFC 8785 canonical JSON and signed envelopes.

Invariants
- A key id is the lowercase hex SHA-256 of the raw 32-byte Ed25519 public key.
- Every signed statement is a JSON object with a ``type`` (``consentry.<kind>``)
  and an integer ``version``. The bytes signed are DSSE's pre-authentication
  encoding of the payload type and the RFC 8785 canonical payload, so a
  signature over one kind of statement can never be replayed as another kind
  (domain separation), and a payload whose bytes are not exactly canonical is
  rejected before any signature is checked.
- Private key files are written with mode 0600 and never overwritten.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from consentry.errors import InputError, NonCanonicalError, SignatureError, UnknownKeyError
from consentry.fsutil import atomic_write
from consentry.hashing import sha256_hex  # re-exported: one definition, in consentry.hashing
from consentry.registry.canonical import canonical_json  # re-exported (no cryptography there)

__all__ = [
    "PAYLOAD_TYPE_PREFIX",
    "Envelope",
    "EnvelopeSignature",
    "PendingSignature",
    "SignatureBatcher",
    "SigningKey",
    "canonical_json",
    "checkpoint_key_name",
    "key_id_of",
    "load_public_key",
    "parse_canonical",
    "public_key_from_hex",
    "public_key_hex",
    "sha256_hex",
    "verify_batch",
]

PAYLOAD_TYPE_PREFIX = "application/vnd.consentry."




def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise NonCanonicalError(f"duplicate JSON key {key!r}")
        seen[key] = value
    return seen


def parse_canonical(data: bytes) -> dict[str, Any]:
    """Parse a JSON object and insist its bytes are exactly the canonical form.

    Raises :class:`NonCanonicalError` on duplicate keys, whitespace, key order,
    number or string spellings that differ from RFC 8785.
    """
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
        )
    except NonCanonicalError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NonCanonicalError(f"payload is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise NonCanonicalError("payload is not a JSON object")
    try:
        canonical = canonical_json(value)
    except (ValueError, OverflowError, UnicodeEncodeError) as exc:
        # rfc8785's domain errors (huge integers, lone surrogates, inf) derive from ValueError
        raise NonCanonicalError(f"payload is outside the JCS domain: {exc}") from exc
    if canonical != data:
        raise NonCanonicalError("payload is not RFC 8785 canonical JSON")
    return value


def _reject_constant(name: str) -> Any:
    raise NonCanonicalError(f"{name} is not JSON")


def checkpoint_key_name(key_id: str) -> str:
    """The signed-note key name of an operator key (derivable from the public key)."""
    return f"consentry-{key_id[:16]}"


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The key id: hex SHA-256 of the raw public key."""
    return sha256_hex(_raw_public(public_key))


def public_key_hex(public_key: Ed25519PublicKey) -> str:
    """The raw public key as lowercase hex (how the registry stores it)."""
    return _raw_public(public_key).hex()


def public_key_from_hex(value: str) -> Ed25519PublicKey:
    """Inverse of :func:`public_key_hex`."""
    try:
        raw = bytes.fromhex(value)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise InputError(f"not a raw Ed25519 public key in hex: {exc}") from exc


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a PEM file, or from a private key file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read key file {path}: {exc.strerror}") from exc
    if b"PRIVATE KEY" in data:
        return SigningKey.load(path).public_key
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise InputError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path} is not an Ed25519 key")
    return key


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key with its key id."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read key file {path}: {exc.strerror}") from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path} is not an unencrypted PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise InputError(f"{path} is not an Ed25519 private key")
        return cls(key)

    def save(self, path: Path) -> None:
        """Write the key as PKCS#8 PEM with mode 0600; refuses to overwrite."""
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        atomic_write(path, pem, 0o600, exclusive=True)

    def save_public(self, path: Path) -> None:
        pem = self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        atomic_write(path, pem, 0o644)

    @cached_property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @cached_property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    @cached_property
    def public_hex(self) -> str:
        return public_key_hex(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)


@dataclass(frozen=True)
class PendingSignature:
    """An Ed25519 check collected for :func:`verify_batch`."""

    public_key: bytes  # raw 32 bytes
    signature: bytes
    message: bytes


def _verify_chunk(chunk: list[PendingSignature]) -> list[bool]:
    results = []
    for item in chunk:
        try:
            Ed25519PublicKey.from_public_bytes(item.public_key).verify(item.signature, item.message)
            results.append(True)
        except (InvalidSignature, ValueError):
            results.append(False)
    return results


def _pool_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


class SignatureBatcher:
    """Checks Ed25519 signatures in worker processes while the caller keeps working.

    Ed25519 verification holds the GIL, so threads would not help: chunks of
    ``chunk`` signatures go to a process pool (one worker fewer than the cores,
    the caller keeps one) as soon as they fill. Fewer than ``chunk`` signatures
    in all are checked inline. Together, ``ready()`` (taken as they finish) and
    ``results()`` (the rest) return one bool per ``add``, in order.

    Memory is bounded: at most ``max_in_flight`` chunks (default two per worker,
    plus one) are queued or running; ``add`` waits for the oldest beyond that.
    """

    def __init__(
        self, chunk: int = 4096, workers: int | None = None, max_in_flight: int | None = None
    ) -> None:
        self._chunk = chunk
        self._workers = workers if workers is not None else max(1, (os.cpu_count() or 1) - 1)
        self._max_in_flight = max_in_flight or 2 * self._workers + 1
        self._buffer: list[PendingSignature] = []
        self._futures: deque[Future[list[bool]]] = deque()
        self._done: list[bool] = []  # results waited for by ``add``, not taken yet
        self._pool: ProcessPoolExecutor | None = None

    def add(self, item: PendingSignature) -> None:
        self._buffer.append(item)
        if len(self._buffer) >= self._chunk:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self._workers, mp_context=_pool_context())
            while len(self._futures) >= self._max_in_flight:
                self._done.extend(self._futures.popleft().result())
            self._futures.append(self._pool.submit(_verify_chunk, self._buffer))
            self._buffer = []

    def ready(self) -> list[bool]:
        """The results of the oldest items whose chunks have finished, in ``add``
        order, taken out of the batcher (``results()`` returns those after them)."""
        out, self._done = self._done, []
        while self._futures and self._futures[0].done():
            out.extend(self._futures.popleft().result())
        return out

    def results(self) -> list[bool]:
        """The results of every item not yet returned by ``ready()``, in order."""
        done, self._done = self._done, []
        buffer, self._buffer = self._buffer, []
        if self._pool is None:
            return done + _verify_chunk(buffer)
        try:
            while self._futures:
                done.extend(self._futures.popleft().result())
            return done + _verify_chunk(buffer)
        finally:
            self._pool.shutdown()
            self._pool = None


def verify_batch(items: Sequence[PendingSignature], workers: int | None = None) -> list[bool]:
    """Check many Ed25519 signatures; True where valid (see :class:`SignatureBatcher`)."""
    batcher = SignatureBatcher(workers=workers)
    for item in items:
        batcher.add(item)
    return batcher.results()


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: binds the type to the bytes."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def payload_type_for(statement_type: str, version: int) -> str:
    return f"{PAYLOAD_TYPE_PREFIX}{statement_type}+json; version={version}"


@dataclass(frozen=True)
class EnvelopeSignature:
    key_id: str
    signature: bytes

    def to_json(self) -> dict[str, str]:
        return {"keyid": self.key_id, "sig": base64.b64encode(self.signature).decode()}


@dataclass(frozen=True)
class Envelope:
    """A statement signed by one or more keys.

    ``payload`` holds the canonical bytes; ``statement`` is their parsed form.
    """

    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]

    @classmethod
    def sign(cls, statement: Mapping[str, Any], keys: Iterable[SigningKey]) -> Envelope:
        """Sign ``statement`` (which must carry ``type`` and ``version``) with ``keys``."""
        body = dict(statement)
        stype, version = body.get("type"), body.get("version")
        if not isinstance(stype, str) or not isinstance(version, int):
            raise InputError("a signed statement needs a string 'type' and an int 'version'")
        payload = canonical_json(body)
        ptype = payload_type_for(stype, version)
        message = _pae(ptype, payload)
        sigs = tuple(EnvelopeSignature(k.key_id, k.sign(message)) for k in keys)
        if not sigs:
            raise InputError("an envelope needs at least one signature")
        return cls(ptype, payload, sigs)

    @property
    def statement(self) -> dict[str, Any]:
        return parse_canonical(self.payload)

    def countersign(self, key: SigningKey) -> Envelope:
        """This envelope with one more signature, by ``key``, over the same bytes
        (a key that signed already is refused: one signature per key)."""
        if key.key_id in self.key_ids:
            raise SignatureError(f"key {key.key_id[:16]} has signed this envelope already")
        signature = EnvelopeSignature(key.key_id, key.sign(_pae(self.payload_type, self.payload)))
        return Envelope(self.payload_type, self.payload, (*self.signatures, signature))

    @property
    def key_ids(self) -> list[str]:
        return [s.key_id for s in self.signatures]

    def verify(
        self,
        trusted: Mapping[str, Ed25519PublicKey],
        required: Iterable[str],
        *,
        statement: Mapping[str, Any] | None = None,
        deferred: list[PendingSignature] | None = None,
    ) -> None:
        """Check canonical form, domain separation and a valid signature by every
        key id in ``required``.

        ``trusted`` maps key ids to public keys. Signatures by unknown keys are
        ignored unless required; a required key missing from ``trusted`` raises
        :class:`UnknownKeyError`. Returns None; raises on any failure.
        ``statement``: the payload already parsed by the caller (not parsed again).
        ``deferred``: collect the Ed25519 checks there instead of running them, for
        :func:`verify_batch`; everything else is still checked here.
        """
        if statement is None:
            statement = parse_canonical(self.payload)
        ptype = payload_type_for(str(statement.get("type")), int(statement.get("version", -1)))
        if ptype != self.payload_type:
            raise SignatureError(
                f"payload type {self.payload_type!r} does not match the statement ({ptype!r})"
            )
        message = _pae(self.payload_type, self.payload)
        by_key = {s.key_id: s.signature for s in self.signatures}
        for key_id in required:
            public = trusted.get(key_id)
            if public is None:
                raise UnknownKeyError(f"signing key {key_id[:16]} is not known to this registry")
            if key_id_of(public) != key_id:
                raise SignatureError(f"key id {key_id[:16]} does not match its public key")
            signature = by_key.get(key_id)
            if signature is None:
                raise SignatureError(f"missing required signature by key {key_id[:16]}")
            if deferred is not None:
                deferred.append(PendingSignature(_raw_public(public), signature, message))
                continue
            try:
                public.verify(signature, message)
            except InvalidSignature as exc:
                raise SignatureError(f"bad signature by key {key_id[:16]}") from exc

    def to_json(self) -> dict[str, Any]:
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode(),
            "signatures": [s.to_json() for s in self.signatures],
        }

    def dumps(self) -> str:
        return canonical_json(self.to_json()).decode()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Envelope:
        try:
            payload = base64.b64decode(str(data["payload"]), validate=True)
            sigs = tuple(
                EnvelopeSignature(str(s["keyid"]), base64.b64decode(str(s["sig"]), validate=True))
                for s in data["signatures"]
            )
            return cls(str(data["payloadType"]), payload, sigs)
        except (KeyError, TypeError, ValueError) as exc:
            raise SignatureError(f"malformed envelope: {exc}") from exc

    @classmethod
    def loads(cls, text: str) -> Envelope:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SignatureError(f"malformed envelope: {exc}") from exc
        if not isinstance(data, dict):
            raise SignatureError("malformed envelope: not a JSON object")
        return cls.from_json(data)
