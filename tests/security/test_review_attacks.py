"""Attacks on the review queue (issue 14): an approval must open only the job that
was held, only once judged, only from the signed log, and only for a while.

Every test (on SQLite and PostgreSQL) holds a real face (``obama2.jpg``, measured,
with a signed calibration placing its similarity inside the review band, see
``tests/support/review.py``), shows the attack refused, and shows the honest
resubmission allowed, so a gate that refuses everything fails.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from consentry import Registry
from consentry.errors import ReviewError
from consentry.faces.engine import FaceEngine
from consentry.faces.engines import get_engine
from consentry.gate import CheckRequest, Gateway, Receipt, is_integrity_failure
from consentry.identity.enroll import enroll_photos
from consentry.registry.biometrics import record_calibration
from consentry.registry.models import Calibration, Review
from consentry.registry.reviews import APPROVAL_VALID_FOR, pending_holds, record_review
from tests.security.conftest import raw_insert
from tests.support.clock import Clock
from tests.support.review import DATA, measured_similarity, put_in_band

PROBE = DATA / "obama2.jpg"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)




@dataclass
class Banded:
    registry: Registry
    gateway: Gateway
    engine: FaceEngine
    clock: Clock
    obama: str
    similarity: float

    def check(self, grantee: str = "Studio", image: Path | bytes = PROBE, **kw: str) -> Receipt:
        return self.gateway.check(CheckRequest(grantee, "restore", [image], **kw))

    def held(self) -> str:
        receipt = self.check()
        assert receipt.held and receipt.decision_id, receipt.reasons
        return receipt.decision_id


@pytest.fixture
def banded(tmp_path: Path, db_url: str) -> Iterator[Banded]:
    clock = Clock(T0)
    registry = Registry.init(tmp_path / "home", db_url, clock=clock)
    engine = get_engine("sface")
    obama = registry.add_subject("Barack Obama", ["Obama"])
    enroll_photos(registry, engine, obama.id, [DATA / "obama.jpg"])
    registry.add_grantee("Studio")
    registry.add_grantee("Rival")
    similarity = measured_similarity(registry, engine, PROBE, obama.id)
    put_in_band(registry, engine, similarity)
    yield Banded(registry, Gateway(registry, engine), engine, clock, obama.id, similarity)
    registry.close()


def _approved(world: Banded) -> str:
    held = world.held()
    record_review(world.registry, held, "approve", "ana", "a look-alike, not him")
    return held


def _png(path: Path) -> bytes:
    out = io.BytesIO()
    Image.open(path).convert("RGB").save(out, format="PNG")
    return out.getvalue()


@pytest.mark.attack("approval replayed for another image")
def test_approval_replayed_for_another_image(banded: Banded) -> None:
    held = _approved(banded)
    # the same face, other bytes (a PNG re-encoding): the approval bound the SHA-256
    other = banded.check(image=_png(PROBE), review=held)
    assert not other.allowed and any("other input images" in r for r in other.reasons)
    honest = banded.check(review=held)
    assert honest.allowed, honest.reasons


@pytest.mark.attack("approval replayed by another requester")
def test_approval_replayed_by_another_requester(banded: Banded) -> None:
    held = _approved(banded)
    rival = banded.check("Rival", review=held)
    assert not rival.allowed and any("another requester" in r for r in rival.reasons)
    honest = banded.check(review=held)
    assert honest.allowed, honest.reasons


@pytest.mark.attack("approval replayed for another subject")
def test_approval_of_one_candidate_does_not_clear_another(banded: Banded) -> None:
    held = _approved(banded)
    honest = banded.check(review=held)
    assert honest.allowed, honest.reasons
    # a second subject enrolled since, whose photo puts the same face in the band too:
    # the reviewer judged the face is not Obama, nobody judged it is not the twin
    twin = banded.registry.add_subject("Obama's twin")
    mirrored = Image.open(DATA / "obama.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    photo = banded.registry.home.root / "twin.png"
    mirrored.save(photo)
    enroll_photos(banded.registry, banded.engine, twin.id, [photo])
    score = measured_similarity(banded.registry, banded.engine, PROBE, twin.id)
    low, high = sorted((score, banded.similarity))
    row = Calibration(
        id="", engine="sface", engine_version="test", threshold=high + 0.02, fmr_target=1e-3,
        fmr=0.0, fnmr=0.02, eer=0.004, genuine_pairs=10, impostor_pairs=90,
        dataset_sha256="cd" * 32, created_at="", log_index=-1, review_threshold=low - 0.05,
    )  # fmt: skip
    record_calibration(banded.registry, row)
    replay = banded.check(review=held)
    assert not replay.allowed and replay.held
    assert any(twin.id in r and "held for review" in r for r in replay.reasons)
    assert not any(f"subject {banded.obama} (similarity" in r for r in replay.reasons)


@pytest.mark.attack("approval of a face that is a certain match")
def test_approval_never_clears_a_certain_match(banded: Banded) -> None:
    held = _approved(banded)
    honest = banded.check(review=held)
    assert honest.allowed, honest.reasons
    # the threshold moves below the similarity: the face is now a certain match of
    # Obama, for whom the requester holds no grant; the review judged an uncertain one
    row = Calibration(
        id="", engine="sface", engine_version="test", threshold=banded.similarity - 0.05,
        fmr_target=1e-3, fmr=0.0, fnmr=0.02, eer=0.004, genuine_pairs=10, impostor_pairs=90,
        dataset_sha256="cd" * 32, created_at="", log_index=-1,
    )  # fmt: skip
    record_calibration(banded.registry, row)
    replay = banded.check(review=held)
    assert not replay.allowed and not replay.held
    assert any("no active grant" in r for r in replay.reasons)
    banded.registry.grant(banded.obama, "Studio", ["restore"])
    assert banded.check(review=held).allowed  # with the subject's grant, it runs


@pytest.mark.attack("forged review row not in the signed log")
def test_forged_review_row_is_an_integrity_error(banded: Banded) -> None:
    held = banded.held()
    raw_insert(
        banded.registry,
        "reviews",
        {"id": "rev_" + "0" * 20, "decision_id": held, "verdict": "approve",
         "reviewer": "mallory", "note": "", "created_at": "2026-03-01T12:00:00Z",
         "log_index": 3},
    )  # fmt: skip
    forged = banded.check(review=held)
    assert not forged.allowed and is_integrity_failure(forged), forged.reasons
    assert held in {h.id for h in pending_holds(banded.registry)}  # still pending
    assert not banded.registry.verify_log().ok
    # the honest path: another hold, approved by a signed review
    other = banded.held()
    record_review(banded.registry, other, "approve", "ana", "not him")
    assert banded.check(review=other).allowed


@pytest.mark.attack("a held job reviewed twice")
def test_second_verdict_is_refused(banded: Banded) -> None:
    held = banded.held()
    first = record_review(banded.registry, held, "reject", "ana", "it is him")
    with pytest.raises(ReviewError, match="already reviewed"):
        record_review(banded.registry, held, "approve", "mallory", "let it through")
    refused = banded.check(review=held)
    assert not refused.allowed and any(first.id in r and "rejected" in r for r in refused.reasons)
    # a second verdict appended past record_review (signed, with its row): the follower
    # keeps the first, the gate refuses (two review rows for one signed verdict is an
    # integrity error), and log verify names the second
    registry = banded.registry
    with registry.db.write() as session:
        registry.log.record(session, Review(
            id=registry.new_id("rev"), decision_id=held, verdict="approve", reviewer="mallory",
            note="", created_at="2026-03-01T12:00:00Z", log_index=-1,
        ))  # fmt: skip
    still = banded.check(review=held)
    assert not still.allowed and is_integrity_failure(still), still.reasons
    signed = registry.consent.hold_and_review(held)[1]
    assert signed is not None and (signed.id, signed.verdict) == (first.id, "reject")
    registry.checkpoint()
    report = registry.verify_log()
    assert any(f"a second review of held decision {held}" in p for p in report.problems)
    honest = banded.held()
    record_review(banded.registry, honest, "approve", "ana", "not him")
    assert banded.check(review=honest).allowed


@pytest.mark.attack("expired approval")
def test_expired_approval_is_refused(banded: Banded) -> None:
    held = _approved(banded)
    banded.clock.now = T0 + APPROVAL_VALID_FOR - timedelta(seconds=1)
    honest = banded.check(review=held)
    assert honest.allowed, honest.reasons
    banded.clock.now = T0 + APPROVAL_VALID_FOR
    late = banded.check(review=held)
    assert not late.allowed and any("expired" in r for r in late.reasons)
