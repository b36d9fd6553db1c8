"""The HTTP service, run by a real uvicorn on loopback against a real registry."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from consentry.cli.serve_cmds import ADMIN_KEY_ENV, ADMIN_KEY_FILE, admin_key_digest
from consentry.faces.engines import get_engine
from consentry.registry.decisions import get_decision
from consentry.registry.offline import verify_inclusion_bundle
from consentry.registry.store import Registry
from consentry.server import MAX_BODY_BYTES, create_app, hash_admin_key
from tests.integration._live import live_server
from tests.support.faces import PHOTOS
from tests.support.worlds import OBAMA, new_registry

ADMIN_KEY = "csa_test-admin-key"


@dataclass
class World:
    registry: Registry
    base: str
    obama: str
    alpha: str
    alpha_key: str
    beta: str
    beta_key: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("service") / "home"
    registry, (obama,) = new_registry(home, None, [OBAMA], pki=True)
    engine = get_engine("sface")
    alpha, alpha_key = registry.add_grantee("Alpha")
    beta, beta_key = registry.add_grantee("Beta")
    registry.checkpoint()
    app = create_app(registry, engine, hash_admin_key(ADMIN_KEY))
    try:
        with live_server(app) as base:
            yield World(
                registry,
                base,
                obama,
                alpha.id,
                alpha_key,
                beta.id,
                beta_key,
            )
    finally:
        registry.close()


@pytest.fixture
def client(world: World) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=world.base, timeout=30) as http:
        yield http


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _photo(name: str = "obama2.jpg") -> tuple[str, bytes, str]:
    return (name, (PHOTOS / name).read_bytes(), "image/jpeg")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 100, 50)).save(buffer, format="PNG")
    return buffer.getvalue()


def _check(
    client: httpx.Client, key: str, purpose: str = "restore", **fields: str
) -> httpx.Response:
    return client.post(
        "/v1/check",
        headers=_auth(key),
        data={"purpose": purpose, **fields},
        files=[("images", _photo())],
    )


def _error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    return dict(body["error"])


def test_grants_decide_checks_and_the_requester_is_the_key_holder(
    world: World, client: httpx.Client
) -> None:
    refused = _check(client, world.alpha_key)
    assert refused.status_code == 200, refused.text
    receipt = refused.json()
    assert receipt["allowed"] is False and receipt["log_index"] is not None
    assert any("no active grant" in r for r in receipt["reasons"])
    logged = get_decision(world.registry, receipt["decision"])
    assert not logged.allowed and logged.grantee_id == world.alpha

    # The admin grants Obama to Beta only.
    created = client.post(
        "/v1/grants",
        headers=_auth(ADMIN_KEY),
        json={"subject": world.obama, "grantee": "Beta", "purposes": ["restore"]},
    )
    assert created.status_code == 201, created.text
    grant = created.json()
    assert grant["grantee"] == world.beta and grant["status"] == "active"

    allowed = _check(client, world.beta_key).json()
    assert allowed["allowed"] is True and allowed["grants"] == [grant["id"]]
    assert get_decision(world.registry, allowed["decision"]).grantee_id == world.beta

    # Alpha cannot borrow Beta's grant: no field names a requester, and a field the
    # route does not declare is a 400 (never silently ignored), with nothing logged.
    for spoof in ({"grantee": world.beta}, {"requester": "Beta"}, {"as": world.beta}):
        size = world.registry.log_size()
        _error(_check(client, world.alpha_key, **spoof), 400, "malformed_body")
        assert world.registry.log_size() == size, spoof
    again = _check(client, world.alpha_key).json()
    assert again["allowed"] is False
    assert get_decision(world.registry, again["decision"]).grantee_id == world.alpha

    listed = client.get("/v1/grants", headers=_auth(ADMIN_KEY), params={"grantee": "Beta"})
    assert [g["id"] for g in listed.json()] == [grant["id"]]

    revoked = client.post(
        f"/v1/grants/{grant['id']}/revoke", headers=_auth(ADMIN_KEY), json={"reason": "withdrawn"}
    )
    assert revoked.status_code == 200 and revoked.json()["grant"] == grant["id"]
    after = _check(client, world.beta_key).json()
    assert after["allowed"] is False and any("revoked" in r for r in after["reasons"])
    _error(
        client.post(
            f"/v1/grants/{grant['id']}/revoke", headers=_auth(ADMIN_KEY), json={"reason": "x"}
        ),
        409,
        "conflict",
    )
    _error(
        client.post(
            "/v1/grants",
            headers=_auth(ADMIN_KEY),
            json={"subject": "nobody", "grantee": "Beta", "purposes": ["restore"]},
        ),
        404,
        "not_found",
    )
    _error(
        client.post(
            "/v1/grants",
            headers=_auth(ADMIN_KEY),
            json={"subject": world.obama, "grantee": "Beta", "purposes": ["spy"]},
        ),
        400,
        "bad_input",
    )
    _error(_check(client, world.alpha_key, purpose="spy"), 400, "bad_input")


def test_keys_open_only_their_own_routes(world: World, client: httpx.Client) -> None:
    grant_body = {"subject": world.obama, "grantee": "Alpha", "purposes": ["restore"]}
    _error(client.post("/v1/grants", json=grant_body), 401, "unauthorized")
    _error(client.post("/v1/grants", json=grant_body, headers=_auth("junk")), 401, "unauthorized")
    for key in (world.alpha_key, world.beta_key):
        _error(client.post("/v1/grants", headers=_auth(key), json=grant_body), 401, "unauthorized")
        _error(client.get("/v1/grants", headers=_auth(key)), 401, "unauthorized")
        _error(
            client.post("/v1/grants/grt_x/revoke", headers=_auth(key), json={"reason": "r"}),
            401,
            "unauthorized",
        )
    _error(client.post("/v1/check", data={"purpose": "restore"}), 401, "unauthorized")
    _error(_check(client, ADMIN_KEY), 401, "unauthorized")
    _error(_check(client, "csk_not-a-key"), 401, "unauthorized")
    assert not world.registry.list_grants(grantee="Alpha")


def test_bad_images_are_refusals_and_limits_hold(world: World, client: httpx.Client) -> None:
    for junk in (b"\xff\xd8\xff\xe0 truncated jpeg", b"not an image at all", b""):
        response = client.post(
            "/v1/check",
            headers=_auth(world.alpha_key),
            data={"purpose": "restore"},
            files=[("images", ("x.jpg", junk, "image/jpeg"))],
        )
        assert response.status_code == 200, response.text
        receipt = response.json()
        assert receipt["allowed"] is False and receipt["reasons"][0].startswith("refused:")
        assert receipt["log_index"] is not None

    nine = [("images", (f"{i}.png", _png(), "image/png")) for i in range(9)]
    _error(
        client.post(
            "/v1/check", headers=_auth(world.alpha_key), data={"purpose": "restore"}, files=nine
        ),
        422,
        "too_many_images",
    )
    eight = client.post(
        "/v1/check", headers=_auth(world.alpha_key), data={"purpose": "restore"}, files=nine[:8]
    )
    assert eight.status_code == 200 and eight.json()["allowed"] is True

    big = b"\0" * (MAX_BODY_BYTES + 1)
    _error(  # by Content-Length
        client.post("/v1/check", headers=_auth(world.alpha_key), content=big), 413, "too_large"
    )

    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY_BYTES // (1 << 20) + 1):
            yield b"\0" * (1 << 20)

    _error(  # chunked, counted while read
        client.post("/v1/verify", content=chunks()), 413, "too_large"
    )
    _error(client.post("/v1/check", headers=_auth(world.alpha_key)), 422, "invalid_request")
    assert client.get("/healthz").json() == {"status": "ok"}


def test_public_log_verify_and_docs(world: World, client: httpx.Client) -> None:
    receipt = _check(client, world.alpha_key).json()
    note = client.get("/v1/log/checkpoint")
    assert note.status_code == 200 and note.headers["content-type"].startswith("text/plain")
    assert note.text == world.registry.latest_checkpoint()
    proof = client.get(f"/v1/log/proof/{receipt['log_index']}")
    assert proof.status_code == 200, proof.text
    keys = list(world.registry.trusted_keys().values())
    checkpoint = verify_inclusion_bundle(proof.json(), keys)
    assert checkpoint.tree_size > receipt["log_index"]
    _error(client.get("/v1/log/proof/999999"), 404, "not_found")
    _error(client.get("/v1/log/proof/-1"), 404, "not_found")
    _error(client.get("/v1/log/proof/abc"), 422, "invalid_request")

    plain = client.post("/v1/verify", files={"file": ("p.png", _png(), "image/png")})
    assert plain.status_code == 200, plain.text
    assert plain.json()["ok"] is False and plain.json()["c2pa_state"] == "none"
    _error(
        client.post("/v1/verify", files={"file": ("p.txt", b"hello", "text/plain")}),
        422,
        "bad_image",
    )

    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/check", "/v1/grants", "/v1/log/proof/{index}", "/v1/verify"} <= set(spec["paths"])
    _error(client.get("/nowhere"), 404, "not_found")


def test_unexpected_errors_are_opaque_500s(
    world: World, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom() -> str:
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(world.registry, "latest_checkpoint", boom)
    response = client.get("/v1/log/checkpoint")
    error = _error(response, 500, "internal")
    assert "secret" not in response.text and "RuntimeError" not in error["message"]
    monkeypatch.undo()
    assert client.get("/v1/log/checkpoint").status_code == 200


def test_admin_key_is_made_once_and_stored_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ADMIN_KEY_ENV, raising=False)
    digest, key = admin_key_digest(tmp_path)
    assert key is not None and key.startswith("csa_") and digest == hash_admin_key(key)
    stored = tmp_path / ADMIN_KEY_FILE
    assert stored.read_text().strip() == digest and key not in stored.read_text()
    assert stored.stat().st_mode & 0o077 == 0
    assert admin_key_digest(tmp_path) == (digest, None)
    monkeypatch.setenv(ADMIN_KEY_ENV, "from-env")
    assert admin_key_digest(tmp_path) == (hash_admin_key("from-env"), None)


def test_concurrent_checks_share_one_registry(world: World) -> None:
    results: list[int] = []

    def one(key: str) -> None:
        with httpx.Client(base_url=world.base, timeout=60) as http:
            results.append(_check(http, key).status_code)

    threads = [
        threading.Thread(target=one, args=(k,)) for k in [world.alpha_key, world.beta_key] * 4
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 8
    assert world.registry.verify_log().ok
