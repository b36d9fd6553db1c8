"""A minimal HTTP/1.1 keep-alive client for the serve bench's load generators.

``httpx`` costs about 1.6 ms of client CPU per request; on the bench's two shared
cores that is CPU the servers under test do not get. This client does one thing:
an ``application/x-www-form-urlencoded`` POST over one persistent loopback
connection, reading a ``Content-Length`` framed answer (what uvicorn sends for a
JSON response). Anything else (chunked bodies, a closed connection, a malformed
status line) raises :class:`HttpClientError`; the bench counts it as an error, it
never guesses an answer.
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlencode, urlsplit

__all__ = ["HttpClientError", "KeepAliveClient"]

_MAX_BODY = 1 << 20
_MAX_HEADER_LINES = 100


class HttpClientError(Exception):
    """The answer could not be read as one Content-Length framed HTTP/1.1 response."""


class KeepAliveClient:
    """One persistent connection to ``base`` (``http://host:port``); reconnects once
    when the server closed the idle connection before a request was sent."""

    def __init__(self, base: str, timeout: float = 60.0) -> None:
        parts = urlsplit(base)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise HttpClientError(f"need http://host:port, not {base!r}")
        self._address = (parts.hostname, parts.port)
        self._host = f"{parts.hostname}:{parts.port}"
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: Any = None

    def __enter__(self) -> KeepAliveClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._reader = None

    def _connect(self) -> None:
        self.close()
        sock = socket.create_connection(self._address, timeout=self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._reader = sock, sock.makefile("rb")

    def post_form(
        self, path: str, fields: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, Any]:
        """POST ``fields`` urlencoded to ``path``; returns (status, parsed JSON body)."""
        body = urlencode(fields).encode()
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {self._host}",
            "Content-Type: application/x-www-form-urlencoded",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        if self._sock is None:
            self._connect()
        assert self._sock is not None
        try:
            self._sock.sendall(request)
            return self._read()
        except (ConnectionError, HttpClientError) as first:
            if isinstance(first, HttpClientError) and "closed" not in str(first):
                raise
            self._connect()  # the server dropped an idle keep-alive connection: once more
            assert self._sock is not None
            self._sock.sendall(request)
            return self._read()

    def _read(self) -> tuple[int, Any]:
        status_line = self._reader.readline(65537)
        if not status_line:
            raise HttpClientError("connection closed before the status line")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HttpClientError(f"malformed status line {status_line[:80]!r}")
        length, close = self._headers()
        if length is None or not 0 <= length <= _MAX_BODY:
            raise HttpClientError(f"no usable Content-Length ({length})")
        data = self._reader.read(length)
        if len(data) != length:
            raise HttpClientError("connection closed inside the body")
        if close:
            self.close()
        return int(parts[1]), json.loads(data)

    def _headers(self) -> tuple[int | None, bool]:
        """(Content-Length, whether the server closes) from the header lines."""
        length: int | None = None
        close = False
        for _ in range(_MAX_HEADER_LINES):
            line = self._reader.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                return length, close
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value.strip())
            elif key == b"transfer-encoding":
                raise HttpClientError("chunked answers are not supported")
            elif key == b"connection" and value.strip().lower() == b"close":
                close = True
        raise HttpClientError("too many header lines")
