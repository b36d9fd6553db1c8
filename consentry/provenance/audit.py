"""``consentry audit``: provenance, consent and registered faces, for every image.

Invariants
- Every file named, and every file under every folder named, gets one report
  item, whatever its name: a file that cannot be read, or is not an allowed
  image (HEIC, ``.bin``, text, ...: judged by its bytes, not its name), is
  reported as unreadable with its error, never skipped silently.
- Faces come from the one face pipeline (:func:`consentry.identity.lookup.lookup_faces`
  over :mod:`consentry.faces.scan`: every frame,
  every view of transparency, every orientation, small faces by tiling) under
  the per-job face cap (``Limits.max_faces`` by default): a file with more faces
  is reported as unreadable ("too many faces"), never audited in part.
- A *finding* is a registered subject's face in media that lacks valid
  Consentry provenance for that subject: no manifest, a manifest that is not
  Trusted, a consent check that fails, or valid provenance naming other subjects.
- The HTML report (:mod:`consentry.provenance.audit_html`) is self-contained (face
  crops inline as data URIs) and every string from the media or the file system is
  escaped. The JSON report only ever gains keys: each item and finding carries its
  ``severity`` and ``action`` (:mod:`consentry.provenance.audit_triage`), and the
  report its ``run`` (when, which registry, engine and thresholds).
- Every face crop is ``CROP_SIZE`` square: the face and a margin, scaled to fit
  with its aspect kept, padded with neutral grey.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from PIL import Image

from consentry.errors import ConsentryError
from consentry.faces.engine import FaceEngine
from consentry.faces.images import BYTES_SOURCE, FaceView, face_views, load_image
from consentry.faces.scan import ScannedFace
from consentry.identity.index import IdentityIndex
from consentry.identity.lookup import lookup_faces
from consentry.limits import Limits
from consentry.media import read_capped
from consentry.provenance.audit_html import render_page
from consentry.provenance.audit_triage import SEVERITIES, triage_finding, triage_item
from consentry.provenance.verify import verify_media
from consentry.registry.store import Registry

__all__ = [
    "AuditItem",
    "AuditReport",
    "Finding",
    "RunInfo",
    "audit_data",
    "audit_paths",
    "hide_password",
    "iter_media",
    "render_html",
    "write_reports",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"})
"""The usual names of the allowed formats (informational: ``iter_media`` yields every file)."""
MAX_FACES_DEFAULT = Limits().max_faces
CROP_SIZE = 96
"""Width and height in pixels of every face crop in the report."""
_PAD = (128, 128, 128)
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff"}


@dataclass
class Finding:
    subject_id: str
    name: str
    similarity: float
    bbox: list[float]
    reason: str
    crop_png: str = ""  # base64 PNG of the face, for the HTML report
    # False: the face scored in the review band or is not clearly one person (a
    # reviewer's call, severity medium); True: a certain match (severity high)
    certain: bool = True


@dataclass
class AuditItem:
    path: str
    sha256: str = ""
    error: str = ""
    manifest_state: str = ""  # none | trusted | valid_untrusted | invalid
    codes: list[str] = field(default_factory=list)
    consent: str = ""  # ok | failed: ... | none
    provenance_subjects: list[str] = field(default_factory=list)
    faces: int = 0
    findings: list[Finding] = field(default_factory=list)


@dataclass
class RunInfo:
    """What an audit ran against, for the report's reader."""

    started: str  # ISO 8601 UTC
    finished: str
    home: str
    db: str  # the database URL, any password replaced by ***
    log_size: int
    engine: str
    threshold: float  # a face at or above it matches a subject
    review_threshold: float
    max_faces: int


@dataclass
class AuditReport:
    items: list[AuditItem]
    run: RunInfo | None = None

    @property
    def findings(self) -> int:
        return sum(len(i.findings) for i in self.items)

    @property
    def unreadable(self) -> int:
        return sum(1 for i in self.items if i.error)

    def to_json(self, with_crops: bool = False) -> dict[str, Any]:
        """The JSON report; ``with_crops`` keeps each finding's ``crop_png``."""
        items = []
        by_severity = dict.fromkeys(SEVERITIES, 0)
        for item in self.items:
            value = asdict(item)
            certain = sum(1 for f in item.findings if f.certain)
            triage = triage_item(
                item.error, item.manifest_state, item.consent, len(item.findings), certain
            )
            value["severity"], value["action"] = triage.severity, triage.action
            by_severity[triage.severity] += 1
            for finding in value["findings"]:
                if not with_crops:
                    finding.pop("crop_png", None)
                found = triage_finding(item.manifest_state, item.consent, finding["certain"])
                finding["severity"], finding["action"] = found.severity, found.action
            items.append(value)
        return {
            "files": len(self.items),
            "findings": self.findings,
            "unreadable": self.unreadable,
            "by_severity": by_severity,  # files per severity
            "run": asdict(self.run) if self.run is not None else None,
            "items": items,
        }


def iter_media(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named explicitly, and every file under folders (whatever its name: one
    that is not an allowed image is reported, not skipped)."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if not child.is_dir():  # a broken link or a FIFO is reported too
                    yield child
        else:
            yield path


def _crop(pixels: np.ndarray, bbox: tuple[float, float, float, float]) -> str:
    x, y, w, h = bbox
    margin = 0.25
    height, width = pixels.shape[:2]
    left = max(int(x - w * margin), 0)
    top = max(int(y - h * margin), 0)
    right = min(int(x + w * (1 + margin)), width)
    bottom = min(int(y + h * (1 + margin)), height)
    face = Image.fromarray(np.ascontiguousarray(pixels[top:bottom, left:right])).convert("RGB")
    scale = CROP_SIZE / max(face.width, face.height, 1)
    size = (max(round(face.width * scale), 1), max(round(face.height * scale), 1))
    face = face.resize(size, Image.Resampling.LANCZOS)
    tile = Image.new("RGB", (CROP_SIZE, CROP_SIZE), _PAD)
    tile.paste(face, ((CROP_SIZE - size[0]) // 2, (CROP_SIZE - size[1]) // 2))
    buffer = io.BytesIO()
    tile.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _audit_one(
    registry: Registry,
    engine: FaceEngine,
    index: IdentityIndex,
    names: dict[str, str],
    path: Path,
    max_faces: int = MAX_FACES_DEFAULT,
) -> AuditItem:
    try:
        data = read_capped(path)
    except ConsentryError as exc:
        return AuditItem(path=str(path), error=str(exc))
    return audit_data(registry, engine, index, names, data, str(path), max_faces=max_faces)


def audit_data(
    registry: Registry,
    engine: FaceEngine,
    index: IdentityIndex,
    names: dict[str, str],
    data: bytes,
    label: str,
    *,
    max_faces: int = MAX_FACES_DEFAULT,
) -> AuditItem:
    """Audit one medium given as bytes; ``label`` names it in the report. At most
    ``max_faces`` faces are embedded: more is reported as an error, unaudited."""
    item = AuditItem(path=label)
    try:
        loaded = load_image(data)
        views = face_views(loaded)
        (found,) = lookup_faces(engine, index, [loaded], max_faces)
    except ConsentryError as exc:
        item.error = str(exc).replace(BYTES_SOURCE, label)
        return item
    item.sha256 = loaded.sha256
    mime = _MIME.get(loaded.format, "application/octet-stream")
    try:
        result = verify_media(registry, data, mime)
        item.manifest_state = result.c2pa_state
        item.codes = list(result.codes)
        if result.recovered:
            item.consent = "recovered"
        elif result.c2pa_state == "none":
            item.consent = "none"
        else:
            item.consent = "ok" if result.consent_ok else f"failed: {result.consent_reason}"
        # a recovered release (manifest stripped) covers its subjects as a valid one does
        covered = set(result.subject_ids) if result.ok or result.recovered else set()
        item.provenance_subjects = sorted(result.subject_ids)
        why = _reason(result.c2pa_state, result.ok, result.consent_reason)
    except ConsentryError as exc:
        item.manifest_state, item.consent, covered = "invalid", f"failed: {exc}", set()
        why = f"provenance could not be checked: {exc}"
    item.faces = len(found)  # incidental faces matching nobody are dropped (lookup_faces)
    for seen in found:
        face = seen.face
        for match in seen.matches:  # best first
            if match.subject_id in covered:
                continue
            reason = why or "valid provenance does not cover this subject"
            item.findings.append(
                Finding(
                    subject_id=match.subject_id,
                    name=names.get(match.subject_id, ""),
                    similarity=round(match.similarity, 4),
                    bbox=seen.bbox,
                    reason=reason + _where(face),
                    crop_png=_crop(_pixels_of(views, face), face.face.bbox),
                    certain=match.certain,
                )
            )
    return item


def _where(face: ScannedFace) -> str:
    """Where a face that a plain viewer may not show was found, for the reason."""
    parts = []
    if face.frame:
        parts.append(f"frame {face.frame}")
    hidden = [k for k in face.kinds if k not in ("image", "over-white")]
    if hidden and len(hidden) == len(face.kinds):
        parts.append(f"seen {hidden[0]}")
    return f" ({', '.join(parts)})" if parts else ""


def _pixels_of(views: list[FaceView], face: ScannedFace) -> np.ndarray:
    """The pixels of the view the face was seen in, for its crop."""
    for view in views:
        if view.frame == face.frame and view.kind in face.kinds:
            return view.pixels
    return views[0].pixels


def _reason(state: str, ok: bool, consent_reason: str) -> str:
    if state == "none":
        return "no C2PA manifest"
    if state == "valid_untrusted":
        return "C2PA manifest not signed by this registry's certificate chain"
    if state == "invalid":
        return "C2PA manifest invalid"
    if not ok:
        return f"consent check failed: {consent_reason}"
    return ""


def audit_paths(
    registry: Registry,
    engine: FaceEngine,
    paths: Iterable[Path],
    progress: Callable[[int, int, str], None] | None = None,
    *,
    max_faces: int = MAX_FACES_DEFAULT,
) -> AuditReport:
    """Audit every file under ``paths``; ``progress(done, total, path)`` after each."""
    started = _now()
    files = list(iter_media(paths))
    index = IdentityIndex(registry, engine.name, engine.dim)
    names = {s.id: s.display_name for s in registry.list_subjects()}
    items: list[AuditItem] = []
    for done, path in enumerate(files, start=1):
        items.append(_audit_one(registry, engine, index, names, path, max_faces))
        if progress is not None:
            progress(done, len(files), str(path))
    run = RunInfo(
        started=started,
        finished=_now(),
        home=str(registry.home.root),
        db=hide_password(registry.db.url),
        log_size=registry.log_size(),
        engine=engine.name,
        threshold=round(index.threshold, 4),
        review_threshold=round(index.review_threshold, 4),
        max_faces=max_faces,
    )
    return AuditReport(items, run)


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def hide_password(url: str) -> str:
    """``url`` with the password of its user part, if any, replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def render_html(report: AuditReport, title: str = "Consentry audit") -> str:
    """The self-contained HTML page of :func:`consentry.provenance.audit_html.render_page`."""
    return render_page(report.to_json(with_crops=True), title)


def write_reports(report: AuditReport, json_file: Path | None, html_file: Path | None) -> None:
    if json_file is not None:
        json_file.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if html_file is not None:
        html_file.write_text(render_html(report), encoding="utf-8")
