"""The fused engine end to end (CLI enroll and match, the gateway), and the second
stage through the one face pipeline, with the real engines on the shipped photos."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from consentry import Registry
from consentry.faces.engines import get_engine
from consentry.faces.images import load_image
from consentry.gate import CheckRequest, Gateway
from consentry.identity.enroll import enroll_photo_bytes, enroll_photos
from consentry.identity.index import IdentityIndex
from consentry.identity.lookup import lookup_faces
from consentry.registry.biometrics import record_calibration
from consentry.registry.models import Calibration
from tests.support.cli import Cli, initialised

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"


def _names(cli: Cli, image: Path) -> list[str]:
    result = cli.json("match", str(image), "--engine", "fused")
    assert isinstance(result, list)
    return [m["name"] for face in result[0]["faces"] for m in face["matches"]]


def test_enroll_and_match_with_the_fused_engine(tmp_path: Path, sqlite_url: str) -> None:
    cli = initialised(tmp_path / "home", sqlite_url)
    cli.ok("subject", "add", "Barack Obama")
    photo = str(DATA / "obama.jpg")
    out = cli.json("subject", "enroll", "Barack Obama", photo, "--engine", "fused")
    assert isinstance(out, dict) and out["engine"] == "fused" and out["photos"] == 1
    assert _names(cli, DATA / "obama2.jpg") == ["Barack Obama"]  # his other photo
    assert _names(cli, DATA / "biden.jpg") == []  # strangers are not matched
    assert _names(cli, DATA / "astronaut.jpg") == []
    # an index holds one engine: the sface index knows nobody
    sface = cli.json("match", str(DATA / "obama2.jpg"))
    assert isinstance(sface, list) and sface[0]["faces"][0]["matches"] == []


@pytest.fixture
def world(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[Registry, Gateway, str]]:
    registry = Registry.init(tmp_path / "home", sqlite_url)
    engine = get_engine("fused")
    obama = registry.add_subject("Barack Obama", ["Obama"])
    enroll_photos(registry, engine, obama.id, [DATA / "obama.jpg"])
    registry.add_grantee("Studio")
    yield registry, Gateway(registry, engine), obama.id
    registry.close()


def test_a_gateway_on_the_fused_engine(world: tuple[Registry, Gateway, str]) -> None:
    registry, gateway, obama = world
    refused = gateway.check(CheckRequest("Studio", "restore", [DATA / "obama2.jpg"]))
    assert not refused.allowed and any("no active grant" in r for r in refused.reasons)
    assert gateway.check(CheckRequest("Studio", "restore", [DATA / "biden.jpg"])).allowed
    registry.grant(obama, "Studio", ["restore"])
    assert gateway.check(CheckRequest("Studio", "restore", [DATA / "obama2.jpg"])).allowed
    registry.checkpoint()
    assert registry.verify_log().ok


def _calibrate(registry: Registry, threshold: float, review: float | None) -> None:
    record_calibration(
        registry,
        Calibration(
            id="", engine="sface", engine_version="v", threshold=threshold, fmr_target=1e-3,
            fmr=0.0, fnmr=0.02, eer=0.004, genuine_pairs=10, impostor_pairs=90,
            dataset_sha256="cd" * 32, created_at="", log_index=-1, review_threshold=review,
        ),
    )


def test_the_second_stage_runs_in_the_one_pipeline(tmp_path: Path, sqlite_url: str) -> None:
    """Two subjects enrolled with near-identical photos (the photo and its mirror):
    without a band both are certain matches (today's behaviour); with a band the top
    match has no margin, so both are held as uncertain, and neither is dropped."""
    registry = Registry.init(tmp_path / "home", sqlite_url)
    try:
        engine = get_engine("sface")
        first = registry.add_subject("First")
        second = registry.add_subject("Second")
        enroll_photos(registry, engine, first.id, [DATA / "obama.jpg"])
        mirrored = io.BytesIO()
        ImageOps.mirror(Image.open(DATA / "obama.jpg").convert("RGB")).save(mirrored, "PNG")
        enroll_photo_bytes(registry, engine, second.id, [("mirror.png", mirrored.getvalue())])
        index = IdentityIndex(registry, "sface", engine.dim, cache=False)
        probe = [load_image(DATA / "obama2.jpg")]

        def matched() -> list[tuple[str, bool]]:
            ((face,),) = lookup_faces(engine, index, probe)
            return sorted((m.subject_id, m.certain) for m in face.matches)

        assert matched() == sorted([(first.id, True), (second.id, True)])
        _calibrate(registry, 0.3652, 0.30)
        assert matched() == sorted([(first.id, False), (second.id, False)])
        _calibrate(registry, 0.3652, None)  # the band removed: as before
        assert matched() == sorted([(first.id, True), (second.id, True)])
    finally:
        registry.close()
