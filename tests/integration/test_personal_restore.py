"""Personalised restoration through the gateway: an exemplars prior made of the
subject's own kept photos, consent-bound, memorization-checked, signed and logged.

Real faces (the shipped photos), the real sface engine, a real SQLite registry and
real C2PA signing; no diffusers model is needed for this route.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from consentry.errors import PriorHashMismatchError
from consentry.faces.images import load_image
from consentry.gate import Gateway, RunRequest, run_job
from consentry.generation.exemplars import load_exemplars, register_exemplars
from consentry.provenance.verify import verify_media
from consentry.registry.biometrics import erase_subject
from consentry.registry.decisions import get_decision
from consentry.registry.prior_files import prior_store_path
from consentry.registry.store import Registry
from consentry.server import create_app, hash_admin_key
from tests.integration._live import live_server
from tests.support.cli import Cli
from tests.support.faces import PHOTOS
from tests.support.worlds import OBAMA, new_registry, sface_gateway


def degraded(name: str, factor: int = 8) -> bytes:
    """A shipped photo downscaled by ``factor`` and saved as JPEG (quality 60)."""
    pixels = load_image(PHOTOS / name).pixels
    small = Image.fromarray(pixels).resize(
        (pixels.shape[1] // factor, pixels.shape[0] // factor), Image.Resampling.BOX
    )
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=60)
    return buffer.getvalue()


@dataclass
class World:
    registry: Registry
    gateway: Gateway
    obama: str
    prior_id: str
    prior_sha: str


@pytest.fixture
def world(tmp_path: Path, sqlite_url: str) -> Iterator[World]:
    registry, (obama,) = new_registry(
        tmp_path / "home", sqlite_url, [OBAMA], keep_photos=True, pki=True
    )
    prior = register_exemplars(registry, obama)
    registry.add_grantee("Studio")
    registry.checkpoint()
    yield World(registry, sface_gateway(registry), obama, prior.id, prior.sha256)
    registry.close()


def _restore(world: World, image: bytes) -> object:
    return run_job(
        world.gateway,
        RunRequest("Studio", "restore", "", Path(), image=image, prior=world.prior_id),
    )


def test_exemplar_prior_is_a_signed_manifest_of_kept_photo_hashes(world: World) -> None:
    path = prior_store_path(world.registry, world.prior_sha, "exemplars")
    manifest = json.loads(path.read_bytes())
    prior = world.registry.list_priors(world.obama)[0]
    assert manifest["subject"] == world.obama and manifest["photos"] == prior.details["photos"]
    assert len(manifest["photos"]) == 1 and prior.kind == "exemplars"
    loaded = load_exemplars(world.registry, path, world.prior_sha)
    assert loaded.photos[0].shape == (256, 256, 3)
    path.write_bytes(path.read_bytes().replace(b"exemplars", b"exemplarz"))
    with pytest.raises(PriorHashMismatchError):
        load_exemplars(world.registry, path, world.prior_sha)
    assert world.registry.verify_log().ok


def test_personal_restore_needs_a_grant_naming_the_prior(world: World) -> None:
    refused = _restore(world, degraded("obama2.jpg"))
    assert refused.allowed is False and refused.outputs == []  # type: ignore[attr-defined]
    world.registry.grant(world.obama, "Studio", ["restore"])  # a grant without the prior
    again = _restore(world, degraded("obama2.jpg"))
    assert again.allowed is False  # type: ignore[attr-defined]
    assert any("not named by an active grant" in r for r in again.reasons)  # type: ignore[attr-defined]


def test_personal_restore_runs_is_checked_for_copies_signed_and_verifies(world: World) -> None:
    world.registry.grant(world.obama, "Studio", ["restore"], priors=[world.prior_sha])
    source = degraded("obama2.jpg")
    receipt = _restore(world, source)
    assert receipt.allowed, receipt.reasons  # type: ignore[attr-defined]
    (png,) = receipt.outputs  # type: ignore[attr-defined]
    details = receipt.details  # type: ignore[attr-defined]
    restoration = details["restoration"]
    assert restoration["scale"] >= 2 and restoration["method"] == "exemplar-detail-transfer"
    (memo,) = details["memorization"]
    assert 0.0 <= memo["ssim"] < memo["limit"] and memo["identity"] > 0.3
    assert any("memorization check passed" in r for r in receipt.reasons)  # type: ignore[attr-defined]
    restored = load_image(png)
    low = load_image(source)
    assert restored.width > low.width  # it is a restoration, not a copy of the input
    result = verify_media(world.registry, png, "image/png")
    assert result.ok, result.consent_reason
    assert result.memorization is not None and result.memorization["ssim"] == memo["ssim"]
    decision = get_decision(world.registry, receipt.decision_id)  # type: ignore[attr-defined]
    assert decision.allowed and decision.prior_sha256 == world.prior_sha


def test_a_near_copy_of_a_prior_photo_is_withheld(world: World) -> None:
    """Restoring the enrolled photo itself reproduces the kept photo: withheld."""
    world.registry.grant(world.obama, "Studio", ["restore"], priors=[world.prior_sha])
    receipt = _restore(world, degraded("obama.jpg", factor=2))
    assert receipt.allowed is False and receipt.outputs == []  # type: ignore[attr-defined]
    assert any("near-copy" in r for r in receipt.reasons), receipt.reasons  # type: ignore[attr-defined]
    decision = get_decision(world.registry, receipt.decision_id)  # type: ignore[attr-defined]
    assert decision.allowed is False and len(decision.outputs) == 1


def test_an_unregistered_face_is_not_restored_with_someones_prior(world: World) -> None:
    world.registry.grant(world.obama, "Studio", ["restore"], priors=[world.prior_sha])
    receipt = _restore(world, degraded("biden.jpg", factor=4))
    assert receipt.allowed is False and receipt.outputs == []  # type: ignore[attr-defined]
    assert any("paint" in r for r in receipt.reasons), receipt.reasons  # type: ignore[attr-defined]


def test_a_faceless_input_is_refused_with_a_personal_prior(world: World) -> None:
    world.registry.grant(world.obama, "Studio", ["restore"], priors=[world.prior_sha])
    buffer = io.BytesIO()
    noise = np.random.default_rng(3).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="PNG")
    receipt = _restore(world, buffer.getvalue())
    assert receipt.allowed is False and receipt.outputs == []  # type: ignore[attr-defined]
    assert any("no face" in r for r in receipt.reasons), receipt.reasons  # type: ignore[attr-defined]


def test_erasure_makes_the_exemplar_prior_unusable(world: World) -> None:
    world.registry.grant(world.obama, "Studio", ["restore"], priors=[world.prior_sha])
    erase_subject(world.registry, world.obama, "subject asked")
    receipt = _restore(world, degraded("obama2.jpg"))
    assert receipt.allowed is False and receipt.outputs == []  # type: ignore[attr-defined]
    assert any("erased" in r for r in receipt.reasons), receipt.reasons  # type: ignore[attr-defined]
    assert world.registry.verify_log().ok


def test_exemplar_prior_through_the_cli(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    cli.ok("subject", "add", "Barack Obama", "--alias", "Obama")
    cli.ok("subject", "enroll", "Barack Obama", str(PHOTOS / "obama.jpg"), "--keep-photos")
    prior = cli.json("prior", "add", "Barack Obama", "--kind", "exemplars")
    assert isinstance(prior, dict) and prior["kind"] == "exemplars"
    cli.ok("grantee", "add", "Studio")
    cli.ok(
        "grant",
        "Barack Obama",
        "--to",
        "Studio",
        "--purpose",
        "restore",
        "--prior",
        str(prior["sha256"]),
    )
    source = tmp_path / "small.jpg"
    source.write_bytes(degraded("obama2.jpg"))
    out = tmp_path / "restored.png"
    result = cli(
        "restore", str(source), "--as", "Studio", "--prior", str(prior["id"]), "-o", str(out)
    )
    assert result.code == 0, (result.out, result.err)
    assert out.exists() and cli("verify", str(out)).code == 0


def test_personal_restore_over_http_needs_no_diffusers_model(world: World) -> None:
    world.registry.grant(world.obama, "Studio", ["restore"], priors=[world.prior_sha])
    _, key = world.registry.add_grantee("Platform")
    world.registry.grant(world.obama, "Platform", ["restore"], priors=[world.prior_sha])
    app = create_app(world.registry, world.gateway.engine, hash_admin_key("csa_admin"))
    with live_server(app) as base, httpx.Client(base_url=base, timeout=120) as client:
        response = client.post(
            "/v1/restore",
            headers={"Authorization": f"Bearer {key}"},
            data={"prior": world.prior_id},
            files=[("image", ("small.jpg", degraded("obama2.jpg"), "image/jpeg"))],
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["allowed"] is True and len(body["outputs"]) == 1, body["reasons"]
        assert body["details"]["restoration"]["method"] == "exemplar-detail-transfer"
        no_prior = client.post(
            "/v1/restore",
            headers={"Authorization": f"Bearer {key}"},
            files=[("image", ("small.jpg", degraded("obama2.jpg"), "image/jpeg"))],
        )
        assert no_prior.status_code == 503 and no_prior.json()["error"]["code"] == "no_model"
