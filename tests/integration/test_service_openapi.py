"""The OpenAPI document of a live service tells the truth about its errors: every
operation documents the one error body for the statuses its route answers, and
real error answers validate against the documented schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from consentry.faces.engines import get_engine
from consentry.server import create_app, hash_admin_key
from tests.integration._live import live_server
from tests.support.worlds import new_registry

ADMIN_KEY = "csa_openapi-admin-key"
REF = "#/components/schemas/ErrorBody"
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    registry, _ = new_registry(tmp_path_factory.mktemp("openapi") / "home", None, [], pki=True)
    registry.checkpoint()
    try:
        with live_server(
            create_app(
                registry, get_engine("sface"), hash_admin_key(ADMIN_KEY), max_body_bytes=MAX_BODY
            )
        ) as url:
            yield url
    finally:
        registry.close()


@pytest.fixture(scope="module")
def spec(base: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/openapi.json", timeout=30)
    assert response.status_code == 200
    found: dict[str, Any] = response.json()
    return found


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _validate(spec: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$") -> None:
    """A small JSON Schema check (object, string, required, no extra keys)."""
    schema = _resolve(spec, schema)
    kind = schema.get("type")
    if kind == "string":
        assert isinstance(value, str), f"{where}: not a string"
    elif kind == "object":
        assert isinstance(value, dict), f"{where}: not an object"
        properties = schema.get("properties", {})
        missing = set(schema.get("required", [])) - set(value)
        assert not missing, f"{where}: missing {missing}"
        assert set(value) <= set(properties), f"{where}: extra keys {set(value) - set(properties)}"
        for key, item in value.items():
            _validate(spec, properties[key], item, f"{where}.{key}")
    else:
        raise AssertionError(f"{where}: unexpected schema {schema}")


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in spec["paths"].items():
        for method, operation in ops.items():
            yield path, method, operation


def _error_ref(operation: dict[str, Any], status: str) -> str | None:
    entry = operation["responses"].get(status)
    if entry is None:
        return None
    ref: str | None = entry["content"]["application/json"]["schema"].get("$ref")
    return ref


def test_every_operation_documents_the_error_body(spec: dict[str, Any]) -> None:
    text = str(spec)
    assert (
        "HTTPValidationError" not in text and "ValidationError" not in spec["components"]["schemas"]
    )
    checked = 0
    for path, method, operation in _operations(spec):
        name = f"{method.upper()} {path}"
        for status in operation["responses"]:
            if int(status) >= 400:
                assert _error_ref(operation, status) == REF, (name, status)
        assert _error_ref(operation, "500") == REF, name
        if operation.get("security"):
            assert _error_ref(operation, "401") == REF, name
        if operation.get("parameters") or operation.get("requestBody"):
            assert _error_ref(operation, "422") == REF, name
        if method == "post":
            assert _error_ref(operation, "413") == REF, name
        checked += 1
    assert checked >= 25
    ops = {f"{m.upper()} {p}": o for p, m, o in _operations(spec)}
    for upload in ("POST /v1/check", "POST /v1/verify", "POST /v1/audit", "POST /v1/restore"):
        assert _error_ref(ops[upload], "413") == REF, upload
    for admin in ("POST /v1/subjects", "GET /v1/grants", "GET /v1/reviews"):
        assert _error_ref(ops[admin], "401") == REF, admin
    assert "202" in ops["POST /v1/check"]["responses"]  # a held job
    assert _error_ref(ops["POST /v1/generate"], "503") == REF
    assert _error_ref(ops["POST /v1/subjects"], "409") == REF


def test_real_errors_validate_against_the_documented_schema(
    base: str, spec: dict[str, Any]
) -> None:
    body_schema = {"$ref": REF}
    with httpx.Client(base_url=base, timeout=30) as http:
        answers = {
            401: http.get("/v1/grants"),  # no key
            422: http.get("/v1/log/proof/abc"),  # FastAPI's own validation
        }
        wrong_key = http.get("/v1/grants", headers={"Authorization": "Bearer nope"})
        bad_json = http.post(
            "/v1/subjects", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, json={"nom": 1}
        )
        too_big = http.post("/v1/verify", files={"file": ("a.png", b"x" * (2 * MAX_BODY))})
        honest = http.get("/v1/grants", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert honest.status_code == 200 and honest.json() == []
    for status, response in {**answers, 0: wrong_key, 1: bad_json}.items():
        expected = status if status > 1 else (401 if status == 0 else 422)
        assert response.status_code == expected, response.text
        _validate(spec, body_schema, response.json())
    assert answers[422].json()["error"]["code"] == "invalid_request"
    assert "nom" in bad_json.text or "name" in bad_json.json()["error"]["message"]
    assert too_big.status_code == 413, too_big.text
    _validate(spec, body_schema, too_big.json())
    broken = {"error": {"code": "x"}}
    with pytest.raises(AssertionError):
        _validate(spec, body_schema, broken)  # the check can fail
