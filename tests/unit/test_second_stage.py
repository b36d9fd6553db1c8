"""The second stage (support over all of a subject's photos, margin rule) on real
SFace embeddings of the shipped photos and deterministic variants of them."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from consentry.errors import InputError
from consentry.faces.engines import get_engine
from consentry.faces.images import load_image
from consentry.identity.index import SubjectMatch
from consentry.identity.second_stage import MARGIN, SUPPORT_K, confirm, support

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"
PHOTOS = ("obama.jpg", "obama2.jpg", "biden.jpg", "astronaut.jpg")


@pytest.fixture(scope="module")
def vectors() -> dict[str, np.ndarray]:
    """name (+ "m" mirrored, "b" darker) -> unit SFace embedding of its largest face."""
    engine = get_engine("sface")
    out: dict[str, np.ndarray] = {}
    for name in PHOTOS:
        pixels = load_image(DATA / name).pixels
        variants = {
            "": pixels,
            "m": np.ascontiguousarray(pixels[:, ::-1]),
            "b": (pixels.astype(np.float64) * 0.7).astype(np.uint8),
        }
        for tag, image in variants.items():
            out[name + tag] = engine.embed(image, engine.detect(image)[0])
    return out


def _search(
    probe: np.ndarray, gallery: dict[str, np.ndarray], threshold: float, review: float
) -> list[SubjectMatch]:
    """What the range search answers: each subject's best vector, down to ``review``."""
    found = []
    for subject, rows in gallery.items():
        scores = rows @ probe
        best = int(np.argmax(scores))
        if scores[best] >= review:
            score = float(scores[best])
            found.append(SubjectMatch(subject, score, best, score >= threshold))
    return sorted(found, key=lambda m: (-m.similarity, m.subject_id))


def _gallery(vectors: dict[str, np.ndarray], **subjects: list[str]) -> dict[str, np.ndarray]:
    return {s: np.stack([vectors[n] for n in names]) for s, names in subjects.items()}


def test_support_is_the_mean_of_the_best_k(vectors: dict[str, np.ndarray]) -> None:
    probe = vectors["biden.jpg"]
    names = ("obama2.jpg", "astronaut.jpg", "obama.jpg", "obama.jpgb")
    rows = np.stack([vectors[n] for n in names])
    scores = np.sort(rows @ probe)[::-1]
    assert support(probe, rows) == pytest.approx(float(scores[:SUPPORT_K].mean()), abs=1e-6)
    assert support(probe, rows[:1]) == pytest.approx(float(rows[0] @ probe), abs=1e-6)
    # weights, when a caller has them, tilt the mean towards the better photos
    weighted = support(probe, rows, weights=[1.0, 0.0, 0.0, 0.0])
    assert weighted == pytest.approx(float(scores[0]), abs=1e-6)
    # nothing to support a candidate: the lowest score, so it is held (never dropped)
    assert support(probe, rows[:0]) == -1.0
    assert support(probe, rows, weights=[0.0, 0.0, 0.0, 1.0]) == -1.0
    with pytest.raises(InputError):
        support(probe, rows, weights=[1.0, -1.0, 0.0, 0.0])
    with pytest.raises(InputError):
        support(probe, rows, weights=[1.0])


def test_one_close_photo_among_far_ones_is_held_not_dropped(vectors: dict[str, np.ndarray]) -> None:
    # a band [0.20, 0.25): biden's photo passes the search on one photo of "lookalike"
    threshold, review = 0.25, 0.20
    gallery = _gallery(
        vectors,
        lookalike=["obama2.jpg", "astronaut.jpg", "obama.jpg"],
        biden=["biden.jpgm", "biden.jpgb"],
    )
    probe = vectors["biden.jpg"]
    found = _search(probe, gallery, threshold, review)
    assert [(m.subject_id, m.certain) for m in found] == [("biden", True), ("lookalike", True)]
    confirmed = confirm(probe, found, gallery.__getitem__, threshold, review)
    assert [(m.subject_id, m.certain) for m in confirmed] == [("biden", True), ("lookalike", False)]
    assert [m.similarity for m in confirmed] == [m.similarity for m in found]
    # no band: exactly what the search found
    plain = _search(probe, gallery, threshold, threshold)
    assert confirm(probe, plain, gallery.__getitem__, threshold, threshold) == plain


def test_a_top_match_without_margin_holds_both(vectors: dict[str, np.ndarray]) -> None:
    threshold, review = 0.3652, 0.30
    probe = vectors["obama2.jpg"]
    close = _gallery(vectors, a=["obama.jpg"], b=["obama.jpgb"], biden=["biden.jpg"])
    found = _search(probe, close, threshold, review)
    assert [m.subject_id for m in found] == ["b", "a"]
    margin = MARGIN * (threshold - review)
    assert all(m.certain for m in found) and found[0].similarity - found[1].similarity < margin
    confirmed = confirm(probe, found, close.__getitem__, threshold, review)
    assert [(m.subject_id, m.certain) for m in confirmed] == [("b", False), ("a", False)]
    # a clear lead keeps the top match certain
    clear = _gallery(vectors, obama=["obama.jpg", "obama.jpgm"], biden=["biden.jpgm"])
    found = _search(probe, clear, 0.25, 0.20)
    assert [(m.subject_id, m.certain) for m in found] == [("obama", True), ("biden", True)]
    confirmed = confirm(probe, found, clear.__getitem__, 0.25, 0.20)
    assert confirmed == found


def test_the_second_stage_only_ever_lowers_certainty(vectors: dict[str, np.ndarray]) -> None:
    names = sorted(vectors)
    rng = np.random.default_rng(14)
    checked = 0
    for _ in range(60):
        gallery = {
            f"s{i}": np.stack([vectors[n] for n in rng.choice(names, rng.integers(1, 5))])
            for i in range(4)
        }
        for probe_name, (threshold, review) in itertools.product(
            names, [(0.3652, 0.30), (0.25, 0.15), (0.5, 0.5)]
        ):
            probe = vectors[probe_name]
            found = _search(probe, gallery, threshold, review)
            after = confirm(probe, found, gallery.__getitem__, threshold, review)
            assert [(m.subject_id, m.similarity, m.vector_id) for m in after] == [
                (m.subject_id, m.similarity, m.vector_id) for m in found
            ]  # nothing dropped, added, re-scored or re-ordered
            assert all(m.certain <= f.certain for m, f in zip(after, found, strict=True))
            checked += bool(found)
    assert checked > 100
