"""``python -m bench provenance``: C2PA signing overhead, verify time, audit-like throughput.

1. **Signing overhead.** Ours: ``sign_asset(jpeg, "image/jpeg", manifest, signer)`` with
   the dev PKI's ``LocalKeySigner`` (per call: manifest JSON, ``check_signing_chain``, a
   ``c2pa.Signer.from_callback`` that calls back into Python to sign, ``Builder.sign``
   with thumbnails off and verify-after-sign on). Named baseline: bare c2pa-python,
   ``Builder(manifest, context=thumbnails off).sign(Signer.from_info(C2paSignerInfo(alg,
   chain_pem, key_pem, None)), mime, src, dst)``, the key handed to c2pa-rs, library
   defaults otherwise (verify-after-sign is on by default too). Same manifest definition,
   same image, both built per call, interleaved in rounds. 512 px and 2048 px photo-like
   JPEGs (q90). Target: ours/bare <= 1.3.
2. **Verify time**: ``read_asset(signed, "image/jpeg", root_pem)`` on our outputs, next to a
   bare ``c2pa.Reader`` with the same offline settings and trust anchor (``reader.json()``
   parsed, no report built).
3. **Audit-like throughput** (a placeholder until ``consentry audit`` exists): per file,
   read it, ``read_asset`` (root as anchor), ``load_image_bytes``, sface ``analyze``
   (detect + embed every face), sequentially in one process, over 20 signed 1024x1024 JPEGs
   with faces and 20 without. Measured path: "read_asset + detect+embed".
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import c2pa
import cv2

from bench import provenance_data as data
from bench._common import console, load_average, note, percentile, table
from consentry.faces.engines import get_engine
from consentry.faces.images import load_image_bytes
from consentry.provenance.c2pa_io import read_asset, sign_asset
from consentry.provenance.certs import (
    SigningIdentity,
    check_signing_chain,
    create_dev_pki,
    load_signing_identity,
)
from consentry.provenance.signer import (
    ALGORITHMS,
    CallbackSigner,
    LocalKeySigner,
    signer_from_identity,
)

MIME = "image/jpeg"
RATIO_TARGET = 1.3
AUDIT_PATH = "read_asset + detect+embed"
# The reader settings read_asset uses (offline, trust on), for the bare Reader baseline.
OFFLINE_VERIFY = {
    "verify_after_reading": True,
    "verify_trust": True,
    "remote_manifest_fetch": False,
    "ocsp_fetch": False,
}


@dataclass(frozen=True)
class Sizes:
    sides: tuple[int, ...]  # square JPEG sides for signing and verify
    sign_repeat: tuple[int, ...]  # timed signatures per side, each of ours and bare
    verify_repeat: tuple[int, ...]  # timed reads per side, each of ours and bare
    rounds: int  # ours and bare alternate in this many rounds
    warmup: int  # untimed calls of each first
    with_faces: int  # audit folder: JPEGs with faces
    without_faces: int  # and without
    audit_passes: int  # timed passes over each set (the sets alternate)
    parts_repeat: int  # calls per part in the signing breakdown


FULL = Sizes((512, 2048), (300, 150), (200, 100), 50, 5, 20, 20, 5, 300)
QUICK = Sizes((512, 2048), (100, 50), (60, 30), 20, 3, 20, 20, 1, 100)


# ------------------------------------------------------------------ helpers
def _stats(samples: dict[str, list[float]]) -> dict[str, float]:
    ms = [s * 1000 for s in samples["wall"]]
    return {"n": len(ms), "median_ms": statistics.median(ms), "min_ms": min(ms),
            "p90_ms": percentile(ms, 90),
            "cpu_median_ms": statistics.median(samples["cpu"]) * 1000}


def interleaved(fns: dict[str, Callable[[], object]], repeat: int, rounds: int,
                warmup: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds (this process) of ``repeat`` calls of each function, in
    ``rounds`` alternating blocks (the order flips every round) so that background load
    hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in fns}
    bounds = [round(k * repeat / rounds) for k in range(rounds + 1)]
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            fn, wall, cpu = fns[name], samples[name]["wall"], samples[name]["cpu"]
            for _ in range(bounds[r + 1] - bounds[r]):
                w, c = time.perf_counter(), time.process_time()
                fn()
                cpu.append(time.process_time() - c)
                wall.append(time.perf_counter() - w)
    return samples


def _median_s(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


# ------------------------------------------------------------------ 1. signing
def bare_signer(identity: SigningIdentity) -> Callable[[bytes, str], bytes]:
    """The baseline: c2pa-python alone, the key given to c2pa-rs, thumbnails off."""
    assert identity.key_pem is not None
    alg = ALGORITHMS[identity.alg]
    chain, key = identity.chain_pem, identity.key_pem
    settings = {"builder": {"thumbnail": {"enabled": False}}}

    def sign(src: bytes, manifest_json: str) -> bytes:
        out = io.BytesIO()
        with (
            c2pa.Context.from_dict(settings) as context,
            c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg, chain, key, None)) as signer,
            c2pa.Builder(manifest_json, context=context) as builder,
        ):
            builder.sign(signer, MIME, io.BytesIO(src), out)
        return out.getvalue()

    return sign


def bare_reader(root_pem: bytes) -> Callable[[bytes], dict[str, Any]]:
    settings = {"verify": dict(OFFLINE_VERIFY), "trust": {"user_anchors": root_pem.decode()}}

    def read(signed: bytes) -> dict[str, Any]:
        with (
            c2pa.Context.from_dict(settings) as context,
            c2pa.Reader(MIME, io.BytesIO(signed), None, context) as reader,
        ):
            store: dict[str, Any] = json.loads(reader.json())
        return store

    return read


def signing_and_verify(home: Path, sizes: Sizes) -> dict[str, Any]:
    identity = load_signing_identity(home)
    signer = signer_from_identity(identity)
    root_pem = (home / "pki" / "root.pem").read_bytes()
    manifest = data.manifest()
    rows = []
    for side, sign_n, verify_n in zip(sizes.sides, sizes.sign_repeat, sizes.verify_repeat,
                                      strict=True):
        note(f"[1/3] signing {side}x{side}: {sign_n} timed each of ours and bare; "
             f"[2/3] verify: {verify_n} each ...")
        rows.append(one_size(side, sign_n, verify_n, identity, signer, root_pem, manifest,
                             sizes))
    return {"sizes": rows, "parts": signing_parts(identity, signer, manifest, sizes)}


def one_size(side: int, sign_n: int, verify_n: int, identity: SigningIdentity,
             signer: LocalKeySigner, root_pem: bytes, manifest: dict[str, Any],
             sizes: Sizes) -> dict[str, Any]:
    manifest_json = json.dumps(manifest)
    bare_sign, bare_read = bare_signer(identity), bare_reader(root_pem)
    src = data.photo_like(side, seed=side)
    ours_out = sign_asset(src, MIME, manifest, signer)
    bare_out = bare_sign(src, manifest_json)
    sanity = {
        "ours_state": read_asset(ours_out, MIME, root_pem).state,
        "bare_state": read_asset(bare_out, MIME, root_pem).state,
    }
    if sanity != {"ours_state": "trusted", "bare_state": "trusted"}:
        raise RuntimeError(f"signed outputs do not verify as trusted: {sanity}")
    sign = interleaved(
        {"ours": lambda: sign_asset(src, MIME, manifest, signer),
         "bare": lambda: bare_sign(src, manifest_json)},
        sign_n, sizes.rounds, sizes.warmup)
    verify = interleaved(
        {"ours": lambda: read_asset(ours_out, MIME, root_pem),
         "bare": lambda: bare_read(ours_out)},
        verify_n, sizes.rounds, sizes.warmup)
    ours_s, bare_s = _stats(sign["ours"]), _stats(sign["bare"])
    return {
        "side": side,
        "jpeg_bytes": len(src),
        "signed_bytes_ours": len(ours_out),
        "signed_bytes_bare": len(bare_out),
        "sign": {"ours": ours_s, "bare": bare_s,
                 "ratio_ours_over_bare": ours_s["median_ms"] / bare_s["median_ms"],
                 "cpu_ratio_ours_over_bare": ours_s["cpu_median_ms"] / bare_s["cpu_median_ms"]},
        "verify": {"ours": _stats(verify["ours"]), "bare": _stats(verify["bare"])},
        **sanity,
    }


def callback_calls(signer: LocalKeySigner, manifest: dict[str, Any]) -> int:
    """How many times c2pa calls the signing callback in one sign_asset."""
    calls = 0

    def counting(payload: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return signer.sign(payload)

    counted = CallbackSigner(counting, signer.chain_pem, signer.alg)
    sign_asset(data.photo_like(64), MIME, manifest, counted)
    return calls


def signing_parts(identity: SigningIdentity, signer: LocalKeySigner, manifest: dict[str, Any],
                  sizes: Sizes) -> list[dict[str, Any]]:
    """What sign_asset does besides Builder.sign, each timed alone (median)."""
    assert identity.key_pem is not None
    alg = ALGORITHMS[identity.alg]
    chain, key = identity.chain_pem, identity.key_pem
    claim_like = b"\xa5" * 2048  # COSE Sig_structure of a claim this size: ~2 KB
    n = sizes.parts_repeat

    def from_callback() -> None:
        with c2pa.Signer.from_callback(lambda b: signer.sign(bytes(b)), alg, chain.decode(), None):
            pass

    def from_info() -> None:
        with c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg, chain, key, None)):
            pass

    parts = [
        ("check_signing_chain(chain_pem)", lambda: check_signing_chain(identity.chain_pem),
         "ours only"),
        ("Signer.from_callback(...) build + close", from_callback, "ours only"),
        ("Signer.from_info(...) build + close", from_info, "bare only"),
        ("LocalKeySigner.sign(2 KB) (ECDSA P-256 via cryptography, to r||s)",
         lambda: signer.sign(claim_like),
         f"ours, {callback_calls(signer, manifest)} call(s) per sign_asset"),
        ("json.dumps(manifest definition)", lambda: json.dumps(manifest),
         "ours (bare: its JSON is made once, outside the timed call)"),
    ]
    return [{"part": label, "median_ms": _median_s(fn, n) * 1000, "who": who}
            for label, fn, who in parts]


# ------------------------------------------------------------------ 3. audit
def build_folder(folder: Path, home: Path, sizes: Sizes) -> dict[str, Any]:
    """Signed 1024x1024 JPEGs (q90): face canvases and landscapes, signed by ours."""
    signer = signer_from_identity(load_signing_identity(home))
    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    for kind, count, make in (("faces", sizes.with_faces, data.face_canvas),
                              ("nofaces", sizes.without_faces, data.landscape)):
        for i in range(count):
            signed = sign_asset(data.jpeg(make(i)), MIME, data.manifest(f"{kind} {i}"), signer)
            (folder / f"{kind}_{i:02d}.jpg").write_bytes(signed)
    return {"build_seconds": time.perf_counter() - began}


def audit_pass(files: list[Path], root_pem: bytes) -> dict[str, Any]:
    """One sequential pass of the audit-like path; per-stage seconds summed over files."""
    stages = {"read file": 0.0, "read_asset": 0.0, "load_image_bytes": 0.0,
              "sface analyze": 0.0}
    states: dict[str, int] = {}
    faces_found: list[int] = []
    engine = get_engine("sface")
    began = time.perf_counter()
    for path in files:
        t0 = time.perf_counter()
        blob = path.read_bytes()
        t1 = time.perf_counter()
        report = read_asset(blob, MIME, root_pem)
        t2 = time.perf_counter()
        image = load_image_bytes(blob)
        t3 = time.perf_counter()
        faces = engine.analyze(image.pixels)
        t4 = time.perf_counter()
        for name, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[name] += seconds
        states[report.state] = states.get(report.state, 0) + 1
        faces_found.append(len(faces))
    wall = time.perf_counter() - began
    return {"wall_s": wall, "images": len(files), "images_per_s": len(files) / wall,
            "stage_s": stages, "states": states, "faces_found": faces_found}


def audit(home: Path, workdir: Path, sizes: Sizes) -> dict[str, Any]:
    root_pem = (home / "pki" / "root.pem").read_bytes()
    folder = workdir / "audit"
    note(f"[3/3] audit folder: {sizes.with_faces} + {sizes.without_faces} signed 1024x1024 "
         f"JPEGs; sface engine; {sizes.audit_passes} timed pass(es) ...")
    built = build_folder(folder, home, sizes)
    began = time.perf_counter()
    engine = get_engine("sface")
    engine_s = time.perf_counter() - began
    sets = {"with faces": sorted(folder.glob("faces_*.jpg")),
            "without faces": sorted(folder.glob("nofaces_*.jpg"))}
    audit_pass(sets["with faces"][:2] + sets["without faces"][:2], root_pem)  # warm-up
    result: dict[str, Any] = {"engine": getattr(engine, "version", engine.name),
                              "engine_build_s": engine_s, **built, "sets": {}}
    passes: dict[str, list[dict[str, Any]]] = {name: [] for name in sets}
    for _ in range(sizes.audit_passes):  # the two sets alternate, pass by pass
        for name, files in sets.items():
            passes[name].append(audit_pass(files, root_pem))
    consentry_audit = _consentry_audit(workdir, sets)
    for name, files in sets.items():
        runs = passes[name]
        untrusted = [p["states"] for p in runs if set(p["states"]) != {"trusted"}]
        if untrusted:
            raise RuntimeError(f"audit folder {name}: not every manifest is trusted: {untrusted}")
        middle = sorted(runs, key=lambda p: p["wall_s"])[len(runs) // 2]  # median pass
        bytes_total = sum(p.stat().st_size for p in files)
        result["sets"][name] = {
            "images": len(files),
            "mean_file_kb": bytes_total / len(files) / 1024,
            "pass_images_per_s": [p["images_per_s"] for p in runs],
            "median_pass": middle,
            "consentry_audit": consentry_audit[name],
        }
    return result


def _consentry_audit(workdir: Path, sets: dict[str, list[Path]]) -> dict[str, dict[str, Any]]:
    """The real ``consentry audit`` path (``audit_paths``) over each set, once, against a
    registry with one enrolled subject (so every face is also searched in the index)."""
    from consentry import Registry
    from consentry.identity.enroll import enroll_photos
    from consentry.provenance.audit import audit_paths

    registry = Registry.init(workdir / "audit-registry", None)
    try:
        create_dev_pki(registry.home.root)
        engine = get_engine("sface")
        subject = registry.add_subject("Barack Obama")
        photo = Path(__file__).resolve().parents[1] / "consentry" / "data" / "faces" / "obama.jpg"
        enroll_photos(registry, engine, subject.id, [photo])
        out: dict[str, dict[str, Any]] = {}
        for name, files in sets.items():
            began = time.perf_counter()
            report = audit_paths(registry, engine, files)
            wall = time.perf_counter() - began
            out[name] = {"images": len(files), "wall_s": wall, "images_per_s": len(files) / wall,
                         "findings": report.findings, "unreadable": report.unreadable}
        return out
    finally:
        registry.close()


# ------------------------------------------------------------------ run + tables
def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("provenance")
    group.add_argument("--sign-repeat", type=int, default=None,
                       help="provenance: timed signatures per size (default 300/150, quick 100/50)")


def _versions() -> dict[str, str]:
    def dist(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    return {"c2pa-python": dist("c2pa-python"), "c2pa-rs": c2pa.sdk_version(),
            "opencv": cv2.__version__, "opencv_threads": str(cv2.getNumThreads()),
            "pillow": dist("pillow"), "cryptography": dist("cryptography")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else FULL
    if getattr(args, "sign_repeat", None):
        sizes = Sizes(**(asdict(sizes) | {"sign_repeat": (args.sign_repeat,) * len(sizes.sides)}))
    versions = _versions()
    workdir = Path(tempfile.mkdtemp(prefix="consentry-bench-prov-"))
    console.print(f"\n== provenance ==  workdir {workdir}")
    note("c2pa-python {c2pa-python} (c2pa-rs {c2pa-rs}), OpenCV {opencv} with {opencv_threads} "
         "threads, Pillow {pillow}, cryptography {cryptography}".format(**versions))
    try:
        home = workdir / "home"
        create_dev_pki(home)
        signing = signing_and_verify(home, sizes)
        audited = audit(home, workdir, sizes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {"sizes": asdict(sizes), "versions": versions, "signing": signing,
              "audit": audited, "audit_path": AUDIT_PATH, "load_average_at_end": load_average(),
              "targets": {"sign_ratio_ours_over_bare": RATIO_TARGET}}
    report(result)
    return result


def _f(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def report(result: dict[str, Any]) -> None:
    srows, vrows = [], []
    for s in result["signing"]["sizes"]:
        side = f"{s['side']}x{s['side']}"
        ours, bare = s["sign"]["ours"], s["sign"]["bare"]
        ratio = s["sign"]["ratio_ours_over_bare"]
        srows.append([side, _f(s["jpeg_bytes"] / 1024, 0), _f(ours["median_ms"], 2),
                      _f(bare["median_ms"], 2), f"{ratio:.2f}",
                      "yes" if ratio <= RATIO_TARGET else "NO",
                      f"{_f(ours['cpu_median_ms'], 2)} / {_f(bare['cpu_median_ms'], 2)}",
                      f"{s['sign']['cpu_ratio_ours_over_bare']:.2f}",
                      f"{_f(ours['min_ms'], 2)} / {_f(bare['min_ms'], 2)}",
                      f"{_f(ours['p90_ms'], 2)} / {_f(bare['p90_ms'], 2)}",
                      f"{ours['n']} / {bare['n']}",
                      f"+{_f((s['signed_bytes_ours'] - s['jpeg_bytes']) / 1024, 1)}"])
        vo, vb = s["verify"]["ours"], s["verify"]["bare"]
        vrows.append([side, _f(vo["median_ms"], 2), _f(vo["p90_ms"], 2),
                      _f(vb["median_ms"], 2), f"{vo['median_ms'] / vb['median_ms']:.2f}",
                      f"{vo['n']} / {vb['n']}", s["ours_state"]])
    table(
        "1. Signing a JPEG (q90, photo-like): ours sign_asset vs bare c2pa-python, "
        "interleaved rounds",
        ["image", "JPEG KB", "ours median ms", "bare median ms", "ours/bare",
         f"<= {RATIO_TARGET}", "CPU ms ours / bare", "CPU ours/bare", "min ms ours / bare",
         "p90 ms ours / bare", "n ours / bare", "manifest KB added"],
        srows,
        caption=(
            "ours = sign_asset(jpeg, 'image/jpeg', manifest, LocalKeySigner(dev PKI ES256)): "
            "manifest JSON, check_signing_chain,\nSigner.from_callback (c2pa calls back into "
            "Python to sign), Builder.sign; thumbnails off, verify-after-sign on, offline.\n"
            "bare = Builder(manifest, context=thumbnails off).sign(Signer.from_info("
            "C2paSignerInfo(alg, chain_pem, key_pem, None)), mime, src, dst):\nthe key handed to "
            "c2pa-rs, library defaults otherwise (verify-after-sign is on by default). Same "
            "manifest (c2pa.actions.v2 created/\ntrainedAlgorithmicMedia, cawg.training-mining "
            "all notAllowed, org.consentry.consent), same image; Context, Signer and Builder\n"
            "are built per call in both. Image: shipped obama.jpg, centre-cropped, Lanczos to "
            "the side, grain sigma 2.5.\nms = wall-clock medians (the target is on "
            "these); CPU = this process's CPU time per call, median (less moved by other "
            "load)."
        ),
    )
    table(
        "   where ours spends what bare does not (each part alone, median; Builder.sign is "
        "common to both)",
        ["part", "median ms", "who pays it"],
        [[p["part"], _f(p["median_ms"], 3), p["who"]] for p in result["signing"]["parts"]],
    )
    table(
        "2. Verify: read_asset(signed, 'image/jpeg', root_pem) on our outputs",
        ["image", "read_asset median ms", "p90 ms", "bare Reader median ms",
         "read_asset/bare", "n ours / bare", "state"],
        vrows,
        caption=("bare Reader = c2pa.Reader(mime, stream, None, context) with the same offline "
                 "settings and the root as trust.user_anchors,\njson.loads(reader.json()); no "
                 "report built. Both verify the claim signature, the chain to the root and the "
                 "data hash."),
    )
    a = result["audit"]
    arows = []
    for name, s in a["sets"].items():
        p = s["median_pass"]
        per = {k: v / p["images"] * 1000 for k, v in p["stage_s"].items()}
        found = p["faces_found"]
        arows.append([name, p["images"], _f(s["mean_file_kb"], 0), _f(p["images_per_s"], 2),
                      ", ".join(_f(x, 2) for x in s["pass_images_per_s"]),
                      _f(p["wall_s"] / p["images"] * 1000, 0), _f(per["read_asset"], 1),
                      _f(per["load_image_bytes"], 1), _f(per["sface analyze"], 1),
                      f"{sum(found)} ({min(found)}-{max(found)}/image)",
                      ", ".join(f"{k} {v}" for k, v in p["states"].items())])
    table(
        f"3. Audit-like throughput ({AUDIT_PATH}), placeholder for `consentry audit`: "
        "sequential, one process",
        ["set", "images", "mean KB", "images/s", "images/s per pass", "ms/image",
         "read_asset ms", "decode ms", "analyze ms", "faces found", "manifest states"],
        arows,
        caption=(
            "Per file: read the bytes, read_asset(root as anchor), load_image_bytes, "
            "get_engine('sface').analyze (YuNet detect + SFace embed every face).\n"
            "Folder: 1024x1024 JPEGs q90, every one signed by sign_asset; with faces = one or "
            "two shipped photos pasted whole onto a backdrop,\nwithout = generated landscapes. "
            "images/s is from the median pass; stage columns are means per image in it. "
            f"Engine {a['engine']}\nbuilt in {_f(a['engine_build_s'], 2)} s (not in the rate); "
            f"folder built and signed in {_f(a['build_seconds'], 1)} s. The real audit command "
            "is not measured here."
        ),
    )
    crow = [[name, s["consentry_audit"]["images"], _f(s["consentry_audit"]["images_per_s"], 2),
             _f(s["consentry_audit"]["wall_s"], 1), s["consentry_audit"]["findings"]]
            for name, s in a["sets"].items()]
    table(
        "3b. consentry audit (provenance.audit.audit_paths, the command's code path), one pass",
        ["set", "images", "images/s", "wall s", "findings"],
        crow,
        caption=("verify_media (C2PA with the registry root + consent check) and a face scan "
                 "against a registry with one enrolled subject; these files are signed by\n"
                 "another PKI (untrusted here), so a registered face in them is a finding."),
    )
    note(f"\nload average (1/5/15 min) at end: "
         f"{', '.join(f'{x:.2f}' for x in result['load_average_at_end'])}")
