"""Encrypted enrollment, crypto-erasure, calibration records and the identity index.

Embeddings here are synthetic unit vectors (the face engines have their own
tests); everything else is real: AES-GCM, SQLite and PostgreSQL, FAISS, processes.
"""

from __future__ import annotations

import base64
import multiprocessing as mp
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from consentry import Registry
from consentry.errors import ErasedError, InputError, VaultError
from consentry.faces.calibration import PairScores, threshold_at_fmr
from consentry.identity.index import IdentityIndex
from consentry.registry.biometrics import (
    EngineInfo,
    Sample,
    calibration_for,
    decrypt_embeddings,
    decrypt_photos,
    enroll,
    erase_subject,
    record_calibration,
)
from consentry.registry.models import Calibration

DIM = 128
ENGINE = EngineInfo("sface", "test-version", {"model.onnx": "ab" * 32})


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def near(vector: np.ndarray, seed: int, noise: float = 0.3) -> np.ndarray:
    jitter = np.random.default_rng(seed).normal(size=DIM).astype(np.float32) * noise / np.sqrt(DIM)
    out = vector + jitter
    return out / np.linalg.norm(out)


def samples(seed: int, count: int = 3, photo: bytes | None = None) -> list[Sample]:
    return [
        Sample(f"{seed:02d}{i:02d}".ljust(64, "0"), near(unit(seed), seed * 100 + i), photo)
        for i in range(count)
    ]


@pytest.fixture
def registry(tmp_path: Path, db_url: str) -> Iterator[Registry]:
    reg = Registry.init(tmp_path / "home", db_url)
    yield reg
    reg.close()


def test_enrollment_round_trip_is_encrypted_and_logs_hashes_only(registry: Registry) -> None:
    ada = registry.add_subject("Ada")
    batch = samples(1, photo=b"\x89PNG fake aligned photo bytes")
    row = enroll(registry, ada.id, ENGINE, batch)
    stored = decrypt_embeddings(registry, "sface")
    assert [s.subject_id for s in stored] == [ada.id] * 3
    for sample, item in zip(batch, stored, strict=True):
        assert np.allclose(sample.embedding, item.embedding, atol=1e-6)
    assert decrypt_photos(registry, ada.id)[0][1] == b"\x89PNG fake aligned photo bytes"
    leaf = registry.entry(row.log_index).leaf_json
    raw = batch[0].embedding.astype("<f4").tobytes()
    assert base64.b64encode(raw).decode()[:40] not in leaf
    with registry.db.read() as session:
        blobs = session.execute(text("SELECT ciphertext FROM biometric_blobs")).all()
    assert all(raw not in bytes(b[0]) for b in blobs)
    registry.checkpoint()
    assert registry.verify_log().ok


def test_empty_or_degenerate_enrollment_is_refused(registry: Registry) -> None:
    ada = registry.add_subject("Ada")
    with pytest.raises(InputError):
        enroll(registry, ada.id, ENGINE, [])
    with pytest.raises(InputError):
        enroll(registry, ada.id, ENGINE, [Sample("0" * 64, np.zeros(DIM, np.float32))])
    assert registry.log_size() == 2


def test_erasure_destroys_key_and_blobs_and_log_still_verifies(registry: Registry) -> None:
    ada, bob = registry.add_subject("Ada"), registry.add_subject("Bob")
    enroll(registry, ada.id, ENGINE, samples(1, photo=b"photo"))
    enroll(registry, bob.id, ENGINE, samples(2))
    erasure = erase_subject(registry, ada.id, "subject asked")
    assert [s.subject_id for s in decrypt_embeddings(registry, "sface")] == [bob.id] * 3
    with pytest.raises(ErasedError):
        decrypt_photos(registry, ada.id)
    with pytest.raises(ErasedError):
        enroll(registry, ada.id, ENGINE, samples(1))
    with pytest.raises(ErasedError):
        erase_subject(registry, ada.id, "again")
    with registry.db.read() as session:
        left = session.execute(
            text("SELECT count(*) FROM biometric_blobs WHERE subject_id = :s"), {"s": ada.id}
        ).scalar_one()
        keys = session.execute(
            text("SELECT count(*) FROM subject_data_keys WHERE subject_id = :s"), {"s": ada.id}
        ).scalar_one()
    assert (left, keys) == (0, 0)
    assert registry.entry(erasure.log_index).kind == "erasure"
    registry.checkpoint()
    report = registry.verify_log()
    assert report.ok, report.problems


def test_blob_deleted_outside_erasure_is_reported(registry: Registry) -> None:
    ada = registry.add_subject("Ada")
    row = enroll(registry, ada.id, ENGINE, samples(1))
    victim = row.blobs[0]["id"]
    with registry.db.writer.begin() as conn:
        conn.execute(text("DELETE FROM biometric_blobs WHERE id = :i"), {"i": victim})
    registry.checkpoint()
    problems = registry.verify_log().problems
    assert any(victim in p and "missing" in p for p in problems), problems


def test_ciphertext_moved_to_another_subject_fails_to_decrypt(registry: Registry) -> None:
    ada, bob = registry.add_subject("Ada"), registry.add_subject("Bob")
    enroll(registry, ada.id, ENGINE, samples(1, count=1))
    enroll(registry, bob.id, ENGINE, samples(2, count=1))
    with registry.db.writer.begin() as conn:
        conn.execute(
            text(
                "UPDATE biometric_blobs SET ciphertext = "
                "(SELECT ciphertext FROM biometric_blobs WHERE subject_id = :a) "
                "WHERE subject_id = :b"
            ),
            {"a": ada.id, "b": bob.id},
        )
    with pytest.raises(VaultError):
        decrypt_embeddings(registry, "sface")
    registry.checkpoint()
    assert not registry.verify_log().ok


def test_newest_calibration_is_in_force(registry: Registry) -> None:
    def calibration(threshold: float) -> Calibration:
        return Calibration(
            id="", engine="sface", engine_version="v", threshold=threshold, fmr_target=1e-3,
            fmr=0.0, fnmr=0.02, eer=0.004, genuine_pairs=10, impostor_pairs=90,
            dataset_sha256="cd" * 32, created_at="", log_index=-1,
        )

    record_calibration(registry, calibration(0.31))
    record_calibration(registry, calibration(0.42))
    assert calibration_for(registry, "sface").threshold == pytest.approx(0.42)
    registry.checkpoint()
    assert registry.verify_log().ok


def test_threshold_at_fmr_never_exceeds_target() -> None:
    rng = np.random.default_rng(0)
    scores = PairScores(rng.normal(0.7, 0.1, 500), rng.normal(0.1, 0.1, 5000))
    rates = threshold_at_fmr(scores, 1e-3)
    assert rates.fmr <= 1e-3
    assert np.mean(scores.impostor >= rates.threshold) == rates.fmr
    assert 0 < rates.eer < 0.05


def test_index_matches_enrolled_and_forgets_erased(registry: Registry) -> None:
    ada, bob = registry.add_subject("Ada"), registry.add_subject("Bob")
    enroll(registry, ada.id, ENGINE, samples(1))
    enroll(registry, bob.id, ENGINE, samples(2))
    index = IdentityIndex(registry, "sface", DIM)
    assert len(index) == 6
    probe = near(unit(1), 999)
    found = index.search(probe)[0]
    assert [m.subject_id for m in found] == [ada.id]
    assert index.search(unit(77))[0] == []  # a stranger matches nobody
    erase_subject(registry, ada.id, "asked")
    assert index.refresh() == 1
    assert index.search(probe)[0] == []
    assert len(index) == 3


def test_index_cache_is_used_verified_and_purged_on_erasure(registry: Registry) -> None:
    ada = registry.add_subject("Ada")
    enroll(registry, ada.id, ENGINE, samples(1))
    first = IdentityIndex(registry, "sface", DIM)
    cache = first.cache_path()
    assert cache.exists() and ada.id.encode() not in cache.read_bytes()  # encrypted
    second = IdentityIndex(registry, "sface", DIM)
    assert len(second) == 3
    # a forged cache (bytes flipped) is ignored and the index rebuilt from the registry
    data = bytearray(cache.read_bytes())
    data[-5] ^= 0xFF
    cache.write_bytes(bytes(data))
    rebuilt = IdentityIndex(registry, "sface", DIM)
    assert len(rebuilt) == 3
    erase_subject(registry, ada.id, "asked")
    assert not cache.exists()


def _follower(home: str, db_url: str, conn: Connection) -> None:
    registry = Registry.open(home, db_url)
    index = IdentityIndex(registry, "sface", DIM, cache=False)
    index.follow(interval=0.05)
    conn.send("ready")
    while True:
        message = conn.recv()
        if message is None:
            break
        conn.send([m.subject_id for m in index.search(np.asarray(message))[0]])
    index.stop()
    registry.close()


def _wait_until(conn: Connection, probe: np.ndarray, expected: list[str], limit: float) -> float:
    start = time.monotonic()
    while True:
        conn.send(probe.tolist())
        if conn.recv() == expected:
            return time.monotonic() - start
        if time.monotonic() - start > limit:
            raise AssertionError(f"the other process did not see {expected} within {limit} s")
        time.sleep(0.02)


def test_another_process_sees_enrollment_and_erasure_within_a_second(
    registry: Registry, db_url: str
) -> None:
    ada = registry.add_subject("Ada")
    parent, child = mp.get_context("spawn").Pipe()
    process = mp.get_context("spawn").Process(
        target=_follower, args=(str(registry.home.root), db_url, child)
    )
    process.start()
    try:
        assert parent.poll(60) and parent.recv() == "ready"
        probe = near(unit(5), 4242)
        _wait_until(parent, probe, [], 1.0)
        enroll(registry, ada.id, ENGINE, samples(5))
        assert _wait_until(parent, probe, [ada.id], 1.0) < 1.0
        erase_subject(registry, ada.id, "asked")
        assert _wait_until(parent, probe, [], 1.0) < 1.0
    finally:
        parent.send(None)
        process.join(10)
        if process.is_alive():
            process.kill()
