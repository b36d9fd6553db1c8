"""The tables of ``python -m bench faces``: accuracy, evasion, speed.

:func:`report` prints what :func:`bench.faces.run` measured; it reads the result dict
only (nothing is measured here). The accuracy targets the tables compare against are
defined here.
"""

from __future__ import annotations

from typing import Any

from bench._common import note, table

__all__ = ["TARGET_FMR", "TARGET_SFACE_FNMR", "report"]

TARGET_FMR = 1e-3
TARGET_SFACE_FNMR = 0.025


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _mb(x: float) -> str:
    return f"{x / 2**20:,.1f}"


def report(result: dict[str, Any]) -> None:
    acc = result["accuracy"]
    rows = []
    for r in acc["rows"]:
        target = "-"
        if r["engine"] == "sface":
            met = r["fnmr"] <= TARGET_SFACE_FNMR and r["fmr"] <= TARGET_FMR
            target = f"FNMR <= 2.5%: {'met' if met else 'NOT met'}"
        f = r["found_only"]
        rows.append([
            r["engine"], r["rule"], f"{r['threshold']:.4f}",
            f"{_pct(r['fmr'], 3)} ({r['false_matches']})",
            f"{_pct(r['fnmr'])} ({r['false_non_matches']})", _pct(r["eer"]),
            f"{r['genuine_pairs']} / {r['impostor_pairs']}", f"{r['no_face']} / {r['photos']}",
            f"{_pct(f['fnmr'])} / {_pct(f['eer'])}", target,
        ])
    defaults = "; ".join(
        f"{r['engine']} {d['threshold']}: FMR {_pct(d['fmr'], 3)}, FNMR {_pct(d['fnmr'])}"
        for r in acc["rows"] if (d := r.get("at_default_threshold"))
    )
    misses = "; ".join(f"{r['engine']}: {', '.join(r['no_face_photos']) or 'none'}"
                       for r in acc["rows"] if "(default" not in r["engine"])
    agree = acc["dlib_vs_face_recognition"]
    caption = (
        f"{result['photos']} photos of {result['identities']} identities; every pair. A photo "
        "with no face found (IoU >= 0.3 to the labelled bbox) counts as a non-match in all its "
        "pairs, for every engine; 'found only' = the same threshold on the pairs of photos "
        "with a face (what calibration.pair_scores sees).\nface_recognition scores are "
        "Euclidean distances (threshold = max distance accepted); ours are cosines (threshold "
        "= min cosine).\n"
        f"At the shipped DEFAULT_THRESHOLDS: {defaults}.\nNo face found: {misses}."
    )
    if agree:
        caption += (
            f"\nOur dlib engine vs face_recognition, same photos ({agree['photos_both_found']}):"
            " cosine of the two 128-d vectors median "
            f"{agree['median_cos_dlib_vs_face_recognition']:.5f}, min "
            f"{agree['min_cos_dlib_vs_face_recognition']:.5f} (same ResNet; the rule differs)."
        )
    if not result["baseline"]["available"]:
        caption += f"\nBaseline face_recognition NOT AVAILABLE: {result['baseline']['import']}"
    table("1. Accuracy on every pair of shared/faces (target: sface FNMR <= 2.5% at FMR <= 1e-3)",
          ["engine", "rule", "threshold", "FMR (pairs)", "FNMR (pairs)", "EER",
           "pairs gen / imp", "no face", "found only: FNMR / EER", "target"], rows, caption)

    eva = result["evasion"]
    rows = []
    for r in eva["rows"]:
        target = f">= {r['target_match_rate'] * 100:.0f}%, 0 imp."
        rows.append([
            r["label"], r["probes"], _pct(r["detection_rate"], 1), _pct(r["match_rate"], 1),
            target, "met" if r["met"] else "NOT met", r["impostor_accept_probes"],
            r["misses_no_face"], r["misses_below_threshold"], r["misses_wrong_identity"],
            "-" if r["median_cos_to_original"] is None else f"{r['median_cos_to_original']:.3f}",
            "-" if r["median_truth_similarity"] is None else f"{r['median_truth_similarity']:.3f}",
            f"{_pct(r['strict_matched'] / r['probes'] if r['probes'] else 0.0, 1)} / "
            f"{r['strict_impostor_probes']}",
        ])
    caption = (
        f"{eva['probes']} probes ({eva['identities']} identities with >= 3 photos, each photo "
        f"held out in turn); gallery: {eva['gallery_vectors']} vectors of "
        f"{eva['gallery_subjects']} subjects enrolled with biometrics.enroll into one registry, "
        "searched with IdentityIndex.search;\nthe held-out photo's own vector is taken out of "
        "the index's FAISS object (IdentityIndex._index) while it is probed. Threshold "
        f"{eva['threshold']:.4f} (sface at FMR <= 1e-3, table 1). match = best subject is the "
        "right one at >= threshold; imp. = probes where another subject is >= threshold.\n"
        "misses: no face (no detection at IoU >= 0.3 to the transformed bbox = detection "
        "miss), below thr (face found, nothing >= threshold = embedding drift), wrong id "
        "(another subject ranked first).\ncos->orig = cosine of the transformed probe's "
        "embedding to the untransformed one's; truth sim = best similarity to the right "
        "subject's gallery vectors.\nWhat-if (same searches, ranked): at "
        f"t(1e-4) = {eva['strict_threshold']:.4f}, the sface threshold at pair FMR <= 1e-4 "
        "in table 1 (above every impostor pair there), match rate / probes with an impostor "
        f"accepted. {eva['seconds']} s."
    )
    table("2. Evasion robustness (sface): does a transformed photo still find its owner?",
          ["transform", "probes", "detected", "matched", "target", "met?", "imp.", "no face",
           "below thr", "wrong id", "cos->orig", "truth sim", "at t(1e-4): match / imp."],
          rows, caption)

    rows = []
    for r in result["speed"]:
        rows.append([
            r["engine"], r["faces_pasted"], f"{r['pasted_faces_found']} ({r['faces_detected']})",
            "/".join(str(w) for w in r["face_widths_px"]), r["reps"], f"{r['detect_ms']:.1f}",
            f"{r['detect_embed_ms']:.1f}",
            f"{r['detect_embed_ms'] / max(1, r['faces_pasted']):.1f}",
        ])
    table("3a. Speed: detect, and detect + embed every face, 1024x1024 canvas (median ms)",
          ["engine", "faces", "found (all det.)", "face widths px", "runs", "detect ms",
           "detect+embed ms", "per face ms"], rows,
          "Labelled faces of different people, cropped with 25% margin, pasted at these "
          "widths (of the labelled bbox) on a gray gradient; 'found' = pasted faces detected "
          "at IoU >= 0.3. face_recognition: face_locations + face_encodings (its defaults).")

    rows = []
    for r in result["index"]:
        if "skipped" in r:
            rows.append([f"{r['n']:,}", "skipped: " + r["skipped"]] + ["-"] * 10)
            continue
        o, b = r["ours"], r["bare"]
        rows.append([
            f"{r['n']:,}", f"{o['search1_ms']:.3f}", f"{b['search1_ms']:.3f}",
            f"{o['search1_ms'] / b['search1_ms']:.2f}", f"{o['search64_ms']:.2f}",
            f"{b['search64_ms']:.2f}", f"{o['search64_ms'] / b['search64_ms']:.2f}",
            f"{b['search1_ms_one_omp_thread']:.3f}",
            _mb(r["vector_bytes"]), _mb(o["rss_delta_bytes"]), _mb(b["rss_delta_bytes"]),
            f"{o['build_s']:.2f} / {b['build_s']:.2f}",
        ])
    first = next((r for r in result["index"] if "skipped" not in r), None)
    extra = "" if first is None else (
        f" Synthetic vectors: real sface embedding + N(0, {first['sigma']}^2) per coordinate, "
        f"renormalised (median cosine to the nearest real embedding "
        f"{first['median_max_cos_to_a_real_embedding']}); top-1 of ours and bare agree on "
        f"{', '.join(str(r['top1_agree_of_64']) for r in result['index'] if 'skipped' not in r)}"
        " of 64 queries."
    )
    table("3b. Index: IdentityIndex.search (ours) vs bare faiss.IndexFlatIP, same vectors "
          "(median ms; memory MiB)",
          ["identities", "ours 1q", "bare 1q", "ratio", "ours 64q", "bare 64q", "ratio",
           "bare 1q, 1 thread", "vectors MiB", "ours RSS +MiB", "bare RSS +MiB",
           "load s ours / bare"], rows,
          "ours = IdentityIndex on an empty temp registry, vectors LOADED DIRECTLY into its "
          "_index (add_with_ids), _subject_of and _vectors as IdentityIndex._add writes them "
          "(registry enroll path bypassed); timed: .search(q, k=5) at its default threshold. "
          "bare = IndexFlatIP.search(q, 20), the depth .search asks FAISS for. RSS deltas "
          "measured around each build (ours keeps _add's matrix alive through the row views "
          "in _vectors, on top of FAISS's own copy; deltas of a few MiB are within allocator "
          "reuse). Ours and bare run with FAISS's default OpenMP threads; 'bare 1q, 1 thread' is "
          "the same bare search under faiss.omp_set_num_threads(1); the three interleave."
          + extra)
    phases = ", ".join(f"{k} {v} s" for k, v in result["phase_seconds"].items())
    note(f"\nphases: {phases}; load average (1/5/15 min) at end: "
         f"{result['load_average_at_end']}")
