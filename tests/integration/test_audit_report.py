"""The audit report a reviewer reads: ``consentry audit --json --html`` on real media,
the page opened in a real headless Chromium (``tests/support/browser.py``).

No chromium is a failure, not a skip: ``.ci/run`` installs it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from consentry import Registry
from consentry.faces.engines import get_engine
from consentry.identity.enroll import enroll_photos
from consentry.provenance.audit import (
    AuditItem,
    AuditReport,
    Finding,
    hide_password,
    render_html,
)
from consentry.provenance.audit_html import CSP, SCRIPT, STYLE
from tests.support.browser import Browser, Page
from tests.support.cli import Cli

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"
HOSTILE = '<script>window.pwned=1<\\script><img src=x onerror="window.pwned=2">\'.jpg'
RAW_NAME = b"raw\xff.jpg"  # not UTF-8: the name reaches Python with a surrogate escape


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, Path, dict[str, Any], Path]:
    """Obama enrolled; a folder with two unconsented Obama photos (one with a hostile
    name), a stranger (one under a raw-byte name), a corrupt JPEG and a text file;
    ``consentry audit`` run on it. (cli, folder, JSON report, HTML report path)."""
    tmp = tmp_path_factory.mktemp("report")
    cli = Cli(tmp / "home")
    cli.ok("init", "--home", str(cli.home))
    with Registry.open(cli.home) as registry:
        obama = registry.add_subject("Barack Obama")
        enroll_photos(registry, get_engine("sface"), obama.id, [DATA / "obama.jpg"])
    folder = tmp / "media"
    folder.mkdir()
    shutil.copy(DATA / "obama2.jpg", folder / "obama_unsigned.jpg")
    shutil.copy(DATA / "obama2.jpg", folder / HOSTILE)
    shutil.copy(DATA / "astronaut.jpg", folder / "stranger.jpg")
    shutil.copy(DATA / "astronaut.jpg", os.fsdecode(bytes(folder) + b"/" + RAW_NAME))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.txt").write_text("not media")
    out_json, out_html = tmp / "audit-report.json", tmp / "audit-report.html"
    result = cli("audit", str(folder), "--json", str(out_json), "--html", str(out_html))
    assert result.code == 1, result.err  # findings and unreadable files: exit 1, as before
    return cli, folder, json.loads(out_json.read_text()), out_html


def _by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {Path(i["path"]).name: i for i in report["items"]}


def test_json_gains_severity_action_and_run(audited: tuple[Cli, Path, dict, Path]) -> None:
    cli, _, report, _ = audited
    # the keys that were there stay there
    assert {"files", "findings", "unreadable", "items"} <= set(report)
    assert (report["files"], report["findings"], report["unreadable"]) == (6, 2, 2)
    items = _by_name(report)
    for item in items.values():
        assert {"path", "sha256", "error", "manifest_state", "codes", "consent"} <= set(item)
        assert item["severity"] in ("high", "medium", "low", "info") and item["action"]
    for name in ("obama_unsigned.jpg", HOSTILE):
        item = items[name]
        assert item["severity"] == "high", name
        (finding,) = item["findings"]
        assert {"subject_id", "name", "similarity", "bbox", "reason"} <= set(finding)
        assert finding["severity"] == "high" and "consent" in finding["action"]
        assert "crop_png" not in finding  # crops only in the HTML
    for name in ("broken.jpg", "notes.txt"):
        assert (
            items[name]["severity"] == "medium" and "could not be audited" in items[name]["action"]
        )
    assert items["stranger.jpg"]["severity"] == "low"
    assert report["by_severity"] == {"high": 2, "medium": 2, "low": 2, "info": 0}
    run = report["run"]
    assert run["engine"] == "sface" and 0 < run["threshold"] <= 1
    assert run["review_threshold"] <= run["threshold"] and run["max_faces"] == 32
    assert run["home"] == str(cli.home) and run["db"].startswith("sqlite:///")
    assert run["log_size"] >= 2  # the subject and their enrollment at least
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", run["started"])
    assert run["started"] <= run["finished"]


def test_page_is_escaped_and_locked_down(audited: tuple[Cli, Path, dict, Path]) -> None:
    page = audited[3].read_text(encoding="utf-8")
    assert "<img src=x" not in page and "<script>window" not in page
    assert "&lt;script&gt;window.pwned=1&lt;\\script&gt;&lt;img src=x onerror=&quot;" in page
    assert "raw\\xff.jpg" in page  # the raw byte shown, not a crash writing the page
    assert page.count("<script") == 1 and page.count("<style") == 1
    assert f'content="{CSP}"' in page
    assert f"<script>{SCRIPT}</script>" in page and f"<style>{STYLE}</style>" in page
    crops = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(crops) == 2  # one per finding, uniform size
    for crop in crops:
        image = Image.open(io.BytesIO(base64.b64decode(crop)))
        assert image.format == "PNG" and image.size == (96, 96)


def _rows(page: Page, table: str = "review") -> list[dict[str, Any]]:
    return list(
        page.evaluate(
            f"Array.from(document.querySelectorAll('#{table} tbody tr')).map(r => ({{"
            " cells: Array.from(r.cells).map(c => c.textContent.trim()),"
            " severity: r.dataset.severity, hidden: r.hidden,"
            " unreadable: r.classList.contains('unreadable'),"
            " shown: r.getBoundingClientRect().height > 0 }))"
        )
    )


def _files(rows: list[dict[str, Any]], column: int = 3) -> list[str]:
    """The file names of the rows shown (the file is column 3 of the review table)."""
    return [Path(r["cells"][column]).name for r in rows if r["shown"]]


def test_report_in_a_real_browser(audited: tuple[Cli, Path, dict, Path]) -> None:
    _, folder, report, html_file = audited
    with Browser() as browser:
        page = browser.open(html_file.as_uri())
        png = page.screenshot()
        image = Image.open(io.BytesIO(png))
        image.load()
        assert image.format == "PNG" and image.width >= 800 and image.height >= 400
        low, high = image.convert("L").getextrema()
        assert high - low > 100, "a blank screenshot"
        colours = image.convert("RGB").resize((64, 64)).getcolors(64 * 64)
        assert colours is not None and len(colours) > 8, "a blank screenshot"

        # the style and the script ran under the CSP (their hashes match), and nothing
        # else: no CSP report, no exception, no request but the page itself and data: URIs
        assert page.evaluate("getComputedStyle(document.querySelector('th')).cursor") == "pointer"
        page.collect()
        assert not [e for e in page.log if "Content Security Policy" in e or "exception" in e]
        assert all(u == html_file.as_uri() or u.startswith("data:") for u in page.requests)
        assert not page.blocked, page.blocked
        assert page.evaluate("typeof window.pwned") == "undefined"
        assert page.evaluate("document.scripts.length") == 1
        assert page.evaluate("document.querySelectorAll('img:not(.face)').length") == 0

        # every finding and every file without one is a row; unreadable ones highlighted
        rows = _rows(page)
        assert len(rows) == 6 and all(r["shown"] for r in rows)
        assert page.evaluate("document.getElementById('shown').textContent") == "6"
        names = [r["cells"][3] for r in rows]
        assert str(folder / HOSTILE) in names  # shown as text, exactly
        findings = [r for r in rows if r["cells"][1] == "finding"]
        assert [r["cells"][4] for r in findings] == [
            f"Barack Obama{f['subject_id']}" for i in report["items"] for f in i["findings"]
        ]
        assert all(r["severity"] == "high" for r in findings)
        assert sorted(Path(r["cells"][3]).name for r in rows if r["unreadable"]) == [
            "broken.jpg",
            "notes.txt",
        ]
        assert page.evaluate("document.querySelectorAll('img.face').length") == 2
        assert page.evaluate(
            "Array.from(document.querySelectorAll('img.face'))"
            ".every(i => i.complete && i.naturalWidth === 96 && i.naturalHeight === 96)"
        )

        # a click on a header sorts by it, a second click reverses
        before = _files(rows)
        page.click("#review thead th:nth-child(4)")  # file
        ascending = _files(_rows(page))
        assert ascending == sorted(before, key=str.lower) and ascending != before
        page.click("#review thead th:nth-child(4)")
        assert _files(_rows(page)) == ascending[::-1]
        page.click("#review thead th:nth-child(1)")  # severity, least severe first
        page.click("#review thead th:nth-child(1)")
        assert [r["severity"] for r in _rows(page)] == ["high"] * 2 + ["medium"] * 2 + ["low"] * 2

        # the text filter and the severity filter hide rows
        page.type("#filter", "broken")
        assert _files(_rows(page)) == ["broken.jpg"]
        assert page.evaluate("document.getElementById('shown').textContent") == "1"
        assert _files(_rows(page, "files"), column=1) == ["broken.jpg"]
        page.type("#filter", "obama")
        assert sorted(_files(_rows(page))) == sorted([HOSTILE, "obama_unsigned.jpg"])
        page.evaluate("document.getElementById('filter').value = ''")
        page.evaluate(
            "(() => { const s = document.getElementById('severity'); s.value = 'medium';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        assert sorted(_files(_rows(page))) == ["broken.jpg", "notes.txt"]
        assert all(r["hidden"] for r in _rows(page) if r["severity"] != "medium")


def test_the_csp_blocks_a_script_that_is_not_the_report_s(
    audited: tuple[Cli, Path, dict, Path], tmp_path: Path
) -> None:
    """Were a string to escape the escaping, its script would still not run."""
    page = audited[3].read_text(encoding="utf-8")
    injected = tmp_path / "injected.html"
    injected.write_text(
        page.replace("<h1>", '<script>window.pwned=1</script><img src="x.png"><h1>', 1),
        encoding="utf-8",
    )
    with Browser() as browser:
        view = browser.open(injected.as_uri())
        assert view.evaluate("typeof window.pwned") == "undefined"
        assert view.evaluate("document.getElementById('shown').textContent") == "6"  # ours ran
        view.collect()
        assert any("Content Security Policy" in entry for entry in view.log), view.log
        (image,) = [u for u in view.requests if u.endswith("x.png")]
        assert view.blocked.get(image) == "csp", (view.blocked, view.log)


def test_render_html_without_run_and_hide_password() -> None:
    report = AuditReport(
        [AuditItem(path="a.jpg", findings=[Finding("sub_1", "Eve", 0.9, [0, 0, 1, 1], "r")])]
    )
    page = render_html(report)
    assert "Run details were not recorded" in page and "Eve" in page
    assert (
        hide_password("postgresql://app:s3cret@db:5432/reg") == "postgresql://app:***@db:5432/reg"
    )
    assert hide_password("sqlite:////x/registry.db") == "sqlite:////x/registry.db"
