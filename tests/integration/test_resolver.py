"""The soft-binding resolver over HTTP on loopback: a real release is found by its
watermark binding, its ISCC and PDQ bindings and its stripped content; a look-alike
(the unmarked original) and an unknown id are not; the manifest route returns the
decision's signed log entry."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import c2pa
import httpx
import pytest
from PIL import Image

from consentry.faces.engines import get_engine
from consentry.gate import Gateway, RunRequest, run_job
from consentry.generation.backends.base import PriorRef
from consentry.provenance.certs import create_dev_pki
from consentry.provenance.fingerprint import ISCC_ALG, PDQ_ALG
from consentry.provenance.verify import verify_media
from consentry.provenance.watermark import WATERMARK_ALG
from consentry.registry.models import ManifestStore
from consentry.registry.store import Registry
from consentry.server import create_app, hash_admin_key
from tests.integration._live import live_server

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"


class PhotoBackend:
    """Returns a real photo as the model's output (the model is not under test)."""

    def text2img(
        self, prompt: str, steps: int, size: int, seed: int, prior: PriorRef | None = None,
        **kw: Any,
    ) -> list[Any]:  # fmt: skip
        return [Image.open(DATA / "astronaut.jpg").convert("RGB")]

    def img2img(self, *args: Any, **kw: Any) -> list[Any]:
        raise AssertionError("not used")


@dataclass
class World:
    registry: Registry
    base: str
    decision_id: str
    signed: bytes
    bindings: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("resolver") / "home"
    registry = Registry.init(home, None)
    create_dev_pki(registry.home.root)
    registry.add_grantee("Studio")
    engine = get_engine("sface")
    request = RunRequest("Studio", "generate", "a landscape", home, steps=1)
    receipt = run_job(Gateway(registry, engine), request, PhotoBackend())  # type: ignore[arg-type]
    assert receipt.allowed, receipt.reasons
    result = verify_media(registry, receipt.outputs[0], "image/png")
    bindings = {b["alg"]: b["value"] for b in result.soft_bindings}
    app = create_app(registry, engine, hash_admin_key("admin-key-for-tests-0123456789"))
    try:
        with live_server(app) as base:
            yield World(registry, base, receipt.decision_id or "", receipt.outputs[0], bindings)
    finally:
        registry.close()


def _jpeg(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def test_supported_algorithms(world: World) -> None:
    body = httpx.get(f"{world.base}/v1/sbr/services/supportedAlgorithms").json()
    assert body == {
        "watermarks": [{"alg": WATERMARK_ALG}],
        "fingerprints": [{"alg": ISCC_ALG}, {"alg": PDQ_ALG}],
    }


@pytest.mark.parametrize("alg", [WATERMARK_ALG, ISCC_ALG, PDQ_ALG])
def test_a_release_is_found_by_each_binding(world: World, alg: str) -> None:
    response = httpx.post(
        f"{world.base}/v1/sbr/matches/byBinding", json={"alg": alg, "value": world.bindings[alg]}
    )
    assert response.status_code == 200, response.text
    assert [m["manifestId"] for m in response.json()["matches"]] == [world.decision_id]


def test_unknown_ids_and_algorithms(world: World) -> None:
    unknown = base64.b64encode(bytes(8)).decode()
    response = httpx.post(
        f"{world.base}/v1/sbr/matches/byBinding", json={"alg": WATERMARK_ALG, "value": unknown}
    )
    assert response.json() == {"matches": []}
    bad = httpx.post(
        f"{world.base}/v1/sbr/matches/byBinding", json={"alg": "com.example.x", "value": unknown}
    )
    assert bad.status_code == 422 or bad.status_code == 400, bad.text


def test_by_content_recovers_the_stripped_release_not_a_look_alike(world: World) -> None:
    url = f"{world.base}/v1/sbr/matches/byContent"
    stripped = httpx.post(
        url, content=_jpeg(world.signed), headers={"Content-Type": "image/jpeg"}
    ).json()
    assert [m["manifestId"] for m in stripped["matches"]] == [world.decision_id]
    original = (DATA / "astronaut.jpg").read_bytes()
    look_alike = httpx.post(url, content=original, headers={"Content-Type": "image/jpeg"})
    assert look_alike.json() == {"matches": []}


def test_manifest_route_returns_the_signed_manifest_store(world: World) -> None:
    response = httpx.get(f"{world.base}/v1/sbr/manifests/{world.decision_id}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/c2pa"
    with c2pa.Reader("application/c2pa", io.BytesIO(response.content)) as reader:
        kept = json.loads(reader.json())
    with c2pa.Reader("image/png", io.BytesIO(world.signed)) as reader:
        embedded = json.loads(reader.json())
    assert kept["active_manifest"] == embedded["active_manifest"]  # the very manifest
    assert (
        httpx.get(f"{world.base}/v1/sbr/manifests/{world.decision_id}?output=1").status_code == 404
    )


def test_manifest_route_returns_the_signed_decision(world: World) -> None:
    body = httpx.get(f"{world.base}/v1/sbr/manifests/{world.decision_id}?format=entry").json()
    assert body["decision"]["id"] == world.decision_id
    assert body["decision"]["release"]["outputs"][0]["watermark"] == WATERMARK_ALG
    assert httpx.get(f"{world.base}/v1/sbr/manifests/dec_nope").status_code in (400, 404)


@pytest.mark.attack("kept manifest store edited")
def test_an_edited_manifest_store_is_never_served(world: World) -> None:
    url = f"{world.base}/v1/sbr/manifests/{world.decision_id}"
    honest = httpx.get(url).content
    with world.registry.db.write() as session:
        row = session.get(ManifestStore, f"{world.decision_id}/0")
        assert row is not None
        row.data = honest.replace(b"generate", b"generatf", 1)
        session.add(row)
    try:
        edited = httpx.get(url)
        assert edited.status_code == 500, edited.text
        assert edited.content != honest and b"generatf" not in edited.content
    finally:
        with world.registry.db.write() as session:
            row = session.get(ManifestStore, f"{world.decision_id}/0")
            assert row is not None
            row.data = honest
            session.add(row)
    assert httpx.get(url).content == honest
