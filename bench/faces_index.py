"""Index part of ``python -m bench faces``: IdentityIndex.search against a bare IndexFlatIP.

Synthetic identities: one 128-d vector each, a real SFace embedding of shared/faces
(chosen at random) plus Gaussian noise of ``SIGMA`` per coordinate, renormalised.
Queries are the real SFace embeddings themselves.

The IdentityIndex is built on an empty temporary registry and then **loaded
directly**: the vectors go into its FAISS object (``_index.add_with_ids``) and its
id maps (``_subject_of``, ``_vectors``) exactly as ``IdentityIndex._add`` writes
them (a float32 matrix copied once, ``_vectors`` holding row views of it), without
the registry's enroll/decrypt path, which would take hours at 1M. Timed is the
public ``.search`` (k=5, the index's default threshold). The bare baseline is
``faiss.IndexFlatIP`` over the same vectors asked for the same depth that
``.search`` asks its FAISS object for (``max(4k, 16)`` = 20).
"""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from consentry.identity.index import IdentityIndex
from consentry.registry.store import Registry

SIGMA = 0.08
K = 5
DEPTH = max(K * 4, 16)


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        resident = int(handle.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE")


def mem_available_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def synthetic(base: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` unit vectors, each a random row of ``base`` plus N(0, SIGMA^2) noise."""
    rng = np.random.default_rng(seed)
    dim = base.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        stop = min(n, start + step)
        rows = base[rng.integers(0, len(base), stop - start)]
        block = rows + SIGMA * rng.standard_normal((stop - start, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def _load_direct(index: IdentityIndex, vectors: np.ndarray) -> None:
    """What ``IdentityIndex._add`` does with decrypted embeddings, minus the decryption."""
    matrix = np.array(vectors, dtype=np.float32, copy=True)  # _add's np.stack(...)
    ids = np.arange(len(matrix), dtype=np.int64)
    index._index.add_with_ids(matrix, ids)
    subject_of = index._subject_of
    kept = index._vectors
    for i, row in enumerate(matrix):
        subject_of[i] = f"sub_{i:020x}"
        kept[i] = row


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def measure(n: int, base: np.ndarray, queries: np.ndarray, reps1: int, reps64: int,
            workdir: Path) -> dict[str, Any]:
    gc.collect()
    vectors = synthetic(base, n, seed=n)
    cos_to_base = float(np.median(np.max(vectors[:2000] @ base.T, axis=1)))
    dim = vectors.shape[1]

    before = rss_bytes()
    began = time.perf_counter()
    bare = faiss.IndexFlatIP(dim)
    bare.add(vectors)
    bare_build = time.perf_counter() - began
    bare_rss = rss_bytes() - before

    registry = Registry.init(workdir / f"index-home-{n}", None)
    try:
        ours = IdentityIndex(registry, "sface", dim, cache=False)
        before = rss_bytes()
        began = time.perf_counter()
        _load_direct(ours, vectors)
        ours_build = time.perf_counter() - began
        ours_rss = rss_bytes() - before
        if len(ours) != n:
            raise RuntimeError(f"IdentityIndex holds {len(ours)} vectors, expected {n}")

        # warm both, and check they agree on the best vector of every query
        batch = np.ascontiguousarray(queries[:64])
        ours_hits = ours.search(batch, k=K, threshold=-1.0)
        _scores, bare_ids = bare.search(batch, DEPTH)
        agree = sum(
            1 for hits, row in zip(ours_hits, bare_ids, strict=True)
            if hits and hits[0].vector_id == int(row[0])
        )
        thresholded = ours.search(batch, k=K)
        above = statistics.mean(len(h) for h in thresholded)

        threads = faiss.omp_get_max_threads()
        one_ours: list[float] = []
        one_bare: list[float] = []
        one_bare_1t: list[float] = []
        for r in range(reps1):
            q = np.ascontiguousarray(queries[r % len(queries)][None, :])
            t0 = time.perf_counter()
            ours.search(q, k=K)
            t1 = time.perf_counter()
            bare.search(q, DEPTH)
            t2 = time.perf_counter()
            one_ours.append(t1 - t0)
            one_bare.append(t2 - t1)
            faiss.omp_set_num_threads(1)
            try:
                t0 = time.perf_counter()
                bare.search(q, DEPTH)
                one_bare_1t.append(time.perf_counter() - t0)
            finally:
                faiss.omp_set_num_threads(threads)
        many_ours: list[float] = []
        many_bare: list[float] = []
        for r in range(reps64):
            q = np.ascontiguousarray(np.roll(queries, r, axis=0)[:64])
            t0 = time.perf_counter()
            ours.search(q, k=K)
            t1 = time.perf_counter()
            bare.search(q, DEPTH)
            t2 = time.perf_counter()
            many_ours.append(t1 - t0)
            many_bare.append(t2 - t1)
    finally:
        registry.close()

    result = {
        "n": n,
        "dim": dim,
        "sigma": SIGMA,
        "median_max_cos_to_a_real_embedding": round(cos_to_base, 3),
        "vector_bytes": int(n * dim * 4),
        "bare": {
            "index_bytes": int(bare.ntotal * bare.code_size),
            "rss_delta_bytes": int(bare_rss),
            "build_s": round(bare_build, 3),
            "search1_ms": round(_median_ms(one_bare), 3),
            "search64_ms": round(_median_ms(many_bare), 3),
            "search1_min_ms": round(min(one_bare) * 1000, 3),
            "search1_ms_one_omp_thread": round(_median_ms(one_bare_1t), 3),
            "omp_threads": threads,
        },
        "ours": {
            "faiss_bytes": int(n * dim * 4 + n * 8),  # flat codes + IDMap2 id_map (rev_map extra)
            "rss_delta_bytes": int(ours_rss),
            "build_s": round(ours_build, 3),
            "search1_ms": round(_median_ms(one_ours), 3),
            "search64_ms": round(_median_ms(many_ours), 3),
            "search1_min_ms": round(min(one_ours) * 1000, 3),
            "loaded_directly_into": ["_index", "_subject_of", "_vectors"],
        },
        "reps": {"search1": reps1, "search64": reps64},
        "top1_agree_of_64": agree,
        "mean_subjects_above_threshold_per_query": round(above, 2),
    }
    del ours, bare, vectors
    gc.collect()
    return result


def run_sizes(sizes: list[int], base: np.ndarray, quick: bool,
              progress: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    queries = np.ascontiguousarray(base, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="consentry-bench-index-") as tmp:
        for n in sizes:
            # X, the bare index, the matrix _add keeps, the FAISS copy, and the dicts
            need = 4 * n * 128 * 4 + n * 400
            available = mem_available_bytes()
            if available and need > 0.8 * available:
                out.append({"n": n, "skipped": f"needs ~{need / 2**30:.1f} GiB, "
                            f"{available / 2**30:.1f} GiB available"})
                progress(f"      index n={n:,}: skipped (memory)")
                continue
            if n <= 10_000:
                reps1, reps64 = (100, 20) if quick else (300, 40)
            elif n <= 100_000:
                reps1, reps64 = (30, 6) if quick else (100, 20)
            else:
                reps1, reps64 = 20, 5
            began = time.perf_counter()
            result = measure(n, base, queries, reps1, reps64, Path(tmp))
            result["seconds"] = round(time.perf_counter() - began, 1)
            out.append(result)
            progress(f"      index n={n:,}: {result['seconds']} s")
    return out
