"""Attacks on the identity lookup: a registered face that is seen must not be dropped.

Every test asserts the refusal *and* that the same job with a matching grant is
allowed, so a gate that refuses everything fails here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consentry import Registry
from consentry.faces.engines import get_engine
from consentry.gate import CheckRequest, Gateway
from consentry.identity.enroll import enroll_photos

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"


@pytest.fixture
def crowded(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[Registry, Gateway, str, list[str]]]:
    """Barack Obama (enrolled from one photo) and six decoy subjects enrolled from the
    very photo the job sends, so each decoy scores higher than the real subject."""
    registry = Registry.init(tmp_path / "home", sqlite_url)
    engine = get_engine("sface")
    real = registry.add_subject("Barack Obama")
    enroll_photos(registry, engine, real.id, [DATA / "obama.jpg"])
    registry.add_grantee("Studio")
    decoys = []
    for number in range(6):
        decoy = registry.add_subject(f"Decoy {number}")
        enroll_photos(registry, engine, decoy.id, [DATA / "obama2.jpg"])
        registry.grant(decoy.id, "Studio", ["restore"])
        decoys.append(decoy.id)
    yield registry, Gateway(registry, engine), real.id, decoys
    registry.close()


@pytest.mark.attack("look-alike subjects with grants hide the real one")
def test_lookalikes_with_grants_do_not_hide_the_real_subject(crowded) -> None:  # type: ignore[no-untyped-def]
    registry, gateway, real, decoys = crowded
    job = CheckRequest("Studio", "restore", [DATA / "obama2.jpg"])
    refused = gateway.check(job)
    assert not refused.allowed
    assert any("no active grant" in r for r in refused.reasons), refused.reasons
    matched = {s for face in refused.faces for s in face["subjects"]}  # type: ignore[attr-defined]
    assert matched == {real, *decoys}
    registry.grant(real, "Studio", ["restore"])
    allowed = gateway.check(job)
    assert allowed.allowed, allowed.reasons
    assert set(allowed.subjects) == {real, *decoys}
