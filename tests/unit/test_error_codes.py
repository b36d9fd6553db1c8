"""One code per error class, written down once: the README's table of error codes
is exactly what the exception tree (``code``, ``exit_code``) and the service's
status table say, so neither can drift from the other."""

from __future__ import annotations

import re
from pathlib import Path

import consentry.errors as errors_module
from consentry.errors import ConsentryError, GrantRevokedError, NotFoundError
from consentry.server.errors import http_status

README = Path(__file__).resolve().parents[2] / "README.md"
MARK = "<!-- error-codes:"
ROW = re.compile(
    r"^\| `(?P<code>[a-z_]+)` \| `(?P<cls>\w+)` \| (?P<meaning>[^|]+) "
    r"\| (?P<exit>\d) \| (?P<status>\d{3}) \|$"
)


def _tree(kind: type[ConsentryError]) -> list[type[ConsentryError]]:
    """``kind`` and every class of :mod:`consentry.errors` below it, depth first."""
    found = [kind]
    for child in kind.__subclasses__():
        if child.__module__ == errors_module.__name__:
            found += _tree(child)
    return found


def _readme_rows() -> list[tuple[str, str, int, int]]:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(MARK))
    body = lines[start + 1 :]
    assert body[0] == "| code | error class | meaning | CLI exit | HTTP status |"
    assert body[1] == "|---|---|---|---|---|"
    rows = []
    for line in body[2:]:
        if not line.startswith("|"):
            break
        match = ROW.match(line)
        assert match, f"malformed row in the README's error table: {line!r}"
        assert match["meaning"].strip(), line
        rows.append((match["code"], match["cls"], int(match["exit"]), int(match["status"])))
    return rows


def test_the_readme_table_is_the_exception_tree() -> None:
    derived = [(k.code, k.__name__, k.exit_code, http_status(k)) for k in _tree(ConsentryError)]
    assert _readme_rows() == derived


def test_the_tree_walked_is_every_exported_error() -> None:
    assert {k.__name__ for k in _tree(ConsentryError)} == set(errors_module.__all__)


def test_codes_are_snake_case_and_inherited_unless_declared() -> None:
    for kind in _tree(ConsentryError):
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", kind.code), kind
    assert NotFoundError.code == "not_found" and GrantRevokedError.code == "refused"
    local = type("LocalNotFound", (NotFoundError,), {})
    assert local.code == "not_found" and http_status(local) == 404
