"""A registry with a real face inside the review band (issue 14).

Obama is enrolled from the shipped ``obama.jpg``; ``obama2.jpg`` (another photo of
him) is measured against the index, and a signed calibration puts the match
threshold just above that similarity and the review threshold just below, so the
face of ``obama2.jpg`` is an uncertain candidate of Obama: real photos, a real
engine, a real signed calibration; only the band is placed around the measurement.
"""

from __future__ import annotations

from pathlib import Path

from consentry import Registry
from consentry.faces.engine import FaceEngine
from consentry.faces.images import load_image
from consentry.identity.index import IdentityIndex
from consentry.identity.lookup import lookup_faces
from consentry.registry.biometrics import record_calibration
from consentry.registry.models import Calibration

__all__ = ["DATA", "measured_similarity", "put_in_band"]

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"


def measured_similarity(registry: Registry, engine: FaceEngine, photo: Path, subject: str) -> float:
    """The similarity of the one face of ``photo`` to ``subject``, as the index sees it."""
    index = IdentityIndex(registry, engine.name, engine.dim, cache=False)
    found = lookup_faces(engine, index, [load_image(photo)])
    scores = [m.similarity for faces in found for f in faces for m in f.matches
              if m.subject_id == subject]  # fmt: skip
    assert scores, f"{photo.name} does not reach the index's band for {subject}"
    return max(scores)


def put_in_band(registry: Registry, engine: FaceEngine, similarity: float) -> Calibration:
    """A signed calibration with ``similarity`` inside [review_threshold, threshold)."""
    row = Calibration(
        id="", engine=engine.name, engine_version="test", threshold=similarity + 0.02,
        fmr_target=1e-3, fmr=0.0, fnmr=0.02, eer=0.004, genuine_pairs=10, impostor_pairs=90,
        dataset_sha256="cd" * 32, created_at="", log_index=-1,
        review_threshold=similarity - 0.05,
    )  # fmt: skip
    return record_calibration(registry, row)
