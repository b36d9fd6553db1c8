"""Attacks on a grantee's API key once it was rotated or the grantee disabled: the
change is a signed log entry, so every process that follows the log refuses the
old key, and the honest key (the new one, another grantee's) still works."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from consentry.errors import SignatureError
from consentry.faces.engines import get_engine
from consentry.registry.store import Registry
from consentry.server import create_app, hash_admin_key
from tests.integration._live import live_server
from tests.security.conftest import assert_ok
from tests.support.worlds import OBAMA, new_registry

ADMIN_KEY = "csa_grantee-keys-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Site:
    registry: Registry
    base: str


@pytest.fixture
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("grantee-keys") / "home"
    registry, _ = new_registry(home, None, [OBAMA], pki=True)
    registry.checkpoint()
    app = create_app(registry, get_engine("sface"), hash_admin_key(ADMIN_KEY))
    try:
        with live_server(app) as base:
            yield Site(registry, base)
    finally:
        registry.close()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _check(http: httpx.Client, key: str) -> int:
    return http.post("/v1/check", headers=_bearer(key), data={"purpose": "generate"}).status_code


def _other_process(site: Site) -> Registry:
    """A second registry on the same database: it knows only what the log says."""
    return Registry.open(site.registry.home.root, site.registry.db.url)


@pytest.mark.attack("old grantee API key after a rotation")
def test_old_key_is_refused_after_rotation(site: Site) -> None:
    grantee, old_key = site.registry.add_grantee("Studio")
    site.registry.checkpoint()
    with httpx.Client(base_url=site.base, timeout=30) as http:
        assert _check(http, old_key) == 200
        assert (
            http.post(
                f"/v1/grantees/{grantee.id}/rotate-key", headers=_bearer(old_key), json={}
            ).status_code
            == 401
        )  # fmt: skip  (a grantee cannot rotate)
        rotated = http.post(
            f"/v1/grantees/{grantee.id}/rotate-key", headers=ADMIN, json={"reason": "leaked"}
        )
        assert rotated.status_code == 201, rotated.text
        new_key = rotated.json()["api_key"]
        assert new_key != old_key and new_key.startswith("csk_")
        refused = http.post("/v1/check", headers=_bearer(old_key), data={"purpose": "generate"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        assert _check(http, new_key) == 200  # the honest key
        shown = http.get(f"/v1/grantees/{grantee.id}", headers=ADMIN)
        assert shown.json()["api_key"]["state"] == "rotated" and new_key not in shown.text
        again = http.post(f"/v1/grantees/{grantee.id}/rotate-key", headers=ADMIN, json={})
        newest = again.json()["api_key"]
        assert _check(http, new_key) == 401 and _check(http, newest) == 200
    other = _other_process(site)
    try:  # the log is the source of truth: a fresh follower agrees
        assert other.authenticate_grantee(newest).id == grantee.id
        for stale in (old_key, new_key):
            with pytest.raises(SignatureError):
                other.authenticate_grantee(stale)
        assert_ok(other.verify_log())
    finally:
        other.close()


@pytest.mark.attack("disabled grantee's API key")
def test_disabled_grantee_is_refused_everywhere(site: Site) -> None:
    bad, bad_key = site.registry.add_grantee("Rogue")
    _, good_key = site.registry.add_grantee("Honest")
    site.registry.checkpoint()
    with httpx.Client(base_url=site.base, timeout=30) as http:
        assert _check(http, bad_key) == 200
        no_reason = http.post(f"/v1/grantees/{bad.id}/disable", headers=ADMIN, json={})
        assert no_reason.status_code == 422  # a reason is signed into the log
        assert _check(http, bad_key) == 200  # nothing changed
        done = http.post(f"/v1/grantees/{bad.id}/disable", headers=ADMIN, json={"reason": "abuse"})
        assert done.status_code == 201, done.text
        for path in ("/v1/check",):
            answer = http.post(path, headers=_bearer(bad_key), data={"purpose": "generate"})
            assert answer.status_code == 401, answer.text
        audit = http.post("/v1/audit", headers=_bearer(bad_key), files={"file": ("a.png", b"x")})
        assert audit.status_code == 401
        assert _check(http, good_key) == 200  # the honest grantee
        for path in (f"/v1/grantees/{bad.id}/rotate-key", f"/v1/grantees/{bad.id}/disable"):
            final = http.post(path, headers=ADMIN, json={"reason": "undo"})
            assert final.status_code == 409 and final.json()["error"]["code"] == "conflict"
        assert _check(http, bad_key) == 401
        shown = http.get("/v1/grantees/Rogue", headers=ADMIN).json()
        assert shown["api_key"]["state"] == "disabled"
    other = _other_process(site)
    try:
        with pytest.raises(SignatureError):
            other.authenticate_grantee(bad_key)
        assert other.authenticate_grantee(good_key).name == "Honest"
        assert_ok(other.verify_log())
    finally:
        other.close()
