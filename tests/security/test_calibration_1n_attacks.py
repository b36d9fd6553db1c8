"""A 1:N operating point is followed from the signed log, never from its database row.

An attacker with SQL access and no operator key edits the newest calibration row:
a lower ``review_threshold`` (so faces in a wider band become mere candidates) and
a huge ``max_gallery`` (so no over-budget warning ever shows). The identity index
and the gallery budget of a fresh process follow the signed statement, so neither
moves, and ``log verify`` names the row; a real, signed calibration with the same
values is followed (the defence is not a refusal of every change).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from consentry.faces.engines import get_engine
from consentry.identity.budget import gallery_budget
from consentry.identity.enroll import enroll_photos
from consentry.identity.index import IdentityIndex
from consentry.registry.biometrics import record_calibration
from consentry.registry.models import Calibration
from consentry.registry.store import Registry
from tests.security.conftest import assert_ok, assert_reported, raw

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"


def _operating_point(engine_version: str, review: float, max_gallery: int) -> Calibration:
    return Calibration(
        id="",
        engine="sface",
        engine_version=engine_version,
        threshold=0.40,
        fmr_target=0.01,
        fmr=0.0,
        fnmr=0.0,
        eer=0.0,
        genuine_pairs=100,
        impostor_pairs=1000,
        dataset_sha256="0" * 64,
        review_threshold=review,
        fpir_target=0.01,
        gallery_size=1,
        max_gallery=max_gallery,
        action="measure",
        created_at="",
        log_index=-1,
    )


def _followed(home: Path) -> tuple[float, float, int | None, bool]:
    """(threshold, review threshold, max_gallery, over budget) as a fresh process sees them."""
    with Registry.open(home) as registry:
        index = IdentityIndex(registry, "sface", get_engine("sface").dim, cache=False)
        index.refresh()
        budget = gallery_budget(registry.consent, "sface")
        return index.threshold, index.review_threshold, budget.max_gallery, budget.over


@pytest.mark.attack("a forged calibration row widens the review band or the gallery budget")
def test_a_forged_calibration_row_is_not_followed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    engine = get_engine("sface")
    with Registry.init(home, None) as registry:
        for name, photo in (("Barack Obama", "obama.jpg"), ("Joe Biden", "biden.jpg")):
            subject = registry.add_subject(name, [])
            enroll_photos(registry, engine, subject.id, [DATA / photo])
        row = record_calibration(registry, _operating_point(engine.version, 0.33, 1))
        registry.checkpoint()
    assert _followed(home) == (0.40, 0.33, 1, True)  # 2 subjects past a budget of 1

    with Registry.open(home) as registry:
        raw(
            registry,
            "UPDATE calibrations SET review_threshold = 0.10, max_gallery = 1000000 WHERE id = :id",
            id=row.id,
        )
        assert_reported(registry.verify_log(), row.id)
    assert _followed(home) == (0.40, 0.33, 1, True)  # the signed entry, not the row

    # the honest equivalent: a signed calibration with those values is followed
    with Registry.open(home) as registry:
        raw(
            registry,
            "UPDATE calibrations SET review_threshold = 0.33, max_gallery = 1 WHERE id = :id",
            id=row.id,
        )
        assert_ok(registry.verify_log())
        record_calibration(registry, _operating_point(engine.version, 0.10, 1_000_000))
        registry.checkpoint()
        assert_ok(registry.verify_log())
    assert _followed(home) == (0.40, 0.10, 1_000_000, False)
