"""Faces on the command line: enroll, erase, reenroll, match, calibrate."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from consentry.cli.common import DbOpt, HomeOpt, JsonOpt, emit_json, open_registry
from consentry.errors import InputError

if TYPE_CHECKING:
    from consentry.faces.engine import FaceEngine

# The face stack (OpenCV, FAISS, NumPy) is imported inside the commands that use
# it, so registry commands start fast.

__all__ = ["register"]

EngineOpt = Annotated[
    str, typer.Option("--engine", help="Face engine: sface (default), dlib or insightface.")
]
PackOpt = Annotated[
    Path | None,
    typer.Option("--pack", help="insightface model-pack folder (you supply it; never downloaded)."),
]


def _engine(name: str, pack: Path | None) -> FaceEngine:
    from consentry.faces.engines import get_engine

    return get_engine(name, pack)


def enroll_command(
    subject: Annotated[str, typer.Argument(help="Subject id or unique name.")],
    photos: Annotated[list[Path], typer.Argument(help="Photos of the subject, one face each.")],
    keep_photos: Annotated[
        bool, typer.Option("--keep-photos", help="Keep aligned photos (encrypted) as exemplars.")
    ] = False,
    engine: EngineOpt = "sface",
    pack: PackOpt = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Enroll photos of a subject: all pass the quality gates, or nothing is stored."""
    from consentry.faces.enroll import enroll_photos

    face_engine = _engine(engine, pack)
    with open_registry(home, db) as registry:
        row = enroll_photos(registry, face_engine, subject, photos, keep_photos)
        registry.checkpoint()
    embeddings = sum(1 for b in row.blobs if b["kind"] == "embedding")
    if as_json:
        emit_json(
            {
                "id": row.id,
                "subject": row.subject_id,
                "engine": row.engine,
                "photos": embeddings,
                "kept_photos": len(row.blobs) - embeddings,
                "log_index": row.log_index,
            }
        )
    else:
        typer.echo(
            f"{row.id}: {embeddings} photo(s) enrolled for {row.subject_id} "
            f"with {row.engine} (log index {row.log_index})"
        )


def erase_command(
    subject: Annotated[str, typer.Argument(help="Subject id or unique name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "erasure requested",
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Destroy a subject's biometric data (key, embeddings, photos); hashes stay in the log."""
    from consentry.registry.biometrics import erase_subject

    with open_registry(home, db) as registry:
        row = erase_subject(registry, subject, reason)
        registry.checkpoint()
    if as_json:
        emit_json({"id": row.id, "subject": row.subject_id, "log_index": row.log_index})
    else:
        typer.echo(
            f"{row.id}: biometric data of {row.subject_id} erased (log index {row.log_index})"
        )


def reenroll_command(
    subject: Annotated[str, typer.Argument(help="Subject id or unique name.")],
    engine: EngineOpt = "sface",
    pack: PackOpt = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Enroll a subject's kept photos with another engine (needs --keep-photos earlier)."""
    import numpy as np
    from PIL import Image

    from consentry.faces.enroll import QualityGates, assess, engine_info
    from consentry.registry.biometrics import Sample, decrypt_photos, enroll

    face_engine = _engine(engine, pack)
    with open_registry(home, db) as registry:
        photos = decrypt_photos(registry, subject)
        if not photos:
            raise InputError("no kept photos for this subject: enroll again with --keep-photos")
        samples: list[Sample] = []
        for photo_sha256, png in photos:
            pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            face, reason = assess(face_engine, pixels, QualityGates())
            if face is None:
                raise InputError(f"kept photo {photo_sha256[:12]}: {reason} with {engine}")
            samples.append(Sample(photo_sha256, face_engine.embed(pixels, face), png))
        row = enroll(registry, subject, engine_info(face_engine), samples)
        registry.checkpoint()
    if as_json:
        emit_json(
            {
                "id": row.id,
                "subject": row.subject_id,
                "engine": row.engine,
                "photos": len(samples),
                "log_index": row.log_index,
            }
        )
    else:
        typer.echo(f"{row.id}: {len(samples)} kept photo(s) re-enrolled with {engine}")


def match_command(
    images: Annotated[list[Path], typer.Argument(help="Images to scan.")],
    engine: EngineOpt = "sface",
    pack: PackOpt = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every face in each image, with the registered subjects it matches.

    Faces come from the gate's own face scan (every frame, every view of
    transparency, every orientation, small faces by tiling), so ``match`` shows
    what the gateway sees; the per-job face cap applies to each image.
    """
    import numpy as np

    from consentry.faces.images import load_image
    from consentry.faces.index import IdentityIndex
    from consentry.faces.scan import scan_images
    from consentry.generation.policy import Limits

    face_engine = _engine(engine, pack)
    results: list[dict[str, Any]] = []
    with open_registry(home, db) as registry:
        index = IdentityIndex(registry, face_engine.name, face_engine.dim)
        names = {s.id: s.display_name for s in registry.list_subjects()}
        for path in images:
            loaded = load_image(path)
            (faces,) = scan_images(face_engine, [loaded], Limits().max_faces)
            vectors = [v for face in faces for v in face.embeddings]
            found_all = index.search(np.stack(vectors)) if vectors else []
            rows: list[dict[str, Any]] = []
            start = 0
            for face in faces:
                best: dict[str, float] = {}
                for found in found_all[start : start + len(face.embeddings)]:
                    for m in found:
                        best[m.subject_id] = max(best.get(m.subject_id, -1.0), m.similarity)
                start += len(face.embeddings)
                if not best and face.incidental:
                    continue  # no unknown person (see ScannedFace.incidental)
                rows.append(
                    {
                        "bbox": [round(v, 1) for v in face.face.bbox],
                        "score": round(face.face.score, 4),
                        "frame": face.frame,
                        "rotation": 90 * face.rotation,
                        "matches": [
                            {
                                "subject": subject,
                                "name": names.get(subject, ""),
                                "similarity": round(similarity, 4),
                            }
                            for subject, similarity in sorted(best.items(), key=lambda kv: -kv[1])
                        ],
                    }
                )
            results.append(
                {
                    "image": str(path),
                    "sha256": loaded.sha256,
                    "faces": rows,
                    "threshold": index.threshold,
                }
            )
    if as_json:
        emit_json(results)
        return
    for result in results:
        typer.echo(f"{result['image']}: {len(result['faces'])} face(s)")
        for face in result["faces"]:
            who = (
                ", ".join(
                    f"{m['name'] or m['subject']} ({m['similarity']:.3f})" for m in face["matches"]
                )
                or "no registered subject"
            )
            typer.echo(f"  bbox {face['bbox']} score {face['score']:.2f}: {who}")


def calibrate_command(
    folder: Annotated[Path, typer.Argument(help="Labelled photos: FOLDER/<identity>/<photo>.")],
    fmr: Annotated[float, typer.Option("--fmr", help="Target false-match rate.")] = 1e-3,
    engine: EngineOpt = "sface",
    pack: PackOpt = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure the threshold at a target FMR on labelled photos and put it in force."""
    import numpy as np

    from consentry.faces.calibration import labelled_photos, pair_scores, threshold_at_fmr
    from consentry.faces.images import load_image
    from consentry.registry.biometrics import record_calibration
    from consentry.registry.models import Calibration

    face_engine = _engine(engine, pack)
    items, dataset_sha256 = labelled_photos(folder)
    labels: list[str] = []
    vectors: list[Any] = []
    skipped: list[str] = []
    for identity, photo in items:
        try:
            loaded = load_image(photo)
        except InputError as exc:
            skipped.append(f"{photo}: {exc}")
            continue
        faces = face_engine.detect(loaded.pixels)
        if not faces:
            skipped.append(f"{photo}: no face found")
            continue
        labels.append(identity)
        vectors.append(face_engine.embed(loaded.pixels, faces[0]))
    rates = threshold_at_fmr(pair_scores(labels, np.stack(vectors)), fmr)
    with open_registry(home, db) as registry:
        row = record_calibration(
            registry,
            Calibration(
                id="",
                engine=face_engine.name,
                engine_version=face_engine.version,
                threshold=rates.threshold,
                fmr_target=fmr,
                fmr=rates.fmr,
                fnmr=rates.fnmr,
                eer=rates.eer,
                genuine_pairs=rates.genuine_pairs,
                impostor_pairs=rates.impostor_pairs,
                dataset_sha256=dataset_sha256,
                created_at="",
                log_index=-1,
            ),
        )
        registry.checkpoint()
    value = {
        "engine": row.engine,
        "threshold": row.threshold,
        "fmr_target": fmr,
        "fmr": row.fmr,
        "fnmr": row.fnmr,
        "eer": row.eer,
        "genuine_pairs": row.genuine_pairs,
        "impostor_pairs": row.impostor_pairs,
        "photos": len(labels),
        "skipped": skipped,
        "log_index": row.log_index,
    }
    if as_json:
        emit_json(value)
        return
    typer.echo(f"engine {row.engine}: threshold {row.threshold:.4f} (cosine)")
    typer.echo(
        f"  at target FMR {fmr:g}: FMR {row.fmr:.5f}, FNMR {row.fnmr:.4f}; EER {row.eer:.4f}"
    )
    typer.echo(
        f"  {len(labels)} photos, {row.genuine_pairs} genuine and "
        f"{row.impostor_pairs} impostor pairs; {len(skipped)} skipped"
    )
    for line in skipped:
        typer.echo(f"  skipped {line}", err=True)


def register(app: typer.Typer, subject_app: typer.Typer) -> None:
    """Attach the face commands to the root app and the ``subject`` group."""
    subject_app.command("enroll")(enroll_command)
    subject_app.command("erase")(erase_command)
    subject_app.command("reenroll")(reenroll_command)
    app.command("match")(match_command)
    app.command("calibrate")(calibrate_command)
