"""Each engine's default match threshold (cosine similarity of unit embeddings).

Invariant: a threshold here is used only until ``consentry calibrate`` records a
signed calibration for that engine in the registry's log (the calibrated value is
then in force: :func:`consentry.identity.enroll.threshold_in_force`).
"""

from __future__ import annotations

__all__ = ["DEFAULT_THRESHOLDS"]

# Cosine similarity thresholds used until `consentry calibrate` records one.
# Both measured at FMR <= 1e-3 on shared/faces: sface 0.3652 (FNMR 2.1%), dlib
# 0.922 on its L2-normalised descriptors (FNMR 0.8%; raw descriptors are not unit
# length, so dlib's customary Euclidean 0.6 does not translate to a cosine); fused
# (0.25 sface + 0.75 dlib, consentry.faces.fused) 0.7703 (FNMR 0.0% of 242 genuine
# pairs, FMR 9.2e-4 of 7,633 impostor pairs; `python -m bench fusion`).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "sface": 0.3652, "dlib": 0.922,
    "fused": 0.7703, "insightface": 0.40,
}
