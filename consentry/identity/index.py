"""The identity index: FAISS over every registered embedding of one engine.

Invariants
- Exact search (``IndexIDMap2(IndexFlatIP)``) over unit vectors: a refusal
  gate must not miss. One index holds one engine's embeddings, never a mix.
- The index follows the signed log (``registry.consent``), not the rows:
  ``refresh()`` applies every verified entry after the last one it saw
  (enrollments add vectors, erasures remove every vector of the subject,
  calibrations move the threshold), so a change made by any process is seen by
  the next ``refresh()``; ``follow()`` refreshes in a background thread every
  ``interval`` seconds.
- Embedding rows are a cache of what the signed enrollment commits to: each row
  must exist while its subject is not erased, and match the signed blob (id,
  kind, subject, enrollment, SHA-256 of the ciphertext); vector ids are derived
  from the signed log index. A missing, edited or undecryptable row (or a
  deleted data key) is a :class:`LogIntegrityError`: the gate refuses rather than
  search an index that lacks a registered face.
- The persisted cache is encrypted and authenticated with a key derived from
  the master key (it holds biometric vectors), records the log size and root
  it reflects, and is used only if that root is still the root of the log's
  prefix of that size; otherwise the index is rebuilt from the registry.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from sqlmodel import col, select

from consentry.errors import (
    ConsentryError,
    ErasedError,
    InputError,
    LogIntegrityError,
    VaultError,
)
from consentry.faces.thresholds import DEFAULT_THRESHOLDS
from consentry.fsutil import atomic_write
from consentry.identity.second_stage import confirm
from consentry.registry.biometrics import open_blobs
from consentry.registry.consent_facts import SignedEnrollment
from consentry.registry.models import BiometricBlob
from consentry.registry.signing import sha256_hex
from consentry.registry.store import Registry
from consentry.registry.vault import seal, unseal

__all__ = ["IdentityIndex", "SubjectMatch"]

_CACHE_MAGIC = b"CSIX1"
_log = logging.getLogger("consentry.index")


@dataclass(frozen=True)
class SubjectMatch:
    """A registered subject whose embedding is within the threshold of a face."""

    subject_id: str
    similarity: float
    vector_id: int
    # at or above the match threshold; False: in the review band [review_threshold,
    # threshold), a candidate a person decides on (see ``IdentityIndex.review_threshold``)
    certain: bool = True


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
        self._weights: dict[int, float] = {}  # second-stage weight (signed photo quality)
        self._ids_of: dict[str, set[int]] = {}  # subject -> their vector ids
        self._log_size = 0
        self._threshold = DEFAULT_THRESHOLDS.get(engine, 0.5)
        self._review_threshold = self._threshold
        self._cache_path = registry.home.root / "cache" / f"index-{engine}.bin"
        self._use_cache = cache
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if cache:
            self._load_cache()
        try:
            self.refresh()
        except LogIntegrityError as exc:
            # not fatal here: every job's refresh raises it again, and is refused
            _log.error("identity index %s: %s", engine, exc)

    # ------------------------------------------------------------------ state
    @property
    def log_size(self) -> int:
        return self._log_size

    @property
    def threshold(self) -> float:
        """A face at or above it matches a subject (a certain match)."""
        return self._threshold

    @property
    def review_threshold(self) -> float:
        """The lower edge of the review band: a face scoring in
        ``[review_threshold, threshold)`` is an uncertain candidate of that subject
        (``SubjectMatch.certain`` False). Equal to ``threshold`` (no band) unless the
        newest signed calibration of the engine set one; never above ``threshold``."""
        return self._review_threshold

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def subjects(self) -> set[str]:
        with self._lock:
            return set(self._subject_of.values())

    # ------------------------------------------------------------------ following
    def refresh(self) -> int:
        """Apply every signed entry after the last one seen; returns how many entries
        were followed. Raises LogIntegrityError when the log does not verify or an
        embedding row contradicts it."""
        with self._lock:
            state = self.registry.consent
            state.refresh()
            size = state.size
            if size <= self._log_size:
                return 0
            pending: list[SignedEnrollment] = []
            changed = False
            for event in state.events_since(self._log_size):
                if event.index >= size:
                    break
                if event.kind == "enrollment" and event.enrollment is not None:
                    enrollment = event.enrollment
                    # an enrollment of a subject erased later has no rows left: skip it
                    if enrollment.engine == self.engine and enrollment.subject not in state.erased:
                        pending.append(enrollment)
                        changed = True
                elif event.kind == "erasure":
                    self._add(pending)
                    pending = []
                    self._remove_subject(event.subject or "")
                    changed = True
                elif event.kind == "calibration" and event.engine == self.engine:
                    self._threshold = float(event.threshold or 0.0)
                    review = event.review_threshold
                    self._review_threshold = (
                        self._threshold if review is None else min(float(review), self._threshold)
                    )
            self._add(pending)
            followed = size - self._log_size
            self._log_size = size
            # Only a change of the vectors rewrites the cache: a cache of an earlier log
            # prefix stays valid (its root is checked against that prefix on load, and
            # the entries after it are applied), so decisions cost no rewrite.
            if changed and self._use_cache:
                self._save_cache()
            return followed

    def _add(self, enrollments: list[SignedEnrollment]) -> None:
        """Decrypt and add the embeddings the signed ``enrollments`` commit to, after
        checking each row against its signed blob."""
        wanted = [
            (vector_id, enrollment, blob)
            for enrollment in enrollments
            for vector_id, blob in enrollment.embeddings()
            if vector_id not in self._subject_of
        ]
        if not wanted:
            return
        with self.registry.db.read() as session:
            rows = {
                r.id: r
                for r in session.exec(
                    select(BiometricBlob).where(
                        col(BiometricBlob.id).in_([b.id for _, _, b in wanted])
                    )
                )
            }
            checked: list[BiometricBlob] = []
            for _, enrollment, blob in wanted:
                row = rows.get(blob.id)
                where = (
                    f"embedding {blob.id} of enrollment {enrollment.id} "
                    f"(subject {enrollment.subject})"
                )
                if row is None:
                    raise LogIntegrityError(
                        f"{where} is missing from the database, but the signed log holds it "
                        "and the subject was not erased (deleted embeddings)"
                    )
                if (row.kind, row.subject_id, row.enrollment_id, row.engine, row.sha256) != (
                    "embedding",
                    enrollment.subject,
                    enrollment.id,
                    enrollment.engine,
                    blob.sha256,
                ) or sha256_hex(row.ciphertext) != blob.sha256:
                    raise LogIntegrityError(f"{where} differs from its signed enrollment")
                checked.append(row)
            try:
                plain = open_blobs(self.registry, session, checked)
            except ErasedError as exc:
                raise LogIntegrityError(
                    f"a data key is missing for a subject the signed log does not erase: {exc}"
                ) from exc
            except VaultError as exc:
                raise LogIntegrityError(f"an embedding does not decrypt: {exc}") from exc
        vectors = [np.frombuffer(p, dtype="<f4").astype(np.float32) for _, p in plain]
        if any(v.shape != (self.dim,) for v in vectors):
            raise InputError(f"engine {self.engine} embeddings do not have {self.dim} dimensions")
        matrix = np.stack(vectors)
        ids = np.array([vector_id for vector_id, _, _ in wanted], dtype=np.int64)
        self._index.add_with_ids(matrix, ids)
        for (vector_id, enrollment, blob), vector in zip(wanted, matrix, strict=True):
            self._subject_of[vector_id] = enrollment.subject
            self._vectors[vector_id] = vector
            self._weights[vector_id] = 1.0 if blob.quality is None else blob.quality
            self._ids_of.setdefault(enrollment.subject, set()).add(vector_id)

    def _remove_subject(self, subject_id: str) -> None:
        ids = sorted(self._ids_of.pop(subject_id, set()))
        if ids:
            self._index.remove_ids(faiss.IDSelectorBatch(np.array(ids, dtype=np.int64)))
            for i in ids:
                del self._subject_of[i]
                del self._vectors[i]
                self._weights.pop(i, None)

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

        ``threshold=None`` searches down to :attr:`review_threshold`; each match says
        whether it reached :attr:`threshold` (``certain``).

        A subject appears once per query, with their best similarity. With ``k=None``
        (what the gate uses) nothing is cut: this is a FAISS range search over every
        stored vector, so look-alike subjects above the threshold can never crowd the
        real one out of the answer (the per-job face cap bounds the cost). ``k``
        keeps only the best ``k`` subjects, for ranking and benchmarks.
        """
        queries = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        limit = self._review_threshold if threshold is None else threshold
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
                        certain = score >= self._threshold
                        best[subject] = SubjectMatch(subject, score, vector_id, certain)
                ordered = sorted(best.values(), key=lambda m: (-m.similarity, m.subject_id))
                results.append(ordered if k is None else ordered[:k])
        return results

    def subject_vectors(self, subject_id: str) -> np.ndarray:
        """Every enrolled vector of ``subject_id`` (one row each; none: 0 rows)."""
        with self._lock:
            ids = sorted(self._ids_of.get(subject_id, set()))
            if not ids:
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.stack([self._vectors[i] for i in ids])

    def subject_weights(self, subject_id: str) -> np.ndarray:
        """The second-stage weight of each of :meth:`subject_vectors`' rows, in order:
        the photo quality signed into its enrollment, 1 where none was signed."""
        with self._lock:
            ids = sorted(self._ids_of.get(subject_id, set()))
            return np.array([self._weights.get(i, 1.0) for i in ids], dtype=np.float64)

    def match_groups(self, groups: Sequence[Sequence[np.ndarray]]) -> list[list[SubjectMatch]]:
        """For each group of embeddings (one face seen in several views), every
        subject at or above the review threshold for any of them, with the best
        similarity, best first: one range search for all groups, then the second
        stage (:func:`consentry.identity.second_stage.confirm`: support over all of
        a candidate's photos and the margin rule; only with a review band, and it
        only ever turns certain into uncertain). An empty group matches nobody."""
        with self._lock:
            return self._match_groups(groups)

    def _match_groups(self, groups: Sequence[Sequence[np.ndarray]]) -> list[list[SubjectMatch]]:
        vectors = [vector for group in groups for vector in group]
        found = self.search(np.stack(vectors)) if vectors else []
        results: list[list[SubjectMatch]] = []
        start = 0
        for group in groups:
            best: dict[str, SubjectMatch] = {}
            for matches in found[start : start + len(group)]:
                for match in matches:
                    if match.subject_id not in best or best[match.subject_id].similarity < (
                        match.similarity
                    ):
                        best[match.subject_id] = match
            start += len(group)
            ordered = sorted(best.values(), key=lambda m: (-m.similarity, m.subject_id))
            views = np.stack(group) if len(group) else np.zeros((0, self.dim), np.float32)
            results.append(
                confirm(
                    views,
                    ordered,
                    self.subject_vectors,
                    self._threshold,
                    self._review_threshold,
                    self.subject_weights,
                )
            )
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
                "root": (self.registry.log.prefix_root(self._log_size) or b"").hex(),
                "ids": ids,
                "subjects": [self._subject_of[i] for i in ids],
                "weights": [self._weights.get(i, 1.0) for i in ids],
                "threshold": self._threshold,
                "review_threshold": self._review_threshold,
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
            root = self.registry.log.prefix_root(size)
            if root is None or root.hex() != header["root"]:
                return False  # the log was rewritten or truncated since: rebuild
            ids = [int(i) for i in header["ids"]]
            matrix = np.frombuffer(payload[4 + length :], dtype="<f4").reshape(len(ids), self.dim)
            weights = [float(w) for w in header.get("weights") or [1.0] * len(ids)]
            if len(weights) != len(ids):
                return False
        except (ConsentryError, ValueError, KeyError, struct.error, json.JSONDecodeError):
            return False
        if ids:
            self._index.add_with_ids(
                np.ascontiguousarray(matrix, dtype=np.float32), np.array(ids, dtype=np.int64)
            )
        rows = zip(ids, header["subjects"], matrix, weights, strict=True)
        for i, subject, vector, weight in rows:
            self._subject_of[i] = str(subject)
            self._weights[i] = weight
            self._vectors[i] = np.array(vector, dtype=np.float32)
            self._ids_of.setdefault(str(subject), set()).add(i)
        self._log_size = size
        self._threshold = float(header.get("threshold", self._threshold))
        self._review_threshold = min(
            float(header.get("review_threshold", self._threshold)), self._threshold
        )
        return True

    def cache_path(self) -> Path:
        return self._cache_path
