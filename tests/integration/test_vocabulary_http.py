"""One vocabulary across the CLI and the HTTP service (issue 16).

- The same error has the same code in the CLI's ``--json`` error (a subprocess, as a
  user runs it) and in the service's error body, on one registry; the exit code and
  the status are the ones the README's table gives for its class.
- The service takes the names it answers with: ``display_name`` for a subject,
  ``not_after`` for a grant; the older ``name`` and ``until`` still work, as
  deprecated aliases documented so in OpenAPI, and both names with different
  values is a 422 that records nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from consentry.errors import ConsentryError, DuplicateError, InputError, NotFoundError
from consentry.faces.engines import get_engine
from consentry.registry.store import Registry
from consentry.server import create_app, hash_admin_key
from consentry.server.errors import http_status
from tests.support.cli import Cli, initialised

ADMIN_KEY = "csa_vocabulary-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Site:
    cli: Cli
    http: TestClient
    registry: Registry
    grant: str  # an active grant of Ada to Studio
    revoked: str  # a grant of Ada to Studio, revoked


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("vocabulary")
    cli = initialised(tmp / "home", f"sqlite:///{tmp}/registry.db")
    cli.ok("subject", "add", "Ada Lovelace", "--alias", "Ada")
    cli.ok("grantee", "add", "Studio")
    grants = [cli.json("grant", "Ada", "--to", "Studio", "--purpose", "restore") for _ in "ab"]
    assert all(isinstance(g, dict) for g in grants)
    active, revoked = (str(g["id"]) for g in grants if isinstance(g, dict))
    cli.ok("revoke", revoked, "--reason", "withdrawn")
    registry = Registry.open(cli.home, cli.db_url)
    app = create_app(registry, get_engine("sface"), hash_admin_key(ADMIN_KEY))
    try:
        with TestClient(app, raise_server_exceptions=False) as http:
            yield Site(cli, http, registry, active, revoked)
    finally:
        registry.close()


def _cli_error(site: Site, *args: str) -> tuple[int, dict[str, Any]]:
    result = site.cli(*args, "--json")
    assert result.err == "", result.err
    body = json.loads(result.out)
    assert set(body) == {"error"}, body
    return result.code, body["error"]


def _http_error(answer: Any) -> tuple[int, dict[str, Any]]:
    body = answer.json()
    assert set(body) == {"error"}, body
    return answer.status_code, body["error"]


@pytest.mark.parametrize(
    ("kind", "cli_args", "method", "path", "body"),
    [
        (NotFoundError, ("revoke", "grt_nope", "--reason", "x"), "POST",
         "/v1/grants/grt_nope/revoke", {"reason": "x"}),
        (NotFoundError, ("grants", "--subject", "Nobody"), "GET",
         "/v1/grants?subject=Nobody", None),
        (DuplicateError, ("revoke", "{revoked}", "--reason", "again"), "POST",
         "/v1/grants/{revoked}/revoke", {"reason": "again"}),
        (InputError, ("grant", "Ada", "--to", "Studio", "--purpose", "spy"), "POST",
         "/v1/grants", {"subject": "Ada", "grantee": "Studio", "purposes": ["spy"]}),
    ],
    ids=["unknown-grant", "unknown-subject", "revoked-twice", "unknown-purpose"],
)  # fmt: skip
def test_the_cli_and_the_service_give_one_code_for_one_error(
    site: Site,
    kind: type[ConsentryError],
    cli_args: tuple[str, ...],
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    args = tuple(a.format(revoked=site.revoked) for a in cli_args)
    exit_code, cli = _cli_error(site, *args)
    answer = site.http.request(method, path.format(revoked=site.revoked), headers=ADMIN, json=body)
    status, http = _http_error(answer)
    assert cli["code"] == http["code"] == kind.code, (cli, http)
    assert (exit_code, status) == (kind.exit_code, http_status(kind)), (cli, http)


def test_a_subject_takes_display_name_and_still_name(site: Site) -> None:
    made = site.http.post("/v1/subjects", headers=ADMIN, json={"display_name": "Grace Hopper"})
    assert made.status_code == 201, made.text
    assert made.json()["display_name"] == "Grace Hopper"
    old = site.http.post("/v1/subjects", headers=ADMIN, json={"name": "Mary Somerville"})
    assert old.status_code == 201 and old.json()["display_name"] == "Mary Somerville"
    same = {"display_name": "Emmy Noether", "name": "Emmy Noether", "aliases": ["Noether"]}
    both = site.http.post("/v1/subjects", headers=ADMIN, json=same)
    assert both.status_code == 201 and both.json()["display_name"] == "Emmy Noether"
    assert both.json()["aliases"] == ["Noether"]
    names = {s.display_name for s in site.registry.list_subjects()}
    assert {"Grace Hopper", "Mary Somerville", "Emmy Noether"} <= names


def test_a_grant_takes_not_after_and_still_until(site: Site) -> None:
    end = "2031-06-30T12:00:00Z"
    base = {"subject": "Ada", "grantee": "Studio", "purposes": ["restore"]}
    new = site.http.post("/v1/grants", headers=ADMIN, json=base | {"not_after": end})
    old = site.http.post("/v1/grants", headers=ADMIN, json=base | {"until": end})
    both = site.http.post("/v1/grants", headers=ADMIN, json=base | {"until": end, "not_after": end})
    for answer in (new, old, both):
        assert answer.status_code == 201, answer.text
        assert answer.json()["not_after"] == site.registry.get_grant(answer.json()["id"]).not_after
    assert new.json()["not_after"] == old.json()["not_after"] == both.json()["not_after"]
    assert new.json()["not_after"].startswith("2031-06-30T12:00:00")
    unbounded = site.http.post("/v1/grants", headers=ADMIN, json=base | {"until": None})
    assert unbounded.status_code == 201 and unbounded.json()["not_after"] is None


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/subjects", {"display_name": "Ada Byron", "name": "Ada King"}),
        ("/v1/grants", {"subject": "Ada", "grantee": "Studio", "purposes": ["restore"],
                        "not_after": "2031-01-01T00:00:00Z", "until": "2032-01-01T00:00:00Z"}),
        ("/v1/grants/prepare", {"subject": "Ada", "grantee": "Studio", "purposes": ["restore"],
                                "not_after": "2031-01-01T00:00:00Z",
                                "until": "2032-01-01T00:00:00Z"}),
    ],
    ids=["subject", "grant", "prepared-grant"],
)  # fmt: skip
def test_a_new_name_and_its_alias_with_different_values_is_a_422(
    site: Site, path: str, body: dict[str, Any]
) -> None:
    size = site.registry.log_size()
    answer = site.http.post(path, headers=ADMIN, json=body)
    status, error = _http_error(answer)
    assert status == 422 and error["code"] == "invalid_request", error
    assert "deprecated name" in error["message"], error
    assert site.registry.log_size() == size  # nothing recorded


def test_openapi_documents_the_new_names_and_the_deprecated_aliases(site: Site) -> None:
    schemas = site.http.get("/openapi.json").json()["components"]["schemas"]
    subject, grant = schemas["SubjectIn"], schemas["GrantIn"]
    assert subject["properties"]["name"]["deprecated"] is True
    assert "deprecated" not in subject["properties"]["display_name"]
    assert {"required": ["display_name"]} in subject["anyOf"]
    assert "display_name" not in subject.get("required", [])  # name alone is accepted
    assert grant["properties"]["until"]["deprecated"] is True
    assert "deprecated" not in grant["properties"]["not_after"]
    assert schemas["PrepareGrantIn"]["properties"]["until"]["deprecated"] is True


def test_enrolling_too_many_photos_answers_the_trees_code_and_enrolls_nothing(site: Site) -> None:
    """The enroll route's photo count speaks the tree's vocabulary (``too_many_images``,
    422, as a check with too many images does), before any photo is read."""
    from consentry.limits import Limits

    subject = site.registry.get_subject("Ada")
    before = site.registry.log_size()
    most = Limits().max_images
    files = [("photos", (f"p{n}.jpg", b"not read", "image/jpeg")) for n in range(most + 1)]
    answer = site.http.post(f"/v1/subjects/{subject.id}/enroll", headers=ADMIN, files=files)
    status, error = _http_error(answer)
    assert (status, error["code"]) == (422, "too_many_images"), error
    assert site.registry.log_size() == before  # nothing enrolled, nothing logged
