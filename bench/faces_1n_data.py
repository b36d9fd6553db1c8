"""Data for the 1:N section of ``python -m bench faces``: cached embeddings and strangers.

- **Cache.** Every face an engine detects in an image is embedded once and kept in
  ``~/.cache/consentry-bench/faces1n-<engine>-<hash of engine.version>.json``, keyed by
  the SHA-256 of the image file's bytes (as :func:`load_image` gives it): a rerun
  with the same engine version embeds nothing. A changed engine version is a new file.
- **Labelled faces.** The face of a labelled photo is the cached face with the highest
  IoU to its bbox (IoU >= 0.3, :func:`bench.faces_data.pick`), as in the rest of the bench.
- **Strangers** are faces of people who are not among the labelled identities, from
  named offline sources (:data:`STRANGER_SOURCES`): the unlabelled faces of the
  multi-face photos of the faces folder (a face with IoU >= 0.3 to any labelled bbox of
  the same photo is not a stranger; a photo known to show another labelled identity
  unlabelled is left out), photos shipped in the repository, and image files inside
  the installed Python packages. A source's photo known to show a labelled identity
  is left out and named (:data:`KNOWN_IDENTITIES`). Nothing is screened by score.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import site
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.faces_data import Box, Photo, iou, pick
from consentry.errors import ConsentryError
from consentry.faces.engine import FaceEngine
from consentry.faces.images import load_image

__all__ = ["CACHE_DIR", "EmbedCache", "Stranger", "labelled_vectors", "strangers"]

CACHE_DIR = Path.home() / ".cache" / "consentry-bench"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
REPO = Path(__file__).resolve().parent.parent

#: repository photos that show a labelled identity (so they are not strangers)
KNOWN_IDENTITIES: dict[str, str] = {
    "consentry/data/faces/obama.jpg": "obama",
    "consentry/data/faces/obama2.jpg": "obama",
    "consentry/data/faces/biden.jpg": "biden",
    "tests/data/golden/home-0.1.0/demo/input-degraded.jpg": "obama (demo input)",
    "tests/data/golden/home-0.1.0/demo/restored-allowed.png": "obama (demo output)",
}
#: multi-face photos of the faces folder whose unlabelled faces include a labelled identity
UNLABELLED_KNOWN: dict[str, str] = {
    "examples/knn_examples/test/obama_and_biden.jpg": "also shows obama, unlabelled",
}


class EmbedCache:
    """Every detected face of an image, with its embedding, for one engine version."""

    def __init__(self, engine: FaceEngine, folder: Path = CACHE_DIR) -> None:
        self.engine = engine
        digest = hashlib.sha256(engine.version.encode()).hexdigest()[:16]
        self.path = folder / f"faces1n-{engine.name}-{digest}.json"
        self._faces: dict[str, list[tuple[Box, list[float]]]] = {}
        self.embedded = 0  # images embedded in this run (not found in the cache)
        self.dirty = False
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text())
                self._faces = {k: [(tuple(b), v) for b, v in faces]  # type: ignore[misc]
                               for k, faces in raw["faces"].items()}
            except (ValueError, KeyError, TypeError):
                self._faces = {}

    def faces(self, sha256: str, pixels: np.ndarray) -> list[tuple[Box, np.ndarray]]:
        if sha256 not in self._faces:
            found = []
            for face in self.engine.detect(pixels):
                vector = self.engine.embed(pixels, face)
                found.append((face.bbox, [float(x) for x in vector]))
            self._faces[sha256] = found
            self.embedded += 1
            self.dirty = True
        return [(b, np.asarray(v, dtype=np.float32)) for b, v in self._faces[sha256]]

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")  # concurrent runs: last one wins
        tmp.write_text(json.dumps({"version": self.engine.version,
                                   "faces": {k: [[list(b), v] for b, v in f]
                                             for k, f in self._faces.items()}}))
        tmp.replace(self.path)
        self.dirty = False


def labelled_vectors(photos: list[Photo], cache: EmbedCache) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, found): one row per photo, NaN where no face is at IoU >= 0.3 to its bbox."""
    vectors = np.full((len(photos), cache.engine.dim), np.nan, dtype=np.float32)
    found = np.zeros(len(photos), dtype=bool)
    for p in photos:
        faces = cache.faces(p.sha256, p.pixels)
        chosen = pick([b for b, _ in faces], p.bbox)
        if chosen is not None:
            vectors[p.index] = faces[chosen][1]
            found[p.index] = True
    return vectors, found


@dataclass(frozen=True)
class Stranger:
    source: str
    path: str
    bbox: Box
    vector: np.ndarray


@dataclass(frozen=True)
class SourceImage:
    source: str
    path: str  # for display
    sha256: str
    pixels: np.ndarray
    labelled: tuple[Box, ...]  # faces in it that are labelled identities (not strangers)


def _manifest_sources(folder: Path) -> dict[str, str]:
    with (folder / "MANIFEST.tsv").open(newline="") as handle:
        return {row["path"]: row["source_path"] for row in csv.DictReader(handle, delimiter="\t")}


def _group_images(folder: Path, photos: list[Photo], skipped: list[str]
                  ) -> list[SourceImage]:
    source_of = _manifest_sources(folder)
    by_sha: dict[str, list[Photo]] = {}
    for p in photos:
        if p.n_faces > 1:
            by_sha.setdefault(p.sha256, []).append(p)
    images = []
    for members in by_sha.values():
        first = members[0]
        reason = UNLABELLED_KNOWN.get(source_of.get(first.path, ""))
        if reason:
            skipped.append(f"{first.path} ({reason})")
            continue
        images.append(SourceImage("faces folder: unlabelled faces of multi-face photos",
                                  first.path, first.sha256, first.pixels,
                                  tuple(m.bbox for m in members)))
    return images


def _files(roots: Iterable[Path]) -> list[Path]:
    found: set[Path] = set()
    for root in roots:
        if root.is_dir():
            found.update(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES
                         and f.is_file())
    return sorted(found)


def _file_images(source: str, files: list[Path], base: Path, skipped: list[str]
                 ) -> list[SourceImage]:
    images = []
    for f in files:
        rel = str(f.relative_to(base)) if f.is_relative_to(base) else str(f)
        if rel in KNOWN_IDENTITIES:
            skipped.append(f"{rel} (shows {KNOWN_IDENTITIES[rel]}, a labelled identity)")
            continue
        try:
            loaded = load_image(f)
        except ConsentryError:
            continue  # not a decodable photo (or too small): no face to give
        images.append(SourceImage(source, rel, loaded.sha256, loaded.pixels, ()))
    return images


def _site_packages() -> list[Path]:
    roots = [Path(p) for p in site.getsitepackages()]
    return [r for r in roots if r.is_dir() and str(r).startswith(sys.prefix)]


def strangers(folder: Path, photos: list[Photo], cache: EmbedCache,
              progress: Callable[[str], None]) -> tuple[list[Stranger], dict[str, object]]:
    """Every stranger face the engine finds in the offline sources, and what each source gave."""
    skipped: list[str] = []
    images = _group_images(folder, photos, skipped)
    images += _file_images("repository photos (consentry/data, tests/data)",
                           _files([REPO / "consentry", REPO / "tests"]), REPO, skipped)
    packages = _site_packages()
    package_files = _files(packages)
    images += _file_images(f"installed packages ({sys.prefix}/.../site-packages)",
                           package_files, packages[0] if packages else REPO, skipped)
    found: list[Stranger] = []
    per_source: dict[str, dict[str, int]] = {}
    for image in images:
        entry = per_source.setdefault(image.source, {"images": 0, "faces": 0})
        entry["images"] += 1
        for bbox, vector in cache.faces(image.sha256, image.pixels):
            if any(iou(bbox, label) >= 0.3 for label in image.labelled):
                continue
            found.append(Stranger(image.source, image.path, bbox, vector))
            entry["faces"] += 1
    progress(f"      {cache.engine.name}: {len(found)} stranger faces from {len(images)} images")
    return found, {"sources": per_source, "left_out": skipped,
                   "package_images_scanned": len(package_files)}
