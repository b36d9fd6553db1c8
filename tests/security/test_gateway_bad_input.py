"""Hostile and degenerate images sent to the gateway's job routes, through the CLI
(a subprocess) and the HTTP API (a real server on loopback).

Each attack: a clear refusal or error, nothing written or released, and the
decision logged (a refusal is a log entry naming the requester).
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from consentry.faces.engines import get_engine
from consentry.generation.tiny import build_tiny_pipeline
from consentry.registry.decisions import get_decision
from consentry.registry.store import Registry
from consentry.server import create_app, hash_admin_key
from tests.integration._live import live_server
from tests.support.cli import Cli
from tests.support.faces import PHOTOS, crowd_png
from tests.unit.fuzz_images import png_declaring


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _corrupt() -> bytes:
    return (PHOTOS / "obama2.jpg").read_bytes()[:1500]


def _pixel_bomb() -> bytes:
    return png_declaring(40_000, 40_000, rows=64)  # 1.6 GP declared, a few KB sent


def _not_an_image() -> bytes:
    return b"#!/bin/sh\nrm -rf / # not an image\n" * 10


def _many_faces() -> bytes:
    return crowd_png(6)  # 36 faces: over the per-job limit of 32


def _zero_faces() -> bytes:
    noise = np.random.default_rng(7).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    return _png(Image.fromarray(noise))


# name -> (image bytes, fragment the refusal names; None: allowed, no face to consent)
ATTACKS: dict[str, tuple[Callable[[], bytes], str | None]] = {
    "corrupt": (_corrupt, "refused:"),
    "pixel_bomb": (_pixel_bomb, "pixels"),
    "not_an_image": (_not_an_image, "refused:"),
    "many_faces": (_many_faces, "too many faces"),
}


@dataclass
class World:
    root: Path
    cli: Cli
    model: Path
    registry: Registry
    base: str
    key: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("badinput")
    model = build_tiny_pipeline(root / "model")
    cli = Cli(root / "home")
    cli.ok("init")
    cli.ok("grantee", "add", "Studio")
    cli.ok("subject", "add", "Barack Obama", "--alias", "Obama")
    cli.ok("subject", "enroll", "Barack Obama", str(PHOTOS / "obama.jpg"))
    registry = Registry.open(root / "home", None)
    key = registry.add_grantee("Platform")[1]
    app = create_app(registry, get_engine("sface"), hash_admin_key("csa_x"), model_dir=model)
    try:
        with live_server(app) as base:
            yield World(root, cli, model, registry, base, key)
    finally:
        registry.close()


def _cli_restore(world: World, name: str, data: bytes) -> tuple[int, str, str, Path]:
    source = world.root / f"{name}.img"
    source.write_bytes(data)
    out = world.root / f"{name}-out.png"
    result = world.cli(
        "restore", str(source), "--as", "Studio", "--model", str(world.model),
        "--steps", "2", "--size", "64", "-o", str(out), "--json",
    )  # fmt: skip
    return result.code, result.out, result.err, out


def _http_restore(world: World, name: str, data: bytes) -> dict[str, object]:
    with httpx.Client(base_url=world.base, timeout=120) as client:
        response = client.post(
            "/v1/restore",
            headers={"Authorization": f"Bearer {world.key}"},
            data={"steps": "2", "size": "64"},
            files=[("image", (f"{name}.png", data, "application/octet-stream"))],
        )
    assert response.status_code == 200, response.text
    assert "Traceback" not in response.text
    return dict(response.json())


def _assert_logged_refusal(world: World, decision_id: object, fragment: str) -> None:
    decision = get_decision(world.registry, str(decision_id))
    assert decision.allowed is False and decision.outputs == []
    assert any(fragment in reason for reason in decision.reasons), decision.reasons


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_bad_image_through_the_cli_is_refused_logged_and_writes_nothing(
    world: World, attack: str
) -> None:
    make, fragment = ATTACKS[attack]
    code, output, errors, out = _cli_restore(world, f"cli-{attack}", make())
    assert code == 1, (output, errors)
    assert not out.exists() and not list(world.root.glob(f"cli-{attack}-out*"))
    assert "Traceback" not in output + errors
    receipt = json.loads(output)
    assert receipt["allowed"] is False and receipt["written"] == []
    _assert_logged_refusal(world, receipt["decision"], str(fragment))


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_bad_image_over_http_is_refused_logged_and_releases_nothing(
    world: World, attack: str
) -> None:
    make, fragment = ATTACKS[attack]
    receipt = _http_restore(world, f"http-{attack}", make())
    assert receipt["allowed"] is False and receipt["outputs"] == []
    assert any(str(fragment) in str(r) for r in receipt["reasons"]), receipt["reasons"]  # type: ignore[attr-defined]
    _assert_logged_refusal(world, receipt["decision"], str(fragment))


def test_zero_face_image_is_restored_signed_and_logged(world: World) -> None:
    """No face means no likeness to consent to: allowed, post-checked, signed, logged."""
    receipt = _http_restore(world, "http-noise", _zero_faces())
    assert receipt["allowed"] is True and receipt["faces"] == []
    outputs = receipt["outputs"]
    assert isinstance(outputs, list) and len(outputs) == 1
    png = base64.b64decode(outputs[0]["data_base64"])
    with httpx.Client(base_url=world.base, timeout=60) as client:
        verified = client.post("/v1/verify", files=[("file", ("o.png", png, "image/png"))])
    assert verified.json()["ok"] is True
    code, output, errors, out = _cli_restore(world, "cli-noise", _zero_faces())
    assert code == 0 and out.exists(), (output, errors)
