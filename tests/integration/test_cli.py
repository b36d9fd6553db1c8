"""The ``consentry`` command, run as a subprocess against real databases."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from consentry import Registry
from tests.support.cli import Cli, assert_one_line_error, initialised


@pytest.fixture
def cli(tmp_path: Path, sqlite_url: str) -> Cli:
    """A CLI over a fresh SQLite registry (the CLI layer is the same on every backend)."""
    return initialised(tmp_path / "home", sqlite_url)


@pytest.fixture
def cli_any_db(tmp_path: Path, db_url: str) -> Cli:
    """A CLI over a fresh registry on SQLite and on PostgreSQL."""
    return initialised(tmp_path / "home", db_url)


def test_registry_flow_end_to_end(cli_any_db: Cli, tmp_path: Path) -> None:
    cli = cli_any_db
    subject = cli.ok("subject", "add", "Ada Lovelace", "--alias", "Ada").strip()
    assert subject.startswith("sub_")
    grantee = cli.json("grantee", "add", "Studio")
    assert isinstance(grantee, dict) and grantee["api_key"].startswith("csk_")
    evidence = tmp_path / "release.pdf"
    evidence.write_bytes(b"%PDF signed release")
    grant_id = cli.ok(
        "grant",
        "Ada Lovelace",
        "--to",
        "Studio",
        "--purpose",
        "restore",
        "--purpose",
        "generate",
        "--until",
        "2099-01-01",
        "--evidence",
        str(evidence),
    ).strip()
    assert grant_id.startswith("grt_")
    grants = cli.json("grants", "--subject", subject, "--active")
    assert isinstance(grants, list) and [g["id"] for g in grants] == [grant_id]
    assert grants[0]["purposes"] == ["generate", "restore"]
    assert grants[0]["grantee"] == grantee["id"]
    cli.ok("revoke", grant_id, "--reason", "subject withdrew")
    assert cli.json("grants", "--active") == []
    shown = cli.json("subject", "show", "Ada Lovelace")
    assert isinstance(shown, dict) and shown["grants"][0]["status"] == "revoked"
    listed = cli.json("subject", "list")
    assert isinstance(listed, list) and listed[0]["aliases"] == ["Ada"]
    assert "OK: 5 entries" in cli.ok("log", "verify")
    verdict = cli.json("log", "verify")
    assert isinstance(verdict, dict) and verdict["size"] == 5
    assert verdict["entries_per_s"] > 0 and verdict["seconds"] > 0  # the rate it reports


def test_key_files_are_private(cli: Cli) -> None:
    assert stat.S_IMODE((cli.home / "keys" / "operator.key").stat().st_mode) == 0o600


def test_proof_verifies_offline_with_only_the_public_key(cli: Cli, tmp_path: Path) -> None:
    cli.ok("subject", "add", "Ada")
    proof = tmp_path / "proof.json"
    proof.write_text(cli.ok("log", "proof", "1", "--json"))
    public = cli.home / "keys" / "operator.pub"
    offline = Cli(tmp_path / "elsewhere")  # no registry there: verification is offline
    verified = offline("log", "verify-proof", str(proof), "--public-key", str(public), "--json")
    assert verified.code == 0, verified.err
    assert json.loads(verified.out)["tree_size"] == 2
    stranger = tmp_path / "stranger"
    offline("keys", "generate", str(stranger))
    refused = offline("log", "verify-proof", str(proof), "--public-key", f"{stranger}.pub")
    assert_one_line_error(refused, 1, "not signed by any of the given public keys")


def test_consistency_proof_round_trip(cli: Cli, tmp_path: Path) -> None:
    old = tmp_path / "old.checkpoint"
    old.write_text(cli.ok("log", "checkpoint"))
    cli.ok("subject", "add", "Ada")
    cli.ok("subject", "add", "Bob")
    bundle = tmp_path / "consistency.json"
    bundle.write_text(cli.ok("log", "consistency", str(old), "--json"))
    out = cli.ok(
        "log", "verify-proof", str(bundle), "--public-key", str(cli.home / "keys" / "operator.pub")
    )
    assert "extends the tree of size 1" in out


def test_subject_key_flow(cli: Cli, tmp_path: Path) -> None:
    key = tmp_path / "ada.key"
    cli.ok("keys", "generate", str(key))
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cli.ok("subject", "add", "Ada", "--public-key", f"{key}.pub")
    cli.ok("grantee", "add", "Studio")
    refused = cli("grant", "Ada", "--to", "Studio", "--purpose", "restore")
    assert_one_line_error(refused, 1, "--subject-key")
    grant_id = cli.ok(
        "grant", "Ada", "--to", "Studio", "--purpose", "restore", "--subject-key", str(key)
    ).strip()
    cli.ok("revoke", grant_id, "--reason", "no", "--subject-key", str(key))
    cli.ok("log", "verify")


def test_key_rotation_from_cli(cli: Cli) -> None:
    cli.ok("subject", "add", "Ada")
    rotated = cli.json("keys", "rotate")
    assert isinstance(rotated, dict) and rotated["old_key_id"] != rotated["new_key_id"]
    keys = cli.json("keys", "list")
    assert isinstance(keys, list) and keys[0]["retired_at_index"] == rotated["log_index"]
    cli.ok("subject", "add", "Bob")
    cli.ok("log", "verify")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["grant", "nobody", "--to", "Studio", "--purpose", "restore"], "no subject"),
        (["grant", "Ada", "--to", "nobody", "--purpose", "restore"], "no grantee"),
        (["grant", "Ada", "--to", "Studio", "--purpose", "steal"], "unknown purpose"),
        (["grant", "Ada", "--to", "Studio", "--purpose", "restore", "--until", "soon"], "ISO 8601"),
        (
            ["grant", "Ada", "--to", "Studio", "--purpose", "restore", "--evidence", "/nope"],
            "cannot read evidence",
        ),
        (["revoke", "grt_missing", "--reason", "x"], "no grant"),
        (["log", "proof", "99"], "not covered"),
        (["subject", "add", "  "], "non-empty"),
    ],
)
def test_input_errors_exit_2_with_one_line(cli: Cli, args: list[str], fragment: str) -> None:
    with Registry.open(cli.home) as registry:
        registry.add_subject("Ada")
        registry.add_grantee("Studio")
        registry.checkpoint()
        size_before = registry.log_size()
    result = cli(*args)
    assert_one_line_error(result, 2, fragment)
    with Registry.open(cli.home) as registry:
        assert registry.log_size() == size_before


def test_usage_error_exits_2(cli: Cli) -> None:
    assert cli("grant", "Ada").code == 2
    assert cli("no-such-command").code == 2


def test_missing_registry_is_a_clear_error(tmp_path: Path) -> None:
    result = Cli(tmp_path / "empty")("subject", "list")
    assert_one_line_error(result, 2, "consentry init")


def test_log_verify_names_the_tampered_record(cli_any_db: Cli, db_url: str) -> None:
    cli = cli_any_db
    cli.ok("subject", "add", "Ada")
    cli.ok("grantee", "add", "Studio")
    grant_id = cli.ok("grant", "Ada", "--to", "Studio", "--purpose", "restore").strip()
    _execute(db_url, 'UPDATE grants SET purposes_json = \'["generate", "restore", "train"]\'')
    result = cli("log", "verify")
    assert result.code == 1
    assert grant_id in result.err and "purposes" in result.err
    verdict = cli("log", "verify", "--json")
    assert verdict.code == 1 and json.loads(verdict.out)["ok"] is False


def _execute(db_url: str, sql: str) -> None:
    if db_url.startswith("sqlite:///"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql)
        return
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.encode())
