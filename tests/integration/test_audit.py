"""``consentry audit`` on real media: signed, unsigned, wrongly covered, unreadable."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from consentry import Registry
from consentry.faces.engines import get_engine
from consentry.identity.enroll import enroll_photos
from consentry.provenance.audit import audit_paths, render_html
from consentry.provenance.sign import sign_output
from consentry.registry.decisions import record_decision
from tests.support.cli import Cli

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"


@pytest.fixture
def media(tmp_path: Path) -> tuple[Cli, Path]:
    """A registry (made by the CLI, so the dev PKI exists) with Obama and Biden
    enrolled, and a folder of media to audit."""
    cli = Cli(tmp_path / "home")
    cli.ok("init", "--home", str(cli.home))
    engine = get_engine("sface")
    folder = tmp_path / "media"
    folder.mkdir()
    with Registry.open(cli.home) as registry:
        obama = registry.add_subject("Barack Obama")
        biden = registry.add_subject("Joe Biden")
        enroll_photos(registry, engine, obama.id, [DATA / "obama.jpg"])
        enroll_photos(registry, engine, biden.id, [DATA / "biden.jpg"])
        registry.add_grantee("Studio")
        grant = registry.grant(obama.id, "Studio", ["generate"])
        photo = (DATA / "obama2.jpg").read_bytes()
        decision = record_decision(
            registry,
            "Studio",
            "generate",
            True,
            ["grant covers every subject"],
            [grant.id],
            [obama.id],
            None,
            [],
            [hashlib.sha256(photo).hexdigest()],
        )
        signed = sign_output(
            registry,
            photo,
            "image/jpeg",
            action="generate",
            decision=decision,
            grants=[grant],
            prior=None,
        )
        (folder / "obama_signed.jpg").write_bytes(signed)
        # the same consent record attached to a picture of someone else
        wrong = sign_output(
            registry,
            (DATA / "biden.jpg").read_bytes(),
            "image/jpeg",
            action="generate",
            decision=decision,
            grants=[grant],
            prior=None,
        )
        (folder / "biden_under_obama_consent.jpg").write_bytes(wrong)
    shutil.copy(DATA / "obama2.jpg", folder / "obama_unsigned.jpg")
    shutil.copy(DATA / "astronaut.jpg", folder / "stranger.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.txt").write_text("not media, but every file is reported, never skipped")
    (folder / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 4)
    return cli, folder


def test_audit_findings_per_file(media: tuple[Cli, Path]) -> None:
    cli, folder = media
    with Registry.open(cli.home) as registry:
        report = audit_paths(registry, get_engine("sface"), [folder])
    items = {Path(i.path).name: i for i in report.items}
    assert set(items) == {
        "obama_signed.jpg",
        "biden_under_obama_consent.jpg",
        "obama_unsigned.jpg",
        "stranger.jpg",
        "broken.jpg",
        "notes.txt",
        "photo.heic",
        "weights.bin",
    }
    assert items["obama_signed.jpg"].manifest_state == "trusted"
    assert items["obama_signed.jpg"].consent == "ok"
    assert items["obama_signed.jpg"].findings == []
    unsigned = items["obama_unsigned.jpg"]
    assert unsigned.manifest_state == "none"
    assert [f.name for f in unsigned.findings] == ["Barack Obama"]
    assert unsigned.findings[0].reason == "no C2PA manifest"
    wrong = items["biden_under_obama_consent.jpg"]
    assert wrong.manifest_state == "trusted"
    assert [f.name for f in wrong.findings] == ["Joe Biden"]
    assert "does not cover" in wrong.findings[0].reason
    assert items["stranger.jpg"].faces == 1 and items["stranger.jpg"].findings == []
    assert items["broken.jpg"].error and "broken.jpg" in items["broken.jpg"].error
    # files that are not an allowed image are reported, whatever their name (issue 11)
    assert "saw text" in items["notes.txt"].error
    assert "saw HEIC" in items["photo.heic"].error
    assert "not an allowed image format" in items["weights.bin"].error
    assert report.findings == 2 and report.unreadable == 4


def test_audit_cli_writes_json_and_html_and_exits_1(
    media: tuple[Cli, Path], tmp_path: Path
) -> None:
    cli, folder = media
    hostile = folder / "<img src=x onerror=alert(1)>.jpg"
    shutil.copy(DATA / "obama2.jpg", hostile)
    out_json, out_html = tmp_path / "audit.json", tmp_path / "audit.html"
    result = cli("audit", str(folder), "--json", str(out_json), "--html", str(out_html))
    assert result.code == 1, result.err
    assert "3 finding(s)" in result.out and "4 unreadable" in result.out
    assert "UNREADABLE" in result.out and "photo.heic" in result.out
    data = json.loads(out_json.read_text())
    assert data["findings"] == 3 and data["files"] == 9
    page = out_html.read_text()
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in page
    assert page.count("data:image/png;base64,") == 3
    clean = cli("audit", str(folder / "obama_signed.jpg"))
    assert clean.code == 0 and "0 finding(s)" in clean.out


def test_audit_json_dash_prints_only_the_report_on_stdout(
    media: tuple[Cli, Path], tmp_path: Path
) -> None:
    """``--json -`` is stdout (no file named "-"), for a pipe: the report and nothing
    else there, the same exit code; an error is JSON on stdout too."""
    cli, folder = media
    to_file = tmp_path / "audit.json"
    assert cli("audit", str(folder), "--json", str(to_file)).code == 1
    result = cli("audit", str(folder), "--json", "-", cwd=tmp_path)
    assert result.code == 1, result.err
    printed, written = json.loads(result.out), json.loads(to_file.read_text())
    printed.pop("run"), written.pop("run")  # when and how long: one run's own
    assert printed["findings"] == 2, printed
    for one, other in zip(printed["items"], written["items"], strict=True):
        assert one == other, (one, other)
    assert printed == written
    assert not (tmp_path / "-").exists()
    clean = cli("audit", str(folder / "obama_signed.jpg"), "--json", "-")
    assert clean.code == 0 and json.loads(clean.out)["findings"] == 0
    missing = cli("audit", "--home", str(tmp_path / "nowhere"), "--json", "-", str(folder))
    assert missing.code == 2
    error = json.loads(missing.out)["error"]
    assert error["code"] == "bad_input" and "no registry" in error["message"], missing.out


def test_render_html_escapes_reasons() -> None:
    from consentry.provenance.audit import AuditItem, AuditReport, Finding

    report = AuditReport(
        [
            AuditItem(
                path="a.jpg",
                findings=[
                    Finding("sub_1", "<b>Eve</b>", 0.9, [0, 0, 1, 1], "<img src=x onerror=1>")
                ],
            )
        ]
    )
    page = render_html(report)
    assert "<b>Eve</b>" not in page and "<img src=x" not in page


def test_audit_uses_the_face_scan_and_the_face_cap(tmp_path: Path, sqlite_url: str) -> None:
    """A face the old single pass missed (upside down, in a later frame) is a finding;
    more faces than the cap is reported, not audited in part."""
    import io

    import numpy as np
    from PIL import Image

    from consentry.identity.index import IdentityIndex
    from consentry.provenance.audit import audit_data

    engine = get_engine("sface")
    with Registry.init(tmp_path / "home", sqlite_url) as registry:
        obama = registry.add_subject("Barack Obama")
        enroll_photos(registry, engine, obama.id, [DATA / "obama.jpg"])
        index = IdentityIndex(registry, engine.name, engine.dim)
        names = {obama.id: "Barack Obama"}
        probe = np.asarray(Image.open(DATA / "obama2.jpg").convert("RGB"))
        upside_down = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(probe[::-1, ::-1])).save(upside_down, "PNG")
        later = io.BytesIO()
        blank = Image.new("RGB", (probe.shape[1], probe.shape[0]), (90, 90, 90))
        blank.save(later, "PNG", save_all=True, append_images=[Image.fromarray(probe)])
        for label, data in [("upside_down.png", upside_down), ("later.png", later)]:
            item = audit_data(registry, engine, index, names, data.getvalue(), label)
            assert [f.name for f in item.findings] == ["Barack Obama"], (label, item)
        item = audit_data(registry, engine, index, names, later.getvalue(), "x.png", max_faces=0)
        assert "too many faces" in item.error and not item.findings
        assert (
            "frame 1"
            in audit_data(registry, engine, index, names, later.getvalue(), "later.png")
            .findings[0]
            .reason
        )


def test_audit_applies_the_default_face_cap(tmp_path: Path, sqlite_url: str) -> None:
    """The audit goes through the gate's face pipeline with ``Limits.max_faces`` (32) by
    default: a file of 36 registered faces is reported unreadable, no finding; the same
    face 4 times is audited, one finding per copy."""
    from consentry.identity.index import IdentityIndex
    from consentry.provenance.audit import audit_data
    from tests.support.faces import crowd_png

    engine = get_engine("sface")
    with Registry.init(tmp_path / "home", sqlite_url) as registry:
        obama = registry.add_subject("Barack Obama")
        enroll_photos(registry, engine, obama.id, [DATA / "obama.jpg"])
        index = IdentityIndex(registry, engine.name, engine.dim)
        names = {obama.id: "Barack Obama"}
        crowd = audit_data(registry, engine, index, names, crowd_png(6), "crowd.png")
        assert "too many faces: 36" in crowd.error and "limit is 32" in crowd.error
        assert not crowd.findings and crowd.faces == 0
        few = audit_data(registry, engine, index, names, crowd_png(2), "few.png")
        assert not few.error and few.faces == 4
        assert [f.name for f in few.findings] == ["Barack Obama"] * 4
        folder = tmp_path / "media"
        folder.mkdir()
        (folder / "crowd.png").write_bytes(crowd_png(6))
        report = audit_paths(registry, engine, [folder])
        assert "too many faces" in report.items[0].error and not report.items[0].findings
