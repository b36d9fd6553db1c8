"""Faces on the command line: enroll, erase, opt-out, reenroll, match, calibrate.

Commands that cannot be undone (``subject erase``, ``subject opt-out``) and
``calibrate`` (which moves the threshold every match depends on) change nothing
without ``--yes``: they first show what they would do. Non-interactive callers
(CI) pass ``--yes``; nothing here reads stdin.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from consentry.cli.calibrate_1n import Fpir, calibrate_fpir, embed_labelled, warn_budget
from consentry.cli.common import DbOpt, HomeOpt, JsonOpt, emit_json, open_registry
from consentry.errors import InputError

if TYPE_CHECKING:
    from consentry.faces.calibration import Rates
    from consentry.faces.engine import FaceEngine
    from consentry.registry.models import Calibration

# The face stack (OpenCV, FAISS, NumPy) is imported inside the commands that use
# it, so registry commands start fast.

__all__ = ["register"]

EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine", help="Face engine: sface (default), dlib, fused (sface+dlib) or insightface."
    ),
]
PackOpt = Annotated[
    Path | None,
    typer.Option("--pack", help="insightface model-pack folder (you supply it; never downloaded)."),
]
MismatchOpt = Annotated[
    bool,
    typer.Option(
        "--allow-mismatch",
        help="Enroll even if the photos do not match the subject's earlier enrollment "
        "(a real change of appearance). Photos of one enrollment must always match each other.",
    ),
]
YesOpt = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Do it (without it: show what would happen, change nothing)."),
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
    allow_mismatch: MismatchOpt = False,
    engine: EngineOpt = "sface",
    pack: PackOpt = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Enroll photos of a subject: all pass the quality gates and show one person
    (the subject enrolled before, if any), or nothing is stored."""
    from consentry.identity.enroll import enroll_photos

    face_engine = _engine(engine, pack)
    with open_registry(home, db) as registry:
        row = enroll_photos(
            registry, face_engine, subject, photos, keep_photos, allow_mismatch=allow_mismatch
        )
        registry.checkpoint()
        warn_budget(registry, face_engine.name)  # a new subject may push N past the budget
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
    yes: YesOpt = False,
    opt_out: Annotated[
        bool,
        typer.Option(
            "--opt-out",
            help="Opt out instead: delete what refusing does not need, keep refusing them.",
        ),
    ] = False,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Destroy a subject's biometric data (key, embeddings, photos, prior files);
    hashes stay in the log. Irreversible, and it leaves the person unprotected:
    needs --yes."""
    if opt_out:
        why = "opt-out requested" if reason == "erasure requested" else reason
        opt_out_command(subject, why, yes, home, db, as_json)
        return
    from consentry.registry.biometrics import erase_subject, erase_warning

    with open_registry(home, db) as registry:
        warning = erase_warning(registry, subject)  # fitted to a subject who opted out
        typer.echo(f"warning: {warning}", err=True)
        if not yes:
            raise InputError("nothing erased: erasure is irreversible, run again with --yes")
        row = erase_subject(registry, subject, reason)
        registry.checkpoint()
    if as_json:
        emit_json(
            {
                "id": row.id,
                "subject": row.subject_id,
                "log_index": row.log_index,
                "protected": False,
                "warning": warning,
            }
        )
    else:
        typer.echo(
            f"{row.id}: biometric data of {row.subject_id} erased (log index {row.log_index})"
        )


def opt_out_command(
    subject: Annotated[str, typer.Argument(help="Subject id or unique name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "opt-out requested",
    yes: YesOpt = False,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Opt a subject out for good: every job with their face, name or prior is refused
    and no grant can be made for them; kept photos and prior files are deleted, the
    encrypted embeddings stay so their face is still recognised. Irreversible: needs --yes."""
    from consentry.registry.biometrics import has_enrollment, opt_out_subject

    if not yes:
        raise InputError(
            "nothing changed: an opt-out is final (kept photos and prior files are deleted, "
            "no grant can be made for them again); run again with --yes"
        )
    with open_registry(home, db) as registry:
        row = opt_out_subject(registry, subject, reason)
        registry.checkpoint()
        enrolled = has_enrollment(registry, row.subject_id)
    note = (
        "their face, name and priors are refused in every job; no grant can be made for them"
        if enrolled
        else "they have no enrollment: their NAME and priors are refused, but their face is "
        "not recognised until they are enrolled (photos without --keep-photos)"
    )
    if not enrolled:
        typer.echo(f"warning: {note}", err=True)
    if as_json:
        emit_json(
            {
                "id": row.id,
                "subject": row.subject_id,
                "log_index": row.log_index,
                "photos_deleted": len(json.loads(row.photos_json)),
                "face_recognised": enrolled,
                "note": note,
            }
        )
    else:
        typer.echo(f"{row.id}: {row.subject_id} opted out (log index {row.log_index}): {note}")


def reenroll_command(
    subject: Annotated[str, typer.Argument(help="Subject id or unique name.")],
    allow_mismatch: MismatchOpt = False,
    engine: EngineOpt = "sface",
    pack: PackOpt = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Enroll a subject's kept photos with another engine (needs --keep-photos earlier);
    checked as any enrollment (one person, and their earlier enrollment with that engine)."""
    from consentry.identity.enroll import reenroll_kept_photos

    face_engine = _engine(engine, pack)
    with open_registry(home, db) as registry:
        row = reenroll_kept_photos(registry, face_engine, subject, allow_mismatch)
        registry.checkpoint()
    count = sum(1 for b in row.blobs if b["kind"] == "embedding")
    if as_json:
        emit_json(
            {
                "id": row.id,
                "subject": row.subject_id,
                "engine": row.engine,
                "photos": count,
                "log_index": row.log_index,
            }
        )
    else:
        typer.echo(f"{row.id}: {count} kept photo(s) re-enrolled with {engine}")


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

    from consentry.faces.images import load_image
    from consentry.identity.index import IdentityIndex
    from consentry.identity.lookup import lookup_faces

    face_engine = _engine(engine, pack)
    results: list[dict[str, Any]] = []
    with open_registry(home, db) as registry:
        index = IdentityIndex(registry, face_engine.name, face_engine.dim)
        names = {s.id: s.display_name for s in registry.list_subjects()}
        for path in images:
            loaded = load_image(path)
            (found,) = lookup_faces(face_engine, index, [loaded])
            rows: list[dict[str, Any]] = [
                {
                    "bbox": face.bbox,
                    "score": round(face.face.face.score, 4),
                    "frame": face.face.frame,
                    "rotation": 90 * face.face.rotation,
                    "matches": [
                        {
                            "subject": m.subject_id,
                            "name": names.get(m.subject_id, ""),
                            "similarity": round(m.similarity, 4),
                        }
                        for m in face.matches  # best first
                    ],
                }
                for face in found
            ]
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


def _describe(row: Calibration | None, threshold: float) -> dict[str, Any]:
    if row is None:
        return {"threshold": threshold, "source": "shipped default", "id": None}
    return {"threshold": row.threshold, "source": row.action, "id": row.id}


def calibrate_command(
    folder: Annotated[
        Path | None,
        typer.Argument(
            help="Labelled photos: FOLDER/<identity>/<photo> (not with --undo/--reset)."
        ),
    ] = None,
    fmr: Annotated[float, typer.Option("--fmr", help="Target false-match rate.")] = 1e-3,
    max_fnmr: Annotated[
        float,
        typer.Option("--max-fnmr", help="Refuse a threshold whose FNMR is above this."),
    ] = 0.05,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            "--yes",
            "-y",
            help="Put it in force (default: a dry run that changes nothing).",
        ),
    ] = False,
    undo: Annotated[
        bool,
        typer.Option("--undo", help="Restore the threshold in force before the last calibration."),
    ] = False,
    reset: Annotated[
        bool, typer.Option("--reset", help="Restore the shipped default threshold.")
    ] = False,
    allow_far: Annotated[
        bool,
        typer.Option(
            "--allow-far-threshold",
            help="Apply a measured threshold more than 0.15 from the shipped default.",
        ),
    ] = False,
    fpir: Annotated[
        float | None,
        typer.Option(
            "--fpir",
            help="1:N mode: choose the thresholds for this expected FPIR (a stranger's face "
            "refused) at the gallery size, instead of --fmr.",
        ),
    ] = None,
    held_fpir: Annotated[
        float,
        typer.Option(
            "--held-fpir", help="With --fpir: budget of strangers' faces held or refused."
        ),
    ] = 0.05,
    gallery: Annotated[
        int | None,
        typer.Option(
            "--gallery",
            help="With --fpir: gallery size N (default: the registered subjects, at least 1).",
        ),
    ] = None,
    engine: EngineOpt = "sface",
    pack: PackOpt = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure the threshold at a target FMR on labelled photos; show it, and with
    --apply put it in force. Refused (exit 2) when the set is too small for the
    target (3/FMR impostor pairs, 3/max-FNMR genuine pairs), the FNMR is above
    --max-fnmr, or the threshold is far from the shipped default. --undo and
    --reset append a new entry restoring the previous or the default threshold.
    --fpir chooses a 1:N operating point instead (refuse and review thresholds for
    an FPIR budget at N subjects; see ``consentry.cli.calibrate_1n``)."""
    from consentry.errors import CalibrationRejectedError
    from consentry.faces.calibration import calibration_problems
    from consentry.faces.thresholds import DEFAULT_THRESHOLDS
    from consentry.registry.biometrics import (
        calibration_state,
        record_calibration,
        reset_calibration,
        undo_calibration,
    )

    if sum([folder is not None, undo, reset]) != 1:
        raise InputError("give a FOLDER of labelled photos, or --undo, or --reset (one of them)")
    face_engine = _engine(engine, pack)
    if fpir is not None or gallery is not None:
        options = Fpir(fpir, held_fpir, gallery, max_fnmr, allow_far)
        calibrate_fpir(face_engine, folder, options, apply, home, db, as_json)
        return
    default = DEFAULT_THRESHOLDS.get(face_engine.name, 0.5)
    problems: list[str] = []
    measured = _measure(face_engine, folder, fmr) if folder is not None else None
    with open_registry(home, db) as registry:
        state = calibration_state(registry, face_engine.name, default)
        value: dict[str, Any] = {}
        if measured is not None:
            rates, row, value = measured
            problems = calibration_problems(rates, fmr, max_fnmr, default, allow_far)
        elif undo:
            row = undo_calibration(state, face_engine.version)
        else:
            row = reset_calibration(state, face_engine.version)
        value |= {
            "engine": face_engine.name,
            "action": row.action,
            "threshold": row.threshold,
            "restores": row.restores,
            "current": _describe(state.newest, state.threshold),
            "default_threshold": default,
            "max_fnmr": max_fnmr,
            "problems": problems,
            "applied": False,
            "log_index": None,
        }
        if not problems and apply:
            row = record_calibration(registry, row)
            registry.checkpoint()
            value |= {"applied": True, "log_index": row.log_index, "id": row.id}
    if as_json:
        emit_json(value)
    else:
        _print_calibration(value)
    if problems:
        raise CalibrationRejectedError("threshold not applied: " + "; ".join(problems))
    if not apply and not as_json:
        typer.echo("dry run: nothing changed; run again with --apply to put it in force", err=True)


def _measure(
    face_engine: FaceEngine, folder: Path, fmr: float
) -> tuple[Rates, Calibration, dict[str, Any]]:
    """Embed the labelled photos and measure the threshold at ``fmr`` (unlogged row)."""
    from consentry.faces.calibration import pair_scores, threshold_at_fmr
    from consentry.registry.models import Calibration

    labels, vectors, dataset_sha256, skipped = embed_labelled(face_engine, folder)
    rates = threshold_at_fmr(pair_scores(labels, vectors), fmr)
    row = Calibration(
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
        action="measure",
        created_at="",
        log_index=-1,
    )
    value = {
        "fmr_target": fmr,
        "fmr": rates.fmr,
        "fnmr": rates.fnmr,
        "eer": rates.eer,
        "genuine_pairs": rates.genuine_pairs,
        "impostor_pairs": rates.impostor_pairs,
        "photos": len(labels),
        "identities": len(set(labels)),
        "skipped": skipped,
    }
    return rates, row, value


def _print_calibration(value: dict[str, Any]) -> None:
    current = value["current"]
    source = f"{current['source']}, {current['id']}" if current["id"] else current["source"]
    was = f"{current['threshold']:.4f} ({source})"
    if value["action"] == "measure":
        typer.echo(
            f"engine {value['engine']}: measured threshold {value['threshold']:.4f} (cosine)"
        )
        typer.echo(
            f"  at target FMR {value['fmr_target']:g}: FMR {value['fmr']:.5f}, "
            f"FNMR {value['fnmr']:.4f} (bound {value['max_fnmr']:g}); EER {value['eer']:.4f}"
        )
        typer.echo(
            f"  {value['photos']} photos of {value['identities']} identities: "
            f"{value['genuine_pairs']} genuine and {value['impostor_pairs']} impostor pairs; "
            f"{len(value['skipped'])} skipped"
        )
        for line in value["skipped"]:
            typer.echo(f"  skipped {line}", err=True)
    else:
        what = f"calibration {value['restores']}" if value["restores"] else "the shipped default"
        typer.echo(
            f"engine {value['engine']}: {value['action']} restores {what}, "
            f"threshold {value['threshold']:.4f}"
        )
    typer.echo(f"  in force now: {was}; shipped default {value['default_threshold']:.4f}")
    if value["applied"]:
        typer.echo(
            f"  applied: threshold {value['threshold']:.4f} in force "
            f"(log index {value['log_index']})"
        )


def register(app: typer.Typer, subject_app: typer.Typer) -> None:
    """Attach the face commands to the root app and the ``subject`` group."""
    subject_app.command("enroll")(enroll_command)
    subject_app.command("erase")(erase_command)
    subject_app.command("opt-out")(opt_out_command)
    subject_app.command("reenroll")(reenroll_command)
    app.command("match")(match_command)
    app.command("calibrate")(calibrate_command)
