"""Limits from the law on grants, set per registry (consentry.registry.grant_policy):
the longest grant, a signed review date, evidence of consent; through the library,
the detached flow and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consentry.errors import ConfigError, InputError
from consentry.registry.detached import prepare_grant, sign_prepared, submit
from consentry.registry.grant_policy import GrantPolicy, policy_of
from consentry.registry.signing import Envelope, SigningKey
from consentry.registry.statements import parse_end_time
from consentry.registry.store import Registry
from tests.support.cli import assert_one_line_error, initialised

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
EVIDENCE = "ab" * 32


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.init(tmp_path / "home", f"sqlite:///{tmp_path}/r.db", clock=lambda: T0)
    reg.add_subject("Ada")
    reg.add_grantee("Studio")
    yield reg
    reg.close()


def _set(registry: Registry, policy: GrantPolicy) -> None:
    registry.home.write_config(registry.home.read_config() | policy.as_config())


def test_no_limits_unless_configured(registry: Registry) -> None:
    assert policy_of(registry.home) == GrantPolicy()
    grant = registry.grant("Ada", "Studio", ["restore"])  # no end, no evidence: as before
    assert grant.review_by is None


def test_the_longest_grant_is_enforced(registry: Registry) -> None:
    _set(registry, GrantPolicy(max_days=3650))
    with pytest.raises(InputError, match="limits grants to 3650 days") as caught:
        registry.grant("Ada", "Studio", ["restore"])
    # a bare --until date includes its whole day: the hint names the last day that fits
    assert caught.value.hint == "--until 2036-05-28 at the latest"
    assert parse_end_time("2036-05-28") <= T0 + timedelta(days=3650) < parse_end_time("2036-05-29")
    with pytest.raises(InputError, match="beyond this registry's limit"):
        registry.grant("Ada", "Studio", ["restore"], not_after=T0 + timedelta(days=3651))
    ok = registry.grant("Ada", "Studio", ["restore"], not_after=T0 + timedelta(days=3650))
    assert ok.not_after == "2036-05-29T12:00:00Z"


def test_a_review_date_is_signed_into_every_grant(registry: Registry) -> None:
    _set(registry, GrantPolicy(review_days=365))
    grant = registry.grant("Ada", "Studio", ["restore"])
    assert grant.review_by == "2027-06-01T12:00:00Z"
    registry.checkpoint()
    assert registry.verify_log().ok  # the statement carries it (rows compared to leaves)
    leaf = json.loads(registry.log.entry(grant.log_index).leaf_json)
    assert Envelope.from_json(leaf["envelope"]).statement["review_by"] == grant.review_by


def test_evidence_of_consent_can_be_required(registry: Registry) -> None:
    _set(registry, GrantPolicy(require_evidence=True))
    with pytest.raises(InputError, match="requires evidence"):
        registry.grant("Ada", "Studio", ["restore"])
    assert registry.grant("Ada", "Studio", ["restore"], evidence_sha256=EVIDENCE).evidence_sha256


def test_a_prepared_grant_meets_the_limits_in_force_when_submitted(tmp_path: Path) -> None:
    registry = Registry.init(tmp_path / "h", f"sqlite:///{tmp_path}/d.db", clock=lambda: T0)
    try:
        key = SigningKey.generate()
        ada = registry.add_subject("Ada", public_key=key.public_key)
        registry.add_grantee("Studio")
        _set(registry, GrantPolicy(review_days=30))
        signed = sign_prepared(prepare_grant(registry, ada.id, "Studio", ["restore"]), key, T0)
        _set(registry, GrantPolicy(review_days=90))  # the registry changed its rule since
        with pytest.raises(InputError, match="review date"):
            submit(registry, signed)
        _set(registry, GrantPolicy(review_days=30))
        assert submit(registry, signed).review_by == "2026-07-01T12:00:00Z"
    finally:
        registry.close()


def test_malformed_settings_are_config_errors() -> None:
    for values in ({"grant_max_days": "ten"}, {"grant_max_days": "0"},
                   {"grant_require_evidence": "maybe"}):  # fmt: skip
        with pytest.raises(ConfigError):
            GrantPolicy.from_config(values)


def test_the_cli_sets_shows_and_enforces_the_policy(tmp_path: Path) -> None:
    cli = initialised(tmp_path / "home", f"sqlite:///{tmp_path}/r.db")
    unset = {"grant_max_days": None, "grant_review_days": None, "grant_require_evidence": False}
    assert cli.json("policy", "show") == unset
    cli.ok("policy", "set", "--max-days", "3650", "--review-days", "365", "--require-evidence")
    assert cli.json("policy", "show")["grant_max_days"] == 3650  # type: ignore[index]
    cli.ok("subject", "add", "Ada")
    cli.ok("grantee", "add", "Studio")
    assert_one_line_error(cli("grant", "Ada", "--to", "Studio", "--purpose", "restore"), 2,
                          "limits grants to 3650 days")  # fmt: skip
    (tmp_path / "release.pdf").write_bytes(b"%PDF-1.4 signed release")
    grant = cli.json("grant", "Ada", "--to", "Studio", "--purpose", "restore", "--until",
                     "2030-01-01", "--evidence", str(tmp_path / "release.pdf"))  # fmt: skip
    assert grant["review_by"] is not None  # type: ignore[index]
    assert cli.json("grants", "--review-due") == []  # its review date is a year away
    assert_one_line_error(cli("policy", "set", "--max-days", "-3"), 2, "between 1 and 36500")
