"""Operator commands of issue 16 through the real ``consentry`` command (a subprocess)
on a real SQLite registry: the erase warning fitted to a subject who opted out, and a
grantee's API key rotated and the grantee disabled."""

from __future__ import annotations

from pathlib import Path

import pytest

from consentry.errors import SignatureError
from consentry.registry.store import Registry
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


def _authenticates(cli: Cli, api_key: str) -> str | None:
    """The grantee id ``api_key`` opens in a fresh process's registry, else None."""
    with Registry.open(cli.home, cli.db_url) as registry:
        try:
            return registry.authenticate_grantee(api_key).id
        except SignatureError:
            return None


def test_a_rotated_key_replaces_the_old_one_and_disabling_shuts_every_key_out(
    cli: Cli,
) -> None:
    added = cli.json("grantee", "add", "Studio")
    assert isinstance(added, dict)
    grantee, first = added["id"], added["api_key"]
    assert _authenticates(cli, first) == grantee

    text = cli("grantee", "rotate-key", "Studio", "--reason", "laptop stolen")
    assert text.code == 0, text.err
    second = text.out.split("API key:")[1].split()[0]
    assert "not shown again" in text.err
    assert _authenticates(cli, first) is None  # the old key is refused
    assert _authenticates(cli, second) == grantee
    rotated = cli.json("grantee", "rotate-key", grantee)
    assert isinstance(rotated, dict) and rotated["action"] == "rotate"
    third = rotated["api_key"]
    assert rotated["grantee"] == grantee and third not in (first, second)
    assert _authenticates(cli, second) is None and _authenticates(cli, third) == grantee

    no_reason = cli("grantee", "disable", "Studio")
    assert no_reason.code == 2 and _authenticates(cli, third) == grantee
    disabled = cli.json("grantee", "disable", "Studio", "--reason", "contract ended")
    assert isinstance(disabled, dict) and disabled["action"] == "disable"
    assert disabled["reason"] == "contract ended"
    assert _authenticates(cli, third) is None
    again = cli("grantee", "rotate-key", "Studio")  # final: no key can be issued again
    assert again.code != 0 and "disabled" in again.err and "Traceback" not in again.err
    assert _authenticates(cli, third) is None
    assert "OK:" in cli.ok("log", "verify")  # both changes are signed entries
