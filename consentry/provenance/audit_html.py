"""The HTML audit report: one self-contained page a trust-and-safety reviewer works in.

It is rendered from the JSON report (``AuditReport.to_json(with_crops=True)``), so
the page and ``audit-report.json`` never disagree.

Invariants
- Every string that came from a file or the file system (paths, names, reasons,
  errors, codes) is HTML-escaped, quotes included, wherever it lands (text or
  attribute); a string that cannot be encoded as UTF-8 (a file name of raw bytes)
  is shown with backslash escapes. Face crops are accepted only as base64 text.
- Nothing is fetched: the page's one ``<style>`` and one ``<script>`` are inline
  and constant (no data inside them), and a Content-Security-Policy ``<meta>``
  allows exactly those two by their SHA-256 hashes, images only as ``data:`` URIs,
  and nothing else (no other script, no inline handler, no network).
- The review table has one row per finding and one per file without a finding
  (unreadable files as their own, highlighted rows), so every file is on the page;
  its columns sort by a click on their header and its rows filter by text and by
  severity, in the page itself.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from typing import Any

from consentry.provenance.audit_triage import RANK, SEVERITIES

__all__ = ["CSP", "SCRIPT", "STYLE", "render_page"]

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:2em}
td,th{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}
th{background:#f3f3f3;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}
th button{all:inherit;cursor:pointer;padding:0;border:0;background:none}
.bad{color:#a00;font-weight:600}.ok{color:#070}
.uncertain{color:#8a5a00;font-size:90%}
.sev{display:inline-block;padding:.1em .5em;border-radius:.8em;font-weight:600}
.sev-high{background:#fdd;color:#900}.sev-medium{background:#fec;color:#840}
.sev-low{background:#eef;color:#336}.sev-info{background:#efe;color:#363}
tr.unreadable td{background:#fff3d6}
img.face{width:96px;height:96px;border:1px solid #999;display:block}
dl.run{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}
dl.run dt{font-weight:600}dl.run dd{margin:0}
.controls{margin:1em 0;display:flex;gap:1em;align-items:center}
code{font-size:.85em;word-break:break-all}
"""

SCRIPT = """
"use strict";
(function () {
  var text = document.getElementById("filter");
  var level = document.getElementById("severity");
  var shown = document.getElementById("shown");
  var tables = Array.prototype.slice.call(document.querySelectorAll("table.report"));
  function value(row, column) {
    var cell = row.cells[column];
    var key = cell.getAttribute("data-sort");
    return key === null ? cell.textContent.trim().toLowerCase() : key;
  }
  function sortBy(table, header, column) {
    var body = table.tBodies[0];
    var down = header.getAttribute("aria-sort") === "ascending";
    var numeric = header.getAttribute("data-type") === "number";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", down ? "descending" : "ascending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, column), y = value(b, column), order;
      if (numeric) {
        order = (parseFloat(x) || 0) - (parseFloat(y) || 0);
      } else {
        order = x < y ? -1 : x > y ? 1 : 0;
      }
      if (down) { order = -order; }
      return order || Number(a.getAttribute("data-index")) - Number(b.getAttribute("data-index"));
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  tables.forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.addEventListener("click", function () { sortBy(table, header, column); });
    });
  });
  function filter() {
    var words = text.value.trim().toLowerCase();
    var wanted = level.value;
    var count = 0;
    tables.forEach(function (table) {
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var hide = (wanted !== "" && row.getAttribute("data-severity") !== wanted) ||
          (words !== "" && row.textContent.toLowerCase().indexOf(words) < 0);
        row.hidden = hide;
        if (!hide && table.id === "review") { count += 1; }
      });
    });
    shown.textContent = String(count);
  }
  text.addEventListener("input", filter);
  level.addEventListener("change", filter);
  filter();
})();
"""


def _hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


CSP = (
    f"default-src 'none'; script-src '{_hash(SCRIPT)}'; style-src '{_hash(STYLE)}'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)
"""The page's Content-Security-Policy: only the inline script and style, by hash."""

_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _esc(value: object) -> str:
    text = str(value)
    try:  # a file name's raw bytes (surrogate escapes) shown as \xNN
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        raw = text.encode("utf-8", "backslashreplace")
    return html.escape(raw.decode("utf-8", "backslashreplace"), quote=True)


def _cell(content: str, sort: str | None = None, css: str = "") -> str:
    attrs = f' data-sort="{_esc(sort)}"' if sort is not None else ""
    attrs += f' class="{css}"' if css else ""
    return f"<td{attrs}>{content}</td>"


def _severity(name: str) -> str:
    return _cell(f'<span class="sev sev-{_esc(name)}">{_esc(name)}</span>', str(RANK.get(name, 0)))


def _crop(finding: dict[str, Any]) -> str:
    data = str(finding.get("crop_png") or "")
    if not data or not _BASE64.fullmatch(data):
        return _cell("", "")
    alt = _esc(f"face of {finding.get('name') or finding.get('subject_id', '')}")
    return _cell(
        f'<img class="face" width="96" height="96" alt="{alt}" src="data:image/png;base64,{data}">',
        "1",
    )


def _attrs(severity: str, unreadable: bool) -> str:
    """The attributes of a row: its severity (for the filter), and its highlight."""
    return f' data-severity="{_esc(severity)}"' + (' class="unreadable"' if unreadable else "")


def _similarity(finding: dict[str, Any]) -> str:
    """A finding's score, marked when the match is uncertain (the review band, or not
    clearly one person): the reviewer sees why it is medium, not high."""
    score = f"{finding['similarity']:.3f}"
    if finding.get("certain", True):
        return score
    return f'{score}<br><span class="uncertain">uncertain match: review by eye</span>'


def _review_rows(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(attributes, cells) of each review row, most severe first, else in file order."""
    rows: list[tuple[int, str, str]] = []
    for item in items:
        path = _cell(f"<code>{_esc(item['path'])}</code>", str(item["path"]).lower())
        manifest = _cell(_esc(item.get("manifest_state") or "-"))
        consent = _cell(_esc(item.get("consent") or "-"))
        for finding in item["findings"]:
            subject = (
                f"{_esc(finding.get('name', ''))}<br><code>{_esc(finding['subject_id'])}</code>"
            )
            rows.append(
                (
                    RANK.get(finding["severity"], 0),
                    _attrs(finding["severity"], False),
                    _severity(finding["severity"])
                    + _cell("finding")
                    + _crop(finding)
                    + path
                    + _cell(subject, str(finding.get("name") or finding["subject_id"]).lower())
                    + _cell(_similarity(finding), f"{finding['similarity']:.6f}")
                    + manifest
                    + consent
                    + _cell(_esc(finding["reason"]), css="bad")
                    + _cell(_esc(finding["action"])),
                )
            )
        if item["findings"]:
            continue
        kind = "unreadable" if item["error"] else "file"
        detail = item["error"] or ", ".join(item.get("codes", []))
        rows.append(
            (
                RANK.get(item["severity"], 0),
                _attrs(item["severity"], bool(item["error"])),
                _severity(item["severity"])
                + _cell(kind, css="bad" if item["error"] else "")
                + _cell("", "0")
                + path
                + _cell("", "")
                + _cell("", "-1")
                + manifest
                + consent
                + _cell(f"<code>{_esc(detail)}</code>", css="bad" if item["error"] else "")
                + _cell(_esc(item["action"])),
            )
        )
    rows.sort(key=lambda row: -row[0])  # stable: file order within a severity
    return [(attrs, cells) for _, attrs, cells in rows]


def _file_rows(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(attributes, cells) of each file's row."""
    rows = []
    for item in items:
        state = (item["error"] and "unreadable") or item.get("manifest_state", "")
        detail = item["error"] or ", ".join(item.get("codes", []))
        rows.append(
            (
                _attrs(item["severity"], bool(item["error"])),
                _severity(item["severity"])
                + _cell(f"<code>{_esc(item['path'])}</code>", str(item["path"]).lower())
                + _cell(_esc(state))
                + _cell(_esc(item.get("consent", "")))
                + _cell(str(int(item.get("faces", 0))))
                + _cell(str(len(item["findings"])))
                + _cell(f"<code>{_esc(detail)}</code>"),
            )
        )
    return rows


def _table(
    table_id: str,
    headers: list[tuple[str, str]],
    rows: list[tuple[str, str]],
    descending: int | None = None,
) -> str:
    """A sortable table; a header of kind ``number`` sorts its column numerically;
    ``descending``: the column the rows come sorted by, most first."""
    head = "".join(
        '<th scope="col"'
        + (' data-type="number"' if kind == "number" else "")
        + (' aria-sort="descending"' if column == descending else "")
        + f'><button type="button">{_esc(name)}</button></th>'
        for column, (name, kind) in enumerate(headers)
    )
    body = "".join(
        f'<tr data-index="{i}"{attrs}>{cells}</tr>' for i, (attrs, cells) in enumerate(rows)
    )
    return (
        f'<table class="report" id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _run(run: dict[str, Any] | None) -> str:
    if not run:
        return "<p>Run details were not recorded.</p>"
    fields = [
        ("Started (UTC)", run.get("started", "")),
        ("Finished (UTC)", run.get("finished", "")),
        ("Registry home", run.get("home", "")),
        ("Database", run.get("db", "")),
        ("Log size", run.get("log_size", "")),
        ("Face engine", run.get("engine", "")),
        ("Match threshold", run.get("threshold", "")),
        ("Review threshold", run.get("review_threshold", "")),
        ("Face cap per file", run.get("max_faces", "")),
    ]
    rows = "".join(f"<dt>{_esc(k)}</dt><dd><code>{_esc(v)}</code></dd>" for k, v in fields)
    return f'<dl class="run" id="run">{rows}</dl>'


def render_page(data: dict[str, Any], title: str = "Consentry audit") -> str:
    """The page for a JSON report made with crops (see the module's invariants)."""
    items: list[dict[str, Any]] = data["items"]
    review = _review_rows(items)
    counts = data.get("by_severity") or {}
    summary_class = "bad" if data["findings"] or data["unreadable"] else "ok"
    by_severity = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in SEVERITIES)
    options = '<option value="">all</option>' + "".join(
        f'<option value="{s}">{s}</option>' for s in SEVERITIES
    )
    review_table = _table(
        "review",
        [
            ("severity", "number"),
            ("kind", ""),
            ("face", "number"),
            ("file", ""),
            ("subject", ""),
            ("similarity", "number"),
            ("manifest", ""),
            ("consent", ""),
            ("reason / error", ""),
            ("recommended action", ""),
        ],
        review,
        descending=0,
    )
    files_table = _table(
        "files",
        [
            ("severity", "number"),
            ("file", ""),
            ("manifest", ""),
            ("consent", ""),
            ("faces", "number"),
            ("findings", "number"),
            ("codes / error", ""),
        ],
        _file_rows(items),
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{_esc(title)}</h1>"
        f'<p class="{summary_class}" id="summary">{int(data["files"])} file(s), '
        f"{int(data['findings'])} finding(s), {int(data['unreadable'])} unreadable. "
        f"Files by severity: {by_severity}.</p>"
        f"<h2>Run</h2>{_run(data.get('run'))}"
        "<h2>Review</h2>"
        '<div class="controls"><label>Filter <input type="search" id="filter" '
        'placeholder="file, subject, reason..."></label>'
        f'<label>Severity <select id="severity">{options}</select></label>'
        f'<span><span id="shown">{len(review)}</span> of {len(review)} row(s) shown</span></div>'
        + review_table
        + "<h2>Files</h2>"
        + files_table
        + f"<script>{SCRIPT}</script></body></html>\n"
    )
