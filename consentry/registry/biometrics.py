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
- An opt-out deletes the subject's kept photos (and stored prior files) in the
  transaction of its log leaf and keeps their data key and embeddings, so their
  face is still matched; from then on no kept photo is stored for them and the
  policy refuses every job involving them (see ``policy.decide``).
- Calibrations form a stack, replayed in log order: ``measure`` pushes, ``undo``
  pops, ``reset`` empties; every entry states the threshold it puts in force, so
  the newest entry's threshold is the one in force (``calibration_for``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlmodel import Session, col, select

from consentry.errors import ErasedError, InputError, NotFoundError, OptedOutError
from consentry.registry.models import (
    BiometricBlob,
    Calibration,
    Enrollment,
    Erasure,
    OptOut,
    Prior,
    SubjectDataKey,
)
from consentry.registry.prior_files import prior_store_path
from consentry.registry.signing import sha256_hex
from consentry.registry.statements import format_time
from consentry.registry.vault import seal, unseal

if TYPE_CHECKING:
    from consentry.registry.store import Registry

__all__ = [
    "ERASE_WARNING",
    "MAX_PHOTOS_PER_ENROLLMENT",
    "OPTED_OUT_ERASE_WARNING",
    "CalibrationState",
    "EngineInfo",
    "Sample",
    "StoredEmbedding",
    "calibration_for",
    "calibration_state",
    "decrypt_embeddings",
    "decrypt_photos",
    "enroll",
    "erase_subject",
    "erase_warning",
    "has_enrollment",
    "is_erased",
    "is_opted_out",
    "open_blobs",
    "opt_out_subject",
    "opted_out_subjects",
    "record_calibration",
    "reset_calibration",
    "subject_embeddings",
    "undo_calibration",
]

MAX_PHOTOS_PER_ENROLLMENT = 999

# What every erasure must tell its caller (CLI: stderr and --json).
ERASE_WARNING = (
    "after erasure the gate no longer recognises this person: a photo of them is an "
    "unregistered face, and jobs with it are ALLOWED (unless refuse_unknown_faces is on); "
    "grants stay in the log. To keep refusing every job with their face or name, use "
    "'consentry subject opt-out' instead."
)
# The same for a subject who opted out already: pointing them to the opt-out is
# wrong, and what erasure still takes away is their face's recognition.
OPTED_OUT_ERASE_WARNING = (
    "this subject opted out: their name and priors stay refused (the opt-out stands in "
    "the log), but after erasure the gate no longer recognises their FACE: a photo of "
    "them is an unregistered face, and jobs with it are ALLOWED (unless "
    "refuse_unknown_faces is on). Their opt-out already keeps refusing their face "
    "without erasing; erase only if they asked for their biometric data to be destroyed."
)


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
    # its weight in the second stage of a match (``faces.quality.face_quality``),
    # signed into the enrollment; None: not measured (weighs 1)
    quality: float | None = None


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


def is_opted_out(session: Session, subject_id: str) -> bool:
    """Whether ``subject_id`` opted out (an opt-out is logged)."""
    return session.exec(select(OptOut).where(OptOut.subject_id == subject_id)).first() is not None


def opted_out_subjects(registry: Registry, subjects: Iterable[str]) -> frozenset[str]:
    """Those of ``subjects`` that opted out, as the verified signed log says (the
    consent follower), never as rows say: deleting an opt-out row changes nothing."""
    wanted = set(subjects)
    if not wanted:
        return frozenset()
    state = registry.consent
    state.refresh()
    return frozenset(wanted & state.opted_out.keys())


def enroll(
    registry: Registry, subject: str, engine: EngineInfo, samples: Sequence[Sample]
) -> Enrollment:
    """Encrypt and store ``samples`` for ``subject``; one log entry with hashes only.

    Refused for an erased subject, and with kept photos for an opted-out one
    (their embeddings may still be added: more of them only refuse better).
    """
    if not samples:
        raise InputError("nothing to enroll: no photo passed the quality gates")
    if len(samples) > MAX_PHOTOS_PER_ENROLLMENT:
        raise InputError(f"at most {MAX_PHOTOS_PER_ENROLLMENT} photos per enrollment")
    subject_row = registry.get_subject(subject)
    enrollment_id = registry.new_id("enr")
    with registry.db.write() as session:
        _check_may_enroll(session, subject_row.id, samples)
        data_key = _data_key(registry, session, subject_row.id, create=True)
        sealed = [
            (sample, _sealed_blob(registry, data_key, subject_row.id, enrollment_id, engine,
                                  sample, item))
            for sample in samples
            for item in _sample_items(sample)
        ]  # fmt: skip
        blobs = [blob for _, blob in sealed]
        row = Enrollment(
            id=enrollment_id,
            subject_id=subject_row.id,
            engine=engine.name,
            engine_version=engine.version,
            model_hashes_json=json.dumps(engine.model_hashes, sort_keys=True),
            blobs_json=json.dumps([_signed_blob(sample, b) for sample, b in sealed]),
            created_at=format_time(registry.now()),
            log_index=-1,
        )
        index = registry.log.record(session, row)
        _number_embeddings(blobs, index)
        for blob in blobs:
            session.add(blob)
    return row


def _check_may_enroll(session: Session, subject_id: str, samples: Sequence[Sample]) -> None:
    """Refuse an erased subject, and kept photos of an opted-out one."""
    if is_erased(session, subject_id):
        raise ErasedError(f"subject {subject_id} was erased; register them anew")
    keeps = any(sample.aligned_png is not None for sample in samples)
    if keeps and is_opted_out(session, subject_id):
        raise OptedOutError(
            f"subject {subject_id} opted out: no photo of them is kept; "
            "enroll without --keep-photos"
        )


def _signed_blob(sample: Sample, blob: BiometricBlob) -> dict[str, Any]:
    """What the enrollment statement commits to for one blob (an embedding with a
    measured quality also signs it; older enrollments have no ``quality``)."""
    signed: dict[str, Any] = {
        "id": blob.id,
        "kind": blob.kind,
        "photo_sha256": blob.photo_sha256,
        "sha256": blob.sha256,
    }
    if blob.kind == "embedding" and sample.quality is not None:
        signed["quality"] = float(sample.quality)
    return signed


def _sample_items(sample: Sample) -> list[tuple[str, bytes]]:
    """What one sample stores: its unit-norm little-endian float32 embedding, then its
    aligned photo if kept. InputError for a zero or non-finite embedding."""
    vector = np.asarray(sample.embedding, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise InputError("an embedding is zero or not finite")
    items = [("embedding", (vector / norm).astype("<f4").tobytes())]
    if sample.aligned_png is not None:
        items.append(("photo", sample.aligned_png))
    return items


def _sealed_blob(
    registry: Registry,
    data_key: bytes,
    subject_id: str,
    enrollment_id: str,
    engine: EngineInfo,
    sample: Sample,
    item: tuple[str, bytes],
) -> BiometricBlob:
    """One item sealed under the subject's data key, bound to its kind and blob id."""
    kind, plaintext = item
    blob_id = registry.new_id("bio")
    ciphertext = seal(data_key, plaintext, _context(subject_id, kind, blob_id))
    return BiometricBlob(
        id=blob_id,
        enrollment_id=enrollment_id,
        subject_id=subject_id,
        kind=kind,
        engine=engine.name,
        vector_id=-1,
        photo_sha256=sample.photo_sha256,
        ciphertext=ciphertext,
        sha256=sha256_hex(ciphertext),
    )


def _number_embeddings(blobs: Sequence[BiometricBlob], index: int) -> None:
    """Embedding blobs get vector ids ``index * 1000 + position`` in order; others keep -1."""
    position = 0
    for blob in blobs:
        if blob.kind == "embedding":
            blob.vector_id = index * 1000 + position
            position += 1


def erase_warning(registry: Registry, subject: str) -> str:
    """What erasing ``subject`` (id or unique name) takes away, in words: for one who
    opted out (as the verified signed log says) their face's recognition only, else
    every refusal of them."""
    subject_id = registry.get_subject(subject).id
    if opted_out_subjects(registry, [subject_id]):
        return OPTED_OUT_ERASE_WARNING
    return ERASE_WARNING


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
        registry.log.record(session, row)
    # persisted index caches hold the vectors (encrypted under the master key): purge them
    for cache in (registry.home.root / "cache").glob("index-*.bin"):
        cache.unlink(missing_ok=True)
    _delete_prior_files(registry, subject_row.id)
    return row


def opt_out_subject(registry: Registry, subject: str, reason: str) -> OptOut:
    """Keep only what refusing needs: delete the subject's kept photos and stored
    prior files, keep their data key and embeddings, log a signed opt-out.

    From the opt-out on, the policy refuses every job with their face, name or
    prior whatever the grants, no grant can be made for them (``Registry.grant``)
    and no kept photo is stored for them. Final: there is no opting back in.
    """
    subject_row = registry.get_subject(subject)
    with registry.db.write() as session:
        if is_erased(session, subject_row.id):
            raise ErasedError(
                f"subject {subject_row.id} was erased: nothing of their face is left to refuse "
                "with; register them anew, enroll them, then opt them out"
            )
        if is_opted_out(session, subject_row.id):
            raise OptedOutError(f"subject {subject_row.id} has already opted out")
        photos = list(
            session.exec(
                select(BiometricBlob)
                .where(BiometricBlob.subject_id == subject_row.id, BiometricBlob.kind == "photo")
                .order_by(col(BiometricBlob.id))
            )
        )
        for blob in photos:
            session.delete(blob)
        row = OptOut(
            id=registry.new_id("opt"),
            subject_id=subject_row.id,
            photos_json=json.dumps([blob.id for blob in photos]),
            reason=reason.strip() or "opt-out requested",
            created_at=format_time(registry.now()),
            log_index=-1,
        )
        registry.log.record(session, row)
    _delete_prior_files(registry, subject_row.id)
    return row


def _delete_prior_files(registry: Registry, subject_id: str) -> None:
    """Delete the stored files of the subject's priors (their rows and hashes stay
    in the log); a file another subject's prior also names is kept."""
    with registry.db.read() as session:
        priors = list(session.exec(select(Prior)))
    theirs = [p for p in priors if p.subject_id == subject_id]
    shared = {p.sha256 for p in priors if p.subject_id != subject_id}
    for prior in theirs:
        if prior.sha256 not in shared:
            prior_store_path(registry, prior.sha256, prior.kind).unlink(missing_ok=True)


def has_enrollment(registry: Registry, subject_id: str) -> bool:
    """Whether ``subject_id`` has stored embeddings (of any engine)."""
    with registry.db.read() as session:
        found = session.exec(
            select(BiometricBlob.id).where(
                BiometricBlob.subject_id == subject_id, BiometricBlob.kind == "embedding"
            )
        ).first()
    return found is not None


def subject_embeddings(registry: Registry, subject_id: str, engine: str) -> np.ndarray:
    """The subject's stored embeddings of ``engine`` (rows of unit vectors; 0 rows
    when there are none), decrypted in memory only."""
    with registry.db.read() as session:
        blobs = list(
            session.exec(
                select(BiometricBlob)
                .where(
                    BiometricBlob.subject_id == subject_id,
                    BiometricBlob.kind == "embedding",
                    BiometricBlob.engine == engine,
                )
                .order_by(col(BiometricBlob.vector_id))
            )
        )
        pairs = _decrypt(registry, session, blobs) if blobs else []
    vectors = [np.frombuffer(plain, dtype="<f4").astype(np.float32) for _, plain in pairs]
    return np.stack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)


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


@dataclass(frozen=True)
class CalibrationState:
    """An engine's calibrations replayed: the threshold in force and the stack.

    ``newest`` is the newest calibration entry (None: none logged, the shipped
    default is in force); ``stack`` the measured entries an undo would walk back
    through, oldest first.
    """

    engine: str
    threshold: float
    default: float
    newest: Calibration | None
    stack: tuple[Calibration, ...]


def calibration_state(registry: Registry, engine: str, default: float) -> CalibrationState:
    """Replay ``engine``'s calibration entries in log order (see the invariants)."""
    with registry.db.read() as session:
        rows = list(
            session.exec(
                select(Calibration)
                .where(Calibration.engine == engine)
                .order_by(col(Calibration.log_index))
            )
        )
    stack: list[Calibration] = []
    for row in rows:
        if row.action == "measure":
            stack.append(row)
        elif row.action == "undo":
            if stack:
                stack.pop()
        else:
            stack.clear()
    newest = rows[-1] if rows else None
    threshold = newest.threshold if newest is not None else default
    return CalibrationState(engine, threshold, default, newest, tuple(stack))


def undo_calibration(state: CalibrationState, engine_version: str) -> Calibration:
    """The (unlogged) entry that undoes the newest measured calibration in force:
    it restates the one below it on the stack, or the shipped default."""
    if not state.stack:
        raise InputError(
            f"engine {state.engine}: no measured calibration is in force, nothing to undo "
            f"(threshold {state.threshold:.4f})"
        )
    below = state.stack[-2] if len(state.stack) > 1 else None
    if below is None:
        return _default_entry(state, engine_version, "undo")
    return Calibration(
        id="",
        engine=state.engine,
        engine_version=below.engine_version,
        threshold=below.threshold,
        fmr_target=below.fmr_target,
        fmr=below.fmr,
        fnmr=below.fnmr,
        eer=below.eer,
        genuine_pairs=below.genuine_pairs,
        impostor_pairs=below.impostor_pairs,
        dataset_sha256=below.dataset_sha256,
        review_threshold=below.review_threshold,  # its 1:N operating point comes back too
        fpir_target=below.fpir_target,
        gallery_size=below.gallery_size,
        max_gallery=below.max_gallery,
        action="undo",
        restores=below.id,
        created_at="",
        log_index=-1,
    )


def reset_calibration(state: CalibrationState, engine_version: str) -> Calibration:
    """The (unlogged) entry that puts the shipped default back in force."""
    if state.newest is None or (not state.stack and state.threshold == state.default):
        raise InputError(
            f"engine {state.engine}: the shipped default {state.default:.4f} is already in force"
        )
    return _default_entry(state, engine_version, "reset")


def _default_entry(state: CalibrationState, engine_version: str, action: str) -> Calibration:
    return Calibration(
        id="",
        engine=state.engine,
        engine_version=engine_version,
        threshold=state.default,
        genuine_pairs=0,
        impostor_pairs=0,
        dataset_sha256="",
        action=action,
        restores=None,
        created_at="",
        log_index=-1,
    )


def record_calibration(registry: Registry, row: Calibration) -> Calibration:
    """Log a calibration entry for an engine; its threshold is in force from then on.

    Callers check a measured threshold before recording it (``consentry
    calibrate`` refuses small sets, high FNMR and far thresholds).
    """
    if row.action not in ("measure", "undo", "reset"):
        raise InputError(f"unknown calibration action {row.action!r}")
    row.id = registry.new_id("cal")
    row.created_at = format_time(registry.now())
    with registry.db.write() as session:
        registry.log.record(session, row)
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
