"""Encryption at rest for biometric data, and crypto-erasure.

Invariants
- The registry master key (32 random bytes, ``HOME/keys/master.key``, mode
  0600) never enters the database. It only wraps per-subject data keys.
- Each subject's biometric records (embeddings, kept photos) are encrypted
  with that subject's own 32-byte data key under AES-256-GCM, with the subject
  id and the record's purpose bound in as associated data, so a ciphertext
  moved to another subject or another column fails to decrypt.
- Erasing a subject deletes their wrapped data key; every ciphertext of theirs
  becomes undecryptable even if a copy of the database survives.
- Blob layout: ``nonce (12 bytes) || ciphertext+tag``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from consentry.errors import ConfigError, VaultError
from consentry.fsutil import atomic_write

__all__ = ["MasterKey", "seal", "unseal"]

_NONCE = 12


def seal(key: bytes, plaintext: bytes, context: bytes) -> bytes:
    """AES-256-GCM encrypt ``plaintext`` bound to ``context`` (associated data)."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def unseal(key: bytes, blob: bytes, context: bytes) -> bytes:
    """Inverse of :func:`seal`; raises :class:`VaultError` if anything was altered."""
    if len(blob) < _NONCE + 16:
        raise VaultError("ciphertext too short")
    try:
        return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], context)
    except InvalidTag as exc:
        raise VaultError("ciphertext failed authentication (tampered or wrong key)") from exc


@dataclass(frozen=True)
class MasterKey:
    """The registry master key: wraps subject data keys, keys derived MACs."""

    secret: bytes

    @classmethod
    def create(cls, path: Path) -> MasterKey:
        secret = os.urandom(32)
        atomic_write(path, secret, 0o600, exclusive=True)
        return cls(secret)

    @classmethod
    def load(cls, path: Path) -> MasterKey:
        try:
            secret = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the master key {path}: {exc.strerror}") from exc
        if len(secret) != 32:
            raise ConfigError(f"{path} is not a 32-byte master key")
        return cls(secret)

    def new_data_key(self, subject_id: str) -> tuple[bytes, bytes]:
        """A fresh data key for ``subject_id`` and its wrapped form (to store)."""
        data_key = os.urandom(32)
        return data_key, self.wrap(subject_id, data_key)

    def wrap(self, subject_id: str, data_key: bytes) -> bytes:
        return seal(self.secret, data_key, b"consentry.data-key:" + subject_id.encode())

    def unwrap(self, subject_id: str, wrapped: bytes) -> bytes:
        return unseal(self.secret, wrapped, b"consentry.data-key:" + subject_id.encode())

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (e.g. the index cache), independent of others."""
        return HKDF(SHA256(), 32, salt=None, info=b"consentry:" + purpose.encode()).derive(
            self.secret
        )
