"""CLI behaviour the README relies on: duplicate names warn, ``verify-proof --home``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import Cli, assert_one_line_error


def test_a_duplicate_display_name_warns_and_stays_usable_by_id(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    first = cli("subject", "add", "Ada Lovelace")
    assert first.code == 0 and first.err == ""
    second = cli("subject", "add", "Ada Lovelace")
    assert second.code == 0, second.err
    assert second.err.startswith("warning:") and first.out.strip() in second.err
    assert second.out.strip() != first.out.strip()
    cli.ok("grantee", "add", "Studio")
    by_name = cli("grant", "Ada Lovelace", "--to", "Studio", "--purpose", "restore")
    assert_one_line_error(by_name, 2, "2 subjects are named")
    assert cli.ok("grant", second.out.strip(), "--to", "Studio", "--purpose", "restore")
    other = cli("subject", "add", "Grace Hopper")
    assert other.code == 0 and other.err == ""


def test_verify_proof_takes_the_home_for_its_key(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    cli.ok("subject", "add", "Ada Lovelace")
    proof = tmp_path / "proof.json"
    proof.write_text(cli.ok("log", "proof", "0", "--json"))
    ok = cli("log", "verify-proof", str(proof), "--home", str(cli.home), home=False)
    assert ok.code == 0, ok.err
    assert ok.out.startswith("OK: entry 0")
    bundle = json.loads(proof.read_text())
    other = Cli(tmp_path / "other")
    other.ok("init")
    refused = other("log", "verify-proof", str(proof))  # another registry's key: refused
    assert refused.code != 0 and "Traceback" not in refused.err
    assert bundle["index"] == 0
    missing = cli("log", "verify-proof", str(proof), "--home", str(tmp_path / "none"), home=False)
    assert_one_line_error(missing, 2, "operator.pub")
