"""The demo's identity measurement: six comparison panels scored against the truth.

Split from :mod:`consentry.cli.demo_cmds` (which runs the steps). Every panel is
built in the restored output's frame (see :mod:`consentry.cli.demo_comparison`)
and scored at one face geometry, the truth's landmarks carried into it; only the
signed output is a release, every other panel is an unsigned comparison made in
memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from consentry.cli.demo_cmds import DOWNSCALE, OTHER_NAME, OTHER_PHOTO, _cut
from consentry.cli.demo_report import COMPARISON_NAME, TRUTH_PHOTO

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from consentry.cli.demo_cmds import _Demo
    from consentry.cli.demo_comparison import Panel

__all__ = ["measure_panels"]


def measure_panels(demo: _Demo) -> dict[str, object]:
    """Identity of every comparison panel to the held-out truth, and ``comparison.png``.

    The truth's five landmarks are carried into the input's and then the outputs'
    coordinates (pixel centres), and every face is aligned by those same points: all
    methods are measured at the same geometry, whether or not a detector finds their
    face (:mod:`consentry.cli.demo_comparison`). ``restored`` and ``bicubic`` are the
    SFace cosines (kept for scripts); ``panels`` has SFace and dlib for each panel.
    """
    from consentry.cli.demo_comparison import (
        carry_landmarks,
        draw_comparison,
        largest_landmarks,
        panel_seams,
        score_panels,
    )
    from consentry.faces.engines import get_engine
    from consentry.faces.images import load_image
    from consentry.generation.restoration.metrics import identity_similarity

    engine = demo.eng()
    truth = _cut(load_image(demo.data / TRUTH_PHOTO).pixels)
    enrolled = load_image(demo.data / "obama.jpg").pixels
    low = load_image(Path(demo.files["input"])).pixels
    x, y, w, h = (int(v) for v in demo.restoration["crop"])
    scale = int(demo.restoration["scale"])
    panels = _panels(demo, truth, low[y : y + h, x : x + w].copy(), scale)
    points = largest_landmarks(engine, truth)
    in_output = carry_landmarks(points, truth.shape[:2], low.shape[:2], (x, y), scale)
    reference = _aligned(truth, points)
    engines = {"sface": engine, "dlib": get_engine("dlib")}
    score_panels(panels, in_output, reference, engines)
    by_key = {panel.key: panel for panel in panels}
    boxes = [face.get("bbox") for face in demo.jobs[0].receipt.faces]
    face_px = max((float(box[2]) for box in boxes if isinstance(box, list)), default=0.0)
    target = demo.demo_dir / COMPARISON_NAME
    draw_comparison(
        panels,
        target,
        f"{TRUTH_PHOTO} degraded to a {round(face_px)} px face, restored x{scale}; "
        "identity = cosine to the truth (SFace, dlib), same geometry for every panel",
    )
    demo.files["comparison"] = str(target)
    return {
        "engine": "sface",
        "engines": ["sface", "dlib"],
        "truth": TRUTH_PHOTO,
        "input_face_px": round(face_px),
        "scale": scale,
        "restored": by_key["restored"].scores["sface"],
        "bicubic": by_key["bicubic"].scores["sface"],
        "enrolled_photo": round(
            identity_similarity(_aligned(enrolled, largest_landmarks(engine, enrolled)), reference),
            4,
        ),
        "panels": {panel.key: panel.to_json() for panel in panels},
        "seams": panel_seams(panels, in_output),
    }


def _aligned(
    image: npt.NDArray[np.uint8], points: npt.NDArray[np.float64]
) -> npt.NDArray[np.uint8]:
    import numpy as np

    from consentry.faces.engine import align_by_landmarks
    from consentry.generation.restoration.exemplar import EXEMPLAR_SIZE, EXEMPLAR_TEMPLATE

    return np.asarray(align_by_landmarks(image, points, EXEMPLAR_SIZE, EXEMPLAR_TEMPLATE))


def _panels(
    demo: _Demo, truth: npt.NDArray[np.uint8], crop: npt.NDArray[np.uint8], scale: int
) -> list[Panel]:
    """The six panels in the restored output's frame (see :mod:`demo_comparison`)."""
    import cv2
    import numpy as np

    from consentry.cli.demo_comparison import Panel
    from consentry.errors import ConsentryError
    from consentry.faces.engine import sort_faces
    from consentry.faces.images import load_image
    from consentry.faces.quality import align_exemplar
    from consentry.generation.backends.personal import restore_face_photo
    from consentry.generation.restoration.generic import RealESRGAN

    engine = demo.eng()
    height, width = crop.shape[0] * scale, crop.shape[1] * scale
    nearest = np.asarray(np.repeat(np.repeat(crop, scale, axis=0), scale, axis=1), dtype=np.uint8)
    bicubic = load_image(Path(demo.files["bicubic_comparison"])).pixels
    esrgan: npt.NDArray[np.uint8] | None = None
    note = ""
    try:
        esrgan = RealESRGAN().upscale(crop, scale)
    except ConsentryError as exc:
        note = f"unavailable: {exc}"
    other = load_image(demo.data / OTHER_PHOTO).pixels
    other_faces = sort_faces(engine.detect(other))
    if not other_faces:
        raise ValueError(f"no face found in {OTHER_PHOTO}")
    low = load_image(Path(demo.files["input"])).pixels
    painted = restore_face_photo(
        engine, low, [align_exemplar(other, other_faces[0])], is_jpeg=True
    ).image
    restored = load_image(Path(demo.files["restored"])).pixels
    x, y = (int(v) for v in demo.restoration["crop"][:2])
    region = truth[
        y * DOWNSCALE : (y + crop.shape[0]) * DOWNSCALE,
        x * DOWNSCALE : (x + crop.shape[1]) * DOWNSCALE,
    ]
    truth_panel = np.asarray(
        cv2.resize(region, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8
    )
    return [
        Panel("input", "input (nearest)", nearest, {}),
        Panel("bicubic", "bicubic", bicubic, {}),
        Panel("realesrgan", "Real-ESRGAN", esrgan, {}, note),
        Panel("other_person", f"{OTHER_NAME}'s photos", painted, {}),
        Panel("restored", "own photos (signed)", restored, {}),
        Panel("truth", "truth (held out)", truth_panel, {}),
    ]
