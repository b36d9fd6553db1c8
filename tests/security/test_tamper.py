"""Rows edited, inserted or deleted behind the log's back are named by ``verify_log``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from consentry.errors import RetiredKeyError
from consentry.registry.models import Grant, Grantee, OperatorKey, Prior, Revocation, Subject
from consentry.registry.signing import SigningKey, sha256_hex
from consentry.registry.statements import format_time
from tests.security.conftest import (
    OTHER_SHA,
    T0,
    World,
    assert_ok,
    assert_reported,
    new_id,
    raw,
    raw_insert,
    row_values,
)

ROGUE = SigningKey.generate()


@dataclass(frozen=True)
class Edit:
    """UPDATE ``table`` SET ``column`` = value WHERE ``key`` = the record's id."""

    table: str
    column: str
    value: Callable[[World], object]
    record: Callable[[World], str]
    kind: str
    fragment: str  # what the problem must say (the differing field, mostly)
    key: str = "id"


EDITS: dict[str, Edit] = {
    "subjects.display_name": Edit(
        "subjects", "display_name", lambda w: "Mallory", lambda w: w.alice.id,
        "subject", "in display_name"),
    "subjects.aliases": Edit(
        "subjects", "aliases_json", lambda w: json.dumps(["al", "mallory"]), lambda w: w.alice.id,
        "subject", "in aliases"),
    "subjects.public_key-swapped": Edit(
        "subjects", "public_key", lambda w: ROGUE.public_hex, lambda w: w.alice.id,
        "subject", "in public_key"),
    "subjects.public_key-dropped": Edit(
        "subjects", "public_key", lambda w: None, lambda w: w.alice.id,
        "subject", "in public_key"),
    "grantees.name": Edit(
        "grantees", "name", lambda w: "Evil Corp", lambda w: w.acme.id, "grantee", "in name"),
    "grantees.api_key_sha256": Edit(
        "grantees", "api_key_sha256", lambda w: sha256_hex(b"csk_attacker"), lambda w: w.acme.id,
        "grantee", "in api_key_sha256"),
    "grants.purposes-widened": Edit(
        "grants", "purposes_json", lambda w: json.dumps(["generate", "restore", "train"]),
        lambda w: w.grant_a.id, "grant", "in purposes"),
    "grants.not_after-moved": Edit(
        "grants", "not_after", lambda w: format_time(T0 + timedelta(days=3650)),
        lambda w: w.grant_a.id, "grant", "in not_after"),
    "grants.not_after-removed": Edit(
        "grants", "not_after", lambda w: None, lambda w: w.grant_a.id, "grant", "in not_after"),
    "grants.not_before-moved": Edit(
        "grants", "not_before", lambda w: format_time(T0 - timedelta(days=365)),
        lambda w: w.grant_a.id, "grant", "in not_before"),
    "grants.subject-repointed": Edit(
        "grants", "subject_id", lambda w: w.bob.id, lambda w: w.grant_a.id, "grant", "in subject"),
    "grants.priors-changed": Edit(
        "grants", "priors_json", lambda w: json.dumps([OTHER_SHA]), lambda w: w.grant_a.id,
        "grant", "in priors"),
    "grants.priors-emptied": Edit(
        "grants", "priors_json", lambda w: "[]", lambda w: w.grant_a.id, "grant", "in priors"),
    "grants.log_index": Edit(
        "grants", "log_index", lambda w: 1, lambda w: w.grant_a.id, "grant",
        "row claims log index 1"),
    "revocations.reason": Edit(
        "revocations", "reason", lambda w: "fraud", lambda w: w.revocation.id,
        "revocation", "in reason"),
    "revocations.grant-repointed": Edit(
        "revocations", "grant_id", lambda w: w.grant_a.id, lambda w: w.revocation.id,
        "revocation", "in grant"),
    "priors.sha256": Edit(
        "priors", "sha256", lambda w: OTHER_SHA, lambda w: w.prior.id, "prior", "in sha256"),
    "priors.size": Edit(
        "priors", "size", lambda w: 99, lambda w: w.prior.id, "prior", "in size"),
    "keys.public_key": Edit(
        "keys", "public_key", lambda w: ROGUE.public_hex, lambda w: w.operator.key_id,
        "key", "in public_key", key="key_id"),
}


@pytest.mark.parametrize("case", EDITS)
def test_tampered_row_is_reported(world: World, case: str) -> None:
    w = world
    edit = EDITS[case]
    assert_ok(w.registry.verify_log())
    record = edit.record(w)
    changed = raw(
        w.registry,
        f"UPDATE {edit.table} SET {edit.column} = :v WHERE {edit.key} = :r",
        v=edit.value(w),
        r=record,
    )
    assert changed == 1
    index = w.index_of(record)
    assert_reported(w.registry.verify_log(), record,
                    f"{edit.kind} {record} (log index {index})", edit.fragment)


def _unlogged_subject(w: World) -> tuple[str, str, dict[str, object]]:
    row = Subject(id=new_id("sub"), display_name="Ghost", aliases_json="[]",
                  created_at=format_time(T0), log_index=3)
    return "subjects", row.id, row_values(row)


def _unlogged_grantee(w: World) -> tuple[str, str, dict[str, object]]:
    row = Grantee(id=new_id("gte"), name="Shadow Inc", api_key_sha256=sha256_hex(b"csk_x"),
                  created_at=format_time(T0), log_index=3)
    return "grantees", row.id, row_values(row)


def _unlogged_grant(w: World) -> tuple[str, str, dict[str, object]]:
    row = Grant(id=new_id("grt"), subject_id=w.alice.id, grantee_id=w.acme.id,
                purposes_json='["train"]', priors_json="[]", not_before=format_time(T0),
                constraints_json="{}", issuer_key_id=w.operator.key_id,
                subject_key_id=w.alice_key.key_id, created_at=format_time(T0), log_index=6)
    return "grants", row.id, row_values(row)


def _unlogged_revocation(w: World) -> tuple[str, str, dict[str, object]]:
    row = Revocation(id=new_id("rev"), grant_id=w.grant_a.id, reason="ghost",
                     issuer_key_id=w.operator.key_id, subject_key_id=w.alice_key.key_id,
                     created_at=format_time(T0), log_index=7)
    return "revocations", row.id, row_values(row)


def _unlogged_prior(w: World) -> tuple[str, str, dict[str, object]]:
    row = Prior(id=new_id("pri"), subject_id=w.alice.id, kind="lora", base_model_id="x",
                sha256=OTHER_SHA, size=1, created_at=format_time(T0), log_index=4)
    return "priors", row.id, row_values(row)


def _unlogged_key(w: World) -> tuple[str, str, dict[str, object]]:
    row = OperatorKey(key_id=ROGUE.key_id, public_key=ROGUE.public_hex,
                      created_at=format_time(T0), log_index=0)
    return "keys", row.key_id, row_values(row)


UNLOGGED: dict[str, tuple[str, Callable[[World], tuple[str, str, dict[str, object]]]]] = {
    "subject": ("subject", _unlogged_subject),
    "grantee": ("grantee", _unlogged_grantee),
    "grant": ("grant", _unlogged_grant),
    "revocation": ("revocation", _unlogged_revocation),
    "prior": ("prior", _unlogged_prior),
    "key": ("key", _unlogged_key),
}


@pytest.mark.parametrize("case", UNLOGGED)
def test_row_inserted_without_log_entry_is_reported(world: World, case: str) -> None:
    w = world
    kind, make = UNLOGGED[case]
    table, record, values = make(w)
    assert_ok(w.registry.verify_log())
    raw_insert(w.registry, table, values)
    assert_reported(w.registry.verify_log(), record,
                    f"{kind} {record}: row has no log entry")


def test_deleted_revocation_row_is_reported(world: World) -> None:
    w = world
    assert_ok(w.registry.verify_log())
    index = w.index_of(w.revocation.id)
    assert raw(w.registry, "DELETE FROM revocations WHERE id = :r", r=w.revocation.id) == 1
    # the attack works at runtime: the revoked grant looks active again ...
    assert w.registry.check_grant(w.grant_r.id).id == w.grant_r.id
    # ... but the log still holds the revocation
    assert_reported(w.registry.verify_log(), w.revocation.id,
                    f"revocation {w.revocation.id} (log index {index})", "row missing")


def test_deleted_grant_row_is_reported(world: World) -> None:
    w = world
    index = w.index_of(w.grant_a.id)
    assert raw(w.registry, "DELETE FROM grants WHERE id = :r", r=w.grant_a.id) == 1
    assert_reported(w.registry.verify_log(), w.grant_a.id,
                    f"grant {w.grant_a.id} (log index {index})", "row missing")


def test_swapped_subject_key_then_grant_is_reported(world: World) -> None:
    """Swap Alice's key in the table, then grant with the attacker's key through the API."""
    w = world
    raw(w.registry, "UPDATE subjects SET public_key = :k WHERE id = :s",
        k=ROGUE.public_hex, s=w.alice.id)
    grant = w.registry.grant(w.alice.id, w.acme.id, ["train"], subject_key=ROGUE)
    report = w.registry.verify_log()
    assert_reported(report, w.alice.id, "in public_key")
    assert_reported(report, grant.id, f"grant {grant.id}",
                    "lacks the signature of the subject's key")


def test_key_marked_retired_without_a_rotation_is_reported(world: World) -> None:
    """``keys.retired_at_index`` set on the only operator key (no rotation in the log):
    the registry stops signing, so the edit must not pass as a clean log."""
    w = world
    assert raw(w.registry, "UPDATE keys SET retired_at_index = 3 WHERE key_id = :k",
               k=w.operator.key_id) == 1
    with pytest.raises(RetiredKeyError):
        w.registry.add_subject("Carol Example")
    assert_reported(w.registry.verify_log(), w.operator.key_id)
