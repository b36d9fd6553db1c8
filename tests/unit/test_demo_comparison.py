"""The demo's comparison picture and its geometry (no registry, no gateway)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from consentry.cli.demo_comparison import Panel, carry_landmarks, draw_comparison


def test_carry_landmarks_maps_pixel_centres_through_downscale_crop_and_upscale() -> None:
    # a 200 x 100 truth, downscaled x10 to 20 x 10, crop from (3, 2), restored x8
    points = np.array([[4.5, 4.5], [34.5, 24.5]])  # centres of low-res pixels (0,0), (3,2)
    out = carry_landmarks(points, (100, 200), (10, 20), (3, 2), 8)
    # low-res pixel (0,0) centre -> (-3, -2) in the crop -> centre of output block
    np.testing.assert_allclose(out[0], [-3 * 8 + 3.5, -2 * 8 + 3.5])
    np.testing.assert_allclose(out[1], [3.5, 3.5])


def test_draw_comparison_writes_one_labelled_tile_per_panel(tmp_path: Path) -> None:
    red = np.zeros((60, 40, 3), dtype=np.uint8)
    red[..., 0] = 255
    panels = [
        Panel("a", "first", red, {"sface": 0.5, "dlib": 0.9}),
        Panel("b", "missing", None, {}, "unavailable: no package"),
        Panel("c", "third", red, {"sface": -0.1, "dlib": 0.2}),
    ]
    target = tmp_path / "out" / "comparison.png"
    draw_comparison(panels, target, "title")
    with Image.open(target) as picture:
        assert picture.format == "PNG"
        pixels = np.asarray(picture.convert("RGB"))
    width = pixels.shape[1]
    assert width == 3 * 224 + 4 * 6
    # each made panel shows its image (red) in its own column; the missing one is grey
    row = pixels[40 + 100]
    columns = [row[6 + i * 230 + 112] for i in range(3)]
    assert tuple(columns[0]) == (255, 0, 0) and tuple(columns[2]) == (255, 0, 0)
    assert tuple(columns[1]) == (64, 64, 64)
    # text was drawn under the tiles (dark pixels in the score strip)
    strip = pixels[16 + 6 + 16 + 224 :, :, :]
    assert (strip.min(axis=2) < 100).sum() > 50


@pytest.mark.parametrize("key", ["sface", "dlib"])
def test_panel_json_keeps_scores_and_note(key: str) -> None:
    panel = Panel("x", "label", None, {key: 0.25}, "why")
    assert panel.to_json() == {"label": "label", key: 0.25, "note": "why"}
