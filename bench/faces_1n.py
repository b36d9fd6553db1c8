"""1:N identification in ``python -m bench faces``: FNIR and FPIR against gallery size N.

Per engine (sface, dlib, and ``fused`` when :func:`get_engine` knows it):

- **Gallery**: every labelled identity of the faces folder, enrolled with every photo
  in which the engine finds the labelled face. A probe scores against a subject as the
  best cosine over that subject's gallery vectors (what ``IdentityIndex.search`` does),
  or, for the second-stage rows, the mean of the subject's top-2 (one vector: itself);
  max and top-2 are compared at equal FNIR: each at its lowest genuine score (no miss
  but the probes without a face).
- **Genuine probes** (leave-one-out: each labelled photo whose identity keeps at least
  one other enrolled photo; the probe is never in its own gallery): FNIR = share whose
  own subject scores below the threshold; a probe with no face found is a miss.
- **Impostor pairs**: every labelled probe with a face against every other subject,
  and every stranger face (:mod:`bench.faces_1n_data`) against every subject. The
  per-subject false-match rate p = pairs at or above the threshold / pairs, with its
  one-sided Clopper-Pearson 95% bound (:func:`rate_upper_bound`); FPIR extrapolated
  to N = 10^3..10^6 by :func:`extrapolate`. FPIR measured directly: the labelled
  probes against the other subjects (and the expected share over every sub-gallery of
  n of them, exactly, by counting), the strangers against the whole gallery.
- **Operating points for N = 1,000**: the lowest threshold whose *point* rate gives
  FPIR <= 1% (refuse) and <= 5% (review band lower edge), with FNIR there and the
  pairs a calibration would need to *show* that rate (:func:`pairs_needed`).

Invariants: nothing is screened by score; every number printed is computed here from
the embeddings of this run (cached per image and engine version, see the data module).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import note
from bench.faces_1n_data import EmbedCache, labelled_vectors, strangers
from bench.faces_data import Photo
from consentry.errors import ConsentryError
from consentry.faces.engine import FaceEngine
from consentry.faces.engines import get_engine
from consentry.faces.identification import (
    extrapolate,
    pairs_needed,
    rate_for_fpir,
    rate_upper_bound,
)
from consentry.faces.thresholds import DEFAULT_THRESHOLDS

__all__ = ["GALLERIES", "engines_1n", "run_1n"]

GALLERIES = (1_000, 10_000, 100_000, 1_000_000)
BUDGET_N = 1_000
REFUSE_FPIR, REVIEW_FPIR, GOAL_FNIR = 0.01, 0.05, 0.01
SUBSETS = (1, 2, 5, 10, 20)


def engines_1n(engines: dict[str, FaceEngine]) -> tuple[dict[str, FaceEngine], str]:
    """``engines`` plus ``fused`` when this tree has it, and a note saying which."""
    out = dict(engines)
    try:
        out["fused"] = get_engine("fused")
        return out, "fused engine: present"
    except ConsentryError as exc:
        return out, f"fused engine: NOT in this tree ({exc.args[0]}); sface and dlib only"


@dataclass
class Scores:
    """One engine's scores under one scoring rule."""

    genuine: np.ndarray  # per genuine probe: own-subject score (-inf: no face)
    impostor: np.ndarray  # (probes with a face + strangers) x subjects, NaN where no pair
    labelled_rows: int  # the first rows are labelled probes, the rest strangers


def _subject_scores(sims: np.ndarray, members: list[np.ndarray], top2: bool) -> np.ndarray:
    """probes x subjects: best (or mean of top-2) similarity over each subject's columns."""
    out = np.full((sims.shape[0], len(members)), np.nan)
    for j, cols in enumerate(members):
        block = sims[:, cols]
        if block.shape[1] == 0:
            continue
        ranked = -np.sort(-np.nan_to_num(block, nan=-np.inf), axis=1)
        if top2 and ranked.shape[1] >= 2:
            two = ranked[:, :2]
            usable = np.isfinite(two[:, 1])
            out[:, j] = np.where(usable, two.mean(axis=1), ranked[:, 0])
        else:
            out[:, j] = ranked[:, 0]
    out[~np.isfinite(out)] = np.nan
    return out


def score(photos: list[Photo], vectors: np.ndarray, found: np.ndarray,
          stranger_vectors: np.ndarray, top2: bool) -> Scores:
    labels = sorted({p.identity for p in photos})
    ident = np.array([labels.index(p.identity) for p in photos])
    members = [np.flatnonzero((ident == j) & found) for j in range(len(labels))]
    clean = np.where(found[:, None], vectors, 0.0).astype(np.float64)
    sims = clean @ clean.T
    sims[~found, :] = np.nan
    sims[:, ~found] = np.nan
    np.fill_diagonal(sims, np.nan)  # leave-one-out
    per = _subject_scores(sims, members, top2)
    genuine = []
    for p in photos:
        others = [i for i in members[ident[p.index]] if i != p.index]
        if others:
            own = per[p.index, ident[p.index]]
            genuine.append(own if found[p.index] and np.isfinite(own) else -np.inf)
    imp = per[found].copy()
    imp[np.arange(len(imp)), ident[found]] = np.nan
    if len(stranger_vectors):
        s_sims = stranger_vectors.astype(np.float64) @ clean.T
        s_sims[:, ~found] = np.nan
        imp = np.vstack([imp, _subject_scores(s_sims, members, top2)])
    return Scores(np.array(genuine), imp, int(found.sum()))


# ------------------------------------------------------------------ rates
def _pairs(s: Scores) -> np.ndarray:
    return s.impostor[np.isfinite(s.impostor)]


def threshold_for_rate(s: Scores, rate: float) -> float:
    """The lowest threshold whose point rate (pairs >= t / pairs) is at most ``rate``."""
    pairs = np.sort(_pairs(s))[::-1]
    allowed = math.floor(rate * len(pairs))
    if allowed >= len(pairs):
        return float(pairs[-1])
    return float(np.nextafter(pairs[allowed], np.inf))


def _subset_fpir(rows: np.ndarray, t: float, n: int) -> float:
    """Expected FPIR over every n-subject sub-gallery of each probe's impostor subjects."""
    shares = []
    for row in rows:
        valid = row[np.isfinite(row)]
        m, k = len(valid), int((valid >= t).sum())
        if m < n:
            continue
        shares.append(1.0 - math.comb(m - k, n) / math.comb(m, n))
    return float(np.mean(shares)) if shares else float("nan")


def at(s: Scores, t: float) -> dict[str, Any]:
    pairs = _pairs(s)
    errors = int((pairs >= t).sum())
    labelled, strange = s.impostor[: s.labelled_rows], s.impostor[s.labelled_rows:]
    hit = np.nan_to_num(s.impostor, nan=-np.inf) >= t
    ex = extrapolate(errors, len(pairs), GALLERIES)
    misses = int((s.genuine < t).sum())
    return {
        "threshold": t,
        "fnir": misses / len(s.genuine), "misses": misses, "genuine": len(s.genuine),
        "errors": errors, "pairs": len(pairs), "rate": errors / len(pairs),
        "rate_bound": rate_upper_bound(errors, len(pairs)),
        "fpir_labelled": float(hit[: s.labelled_rows].any(axis=1).mean()),
        "labelled_gallery": int(np.isfinite(labelled).sum(axis=1).max()),
        "fpir_strangers": float(hit[s.labelled_rows:].any(axis=1).mean()) if len(strange)
        else None,
        "strangers": len(strange),
        "stranger_gallery": int(np.isfinite(strange).sum(axis=1).max()) if len(strange) else 0,
        "fpir_subsets": {n: _subset_fpir(labelled, t, n) for n in SUBSETS},
        "extrapolated": {e.gallery: (e.fpir, e.fpir_bound) for e in ex},
    }


def lowest_genuine(s: Scores) -> float:
    """The highest threshold that misses no genuine probe with a face (FNIR = no-face share)."""
    found = s.genuine[np.isfinite(s.genuine)]
    return float(found.min()) if len(found) else 1.0


def operating_point(s: Scores, n: int) -> dict[str, Any]:
    refuse = rate_for_fpir(REFUSE_FPIR, n)
    review = rate_for_fpir(REVIEW_FPIR, n)
    upper, lower = threshold_for_rate(s, refuse), threshold_for_rate(s, review)
    hi, lo = at(s, upper), at(s, lower)
    pairs = hi["pairs"]
    return {
        "gallery": n, "upper": hi, "lower": lo,
        "refuse_rate": refuse, "review_rate": review,
        "pairs_needed_upper": pairs_needed(refuse), "pairs_needed_lower": pairs_needed(review),
        "met_point": lo["fnir"] <= GOAL_FNIR,
        "met_bound": (lo["fnir"] <= GOAL_FNIR and pairs >= pairs_needed(refuse)
                      and hi["rate_bound"] <= refuse and lo["rate_bound"] <= review),
    }


# ------------------------------------------------------------------ run
def _engine_result(name: str, engine: FaceEngine, photos: list[Photo], folder: Path,
                   progress: Callable[[str], None]) -> dict[str, Any]:
    cache = EmbedCache(engine)
    vectors, found = labelled_vectors(photos, cache)
    faces, sources = strangers(folder, photos, cache, progress)
    cache.save()
    s_vec = (np.stack([f.vector for f in faces]) if faces
             else np.zeros((0, engine.dim), dtype=np.float32))
    best, top2 = (score(photos, vectors, found, s_vec, flag) for flag in (False, True))
    default = DEFAULT_THRESHOLDS.get(name)
    threshold_note = "shipped DEFAULT_THRESHOLDS"
    if default is None:
        default = threshold_for_rate(best, 1e-3)
        threshold_note = "no shipped default: point rate <= 1e-3 on these pairs"
    base = at(best, default)
    t1, t2 = (lowest_genuine(x) for x in (best, top2))
    return {
        "engine": name, "version": engine.version, "cache": str(cache.path),
        "images_embedded": cache.embedded, "photos_with_face": int(found.sum()),
        "photos": len(photos), "strangers": sources, "stranger_faces": len(faces),
        "default_note": threshold_note, "default": base,
        "max_equal_fnir": at(best, t1),
        "top2_equal_fnir": at(top2, t2),
        "points": {n: operating_point(best, n) for n in (BUDGET_N, 10_000, 1_000_000)},
    }


def run_1n(photos: list[Photo], folder: Path, engines: dict[str, FaceEngine],
           cost: dict[str, float], fused_note: str, quick: bool,
           progress: Callable[[str], None] = note) -> dict[str, Any]:
    """Measure and print the 1:N tables; ``cost``: detect+embed ms per face by engine."""
    from bench.faces_1n_report import report_1n

    if quick:
        keep = sorted({p.identity for p in photos})[:12]
        photos = [p for p in photos if p.identity in keep]
        photos = [Photo(i, p.path, p.identity, p.bbox, p.n_faces, p.pixels, p.sha256)
                  for i, p in enumerate(photos)]
    results = []
    for name, engine in engines.items():
        progress(f"      1:N {name}: embedding (cached per image) ...")
        results.append(_engine_result(name, engine, photos, folder, progress))
    result = {"fused_note": fused_note, "quick": quick, "cost_ms_per_face": cost,
              "engines": results}
    report_1n(result)
    return result
