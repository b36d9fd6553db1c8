"""``python -m bench faces``: accuracy, evasion robustness and speed of the face engines.

1. **Accuracy** on every pair of the labelled photos of shared/faces, for ``sface``
   (the default engine) and ``dlib`` (ours: cosine on L2-normalised descriptors), and
   side by side the named baseline, the real ``face_recognition`` 1.3.0 library with
   its defaults (HOG upsample 1, ``model="small"``, one jitter, Euclidean distance,
   match iff distance <= 0.6). A photo in which an engine finds no face at IoU >= 0.3
   to the labelled bbox takes part in every pair as a non-match (a false non-match
   in genuine pairs, a correct reject in impostor pairs), for every engine alike.
   Thresholds at FMR <= 1e-3 come from ``calibration.threshold_at_fmr``.
2. **Evasion robustness** (sface): every photo of every identity is enrolled with
   ``biometrics.enroll`` into one real temporary registry, one enrollment per identity,
   and one ``IdentityIndex`` is built from it through its own ``refresh``. Each photo of
   an identity with >= 3 photos is then held out in turn: its own vector is removed from
   the index's FAISS object (``_index``) while it is probed and put back afterwards, so
   the gallery is every other photo of every identity. The probe, under each
   transform, is detected (the face at IoU >= 0.3 to the transformed labelled bbox),
   embedded and searched with ``IdentityIndex.search`` at the sface threshold at
   FMR 1e-3 from table 1.
3. **Speed**: detect and detect+embed latency on 1024x1024 canvases holding 1 or 5
   faces; ``IdentityIndex.search`` against a bare ``faiss.IndexFlatIP`` at 10k, 100k
   and 1M synthetic identities (``bench/faces_index.py``; --quick stops at 100k).
4. **1:N identification**: FNIR and FPIR against gallery size N per engine, with
   strangers and extrapolation to 10^6 (``bench/faces_1n.py``; ``--faces-only 1n``
   runs it alone).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import faiss
import numpy as np

from bench import faces_baseline, faces_index
from bench._common import console, load_average, note
from bench.faces_1n import engines_1n, run_1n
from bench.faces_data import (
    TRANSFORMS,
    Photo,
    compose_canvas,
    default_faces_dir,
    iou,
    load_photos,
    pick,
)
from bench.faces_report import TARGET_FMR, report
from consentry.faces.calibration import (
    PairScores,
    equal_error_rate,
    rates_at,
    threshold_at_fmr,
)
from consentry.faces.engine import FaceEngine
from consentry.faces.engines import get_engine
from consentry.faces.thresholds import DEFAULT_THRESHOLDS
from consentry.identity.enroll import engine_info
from consentry.identity.index import IdentityIndex
from consentry.registry.biometrics import Sample, decrypt_embeddings, enroll
from consentry.registry.store import Registry

STRICT_FMR = 1e-4  # table 2's what-if: no impostor pair of table 1 accepted
ENGINES = ("sface", "dlib")


@dataclass(frozen=True)
class Sizes:
    all_probes: bool  # evasion: every photo of the >=3-photo identities, else one per identity
    speed_reps: dict[str, int]  # timed runs per engine and canvas
    index_sizes: tuple[int, ...]


FULL = Sizes(True, {"sface": 10, "dlib": 5, "face_recognition": 5}, (10_000, 100_000, 1_000_000))
QUICK = Sizes(False, {"sface": 5, "dlib": 2, "face_recognition": 2}, (10_000, 100_000))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("faces")
    group.add_argument("--faces-dir", type=Path, default=None,
                       help="faces: labelled photos with MANIFEST.tsv (default ../shared/faces)")
    group.add_argument("--faces-only", choices=("1n",), default=None,
                       help="faces: run one section alone (1n: FNIR/FPIR against gallery size)")


# ------------------------------------------------------------------ embeddings
@dataclass
class Embedded:
    """One engine's view of every photo: unit vectors (NaN rows where no face)."""

    name: str
    vectors: np.ndarray
    found: np.ndarray  # bool per photo
    seconds: float


def embed_photos(engine: FaceEngine, photos: list[Photo]) -> Embedded:
    vectors = np.full((len(photos), engine.dim), np.nan, dtype=np.float32)
    found = np.zeros(len(photos), dtype=bool)
    began = time.perf_counter()
    for p in photos:
        faces = engine.detect(p.pixels)
        chosen = pick([f.bbox for f in faces], p.bbox)
        if chosen is not None:
            vectors[p.index] = engine.embed(p.pixels, faces[chosen])
            found[p.index] = True
    return Embedded(engine.name, vectors, found, time.perf_counter() - began)


def embed_baseline(pipeline: faces_baseline.Pipeline, photos: list[Photo]) -> Embedded:
    vectors = np.full((len(photos), 128), np.nan, dtype=np.float64)
    found = np.zeros(len(photos), dtype=bool)
    began = time.perf_counter()
    for p in photos:
        boxes = pipeline.locations(p.pixels)
        chosen = pick(boxes, p.bbox)
        if chosen is not None:
            vectors[p.index] = pipeline.encode(p.pixels, [boxes[chosen]])[0]
            found[p.index] = True
    return Embedded("face_recognition", vectors.astype(np.float32), found,
                    time.perf_counter() - began)


# ------------------------------------------------------------------ 1. accuracy
def all_pairs(labels: list[str], similarity: np.ndarray, found: np.ndarray) -> PairScores:
    """Every pair i < j (the order of ``itertools.combinations``), split genuine/impostor;
    a pair with a photo where no face was found scores -inf (never a match)."""
    i, j = np.triu_indices(len(labels), 1)
    scores = similarity[i, j].astype(np.float64)
    scores[~(found[i] & found[j])] = -np.inf
    names = np.array(labels)
    same = names[i] == names[j]
    return PairScores(scores[same], scores[~same])


def cosine_matrix(e: Embedded) -> np.ndarray:
    vectors = np.where(e.found[:, None], e.vectors, 0.0).astype(np.float64)
    out: np.ndarray = vectors @ vectors.T
    return out


def distance_matrix(pipeline: faces_baseline.Pipeline, e: Embedded) -> np.ndarray:
    """face_recognition.face_distance of every photo against every photo."""
    known = np.where(e.found[:, None], e.vectors, 0.0).astype(np.float64)
    return np.stack([pipeline.distances(known, known[k]) for k in range(len(known))])


def accuracy_row(name: str, rule: str, scores: PairScores, e: Embedded,
                 at: float | None = None, sign: float = 1.0) -> dict[str, Any]:
    """Rates at FMR <= 1e-3 (``at`` None) or at the fixed score threshold ``at``.
    ``sign`` = -1 when the scores are negated distances (thresholds shown as distances)."""
    calibrated = threshold_at_fmr(scores, TARGET_FMR)
    if at is None:
        threshold, fmr, fnmr = calibrated.threshold, calibrated.fmr, calibrated.fnmr
    else:
        threshold = at
        fmr, fnmr = rates_at(scores, at)
    found_only = PairScores(scores.genuine[np.isfinite(scores.genuine)],
                            scores.impostor[np.isfinite(scores.impostor)])
    return {
        "engine": name,
        "rule": rule,
        "threshold": sign * threshold,
        "fmr": fmr,
        "fnmr": fnmr,
        "false_matches": round(fmr * len(scores.impostor)),
        "false_non_matches": round(fnmr * len(scores.genuine)),
        "eer": calibrated.eer,
        "found_only": {
            "fmr": rates_at(found_only, threshold)[0],
            "fnmr": rates_at(found_only, threshold)[1],
            "eer": equal_error_rate(found_only),
            "genuine_pairs": len(found_only.genuine),
            "impostor_pairs": len(found_only.impostor),
        },
        "genuine_pairs": len(scores.genuine),
        "impostor_pairs": len(scores.impostor),
        "photos": len(e.found),
        "no_face": int((~e.found).sum()),
        "embed_seconds": round(e.seconds, 1),
    }


def accuracy(photos: list[Photo], cache: dict[str, Embedded],
             pipeline: faces_baseline.Pipeline | None) -> dict[str, Any]:
    labels = [p.identity for p in photos]
    rows: list[dict[str, Any]] = []
    scores: dict[str, PairScores] = {}
    for name in ENGINES:
        scores[name] = all_pairs(labels, cosine_matrix(cache[name]), cache[name].found)
        row = accuracy_row(name, "cosine >= t (t at FMR <= 1e-3)", scores[name], cache[name])
        default = DEFAULT_THRESHOLDS[name]
        fmr, fnmr = rates_at(scores[name], default)
        row["at_default_threshold"] = {"threshold": default, "fmr": fmr, "fnmr": fnmr}
        row["no_face_photos"] = [p.path for p in photos if not cache[name].found[p.index]]
        rows.append(row)
    agreement: dict[str, Any] = {}
    if pipeline is not None:
        e = cache["face_recognition"]
        fr = all_pairs(labels, -distance_matrix(pipeline, e), e.found)
        scores["face_recognition"] = fr
        tolerance = -faces_baseline.TOLERANCE
        for name, rule, at in (
            ("face_recognition (default)", "distance <= 0.6 (library default)", tolerance),
            ("face_recognition", "distance <= t (t at FMR <= 1e-3)", None),
        ):
            row = accuracy_row(name, rule, fr, e, at, sign=-1.0)
            row["no_face_photos"] = [p.path for p in photos if not e.found[p.index]]
            rows.append(row)
        both = cache["dlib"].found & e.found
        ours = cache["dlib"].vectors[both].astype(np.float64)
        theirs = e.vectors[both].astype(np.float64)
        theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
        agreement = {
            "photos_both_found": int(both.sum()),
            "median_cos_dlib_vs_face_recognition": float(np.median(np.sum(ours * theirs, 1))),
            "min_cos_dlib_vs_face_recognition": float(np.min(np.sum(ours * theirs, 1))),
        }
    return {"rows": rows, "dlib_vs_face_recognition": agreement,
            "_scores": scores}


# ------------------------------------------------------------------ 2. evasion
def build_gallery(photos: list[Photo], engine: FaceEngine, e: Embedded,
                  home: Path) -> tuple[Registry, IdentityIndex, dict[str, str], dict[int, int]]:
    """One registry, one enrollment per identity (every photo with a face), one index."""
    registry = Registry.init(home, None)
    info = engine_info(engine)
    subject_of: dict[str, str] = {}
    vector_of: dict[int, int] = {}
    identities = sorted({p.identity for p in photos})
    for identity in identities:
        subject = registry.add_subject(identity)
        subject_of[identity] = subject.id
        members = [p for p in photos if p.identity == identity and e.found[p.index]]
        if not members:
            continue
        row = enroll(registry, subject.id, info,
                     [Sample(p.sha256, e.vectors[p.index]) for p in members])
        stored = sorted(decrypt_embeddings(registry, engine.name, [row.id]),
                        key=lambda s: s.vector_id)
        for p, item in zip(members, stored, strict=True):
            if float(np.dot(item.embedding, e.vectors[p.index])) < 0.9999:
                raise RuntimeError(f"enrolled vector {item.vector_id} is not {p.path}'s")
            vector_of[p.index] = item.vector_id
    index = IdentityIndex(registry, engine.name, engine.dim, cache=False)
    if len(index) != int(e.found.sum()):
        raise RuntimeError(f"index holds {len(index)} vectors, expected {int(e.found.sum())}")
    return registry, index, subject_of, vector_of


def evasion(photos: list[Photo], engine: FaceEngine, e: Embedded, threshold: float,
            strict: float, all_probes: bool, workdir: Path,
            progress: Callable[[str], None]) -> dict[str, Any]:
    counts = Counter(p.identity for p in photos)
    eligible = [p for p in photos if counts[p.identity] >= 3]
    if all_probes:
        probes = eligible
    else:
        probes = [next(p for p in eligible if p.identity == ident)
                  for ident in sorted({p.identity for p in eligible})]
    registry, index, subject_of, vector_of = build_gallery(photos, engine, e, workdir / "gallery")
    records: list[dict[str, Any]] = []
    began = time.perf_counter()
    try:
        for count, p in enumerate(probes, 1):
            held_out = vector_of.get(p.index)
            if held_out is not None:
                own = np.ascontiguousarray(index._vectors[held_out].reshape(1, -1))
                removed = index._index.remove_ids(
                    faiss.IDSelectorBatch(np.array([held_out], dtype=np.int64)))
                if removed != 1:
                    raise RuntimeError(f"could not hold out vector {held_out} of {p.path}")
            try:
                records.extend(_probe(p, engine, e, index, subject_of, threshold, strict))
            finally:
                if held_out is not None:
                    index._index.add_with_ids(own, np.array([held_out], dtype=np.int64))
            if count % 20 == 0:
                progress(f"      {count}/{len(probes)} probes, {time.perf_counter() - began:.0f} s")
    finally:
        registry.close()
    return {
        "probes": len(probes),
        "identities": len({p.identity for p in probes}),
        "gallery_vectors": len(vector_of),
        "gallery_subjects": len(subject_of),
        "threshold": threshold,
        "strict_threshold": strict,
        "seconds": round(time.perf_counter() - began, 1),
        "rows": _summarise(records),
        "failures": [r for r in records if not r["matched"] or r["impostors"]],
    }


def _probe(p: Photo, engine: FaceEngine, e: Embedded, index: IdentityIndex,
           subject_of: dict[str, str], threshold: float, strict: float
           ) -> list[dict[str, Any]]:
    truth = subject_of[p.identity]
    names = {subject: identity for identity, subject in subject_of.items()}
    n_subjects = len(subject_of)
    records: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    for key, _label, transform, _target in TRANSFORMS:
        image, box = transform(p)
        faces = engine.detect(image)
        chosen = pick([f.bbox for f in faces], box)
        record: dict[str, Any] = {"photo": p.path, "transform": key, "faces": len(faces),
                                  "detected": chosen is not None}
        if chosen is not None:
            vector = engine.embed(image, faces[chosen])
            vectors.append(vector)
            record["iou"] = round(iou(faces[chosen].bbox, box), 3)
            record["cos_to_original"] = (float(np.dot(vector, e.vectors[p.index]))
                                         if e.found[p.index] else None)
        records.append(record)
    if vectors:
        batch = np.stack(vectors)
        decided = index.search(batch, k=n_subjects, threshold=threshold)
        ranked = index.search(batch, k=n_subjects, threshold=-1.0)
        hit = iter(zip(decided, ranked, strict=True))
        for record in records:
            if not record["detected"]:
                continue
            accepted, everyone = next(hit)
            truth_sim = next((m.similarity for m in everyone if m.subject_id == truth), None)
            impostor_sim = max((m.similarity for m in everyone if m.subject_id != truth),
                               default=None)
            record["best_impostor_similarity"] = (None if impostor_sim is None
                                                  else round(impostor_sim, 4))
            record["strict_matched"] = bool(everyone) and (
                everyone[0].subject_id == truth and everyone[0].similarity >= strict)
            record["strict_impostor"] = impostor_sim is not None and impostor_sim >= strict
            record["top_similarity"] = round(everyone[0].similarity, 4) if everyone else None
            record["truth_similarity"] = None if truth_sim is None else round(truth_sim, 4)
            record["matched"] = bool(accepted) and accepted[0].subject_id == truth
            record["impostors"] = [
                {"identity": names[m.subject_id], "similarity": round(m.similarity, 4)}
                for m in accepted if m.subject_id != truth
            ]
            if record["matched"]:
                record["outcome"] = "match"
            elif accepted:
                record["outcome"] = "wrong identity first"
            else:
                record["outcome"] = "below threshold"
    for record in records:
        if not record["detected"]:
            record.update(matched=False, impostors=[], outcome="no face", strict_matched=False,
                          strict_impostor=False)
    return records


def _summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for key, label, _transform, target in TRANSFORMS:
        mine = [r for r in records if r["transform"] == key]
        n = len(mine)
        detected = sum(r["detected"] for r in mine)
        matched = sum(r["matched"] for r in mine)
        impostor_probes = sum(bool(r["impostors"]) for r in mine)
        drift = [r["cos_to_original"] for r in mine if r.get("cos_to_original") is not None]
        truth = [r["truth_similarity"] for r in mine if r.get("truth_similarity") is not None]
        outcomes = Counter(r["outcome"] for r in mine)
        rate = matched / n if n else 0.0
        rows.append({
            "transform": key,
            "label": label,
            "probes": n,
            "detected": detected,
            "detection_rate": detected / n if n else 0.0,
            "matched": matched,
            "match_rate": rate,
            "target_match_rate": target,
            "impostor_accept_probes": impostor_probes,
            "impostor_accepts": sum(len(r["impostors"]) for r in mine),
            "misses_no_face": outcomes["no face"],
            "misses_below_threshold": outcomes["below threshold"],
            "misses_wrong_identity": outcomes["wrong identity first"],
            "median_cos_to_original": statistics.median(drift) if drift else None,
            "median_truth_similarity": statistics.median(truth) if truth else None,
            "strict_matched": sum(r["strict_matched"] for r in mine),
            "strict_impostor_probes": sum(r["strict_impostor"] for r in mine),
            "met": bool(rate >= target and impostor_probes == 0),
        })
    return rows


# ------------------------------------------------------------------ 3. speed
def speed(photos: list[Photo], engines: dict[str, FaceEngine],
          pipeline: faces_baseline.Pipeline | None, reps: dict[str, int]) -> list[dict[str, Any]]:
    counts = Counter(p.identity for p in photos)
    chosen: list[Photo] = []
    for p in photos:  # five people, one large single-face photo each
        if (p.n_faces == 1 and p.bbox[2] >= 150 and counts[p.identity] >= 3
                and p.identity not in {c.identity for c in chosen}):
            chosen.append(p)
        if len(chosen) == 5:
            break
    canvases = {1: compose_canvas(chosen[:1], [175]),
                5: compose_canvas(chosen, [150, 160, 175, 190, 200])}
    runners: list[tuple[str, Callable[[np.ndarray], list[Any]],
                        Callable[[np.ndarray], int]]] = []
    for name, engine in engines.items():
        runners.append((name, engine.detect, lambda im, eng=engine: len(eng.analyze(im))))
    if pipeline is not None:
        runners.append(("face_recognition", pipeline.locations, pipeline.analyze))
    rows = []
    for name, detect, analyze in runners:
        analyze(canvases[5][0])  # warm-up
        for n_faces, (canvas, boxes) in canvases.items():
            found = detect(canvas)
            boxes_found = [getattr(f, "bbox", f) for f in found]
            hits = sum(pick(boxes_found, b) is not None for b in boxes)
            det: list[float] = []
            full: list[float] = []
            for _ in range(reps[name]):
                t0 = time.perf_counter()
                detect(canvas)
                t1 = time.perf_counter()
                analyze(canvas)
                t2 = time.perf_counter()
                det.append(t1 - t0)
                full.append(t2 - t1)
            rows.append({
                "engine": name,
                "faces_pasted": n_faces,
                "faces_detected": len(found),
                "pasted_faces_found": hits,
                "face_widths_px": [round(b[2]) for b in boxes],
                "reps": reps[name],
                "detect_ms": statistics.median(det) * 1000,
                "detect_embed_ms": statistics.median(full) * 1000,
            })
    return rows


# ------------------------------------------------------------------ run
def _lap(began: float, phases: dict[str, float]) -> float:
    """Seconds since ``began`` not yet given to an earlier phase."""
    elapsed = round(time.perf_counter() - began - sum(phases.values()), 1)
    note(f"      ... {elapsed} s")
    return elapsed


def one_n(photos: list[Photo], folder: Path, engines: dict[str, FaceEngine], quick: bool,
          spd: list[dict[str, Any]], reps: dict[str, int]) -> dict[str, Any]:
    """Section 4, 1:N (``bench/faces_1n.py``); per-face cost from the speed rows."""
    all_engines, fused_note = engines_1n(engines)
    missing = {k: v for k, v in all_engines.items() if k not in {r["engine"] for r in spd}}
    spd = spd + speed(photos, missing, None, {k: reps.get(k, reps["dlib"]) for k in missing})
    cost = {r["engine"]: r["detect_embed_ms"] / r["faces_pasted"] for r in spd
            if r["faces_pasted"] == 5 and r["engine"] in all_engines}
    return run_1n(photos, folder, all_engines, cost, fused_note, quick)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else FULL
    folder = Path(args.faces_dir) if getattr(args, "faces_dir", None) else default_faces_dir()
    if getattr(args, "faces_only", None) == "1n":
        photos = load_photos(folder)
        engines = {name: get_engine(name) for name in ENGINES}
        console.print(f"\n== faces (1:N only) ==  photos {folder}, load average "
                      f"{load_average()}")
        result = one_n(photos, folder, engines, args.quick, [], sizes.speed_reps)
        return {"faces_dir": str(folder), "identification_1n": result,
                "load_average_at_end": load_average()}
    engines: dict[str, FaceEngine] = {name: get_engine(name) for name in ENGINES}
    module, how = faces_baseline.load()
    pipeline = faces_baseline.Pipeline(module) if module is not None else None
    console.print(f"\n== faces ==  photos {folder}")
    note(f"engines: {', '.join(e.version for e in engines.values())}; baseline: "
         f"{pipeline.version if pipeline else 'NOT AVAILABLE'} ({how})")
    note(f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} OpenMP threads), "
         f"opencv {cv2.__version__} ({cv2.getNumThreads()} threads), "
         f"load average (1/5/15 min) {load_average()}")

    phases: dict[str, float] = {}
    began = time.perf_counter()
    photos = load_photos(folder)
    note(f"[1/3] accuracy: embedding {len(photos)} photos with "
         f"{', '.join(engines)}{' and face_recognition' if pipeline else ''} ...")
    cache = {name: embed_photos(engine, photos) for name, engine in engines.items()}
    if pipeline is not None:
        cache["face_recognition"] = embed_baseline(pipeline, photos)
    acc = accuracy(photos, cache, pipeline)
    scores = acc.pop("_scores")
    threshold = threshold_at_fmr(scores["sface"], TARGET_FMR).threshold
    strict = threshold_at_fmr(scores["sface"], STRICT_FMR).threshold
    phases["accuracy"] = _lap(began, phases)

    note(f"[2/3] evasion: sface, threshold {threshold:.4f} (FMR <= 1e-3 in table 1) ...")
    with tempfile.TemporaryDirectory(prefix="consentry-bench-faces-") as tmp:
        eva = evasion(photos, engines["sface"], cache["sface"], threshold, strict,
                      sizes.all_probes, Path(tmp), note)
    phases["evasion"] = _lap(began, phases)

    note("[3/3] speed: detect/embed on 1024x1024 canvases, then the index ...")
    spd = speed(photos, engines, pipeline, sizes.speed_reps)
    phases["speed"] = _lap(began, phases)
    base = cache["sface"].vectors[cache["sface"].found]
    idx = faces_index.run_sizes(list(sizes.index_sizes), base, args.quick, note)
    phases["index"] = _lap(began, phases)

    result = {
        "faces_dir": str(folder),
        "photos": len(photos),
        "identities": len({p.identity for p in photos}),
        "baseline": {"available": pipeline is not None, "version": pipeline.version
                     if pipeline else None, "import": how},
        "accuracy": acc,
        "evasion": eva,
        "speed": spd,
        "index": idx,
        "phase_seconds": phases,
        "load_average_at_end": load_average(),
    }
    report(result)
    note("\n[4/4] 1:N identification: FNIR and FPIR against gallery size ...")
    result["identification_1n"] = one_n(photos, folder, engines, args.quick, spd,
                                        sizes.speed_reps)
    phases["identification_1n"] = _lap(began, phases)
    return result
