"""The admin's read routes of subjects and grantees, on a live service."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from consentry.faces.engines import get_engine
from consentry.registry.biometrics import opt_out_subject
from consentry.server import create_app, hash_admin_key
from tests.integration._live import live_server
from tests.support.worlds import BIDEN, OBAMA, new_registry

ADMIN_KEY = "csa_directory-admin-key"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("directory") / "home"
    registry, (obama, biden) = new_registry(home, None, [OBAMA, BIDEN], pki=True)
    grantee, key = registry.add_grantee("Studio")
    opt_out_subject(registry, biden, "asked")
    registry.checkpoint()
    app = create_app(registry, get_engine("sface"), hash_admin_key(ADMIN_KEY))
    try:
        with live_server(app) as base:
            yield {"base": base, "obama": obama, "biden": biden, "grantee": grantee.id,
                   "key": key, "hash": grantee.api_key_sha256}  # fmt: skip
    finally:
        registry.close()


def test_subjects_and_grantees_are_listed_for_the_admin_only(world: dict[str, str]) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    grantee = {"Authorization": f"Bearer {world['key']}"}
    with httpx.Client(base_url=world["base"], timeout=30) as http:
        for path in ("/v1/subjects", f"/v1/subjects/{world['obama']}", "/v1/grantees",
                     f"/v1/grantees/{world['grantee']}"):  # fmt: skip
            assert http.get(path).status_code == 401, path
            refused = http.get(path, headers=grantee)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        subjects = http.get("/v1/subjects", headers=admin)
        one = http.get(f"/v1/subjects/{world['obama']}", headers=admin)
        grantees = http.get("/v1/grantees", headers=admin)
        studio = http.get("/v1/grantees/Studio", headers=admin)
        missing = http.get("/v1/grantees/nobody", headers=admin)
    assert subjects.status_code == 200, subjects.text
    by_id = {s["id"]: s for s in subjects.json()}
    assert by_id[world["obama"]]["display_name"] == "Barack Obama"
    assert by_id[world["obama"]]["status"] == {"state": "active"}
    assert by_id[world["obama"]]["enrolled"] == ["sface"]
    assert by_id[world["biden"]]["status"]["state"] == "opted_out"
    assert one.json() == by_id[world["obama"]]
    assert grantees.status_code == 200 and [g["id"] for g in grantees.json()] == [world["grantee"]]
    assert studio.json() == grantees.json()[0]
    assert studio.json()["api_key"]["state"] == "active"
    for answer in (grantees, studio):
        assert world["key"] not in answer.text and world["hash"] not in answer.text
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
