"""Review, the third outcome (issue 14), on real photos, a real registry and the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consentry import Registry
from consentry.faces.engines import get_engine
from consentry.gate import CheckRequest, Gateway
from consentry.identity.enroll import enroll_photos
from consentry.registry.decisions import get_decision
from consentry.registry.reviews import pending_holds, record_review
from tests.support.review import DATA, measured_similarity, put_in_band

PROBE = DATA / "obama2.jpg"


@pytest.fixture
def banded(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[Registry, Gateway, dict[str, str]]]:
    registry = Registry.init(tmp_path / "home", sqlite_url)
    engine = get_engine("sface")
    obama = registry.add_subject("Barack Obama", ["Obama"])
    enroll_photos(registry, engine, obama.id, [DATA / "obama.jpg"])
    studio, _ = registry.add_grantee("Studio")
    similarity = measured_similarity(registry, engine, PROBE, obama.id)
    put_in_band(registry, engine, similarity)
    yield registry, Gateway(registry, engine), {"obama": obama.id, "studio": studio.id}
    registry.close()


def test_an_uncertain_face_is_held_logged_signed_and_queued(banded) -> None:  # type: ignore[no-untyped-def]
    registry, gateway, ids = banded
    receipt = gateway.check(CheckRequest("Studio", "restore", [PROBE]))
    assert not receipt.allowed and receipt.held and receipt.decision_id
    assert any("held for review" in r for r in receipt.reasons)
    assert receipt.faces[0]["uncertain"] == [ids["obama"]]
    decision = get_decision(registry, receipt.decision_id)
    assert not decision.allowed and decision.held_json is not None
    held = [h for h in pending_holds(registry) if h.id == receipt.decision_id]
    assert held and held[0].faces[0]["subject"] == ids["obama"]
    assert held[0].faces[0]["bbox"] == list(receipt.faces[0]["bbox"])  # type: ignore[call-overload]
    assert len(held[0].faces[0]["bbox"]) == 4
    assert held[0].inputs == tuple(decision.inputs) and held[0].grantee == ids["studio"]
    assert held[0].band[0] < held[0].faces[0]["similarity"] < held[0].band[1]
    assert receipt.to_json()["held"] is True
    registry.checkpoint()
    assert registry.verify_log().ok


def test_a_grant_of_the_candidate_allows_without_a_hold(banded) -> None:  # type: ignore[no-untyped-def]
    registry, gateway, ids = banded
    grant = registry.grant(ids["obama"], "Studio", ["restore"])
    receipt = gateway.check(CheckRequest("Studio", "restore", [PROBE]))
    assert receipt.allowed and not receipt.held and receipt.grants == (grant.id,)
    assert not pending_holds(registry)


def test_approval_resumes_the_job_and_rejection_keeps_it_refused(banded) -> None:  # type: ignore[no-untyped-def]
    registry, gateway, _ = banded
    first = gateway.check(CheckRequest("Studio", "restore", [PROBE]))
    assert first.held and first.decision_id
    unreviewed = gateway.check(CheckRequest("Studio", "restore", [PROBE], review=first.decision_id))
    assert not unreviewed.allowed and any("not reviewed yet" in r for r in unreviewed.reasons)
    review = record_review(registry, first.decision_id, "approve", "ana", "not him: a look-alike")
    resumed = gateway.check(CheckRequest("Studio", "restore", [PROBE], review=first.decision_id))
    assert resumed.allowed and resumed.review == review.id
    assert any(f"review {review.id}" in r for r in resumed.reasons)
    assert get_decision(registry, resumed.decision_id or "").review_id == review.id
    assert not pending_holds(registry)

    second = gateway.check(CheckRequest("Studio", "restore", [PROBE]))
    assert second.held and second.decision_id
    record_review(registry, second.decision_id, "reject", "ana", "it is him")
    refused = gateway.check(CheckRequest("Studio", "restore", [PROBE], review=second.decision_id))
    assert not refused.allowed and not refused.held
    assert any("rejected" in r for r in refused.reasons)
    registry.checkpoint()
    assert registry.verify_log().ok


def test_cli_review_queue_approve_and_reject(tmp_path: Path, sqlite_url: str) -> None:
    from tests.support.cli import Cli

    home = tmp_path / "home"
    with Registry.init(home, sqlite_url) as registry:
        engine = get_engine("sface")
        obama = registry.add_subject("Barack Obama", ["Obama"])
        enroll_photos(registry, engine, obama.id, [DATA / "obama.jpg"])
        registry.add_grantee("Studio")
        put_in_band(registry, engine, measured_similarity(registry, engine, PROBE, obama.id))
    cli = Cli(home)
    check = ("check", str(PROBE), "--as", "Studio", "--purpose", "restore")
    held = cli(*check, "--json")
    assert held.code == 1, held.err
    body = __import__("json").loads(held.out)
    assert body["held"] is True and not body["allowed"]
    decision = body["decision"]
    listed = cli.ok("review", "list")
    assert decision in listed and obama.id in listed and "band [" in listed
    assert cli.json("review", "list")[0]["decision"] == decision  # type: ignore[index]
    assert "pending" in cli.ok("review", "show", decision)
    approved = cli.ok("review", "approve", decision, "--note", "not him", "--reviewer", "ana")
    assert approved.startswith(f"approve {decision}: review rev_")
    again = cli("review", "reject", decision, "--note", "changed my mind")
    assert again.code == 1 and "already reviewed" in again.err and "Traceback" not in again.err
    assert cli.ok("review", "list").strip() == "no held jobs"
    assert cli.ok(*check, "--review", decision).startswith("ALLOW")

    text = cli(*check)
    assert text.code == 1 and text.out.startswith("HELD")
    second = text.out.split("decision ")[1].split(",")[0]
    cli.ok("review", "reject", second, "--note", "it is him")
    refused = cli(*check, "--review", second)
    assert refused.code == 1 and refused.out.startswith("REFUSE") and "rejected" in refused.out
    missing = cli("review", "show", "dec_nope")
    assert missing.code == 2 and "no held decision" in missing.err


def test_http_review_routes_on_loopback(tmp_path: Path) -> None:
    import httpx

    from consentry.provenance.certs import create_dev_pki
    from consentry.server import create_app, hash_admin_key
    from tests.integration._live import live_server

    admin = {"Authorization": "Bearer csa_test-admin-key"}
    registry = Registry.init(tmp_path / "home", None)
    create_dev_pki(registry.home.root)
    engine = get_engine("sface")
    obama = registry.add_subject("Barack Obama", ["Obama"])
    enroll_photos(registry, engine, obama.id, [DATA / "obama.jpg"])
    _, key = registry.add_grantee("Studio")
    put_in_band(registry, engine, measured_similarity(registry, engine, PROBE, obama.id))
    registry.checkpoint()
    grantee = {"Authorization": f"Bearer {key}"}
    app = create_app(registry, engine, hash_admin_key("csa_test-admin-key"))

    def check(http: httpx.Client, **fields: str) -> httpx.Response:
        files = [("images", (PROBE.name, PROBE.read_bytes(), "image/jpeg"))]
        return http.post(
            "/v1/check", headers=grantee, data={"purpose": "restore", **fields}, files=files
        )

    try:
        with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as http:
            held = check(http)
            assert held.status_code == 202, held.text
            body = held.json()
            assert body["held"] is True and not body["allowed"]
            assert obama.id not in held.text  # the grantee holds no grant from Obama
            decision = body["decision"]
            assert http.get("/v1/reviews", headers=grantee).status_code == 401
            queue = http.get("/v1/reviews", headers=admin).json()["holds"]
            assert [h["decision"] for h in queue] == [decision]
            assert queue[0]["faces"][0]["subject"] == obama.id
            one = http.get(f"/v1/reviews/{decision}", headers=admin).json()
            assert one["review"] is None and one["inputs"] == queue[0]["inputs"]
            assert http.get("/v1/reviews/dec_none", headers=admin).status_code == 404
            approved = http.post(
                f"/v1/reviews/{decision}/approve", headers=admin,
                json={"reviewer": "ana", "note": "not him"},
            )  # fmt: skip
            assert approved.status_code == 201 and approved.json()["review"]["verdict"] == "approve"
            twice = http.post(
                f"/v1/reviews/{decision}/reject", headers=admin, json={"reviewer": "bo"}
            )
            assert twice.status_code == 409 and twice.json()["error"]["code"] == "review"
            assert http.get("/v1/reviews", headers=admin).json()["holds"] == []
            resumed = check(http, review=decision)
            assert resumed.status_code == 200 and resumed.json()["allowed"], resumed.text
            assert resumed.json()["review"] == approved.json()["review"]["id"]
    finally:
        registry.close()


def test_holds_and_reviews_survive_the_consent_snapshot(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from consentry.registry import consent

    monkeypatch.setattr(consent, "SNAPSHOT_EVERY", 2)
    home = tmp_path / "home"
    with Registry.init(home, sqlite_url) as registry:
        engine = get_engine("sface")
        obama = registry.add_subject("Barack Obama", ["Obama"])
        enroll_photos(registry, engine, obama.id, [DATA / "obama.jpg"])
        registry.add_grantee("Studio")
        put_in_band(registry, engine, measured_similarity(registry, engine, PROBE, obama.id))
        gateway = Gateway(registry, engine)
        approved = gateway.check(CheckRequest("Studio", "restore", [PROBE])).decision_id or ""
        pending = gateway.check(CheckRequest("Studio", "restore", [PROBE])).decision_id or ""
        review = record_review(registry, approved, "approve", "ana", "not him")
        registry.consent.refresh()  # seals a snapshot holding both holds and the review
    with Registry.open(home, sqlite_url) as again:
        again.consent.refresh()
        assert again.consent.loaded_snapshot > review.log_index  # the review is in it
        assert [h.id for h in pending_holds(again)] == [pending]
        resumed = Gateway(again, get_engine("sface")).check(
            CheckRequest("Studio", "restore", [PROBE], review=approved)
        )
        assert resumed.allowed and resumed.review == review.id, resumed.reasons
