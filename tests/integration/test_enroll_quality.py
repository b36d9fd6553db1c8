"""Each enrolled photo's quality (consentry.faces.quality.face_quality) is signed into
its enrollment and weighs its vector in the second stage of a match."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from consentry.faces.engines import get_engine
from consentry.faces.quality import QualityGates, assess, face_quality
from consentry.identity.enroll import enroll_photos
from consentry.identity.index import IdentityIndex
from consentry.registry.signing import Envelope
from consentry.registry.store import Registry
from tests.support.faces import PHOTOS


def _pixels(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


def test_quality_falls_for_a_small_or_blurred_face() -> None:
    engine, gates = get_engine("sface"), QualityGates()
    sharp = _pixels("obama.jpg")
    face, _ = assess(engine, sharp, gates)
    assert face is not None
    good = face_quality(sharp, face, gates)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 4)
    blurred_face, _ = assess(engine, blurred, QualityGates(min_sharpness=0.0))
    assert blurred_face is not None
    assert 0.0 < face_quality(blurred, blurred_face, gates) < good <= 1.0
    small = cv2.resize(sharp, None, fx=0.35, fy=0.35, interpolation=cv2.INTER_AREA)
    small_face, _ = assess(engine, small, QualityGates(min_face=20, min_sharpness=0.0))
    assert small_face is not None
    assert face_quality(small, small_face, gates) < good


def test_the_signed_quality_weighs_each_vector_in_the_index(tmp_path: Path) -> None:
    registry = Registry.init(tmp_path / "home", f"sqlite:///{tmp_path}/r.db")
    try:
        engine = get_engine("sface")
        subject = registry.add_subject("Barack Obama")
        row = enroll_photos(registry, engine, subject.id, [PHOTOS / "obama.jpg",
                                                           PHOTOS / "obama2.jpg"])  # fmt: skip
        leaf = json.loads(registry.log.entry(row.log_index).leaf_json)
        blobs = Envelope.from_json(leaf["envelope"]).statement["blobs"]
        qualities = [b["quality"] for b in blobs if b["kind"] == "embedding"]
        assert len(qualities) == 2 and all(0.0 < q <= 1.0 for q in qualities)
        index = IdentityIndex(registry, "sface", engine.dim, cache=False)
        assert list(index.subject_weights(subject.id)) == qualities  # in vector-id order
        # the cache keeps them: a second index loads them without replaying the log
        cached = IdentityIndex(registry, "sface", engine.dim)
        again = IdentityIndex(registry, "sface", engine.dim)
        assert list(cached.subject_weights(subject.id)) == qualities
        assert list(again.subject_weights(subject.id)) == qualities
        registry.checkpoint()
        assert registry.verify_log().ok
    finally:
        registry.close()
