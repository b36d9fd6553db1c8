"""Everyday use of the ``consentry`` command (issue 16), run as a subprocess against a
real SQLite registry: JSON errors, whole-day dates, priors by id or SHA-256, aliases
as subject references, names beside ids, a readable ``log show``, one JSON vocabulary
and errors that name the file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from tests.support.cli import Cli, assert_one_line_error, initialised


@pytest.fixture
def cli(tmp_path: Path, sqlite_url: str) -> Cli:
    runner = initialised(tmp_path / "home", sqlite_url)
    runner.ok("subject", "add", "Ada Lovelace", "--alias", "Ada")
    runner.ok("grantee", "add", "Studio")
    return runner


def _weights(path: Path, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    data = save({"lora_down.weight": rng.standard_normal((4, 8)).astype(np.float32)})
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_with_json_an_error_is_json_on_stdout_and_stderr_stays_empty(cli: Cli) -> None:
    result = cli("subject", "show", "Nobody", "--json")
    assert result.code == 2 and result.err == ""
    error = json.loads(result.out)["error"]
    assert error["code"] == "not_found"
    assert "Nobody" in error["message"] and "subject list" in error["hint"]
    text = cli("subject", "show", "Nobody")  # the honest text form is unchanged
    assert_one_line_error(text, 2, "error: no subject 'Nobody'")
    assert text.out == "" and text.err.splitlines()[1].startswith("hint: ")


def test_a_bare_until_date_is_the_whole_day_and_a_timestamp_is_exact(cli: Cli) -> None:
    whole_day = cli.json("grant", "Ada", "--to", "Studio", "--purpose", "generate",
                         "--from", "2026-01-01", "--until", "2027-06-30")  # fmt: skip
    assert isinstance(whole_day, dict)
    assert whole_day["not_before"] == "2026-01-01T00:00:00Z"
    assert whole_day["not_after"] == "2027-07-01T00:00:00Z"
    exact = cli.json("grant", "Ada", "--to", "Studio", "--purpose", "generate",
                     "--until", "2027-06-30T12:00:00Z")  # fmt: skip
    assert isinstance(exact, dict) and exact["not_after"] == "2027-06-30T12:00:00Z"
    assert "whole day" in cli.ok("grant", "--help")


def test_priors_are_accepted_by_id_or_sha256_in_grants_and_jobs(cli: Cli, tmp_path: Path) -> None:
    sha = _weights(tmp_path / "ada.safetensors")
    prior_id = cli.ok("prior", "add", "Ada", str(tmp_path / "ada.safetensors"), "--kind", "lora")
    prior_id = prior_id.strip()
    by_id = cli.json("grant", "Ada", "--to", "Studio", "--purpose", "generate",
                     "--prior", prior_id)  # fmt: skip
    by_sha = cli.json("grant", "Ada", "--to", "Studio", "--purpose", "generate",
                      "--prior", sha.upper())  # fmt: skip
    assert isinstance(by_id, dict) and isinstance(by_sha, dict)
    assert by_id["priors"] == by_sha["priors"] == [sha]
    unknown = cli("grant", "Ada", "--to", "Studio", "--purpose", "generate", "--prior", "pri_x")
    assert_one_line_error(unknown, 2, "no prior 'pri_x'")
    for ref in (prior_id, sha):
        receipt = cli.json("check", "--as", "Studio", "--purpose", "generate",
                           "--prior", ref, "--prompt", "a portrait")  # fmt: skip
        assert isinstance(receipt, dict) and receipt["allowed"] is True, receipt
        assert any(prior_id in reason for reason in receipt["reasons"])


def test_a_unique_alias_names_a_subject_and_a_shared_one_is_ambiguous(cli: Cli) -> None:
    ada = cli.json("subject", "show", "Ada Lovelace")
    assert isinstance(ada, dict)
    by_alias = cli.json("subject", "show", "Ada")
    assert isinstance(by_alias, dict) and by_alias["id"] == ada["id"]
    cli.ok("grant", "Ada", "--to", "Studio", "--purpose", "restore")
    cli.ok("subject", "add", "Ada Byron", "--alias", "Ada")
    ambiguous = cli("subject", "show", "Ada")
    assert_one_line_error(ambiguous, 2, "2 subjects are named 'Ada'")
    refused = cli("grant", "Ada", "--to", "Studio", "--purpose", "restore")
    assert_one_line_error(refused, 2, "by name or alias")


def test_grants_and_subject_show_print_names_beside_ids(cli: Cli) -> None:
    grant_id = cli.ok("grant", "Ada", "--to", "Studio", "--purpose", "restore").strip()
    listed = cli.ok("grants")
    assert grant_id in listed and "Ada Lovelace (sub_" in listed and "Studio (gte_" in listed
    grants = cli.json("grants")
    assert isinstance(grants, list)
    assert grants[0]["subject_name"] == "Ada Lovelace" and grants[0]["grantee_name"] == "Studio"
    shown = cli.ok("subject", "show", "Ada")
    assert f"{grant_id} to Studio (gte_" in shown
    shown_json = cli.json("subject", "show", "Ada")
    assert isinstance(shown_json, dict) and shown_json["grants"][0]["grantee_name"] == "Studio"


def test_log_show_prints_the_signed_statement_decoded(cli: Cli) -> None:
    entry = cli.json("log", "show", "1")
    assert isinstance(entry, dict) and entry["kind"] == "subject"
    assert entry["statement"]["display_name"] == "Ada Lovelace"
    assert entry["statement"]["type"] == "consentry.subject"
    assert "payload" in entry["leaf"]["envelope"]  # the leaf as logged is still there


def test_check_json_speaks_the_vocabulary_and_keeps_the_old_names(cli: Cli) -> None:
    grant_id = cli.ok("grant", "Ada", "--to", "Studio", "--purpose", "generate").strip()
    receipt = cli.json("check", "--as", "Studio", "--purpose", "generate",
                       "--prompt", "a portrait of Ada Lovelace")  # fmt: skip
    assert isinstance(receipt, dict)
    assert receipt["grant_ids"] == receipt["grants"] == [grant_id]
    assert receipt["decision_id"] == receipt["decision"]
    assert receipt["subject_ids"] == receipt["subjects"]


def test_a_corrupt_image_error_names_the_file_once(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 4)
    result = cli("verify", str(bad))
    assert_one_line_error(result, 2, f"error: {bad}: corrupt or truncated PNG")
    assert "<bytes>" not in result.err
    as_json = cli("verify", str(bad), "--json")
    assert as_json.code == 2 and as_json.err == ""
    assert str(bad) in json.loads(as_json.out)["error"]["message"]
    enrolled = cli("subject", "enroll", "Ada", str(bad))
    assert enrolled.code == 2 and enrolled.err.count(str(bad)) == 1, enrolled.err


def test_check_reasons_name_the_subject_and_grantee_beside_their_ids(cli: Cli) -> None:
    cli.ok("grant", "Ada", "--to", "Studio", "--purpose", "generate")
    subject = cli.json("subject", "show", "Ada")
    assert isinstance(subject, dict)
    text = cli.ok("check", "--as", "Studio", "--purpose", "generate",
                  "--prompt", "a portrait of Ada Lovelace")  # fmt: skip
    assert f"{subject['id']} (Ada Lovelace)" in text and "(Studio)" in text
