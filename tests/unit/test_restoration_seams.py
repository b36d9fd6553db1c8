"""Seams of pasted exemplar detail: the metric, and the restoration's soft detail mask.

The demo's earlier restorations showed curved seams across the cheek: the exemplar's
own face outline, pasted at the edge of a tightly feathered face ellipse. The detail is
now blended in with a smaller, softly feathered ellipse (``RestoreOptions.detail_grow``
and ``detail_feather``); :func:`seam_ratio` measures the difference objectively.
"""

from __future__ import annotations

import importlib.resources
import math
from pathlib import Path

import numpy as np
import pytest

from consentry.faces.engine import sort_faces
from consentry.faces.engines import get_engine
from consentry.faces.images import load_image
from consentry.faces.quality import align_exemplar
from consentry.generation.restoration.degrade import Degradation
from consentry.generation.restoration.exemplar import RestoreOptions, face_mask, restore
from consentry.generation.restoration.generic import bicubic_upscale
from consentry.generation.restoration.metrics import seam_ratio, seam_weights

SIZE = 256


def _texture(seed: int = 0) -> np.ndarray:
    """Fine luma texture (uniform noise, +-40 levels) as H x W x 3 float."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(-40.0, 40.0, size=(SIZE, SIZE))
    return np.repeat(values[:, :, None], 3, axis=2)


def _paste(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    base = np.full((SIZE, SIZE, 3), 128.0)
    out = base + _texture() * weights[:, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), base.astype(np.uint8)


def test_seam_ratio_tells_a_hard_paste_from_a_soft_blend() -> None:
    boundary, interior = seam_weights(SIZE)
    hard, base = _paste((face_mask(SIZE) >= 0.5).astype(np.float64))
    soft, _ = _paste(face_mask(SIZE, 0.85, 16.0).astype(np.float64))
    hard_ratio = seam_ratio(hard, base, boundary, interior)
    soft_ratio = seam_ratio(soft, base, boundary, interior)
    assert hard_ratio > 0.3  # measured 0.48: half the ring is texture, plus the step
    assert soft_ratio < 0.05  # measured 0.024
    assert hard_ratio > 10 * soft_ratio


def test_seam_ratio_edge_cases_and_weights() -> None:
    boundary, interior = seam_weights(SIZE)
    assert boundary.max() == pytest.approx(1.0, abs=0.02) and boundary.min() >= 0.0
    assert interior.max() == 1.0
    flat = np.full((SIZE, SIZE, 3), 90, dtype=np.uint8)
    assert seam_ratio(flat, flat, boundary, interior) == 0.0  # no detail anywhere
    # detail only on the boundary ring: infinitely seam-like
    ring, base = _paste((boundary > 0.5).astype(np.float64) * (interior < 1e-3))
    assert math.isinf(seam_ratio(ring, base, boundary, interior))


def _aligned(engine_name: str, name: str) -> np.ndarray:
    folder = Path(str(importlib.resources.files("consentry.data").joinpath("faces")))
    image = load_image(folder / name).pixels
    face = sort_faces(get_engine(engine_name).detect(image))[0]
    return align_exemplar(image, face)


def test_restoration_blends_exemplar_detail_without_seams() -> None:
    """obama2 at x8 (16 px face), obama's photo as the exemplar: the default detail mask
    leaves the face outline about ten times less seam-like than the old tight one."""
    truth, exemplar = _aligned("sface", "obama2.jpg"), _aligned("sface", "obama.jpg")
    degradation = Degradation()
    low = degradation.apply(truth)
    base = bicubic_upscale(low, degradation.scale)
    boundary, interior = seam_weights(SIZE)
    tight = RestoreOptions(detail_grow=1.0, detail_feather=8.0)
    old = restore(low, [exemplar], degradation, aligned=True, options=tight).image
    new = restore(low, [exemplar], degradation, aligned=True).image
    old_ratio = seam_ratio(old, base, boundary, interior)
    new_ratio = seam_ratio(new, base, boundary, interior)
    assert new_ratio < 0.1, new_ratio  # measured 0.027 (the tight mask: 0.34)
    assert old_ratio > 3 * new_ratio, (old_ratio, new_ratio)


def test_detail_mask_options_are_checked() -> None:
    from consentry.errors import InputError

    with pytest.raises(InputError):
        RestoreOptions(detail_grow=0.1)
    with pytest.raises(InputError):
        RestoreOptions(detail_feather=0.0)
