"""The fused engine's arithmetic on real embeddings of the shipped photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from consentry.errors import InputError
from consentry.faces.engine import cosine
from consentry.faces.engines import get_engine
from consentry.faces.fused import SFACE_WEIGHT, FusedEngine, fuse
from consentry.faces.images import load_image
from consentry.faces.thresholds import DEFAULT_THRESHOLDS

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"


def _parts(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    engine = get_engine("fused")
    assert isinstance(engine, FusedEngine)
    pixels = load_image(DATA / name).pixels
    face = engine.detect(pixels)[0]
    return (
        engine.sface.embed(pixels, face),
        engine.dlib.embed(pixels, face),
        engine.embed(pixels, face),
    )


@pytest.mark.parametrize("other", ["obama2.jpg", "biden.jpg"])
def test_fused_cosine_is_the_weighted_mean_of_the_engines(other: str) -> None:
    s1, d1, e1 = _parts("obama.jpg")
    s2, d2, e2 = _parts(other)
    assert e1.shape == (256,) and abs(float(np.linalg.norm(e1)) - 1.0) < 1e-5
    expected = SFACE_WEIGHT * cosine(s1, s2) + (1 - SFACE_WEIGHT) * cosine(d1, d2)
    assert float(e1 @ e2) == pytest.approx(expected, abs=1e-5)
    for w in (0.1, 0.5, 0.9):  # any weight, not only the shipped one
        mixed = float(fuse(s1, d1, w) @ fuse(s2, d2, w))
        assert mixed == pytest.approx(w * cosine(s1, s2) + (1 - w) * cosine(d1, d2), abs=1e-5)


def test_fused_threshold_separates_the_shipped_photos() -> None:
    _, _, obama = _parts("obama.jpg")
    _, _, obama2 = _parts("obama2.jpg")
    _, _, biden = _parts("biden.jpg")
    threshold = DEFAULT_THRESHOLDS["fused"]
    assert float(obama @ obama2) >= threshold > float(obama @ biden)


def test_weight_is_part_of_the_version_and_checked() -> None:
    shared = get_engine("fused")
    assert isinstance(shared, FusedEngine) and shared.dim == 256
    assert shared.sface is get_engine("sface") and shared.dlib is get_engine("dlib")
    other = FusedEngine(shared.sface, shared.dlib, weight=0.5)
    assert other.version != shared.version and "w0.25" in shared.version
    assert shared.sface.version in shared.version and shared.dlib.version in shared.version
    parts = set(shared.sface.model_hashes) | set(shared.dlib.model_hashes)
    assert set(shared.model_hashes) == parts
    for bad in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(InputError):
            FusedEngine(shared.sface, shared.dlib, weight=bad)
        with pytest.raises(InputError):
            fuse(np.ones(4, np.float32), np.ones(4, np.float32), bad)
