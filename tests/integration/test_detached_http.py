"""A subject acts for themselves over HTTP: the service on loopback, the subject's
side a separate process (``consentry sign``) holding only their key, no registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from consentry.faces.engines import get_engine
from consentry.identity.enroll import enroll_photos
from consentry.registry.signing import SigningKey
from consentry.registry.store import Registry
from consentry.server import create_app, hash_admin_key
from tests.integration._live import live_server
from tests.support.cli import Cli

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"
ADMIN = {"Authorization": "Bearer csa_detached-admin"}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Registry, str, str]]:
    registry = Registry.init(tmp_path / "home", None)
    key = SigningKey.generate()
    key.save(tmp_path / "device-ada.key")
    ada = registry.add_subject("Ada", public_key=key.public_key)
    enroll_photos(registry, get_engine("sface"), ada.id, [DATA / "obama.jpg"])
    _studio, studio_key = registry.add_grantee("Studio")
    registry.checkpoint()
    app = create_app(registry, get_engine("sface"), hash_admin_key("csa_detached-admin"))
    try:
        with live_server(app) as base:
            yield registry, base, studio_key
    finally:
        registry.close()


def _sign_on_device(device: Path, envelope: dict[str, object], name: str) -> dict[str, object]:
    """The subject's process: the file and the key, nothing else."""
    request = device / f"{name}.json"
    request.write_text(json.dumps(envelope))
    subject = Cli(device / "no-home")
    signed = subject.ok("sign", str(request), "--key", str(device / "ada.key")).strip()
    return dict(json.loads(Path(signed).read_text()))


def _check(http: httpx.Client, key: str) -> dict[str, object]:
    photo = ("obama2.jpg", (DATA / "obama2.jpg").read_bytes(), "image/jpeg")
    answer = http.post("/v1/check", headers={"Authorization": f"Bearer {key}"},
                       data={"purpose": "restore"}, files=[("images", photo)])  # fmt: skip
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_grant_signed_on_the_device_and_revoked_by_the_subject_alone(
    service: tuple[Registry, str, str], tmp_path: Path
) -> None:
    registry, base, studio_key = service
    device = tmp_path / "device"
    device.mkdir()
    (tmp_path / "device-ada.key").rename(device / "ada.key")
    with httpx.Client(base_url=base, timeout=60) as http:
        assert _check(http, studio_key)["allowed"] is False
        prepared = http.post("/v1/grants/prepare", headers=ADMIN, json={
            "subject": "Ada", "grantee": "Studio", "purposes": ["restore"]})  # fmt: skip
        assert prepared.status_code == 200, prepared.text
        assert any("restore" in line for line in prepared.json()["plain_words"])
        signed = _sign_on_device(device, prepared.json()["envelope"], "grant")
        assert http.post("/v1/statements", json=signed).status_code == 401  # admin only
        receipt = http.post("/v1/statements", headers=ADMIN, json=signed)
        assert receipt.status_code == 201, receipt.text
        grant_id = receipt.json()["id"]
        assert _check(http, studio_key)["allowed"] is True

        # the subject alone: no admin key anywhere below
        ada_id = registry.get_subject("Ada").id
        reason = {"grant": grant_id, "subject": ada_id, "reason": "I changed my mind"}
        probe = http.post("/v1/revocations/prepare", json={**reason, "subject": "sub_other"})
        assert probe.status_code == 404, probe.text  # a grant id alone reveals nothing
        prepared_rev = http.post("/v1/revocations/prepare", json=reason)
        assert prepared_rev.status_code == 200, prepared_rev.text
        unsigned = prepared_rev.json()["envelope"]
        refused = http.post("/v1/revocations/signed", json=unsigned)  # nobody signed it
        assert refused.status_code == 403, refused.text
        assert http.post("/v1/revocations/signed", json=signed).status_code == 403  # a grant
        revocation = http.post(
            "/v1/revocations/signed", json=_sign_on_device(device, unsigned, "revoke")
        )
        assert revocation.status_code == 201, revocation.text
        body = revocation.json()
        assert body["type"] == "revocation" and body["log_index"] > receipt.json()["log_index"]
        after = _check(http, studio_key)  # effective at the next decision
        assert after["allowed"] is False
        assert int(str(after["log_index"])) > body["log_index"]
        replay = http.post("/v1/statements", headers=ADMIN, json=signed)
        assert replay.status_code == 409, replay.text

    # the subject's own view, from their device: signed request, proofs checked offline
    SigningKey.load(registry.home.operator_key).save_public(device / "operator.pub")
    subject = Cli(device / "no-home")
    view = subject.json("me", "--server", base, "--subject", registry.get_subject("Ada").id,
                        "--key", str(device / "ada.key"),
                        "--operator-key", str(device / "operator.pub"))  # fmt: skip
    assert isinstance(view, dict)
    assert [g["status"] for g in view["grants"]] == ["revoked"]
    outcomes = [d["outcome"] for d in view["decisions"]]  # newest first
    assert outcomes == ["refused", "allowed", "refused"], outcomes
    assert all(d["grantee"] == registry.get_grantee("Studio").id for d in view["decisions"])
    assert view["verified"] == 3
    assert registry.verify_log().ok
