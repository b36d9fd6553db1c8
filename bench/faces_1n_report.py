"""The tables of the 1:N section of ``python -m bench faces`` (prints; measures nothing)."""

from __future__ import annotations

from typing import Any

from bench._common import note, table

__all__ = ["report_1n"]


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or x != x else f"{100 * x:.{digits}f}%"


def _ex(row: dict[str, Any], n: int) -> str:
    point, bound = row["extrapolated"][n]
    return f"{_pct(point, 1)} / {_pct(bound, 1)}"


def _row(engine: str, rule: str, r: dict[str, Any]) -> list[object]:
    return [
        engine, rule, f"{r['threshold']:.4f}",
        f"{_pct(r['fnir'])} ({r['misses']}/{r['genuine']})",
        f"{r['errors']}/{r['pairs']:,}", f"{100 * r['rate']:.3f}%",
        f"{100 * r['rate_bound']:.3f}%",
        f"{_pct(r['fpir_labelled'], 1)} @{r['labelled_gallery']}",
        f"{_pct(r['fpir_strangers'], 1)} @{r['stranger_gallery']} ({r['strangers']})",
        _ex(r, 1_000), _ex(r, 10_000), _ex(r, 100_000), _ex(r, 1_000_000),
    ]


def _sources(engines: list[dict[str, Any]]) -> str:
    lines = []
    first = engines[0]["strangers"]
    for source in first["sources"]:
        counts = ", ".join(f"{e['engine']} {e['strangers']['sources'][source]['faces']}"
                           for e in engines)
        images = first["sources"][source]["images"]
        lines.append(f"  {source}: {images} images -> faces {counts}")
    lines.append(f"  image files scanned in installed packages: "
                 f"{first['package_images_scanned']}")
    lines.append("  left out (a labelled identity): " + ("; ".join(first["left_out"]) or "none"))
    return "\n".join(lines)


def report_1n(result: dict[str, Any]) -> None:
    engines = result["engines"]
    if not engines:
        return
    note(f"\n1:N identification ({result['fused_note']})")
    note("Strangers (faces of people not among the labelled identities; none screened by "
         "score):\n" + _sources(engines))
    rows: list[list[object]] = []
    for e in engines:
        rows.append(_row(e["engine"], f"default ({e['default_note'][:7]})", e["default"]))
        p = e["points"][1_000]
        rows.append(_row(e["engine"], "refuse: FPIR<=1% @1e3 (point)", p["upper"]))
        rows.append(_row(e["engine"], "review: FPIR<=5% @1e3 (point)", p["lower"]))
        rows.append(_row(e["engine"], "max, t = lowest genuine", e["max_equal_fnir"]))
        rows.append(_row(e["engine"], "top-2 mean, t = lowest genuine", e["top2_equal_fnir"]))
    table(
        "Table 4. 1:N identification: FNIR and FPIR against gallery size N (leave-one-out)",
        ["engine", "threshold rule", "t", "FNIR", "imp. pairs >= t", "p", "p 95% bound",
         "FPIR labelled", "FPIR strangers", "N=1e3 pt/bd", "1e4", "1e5", "1e6"],
        rows,
        "p = per-subject false-match rate (impostor probe-subject pairs at or above t / pairs; "
        "a pair = a probe face vs one other subject's enrolled photos, best cosine).\nFPIR "
        "labelled = labelled probes against the other subjects (gallery @n), strangers = "
        "stranger faces against the whole gallery (count); N=1e3..1e6: 1-(1-p)^N from the "
        "point p / from its 95% bound.\n'top-2 mean': a subject scores the mean of its two "
        "best photos (second stage); 't = lowest genuine': the highest threshold that misses no "
        "genuine probe with a face, for max and top-2 alike (equal FNIR: compare their p).",
    )
    sub_rows = []
    for e in engines:
        d = e["default"]
        measured = [_pct(v, 1) for v in d["fpir_subsets"].values()]
        model = [_pct(1 - (1 - d["rate"]) ** n, 1) for n in d["fpir_subsets"]]
        sub_rows.append([e["engine"], f"{d['threshold']:.4f}", *(
            f"{m} / {f}" for m, f in zip(measured, model, strict=True))])
    table("Table 5. FPIR measured on sub-galleries of n subjects vs 1-(1-p)^n "
          "(default threshold)",
          ["engine", "t", *(f"n={n}" for n in engines[0]["default"]["fpir_subsets"])],
          sub_rows,
          "Measured = the exact mean over every n-subject subset of each labelled probe's "
          "impostor subjects.")
    _goal(result)


def _goal(result: dict[str, Any]) -> None:
    rows = []
    for e in result["engines"]:
        for n, p in e["points"].items():
            hi, lo = p["upper"], p["lower"]
            have = hi["pairs"]
            rows.append([
                e["engine"], f"{n:,}", f"{hi['threshold']:.4f}", f"{lo['threshold']:.4f}",
                f"{_pct(lo['fnir'])} ({lo['misses']})",
                f"{_pct(hi['extrapolated'].get(n, (None, None))[1], 1)}"
                if n in hi["extrapolated"] else "-",
                f"{_pct(lo['extrapolated'].get(n, (None, None))[1], 1)}"
                if n in lo["extrapolated"] else "-",
                f"{p['pairs_needed_upper']:,} / {p['pairs_needed_lower']:,} (have {have:,})",
                ("met" + ("*" if lo["errors"] == 0 else "")) if p["met_point"] else "NOT met",
                "met" if p["met_bound"] else "NOT shown",
            ])
    cost = result["cost_ms_per_face"]
    table(
        "Table 6. Goal: FNIR <= 1% below the lower threshold; unregistered refused <= 1% "
        "and held <= 5% at N",
        ["engine", "N", "upper t (1%)", "lower t (5%)", "FNIR at lower",
         "refused bound", "refused+held bound", "pairs needed up/low", "point", "bound"],
        rows,
        "Thresholds chosen from the point estimate of p; 'bound' = FPIR at N from the 95% "
        "bound on p at that threshold, and the goal is shown only when the pairs reach "
        "pairs_needed.\n*: no impostor pair at or above the threshold, so the point estimate "
        "is 0 at every N: the data cannot resolve the rate (see pairs needed).\n"
        "Detect+embed per face (ms, 5-face 1024px canvas / 5): "
        + ", ".join(f"{k} {v:.1f}" for k, v in cost.items())
        + ("; fusion of sface+dlib costs about their sum"
           if "fused" not in cost and {"sface", "dlib"} <= cost.keys()
           else ""),
    )
