"""The one exception tree: messages, hints, exit codes, and the CLI's rendering."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import consentry
from consentry import errors
from consentry.errors import ConfigError, ConsentryError, InputError, NotFoundError

ERROR_CLASSES = [
    obj for _, obj in inspect.getmembers(errors, inspect.isclass) if issubclass(obj, ConsentryError)
]


def test_every_error_class_is_in_errors_all_and_in_the_public_api() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert names == set(errors.__all__)
    assert names <= set(consentry.__all__), sorted(names - set(consentry.__all__))


def test_every_error_has_an_exit_code_of_one_or_two() -> None:
    for cls in ERROR_CLASSES:
        assert cls.exit_code in (1, 2), cls


def test_the_hint_is_apart_from_the_message() -> None:
    exc = NotFoundError("no subject 'ada'", hint="see 'consentry subject list'")
    assert str(exc) == "no subject 'ada'"
    assert exc.message == "no subject 'ada'"
    assert exc.hint == "see 'consentry subject list'"
    assert InputError("bad").hint is None
    assert InputError("bad", hint="   ").hint is None  # blank advice is no advice


def test_an_error_raised_with_a_hint_survives_being_reraised_as_its_class() -> None:
    with pytest.raises(ConfigError) as raised:
        try:
            raise ConfigError("no registry at /x", hint="run 'consentry init'")
        except ConfigError:
            raise
    assert raised.value.hint == "run 'consentry init'"


def test_the_cli_prints_the_message_then_the_hint_on_stderr(tmp_path: Path) -> None:
    home = tmp_path / "nowhere"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from consentry.cli.main import run; run()",
            "subject",
            "list",
            "--home",
            str(home),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == ConfigError.exit_code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-2] == f"error: no registry at {home}"
    assert lines[-1] == f"hint: run 'consentry init --home {home}' first"
    assert result.stdout == ""
