"""The face scan (consentry.faces.scan) and the views it looks at, on real photos."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from consentry.errors import ImageTooLargeError, InputError
from consentry.faces.engine import Face, FaceEngine, FloatArray, ImageArray, cosine
from consentry.faces.engines import get_engine
from consentry.faces.images import face_views, load_image, load_image_bytes
from consentry.faces.scan import (
    TILE_OVERLAP,
    Detection,
    detect_all,
    map_to_view,
    merge_detections,
    scan_images,
    tile_origins,
)
from consentry.faces.thresholds import DEFAULT_THRESHOLDS

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"
THRESHOLD = DEFAULT_THRESHOLDS["sface"]


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return get_engine("sface")


@pytest.fixture(scope="module")
def reference(engine: FaceEngine) -> FloatArray:
    face = engine.analyze(load_image(DATA / "obama.jpg").pixels)[0]
    assert face.embedding is not None
    return face.embedding


@pytest.fixture(scope="module")
def probe() -> np.ndarray:
    pixels = load_image(DATA / "obama2.jpg").pixels
    height, width = pixels.shape[:2]
    scale = 700 / max(height, width)
    size = (round(width * scale), round(height * scale))
    return np.ascontiguousarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA))


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0.0, iw) * max(0.0, ih)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


# -- geometry ------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_map_to_view_undoes_rot90(k: int) -> None:
    height, width = 7, 11
    rng = np.random.default_rng(k)
    for _ in range(10):
        y, x = int(rng.integers(height)), int(rng.integers(width))
        view = np.zeros((height, width), dtype=np.uint8)
        view[y, x] = 1
        ry, rx = (int(v[0]) for v in np.nonzero(np.rot90(view, k)))
        back = map_to_view([[rx + 0.5, ry + 0.5]], k, height, width)[0]
        assert back.tolist() == [x + 0.5, y + 0.5]


@pytest.mark.parametrize(("length", "tile"), [(100, 1280), (1281, 1280), (4096, 1280), (5000, 640)])
def test_tiles_cover_with_overlap(length: int, tile: int) -> None:
    origins = tile_origins(length, tile, TILE_OVERLAP)
    assert origins[0] == 0 and origins[-1] + min(tile, length) == length
    for a, b in itertools.pairwise(origins):
        assert a + tile - b >= TILE_OVERLAP  # any face up to the overlap is whole in one tile


def _det(box: tuple[float, float, float, float], score: float, view: int = 0) -> Detection:
    x, y, w, h = box
    marks = np.array(
        [
            [x + w * 0.3, y + h * 0.4],
            [x + w * 0.7, y + h * 0.4],
            [x + w / 2, y + h / 2],
            [x + w * 0.35, y + h * 0.75],
            [x + w * 0.65, y + h * 0.75],
        ]
    )
    face = Face(bbox=box, landmarks=marks, score=score)
    return Detection(view=view, rotation=0, scale=1.0, face=face, pass_face=face)


def test_merge_keeps_one_face_per_place_and_separates_others() -> None:
    clusters = merge_detections(
        [
            _det((10, 10, 100, 120), 0.8),
            _det((14, 12, 96, 118), 0.95),
            _det((300, 10, 100, 120), 0.9),
        ]
    )
    assert [len(c) for c in clusters] == [2, 1]
    assert clusters[0][0].face.score == 0.95  # the best detection leads its cluster


# -- the scan on real photos -----------------------------------------------------------


def _turned_box(
    box: tuple[float, ...], k: int, height: int, width: int
) -> tuple[float, float, float, float]:
    """Where ``box`` of a ``height x width`` image lies in ``np.rot90(image, k)``."""
    x, y, w, h = box
    corners = np.array([[x, y], [x + w, y + h]], dtype=np.float64)
    for _ in range(k):  # one counter-clockwise quarter turn: (x, y) -> (y, W - x)
        corners = np.stack([corners[:, 1], width - corners[:, 0]], axis=1)
        height, width = width, height
    x0, y0 = corners.min(axis=0)
    x1, y1 = corners.max(axis=0)
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def test_rotated_views_map_back_onto_the_same_face(engine: FaceEngine, probe: np.ndarray) -> None:
    upright = detect_all(engine, load_image_bytes(png(probe)))
    assert len(upright) == 1  # one face, however many passes saw it
    box = upright[0].best.face.bbox
    height, width = probe.shape[:2]
    for k in (1, 2, 3):
        turned = np.ascontiguousarray(np.rot90(probe, k))
        found = detect_all(engine, load_image_bytes(png(turned)))
        th, tw = turned.shape[:2]
        here = [
            c for c in found if _iou(c.best.face.bbox, _turned_box(box, k, height, width)) > 0.3
        ]
        assert len(here) == 1  # every pass that saw the face: one face
        # the face's box in the turned image, mapped back, is the upright box
        x, y, w, h = here[0].best.face.bbox
        corners = map_to_view([[x, y], [x + w, y + h]], k, height, width)
        x0, y0 = corners.min(axis=0)
        x1, y1 = corners.max(axis=0)
        assert _iou(box, (x0, y0, x1 - x0, y1 - y0)) > 0.6, k
        assert (height, width) == (tw, th) if k % 2 else (height, width) == (th, tw)


@pytest.mark.parametrize("degrees", range(0, 360, 30))
def test_every_angle_matches(
    engine: FaceEngine, reference: FloatArray, probe: np.ndarray, degrees: int
) -> None:
    height, width = probe.shape[:2]
    side = int(np.hypot(height, width)) + 2
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    matrix[0, 2] += side / 2 - width / 2
    matrix[1, 2] += side / 2 - height / 2
    turned = cv2.warpAffine(probe, matrix, (side, side), borderValue=(118, 118, 118))
    (faces,) = scan_images(engine, [load_image_bytes(png(turned))], 32)
    best = max(cosine(v, reference) for face in faces for v in face.embeddings)
    assert best >= THRESHOLD + 0.1, best


def test_small_face_is_found_by_tiling_where_it_is(engine: FaceEngine, probe: np.ndarray) -> None:
    box = engine.detect(probe)[0].bbox
    scale = 32 / box[2]
    small = cv2.resize(probe, (round(probe.shape[1] * scale), round(probe.shape[0] * scale)))
    canvas = np.full((600, 3000, 3), 118, dtype=np.uint8)
    canvas[300 : 300 + small.shape[0], 2000 : 2000 + small.shape[1]] = small
    found = detect_all(engine, load_image_bytes(png(canvas)))
    expected = (2000 + box[0] * scale, 300 + box[1] * scale, box[2] * scale, box[3] * scale)
    assert any(_iou(c.best.face.bbox, expected) > 0.5 for c in found), [
        c.best.face.bbox for c in found
    ]


def test_large_face_is_seen_whole(engine: FaceEngine) -> None:
    pixels = load_image(DATA / "obama2.jpg").pixels  # 1200 px tall, face about 275 px wide
    big = cv2.resize(pixels, (pixels.shape[1] * 2, pixels.shape[0] * 2))  # tiled at native size
    found = detect_all(engine, load_image_bytes(png(np.ascontiguousarray(big))))
    assert max(c.best.face.bbox[2] for c in found) > 450


class _Counting:
    """The real engine, counting ``embed`` calls (to see when embedding happens)."""

    def __init__(self, inner: FaceEngine) -> None:
        self.inner = inner
        self.name, self.dim, self.version = inner.name, inner.dim, inner.version
        self.model_hashes = inner.model_hashes
        self.scan_side = getattr(inner, "scan_side", 640)
        self.embeds = 0

    def detect(self, image: ImageArray) -> list[Face]:
        return self.inner.detect(image)

    def align(self, image: ImageArray, face: Face) -> ImageArray:
        return self.inner.align(image, face)

    def embed(self, image: ImageArray, face: Face) -> FloatArray:
        self.embeds += 1
        return self.inner.embed(image, face)

    def analyze(self, image: ImageArray) -> list[Face]:
        return self.inner.analyze(image)


def test_face_cap_counts_faces_across_images_before_embedding(
    engine: FaceEngine, probe: np.ndarray
) -> None:
    counting = _Counting(engine)
    photo = load_image_bytes(png(probe))
    with pytest.raises(InputError, match="too many faces: 2 in this job"):
        scan_images(counting, [photo, photo], 1)
    assert counting.embeds == 0
    (faces,) = scan_images(counting, [photo], 1)
    assert len(faces) == 1 and counting.embeds == len(faces[0].embeddings) >= 1


# -- views -----------------------------------------------------------------------------


def test_views_of_a_plain_image_are_its_pixels(probe: np.ndarray) -> None:
    loaded = load_image_bytes(png(probe))
    assert not loaded.has_alpha and loaded.data == b""
    (view,) = face_views(loaded)
    assert view.pixels is loaded.pixels and (view.frame, view.kind) == (0, "image")


def test_views_of_transparency() -> None:
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    alpha = np.zeros((4, 5), dtype=np.uint8)
    alpha[0] = 255
    loaded = load_image_bytes(png(np.dstack([rgb, alpha])))
    assert loaded.has_alpha and loaded.data
    views = {v.kind: v.pixels for v in face_views(loaded)}
    assert set(views) == {"over-white", "over-black", "ignoring-alpha", "alpha"}
    assert np.array_equal(views["over-white"], loaded.pixels)
    assert views["ignoring-alpha"][3, 0].tolist() == [200, 0, 0]
    assert views["over-black"][3, 0].tolist() == [0, 0, 0]
    assert views["alpha"][0, 0].tolist() == [255] * 3 and views["alpha"][3, 0].tolist() == [0] * 3
    opaque = load_image_bytes(png(np.dstack([rgb, np.full((4, 5), 255, np.uint8)])))
    assert not opaque.has_alpha and len(face_views(opaque)) == 1


def _tiff(frames: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    first, *rest = (Image.fromarray(f) for f in frames)
    first.save(buffer, format="TIFF", save_all=True, append_images=rest)
    return buffer.getvalue()


def test_views_of_frames_repeat_nothing_and_refuse_over_the_cap() -> None:
    a = np.full((6, 6, 3), 10, dtype=np.uint8)
    b = np.full((3, 9, 3), 200, dtype=np.uint8)  # TIFF pages may differ in size
    views = face_views(load_image_bytes(_tiff([a, b, a])))
    assert [(v.frame, v.pixels.shape) for v in views] == [(0, (6, 6, 3)), (1, (3, 9, 3))]
    with pytest.raises(ImageTooLargeError, match=r"has 4 frames; .* at most 3"):
        face_views(load_image_bytes(_tiff([a, b, a, b])), max_frames=3)
    with pytest.raises(ImageTooLargeError, match="pixels together"):
        face_views(load_image_bytes(_tiff([a, b])), max_total_pixels=40)


def test_turned_looks_at_a_tiny_face_add_no_unknown_person(engine: FaceEngine) -> None:
    """The demo's degraded input (78 x 150, JPEG q60): one person, whatever the
    turned passes see in the parts of that face."""
    image = Image.open(DATA / "obama2.jpg").convert("RGB").resize((78, 150), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=60)
    (faces,) = scan_images(engine, [load_image_bytes(buffer.getvalue())], 32)
    people = [f for f in faces if not f.incidental]
    assert len(people) == 1 and people[0].rotation == 0
