"""The face scan: every face any viewer of an image could see, at any orientation.

This is the one face pipeline of the gate (the gateway's check and post-check,
``consentry match`` and ``consentry audit``). A face engine's ``detect`` looks at
one upright picture at one scale; an attacker chooses the picture. The scan
therefore looks at every *view* of a loaded image (each frame, and for a frame
with transparency the composite on white and on black, the RGB a viewer that
ignores alpha shows, and the alpha plane as grey: see
:func:`consentry.faces.images.face_views`), each at four orientations and at
native resolution, tile by tile, instead of shrinking the picture.

Passes
- A *level* is the view scaled by ``1, 1/2, 1/4, ...`` until its long side fits
  the engine's native detector size (``scan_side``: 1280 px for SFace/YuNet);
  the last level is always the whole view in one piece, so large faces are seen
  whole. A level larger than ``scan_side`` is cut into ``scan_side`` tiles that
  overlap by :data:`TILE_OVERLAP` pixels, so a face up to that size lies wholly
  in one tile; a detection touching a tile edge inside the image is dropped (the
  face is whole in a neighbouring tile or at the next, coarser level).
- Upright (0 degrees) passes run on every level from native resolution down.
  The rotated passes (90, 180, 270 degrees) run from the 1/2 level down, or from
  native resolution when the view's long side is at most
  :data:`ROTATED_FULL_RES_SIDE`; this keeps a 1024 px check under twice the cost
  of a single pass (measured by ``python -m bench.face_scan``).
- Detectors find faces up to about +-60 degrees from upright and mirrored faces,
  so four orientations cover every angle, every vertical flip and every EXIF
  orientation (tests/unit/test_scan.py sweeps the angle in 30 degree steps,
  tests/security/test_face_visibility.py the flips and EXIF orientations).

Promise (the default SFace engine; the smallest detector box width seen)
- :data:`MIN_FACE_UPRIGHT` (32 px) upright or tilted up to 60 degrees, mirrored
  or not, at every image size up to the pixel cap;
- :data:`MIN_FACE_ROTATED` (64 px) at any other rotation, and 32 px at any
  rotation in a view whose long side is at most 640 px.
Other engines get the same passes; their own detector sets their minimum
(dlib's HOG detector misses faces under about 40 px; insightface works on
640 px tiles). Colour-inverted faces and edge maps are not promised: no view of
the image shows them as a face to a person, and a detector may or may not find
them (see SECURITY.md).

Invariants
- Boxes and landmarks of the returned faces are in the coordinates of the view
  they were found in, which are those of its frame as the loader orients it
  (``LoadedImage.pixels`` for frame 0).
- De-duplication: within one frame, detections from every pass and every view
  whose boxes overlap (IoU >= :data:`MERGE_IOU`, in view coordinates) are one
  face; the cap counts these faces, not passes. Faces of different frames are
  different faces (a frame can show anyone), so an animation of one person in
  N distinct frames holds N faces.
- Merging across views never hides a face: a face is embedded once for every
  view that saw it, from that view's best detection (the pixels differ: the
  composite can show one person and the hidden RGB another), and it is a
  registered subject's face if any of its embeddings matches. Within one view,
  another orientation that sees a face in the same place is embedded as well
  when it scores within :data:`SECOND_LOOK` of the view's best (a drawing made
  to read as two faces, upright and upside down, is two strong detections);
  the weaker look-alikes a detector reports on an upright face turned upside
  down are not embedded (they would double the cost of a check). Each
  embedding comes from the pass where it was found: for an upright face found
  at native resolution, the engine's ``embed`` on that pass's pixels (a crop
  around the face) with the face in that pass's coordinates; for any other, a
  *level look*: the face's neighbourhood turned so its eyes are level (the
  angle from that pass's landmarks), detected again and embedded from there
  (detectors place landmarks well only near upright). At most 4 x 4
  embeddings per face.
- A face lying mostly inside a larger face of its frame (``within``) is
  embedded and counted like any other (it may be a small face pasted onto a
  large one); if it matches no registered subject it is taken as part of the
  larger face, not as another unknown person (at native resolution, and turned,
  a detector sees faces in the parts of a face). Likewise a face only the
  turned passes saw, with a detector score under :data:`WEAK_TURNED_SCORE`
  (``weak``): embedded and counted, a registered subject if it matches, and
  otherwise no unknown person. Both only narrow what counts as an *unknown*
  face (``refuse_unknown_faces``, the prior-restoration check); matching a
  registered subject is never skipped.
- The per-job face cap is checked after detection and before any embedding,
  across every image, frame and view: more faces is an
  :class:`~consentry.errors.InputError`, nothing is embedded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from consentry.errors import InputError
from consentry.faces.engine import Face, FaceEngine, FloatArray, ImageArray, clip_bbox, sort_faces
from consentry.faces.images import FaceView, LoadedImage, face_views

__all__ = [
    "MERGE_IOU",
    "MIN_FACE_ROTATED",
    "MIN_FACE_UPRIGHT",
    "ROTATED_FULL_RES_SIDE",
    "SECOND_LOOK",
    "TILE_OVERLAP",
    "WEAK_TURNED_SCORE",
    "Candidate",
    "Detection",
    "ScannedFace",
    "detect_all",
    "embed_candidates",
    "map_to_view",
    "merge_detections",
    "scan_images",
    "tile_origins",
]

MIN_FACE_UPRIGHT = 32
"""Smallest face (detector box width, px) promised upright, at every image size."""

MIN_FACE_ROTATED = 64
"""Smallest face promised at 90/180/270 degrees (and between) in views over 640 px."""

ROTATED_FULL_RES_SIDE = 640
"""Views whose long side is at most this are scanned rotated at native resolution."""

TILE_OVERLAP = 128
"""Tiles of one level overlap by this many pixels of that level."""

MERGE_IOU = 0.4
"""Two detections in one frame with at least this IoU (and close nose tips) are one face."""

LEVEL_TOLERANCE = 15.0
"""An upright native-resolution detection whose eye line is within this many degrees
of level is embedded as found; any other gets a level look (see ``_embed_detection``)."""

LEVEL_CROP = 640
"""The level look's crop is scaled down to at most this side."""

WEAK_TURNED_SCORE = 0.7
"""A face only the turned passes saw, scoring under this, that matches nobody is
not reported as an unknown person (turned passes see faces in ordinary things)."""

SECOND_LOOK = 0.1
"""Another orientation of the same view seeing a face in the same place is embedded
too when its detector score is within this of the best one's."""

_DEFAULT_SCAN_SIDE = 640
_EDGE = 2.0  # px: a box this close to an inner tile edge is cut by the tile
_ROTATIONS = (0, 1, 2, 3)  # np.rot90 k: counter-clockwise quarter turns


@dataclass(frozen=True, eq=False)
class Detection:
    """One face found by one pass.

    ``face`` is in the view's coordinates; ``pass_face`` is the same face in the
    coordinates of the view rotated by ``rotation`` quarter turns (counter-
    clockwise, as ``np.rot90``) at native resolution, which is where it is
    embedded from.
    """

    view: int
    rotation: int
    scale: float
    face: Face
    pass_face: Face


@dataclass(frozen=True, eq=False)
class Candidate:
    """One face of one frame: the best detection, and the best one of each
    (view, orientation) pair that saw it."""

    frame: int
    best: Detection
    members: tuple[Detection, ...]
    views: tuple[FaceView, ...]
    within: bool = False  # lies inside a larger face of the same frame
    weak: bool = False  # seen only turned, with a score under WEAK_TURNED_SCORE


@dataclass(frozen=True, eq=False)
class ScannedFace:
    """A face with one embedding per (view, orientation) that saw it (see the invariants)."""

    frame: int
    face: Face
    embeddings: tuple[FloatArray, ...]
    kinds: tuple[str, ...]
    rotation: int  # quarter turns of the best detection's pass
    within: bool = False  # inside a larger face: if it matches nobody, it is part of that face
    weak: bool = False  # seen only by turned passes, weakly: if it matches nobody, not a person

    @property
    def incidental(self) -> bool:
        """If this face matches no registered subject, it is no unknown person either
        (part of a larger face, or a weak detection of a turned pass)."""
        return self.within or self.weak


# -- geometry -----------------------------------------------------------------


def map_to_view(points: npt.ArrayLike, rotation: int, height: int, width: int) -> FloatArray:
    """Map ``(x, y)`` points of the view rotated by ``rotation`` quarter turns
    (``np.rot90(view, rotation)``) back into the ``height x width`` view.

    Continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``), so a box
    maps exactly onto a box.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    k = rotation % 4
    if k == 0:
        out = np.stack([x, y], axis=1)
    elif k == 1:
        out = np.stack([width - y, x], axis=1)
    elif k == 2:
        out = np.stack([width - x, height - y], axis=1)
    else:
        out = np.stack([y, height - x], axis=1)
    result: FloatArray = out.astype(np.float32)
    return result


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``0..length`` with at least
    ``overlap`` pixels shared by neighbours (one tile when it fits)."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    origins = list(range(0, length - tile, step))
    origins.append(length - tile)
    return sorted(set(origins))


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = min(ax1, bx1) - max(a[0], b[0])
    ih = min(ay1, by1) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _inside(
    small: tuple[float, float, float, float], large: tuple[float, float, float, float]
) -> bool:
    """``small`` is the smaller box and lies mostly (60 % of its area) inside ``large``."""
    if large[2] * large[3] <= small[2] * small[3]:
        return False
    iw = min(small[0] + small[2], large[0] + large[2]) - max(small[0], large[0])
    ih = min(small[1] + small[3], large[1] + large[3]) - max(small[1], large[1])
    return iw > 0 and ih > 0 and iw * ih >= 0.6 * small[2] * small[3]


def merge_detections(detections: Sequence[Detection]) -> list[list[Detection]]:
    """Greedy clustering, best score first: each cluster is one face (see invariants)."""
    order = sorted(detections, key=lambda d: (-d.face.score, -d.face.area))
    clusters: list[list[Detection]] = []
    for det in order:
        for cluster in clusters:
            if _iou(cluster[0].face.bbox, det.face.bbox) >= MERGE_IOU:
                cluster.append(det)
                break
        else:
            clusters.append([det])
    return clusters


# -- detection ----------------------------------------------------------------


def _scan_side(engine: FaceEngine) -> int:
    side = getattr(engine, "scan_side", _DEFAULT_SCAN_SIDE)
    return int(side) if isinstance(side, int) and side >= 64 else _DEFAULT_SCAN_SIDE


def _levels(long_side: int, scan_side: int) -> list[float]:
    """Scales 1, 1/2, ... down to the first at which the view fits ``scan_side``."""
    scales = [1.0]
    while long_side * scales[-1] > scan_side:
        scales.append(scales[-1] / 2)
    return scales


def _scaled(pixels: ImageArray, scale: float) -> ImageArray:
    if scale == 1.0:
        return pixels
    height, width = pixels.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def _detect_level(
    engine: FaceEngine, image: ImageArray, tile: int
) -> list[tuple[Face, float, float]]:
    """Faces in ``image`` (one orientation of one level), tiled; ``(face, ox, oy)``
    with the face in tile coordinates and the tile's offset."""
    height, width = image.shape[:2]
    found: list[tuple[Face, float, float]] = []
    for oy in tile_origins(height, tile, TILE_OVERLAP):
        for ox in tile_origins(width, tile, TILE_OVERLAP):
            th, tw = min(tile, height - oy), min(tile, width - ox)
            piece = np.ascontiguousarray(image[oy : oy + th, ox : ox + tw])
            for face in engine.detect(piece):
                x, y, w, h = face.bbox
                if (
                    (ox > 0 and x <= _EDGE)
                    or (oy > 0 and y <= _EDGE)
                    or (ox + tw < width and x + w >= tw - _EDGE)
                    or (oy + th < height and y + h >= th - _EDGE)
                ):
                    continue  # cut by an inner tile edge: whole elsewhere
                found.append((face, float(ox), float(oy)))
    return found


def _view_detections(engine: FaceEngine, view: FaceView, number: int) -> list[Detection]:
    pixels = view.pixels
    long_side = max(pixels.shape[:2])
    tile = _scan_side(engine)
    upright = _levels(long_side, tile)
    first = 1.0 if long_side <= ROTATED_FULL_RES_SIDE else 0.5
    rotated = [first]
    while long_side * rotated[-1] > tile:
        rotated.append(rotated[-1] / 2)
    cache: dict[float, ImageArray] = {}
    detections: list[Detection] = []
    for k in _ROTATIONS:
        for scale in rotated if k else upright:
            if scale not in cache:
                cache[scale] = _scaled(pixels, scale)
            detections += _oriented(engine, cache[scale], scale, k, number, view)
    return detections


def _oriented(
    engine: FaceEngine, scaled: ImageArray, scale: float, k: int, number: int, view: FaceView
) -> list[Detection]:
    height, width = view.pixels.shape[:2]
    rotated = np.ascontiguousarray(np.rot90(scaled, k)) if k else scaled
    out: list[Detection] = []
    for face, ox, oy in _detect_level(engine, rotated, _scan_side(engine)):
        x, y, w, h = face.bbox
        factor = 1.0 / scale
        pass_box = ((x + ox) * factor, (y + oy) * factor, w * factor, h * factor)
        pass_marks = (face.landmarks + np.array([ox, oy], dtype=np.float32)) * factor
        corners = map_to_view(
            [[pass_box[0], pass_box[1]], [pass_box[0] + w * factor, pass_box[1] + h * factor]],
            k,
            height,
            width,
        )
        x0, y0 = corners.min(axis=0)
        x1, y1 = corners.max(axis=0)
        bbox = clip_bbox(float(x0), float(y0), float(x1), float(y1), width, height)
        rot_h, rot_w = (height, width) if k % 2 == 0 else (width, height)
        pass_bbox = clip_bbox(
            pass_box[0],
            pass_box[1],
            pass_box[0] + pass_box[2],
            pass_box[1] + pass_box[3],
            rot_w,
            rot_h,
        )
        if bbox is None or pass_bbox is None:
            continue
        marks = map_to_view(pass_marks, k, height, width)
        out.append(
            Detection(
                view=number,
                rotation=k,
                scale=scale,
                face=Face(bbox=bbox, landmarks=marks, score=face.score),
                pass_face=Face(bbox=pass_bbox, landmarks=pass_marks, score=face.score),
            )
        )
    return out


def _members(cluster: Sequence[Detection]) -> tuple[Detection, ...]:
    """The detections of one face to embed: the best of each view, and the best of
    each other orientation of that view that scores within :data:`SECOND_LOOK` of it."""
    best_view: dict[int, Detection] = {}
    chosen: dict[tuple[int, int], Detection] = {}
    for det in cluster:  # ordered best first
        top = best_view.setdefault(det.view, det)
        if (det.view, det.rotation) in chosen:
            continue
        if det is top or det.face.score >= top.face.score - SECOND_LOOK:
            chosen[(det.view, det.rotation)] = det
    return tuple(chosen.values())


def detect_all(engine: FaceEngine, image: LoadedImage) -> list[Candidate]:
    """Every face of every frame of ``image``, de-duplicated, not yet embedded.

    Raises an :class:`~consentry.errors.ImageError` for an image whose views
    cannot all be shown (too many frames or pixels; see ``face_views``).
    """
    views = face_views(image)
    candidates: list[Candidate] = []
    for frame in sorted({v.frame for v in views}):
        frame_views = tuple(v for v in views if v.frame == frame)
        detections: list[Detection] = []
        for number, view in enumerate(frame_views):
            detections += _view_detections(engine, view, number)
        clusters = merge_detections(detections)
        boxes = [cluster[0].face.bbox for cluster in clusters]
        for cluster in clusters:
            inside = any(_inside(cluster[0].face.bbox, other) for other in boxes)
            weak = all(d.rotation != 0 for d in cluster) and (
                cluster[0].face.score < WEAK_TURNED_SCORE
            )
            candidates.append(
                Candidate(frame, cluster[0], _members(cluster), frame_views, inside, weak)
            )
    order = sort_faces([c.best.face for c in candidates])
    rank = {id(face): position for position, face in enumerate(order)}
    return sorted(candidates, key=lambda c: (c.frame, rank[id(c.best.face)]))


# -- embedding ----------------------------------------------------------------


def _embed_detection(engine: FaceEngine, view: FaceView, det: Detection) -> FloatArray:
    """Embed ``det``: from its own pass when that saw the face upright at native
    resolution, else from a *level look*: a crop of the view around the face,
    turned so the eyes are level (the angle from the pass's landmarks), detected
    again and embedded from there. Detectors place landmarks well only within
    about 30 degrees of upright; the level look makes every orientation as good
    as upright. If the level look finds no face, the pass's own face is used."""
    marks = det.face.landmarks
    eye = marks[1] - marks[0]
    angle = float(np.degrees(np.arctan2(eye[1], eye[0])))
    if det.rotation == 0 and det.scale == 1.0 and abs(angle) <= LEVEL_TOLERANCE:
        return _embed_from_pass(engine, view, det)
    level = _level_look(engine, view, det.face, angle)
    if level is None:
        return _embed_from_pass(engine, view, det)
    crop, face = level
    return engine.embed(crop, face)


def _level_look(
    engine: FaceEngine, view: FaceView, face: Face, angle: float
) -> tuple[ImageArray, Face] | None:
    x, y, w, h = face.bbox
    cx, cy = x + w / 2, y + h / 2
    side = 2.2 * max(w, h)
    zoom = min(1.0, LEVEL_CROP / side)
    out = max(16, round(side * zoom))
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, zoom)
    matrix[0, 2] += out / 2 - cx
    matrix[1, 2] += out / 2 - cy
    crop = np.ascontiguousarray(
        cv2.warpAffine(
            view.pixels,
            matrix,
            (out, out),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        ),
        dtype=np.uint8,
    )
    centre = np.array([out / 2, out / 2])
    best: Face | None = None
    best_distance = 0.0
    for found in engine.detect(crop):
        fx, fy, fw, fh = found.bbox
        distance = float(np.linalg.norm(np.array([fx + fw / 2, fy + fh / 2]) - centre))
        if distance > 0.35 * max(w, h) * zoom or fw < 0.4 * max(w, h) * zoom:
            continue
        if best is None or distance < best_distance:
            best, best_distance = found, distance
    return None if best is None else (crop, best)


def _embed_from_pass(engine: FaceEngine, view: FaceView, det: Detection) -> FloatArray:
    """Embed from the rotated native-resolution view, on a crop around the face."""
    rotated = np.rot90(view.pixels, det.rotation) if det.rotation else view.pixels
    height, width = rotated.shape[:2]
    x, y, w, h = det.pass_face.bbox
    margin = max(w, h)
    left, top = max(0, int(x - margin)), max(0, int(y - margin))
    right, bottom = min(width, int(x + w + margin) + 1), min(height, int(y + h + margin) + 1)
    crop = np.ascontiguousarray(rotated[top:bottom, left:right])
    shift = np.array([left, top], dtype=np.float32)
    face = Face(
        bbox=(x - left, y - top, w, h),
        landmarks=det.pass_face.landmarks - shift,
        score=det.pass_face.score,
    )
    return engine.embed(crop, face)


def embed_candidates(engine: FaceEngine, candidates: Sequence[Candidate]) -> list[ScannedFace]:
    """One embedding per (view, orientation) pair each candidate was seen in."""
    out: list[ScannedFace] = []
    for cand in candidates:
        embeddings = tuple(
            _embed_detection(engine, cand.views[det.view], det) for det in cand.members
        )
        kinds = tuple(cand.views[det.view].kind for det in cand.members)
        out.append(
            ScannedFace(
                cand.frame,
                cand.best.face,
                embeddings,
                kinds,
                cand.best.rotation,
                cand.within,
                cand.weak,
            )
        )
    return out


def scan_images(
    engine: FaceEngine, images: Sequence[LoadedImage], max_faces: int
) -> list[list[ScannedFace]]:
    """Every face of every image, embedded, per image in order.

    Detects in all images first; more than ``max_faces`` faces in all of them
    together is an :class:`InputError` before anything is embedded.
    """
    found = [detect_all(engine, image) for image in images]
    count = sum(len(c) for c in found)
    if count > max_faces:
        raise InputError(f"too many faces: {count} in this job (the limit is {max_faces})")
    return [embed_candidates(engine, cands) for cands in found]
