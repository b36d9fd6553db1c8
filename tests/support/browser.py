"""A real headless Chromium, driven over the DevTools protocol on a pipe.

``Browser`` starts ``chromium --headless --no-sandbox --disable-gpu
--remote-debugging-pipe``: the browser reads protocol messages on its fd 3 and
writes them on its fd 4, each one JSON object followed by a NUL byte. No network
port is opened and no Python package beyond the standard library is needed.

Invariants
- No chromium binary is an error (``BrowserMissingError``), never a skip: the suite
  fails where the browser tests cannot run (``.ci/run`` installs it).
- ``open`` returns only after the ``load`` lifecycle event of *that* navigation
  (matched by its loader id), so nothing races the page; every wait has a deadline
  and a browser that dies or stalls is an error naming what was awaited.
- Every request the page made and every console/log entry (CSP violations
  included) is recorded, for the test to assert on.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Browser", "BrowserError", "BrowserMissingError", "Page", "chromium_binary"]

NAMES = ("chromium", "chromium-browser")


class BrowserError(RuntimeError):
    """The browser failed, died, or did not answer in time."""


class BrowserMissingError(BrowserError):
    """No chromium binary on PATH."""


def chromium_binary() -> str:
    """The chromium on PATH (``chromium``, else ``chromium-browser``)."""
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserMissingError(
        f"no {' or '.join(NAMES)} on PATH: install it (Debian: apt-get install -y chromium)"
    )


@dataclass
class Page:
    """One tab, attached with a flat session; made by :meth:`Browser.open`."""

    browser: Browser
    session: str
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    blocked: dict[str, str] = field(default_factory=dict)  # URL -> why it was blocked
    log: list[str] = field(default_factory=list)  # console and browser log entries
    _urls: dict[str, str] = field(default_factory=dict)  # request id -> URL

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the middle of ``selector``."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        if box is None:
            raise BrowserError(f"no element {selector!r} to click")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def type(self, selector: str, text: str) -> None:
        """Focus ``selector``, clear it, and type ``text`` as keyboard input."""
        self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.focus(); e.select(); })()"
        )
        self.call("Input.insertText", {"text": text})

    def screenshot(self) -> bytes:
        """The page as PNG bytes (``Page.captureScreenshot``)."""
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        return base64.b64decode(data["data"])

    def collect(self) -> None:
        """Move the events seen so far into ``requests``, ``blocked`` and ``log``."""
        for event in self.browser.take_events(self.session):
            params = event.get("params", {})
            if event["method"] == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
                self._urls[params["requestId"]] = params["request"]["url"]
            elif event["method"] == "Network.loadingFailed" and params.get("blockedReason"):
                url = self._urls.get(params["requestId"], params["requestId"])
                self.blocked[url] = params["blockedReason"]
            elif event["method"] == "Log.entryAdded":
                entry = params["entry"]
                self.log.append(f"{entry.get('source')}: {entry.get('text')}")
            elif event["method"] == "Runtime.consoleAPICalled":
                args = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
                self.log.append(f"console.{params.get('type')}: {' '.join(args)}")
            elif event["method"] == "Runtime.exceptionThrown":
                self.log.append(f"exception: {params['exceptionDetails']}")


class Browser:
    """A headless Chromium process; use as a context manager."""

    def __init__(self, timeout: float = 30.0) -> None:
        binary = chromium_binary()  # before anything is made that would need undoing
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="consentry-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        argv = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            "about:blank",
        ]
        # bash puts the two pipe ends at fds 3 and 4, where chromium expects them
        wrapper = 'exec 3<&"$1" 4>&"$2"; shift 2; exec "$@"'
        self._proc = subprocess.Popen(
            ["bash", "-c", wrapper, "bash", str(to_child_r), str(from_child_w), *argv],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._send({"id": self._new_id(), "method": "Browser.close"})
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(timeout=10)
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    # ------------------------------------------------------------------ protocol
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_child, data) :]

    def _receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        """The next message; BrowserError past ``deadline`` or if the browser exits."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"timed out waiting for {waiting_for}")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise BrowserError(f"chromium exited waiting for {waiting_for}: {err[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        value: dict[str, Any] = json.loads(message)
        return value

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send one command and return its result; events meanwhile are queued."""
        ident = self._new_id()
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self._send(message)
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._receive(deadline, method)
            if answer.get("id") != ident:
                if "method" in answer:
                    self._events.append(answer)
                continue
            if "error" in answer:
                raise BrowserError(f"{method}: {answer['error']}")
            result: dict[str, Any] = answer.get("result", {})
            return result

    def wait_event(self, session: str, method: str, **match: Any) -> dict[str, Any]:
        """The first event ``method`` of ``session`` whose params include ``match``
        (queued or still to come), removed from the queue."""

        def fits(event: dict[str, Any]) -> bool:
            params = event.get("params", {})
            return (
                event.get("sessionId") == session
                and event.get("method") == method
                and all(params.get(k) == v for k, v in match.items())
            )

        deadline = time.monotonic() + self.timeout
        while True:
            for event in self._events:
                if fits(event):
                    self._events.remove(event)
                    return event
            message = self._receive(deadline, f"{method} {match}")
            if "method" in message:
                self._events.append(message)

    def take_events(self, session: str) -> list[dict[str, Any]]:
        mine = [e for e in self._events if e.get("sessionId") == session]
        self._events = [e for e in self._events if e.get("sessionId") != session]
        return mine

    # ------------------------------------------------------------------ pages
    def open(self, url: str) -> Page:
        """A new tab showing ``url``, returned once that document's load event fired."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Network", "Log"):
            page.call(f"{domain}.enable")
        page.call("Page.setLifecycleEventsEnabled", {"enabled": True})
        navigated = page.call("Page.navigate", {"url": url})
        if navigated.get("errorText"):
            raise BrowserError(f"{url}: {navigated['errorText']}")
        self.wait_event(session, "Page.lifecycleEvent", name="load", loaderId=navigated["loaderId"])
        page.collect()
        return page
