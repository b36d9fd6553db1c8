"""The strict multipart validator: what real clients send is accepted, every cut or
bent body is refused, and a prefix of a body is never returned as a body."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.server.multipart import (
    MultipartError,
    Part,
    boundary_of,
    validate_multipart,
)

FILENAMES = ["face.jpg", "my photo.jpg", "café.jpg", 'a"b.jpg', "semi;colon.jpg", "x=y.png"]


def _httpx_body(filename: str, data: bytes = b"\xff\xd8 image \r\n-- bytes") -> tuple[bytes, str]:
    request = httpx.Request(
        "POST",
        "http://127.0.0.1/v1/check",
        data={"purpose": "restore", "prompt": "a photo"},
        files=[("images", (filename, data, "image/jpeg")), ("images", ("b.png", b"", "x/y"))],
    )
    return request.read(), request.headers["content-type"]


@pytest.mark.parametrize("filename", FILENAMES)
def test_bodies_from_httpx_are_accepted_whole(filename: str) -> None:
    body, content_type = _httpx_body(filename)
    boundary = boundary_of(content_type)
    assert boundary is not None
    parts = validate_multipart(body, boundary)
    assert [p.name for p in parts] == ["purpose", "prompt", "images", "images"]
    assert parts[2].size == len(b"\xff\xd8 image \r\n-- bytes") and parts[3] == Part(
        "images", "b.png", 0
    )


def test_bodies_from_requests_are_accepted() -> None:
    requests = pytest.importorskip("requests")
    prepared = requests.Request(
        "POST", "http://127.0.0.1/", data={"purpose": "r"}, files=[("images", ("é.jpg", b"x"))]
    ).prepare()
    boundary = boundary_of(prepared.headers["Content-Type"])
    assert boundary is not None
    assert [p.name for p in validate_multipart(prepared.body, boundary)] == ["purpose", "images"]


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0), filename=st.sampled_from(FILENAMES))
def test_no_prefix_of_a_body_is_accepted(cut: int, filename: str) -> None:
    """Every strict prefix that loses a byte of content or framing is refused (the
    one accepted shortening drops only the final CRLF after the close delimiter)."""
    body, content_type = _httpx_body(filename)
    boundary = boundary_of(content_type)
    assert boundary is not None
    prefix = body[: cut % (len(body) - 2)]
    with pytest.raises(MultipartError):
        validate_multipart(prefix, boundary)


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=a; boundary=b",
        'multipart/form-data; boundary="unclosed',
        "multipart/form-data; boundary=" + "b" * 71,
        'multipart/form-data; boundary="ends-in-space "',
        "multipart/mixed; boundary=abc",
        "multipart/form-data; boundary=a\x01b",
    ],
)
def test_bad_content_types_are_refused(content_type: str) -> None:
    with pytest.raises(MultipartError):
        boundary_of(content_type)
    assert boundary_of("multipart/form-data; boundary=abc") == "abc"
    assert boundary_of('multipart/form-data; charset=utf-8; boundary="a b"') == "a b"
    assert boundary_of("application/json") is None
