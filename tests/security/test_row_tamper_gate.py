"""Consent facts come from signed log entries, never from rows (issue 11, class 4).

An attacker with SQL access and no operator key edits, forges or deletes rows. The
gate (``Gateway.check``) and ``verify_media`` must not be opened by any of it: the
facts they use are the signed statements, and a row that contradicts them is an
integrity error (refused, logged, CLI exit 2). Every test also shows that the same
job with a real, signed grant is allowed, so a gate that refuses everything fails.

Each gate attack runs twice over: through a gateway built before the tampering (a
long-lived process whose follower already holds the facts) and through a fresh
process (a new Registry over the tampered database, following the log from 0).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from consentry.errors import LogIntegrityError
from consentry.faces.engine import FaceEngine
from consentry.faces.engines import get_engine
from consentry.gate import CheckRequest, Gateway, Receipt, is_integrity_failure
from consentry.identity.enroll import enroll_photos
from consentry.provenance.certs import create_dev_pki
from consentry.provenance.sign import sign_output
from consentry.provenance.verify import VerifyResult, verify_media
from consentry.registry.decisions import get_decision, record_decision
from consentry.registry.models import Decision, Grant
from consentry.registry.prior_files import prior_store_path
from consentry.registry.signing import Envelope, sha256_hex
from consentry.registry.statements import format_time, statement_of
from consentry.registry.store import Registry
from consentry.server import create_app, hash_admin_key
from tests.integration._live import live_server
from tests.security.conftest import (
    T0,
    World,
    append_leaf,
    assert_ok,
    new_id,
    raw,
    raw_insert,
    row_values,
)
from tests.support.cli import Cli
from tests.support.media import make_image

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"
JPEG = "image/jpeg"
Undo = Callable[[], None]


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return get_engine("sface")


def reopen(w: World) -> Registry:
    """A second process's view: a new Registry (and follower) over the same database."""
    return Registry.open(w.registry.home.root, w.registry.db.url, clock=w.clock)


def set_column(w: World, table: str, column: str, value: object, record: str) -> Undo:
    """UPDATE one column of one row behind the log's back; returns the undo."""
    with w.registry.db.read() as session:
        (before,) = session.execute(
            text(f"SELECT {column} FROM {table} WHERE id = :r"), {"r": record}
        ).one()
    assert raw(w.registry, f"UPDATE {table} SET {column} = :v WHERE id = :r", v=value, r=record)

    def undo() -> None:
        raw(w.registry, f"UPDATE {table} SET {column} = :v WHERE id = :r", v=before, r=record)

    return undo


def delete_rows(w: World, table: str, where: str, **params: object) -> Undo:
    """DELETE rows behind the log's back; returns the undo (re-inserts them)."""
    with w.registry.db.read() as session:
        rows = [dict(r._mapping) for r in session.execute(
            text(f"SELECT * FROM {table} WHERE {where}"), params)]  # fmt: skip
    assert rows and raw(w.registry, f"DELETE FROM {table} WHERE {where}", **params) == len(rows)

    def undo() -> None:
        for row in rows:
            raw_insert(w.registry, table, row)

    return undo


def remove_index_caches(w: World) -> None:
    """A gateway on another machine has no index cache: it rebuilds from the rows."""
    for cache in (w.registry.home.root / "cache").glob("index-*.bin"):
        cache.unlink()


# -- the attacks on the gate ---------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    """``tamper(w, engine)`` applies the attack and returns (job, undo, honest grant)."""

    tamper: Callable[[World, FaceEngine], tuple[CheckRequest, Undo, Undo]]
    days: float = 0.0  # clock moved before the attack


def _widen_purpose(w: World, _: FaceEngine) -> tuple[CheckRequest, Undo, Undo]:
    undo = set_column(w, "grants", "purposes_json", json.dumps(["generate", "restore", "train"]),
                      w.grant_a.id)  # fmt: skip
    job = CheckRequest(w.acme.id, "train", prompt="a portrait of Alice Example")
    return job, undo, lambda: _grant(w, w.alice.id, ["train"], w.alice_key)


def _extend_expiry(w: World, _: FaceEngine) -> tuple[CheckRequest, Undo, Undo]:
    undo = set_column(w, "grants", "not_after", format_time(T0 + timedelta(days=3650)),
                      w.grant_a.id)  # fmt: skip
    job = CheckRequest(w.acme.id, "generate", prompt="a portrait of Alice Example")
    return job, undo, lambda: _grant(w, w.alice.id, ["generate"], w.alice_key)


def _remove_expiry(w: World, _: FaceEngine) -> tuple[CheckRequest, Undo, Undo]:
    undo = set_column(w, "grants", "not_after", None, w.grant_a.id)
    job = CheckRequest(w.acme.id, "generate", prompt="a portrait of Alice Example")
    return job, undo, lambda: _grant(w, w.alice.id, ["generate"], w.alice_key)


def _delete_revocation(w: World, _: FaceEngine) -> tuple[CheckRequest, Undo, Undo]:
    undo = delete_rows(w, "revocations", "id = :r", r=w.revocation.id)
    job = CheckRequest(w.acme.id, "generate", prompt="Bob Example at the beach")
    return job, undo, lambda: _grant(w, w.bob.id, ["generate"], w.bob_key)


def _repoint_grantee(w: World, _: FaceEngine) -> tuple[CheckRequest, Undo, Undo]:
    evil, _ = w.registry.add_grantee("Evil Corp")
    undo = set_column(w, "grants", "grantee_id", evil.id, w.grant_a.id)
    job = CheckRequest("Evil Corp", "generate", prompt="a portrait of Alice Example")
    return job, undo, lambda: _grant(w, w.alice.id, ["generate"], w.alice_key, evil.id)


def _repoint_subject(w: World, _: FaceEngine) -> tuple[CheckRequest, Undo, Undo]:
    undo = set_column(w, "grants", "subject_id", w.bob.id, w.grant_a.id)
    job = CheckRequest(w.acme.id, "generate", prompt="Bob Example at the beach")
    return job, undo, lambda: _grant(w, w.bob.id, ["generate"], w.bob_key)


def _forged_grant_row(w: World, _: FaceEngine) -> tuple[CheckRequest, Undo, Undo]:
    row = Grant(id=new_id("grt"), subject_id=w.alice.id, grantee_id=w.acme.id,
                purposes_json='["train"]', priors_json="[]", not_before=format_time(T0),
                constraints_json="{}", issuer_key_id=w.operator.key_id,
                subject_key_id=w.alice_key.key_id, created_at=format_time(T0),
                log_index=w.registry.log_size() - 1)  # fmt: skip
    raw_insert(w.registry, "grants", row_values(row))
    job = CheckRequest(w.acme.id, "train", prompt="a portrait of Alice Example")

    def undo() -> None:
        raw(w.registry, "DELETE FROM grants WHERE id = :r", r=row.id)

    return job, undo, lambda: _grant(w, w.alice.id, ["train"], w.alice_key)


def _carol(w: World) -> str:
    return w.registry.add_subject("Carol Sample", ["Caz Sample"]).id


def _edit_alias(w: World, _: FaceEngine) -> tuple[CheckRequest, Undo, Undo]:
    carol = _carol(w)
    undo = set_column(w, "subjects", "aliases_json", "[]", carol)
    job = CheckRequest(w.acme.id, "generate", prompt="a portrait of Caz Sample, smiling")
    return job, undo, lambda: _grant(w, carol, ["generate"])


def _edit_display_name(w: World, _: FaceEngine) -> tuple[CheckRequest, Undo, Undo]:
    carol = _carol(w)
    undo = set_column(w, "subjects", "display_name", "Nobody Inparticular", carol)
    job = CheckRequest(w.acme.id, "generate", prompt="a portrait of Carol Sample, smiling")
    return job, undo, lambda: _grant(w, carol, ["generate"])


def _obama(w: World, engine: FaceEngine) -> str:
    subject = w.registry.add_subject("Barack Obama")
    enroll_photos(w.registry, engine, subject.id, [DATA / "obama.jpg"])
    return subject.id


def _delete_embeddings(w: World, engine: FaceEngine) -> tuple[CheckRequest, Undo, Undo]:
    obama = _obama(w, engine)
    Gateway(w.registry, engine)  # an index (and its cache) built before the attack
    undo = delete_rows(w, "biometric_blobs", "subject_id = :s", s=obama)
    remove_index_caches(w)
    job = CheckRequest(w.acme.id, "restore", [DATA / "obama2.jpg"])
    return job, undo, lambda: _grant(w, obama, ["restore"])


def _delete_data_key(w: World, engine: FaceEngine) -> tuple[CheckRequest, Undo, Undo]:
    obama = _obama(w, engine)
    undo = delete_rows(w, "subject_data_keys", "subject_id = :s", s=obama)
    remove_index_caches(w)
    job = CheckRequest(w.acme.id, "restore", [DATA / "obama2.jpg"])
    return job, undo, lambda: _grant(w, obama, ["restore"])


def _replace_embedding(w: World, engine: FaceEngine) -> tuple[CheckRequest, Undo, Undo]:
    """Another person's encrypted embedding (a valid ciphertext) put in the row."""
    obama = _obama(w, engine)
    biden = w.registry.add_subject("Joe Biden")
    enroll_photos(w.registry, engine, biden.id, [DATA / "biden.jpg"])
    with w.registry.db.read() as session:
        ciphertext, sha = session.execute(text(
            "SELECT ciphertext, sha256 FROM biometric_blobs WHERE subject_id = :s"
            " AND kind = 'embedding'"), {"s": biden.id}).one()  # fmt: skip
        (blob_id,) = session.execute(text(
            "SELECT id FROM biometric_blobs WHERE subject_id = :s AND kind = 'embedding'"),
            {"s": obama}).one()  # fmt: skip
    undo_ct = set_column(w, "biometric_blobs", "ciphertext", ciphertext, blob_id)
    undo_sha = set_column(w, "biometric_blobs", "sha256", sha, blob_id)
    remove_index_caches(w)
    job = CheckRequest(w.acme.id, "restore", [DATA / "obama2.jpg"])

    def undo() -> None:
        undo_ct()
        undo_sha()

    return job, undo, lambda: _grant(w, obama, ["restore"])


def _repoint_prior(w: World, _: FaceEngine) -> tuple[CheckRequest, Undo, Undo]:
    """Alice's prior re-pointed to Bob, who granted the use of a prior of that hash."""
    content = b"alice's lora weights (row-tamper test)"
    sha = sha256_hex(content)
    prior = w.registry.add_prior(w.alice.id, "lora", "tiny-sd", sha256=sha, size=len(content))
    target = prior_store_path(w.registry, sha)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    w.registry.grant(w.bob.id, w.acme.id, ["generate"], priors=[sha], subject_key=w.bob_key)
    undo = set_column(w, "priors", "subject_id", w.bob.id, prior.id)
    job = CheckRequest(w.acme.id, "generate", prior=prior.id)

    def honest() -> None:
        w.registry.grant(w.alice.id, w.acme.id, ["generate"], priors=[sha],
                         subject_key=w.alice_key)  # fmt: skip

    return job, undo, honest


def _grant(
    w: World, subject: str, purposes: list[str], key: Any = None, grantee: str | None = None
) -> None:
    w.registry.grant(subject, grantee or w.acme.id, purposes, subject_key=key)


ATTACKS: dict[str, Attack] = {
    "widen-purpose": Attack(_widen_purpose),
    "extend-expiry": Attack(_extend_expiry, days=31),
    "remove-expiry": Attack(_remove_expiry, days=31),
    "delete-revocation": Attack(_delete_revocation),
    "repoint-grant-to-grantee": Attack(_repoint_grantee),
    "repoint-grant-to-subject": Attack(_repoint_subject),
    "forged-grant-row": Attack(_forged_grant_row),
    "repoint-prior-to-subject": Attack(_repoint_prior),
    "edited-alias": Attack(_edit_alias),
    "edited-display-name": Attack(_edit_display_name),
    "deleted-embeddings": Attack(_delete_embeddings),
    "deleted-data-key": Attack(_delete_data_key),
    "replaced-embedding": Attack(_replace_embedding),
}


def _assert_refused_and_logged(registry: Registry, receipt: Receipt, integrity: bool) -> None:
    assert not receipt.allowed, receipt.reasons
    if integrity:
        assert is_integrity_failure(receipt), receipt.reasons
    assert receipt.decision_id is not None, "the refusal was not logged"
    assert not get_decision(registry, receipt.decision_id).allowed


@pytest.mark.attack("consent facts read from rows, not signatures")
@pytest.mark.parametrize("name", ATTACKS)
def test_row_tampering_does_not_open_the_gate(world: World, engine: FaceEngine, name: str) -> None:
    w = world
    attack = ATTACKS[name]
    w.clock.advance(days=attack.days)
    long_lived = Gateway(w.registry, engine)
    job, undo, honest_grant = attack.tamper(w, engine)
    # the long-lived process: refused (its facts are the signed ones it followed)
    _assert_refused_and_logged(w.registry, long_lived.check(job), integrity=False)
    # a fresh process over the tampered rows: refused as an integrity error
    second = reopen(w)
    try:
        _assert_refused_and_logged(second, Gateway(second, engine).check(job), integrity=True)
    finally:
        second.close()
    # the untampered rows and a real signed grant: the same job is allowed
    undo()
    honest_grant()
    allowed = long_lived.check(job)
    assert allowed.allowed, allowed.reasons
    second = reopen(w)
    try:
        allowed = Gateway(second, engine).check(job)
        assert allowed.allowed, allowed.reasons
    finally:
        second.close()


@pytest.mark.attack("consent facts read from rows, not signatures")
def test_check_cli_exits_2_on_an_integrity_error(world: World) -> None:
    w = world
    if not w.registry.db.url.startswith("sqlite"):
        pytest.skip("the CLI half runs on SQLite (the gate itself is tested on both)")
    cli = Cli(w.registry.home.root)
    args = ("check", "--as", w.acme.id, "--purpose", "train", "--db", w.registry.db.url,
            "--prompt", "a portrait of Alice Example")  # fmt: skip
    undo = set_column(w, "grants", "purposes_json", json.dumps(["generate", "restore", "train"]),
                      w.grant_a.id)  # fmt: skip
    refused = cli(*args)
    assert refused.code == 2, (refused.out, refused.err)
    assert "integrity error" in refused.out and "purposes" in refused.out
    undo()
    # the CLI runs on the real clock, the world on T0 (2030): a grant valid from now
    w.registry.grant(w.alice.id, w.acme.id, ["train"], subject_key=w.alice_key,
                     not_before=datetime.now(UTC) - timedelta(hours=1))  # fmt: skip
    allowed = cli(*args)
    assert allowed.code == 0, (allowed.out, allowed.err)


# -- log verify: a deleted subject data key ----------------------------------------------------


@pytest.mark.attack("subject data key deleted behind the log")
def test_log_verify_reports_a_deleted_data_key(world: World, engine: FaceEngine) -> None:
    w = world
    obama = _obama(w, engine)
    assert_ok(w.registry.verify_log())  # the honest registry verifies
    undo = delete_rows(w, "subject_data_keys", "subject_id = :s", s=obama)
    problems = w.registry.verify_log().problems
    assert any(obama in p and "data key missing" in p for p in problems), problems
    undo()
    assert_ok(w.registry.verify_log())


# -- verify_media -------------------------------------------------------------------------------


@pytest.fixture
def pw(world: World) -> World:
    create_dev_pki(world.registry.home.root)
    return world


def logged_allow(
    w: World, purpose: str, grants: list[Grant], subject: str, grantee: str | None = None
) -> Decision:
    """An operator-signed allow, as a gateway that read the tampered rows logged it (the
    gate now refuses these: ``record_decision`` would not log them)."""
    row = Decision(
        id=new_id("dec"), grantee_id=grantee or w.acme.id, purpose=purpose, allowed=True,
        reasons_json="[]", grants_json=json.dumps([g.id for g in grants]),
        subjects_json=json.dumps([subject]), prior_sha256=None, inputs_json="[]",
        outputs_json="[]", created_at=format_time(w.clock()), log_index=-1,
    )  # fmt: skip
    append_leaf(w.registry, "decision", row.id, Envelope.sign(statement_of(row), [w.operator]),
                table="decisions", row=row)  # fmt: skip
    return row


def release(w: World, decision: Decision, grants: list[Grant]) -> bytes:
    return sign_output(w.registry, make_image(), JPEG, action=decision.purpose,  # type: ignore[arg-type]
                       decision=decision, grants=grants, prior=None)  # fmt: skip


def _widened(w: World) -> tuple[bytes, str]:
    grant = w.registry.grant(w.alice.id, w.acme.id, ["restore"], subject_key=w.alice_key)
    set_column(w, "grants", "purposes_json", json.dumps(["generate", "restore"]), grant.id)
    return release(w, logged_allow(w, "generate", [grant], w.alice.id), [grant]), "does not cover"


def _extended(w: World) -> tuple[bytes, str]:
    w.clock.advance(days=31)
    set_column(w, "grants", "not_after", None, w.grant_a.id)
    return release(w, logged_allow(w, "generate", [w.grant_a], w.alice.id), [w.grant_a]), (
        "had expired"
    )


def _revocation_deleted(w: World) -> tuple[bytes, str]:
    raw(w.registry, "DELETE FROM revocations WHERE id = :r", r=w.revocation.id)
    return release(w, logged_allow(w, "generate", [w.grant_r], w.bob.id), [w.grant_r]), (
        "was revoked at log index"
    )


def _repointed(w: World) -> tuple[bytes, str]:
    set_column(w, "grants", "subject_id", w.bob.id, w.grant_a.id)
    return release(w, logged_allow(w, "generate", [w.grant_a], w.bob.id), [w.grant_a]), (
        f"subject {w.bob.id} has no grant"
    )


def _regranteed(w: World) -> tuple[bytes, str]:
    evil, _ = w.registry.add_grantee("Evil Corp")
    set_column(w, "grants", "grantee_id", evil.id, w.grant_a.id)
    decision = logged_allow(w, "generate", [w.grant_a], w.alice.id, grantee=evil.id)
    return release(w, decision, [w.grant_a]), "is for another grantee"


VERIFY_ATTACKS: dict[str, Callable[[World], tuple[bytes, str]]] = {
    "widened-grant-row": _widened,
    "extended-grant-row": _extended,
    "deleted-revocation-row": _revocation_deleted,
    "repointed-grant-row-subject": _repointed,
    "repointed-grant-row-grantee": _regranteed,
}


def honest_output(w: World) -> tuple[bytes, Decision]:
    """A real grant and a real allow, released: what must verify."""
    grant = w.registry.grant(w.alice.id, w.acme.id, ["generate"], subject_key=w.alice_key)
    decision = record_decision(w.registry, w.acme.id, "generate", True, [], [grant.id],
                               [w.alice.id], None, [], [])  # fmt: skip
    assert decision.allowed
    return release(w, decision, [grant]), decision


def assert_no_claims_as_facts(result: VerifyResult) -> None:
    assert not result.ok and not result.consent_ok
    assert result.decision_id is None and result.log_index is None
    assert result.grant_ids == [] and result.subject_ids == [] and result.memorization is None
    assert result.to_json()["claimed"].get("decision"), "the claims are kept apart, labelled"


@pytest.mark.attack("verify passes an output whose grant row was tampered")
@pytest.mark.parametrize("name", VERIFY_ATTACKS)
def test_verify_judges_grants_from_the_signed_log(pw: World, name: str) -> None:
    w = pw
    good, decision = honest_output(w)
    result = verify_media(w.registry, good, JPEG)
    assert result.ok, result.consent_reason
    assert result.decision_id == decision.id and result.claimed["decision"] == decision.id
    data, reason = VERIFY_ATTACKS[name](w)
    second = reopen(w)
    try:
        for registry in (w.registry, second):
            result = verify_media(registry, data, JPEG)
            assert reason in result.consent_reason, result.consent_reason
            assert_no_claims_as_facts(result)
    finally:
        second.close()
    assert verify_media(w.registry, good, JPEG).ok  # the honest output still verifies


@pytest.mark.attack("verify passes an output whose grant row was tampered")
def test_verify_of_a_decision_naming_a_forged_grant_row_is_an_integrity_error(
    pw: World,
) -> None:
    w = pw
    good, _ = honest_output(w)
    assert verify_media(w.registry, good, JPEG).ok
    forged = Grant(id=new_id("grt"), subject_id=w.alice.id, grantee_id=w.acme.id,
                   purposes_json='["generate"]', priors_json="[]", not_before=format_time(T0),
                   constraints_json="{}", issuer_key_id=w.operator.key_id,
                   subject_key_id=w.alice_key.key_id, created_at=format_time(T0),
                   log_index=w.registry.log_size() - 1)  # fmt: skip
    raw_insert(w.registry, "grants", row_values(forged))
    # the old gate read the forged row and logged an allow naming it
    data = release(w, logged_allow(w, "generate", [forged], w.alice.id), [forged])
    fresh = reopen(w)
    try:
        with pytest.raises(LogIntegrityError, match="not earlier in the log"):
            verify_media(fresh, data, JPEG)
    finally:
        fresh.close()
    if w.registry.db.url.startswith("sqlite"):
        out = w.registry.home.root / "forged.jpg"
        out.write_bytes(data)
        result = Cli(w.registry.home.root)("verify", str(out), "--db", w.registry.db.url)
        assert result.code == 2 and "not earlier in the log" in result.err, result


# -- the grantee's API key row -----------------------------------------------------------------


@pytest.mark.attack("consent facts read from rows, not signatures")
def test_api_key_row_swapped_does_not_authenticate_the_attacker(
    world: World, engine: FaceEngine
) -> None:
    """The attacker writes the hash of their own API key into a grantee's row: over HTTP
    the key is judged by the signed grantee entry, so it authenticates nobody."""
    w = world
    studio, key = w.registry.add_grantee("Studio B")
    _grant(w, w.alice.id, ["generate"], w.alice_key, studio.id)
    app = create_app(w.registry, engine, hash_admin_key("csa_row-tamper-admin"))
    form = {"purpose": (None, "generate"), "prompt": (None, "a portrait of Alice Example")}
    stolen = "csk_attacker-chosen-key"

    def check(http: httpx.Client, api_key: str) -> httpx.Response:
        return http.post("/v1/check", files=form, headers={"Authorization": f"Bearer {api_key}"})

    with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        honest = check(http, key)
        assert honest.status_code == 200 and honest.json()["allowed"], honest.text
        undo = set_column(w, "grantees", "api_key_sha256", sha256_hex(stolen.encode()), studio.id)
        attacked = check(http, stolen)
        assert attacked.status_code in (401, 403), attacked.text
        assert check(http, key).status_code != 200  # the row contradicts the log: fail closed
        undo()
        again = check(http, key)
        assert again.status_code == 200 and again.json()["allowed"], again.text


@pytest.mark.attack("grantee row forged under a warm API-key map")
def test_forged_grantee_row_does_not_authenticate_under_a_warm_key_map(
    world: World, engine: FaceEngine
) -> None:
    """A running server has already built its map of signed API-key hashes; the
    attacker then inserts a whole grantee row (their own key's hash, no log entry).
    The forged key authenticates nobody, also after
    the map is rebuilt for a grantee added honestly since; that honest grantee's key
    works at once (no wait for the follower), and so does the original grantee's."""
    w = world
    studio, key = w.registry.add_grantee("Studio C")
    _grant(w, w.alice.id, ["generate"], w.alice_key, studio.id)
    app = create_app(
        w.registry, engine, hash_admin_key("csa_row-tamper-admin"), follow_interval=None
    )
    form = {"purpose": (None, "generate"), "prompt": (None, "a portrait of Alice Example")}
    stolen = "csk_attacker-forged-grantee"

    def check(http: httpx.Client, api_key: str) -> httpx.Response:
        return http.post("/v1/check", files=form, headers={"Authorization": f"Bearer {api_key}"})

    with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        warm = check(http, key)  # the key map is built here
        assert warm.status_code == 200 and warm.json()["allowed"], warm.text
        forged = new_id("gte")
        raw_insert(
            w.registry,
            "grantees",
            {
                "id": forged,
                "name": "Mallory Media",
                "api_key_sha256": sha256_hex(stolen.encode()),
                "public_key": None,
                "created_at": format_time(T0),
                "log_index": w.registry.log_size() - 1,
            },
        )
        attacked = check(http, stolen)
        assert attacked.status_code == 401, attacked.text
        # an honest grantee added after the server started: the map gains it on the miss
        late, late_key = w.registry.add_grantee("Late Studio")
        _grant(w, w.alice.id, ["generate"], w.alice_key, late.id)
        honest_late = check(http, late_key)
        assert honest_late.status_code == 200 and honest_late.json()["allowed"], honest_late.text
        again = check(http, stolen)  # the rebuilt map holds signed hashes only
        assert again.status_code == 401, again.text
        honest = check(http, key)
        assert honest.status_code == 200 and honest.json()["allowed"], honest.text
