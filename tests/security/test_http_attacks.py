"""Attacks on the HTTP service, over real uvicorn on loopback: malformed bodies, the
audit route as a face-recognition lookup, refusals that name people, and job
limits that differ between the CLI and HTTP.

Every test asserts the refusal *and* that the honest equivalent (a well-formed
body, a key with a grant, an in-bounds job) is served, so a service that refuses
everything fails here too.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from consentry.faces.engines import get_engine
from consentry.limits import Limits
from consentry.registry.decisions import get_decision
from consentry.registry.store import Registry
from consentry.server import create_app, hash_admin_key
from tests.integration._live import live_server
from tests.support.cli import Cli
from tests.support.faces import PHOTOS
from tests.support.worlds import BIDEN, OBAMA, new_registry

ADMIN_KEY = "csa_http-attacks-admin"
PERSON = "a registered person"


@dataclass
class Site:
    registry: Registry
    base: str
    capped: str  # the same registry served with a face cap of 1
    obama: str
    biden: str
    alpha: str  # holds a restore + generate grant from Obama
    alpha_key: str
    alpha_grant: str
    beta: str  # holds no grant
    beta_key: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("http-attacks") / "home"
    registry, (obama, biden) = new_registry(home, None, [OBAMA, BIDEN])
    engine = get_engine("sface")
    alpha, alpha_key = registry.add_grantee("Alpha")
    beta, beta_key = registry.add_grantee("Beta")
    grant = registry.grant(obama, alpha.id, ["restore", "generate"])
    registry.checkpoint()
    digest = hash_admin_key(ADMIN_KEY)
    app = create_app(registry, engine, digest)
    capped = create_app(registry, engine, digest, limits=Limits(max_faces=1))
    try:
        with live_server(app) as base, live_server(capped) as capped_base:
            yield Site(
                registry,
                base,
                capped_base,
                obama,
                biden,
                alpha.id,
                alpha_key,
                grant.id,
                beta.id,
                beta_key,
            )
    finally:
        registry.close()


@pytest.fixture
def client(site: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.base, timeout=60) as http:
        yield http


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _photo(name: str = "obama2.jpg") -> bytes:
    return (PHOTOS / name).read_bytes()


# ------------------------------------------------------------------ malformed bodies
BOUNDARY = "consentry-attack-boundary"


def _field(name: str, value: str) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode()


def _file(name: str, data: bytes, filename: str = "face.jpg") -> bytes:
    head = (
        f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    )
    return head.encode() + data


def _body(parts: list[bytes], boundary: str = BOUNDARY) -> bytes:
    dash = f"--{boundary}".encode()
    return b"".join(dash + b"\r\n" + p + b"\r\n" for p in parts) + dash + b"--\r\n"


Body = tuple[bytes, str]  # body, Content-Type
Mutation = Callable[[list[bytes]], Body]
_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def _close_missing(parts: list[bytes]) -> Body:
    return _body(parts)[: -len(f"\r\n--{BOUNDARY}--\r\n")], _TYPE


def _close_missing_keep_crlf(parts: list[bytes]) -> Body:
    return _body(parts)[: -len(f"--{BOUNDARY}--\r\n")], _TYPE


def _headers_truncated(parts: list[bytes]) -> Body:
    body = _body(parts)  # cut inside the last part's headers
    return body[: body.rindex(f"--{BOUNDARY}\r\n".encode()) + len(BOUNDARY) + 30], _TYPE


def _other_boundary(parts: list[bytes]) -> Body:
    return _body(parts, "a-different-boundary"), _TYPE


def _no_boundary(parts: list[bytes]) -> Body:
    return _body(parts), "multipart/form-data"


def _empty_boundary(parts: list[bytes]) -> Body:
    return _body(parts), "multipart/form-data; boundary="


def _long_boundary(parts: list[bytes]) -> Body:
    long = "b" * 71
    return _body(parts, long), f"multipart/form-data; boundary={long}"


def _two_boundaries(parts: list[bytes]) -> Body:
    return _body(parts), f"multipart/form-data; boundary={BOUNDARY}; boundary=other"


def _no_disposition(parts: list[bytes]) -> Body:
    last = parts[-1].replace(b"Content-Disposition: form-data", b"X-Disposition: form-data")
    return _body([*parts[:-1], last]), _TYPE


def _transfer_encoding(parts: list[bytes]) -> Body:
    last = parts[-1].replace(b"\r\n\r\n", b"\r\nContent-Transfer-Encoding: base64\r\n\r\n", 1)
    return _body([*parts[:-1], last]), _TYPE


def _bare_lf(parts: list[bytes]) -> Body:
    return _body(parts).replace(b"\r\n", b"\n"), _TYPE


def _epilogue(parts: list[bytes]) -> Body:
    return _body(parts) + b"smuggled", _TYPE


def _misspelt_file_field(parts: list[bytes]) -> Body:
    last = parts[-1].replace(b'name="', b'name="x', 1)
    return _body([*parts[:-1], last]), _TYPE


def _repeated_field(parts: list[bytes]) -> Body:  # the first part is never a list
    return _body([parts[0], *parts]), _TYPE


def _filename_star(parts: list[bytes]) -> Body:
    head, _, rest = parts[-1].partition(b"\r\n")
    last = head + b"; filename*=UTF-8''images.jpg\r\n" + rest
    return _body([*parts[:-1], last]), _TYPE


MUTATIONS: dict[str, Mutation] = {
    "close-delimiter-missing": _close_missing,
    "close-delimiter-missing-crlf-kept": _close_missing_keep_crlf,
    "part-headers-truncated": _headers_truncated,
    "boundary-differs-from-body": _other_boundary,
    "content-type-without-boundary": _no_boundary,
    "empty-boundary": _empty_boundary,
    "boundary-over-70-chars": _long_boundary,
    "two-boundary-parameters": _two_boundaries,
    "part-without-disposition": _no_disposition,
    "content-transfer-encoding": _transfer_encoding,
    "bare-lf-line-ends": _bare_lf,
    "bytes-after-close-delimiter": _epilogue,
    "file-under-an-undeclared-name": _misspelt_file_field,
    "single-field-given-twice": _repeated_field,
    "filename-star-parameter": _filename_star,
}


def _routes(site: Site) -> list[tuple[str, str, list[bytes]]]:
    """Every multipart route: (path, key, parts), the file part last, the first part
    a field that takes one value."""
    photo = _photo()
    return [
        ("/v1/check", site.alpha_key, [_field("purpose", "restore"), _file("images", photo)]),
        ("/v1/restore", site.alpha_key, [_field("steps", "3"), _file("image", photo)]),
        ("/v1/generate", site.alpha_key, [_field("steps", "3"), _field("prompt", "a house")]),
        ("/v1/audit", ADMIN_KEY, [_file("file", photo)]),
        ("/v1/verify", "", [_file("file", photo)]),
        (
            f"/v1/subjects/{site.biden}/enroll",
            ADMIN_KEY,
            [_field("keep_photos", "false"), _file("photos", _photo("biden.jpg"))],
        ),
    ]


@pytest.mark.attack("malformed multipart body")
@pytest.mark.parametrize("variant", sorted(MUTATIONS))
def test_malformed_multipart_is_a_400_and_nothing_is_logged(
    site: Site, client: httpx.Client, variant: str
) -> None:
    for path, key, parts in _routes(site):
        body, content_type = MUTATIONS[variant](parts)
        assert (body, content_type) != (_body(parts), _TYPE), "the mutation changed nothing"
        headers = {"Content-Type": content_type} | (_auth(key) if key else {})
        size = site.registry.log_size()
        response = client.post(path, content=body, headers=headers)
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "malformed_body" and set(response.json()) == {"error"}
        assert site.registry.log_size() == size, path  # nothing logged
    # The honest body, byte for byte the same parts correctly framed, is served and
    # its image seen: Alpha's grant allows it, Beta's lack of one refuses it.
    parts = [_field("purpose", "restore"), _file("images", _photo())]
    for key, allowed in ((site.alpha_key, True), (site.beta_key, False)):
        response = client.post(
            "/v1/check", content=_body(parts), headers={"Content-Type": _TYPE} | _auth(key)
        )
        assert response.status_code == 200, response.text
        receipt = response.json()
        assert receipt["allowed"] is allowed and len(receipt["faces"]) == 1, receipt


@pytest.mark.attack("two Content-Type headers on a form")
def test_two_content_types_are_refused(site: Site, client: httpx.Client) -> None:
    parts = [_field("purpose", "restore"), _file("images", _photo())]
    raw = httpx.Request(
        "POST",
        f"{site.base}/v1/check",
        content=_body(parts),
        headers=[
            ("Content-Type", _TYPE),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", f"Bearer {site.alpha_key}"),
        ],
    )
    size = site.registry.log_size()
    response = client.send(raw)
    assert response.status_code == 400 and site.registry.log_size() == size, response.text
    honest = client.post(
        "/v1/check", content=_body(parts), headers={"Content-Type": _TYPE} | _auth(site.alpha_key)
    )
    assert honest.status_code == 200 and honest.json()["allowed"] is True


# ------------------------------------------------------------------ audit lookups
def _two_faces() -> bytes:
    """Obama and Biden side by side in one JPEG."""
    left = Image.open(io.BytesIO(_photo("obama.jpg"))).convert("RGB")
    right = Image.open(io.BytesIO(_photo("biden.jpg"))).convert("RGB")
    height = max(left.height, right.height)
    canvas = Image.new("RGB", (left.width + right.width, height), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def _audit(base: str, key: str | None, data: bytes) -> httpx.Response:
    headers = _auth(key) if key else {}
    with httpx.Client(base_url=base, timeout=60) as http:
        return http.post("/v1/audit", headers=headers, files=[("file", ("x.jpg", data))])


AUDIT_VARIANTS = ["no-key", "junk-key", "grantee-without-grant", "more-faces-than-the-cap"]


@pytest.mark.attack("audit as a face-recognition lookup")
@pytest.mark.parametrize("variant", AUDIT_VARIANTS)
def test_audit_is_not_a_public_face_lookup(site: Site, variant: str) -> None:
    photo = _photo()
    if variant in ("no-key", "junk-key"):
        response = _audit(site.base, None if variant == "no-key" else "csk_junk", photo)
        assert response.status_code == 401, response.text
        assert "Obama" not in response.text and site.obama not in response.text
    elif variant == "grantee-without-grant":
        response = _audit(site.base, site.beta_key, photo)
        assert response.status_code == 200, response.text
        findings = response.json()["findings"]
        assert len(findings) == 1 and findings[0]["name"] == PERSON
        pseudonym = findings[0]["subject_id"]
        assert pseudonym.startswith("person_") and pseudonym != site.obama
        assert "Obama" not in response.text and site.obama not in response.text
        again = _audit(site.base, site.beta_key, _photo("obama.jpg")).json()
        assert again["findings"][0]["subject_id"] == pseudonym  # stable for Beta
        # Alpha holds no grant from Biden: another grantee, another pseudonym space
        biden = _audit(site.base, site.alpha_key, _photo("biden.jpg"))
        assert "Biden" not in biden.text and site.biden not in biden.text
    else:
        response = _audit(site.capped, site.alpha_key, _two_faces())
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "too_many_faces"
        assert "Obama" not in response.text and "Biden" not in response.text
        one = _audit(site.capped, site.alpha_key, photo)
        assert one.status_code == 200 and one.json()["findings"][0]["subject_id"] == site.obama
    # The honest equivalent: Alpha, who holds Obama's grant, and the admin see who it is.
    for key in (site.alpha_key, ADMIN_KEY):
        honest = _audit(site.base, key, photo)
        assert honest.status_code == 200, honest.text
        finding = honest.json()["findings"][0]
        assert finding["subject_id"] == site.obama and finding["name"] == "Barack Obama"


# ------------------------------------------------------------------ refusal redaction
REFUSALS = {
    "face-in-the-input": ("restore", "", "obama2.jpg"),
    "name-in-the-prompt": ("generate", "Barack Obama on a beach", None),
    "alias-in-the-prompt": ("generate", "obama waving", None),
}


@pytest.mark.attack("refusal names a subject to a grantee without a grant")
@pytest.mark.parametrize("variant", sorted(REFUSALS))
def test_refusals_name_no_subject_the_grantee_has_no_grant_from(
    site: Site, client: httpx.Client, variant: str
) -> None:
    purpose, prompt, photo = REFUSALS[variant]
    files = [("images", (photo, _photo(photo)))] if photo else None

    def check(key: str) -> httpx.Response:
        data = {"purpose": purpose, "prompt": prompt}
        return client.post("/v1/check", headers=_auth(key), data=data, files=files)

    refused = check(site.beta_key)
    assert refused.status_code == 200, refused.text
    receipt = refused.json()
    assert receipt["allowed"] is False
    text = refused.text
    for secret in (site.obama, "Barack", site.alpha, site.alpha_grant, "Alpha"):
        assert secret not in text, (secret, receipt)
    assert any(PERSON in r for r in receipt["reasons"]) and receipt["subjects"] == [PERSON]
    assert receipt["grants"] == []
    # the operator's log keeps the ids
    logged = get_decision(site.registry, receipt["decision"])
    assert site.obama in logged.subjects and any(site.obama in r for r in logged.reasons)

    allowed = check(site.alpha_key).json()
    assert allowed["allowed"] is True, allowed
    assert allowed["subjects"] == [site.obama] and allowed["grants"] == [site.alpha_grant]


# ------------------------------------------------------------------ one Limits
OUT_OF_BOUNDS = {
    "steps-zero": ("generate", {"steps": "0"}, "steps must be 1..50"),
    "steps-over": ("generate", {"steps": "51"}, "steps must be 1..50"),
    "size-not-a-multiple-of-8": ("generate", {"size": "100"}, "size must be a multiple of 8"),
    "size-over": ("generate", {"size": "4096"}, "size must be a multiple of 8"),
    "strength-over-one": ("restore", {"strength": "1.5"}, "strength must be in (0, 1]"),
    "prompt-over": ("generate", {"prompt": "a red house " * 200}, "at most 2000"),
}


@pytest.mark.attack("a job outside the limits on one interface")
@pytest.mark.parametrize("variant", sorted(OUT_OF_BOUNDS))
def test_cli_and_http_refuse_the_same_out_of_bounds_job(
    site: Site, client: httpx.Client, tmp_path: Path, variant: str
) -> None:
    purpose, bad, wording = OUT_OF_BOUNDS[variant]
    fields = {"prompt": "a red house", "steps": "3", "size": "64"}
    files = [("image", ("b.jpg", _photo("biden.jpg")))] if purpose == "restore" else None
    size = site.registry.log_size()
    http = client.post(
        f"/v1/{purpose}", headers=_auth(site.beta_key), data=fields | bad, files=files
    )
    assert http.status_code == 422 and http.json()["error"]["code"] == "bad_job", http.text
    assert wording in http.json()["error"]["message"]
    assert site.registry.log_size() == size

    cli = Cli(site.registry.home.root)
    prompt = (fields | bad)["prompt"]
    argv = [purpose, *(["--prompt", prompt] if purpose == "generate" else [])]
    if purpose == "restore":
        argv.append(str(PHOTOS / "biden.jpg"))
    options = fields | bad
    options.pop("prompt")
    for name, value in options.items():
        argv += [f"--{name}", value]
    refused = cli(*argv, "--as", "Beta", "--model", str(tmp_path), "-o", str(tmp_path / "o.png"))
    assert refused.code == 2 and wording in refused.err, refused.err
    assert site.registry.log_size() == size  # the CLI refused before logging, too

    # Honest: the same job in bounds passes the limits on HTTP (and, without a
    # model on this server, gets the 503 that only comes after them).
    honest = client.post(f"/v1/{purpose}", headers=_auth(site.beta_key), data=fields, files=files)
    assert honest.status_code == 503 and honest.json()["error"]["code"] == "no_model", honest.text


def test_the_cli_passes_an_in_bounds_job_at_the_limits(site: Site, tmp_path: Path) -> None:
    """The CLI's half of the honest equivalent: a job at the very limits passes them
    and goes on to the next check (here an existing output file, exit 2 with that
    reason and nothing logged; test_gateway_run runs in-bounds CLI jobs through)."""
    cli = Cli(site.registry.home.root)
    existing = tmp_path / "o.png"
    existing.write_bytes(b"taken")
    limits = Limits()
    result = cli(
        "restore", str(PHOTOS / "biden.jpg"), "--as", "Beta", "--steps", str(limits.max_steps),
        "--size", str(limits.max_size), "--strength", "1.0", "--model", str(tmp_path),
        "-o", str(existing),
    )  # fmt: skip
    assert result.code == 2 and "exists; not overwriting" in result.err, result.err
    assert "must be" not in result.err + result.out
