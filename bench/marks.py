"""``python -m bench marks``: how durable a release's marks are, and what they cost.

Real photos: ``../shared/faces`` (beside the repository, when present) and the
photos shipped in ``consentry/data/faces``.

1. **Robustness matrix.** Released set: photos marked with :func:`mark_image` (our
   DWT-DCT-SVD watermark with a fresh release id, then ISCC + PDQ of the marked
   pixels). Each is edited (JPEG q90/75/50, resize 0.8/0.5, centre crop 90%,
   resize 0.5 then JPEG q75, rotation 2 degrees, brightness +20%) and we count: the
   watermark decodes to its id; the fingerprint agrees (both ISCC and PDQ within
   their thresholds); both (= recovered); and the worst ISCC/PDQ distances.
2. **False recoveries** on unrelated images: every photo not released and
   variants of it (4 corner crops at 80%, mirror, resize 0.7, JPEG q60, rotation 5
   degrees, grey), plus the unmarked originals of the released photos and their
   variants (look-alikes: the fingerprint agrees, the watermark must be absent), plus
   other releases' outputs checked against each release, plus the copy attack (a
   release's id embedded onto another photo: the watermark decodes, the fingerprint
   must disagree). A false recovery = a decode to a release id whose fingerprint agrees.
3. **PSNR** of marked against original, and **cost**: ``mark_image`` per output as a
   ratio to C2PA signing (``sign_asset``, dev PKI, the same image as PNG), the
   baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from bench import provenance_data as data
from bench._common import load_average, note, table
from consentry.provenance import fingerprint as fp
from consentry.provenance import watermark as wm
from consentry.provenance.c2pa_io import sign_asset
from consentry.provenance.certs import create_dev_pki, load_signing_identity
from consentry.provenance.marks import mark_image
from consentry.provenance.signer import signer_from_identity

Array = np.ndarray
ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "faces"


def _jpeg(a: Array, quality: int) -> Array:
    buffer = io.BytesIO()
    Image.fromarray(a).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _resize(a: Array, factor: float) -> Array:
    im = Image.fromarray(a)
    size = (max(8, round(im.width * factor)), max(8, round(im.height * factor)))
    return np.asarray(im.resize(size, Image.Resampling.LANCZOS))


def _crop(a: Array, keep: float, corner: str = "centre") -> Array:
    h, w = a.shape[:2]
    ch, cw = round(h * keep), round(w * keep)
    top, left = {"centre": ((h - ch) // 2, (w - cw) // 2), "tl": (0, 0), "tr": (0, w - cw),
                 "bl": (h - ch, 0), "br": (h - ch, w - cw)}[corner]  # fmt: skip
    return np.ascontiguousarray(a[top : top + ch, left : left + cw])


def _rotate(a: Array, degrees: float) -> Array:
    return np.asarray(Image.fromarray(a).rotate(degrees, resample=Image.Resampling.BICUBIC))


def _bright(a: Array, factor: float) -> Array:
    return np.asarray(ImageEnhance.Brightness(Image.fromarray(a)).enhance(factor))


EDITS: dict[str, Callable[[Array], Array]] = {
    "clean": lambda a: a,
    "jpeg q90": lambda a: _jpeg(a, 90),
    "jpeg q75": lambda a: _jpeg(a, 75),
    "jpeg q50": lambda a: _jpeg(a, 50),
    "resize 0.8": lambda a: _resize(a, 0.8),
    "resize 0.5": lambda a: _resize(a, 0.5),
    "crop 90%": lambda a: _crop(a, 0.9),
    "resize 0.5 + jpeg q75": lambda a: _jpeg(_resize(a, 0.5), 75),
    "rotate 2 deg": lambda a: _rotate(a, 2.0),
    "brightness +20%": lambda a: _bright(a, 1.2),
}
VARIANTS: dict[str, Callable[[Array], Array]] = {
    "original": lambda a: a,
    "crop 80% tl": lambda a: _crop(a, 0.8, "tl"),
    "crop 80% tr": lambda a: _crop(a, 0.8, "tr"),
    "crop 80% bl": lambda a: _crop(a, 0.8, "bl"),
    "crop 80% br": lambda a: _crop(a, 0.8, "br"),
    "mirror": lambda a: np.ascontiguousarray(a[:, ::-1]),
    "resize 0.7": lambda a: _resize(a, 0.7),
    "jpeg q60": lambda a: _jpeg(a, 60),
    "rotate 5 deg": lambda a: _rotate(a, 5.0),
    "grey": lambda a: np.asarray(ImageOps.grayscale(Image.fromarray(a)).convert("RGB")),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--marks-released", type=int, default=24,
                        help="marks: how many photos are released (default 24)")  # fmt: skip


def _photos() -> list[Array]:
    paths = sorted(SHARED.rglob("*.jpg")) if SHARED.is_dir() else []
    paths += sorted(data.SHIPPED.glob("*.jpg"))
    photos, seen = [], set()
    for path in paths:
        a = np.asarray(Image.open(path).convert("RGB"))
        key = a.tobytes()[:4096] + bytes(a.shape[0] % 256)
        if key not in seen:  # the same photo twice would be a look-alike, not unrelated
            seen.add(key)
            photos.append(a)
    return photos


def _psnr(a: Array, b: Array) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def robustness(released: list[tuple[Array, Array, str, fp.Fingerprint]]) -> list[list[object]]:
    rows: list[list[object]] = []
    n = len(released)
    for name, edit in EDITS.items():
        decoded = agreed = both = worst_iscc = worst_pdq = 0
        for _orig, marked, rid, print_ in released:
            edited = edit(marked)
            ok_wm = wm.decode(edited).release_id == rid
            iscc, pdq = fp.distances(print_, fp.fingerprint(edited))
            ok_fp = iscc <= fp.ISCC_MAX_BITS and pdq <= fp.PDQ_MAX_BITS
            decoded, agreed, both = decoded + ok_wm, agreed + ok_fp, both + (ok_wm and ok_fp)
            worst_iscc, worst_pdq = max(worst_iscc, iscc), max(worst_pdq, pdq)
        rows.append([name, f"{decoded}/{n}", f"{agreed}/{n}", f"{both}/{n}",
                     worst_iscc, worst_pdq])  # fmt: skip
    return rows


def false_recoveries(
    released: list[tuple[Array, Array, str, fp.Fingerprint]], others: list[Array]
) -> dict[str, Any]:
    by_id = {rid: print_ for _o, _m, rid, print_ in released}
    counts: dict[str, list[int]] = {}  # group -> [images, valid decodes, fp agrees, recoveries]

    def check(group: str, image: Array, exclude: str | None = None) -> None:
        row = counts.setdefault(group, [0, 0, 0, 0])
        found = wm.decode(image).release_id
        print_ = fp.fingerprint(image)
        agrees = any(fp.agrees(print_, p) for rid, p in by_id.items() if rid != exclude)
        recovered = found in by_id and found != exclude and fp.agrees(print_, by_id[found])
        row[0] += 1
        row[1] += found is not None and found != exclude
        row[2] += agrees
        row[3] += recovered

    for photo in others:
        for variant in VARIANTS.values():
            check("unrelated photos and variants", variant(photo))
    for original, _m, _rid, _p in released:
        for variant in VARIANTS.values():
            check("look-alikes: unmarked originals of releases", variant(original))
    for _o, marked, rid, _p in released:
        check("other releases' outputs", marked, exclude=rid)
    rids = [rid for _o, _m, rid, _p in released]
    for k, photo in enumerate(others[: 4 * len(released)]):
        copied = wm.embed(photo, rids[k % len(rids)]) if min(photo.shape[:2]) >= 64 else photo
        check("copy attack: a release's id on another photo", copied)
    return counts


def cost(released: list[tuple[Array, Array, str, fp.Fingerprint]], repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        create_dev_pki(home)
        signer = signer_from_identity(load_signing_identity(home))
        manifest = data.manifest()
        mark_s, sign_s = [], []
        for _ in range(repeat):
            for original, _m, rid, _p in released:
                began = time.perf_counter()
                marked, _mark = mark_image(original, rid)
                mark_s.append(time.perf_counter() - began)
                buffer = io.BytesIO()
                Image.fromarray(marked).save(buffer, "PNG")
                png = buffer.getvalue()
                began = time.perf_counter()
                sign_asset(png, "image/png", manifest, signer)
                sign_s.append(time.perf_counter() - began)
    mark_ms, sign_ms = statistics.median(mark_s) * 1e3, statistics.median(sign_s) * 1e3
    return {"mark_ms": mark_ms, "sign_ms": sign_ms, "ratio": mark_ms / sign_ms}


def run(args: argparse.Namespace) -> dict[str, Any]:
    photos = _photos()
    n_released = 6 if args.quick else args.marks_released
    rng = np.random.default_rng(15)
    order = rng.permutation(len(photos))
    released_photos = [photos[i] for i in order[:n_released]]
    others = [photos[i] for i in order[n_released:]]
    if args.quick:
        others = others[:12]
    note(f"marks: {len(photos)} distinct real photos; {n_released} released, "
         f"{len(others)} unrelated (x{len(VARIANTS)} variants each) ...")  # fmt: skip
    released = []
    for photo in released_photos:
        rid = wm.new_release_id()
        marked, mark = mark_image(photo, rid)
        released.append((photo, marked, rid, fp.Fingerprint.from_json(mark)))
    carried = sum(1 for o, m, _r, _p in released if not np.array_equal(o, m))
    psnr = [_psnr(o, m) for o, m, _r, _p in released]
    rows = robustness(released)
    table(
        f"marks: robustness over {n_released} released photos (watermark: {wm.WATERMARK_ALG}, "
        f"decoded at {wm.CANONICAL}x{wm.CANONICAL}; fingerprint agrees = ISCC <= "
        f"{fp.ISCC_MAX_BITS}/64 and PDQ <= {fp.PDQ_MAX_BITS}/256)",
        ["edit", "watermark decodes", "fingerprint agrees", "recovered (both)",
         "worst ISCC bits", "worst PDQ bits"],
        rows,
    )  # fmt: skip
    counts = false_recoveries(released, others)
    total = [sum(v[i] for v in counts.values()) for i in range(4)]
    table(
        "marks: false recoveries (goal 0): a decode to a release id whose fingerprint agrees",
        ["images", "count", "decodes to a release id", "fingerprint agrees", "recovered"],
        [[group, *values] for group, values in counts.items()] + [["all", *total]],
    )
    spend = cost(released[:6], 1 if args.quick else 3)
    med = statistics.median(psnr)
    table(
        "marks: quality and cost per output",
        ["measure", "value"],
        [
            ["outputs that carry the watermark", f"{carried}/{n_released}"],
            ["PSNR marked vs original, min / median (dB)", f"{min(psnr):.1f} / {med:.1f}"],
            ["mark_image (embed + self-check + ISCC + PDQ), median ms", f"{spend['mark_ms']:.1f}"],
            ["baseline: C2PA sign_asset of the same PNG, median ms", f"{spend['sign_ms']:.1f}"],
            ["ratio mark / sign", f"{spend['ratio']:.2f}"],
        ],
        caption=f"load average {load_average()}",
    )
    return {
        "released": n_released,
        "unrelated_photos": len(others),
        "robustness": rows,
        "false": counts,
        "false_total": total,
        "psnr_min": min(psnr),
        "psnr_median": statistics.median(psnr),
        "cost": spend,
        "load_average": load_average(),
    }
