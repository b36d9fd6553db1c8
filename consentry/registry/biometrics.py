"""Enrollment, erasure and calibration records: the registry side of faces.

Invariants
- Embeddings and kept photos are stored only as AES-256-GCM ciphertext under
  the subject's data key (``vault``); the log and the enrollment row hold
  SHA-256 hashes of photos and ciphertexts, never biometric data.
- An erasure deletes the subject's data key and every blob in the same
  transaction as its log leaf; the subject and their hashes stay, so
  ``log verify`` still passes and nothing can be decrypted again.
- Blob ``vector_id`` = enrollment log index * 1000 + position (< 1000 photos
  per enrollment), so every process derives the same FAISS ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from sqlmodel import Session, col, select

from consentry.errors import ErasedError, InputError, NotFoundError
from consentry.registry.models import (
    BiometricBlob,
    Calibration,
    Enrollment,
    Erasure,
    SubjectDataKey,
)
from consentry.registry.signing import Envelope, sha256_hex
from consentry.registry.statements import format_time, statement_of
from consentry.registry.vault import seal, unseal

if TYPE_CHECKING:
    from consentry.registry.store import Registry

__all__ = [
    "MAX_PHOTOS_PER_ENROLLMENT",
    "EngineInfo",
    "Sample",
    "StoredEmbedding",
    "calibration_for",
    "decrypt_embeddings",
    "decrypt_photos",
    "enroll",
    "erase_subject",
    "is_erased",
    "open_blobs",
    "record_calibration",
]

MAX_PHOTOS_PER_ENROLLMENT = 999


@dataclass(frozen=True)
class EngineInfo:
    """What identifies the embeddings' space: one index never mixes two."""

    name: str
    version: str
    model_hashes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One accepted enrollment photo: its hash, embedding, optional aligned crop."""

    photo_sha256: str
    embedding: np.ndarray
    aligned_png: bytes | None = None


@dataclass(frozen=True)
class StoredEmbedding:
    vector_id: int
    subject_id: str
    enrollment_id: str
    embedding: np.ndarray


def _context(subject_id: str, kind: str, blob_id: str) -> bytes:
    return f"consentry.{kind}:{subject_id}:{blob_id}".encode()


def _data_key(registry: Registry, session: Session, subject_id: str, create: bool) -> bytes:
    row = session.get(SubjectDataKey, subject_id)
    if row is not None:
        return registry.master_key.unwrap(subject_id, row.wrapped_key)
    if not create:
        raise ErasedError(f"subject {subject_id} has no data key (erased or never enrolled)")
    data_key, wrapped = registry.master_key.new_data_key(subject_id)
    session.add(
        SubjectDataKey(
            subject_id=subject_id, wrapped_key=wrapped, created_at=format_time(registry.now())
        )
    )
    return data_key


def is_erased(session: Session, subject_id: str) -> bool:
    """Whether ``subject_id``'s biometric data was erased (an erasure is logged)."""
    return session.exec(select(Erasure).where(Erasure.subject_id == subject_id)).first() is not None


def enroll(
    registry: Registry, subject: str, engine: EngineInfo, samples: Sequence[Sample]
) -> Enrollment:
    """Encrypt and store ``samples`` for ``subject``; one log entry with hashes only."""
    if not samples:
        raise InputError("nothing to enroll: no photo passed the quality gates")
    if len(samples) > MAX_PHOTOS_PER_ENROLLMENT:
        raise InputError(f"at most {MAX_PHOTOS_PER_ENROLLMENT} photos per enrollment")
    subject_row = registry.get_subject(subject)
    enrollment_id = registry.new_id("enr")
    with registry.db.write() as session:
        if is_erased(session, subject_row.id):
            raise ErasedError(f"subject {subject_row.id} was erased; register them anew")
        data_key = _data_key(registry, session, subject_row.id, create=True)
        blobs: list[BiometricBlob] = []
        for sample in samples:
            vector = np.asarray(sample.embedding, dtype=np.float32).ravel()
            norm = float(np.linalg.norm(vector))
            if not np.isfinite(norm) or norm == 0.0:
                raise InputError("an embedding is zero or not finite")
            items = [("embedding", (vector / norm).astype("<f4").tobytes())]
            if sample.aligned_png is not None:
                items.append(("photo", sample.aligned_png))
            for kind, plaintext in items:
                blob_id = registry.new_id("bio")
                ciphertext = seal(data_key, plaintext, _context(subject_row.id, kind, blob_id))
                blobs.append(
                    BiometricBlob(
                        id=blob_id,
                        enrollment_id=enrollment_id,
                        subject_id=subject_row.id,
                        kind=kind,
                        engine=engine.name,
                        vector_id=-1,
                        photo_sha256=sample.photo_sha256,
                        ciphertext=ciphertext,
                        sha256=sha256_hex(ciphertext),
                    )
                )
        row = Enrollment(
            id=enrollment_id,
            subject_id=subject_row.id,
            engine=engine.name,
            engine_version=engine.version,
            model_hashes_json=json.dumps(engine.model_hashes, sort_keys=True),
            blobs_json=json.dumps(
                [
                    {"id": b.id, "kind": b.kind, "photo_sha256": b.photo_sha256, "sha256": b.sha256}
                    for b in blobs
                ]
            ),
            created_at=format_time(registry.now()),
            log_index=-1,
        )
        key = registry.signing_key(session)
        index = registry.append(
            session, row, "enrollment", row.id, Envelope.sign(statement_of(row), [key])
        )
        position = 0
        for blob in blobs:
            if blob.kind == "embedding":
                blob.vector_id = index * 1000 + position
                position += 1
            session.add(blob)
    return row


def erase_subject(registry: Registry, subject: str, reason: str) -> Erasure:
    """Destroy the subject's data key and blobs; log an erasure (hashes only)."""
    subject_row = registry.get_subject(subject)
    with registry.db.write() as session:
        if is_erased(session, subject_row.id):
            raise ErasedError(f"subject {subject_row.id} is already erased")
        enrollments = list(
            session.exec(
                select(Enrollment.id)
                .where(Enrollment.subject_id == subject_row.id)
                .order_by(col(Enrollment.log_index))
            )
        )
        for blob in session.exec(
            select(BiometricBlob).where(BiometricBlob.subject_id == subject_row.id)
        ):
            session.delete(blob)
        key_row = session.get(SubjectDataKey, subject_row.id)
        if key_row is not None:
            session.delete(key_row)
        row = Erasure(
            id=registry.new_id("era"),
            subject_id=subject_row.id,
            enrollments_json=json.dumps(enrollments),
            reason=reason.strip() or "erasure requested",
            created_at=format_time(registry.now()),
            log_index=-1,
        )
        key = registry.signing_key(session)
        registry.append(session, row, "erasure", row.id, Envelope.sign(statement_of(row), [key]))
    # persisted index caches hold the vectors (encrypted under the master key): purge them
    for cache in (registry.home.root / "cache").glob("index-*.bin"):
        cache.unlink(missing_ok=True)
    return row


def _decrypt(
    registry: Registry, session: Session, blobs: Sequence[BiometricBlob]
) -> list[tuple[BiometricBlob, bytes]]:
    keys: dict[str, bytes] = {}
    result = []
    for blob in blobs:
        if blob.subject_id not in keys:
            keys[blob.subject_id] = _data_key(registry, session, blob.subject_id, create=False)
        plaintext = unseal(
            keys[blob.subject_id], blob.ciphertext, _context(blob.subject_id, blob.kind, blob.id)
        )
        result.append((blob, plaintext))
    return result


def open_blobs(
    registry: Registry, session: Session, blobs: Sequence[BiometricBlob]
) -> list[tuple[BiometricBlob, bytes]]:
    """Decrypt exactly these blob rows (in memory only): ErasedError without the data
    key, VaultError when a ciphertext does not authenticate."""
    return _decrypt(registry, session, blobs)


def decrypt_embeddings(
    registry: Registry,
    engine: str,
    enrollment_ids: Sequence[str] | None = None,
) -> list[StoredEmbedding]:
    """Decrypt (in memory only) the embeddings of ``engine``, optionally of some enrollments."""
    query = select(BiometricBlob).where(
        BiometricBlob.kind == "embedding", BiometricBlob.engine == engine
    )
    if enrollment_ids is not None:
        query = query.where(col(BiometricBlob.enrollment_id).in_(list(enrollment_ids)))
    with registry.db.read() as session:
        pairs = _decrypt(
            registry, session, list(session.exec(query.order_by(col(BiometricBlob.vector_id))))
        )
    return [
        StoredEmbedding(
            blob.vector_id,
            blob.subject_id,
            blob.enrollment_id,
            np.frombuffer(plain, dtype="<f4").astype(np.float32),
        )
        for blob, plain in pairs
    ]


def decrypt_photos(registry: Registry, subject: str) -> list[tuple[str, bytes]]:
    """The subject's kept aligned photos as (photo sha256, PNG bytes), in memory only."""
    subject_row = registry.get_subject(subject)
    with registry.db.read() as session:
        if is_erased(session, subject_row.id):
            raise ErasedError(f"subject {subject_row.id} was erased")
        blobs = list(
            session.exec(
                select(BiometricBlob)
                .where(BiometricBlob.subject_id == subject_row.id, BiometricBlob.kind == "photo")
                .order_by(col(BiometricBlob.id))
            )
        )
        pairs = _decrypt(registry, session, blobs)
    return [(blob.photo_sha256, plain) for blob, plain in pairs]


def record_calibration(registry: Registry, row: Calibration) -> Calibration:
    """Log a measured threshold for an engine; it is in force from then on."""
    row.id = registry.new_id("cal")
    row.created_at = format_time(registry.now())
    with registry.db.write() as session:
        key = registry.signing_key(session)
        registry.append(
            session, row, "calibration", row.id, Envelope.sign(statement_of(row), [key])
        )
    return row


def calibration_for(registry: Registry, engine: str) -> Calibration:
    """The newest calibration of ``engine``; NotFoundError when there is none."""
    with registry.db.read() as session:
        row = session.exec(
            select(Calibration)
            .where(Calibration.engine == engine)
            .order_by(col(Calibration.log_index).desc())
        ).first()
    if row is None:
        raise NotFoundError(f"engine {engine} has no calibration")
    return row
