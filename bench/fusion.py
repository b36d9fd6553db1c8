"""``python -m bench fusion``: what fusing SFace and dlib buys, and what it costs per face.

On ``shared/faces`` (``bench.faces_data.load_photos``), every labelled face is
detected once by YuNet (SFace's detector, what the ``fused`` engine uses) and
embedded by SFace and by dlib on that same face. Scores are cosines; the fused
score of a pair is ``w cos_sface + (1 - w) cos_dlib``, exactly the cosine of the
``fused`` engine's vectors (checked on a few photos against the real engine).

Tables
1. **Per pair**: for each scorer, the threshold at FMR <= 1e-3 over every
   impostor pair and its FNMR; and FMR at the FNMR sface has there (equal FNMR).
   A sweep of ``w`` is printed with it (how the weight was chosen).
2. **Per subject, best over the gallery** (leave-one-out 1:N): each probe photo
   against every *other* subject, scored by the best of that subject's photos.
   FNIR = probes whose own subject (other photos) scores below ``t``; the
   per-subject false-match rate = (probe, other subject) pairs at or above
   ``t``, at thresholds chosen so that every scorer has sface's FNIR
   (equal FNIR). Its expected FPIR at N subjects is ``1 - (1 - rate)^N``.
3. **Cost**: ms per face, detect + embed, sface vs fused (baseline sface, same
   run, alternating).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import load_average, note, table
from bench.faces_data import default_faces_dir, load_photos, pick
from consentry.faces.calibration import PairScores, rates_at, threshold_at_fmr
from consentry.faces.engines import get_engine
from consentry.faces.fused import SFACE_WEIGHT, FusedEngine
from consentry.faces.quality import QualityGates, face_quality
from consentry.identity.index import SubjectMatch
from consentry.identity.second_stage import MARGIN, SUPPORT_K, confirm

TARGET_FMR = 1e-3
WEIGHTS = [round(0.05 * i, 2) for i in range(1, 20)]


def _embed(
    photos: list[Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Both engines' vectors of each labelled face, and its quality
    (:func:`consentry.faces.quality.face_quality`, the weight enrollment signs)."""
    sface = get_engine("sface")
    dlib = get_engine("dlib")
    gates = QualityGates()
    s_vec, d_vec, keep, labels, quality = [], [], [], [], []
    for p in photos:
        faces = sface.detect(p.pixels)
        chosen = pick([f.bbox for f in faces], p.bbox)
        if chosen is None:
            continue
        s_vec.append(sface.embed(p.pixels, faces[chosen]))
        d_vec.append(dlib.embed(p.pixels, faces[chosen]))
        keep.append(p.index)
        labels.append(p.identity)
        quality.append(face_quality(p.pixels, faces[chosen], gates))
    return np.stack(s_vec), np.stack(d_vec), np.array(keep), labels, np.array(quality)


def _pairs(sim: np.ndarray, labels: list[str]) -> PairScores:
    i, j = np.triu_indices(len(labels), 1)
    names = np.array(labels)
    same = names[i] == names[j]
    scores = sim[i, j].astype(np.float64)
    return PairScores(scores[same], scores[~same])


def _subject_scores(sim: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(genuine best per probe with another own photo, impostor best per probe x other subject)."""
    names = np.array(labels)
    subjects = sorted(set(labels))
    genuine: list[float] = []
    impostor: list[float] = []
    for q in range(len(labels)):
        for s in subjects:
            members = np.flatnonzero(names == s)
            members = members[members != q]
            if members.size == 0:
                continue
            best = float(sim[q, members].max())
            (genuine if s == labels[q] else impostor).append(best)
    return np.array(genuine), np.array(impostor)


def _second_stage(sim: np.ndarray, labels: list[str], threshold: float,
                  review: float, quality: np.ndarray | None = None) -> dict[str, int]:
    """Leave-one-out through :func:`consentry.identity.second_stage.confirm`: each probe's
    candidates (every other subject, and its own subject's other photos) as the range
    search gives them, then counted before and after the second stage. ``quality``:
    each photo's weight in the support (None: uniform weights)."""
    names = np.array(labels)
    counts = dict.fromkeys(["genuine certain", "genuine held", "genuine certain after",
                            "impostor certain", "impostor held", "impostor certain after"], 0)
    for q in range(len(labels)):
        rows: dict[str, np.ndarray] = {}
        found: list[SubjectMatch] = []
        for s in sorted(set(labels)):
            members = np.flatnonzero(names == s)
            members = members[members != q]
            if members.size == 0:
                continue
            rows[s] = members
            best = float(sim[q, members].max())
            if best >= review:
                found.append(SubjectMatch(s, best, int(members[0]), best >= threshold))
        found.sort(key=lambda m: -m.similarity)
        after = confirm_scores(sim[q], found, rows, threshold, review, quality)
        for before, now in zip(found, after, strict=True):
            kind = "genuine" if before.subject_id == labels[q] else "impostor"
            counts[f"{kind} certain"] += before.certain
            counts[f"{kind} held"] += not now.certain
            counts[f"{kind} certain after"] += now.certain
    return counts


def confirm_scores(scores: np.ndarray, found: list[SubjectMatch], rows: dict[str, np.ndarray],
                   threshold: float, review: float,
                   quality: np.ndarray | None = None) -> list[SubjectMatch]:
    """:func:`confirm` on precomputed cosines (a probe's row of the similarity matrix):
    the probe is the basis vector e_0 and each subject's vectors are their cosines to it;
    ``quality`` weighs each photo as the index weighs its enrolled vector."""
    probe = np.array([1.0])
    weights = None if quality is None else (lambda s: quality[rows[s]])
    return confirm(probe, found, lambda s: scores[rows[s]][:, None], threshold, review,
                   weights)


def _threshold_at_fnr(genuine: np.ndarray, fnr: float) -> float:
    """The highest threshold whose false-non-match rate is at most ``fnr``."""
    ordered = np.sort(genuine)
    allowed = int(np.floor(fnr * len(ordered) + 1e-9))
    return float(ordered[allowed]) if allowed < len(ordered) else float(ordered[-1])


def _spread(sim: np.ndarray, labels: list[str]) -> tuple[float, float]:
    scores = _pairs(sim, labels).impostor
    return float(scores.mean()), float(scores.std())


def _cost(photos: list[Any], rounds: int) -> dict[str, float]:
    engines = {"sface": get_engine("sface"), "fused": get_engine("fused")}
    spent = dict.fromkeys(engines, 0.0)
    faces = dict.fromkeys(engines, 0)
    for _ in range(rounds):
        for p in photos:  # alternating per photo, so background load hits both alike
            for name, engine in engines.items():
                began = time.perf_counter()
                found = engine.analyze(p.pixels)
                spent[name] += time.perf_counter() - began
                faces[name] += len(found)
    return {name: 1000.0 * spent[name] / max(1, faces[name]) for name in engines}


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    folder = getattr(args, "faces_dir", None)
    photos = load_photos(Path(folder) if folder else default_faces_dir())
    note(f"[1/3] embedding {len(photos)} photos with sface and dlib on YuNet's faces ...")
    s_vec, d_vec, kept, labels, quality = _embed(photos)
    cos_s = s_vec @ s_vec.T
    cos_d = d_vec @ d_vec.T
    fused_engine = get_engine("fused")
    assert isinstance(fused_engine, FusedEngine)
    for p in photos[:3]:  # the arithmetic is the real engine's
        e = fused_engine.analyze(p.pixels)
        if e and p.index in kept:
            row = int(np.flatnonzero(kept == p.index)[0])
            ref = np.concatenate([np.sqrt(SFACE_WEIGHT) * s_vec[row],
                                  np.sqrt(1 - SFACE_WEIGHT) * d_vec[row]])
            if e[0].embedding is not None and abs(float(e[0].embedding @ ref) - 1.0) > 1e-3:
                note(f"warning: fused engine differs from the arithmetic on {p.path}")

    scorers = {"sface": cos_s, "dlib (YuNet box)": cos_d}
    scorers[f"fused w={SFACE_WEIGHT:g}"] = SFACE_WEIGHT * cos_s + (1 - SFACE_WEIGHT) * cos_d
    (ms, ss), (md, sd) = _spread(cos_s, labels), _spread(cos_d, labels)
    equalising = sd / (ss + sd)
    note(f"impostor cosines: sface mean {ms:.3f} sd {ss:.3f}; dlib mean {md:.3f} sd {sd:.3f}; "
         f"w equalising the spreads {equalising:.3f}")

    sweep = []
    for w in WEIGHTS:
        rates = threshold_at_fmr(_pairs(w * cos_s + (1 - w) * cos_d, labels), TARGET_FMR)
        sweep.append([w, round(rates.threshold, 4), f"{rates.fmr:.2e}", f"{rates.fnmr:.2%}"])
    table("fusion weight sweep (per pair, threshold at FMR <= 1e-3)",
          ["w (sface)", "threshold", "FMR", "FNMR"], sweep)

    base = threshold_at_fmr(_pairs(cos_s, labels), TARGET_FMR)
    results: dict[str, Any] = {"weight": SFACE_WEIGHT, "equalising_weight": equalising,
                               "load_average": load_average(), "pairs": {}, "subjects": {}}
    pair_rows: list[list[object]] = []
    subject_rows: list[list[object]] = []
    g_base, _ = _subject_scores(cos_s, labels)
    for name, sim in scorers.items():
        scores = _pairs(sim, labels)
        rates = threshold_at_fmr(scores, TARGET_FMR)
        t_eq = _threshold_at_fnr(scores.genuine, base.fnmr)
        fmr_eq, fnmr_eq = rates_at(scores, t_eq)
        pair_rows.append([name, round(rates.threshold, 4), f"{rates.fmr:.2e}", f"{rates.fnmr:.2%}",
                          f"{fmr_eq:.2e}", f"{fnmr_eq:.2%}"])
        results["pairs"][name] = {"threshold": rates.threshold, "fmr": rates.fmr,
                                  "fnmr": rates.fnmr, "fmr_at_equal_fnmr": fmr_eq}
        genuine, impostor = _subject_scores(sim, labels)
        results["subjects"][name] = []
        points = [("t @ pair FMR 1e-3", rates.threshold)]
        points += [(f"FNIR {f:.0%}", _threshold_at_fnr(genuine, f)) for f in (0.0, 0.01, 0.02)]
        for label, t in points:
            rate = float(np.mean(impostor >= t))
            got_fnir = float(np.mean(genuine < t))
            fpir = [1 - (1 - rate) ** n for n in (100, 1000)]
            subject_rows.append([name, label, round(t, 4), f"{got_fnir:.2%}", f"{rate:.3%}",
                                 int(np.sum(impostor >= t)), len(impostor),
                                 f"{fpir[0]:.1%}", f"{fpir[1]:.1%}"])
            results["subjects"][name].append({"point": label, "threshold": t, "fnir": got_fnir,
                                              "per_subject_fmr": rate, "pairs": len(impostor)})
    table(f"per pair ({len(labels)} faces): threshold at FMR <= 1e-3, and FMR at sface's FNMR",
          ["scorer", "t @1e-3", "FMR", "FNMR", "FMR @ equal FNMR", "FNMR"], pair_rows)
    table("per subject, best over the gallery (leave-one-out): at each scorer's 1e-3 "
          "threshold, and at equal FNIR",
          ["scorer", "operating point", "threshold", "FNIR", "per-subject FMR", "false",
           "pairs", "FPIR N=100", "FPIR N=1000"], subject_rows)
    del g_base

    stage_rows: list[list[object]] = []
    for name, sim in scorers.items():
        scores = _pairs(sim, labels)
        t = threshold_at_fmr(scores, TARGET_FMR).threshold
        review = threshold_at_fmr(scores, 1e-2).threshold
        for weighting, weights in (("uniform", None), ("quality", quality)):
            c = _second_stage(sim, labels, t, review, weights)
            stage_rows.append([name, weighting, round(t, 4), round(review, 4),
                               c["genuine certain"], c["genuine certain after"],
                               c["impostor certain"], c["impostor certain after"],
                               c["impostor held"]])
            results.setdefault("second_stage", {}).setdefault(name, {})[weighting] = {
                "threshold": t, "review": review, **c}
    table(f"second stage (top-{SUPPORT_K} support, margin {MARGIN} x band), leave-one-out; band = "
          "[t at pair FMR 1e-2, t at 1e-3): candidates certain before -> after",
          ["scorer", "weights", "t", "review t", "genuine certain", "after",
           "impostor certain", "after", "impostor held"], stage_rows)
    spread = (float(quality.min()), float(np.median(quality)), float(quality.max()))
    note(f"photo quality (the support's weights): min {spread[0]:.3f}, median "
         f"{spread[1]:.3f}, max {spread[2]:.3f} over {len(quality)} faces")
    results["quality"] = {"min": spread[0], "median": spread[1], "max": spread[2]}

    note("[3/3] cost per face (detect + embed), sface (baseline) vs fused ...")
    sample = photos[:10] if quick else photos[:40]
    cost = _cost(sample, 1 if quick else 3)
    table(f"cost per face, {len(sample)} photos (load {load_average()})",
          ["engine", "ms / face", "ratio to sface"],
          [[n, round(v, 1), round(v / cost["sface"], 2)] for n, v in cost.items()])
    results["ms_per_face"] = cost
    return results
