"""Enroll, match, erase, reenroll and calibrate through the real CLI, on shipped photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from consentry import Registry
from tests.integration._labelled import labelled_set
from tests.support.cli import Cli, initialised
from tests.support.faces import crowd_png

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"


@pytest.fixture
def cli(tmp_path: Path, sqlite_url: str) -> Cli:
    runner = initialised(tmp_path / "home", sqlite_url)
    runner.ok("subject", "add", "Barack Obama")
    runner.ok("subject", "add", "Joe Biden")
    return runner


def matches(cli: Cli, image: Path, *extra: str) -> list[str]:
    result = cli.json("match", str(image), *extra)
    assert isinstance(result, list)
    return [m["name"] for face in result[0]["faces"] for m in face["matches"]]


def test_enroll_match_erase_cycle(cli: Cli) -> None:
    out = cli.json("subject", "enroll", "Barack Obama", str(DATA / "obama.jpg"), "--keep-photos")
    assert isinstance(out, dict) and out["photos"] == 1 and out["kept_photos"] == 1
    cli.ok("subject", "enroll", "Joe Biden", str(DATA / "biden.jpg"))
    assert matches(cli, DATA / "obama2.jpg") == ["Barack Obama"]  # another photo of him
    assert matches(cli, DATA / "astronaut.jpg") == []  # unregistered person
    scan = cli.json("match", str(DATA / "astronaut.jpg"))
    assert isinstance(scan, list) and len(scan[0]["faces"]) == 1  # the face is still reported
    cli.ok("subject", "erase", "Barack Obama", "--reason", "subject asked", "--yes")
    assert matches(cli, DATA / "obama2.jpg") == []
    assert "OK:" in cli.ok("log", "verify")
    with Registry.open(cli.home) as registry:
        leaves = [registry.entry(i).leaf_json for i in range(registry.log_size())]
    assert not any('embedding":[' in leaf for leaf in leaves)  # hashes, never vectors


def test_reenroll_with_dlib_from_kept_photos(cli: Cli) -> None:
    cli.ok("subject", "enroll", "Barack Obama", str(DATA / "obama.jpg"), "--keep-photos")
    out = cli.json("subject", "reenroll", "Barack Obama", "--engine", "dlib")
    assert isinstance(out, dict) and out["engine"] == "dlib" and out["photos"] == 1
    assert matches(cli, DATA / "obama2.jpg", "--engine", "dlib") == ["Barack Obama"]
    assert matches(cli, DATA / "biden.jpg", "--engine", "dlib") == []


def test_reenroll_without_kept_photos_is_refused(cli: Cli) -> None:
    cli.ok("subject", "enroll", "Barack Obama", str(DATA / "obama.jpg"))
    result = cli("subject", "reenroll", "Barack Obama", "--engine", "dlib")
    assert result.code == 2 and "--keep-photos" in result.err


def test_bad_photos_are_rejected_one_line_each_and_nothing_is_enrolled(
    cli: Cli, tmp_path: Path
) -> None:
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((400, 400, 3), 128, np.uint8)).save(blank)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes((DATA / "obama.jpg").read_bytes()[:2000])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with Registry.open(cli.home) as registry:
        size = registry.log_size()
    result = cli(
        "subject",
        "enroll",
        "Barack Obama",
        str(DATA / "obama.jpg"),
        str(blank),
        str(corrupt),
        str(text),
    )
    assert result.code == 2 and "Traceback" not in result.err
    assert "3 photo(s) rejected" in result.err
    for name, reason in [("blank.png", "no face"), ("corrupt.jpg", ""), ("notes.png", "")]:
        assert name in result.err and reason in result.err
    with Registry.open(cli.home) as registry:
        assert registry.log_size() == size


def test_match_reports_unreadable_image_as_input_error(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"")
    result = cli("match", str(bad))
    assert result.code == 2 and "Traceback" not in result.err


def test_match_applies_the_face_cap(cli: Cli, tmp_path: Path) -> None:
    """``match`` goes through the gate's face pipeline, face cap included: an image with
    more faces than ``Limits.max_faces`` (32) is a clear input error, nothing listed;
    the same face at a count under the cap is matched in every copy."""
    cli.ok("subject", "enroll", "Barack Obama", str(DATA / "obama.jpg"))
    crowd = tmp_path / "crowd.png"
    crowd.write_bytes(crowd_png(6))  # 36 faces
    result = cli("match", str(crowd))
    assert result.code == 2 and "Traceback" not in result.err
    assert "too many faces: 36" in result.err and "limit is 32" in result.err
    assert not result.out.strip()
    few = tmp_path / "few.png"
    few.write_bytes(crowd_png(2))  # 4 faces: under the cap
    assert matches(cli, few) == ["Barack Obama"] * 4


def test_calibrate_records_a_threshold_in_force(cli: Cli, tmp_path: Path) -> None:
    # 4 shipped photos are too few to calibrate on (refused, see
    # tests/security/test_operations_attacks.py): use their labelled variants
    folder = labelled_set(tmp_path / "labelled", 6)
    out = cli.json("calibrate", str(folder), "--fmr", "0.02", "--apply")
    assert isinstance(out, dict) and out["applied"] is True
    assert (out["genuine_pairs"], out["impostor_pairs"]) == (96, 180)
    assert out["fmr"] <= 0.02 and out["fnmr"] == 0.0
    cli.ok("subject", "enroll", "Barack Obama", str(DATA / "obama.jpg"))
    scan = cli.json("match", str(DATA / "obama2.jpg"))
    assert isinstance(scan, list)
    assert scan[0]["threshold"] == pytest.approx(out["threshold"])
    assert "OK:" in cli.ok("log", "verify")
    assert json.loads(cli.ok("log", "verify", "--json"))["ok"] is True


def test_match_sees_what_the_gate_sees(cli: Cli, tmp_path: Path) -> None:
    """``match`` uses the gate's face scan: a face upside down, or only in a later frame."""
    cli.ok("subject", "enroll", "Barack Obama", str(DATA / "obama.jpg"))
    probe = np.asarray(Image.open(DATA / "obama2.jpg").convert("RGB"))
    flipped = tmp_path / "upside_down.png"
    Image.fromarray(np.ascontiguousarray(probe[::-1, ::-1])).save(flipped)
    animated = tmp_path / "second_frame.png"
    blank = Image.new("RGB", (probe.shape[1], probe.shape[0]), (90, 90, 90))
    blank.save(animated, save_all=True, append_images=[Image.fromarray(probe)], duration=100)
    result = cli.json("match", str(flipped), str(animated))
    assert isinstance(result, list) and len(result) == 2
    for item in result:
        names = [m["name"] for face in item["faces"] for m in face["matches"]]
        assert "Barack Obama" in names, item
    assert {face["frame"] for face in result[1]["faces"] if face["matches"]} == {1}
    assert {face["rotation"] for face in result[0]["faces"] if face["matches"]} == {180}
