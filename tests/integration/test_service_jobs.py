"""The HTTP service's job, enrollment and audit routes, on a real uvicorn on loopback,
with the real tiny diffusers pipeline and a real SQLite registry."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from consentry.faces.engines import get_engine
from consentry.generation.tiny import build_tiny_pipeline
from consentry.registry.decisions import get_decision
from consentry.registry.store import Registry
from consentry.server import create_app, hash_admin_key
from tests.integration._live import live_server
from tests.support.faces import PHOTOS
from tests.support.worlds import OBAMA, new_registry

ADMIN_KEY = "csa_jobs-admin-key"


@dataclass
class Service:
    registry: Registry
    base: str
    no_model_base: str
    obama: str
    key: str


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("jobs")
    model = build_tiny_pipeline(root / "model")
    registry, (obama,) = new_registry(root / "home", None, [OBAMA], pki=True)
    engine = get_engine("sface")
    _, key = registry.add_grantee("Studio")
    registry.checkpoint()
    digest = hash_admin_key(ADMIN_KEY)
    app = create_app(registry, engine, digest, model_dir=model)
    bare = create_app(registry, engine, digest)
    try:
        with live_server(app) as base, live_server(bare) as no_model_base:
            yield Service(registry, base, no_model_base, obama, key)
    finally:
        registry.close()


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base, timeout=120) as http:
        yield http


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _photo(name: str) -> tuple[str, bytes, str]:
    return (name, (PHOTOS / name).read_bytes(), "image/jpeg")


def _generate(client: httpx.Client, key: str, prompt: str, **extra: str) -> httpx.Response:
    fields = {"prompt": prompt, "steps": "3", "size": "64", **extra}
    return client.post("/v1/generate", headers=_auth(key), data=fields)


def _restore(client: httpx.Client, key: str, photo: str, **extra: str) -> httpx.Response:
    fields = {"steps": "3", "size": "64", **extra}
    return client.post(
        "/v1/restore", headers=_auth(key), data=fields, files=[("image", _photo(photo))]
    )


def _flat_png() -> bytes:
    """A 256x256 flat grey PNG: no face."""
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text


def _grant(client: httpx.Client, subject: str, purposes: list[str]) -> dict[str, object]:
    response = client.post(
        "/v1/grants",
        headers=_auth(ADMIN_KEY),
        json={"subject": subject, "grantee": "Studio", "purposes": purposes},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _revoke(client: httpx.Client, grant_id: str) -> None:
    response = client.post(
        f"/v1/grants/{grant_id}/revoke", headers=_auth(ADMIN_KEY), json={"reason": "test over"}
    )
    assert response.status_code == 200, response.text


def test_generate_releases_signed_outputs_that_verify(
    service: Service, client: httpx.Client
) -> None:
    response = _generate(client, service.key, "a red house")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["allowed"] is True and len(body["outputs"]) == 1
    output = body["outputs"][0]
    png = base64.b64decode(output["data_base64"])
    assert png.startswith(b"\x89PNG") and output["media_type"] == "image/png"
    verified = client.post("/v1/verify", files=[("file", ("out.png", png, "image/png"))]).json()
    assert verified["ok"] is True and verified["decision_id"] == body["decision"]
    decision = get_decision(service.registry, body["decision"])
    assert decision.allowed and decision.log_index == body["log_index"]
    # The decision logs the output as rendered; the manifest that names the
    # decision is added after, so the released bytes hash differently.
    assert len(decision.outputs) == 1 and output["sha256"] != decision.outputs[0]


def test_generate_naming_a_subject_needs_a_grant(service: Service, client: httpx.Client) -> None:
    refused = _generate(client, service.key, "Obama on a beach").json()
    assert refused["allowed"] is False and refused["outputs"] == []
    # Studio holds no grant from Obama: the refusal names "a registered person" only
    assert any("a registered person" in r for r in refused["reasons"])
    assert not any("Obama" in r or service.obama in r for r in refused["reasons"])
    assert service.obama in get_decision(service.registry, refused["decision"]).subjects
    assert get_decision(service.registry, refused["decision"]).allowed is False
    grant = _grant(client, service.obama, ["generate"])
    try:
        allowed = _generate(client, service.key, "Obama on a beach").json()
        assert allowed["allowed"] is True and len(allowed["outputs"]) == 1
        assert allowed["grants"] == [grant["id"]]
    finally:
        _revoke(client, str(grant["id"]))
    again = _generate(client, service.key, "Obama on a beach").json()
    assert again["allowed"] is False and again["outputs"] == []


def test_restore_of_a_registered_face_needs_a_restore_grant(
    service: Service, client: httpx.Client
) -> None:
    refused = _restore(client, service.key, "obama2.jpg").json()
    assert refused["allowed"] is False and refused["outputs"] == []
    # a grantee sees the id of a subject only once it holds a grant from them
    known = any(g.subject_id == service.obama for g, _ in service.registry.list_grants())
    assert refused["subjects"] == [service.obama if known else "a registered person"]
    grant = _grant(client, service.obama, ["generate"])  # the wrong purpose
    try:
        assert _restore(client, service.key, "obama2.jpg").json()["allowed"] is False
    finally:
        _revoke(client, str(grant["id"]))
    grant = _grant(client, service.obama, ["restore"])
    try:
        allowed = _restore(client, service.key, "obama2.jpg").json()
        assert allowed["allowed"] is True and len(allowed["outputs"]) == 1
    finally:
        _revoke(client, str(grant["id"]))


def test_job_parameters_are_bounded_and_no_model_is_a_503(
    service: Service, client: httpx.Client
) -> None:
    size = service.registry.log_size()
    _error(_generate(client, service.key, "x", steps="0"), 422, "bad_job")
    _error(_generate(client, service.key, "x", steps="51"), 422, "bad_job")
    _error(_generate(client, service.key, "x", size="60"), 422, "bad_job")
    _error(_generate(client, service.key, "x", size="4096"), 422, "bad_job")
    _error(_restore(client, service.key, "biden.jpg", strength="0"), 422, "bad_job")
    _error(_generate(client, service.key, "x", steps="many"), 422, "invalid_request")
    _error(_generate(client, ADMIN_KEY, "x"), 401, "unauthorized")
    assert service.registry.log_size() == size  # nothing ran, nothing to log
    with httpx.Client(base_url=service.no_model_base, timeout=30) as bare:
        _error(_generate(bare, service.key, "a red house"), 503, "no_model")


def test_admin_enrolls_and_erases_and_the_gateway_follows(
    service: Service, client: httpx.Client
) -> None:
    made = client.post(
        "/v1/subjects", headers=_auth(ADMIN_KEY), json={"name": "Joe Biden", "aliases": ["Biden"]}
    )
    assert made.status_code == 201, made.text
    biden = made.json()["id"]
    enroll_url = f"/v1/subjects/{biden}/enroll"
    biden_photo = [("photos", _photo("biden.jpg"))]
    _error(
        client.post(enroll_url, headers=_auth(service.key), files=biden_photo), 401, "unauthorized"
    )
    flat = ("flat.png", _flat_png(), "image/png")
    rejected = client.post(enroll_url, headers=_auth(ADMIN_KEY), files=[("photos", flat)])
    assert rejected.status_code == 400, rejected.text
    assert "flat.png" in rejected.json()["error"]["message"]
    assert _restore(client, service.key, "biden.jpg").json()["allowed"] is True  # not yet known

    enrolled = client.post(enroll_url, headers=_auth(ADMIN_KEY), files=biden_photo)
    assert enrolled.status_code == 200, enrolled.text
    assert enrolled.json()["photos"] == 1 and enrolled.json()["subject"] == biden
    refused = _restore(client, service.key, "biden.jpg").json()
    assert refused["allowed"] is False and refused["subjects"] == ["a registered person"]
    assert biden in get_decision(service.registry, refused["decision"]).subjects

    size = service.registry.log_size()
    unconfirmed = client.post(
        f"/v1/subjects/{biden}/erase", headers=_auth(ADMIN_KEY), json={"reason": "request"}
    )
    _error(unconfirmed, 422, "confirm_required")
    assert "ALLOWED" in unconfirmed.json()["error"]["message"]  # says what erasure costs
    assert service.registry.log_size() == size
    erased = client.post(
        f"/v1/subjects/{biden}/erase",
        headers=_auth(ADMIN_KEY),
        json={"reason": "request", "confirm": True},
    )
    assert erased.status_code == 200, erased.text
    assert erased.json()["protected"] is False and "ALLOWED" in erased.json()["warning"]
    assert _restore(client, service.key, "biden.jpg").json()["allowed"] is True
    _error(
        client.post(
            f"/v1/subjects/{biden}/erase",
            headers=_auth(ADMIN_KEY),
            json={"reason": "again", "confirm": True},
        ),
        409,
        "erased",
    )
    assert service.registry.verify_log().ok


def test_admin_opt_out_keeps_refusing_over_http(tmp_path: Path) -> None:
    registry = Registry.init(tmp_path / "home", None)
    engine = get_engine("sface")
    _, key = registry.add_grantee("Studio")
    app = create_app(registry, engine, hash_admin_key(ADMIN_KEY))
    try:
        with live_server(app) as base, httpx.Client(base_url=base, timeout=120) as client:
            made = client.post(
                "/v1/subjects", headers=_auth(ADMIN_KEY), json={"name": "Eileen Collins"}
            )
            collins = made.json()["id"]
            photo = [("photos", _photo("astronaut.jpg"))]
            enrolled = client.post(
                f"/v1/subjects/{collins}/enroll", headers=_auth(ADMIN_KEY), files=photo
            )
            assert enrolled.status_code == 200, enrolled.text
            _grant(client, collins, ["restore"])

            def check() -> dict[str, object]:
                files = [("images", _photo("astronaut.jpg"))]
                response = client.post(
                    "/v1/check", headers=_auth(key), data={"purpose": "restore"}, files=files
                )
                assert response.status_code == 200, response.text
                return dict(response.json())

            assert check()["allowed"] is True  # the grant opens the gate
            url = f"/v1/subjects/{collins}/opt-out"
            confirmed = {"reason": "r", "confirm": True}
            _error(client.post(url, headers=_auth(key), json=confirmed), 401, "unauthorized")
            _error(client.post(url, headers=_auth(ADMIN_KEY), json={"reason": "r"}), 422,
                   "confirm_required")  # fmt: skip
            opted = client.post(url, headers=_auth(ADMIN_KEY), json=confirmed)
            assert opted.status_code == 200 and opted.json()["protected"] is True, opted.text
            assert check()["allowed"] is False  # the earlier grant no longer opens the gate
        assert registry.verify_log().ok
    finally:
        registry.close()


def test_audit_flags_a_registered_face_without_provenance(
    service: Service, client: httpx.Client
) -> None:
    _error(client.post("/v1/audit", files=[("file", _photo("obama2.jpg"))]), 401, "unauthorized")
    admin = _auth(ADMIN_KEY)
    item = client.post("/v1/audit", headers=admin, files=[("file", _photo("obama2.jpg"))]).json()
    assert item["manifest_state"] == "none" and item["faces"] == 1
    assert [f["subject_id"] for f in item["findings"]] == [service.obama]
    assert "crop_png" not in item["findings"][0]
    # the same triage as the CLI's report: a certain unconsented face is high
    assert item["severity"] == "high" and item["findings"][0]["severity"] == "high"
    assert item["findings"][0]["certain"] is True and item["action"]
    clean = client.post(
        "/v1/audit", headers=admin, files=[("file", _photo("astronaut.jpg"))]
    ).json()
    assert clean["findings"] == [] and clean["faces"] >= 1
    junk = client.post(
        "/v1/audit", headers=admin, files=[("file", ("x.png", b"not an image", "image/png"))]
    )
    assert junk.status_code == 200 and junk.json()["error"]
    assert junk.json()["severity"] == "medium"  # could not be audited: a person looks
