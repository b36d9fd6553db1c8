"""``python -m bench fidelity``: personalized (exemplar) restoration against generic upscalers.

For every identity of shared/faces with at least :data:`MIN_PHOTOS` photos whose face
is found, each photo in turn (``--quick``: the first one per identity) is the *truth*:
its face aligned into the 256 px enrollment frame
(:func:`consentry.faces.quality.align_exemplar`), degraded with
:class:`~consentry.generation.restoration.degrade.Degradation` (x8 by default: blur
sigma 2, area downscale, noise sigma 5, JPEG q50; seed per photo) to a 32 px image
whose face is about 16 px, and restored by

- ``bicubic`` (:func:`bicubic_upscale`),
- ``Real-ESRGAN`` x4plus (+ bicubic x2 for x8; :class:`RealESRGAN`), generic, learned,
- ``personalized``: :func:`~consentry.generation.restoration.exemplar.restore` with the
  identity's *other* photos (aligned the same way) as exemplars, ``aligned=True``,
- ``other person``: the same method with the photos of the next identity in
  alphabetical order as exemplars (as many as the own exemplars): the control,
- ablations of the method (``exact back-projection``: stop_factor 0, 20 iterations;
  ``top-3 blend``: detail averaged over the 3 best exemplars).

Measured against the truth: identity (cosine of SFace embeddings, the embedder the
method's experiments were designed on, and of dlib embeddings, an embedder the method
never sees), PSNR and SSIM (luma), the data-consistency error
(RMS of forward(output) - input; the truth's own is listed), and for the exemplar
methods a copy score: SFace cosine and SSIM of the output to the exemplar it used,
against the same for the truth (and for bicubic, a method that cannot copy).
Per-identity means first, then the mean over identities (each identity counts once).
Writes ``<out>/fidelity.json`` and ``<out>/fidelity.png`` (rows = identities; columns:
input (nearest-neighbour upsampled), bicubic, Real-ESRGAN, personalized, other person,
truth).
"""

from __future__ import annotations

import argparse
import importlib.resources
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from bench._common import DEFAULT_OUT, console, load_average, note, table
from bench.faces_data import default_faces_dir, load_photos, pick
from consentry.errors import ConsentryError
from consentry.faces.engine import FaceEngine
from consentry.faces.engines import get_engine
from consentry.faces.quality import align_exemplar
from consentry.generation.restoration.degrade import Degradation, consistency_error
from consentry.generation.restoration.exemplar import RestoreOptions, restore
from consentry.generation.restoration.generic import RealESRGAN, bicubic_upscale
from consentry.generation.restoration.metrics import (
    CopyScore,
    copy_score,
    embed_aligned,
    face_weights,
    psnr,
    ssim,
)

MIN_PHOTOS = 4
METHODS = ("bicubic", "realesrgan", "personalized", "other_person")
LABELS = {
    "input": "input (nearest)",
    "bicubic": "bicubic",
    "realesrgan": "Real-ESRGAN",
    "personalized": "personalized",
    "other_person": "other person",
    "exact_bp": "personalized, exact back-projection",
    "top3": "personalized, top-3 blend",
    "truth": "truth",
}
ABLATIONS: dict[str, RestoreOptions] = {
    "exact_bp": RestoreOptions(stop_factor=0.0, max_iterations=20),
    "top3": RestoreOptions(top_k=3),
}
ENGINES = ("sface", "dlib")
METRICS = ("sface", "dlib", "psnr", "ssim", "psnr_face", "ssim_face", "consistency", "seconds")
TILE = 128


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fidelity")
    group.add_argument("--fidelity-scale", type=int, default=8, choices=(4, 8),
                       help="fidelity: degradation scale (default 8: 16 px faces)")
    group.add_argument("--fidelity-no-ablations", action="store_true",
                       help="fidelity: skip the ablations of the method (--quick skips them)")


# ------------------------------------------------------------------ data
@dataclass
class Subject:
    identity: str
    paths: list[str]
    faces: list[np.ndarray]  # aligned 256 px, uint8 RGB
    seeds: list[int]


def _shipped() -> tuple[list[Subject], str]:
    folder = Path(str(importlib.resources.files("consentry.data"))) / "faces"
    engine = get_engine("sface")
    subjects: dict[str, Subject] = {}
    for i, (name, ident) in enumerate((("obama.jpg", "obama"), ("obama2.jpg", "obama"),
                                       ("biden.jpg", "biden"))):
        with Image.open(folder / name) as im:
            pixels = np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
        faces = engine.detect(pixels)
        if not faces:
            continue
        s = subjects.setdefault(ident, Subject(ident, [], [], []))
        s.paths.append(name)
        s.faces.append(align_exemplar(pixels, faces[0]))
        s.seeds.append(1000 + i)
    return list(subjects.values()), str(folder)


def load_subjects(folder: Path) -> tuple[list[Subject], int, int]:
    """Every identity's aligned faces; also (photos, photos without a found face)."""
    engine = get_engine("sface")
    photos = load_photos(folder)
    subjects: dict[str, Subject] = {}
    missing = 0
    for p in photos:
        faces = engine.detect(p.pixels)
        chosen = pick([f.bbox for f in faces], p.bbox)
        if chosen is None:
            missing += 1
            continue
        s = subjects.setdefault(p.identity, Subject(p.identity, [], [], []))
        s.paths.append(p.path)
        s.faces.append(align_exemplar(p.pixels, faces[chosen]))
        s.seeds.append(1000 + p.index)
    return sorted(subjects.values(), key=lambda s: s.identity), len(photos), missing


# ------------------------------------------------------------------ measuring
@dataclass
class Meter:
    """Embeds with both engines, caching the truths' and exemplars' embeddings."""

    engines: dict[str, FaceEngine]
    cache: dict[tuple[str, str, int], np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def embed(self, engine: str, image: np.ndarray, key: tuple[str, int] | None = None
              ) -> np.ndarray:
        if key is not None and (engine, *key) in self.cache:
            return self.cache[(engine, *key)]
        began = time.perf_counter()
        vector = embed_aligned(image, self.engines[engine])
        self.seconds[engine] = self.seconds.get(engine, 0.0) + time.perf_counter() - began
        if key is not None:
            self.cache[(engine, *key)] = vector
        return vector


def _nearest(low: np.ndarray, scale: int) -> np.ndarray:
    h, w = low.shape[:2]
    return np.ascontiguousarray(cv2.resize(low, (w * scale, h * scale),
                                           interpolation=cv2.INTER_NEAREST))


def measure_case(
    subject: Subject,
    holdout: int,
    other: Subject,
    scale: int,
    meter: Meter,
    esrgan: RealESRGAN | None,
    ablations: dict[str, RestoreOptions],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    truth = subject.faces[holdout]
    own_idx = [i for i in range(len(subject.faces)) if i != holdout]
    own = [subject.faces[i] for i in own_idx]
    other_idx = list(range(min(len(own), len(other.faces))))
    others = [other.faces[i] for i in other_idx]
    degradation = Degradation(scale=scale, seed=subject.seeds[holdout])
    low = degradation.apply(truth)

    outputs: dict[str, np.ndarray] = {"input": _nearest(low, scale)}
    seconds: dict[str, float] = {}
    extra: dict[str, dict[str, Any]] = {}

    def timed(name: str, fn: Callable[[], np.ndarray]) -> None:
        began = time.perf_counter()
        outputs[name] = fn()
        seconds[name] = time.perf_counter() - began

    timed("bicubic", lambda: bicubic_upscale(low, scale))
    if esrgan is not None:
        timed("realesrgan", lambda: esrgan.upscale(low, scale))
    runs = {"personalized": (own, own_idx, RestoreOptions()),
            "other_person": (others, other_idx, RestoreOptions())}
    runs.update({name: (own, own_idx, opts) for name, opts in ablations.items()})
    for name, (exemplars, indices, opts) in runs.items():
        result = restore(low, exemplars, degradation, aligned=True, options=opts)
        outputs[name] = np.asarray(result.image)
        seconds[name] = result.seconds
        extra[name] = {
            "exemplar": indices[result.exemplar_index],
            "pose": list(result.pose),
            "iterations": result.iterations,
            "initial_error": result.initial_error,
            "target_error": result.target_error,
            "timings": result.timings,
        }

    truth_vec = {e: meter.embed(e, truth, (subject.identity, holdout)) for e in ENGINES}
    weights = face_weights(truth.shape[0])
    record: dict[str, Any] = {
        "identity": subject.identity,
        "truth": subject.paths[holdout],
        "other": other.identity,
        "exemplars": len(own),
        "truth_consistency": consistency_error(truth, low, degradation),
        "methods": {},
    }
    for name, image in outputs.items():
        if name == "input":
            continue
        row: dict[str, Any] = {
            "psnr": psnr(image, truth),
            "ssim": ssim(image, truth),
            "psnr_face": psnr(image, truth, mask=weights),
            "ssim_face": ssim(image, truth, mask=weights),
            "consistency": consistency_error(image, low, degradation),
            "seconds": seconds[name],
        }
        for e in ENGINES:
            row[e] = float(np.dot(meter.embed(e, image), truth_vec[e]))
        row.update(extra.get(name, {}))
        record["methods"][name] = row

    # Copy scores: output (and bicubic, which cannot copy) against the exemplar used.
    def score(output: np.ndarray, owner: Subject, index: int) -> CopyScore:
        vectors = [meter.embed("sface", owner.faces[index], (owner.identity, index))]
        return copy_score(output, truth, [owner.faces[index]], engine=meter.engines["sface"],
                          exemplar_index=0, exemplar_embeddings=vectors, mask=weights)

    for name in ("personalized", "other_person", *ablations):
        owner = other if name == "other_person" else subject
        used = record["methods"][name]["exemplar"]
        mine, reference = score(outputs[name], owner, used), score(outputs["bicubic"], owner, used)
        record["methods"][name]["copy"] = {
            "output_identity": mine.output_identity, "truth_identity": mine.truth_identity,
            "output_ssim": mine.output_ssim, "truth_ssim": mine.truth_ssim,
            "bicubic_identity": reference.output_identity,
            "bicubic_ssim": reference.output_ssim,
        }
    outputs["truth"] = truth
    return record, outputs


# ------------------------------------------------------------------ statistics
def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else float("nan")


def _ci(values: Sequence[float], seed: int = 0, rounds: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the mean (resampling identities)."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(rounds, len(data)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def per_identity(records: list[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ident in dict.fromkeys(r["identity"] for r in records):
        mine = [r for r in records if r["identity"] == ident]
        row: dict[str, Any] = {"identity": ident, "cases": len(mine),
                               "exemplars": mine[0]["exemplars"],
                               "truth_consistency": _mean([r["truth_consistency"] for r in mine])}
        for m in methods:
            row[m] = {k: _mean([r["methods"][m][k] for r in mine])
                      for k in METRICS}
            if "copy" in mine[0]["methods"][m]:
                row[m]["copy"] = {k: _mean([r["methods"][m]["copy"][k] for r in mine])
                                  for k in mine[0]["methods"][m]["copy"]}
        out.append(row)
    return out


def summary(rows: list[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in methods:
        entry: dict[str, Any] = {k: _mean([r[m][k] for r in rows]) for k in METRICS}
        for e in ENGINES:
            diffs = [r[m][e] - r["bicubic"][e] for r in rows]
            entry[f"{e}_minus_bicubic"] = _mean(diffs)
            entry[f"{e}_minus_bicubic_ci95"] = _ci(diffs)
            entry[f"{e}_wins_over_bicubic"] = sum(d > 0 for d in diffs)
        if "copy" in rows[0][m]:
            entry["copy"] = {k: _mean([r[m]["copy"][k] for r in rows]) for k in rows[0][m]["copy"]}
        out[m] = entry
    out["truth_consistency"] = _mean([r["truth_consistency"] for r in rows])
    return out


# ------------------------------------------------------------------ figure
def _tile(image: np.ndarray, label: str | None) -> np.ndarray:
    tile = np.ascontiguousarray(cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA))
    if label:
        cv2.putText(tile, label[:20], (3, TILE - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.33,
                    (255, 255, 0), 1, cv2.LINE_AA)
    return tile


def figure(cases: list[tuple[str, dict[str, np.ndarray], dict[str, float]]],
           columns: Sequence[str], path: Path) -> None:
    """One row per case: the columns' images, SFace identity to the truth written on each."""
    header = np.full((22, TILE * len(columns), 3), 255, dtype=np.uint8)
    for j, name in enumerate(columns):
        cv2.putText(header, LABELS[name][:20], (j * TILE + 3, 15), cv2.FONT_HERSHEY_SIMPLEX,
                    0.38, (0, 0, 0), 1, cv2.LINE_AA)
    rows = [header]
    for identity, outputs, sims in cases:
        tiles = []
        for name in columns:
            image = outputs.get(name)
            if image is None:
                tiles.append(np.full((TILE, TILE, 3), 64, dtype=np.uint8))
                continue
            label = identity if name == "input" else (
                f"id {sims[name]:.2f}" if name in sims else None)
            tiles.append(_tile(image, label))
        rows.append(np.concatenate(tiles, axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


# ------------------------------------------------------------------ run
def run(args: argparse.Namespace) -> dict[str, Any]:
    scale = int(getattr(args, "fidelity_scale", 8))
    skip = args.quick or getattr(args, "fidelity_no_ablations", False)
    ablations = {} if skip else dict(ABLATIONS)
    folder = Path(args.faces_dir) if getattr(args, "faces_dir", None) else default_faces_dir()
    console.print(f"\n== fidelity ==  personalized restoration, x{scale}")
    began = time.perf_counter()
    meaningful = (folder / "MANIFEST.tsv").is_file()
    if meaningful:
        subjects, n_photos, missing = load_subjects(folder)
        eligible = [s for s in subjects if len(s.faces) >= MIN_PHOTOS]
        note(f"photos {folder}: {n_photos} photos, {missing} without a found face; "
             f"{len(eligible)} identities with >= {MIN_PHOTOS} aligned faces")
        controls = subjects
    else:
        shipped, where = _shipped()
        eligible = [s for s in shipped if len(s.faces) >= 2]
        controls = shipped
        note(f"{folder} is absent: falling back to the shipped photos in {where} (obama.jpg, "
             "obama2.jpg; biden.jpg as the other person). ONE identity with ONE exemplar: "
             "this run is NOT a meaningful experiment, only a smoke test of the pipeline.")
    if not eligible:
        note("no identity has enough photos: nothing to measure")
        return {"faces_dir": str(folder), "meaningful": False, "cases": 0}
    engines = {name: get_engine(name) for name in ENGINES}
    esrgan: RealESRGAN | None = RealESRGAN()
    try:
        assert esrgan is not None
        esrgan.load()
    except ConsentryError as exc:
        note(f"Real-ESRGAN NOT AVAILABLE ({exc}); its column is left out")
        esrgan = None
    note(f"engines: {engines['sface'].version}; {engines['dlib'].version}; "
         f"Real-ESRGAN: {esrgan.version if esrgan else '-'}; load average {load_average()}")
    prep_seconds = time.perf_counter() - began

    meter = Meter(engines)
    records: list[dict[str, Any]] = []
    shown: list[tuple[str, dict[str, np.ndarray], dict[str, float]]] = []
    for n, subject in enumerate(eligible):
        if meaningful and len(eligible) > 1:
            other = eligible[(n + 1) % len(eligible)]
        else:
            other = next(s for s in controls if s.identity != subject.identity)
        holdouts = [0] if args.quick else list(range(len(subject.faces)))
        for h in holdouts:
            record, outputs = measure_case(subject, h, other, scale, meter, esrgan, ablations)
            records.append(record)
            if h == holdouts[0]:
                shown.append((subject.identity, outputs,
                              {m: v["sface"] for m, v in record["methods"].items()}))
        note(f"  {subject.identity}: {len(holdouts)} case(s) done "
             f"({time.perf_counter() - began:.0f} s)")

    methods = [m for m in (*METHODS, *ablations) if m in records[0]["methods"]]
    rows = per_identity(records, methods)
    overall = summary(rows, methods)
    out_dir = Path(getattr(args, "out", DEFAULT_OUT))
    png = out_dir / "fidelity.png"
    figure(shown, ["input", "bicubic", "realesrgan", "personalized", "other_person", "truth"],
           png)
    result: dict[str, Any] = {
        "faces_dir": str(folder),
        "meaningful": meaningful,
        "scale": scale,
        "degradation": Degradation(scale=scale).__dict__ | {"seed": "1000 + photo index"},
        "restore_options": RestoreOptions().__dict__,
        "ablations": {k: v.__dict__ for k, v in ablations.items()},
        "identities": len(rows),
        "cases": len(records),
        "per_identity": rows,
        "summary": overall,
        "records": records,
        "figure": str(png),
        "embed_seconds": meter.seconds,
        "prep_seconds": prep_seconds,
        "load_average_at_end": load_average(),
    }
    report(result, methods)
    return result


# ------------------------------------------------------------------ report
def _f(x: float, digits: int = 3) -> str:
    return "-" if not math.isfinite(x) else f"{x:.{digits}f}"


def report(result: dict[str, Any], methods: Sequence[str]) -> None:
    rows, overall = result["per_identity"], result["summary"]
    main = [m for m in METHODS if m in methods]
    short = {"bicubic": "bic", "realesrgan": "esr", "personalized": "own",
             "other_person": "other", "exact_bp": "exactBP", "top3": "top3"}
    columns = ["identity", "cases", "ex"]
    for e in ENGINES:
        columns += [f"{e} {short[m]}" for m in main]
    body = []
    for r in rows:
        line: list[object] = [r["identity"][:20], r["cases"], r["exemplars"]]
        for e in ENGINES:
            line += [_f(r[m][e]) for m in main]
        body.append(line)
    table(f"Per identity (mean over its held-out photos), x{result['scale']}: identity = cosine "
          "to the truth (sface: the method's embedder family; dlib: independent). ex: "
          "exemplars per case", columns, body)
    columns = ["identity"]
    columns += [f"PSNR {short[m]}" for m in main] + [f"SSIM {short[m]}" for m in main]
    columns += [f"cons {short[m]}" for m in main] + ["cons truth"]
    body = []
    for r in rows:
        line = [r["identity"][:20]]
        line += [_f(r[m]["psnr_face"], 2) for m in main] + [_f(r[m]["ssim_face"]) for m in main]
        line += [_f(r[m]["consistency"], 2) for m in main] + [_f(r["truth_consistency"], 2)]
        body.append(line)
    table("Per identity: PSNR (dB) and SSIM on the face region; consistency error "
          "RMS(forward(output) - input), the truth's own last", columns, body)

    body = []
    for m in methods:
        o = overall[m]
        lo, hi = o["sface_minus_bicubic_ci95"]
        dlo, dhi = o["dlib_minus_bicubic_ci95"]
        ci = f" [{lo:+.3f}, {hi:+.3f}]" if math.isfinite(lo) else ""
        dci = f" [{dlo:+.3f}, {dhi:+.3f}]" if math.isfinite(dlo) else ""
        body.append([
            LABELS[m], _f(o["sface"]),
            "-" if m == "bicubic" else f"{o['sface_minus_bicubic']:+.3f}{ci}",
            "-" if m == "bicubic" else f"{o['sface_wins_over_bicubic']}/{len(rows)}",
            _f(o["dlib"]),
            "-" if m == "bicubic" else f"{o['dlib_minus_bicubic']:+.3f}{dci}",
            "-" if m == "bicubic" else f"{o['dlib_wins_over_bicubic']}/{len(rows)}",
            _f(o["psnr_face"], 2), _f(o["ssim_face"]), _f(o["psnr"], 2), _f(o["ssim"]),
            _f(o["consistency"], 2),
            _f(1000 * o["seconds"], 0),
        ])
    body.append(["truth (reference)", "1", "-", "-", "1", "-", "-", "inf", "1", "inf", "1",
                 _f(overall["truth_consistency"], 2), "-"])
    table(f"Mean over {len(rows)} identities ({result['cases']} cases), x{result['scale']}",
          ["method", "sface id", "- bicubic [95% CI]", "wins", "dlib id", "- bicubic [95% CI]",
           "wins", "PSNR face", "SSIM face", "PSNR frame", "SSIM frame", "consistency",
           "ms/face"],
          body,
          caption="CI: bootstrap over identities. face: the feathered face ellipse; frame: "
                  "the whole 256 px aligned frame (background and black off-photo margins "
                  "included). consistency: RMS of forward(output) - input "
                  "(0..255); the truth's own mismatch (noise + JPEG) is the last row: lower "
                  "than it means the output also explains the noise. ms/face: restoration "
                  "only (no metrics), this machine, wall clock.")

    body = []
    for m in methods:
        c = overall[m].get("copy")
        if not c:
            continue
        body.append([LABELS[m], _f(overall[m]["sface"]), _f(c["output_identity"]),
                     _f(c["truth_identity"]),
                     _f(c["bicubic_identity"]), _f(c["output_ssim"]), _f(c["truth_ssim"]),
                     _f(c["bicubic_ssim"])])
    table("Copy score: similarity to the exemplar the method used (sface cosine; SSIM on the "
          "face region)",
          ["method", "output~truth id", "output~ex id", "truth~ex id", "bicubic~ex id",
           "output~ex SSIM", "truth~ex SSIM", "bicubic~ex SSIM"], body,
          caption="output~ex above truth~ex: the output resembles its exemplar more than the "
                  "real face does (copying); output~ex above output~truth: the output is nearer "
                  "its exemplar than the face it restores. bicubic~ex: a method that cannot "
                  "copy, same exemplar.")
    note(f"figure: {result['figure']}")
    if not result["meaningful"]:
        note("REMINDER: shipped-photo fallback (one identity, one exemplar): not meaningful.")
