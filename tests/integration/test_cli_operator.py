"""Operator commands of issue 16 through the real ``consentry`` command (a subprocess)
on a real SQLite registry: the erase warning fitted to a subject who opted out, and a
grantee's API key rotated and the grantee disabled."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import Cli, initialised

OPT_OUT_ADVICE = "use 'consentry subject opt-out' instead"


@pytest.fixture
def cli(tmp_path: Path, sqlite_url: str) -> Cli:
    runner = initialised(tmp_path / "home", sqlite_url)
    runner.ok("subject", "add", "Ada Lovelace")
    runner.ok("subject", "add", "Grace Hopper")
    return runner


def _warning(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_erasing_a_subject_who_opted_out_does_not_advise_the_opt_out(cli: Cli) -> None:
    cli.ok("subject", "opt-out", "Ada Lovelace", "--yes")
    asked = cli("subject", "erase", "Ada Lovelace")  # without --yes: warns, changes nothing
    assert asked.code == 2 and "run again with --yes" in asked.err
    warning = _warning(asked.err)
    assert OPT_OUT_ADVICE not in warning
    assert "opted out" in warning and "FACE" in warning and "ALLOWED" in warning
    erased = cli.json("subject", "erase", "Ada Lovelace", "--yes")
    assert isinstance(erased, dict) and erased["warning"] == warning.removeprefix("warning: ")


def test_erasing_a_subject_who_did_not_opt_out_still_advises_it(cli: Cli) -> None:
    asked = cli("subject", "erase", "Grace Hopper")
    assert asked.code == 2
    assert OPT_OUT_ADVICE in _warning(asked.err)
