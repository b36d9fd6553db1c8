"""The identity index: FAISS over every registered embedding of one engine.

Invariants
- Exact search (``IndexIDMap2(IndexFlatIP)``) over unit vectors: a refusal
  gate must not miss. One index holds one engine's embeddings, never a mix.
- The index follows the log: ``refresh()`` applies every entry after the last
  one it saw (enrollments add vectors, erasures remove every vector of the
  subject, calibrations move the threshold), so a change made by any process
  is seen by the next ``refresh()``; ``follow()`` refreshes in a background
  thread every ``interval`` seconds.
- The persisted cache is encrypted and authenticated with a key derived from
  the master key (it holds biometric vectors), records the log size and root
  it reflects, and is used only if that root is still the root of the log's
  prefix of that size; otherwise the index is rebuilt from the registry.
"""

from __future__ import annotations

import json
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from sqlmodel import col, select

from consentry.errors import ConsentryError, InputError, NotFoundError
from consentry.fsutil import atomic_write
from consentry.registry import merkle
from consentry.registry.biometrics import calibration_for, decrypt_embeddings
from consentry.registry.models import Enrollment, Erasure, LogEntry
from consentry.registry.store import Registry
from consentry.registry.vault import seal, unseal

__all__ = ["DEFAULT_THRESHOLDS", "IdentityIndex", "SubjectMatch"]

# Cosine similarity thresholds used until `consentry calibrate` records one.
# Both measured at FMR <= 1e-3 on shared/faces: sface 0.3652 (FNMR 2.1%), dlib
# 0.922 on its L2-normalised descriptors (FNMR 0.8%; raw descriptors are not unit
# length, so dlib's customary Euclidean 0.6 does not translate to a cosine).
DEFAULT_THRESHOLDS: dict[str, float] = {"sface": 0.3652, "dlib": 0.922, "insightface": 0.40}

_CACHE_MAGIC = b"CSIX1"


@dataclass(frozen=True)
class SubjectMatch:
    """A registered subject whose embedding is within the threshold of a face."""

    subject_id: str
    similarity: float
    vector_id: int


class IdentityIndex:
    """FAISS index of one engine's registered identities, kept in step with the log."""

    def __init__(self, registry: Registry, engine: str, dim: int, cache: bool = True) -> None:
        self.registry = registry
        self.engine = engine
        self.dim = dim
        self._lock = threading.RLock()
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._subject_of: dict[int, str] = {}
        self._vectors: dict[int, np.ndarray] = {}
        self._log_size = 0
        self._threshold = DEFAULT_THRESHOLDS.get(engine, 0.5)
        self._cache_path = registry.home.root / "cache" / f"index-{engine}.bin"
        self._use_cache = cache
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if cache:
            self._load_cache()
        self.refresh()

    # ------------------------------------------------------------------ state
    @property
    def log_size(self) -> int:
        return self._log_size

    @property
    def threshold(self) -> float:
        return self._threshold

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def subjects(self) -> set[str]:
        with self._lock:
            return set(self._subject_of.values())

    # ------------------------------------------------------------------ following
    def refresh(self) -> int:
        """Apply every log entry after the last one seen; returns how many."""
        with self._lock:
            with self.registry.db.read() as session:
                entries = list(
                    session.exec(
                        select(LogEntry.idx, LogEntry.kind, LogEntry.record_id)
                        .where(col(LogEntry.idx) >= self._log_size)
                        .order_by(col(LogEntry.idx))
                    )
                )
                enrollments = {
                    e.id: e
                    for e in session.exec(
                        select(Enrollment).where(
                            col(Enrollment.id).in_([r for _, k, r in entries if k == "enrollment"])
                        )
                    )
                }
                erasures = {
                    e.id: e.subject_id
                    for e in session.exec(
                        select(Erasure).where(
                            col(Erasure.id).in_([r for _, k, r in entries if k == "erasure"])
                        )
                    )
                }
            pending: list[str] = []
            changed = False
            for index, kind, record_id in entries:
                if kind == "enrollment":
                    enrollment = enrollments.get(record_id)
                    if enrollment is not None and enrollment.engine == self.engine:
                        pending.append(record_id)
                        changed = True
                elif kind == "erasure":
                    self._add(pending)
                    pending = []
                    self._remove_subject(erasures.get(record_id, ""))
                    changed = True
                self._log_size = index + 1
            self._add(pending)
            if any(kind == "calibration" for _, kind, _ in entries):
                self._reload_threshold()
            # Only a change of the vectors rewrites the cache: a cache of an earlier log
            # prefix stays valid (its root is checked against that prefix on load, and
            # the entries after it are applied), so decisions cost no rewrite.
            if changed and self._use_cache:
                self._save_cache()
            return len(entries)

    def _add(self, enrollment_ids: list[str]) -> None:
        if not enrollment_ids:
            return
        stored = [
            s
            for s in decrypt_embeddings(self.registry, self.engine, enrollment_ids)
            if s.vector_id not in self._subject_of
        ]
        if not stored:
            return
        matrix = np.stack([s.embedding for s in stored]).astype(np.float32)
        if matrix.shape[1] != self.dim:
            raise InputError(
                f"engine {self.engine} embeddings have {matrix.shape[1]} dimensions, "
                f"the index {self.dim}"
            )
        ids = np.array([s.vector_id for s in stored], dtype=np.int64)
        self._index.add_with_ids(matrix, ids)
        for item, vector in zip(stored, matrix, strict=True):
            self._subject_of[item.vector_id] = item.subject_id
            self._vectors[item.vector_id] = vector

    def _remove_subject(self, subject_id: str) -> None:
        ids = [i for i, s in self._subject_of.items() if s == subject_id]
        if ids:
            self._index.remove_ids(faiss.IDSelectorBatch(np.array(ids, dtype=np.int64)))
            for i in ids:
                del self._subject_of[i]
                del self._vectors[i]

    def _reload_threshold(self) -> None:
        try:
            self._threshold = calibration_for(self.registry, self.engine).threshold
        except NotFoundError:
            self._threshold = DEFAULT_THRESHOLDS.get(self.engine, 0.5)

    def follow(self, interval: float = 0.2) -> None:
        """Refresh in a daemon thread every ``interval`` seconds until ``stop()``."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                except ConsentryError:
                    continue  # a transient read error; the next tick retries

        self._thread = threading.Thread(target=loop, name=f"index-{self.engine}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # ------------------------------------------------------------------ search
    def search(
        self, vectors: np.ndarray, k: int | None = None, threshold: float | None = None
    ) -> list[list[SubjectMatch]]:
        """For each query vector, every subject at or above the threshold, best first.

        A subject appears once per query, with their best similarity. With ``k=None``
        (what the gate uses) nothing is cut: this is a FAISS range search over every
        stored vector, so look-alike subjects above the threshold can never crowd the
        real one out of the answer (the per-job face cap bounds the cost). ``k``
        keeps only the best ``k`` subjects, for ranking and benchmarks.
        """
        queries = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        limit = self._threshold if threshold is None else threshold
        with self._lock:
            if self._index.ntotal == 0:
                return [[] for _ in range(len(queries))]
            rows = self._range(queries, limit) if limit > -1.0 else self._ranked(queries, k)
            results: list[list[SubjectMatch]] = []
            for row in rows:
                best: dict[str, SubjectMatch] = {}
                for score, vector_id in row:
                    if vector_id < 0 or score < limit:
                        continue
                    subject = self._subject_of[vector_id]
                    if subject not in best or best[subject].similarity < score:
                        best[subject] = SubjectMatch(subject, score, vector_id)
                ordered = sorted(best.values(), key=lambda m: (-m.similarity, m.subject_id))
                results.append(ordered if k is None else ordered[:k])
        return results

    def _range(self, queries: np.ndarray, limit: float) -> list[list[tuple[float, int]]]:
        """Every (score, vector id) with score >= ``limit``, per query (exact)."""
        # FAISS keeps inner products strictly above the radius: step just below it.
        radius = float(np.nextafter(np.float32(limit), np.float32(-np.inf)))
        lims, scores, ids = self._index.range_search(queries, radius)
        return [
            [(float(scores[j]), int(ids[j])) for j in range(int(lims[q]), int(lims[q + 1]))]
            for q in range(len(queries))
        ]

    def _ranked(self, queries: np.ndarray, k: int | None) -> list[list[tuple[float, int]]]:
        """The nearest vectors per query, deep enough to hold ``k`` distinct subjects."""
        total = int(self._index.ntotal)
        wanted = total if k is None else k
        depth = min(total, max(wanted * 4, 16))
        while True:
            scores, ids = self._index.search(queries, depth)
            enough = all(
                len({self._subject_of[int(i)] for i in row if i >= 0}) >= wanted for row in ids
            )
            if enough or depth >= total:
                break
            depth = min(total, depth * 4)
        return [
            [(float(s), int(i)) for s, i in zip(row_s, row_i, strict=True)]
            for row_s, row_i in zip(scores, ids, strict=True)
        ]

    # ------------------------------------------------------------------ cache
    def _cache_key(self) -> bytes:
        return self.registry.master_key.derive(f"index-cache:{self.engine}")

    def _save_cache(self) -> None:
        ids = sorted(self._vectors)
        header = json.dumps(
            {
                "engine": self.engine,
                "dim": self.dim,
                "log_size": self._log_size,
                "root": merkle.root_hash(self.registry.leaf_hashes(self._log_size)).hex(),
                "ids": ids,
                "subjects": [self._subject_of[i] for i in ids],
                "threshold": self._threshold,
            }
        ).encode()
        matrix = np.stack([self._vectors[i] for i in ids]).astype("<f4").tobytes() if ids else b""
        payload = struct.pack(">I", len(header)) + header + matrix
        blob = _CACHE_MAGIC + seal(self._cache_key(), payload, _CACHE_MAGIC + self.engine.encode())
        self._cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self._cache_path, blob, 0o600)

    def _load_cache(self) -> bool:
        """Load the cache if it authenticates and still matches the log; else ignore it."""
        try:
            blob = self._cache_path.read_bytes()
        except OSError:
            return False
        try:
            if not blob.startswith(_CACHE_MAGIC):
                return False
            payload = unseal(
                self._cache_key(), blob[len(_CACHE_MAGIC) :], _CACHE_MAGIC + self.engine.encode()
            )
            (length,) = struct.unpack(">I", payload[:4])
            header = json.loads(payload[4 : 4 + length])
            size = int(header["log_size"])
            if header["engine"] != self.engine or int(header["dim"]) != self.dim:
                return False
            hashes = self.registry.leaf_hashes(size)
            if len(hashes) != size or merkle.root_hash(hashes).hex() != header["root"]:
                return False  # the log was rewritten or truncated since: rebuild
            ids = [int(i) for i in header["ids"]]
            matrix = np.frombuffer(payload[4 + length :], dtype="<f4").reshape(len(ids), self.dim)
        except (ConsentryError, ValueError, KeyError, struct.error, json.JSONDecodeError):
            return False
        if ids:
            self._index.add_with_ids(
                np.ascontiguousarray(matrix, dtype=np.float32), np.array(ids, dtype=np.int64)
            )
        for i, subject, vector in zip(ids, header["subjects"], matrix, strict=True):
            self._subject_of[i] = str(subject)
            self._vectors[i] = np.array(vector, dtype=np.float32)
        self._log_size = size
        self._threshold = float(header.get("threshold", self._threshold))
        return True

    def cache_path(self) -> Path:
        return self._cache_path
