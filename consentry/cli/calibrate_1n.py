"""``consentry calibrate --fpir``: a 1:N operating point, and the gallery-budget warning.

``calibrate FOLDER --fpir F [--held-fpir H] [--gallery N]`` scores the labelled
photos the 1:N way (:mod:`consentry.faces.calibration_1n`) and chooses the upper
(refuse) threshold for FPIR ``F`` and the review threshold for ``H`` at N
registered subjects (default: the registry's enrolled, not erased subjects of the
engine, at least 1). With ``--apply`` both go into one signed calibration entry
with ``fpir_target``, ``gallery_size`` and ``max_gallery``; without it nothing
changes. A set too small for the budget, a missed-face rate above ``--max-fnmr``
at the review threshold, or a far threshold is refused (exit 2), nothing recorded.

:func:`warn_budget` prints one line to stderr when the registry holds more
subjects than the calibration in force allows (``consentry.identity.budget``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from consentry.cli.common import emit_json, open_registry, terminal_progress
from consentry.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from consentry.faces.calibration_1n import OperatingPoint
    from consentry.faces.engine import FaceEngine
    from consentry.registry.models import Calibration
    from consentry.registry.store import Registry

__all__ = ["Fpir", "calibrate_fpir", "embed_labelled", "warn_budget"]


@dataclass(frozen=True)
class Fpir:
    """The 1:N options of one ``calibrate --fpir`` run (``fpir`` None: not given)."""

    fpir: float | None
    held_fpir: float
    gallery: int | None
    max_fnmr: float
    allow_far: bool


def embed_labelled(
    face_engine: FaceEngine, folder: Path
) -> tuple[list[str], np.ndarray, str, list[str]]:
    """(labels, unit embeddings, dataset hash, skipped lines) of ``folder/<identity>/<photo>``:
    the largest face of each photo; a photo without one is skipped."""
    import numpy as np

    from consentry.faces.calibration import labelled_photos
    from consentry.faces.images import load_image

    items, dataset_sha256 = labelled_photos(folder)
    labels: list[str] = []
    vectors: list[Any] = []
    skipped: list[str] = []
    with terminal_progress("embedding") as tick:
        for done, (identity, photo) in enumerate(items, 1):
            tick(done, len(items), str(photo))
            try:
                loaded = load_image(photo)
            except InputError as exc:
                skipped.append(f"{photo}: {exc}")
                continue
            faces = face_engine.detect(loaded.pixels)
            if not faces:
                skipped.append(f"{photo}: no face found")
                continue
            face = max(faces, key=lambda f: f.bbox[2] * f.bbox[3])
            labels.append(identity)
            vectors.append(face_engine.embed(loaded.pixels, face))
    if not vectors:
        raise InputError(f"no face found in any photo under {folder}")
    return labels, np.stack(vectors), dataset_sha256, skipped


def _row(face_engine: FaceEngine, point: OperatingPoint, dataset_sha256: str) -> Calibration:
    """The unlogged entry: ``fmr*`` are the per-subject rate at the upper threshold,
    ``fnmr`` the registered faces below it, the pairs the 1:N probes and pairs."""
    from consentry.registry.models import Calibration

    upper = point.upper
    return Calibration(
        id="",
        engine=face_engine.name,
        engine_version=face_engine.version,
        threshold=upper.threshold,
        fmr_target=upper.target_rate,
        fmr=upper.rate,
        fnmr=point.fnir_missed + point.fnir_held,
        eer=point.eer,
        genuine_pairs=point.genuine_probes,
        impostor_pairs=point.impostor_pairs,
        dataset_sha256=dataset_sha256,
        review_threshold=point.review.threshold,
        fpir_target=point.fpir,
        gallery_size=point.gallery,
        max_gallery=point.max_gallery,
        action="measure",
        created_at="",
        log_index=-1,
    )


def _value(point: OperatingPoint, labels: list[str], skipped: list[str]) -> dict[str, Any]:
    from consentry.faces.identification import fpir_at

    upper, review = point.upper, point.review
    return {
        "action": "measure",
        "threshold": upper.threshold,
        "review_threshold": review.threshold,
        "fpir_target": point.fpir,
        "held_fpir_target": point.held_fpir,
        "gallery_size": point.gallery,
        "max_gallery": point.max_gallery,
        "rate_target": upper.target_rate,
        "rate": upper.rate,
        "rate_bound": upper.rate_bound,
        "held_rate_target": review.target_rate,
        "held_rate": review.rate,
        "held_rate_bound": review.rate_bound,
        "fpir_bound": fpir_at(upper.rate_bound, point.gallery),
        "held_fpir_bound": fpir_at(review.rate_bound, point.gallery),
        "fnir_missed": point.fnir_missed,
        "fnir_held": point.fnir_held,
        "eer": point.eer,
        "genuine_probes": point.genuine_probes,
        "impostor_pairs": point.impostor_pairs,
        "photos": len(labels),
        "identities": len(set(labels)),
        "skipped": skipped,
    }


def calibrate_fpir(
    face_engine: FaceEngine,
    folder: Path | None,
    options: Fpir,
    apply: bool,
    home: Path | None,
    db: str | None,
    as_json: bool,
) -> None:
    """The ``--fpir`` mode of ``consentry calibrate`` (see the module)."""
    from consentry.errors import CalibrationRejectedError
    from consentry.faces.calibration_1n import (
        check_budgets,
        identification_scores,
        operating_point,
        operating_point_problems,
    )
    from consentry.faces.thresholds import DEFAULT_THRESHOLDS
    from consentry.identity.budget import registered_subjects
    from consentry.registry.biometrics import record_calibration

    if options.fpir is None:
        raise InputError("--gallery sets the N of --fpir: give --fpir too")
    if folder is None:
        raise InputError("--fpir measures on a FOLDER of labelled photos (not --undo/--reset)")
    gallery = 1 if options.gallery is None else options.gallery
    check_budgets(options.fpir, options.held_fpir, gallery)  # before embedding anything
    default = DEFAULT_THRESHOLDS.get(face_engine.name, 0.5)
    labels, vectors, dataset_sha256, skipped = embed_labelled(face_engine, folder)
    scores = identification_scores(labels, vectors)
    with open_registry(home, db) as registry:
        registry.consent.refresh()
        if options.gallery is None:
            gallery = max(1, registered_subjects(registry.consent, face_engine.name))
        point = operating_point(scores, options.fpir, options.held_fpir, gallery)
        problems = operating_point_problems(point, options.max_fnmr, default, options.allow_far)
        value = _value(point, labels, skipped) | {
            "engine": face_engine.name,
            "default_threshold": default,
            "max_fnmr": options.max_fnmr,
            "problems": problems,
            "applied": False,
            "log_index": None,
        }
        if not problems and apply:
            row = record_calibration(registry, _row(face_engine, point, dataset_sha256))
            registry.checkpoint()
            value |= {"applied": True, "log_index": row.log_index, "id": row.id}
        if as_json:
            emit_json(value)
        else:
            _print(value)
        warn_budget(registry, face_engine.name)
    if problems:
        raise CalibrationRejectedError("thresholds not applied: " + "; ".join(problems))
    if not apply and not as_json:
        typer.echo("dry run: nothing changed; run again with --apply to put it in force", err=True)


def _print(value: dict[str, Any]) -> None:
    n = value["gallery_size"]
    typer.echo(
        f"engine {value['engine']}: at N={n}, upper (refuse) threshold "
        f"{value['threshold']:.4f}, review threshold {value['review_threshold']:.4f} (cosine)"
    )
    typer.echo(
        f"  refused: FPIR budget {value['fpir_target']:g}, per-subject false-match rate "
        f"{value['rate']:.5f} (bound {value['rate_bound']:.5f} <= {value['rate_target']:.3g}), "
        f"FPIR at N <= {value['fpir_bound']:.4f}"
    )
    typer.echo(
        f"  held or refused: budget {value['held_fpir_target']:g}, rate {value['held_rate']:.5f} "
        f"(bound {value['held_rate_bound']:.5f}), FPIR at N <= {value['held_fpir_bound']:.4f}"
    )
    typer.echo(
        f"  registered faces: FNIR {value['fnir_missed']:.4f} missed (below review, bound "
        f"{value['max_fnmr']:g}), {value['fnir_held']:.4f} held; EER {value['eer']:.4f}"
    )
    typer.echo(
        f"  {value['photos']} photos of {value['identities']} identities: "
        f"{value['genuine_probes']} genuine probes, {value['impostor_pairs']} impostor "
        f"probe-subject pairs; {len(value['skipped'])} skipped; budget holds up to "
        f"N={value['max_gallery']}"
    )
    for line in value["skipped"]:
        typer.echo(f"  skipped {line}", err=True)
    if value["applied"]:
        typer.echo(f"  applied: both thresholds in force (log index {value['log_index']})")


def warn_budget(registry: Registry, engine: str) -> None:
    """``warning: ...`` on stderr when ``engine``'s gallery is past its 1:N budget."""
    from consentry.identity.budget import gallery_budget

    registry.consent.refresh()
    line = gallery_budget(registry.consent, engine).warning()
    if line is not None:
        typer.echo(f"warning: {line}", err=True)
