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
- The HTML report is self-contained (face crops inline as data URIs) and every
  string from the media or the file system is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
from consentry.provenance.verify import verify_media
from consentry.registry.store import Registry

__all__ = [
    "AuditItem",
    "AuditReport",
    "Finding",
    "audit_data",
    "audit_paths",
    "iter_media",
    "render_html",
    "write_reports",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"})
"""The usual names of the allowed formats (informational: ``iter_media`` yields every file)."""
MAX_FACES_DEFAULT = Limits().max_faces
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff"}


@dataclass
class Finding:
    subject_id: str
    name: str
    similarity: float
    bbox: list[float]
    reason: str
    crop_png: str = ""  # base64 PNG of the face, for the HTML report


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
class AuditReport:
    items: list[AuditItem]

    @property
    def findings(self) -> int:
        return sum(len(i.findings) for i in self.items)

    @property
    def unreadable(self) -> int:
        return sum(1 for i in self.items if i.error)

    def to_json(self, with_crops: bool = False) -> dict[str, Any]:
        items = []
        for item in self.items:
            value = asdict(item)
            if not with_crops:
                for finding in value["findings"]:
                    finding.pop("crop_png", None)
            items.append(value)
        return {
            "files": len(self.items),
            "findings": self.findings,
            "unreadable": self.unreadable,
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
    face = Image.fromarray(np.ascontiguousarray(pixels[top:bottom, left:right]))
    face.thumbnail((160, 160))
    buffer = io.BytesIO()
    face.save(buffer, format="PNG")
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
    files = list(iter_media(paths))
    index = IdentityIndex(registry, engine.name, engine.dim)
    names = {s.id: s.display_name for s in registry.list_subjects()}
    items: list[AuditItem] = []
    for done, path in enumerate(files, start=1):
        items.append(_audit_one(registry, engine, index, names, path, max_faces))
        if progress is not None:
            progress(done, len(files), str(path))
    return AuditReport(items)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:2em}
td,th{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}
th{background:#f3f3f3}.bad{color:#a00;font-weight:600}.ok{color:#070}
img{max-width:160px;border:1px solid #999}
code{font-size:.85em}
"""


def render_html(report: AuditReport, title: str = "Consentry audit") -> str:
    """A self-contained HTML page: summary, findings with face crops, every file."""
    esc = html.escape
    rows = []
    for item in report.items:
        for finding in item.findings:
            crop = (
                f'<img alt="face" src="data:image/png;base64,{finding.crop_png}">'
                if finding.crop_png
                else ""
            )
            rows.append(
                "<tr>"
                f"<td>{crop}</td><td><code>{esc(item.path)}</code></td>"
                f"<td>{esc(finding.name)}<br><code>{esc(finding.subject_id)}</code></td>"
                f"<td>{finding.similarity:.3f}</td>"
                f'<td class="bad">{esc(finding.reason)}</td>'
                "</tr>"
            )
    files = []
    for item in report.items:
        state = esc((item.error and "unreadable") or item.manifest_state)
        detail = esc(item.error) if item.error else esc(", ".join(item.codes))
        files.append(
            "<tr>"
            f"<td><code>{esc(item.path)}</code></td><td>{state}</td>"
            f"<td>{esc(item.consent)}</td><td>{item.faces}</td>"
            f"<td>{len(item.findings)}</td><td><code>{detail}</code></td>"
            "</tr>"
        )
    summary_class = "bad" if report.findings or report.unreadable else "ok"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{esc(title)}</h1>"
        f'<p class="{summary_class}">{len(report.items)} file(s), {report.findings} '
        f"finding(s), {report.unreadable} unreadable.</p>"
        "<h2>Findings</h2><table><tr><th>face</th><th>file</th><th>subject</th>"
        "<th>similarity</th><th>reason</th></tr>"
        + ("".join(rows) or '<tr><td colspan="5">none</td></tr>')
        + "</table><h2>Files</h2><table><tr><th>file</th><th>manifest</th><th>consent</th>"
        "<th>faces</th><th>findings</th><th>codes / error</th></tr>"
        + "".join(files)
        + "</table></body></html>\n"
    )


def write_reports(report: AuditReport, json_file: Path | None, html_file: Path | None) -> None:
    if json_file is not None:
        json_file.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if html_file is not None:
        html_file.write_text(render_html(report))
